#include "engine/morton_box.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace voxdb::engine {
namespace {

// Brute force: the next code >= c inside the box, over a small code space.
std::optional<uint64_t> BruteNext(const ChunkBox& box, uint64_t c, uint64_t limit) {
  for (uint64_t k = c; k < limit; ++k)
    if (box.ContainsCode(k)) return k;
  return std::nullopt;
}

TEST(MortonBoxTest, NextInBoxMatchesBruteForce) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    ChunkBox box;
    uint32_t* lo[3] = {&box.lo.x, &box.lo.y, &box.lo.z};
    uint32_t* hi[3] = {&box.hi.x, &box.hi.y, &box.hi.z};
    for (int a = 0; a < 3; ++a) {
      const uint32_t u = rng() % 16, v = rng() % 16;
      *lo[a] = std::min(u, v);
      *hi[a] = std::max(u, v);
    }
    const uint64_t limit = 16 * 16 * 16;  // all codes of coordinates < 16
    for (uint64_t c = 0; c < limit; c += 1 + rng() % 7) {
      ASSERT_EQ(box.NextInBox(c), BruteNext(box, c, limit))
          << "code " << c << " box " << box.lo.ToString() << ".." << box.hi.ToString();
    }
  }
}

TEST(MortonBoxTest, WalkVisitsExactlyTheBoxInMortonOrder) {
  const ChunkBox box{{1'000'000, 3, 312'000}, {1'000'004, 9, 312'003}};
  std::vector<uint64_t> walked;
  for (auto c = box.NextInBox(0); c; c = box.NextInBox(*c + 1)) walked.push_back(*c);
  std::vector<uint64_t> expected;
  for (uint32_t z = box.lo.z; z <= box.hi.z; ++z)
    for (uint32_t y = box.lo.y; y <= box.hi.y; ++y)
      for (uint32_t x = box.lo.x; x <= box.hi.x; ++x) expected.push_back(MortonEncode(x, y, z));
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(walked, expected);
}

}  // namespace
}  // namespace voxdb::engine
