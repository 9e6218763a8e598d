#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "engine/voxel_box.h"
#include "engine/world_frame.h"

namespace voxdb::cli {
namespace {

using protocol::Box;

constexpr uint64_t kEdge = 128;
constexpr uint64_t kChunk = kEdge * kEdge * kEdge;

uint64_t ChunkCount(const Box& b) {
  static const engine::WorldFrame frame = engine::WorldFrame::Earth();
  const engine::ChunkBox c = engine::ChunksCovering(frame, ToVoxelBox(b));
  return (uint64_t{c.hi.x} - c.lo.x + 1) * (uint64_t{c.hi.y} - c.lo.y + 1) *
         (uint64_t{c.hi.z} - c.lo.z + 1);
}

// The parts tile the box: inside it, pairwise disjoint, volumes adding up;
// each within both limits.
void ExpectTiling(const Box& box, const std::vector<Box>& parts, uint64_t max_voxels,
                  uint64_t max_chunks) {
  uint64_t total = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const engine::VoxelBox p = ToVoxelBox(parts[i]);
    ASSERT_FALSE(p.empty()) << i;
    EXPECT_TRUE(engine::BoxContains(ToVoxelBox(box), p)) << i;
    EXPECT_LE(p.volume(), max_voxels) << i;
    EXPECT_LE(ChunkCount(parts[i]), max_chunks) << i;
    total += p.volume();
  }
  EXPECT_EQ(total, BoxVolume(box));
  if (parts.size() <= 2000) {
    for (size_t i = 0; i < parts.size(); ++i) {
      for (size_t j = i + 1; j < parts.size(); ++j) {
        EXPECT_FALSE(engine::Meets(ToVoxelBox(parts[i]), ToVoxelBox(parts[j]))) << i << " " << j;
      }
    }
  }
}

TEST(SplitBoxTest, ABoxWithinTheLimitsIsOnePart) {
  const Box box{{5, 6, 7}, {300, 200, 100}};
  const std::vector<Box> parts = SplitBox(box, BoxVolume(box));
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0], box);
}

TEST(SplitBoxTest, PartsAreCutAtChunkBorders) {
  // Unaligned in x; one chunk's worth of voxels per part.
  const Box box{{100, 0, 0}, {300, 128, 128}};
  const std::vector<Box> parts = SplitBox(box, kChunk);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0], (Box{{100, 0, 0}, {128, 128, 128}}));
  EXPECT_EQ(parts[1], (Box{{128, 0, 0}, {256, 128, 128}}));
  EXPECT_EQ(parts[2], (Box{{256, 0, 0}, {300, 128, 128}}));
  ExpectTiling(box, parts, kChunk, 1024);
}

TEST(SplitBoxTest, BlocksGrowAlongXThenYThenZ) {
  // 4 x 4 x 4 chunks with room for 8 chunks a part: 4 in x, 2 in y.
  const Box box{{0, 0, 0}, {4 * kEdge, 4 * kEdge, 4 * kEdge}};
  const std::vector<Box> parts = SplitBox(box, 8 * kChunk);
  ASSERT_EQ(parts.size(), 8u);
  // In z, y, x order of their corners.
  for (size_t i = 0; i < parts.size(); ++i) {
    EXPECT_EQ(parts[i], (Box{{0, (i % 2) * 2 * kEdge, (i / 2) * kEdge},
                             {4 * kEdge, (i % 2 + 1) * 2 * kEdge, (i / 2 + 1) * kEdge}}))
        << i;
  }
  ExpectTiling(box, parts, 8 * kChunk, 1024);
}

TEST(SplitBoxTest, TheChunkLimitHoldsForThinBoxes) {
  // A row of 100 chunks of 1 voxel each: the voxel limit allows it whole,
  // the chunk limit does not.
  const Box box{{0, 0, 0}, {100 * kEdge, 1, 1}};
  const std::vector<Box> parts = SplitBox(box, UINT64_MAX, 16);
  ASSERT_EQ(parts.size(), 7u);  // 6 x 16 chunks + 4
  EXPECT_EQ(parts[0], (Box{{0, 0, 0}, {16 * kEdge, 1, 1}}));
  EXPECT_EQ(parts[6], (Box{{96 * kEdge, 0, 0}, {100 * kEdge, 1, 1}}));
  ExpectTiling(box, parts, UINT64_MAX, 16);
}

TEST(SplitBoxTest, AChunkOverTheVoxelLimitIsCutIntoSlabsRowsOrRuns) {
  const Box chunk{{kEdge, 0, 0}, {2 * kEdge, kEdge, kEdge}};
  // Slabs of 10 layers.
  std::vector<Box> parts = SplitBox(chunk, kEdge * kEdge * 10);
  ASSERT_EQ(parts.size(), 13u);
  EXPECT_EQ(parts[0], (Box{{kEdge, 0, 0}, {2 * kEdge, kEdge, 10}}));
  EXPECT_EQ(parts[12], (Box{{kEdge, 0, 120}, {2 * kEdge, kEdge, 128}}));
  ExpectTiling(chunk, parts, kEdge * kEdge * 10, 1);
  // Rows: 100 rows of one layer, then 28.
  parts = SplitBox(chunk, kEdge * 100);
  ASSERT_EQ(parts.size(), 2u * kEdge);
  EXPECT_EQ(parts[0], (Box{{kEdge, 0, 0}, {2 * kEdge, 100, 1}}));
  EXPECT_EQ(parts[1], (Box{{kEdge, 100, 0}, {2 * kEdge, 128, 1}}));
  ExpectTiling(chunk, parts, kEdge * 100, 1);
  // Runs of one row: 50, 50, 28.
  const Box rows{{0, 0, 0}, {kEdge, 2, 1}};
  parts = SplitBox(rows, 50);
  ASSERT_EQ(parts.size(), 6u);
  EXPECT_EQ(parts[0], (Box{{0, 0, 0}, {50, 1, 1}}));
  EXPECT_EQ(parts[2], (Box{{100, 0, 0}, {128, 1, 1}}));
  ExpectTiling(rows, parts, 50, 1);
}

TEST(SplitBoxTest, RandomBoxesAreTiledWithinTheLimits) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<uint64_t> corner(0, 600), size(1, 500);
  std::uniform_int_distribution<uint64_t> limit(1, 4 * kChunk), chunks(1, 12);
  for (int i = 0; i < 40; ++i) {
    const Box box{{corner(rng), corner(rng), corner(rng)}, {}};
    const Box b{box.lo, {box.lo.x + size(rng), box.lo.y + size(rng), box.lo.z + size(rng)}};
    // Keep the part count small enough to compare every pair.
    const uint64_t max_voxels = std::max<uint64_t>(limit(rng), BoxVolume(b) / 500 + 1);
    const uint64_t max_chunks = chunks(rng);
    SCOPED_TRACE(::testing::Message() << "case " << i);
    ExpectTiling(b, SplitBox(b, max_voxels, max_chunks), max_voxels, max_chunks);
  }
}

}  // namespace
}  // namespace voxdb::cli
