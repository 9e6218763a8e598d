// Engine nodes for tests (engine/node.h): the options every test node
// starts from, and partitions of random aligned ranges.
//
// Example:
//   std::mt19937_64 rng(7);
//   auto parts = testing::RandomPartitions(dir.path(), 8, 4, 8 * 4096, rng);
//   ASSERT_OK_AND_ASSIGN(auto node, engine::Node::Open(parts, testing::TestNodeOptions(4)));
//
// Thread-safety: free functions, stateless.
#ifndef VOXDB_TESTS_TESTING_TEST_NODE_H_
#define VOXDB_TESTS_TESTING_TEST_NODE_H_

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/node.h"
#include "tests/testing/test_database.h"

namespace voxdb::testing {

// TestOptions() for every partition, with a small node-wide cache (many
// partitions in one process), and the given alignment.
inline engine::NodeOptions TestNodeOptions(int align_levels) {
  engine::NodeOptions o;
  o.database = TestOptions();
  o.database.cache_bytes = size_t{64} << 20;
  o.database.dirty_bytes = size_t{16} << 20;
  o.align_levels = align_levels;
  return o;
}

// `count` partitions of the codes below `limit` (the rest of the key space
// in the last), with random starts aligned to 8^align_levels, in
// dir/p0, dir/p1, ... REQUIRES: limit holds at least `count` units.
inline std::vector<engine::PartitionSpec> RandomPartitions(const std::string& dir, size_t count,
                                                           int align_levels, uint64_t limit,
                                                           std::mt19937_64& rng) {
  if (count == 1) return {engine::PartitionSpec{0, engine::MortonRange::All(), dir + "/p0"}};
  const uint64_t unit = uint64_t{1} << (3 * align_levels);
  std::set<uint64_t> starts{0};
  while (starts.size() < count) starts.insert((1 + rng() % (limit / unit - 1)) * unit);
  const std::vector<uint64_t> s(starts.begin(), starts.end());
  std::vector<engine::PartitionSpec> parts;
  for (size_t i = 0; i < s.size(); ++i) {
    const uint64_t end = i + 1 < s.size() ? s[i + 1] : engine::MortonRange::All().end;
    parts.push_back(engine::PartitionSpec{i, {s[i], end}, absl::StrFormat("%s/p%u", dir, i)});
  }
  return parts;
}

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_TEST_NODE_H_
