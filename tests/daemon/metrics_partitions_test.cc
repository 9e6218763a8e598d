// daemon/metrics.h's per-partition series against a real engine::Node
// served over HTTP (no voxdbd process: a node of hundreds of partitions
// opens in a test, not through `voxdb partition split` run hundreds of
// times): labelled while the node holds at most kMaxPartitionSeries
// partitions, absent past it.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/metrics.h"
#include "engine/node.h"
#include "tests/testing/metrics_page.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_node.h"

namespace voxdb::daemon {
namespace {

// The ids labelled on the page, per voxdb_partition_* family.
std::map<std::string, std::set<std::string>> Labelled(const std::string& page) {
  std::map<std::string, std::set<std::string>> out;
  for (const auto& [series, value] : testing::ParseSamples(page)) {
    const size_t brace = series.find("{partition=\"");
    if (brace == std::string::npos) continue;
    const size_t start = brace + 12;
    out[series.substr(0, brace)].insert(series.substr(start, series.find('"', start) - start));
  }
  return out;
}

std::string Scrape(size_t partitions, const testing::TempDir& dir) {
  std::mt19937_64 rng(partitions);
  auto specs = testing::RandomPartitions(dir.Sub(absl::StrCat("n", partitions)), partitions, 4,
                                         uint64_t{1} << 40, rng);
  auto node = engine::Node::Open(specs, testing::TestNodeOptions(4));
  EXPECT_OK(node.status());
  if (!node.ok()) return "";
  Metrics metrics;
  auto port = metrics.Serve("127.0.0.1", 0, node->get(), nullptr);
  EXPECT_OK(port.status());
  if (!port.ok()) return "";
  const testing::HttpReply reply = testing::HttpGet(*port, "/metrics");
  EXPECT_NE(reply.status_line.find(" 200"), std::string::npos) << reply.status_line;
  metrics.StopServing();
  return reply.body;
}

TEST(MetricsPartitionsTest, LabelledUpToTheBoundNotPastIt) {
  testing::TempDir dir;
  constexpr size_t kBound = Metrics::kMaxPartitionSeries;
  static_assert(kBound == 256, "the bound README.md and DESIGN.md state");

  const std::string at_bound = Scrape(kBound, dir);
  const auto labelled = Labelled(at_bound);
  EXPECT_EQ(labelled.size(), 7u) << at_bound.substr(0, 2000);
  for (const auto& [family, ids] : labelled) {
    EXPECT_EQ(ids.size(), kBound) << family;
    EXPECT_TRUE(ids.count("0") && ids.count(absl::StrCat(kBound - 1))) << family;
  }
  // Each partition's map capped to its share of the 64 TiB budget.
  const auto samples = testing::ParseSamples(at_bound);
  EXPECT_EQ(samples.at("voxdb_partition_lmdb_max_map_size_bytes{partition=\"7\"}"),
            double(uint64_t{64} << 40) / kBound);

  const std::string past = Scrape(kBound + 1, dir);
  EXPECT_TRUE(Labelled(past).empty()) << past.substr(0, 2000);
  EXPECT_EQ(past.find("voxdb_partition_"), std::string::npos);
  EXPECT_NE(past.find("voxdb_build_info"), std::string::npos);
}

}  // namespace
}  // namespace voxdb::daemon
