#include "engine/voxel_box.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "engine/chunk.h"
#include "engine/morton.h"
#include "engine/world_frame.h"

namespace voxdb::engine {
namespace {

VoxelBox Box(uint64_t x0, uint64_t y0, uint64_t z0, uint64_t x1, uint64_t y1, uint64_t z1) {
  return VoxelBox{{x0, y0, z0}, {x1, y1, z1}};
}

bool Inside(const VoxelBox& b, uint64_t x, uint64_t y, uint64_t z) {
  return x >= b.lo.x && x < b.hi.x && y >= b.lo.y && y < b.hi.y && z >= b.lo.z && z < b.hi.z;
}

// A frame of 3 x 2 x 2 chunks whose last chunk on every axis is partial.
WorldFrame SmallFrame() {
  auto frame = WorldFrame::Create(300, 200, 150, 0.25, kChunkEdge, 75);
  EXPECT_TRUE(frame.ok()) << frame.status();
  return *frame;
}

// A random box inside [0, n)^3, possibly empty or inverted (lo > hi).
VoxelBox RandomBox(std::mt19937_64& rng, uint64_t n) {
  std::uniform_int_distribution<uint64_t> d(0, n);
  return Box(d(rng), d(rng), d(rng), d(rng), d(rng), d(rng));
}

TEST(VoxelBoxTest, VolumeIsZeroForEmptyAndInvertedBoxes) {
  EXPECT_EQ(Box(0, 0, 0, 2, 3, 4).volume(), 24u);
  EXPECT_TRUE(Box(5, 0, 0, 5, 3, 4).empty());
  EXPECT_EQ(Box(5, 0, 0, 5, 3, 4).volume(), 0u);
  // hi below lo: the unsigned difference would wrap; the box is empty.
  EXPECT_TRUE(Box(6, 0, 0, 5, 3, 4).empty());
  EXPECT_EQ(Box(6, 0, 0, 5, 3, 4).volume(), 0u);
  EXPECT_EQ(Box(0, 0, 0, UINT64_MAX, UINT64_MAX, 2).volume(), UINT64_MAX);
}

TEST(VoxelBoxTest, IntersectOfOverlappingBoxesIsTheirCommonPart) {
  EXPECT_EQ(Intersect(Box(0, 0, 0, 10, 10, 10), Box(5, 2, 8, 20, 4, 30)), Box(5, 2, 8, 10, 4, 10));
  EXPECT_EQ(Intersect(Box(1, 2, 3, 4, 5, 6), Box(1, 2, 3, 4, 5, 6)), Box(1, 2, 3, 4, 5, 6));
}

TEST(VoxelBoxTest, BoxesThatOnlyTouchOrAreApartDoNotMeet) {
  // Half-open: sharing a face shares no voxel.
  const VoxelBox a = Box(0, 0, 0, 10, 10, 10);
  for (const VoxelBox& b : {Box(10, 0, 0, 20, 10, 10), Box(0, 10, 0, 10, 20, 10),
                            Box(0, 0, 10, 10, 10, 20), Box(50, 50, 50, 60, 60, 60)}) {
    EXPECT_TRUE(Intersect(a, b).empty());
    EXPECT_TRUE(Intersect(b, a).empty());
    EXPECT_FALSE(Meets(a, b));
    EXPECT_FALSE(Meets(b, a));
  }
  // An empty box meets nothing, even inside another.
  EXPECT_FALSE(Meets(a, Box(5, 5, 5, 5, 6, 6)));
  EXPECT_TRUE(Meets(a, Box(9, 9, 9, 11, 11, 11)));
}

TEST(VoxelBoxTest, MeetsAgreesWithIntersectAndWithTheVoxels) {
  std::mt19937_64 rng(17);
  for (int i = 0; i < 2000; ++i) {
    const VoxelBox a = RandomBox(rng, 6), b = RandomBox(rng, 6);
    bool share = false;
    for (uint64_t z = 0; z < 6 && !share; ++z) {
      for (uint64_t y = 0; y < 6 && !share; ++y) {
        for (uint64_t x = 0; x < 6 && !share; ++x) share = Inside(a, x, y, z) && Inside(b, x, y, z);
      }
    }
    EXPECT_EQ(Meets(a, b), share);
    EXPECT_EQ(!Intersect(a, b).empty(), share);
    EXPECT_EQ(Meets(a, b), Meets(b, a));
  }
}

TEST(VoxelBoxTest, BoxContains) {
  const VoxelBox outer = Box(10, 10, 10, 20, 20, 20);
  EXPECT_TRUE(BoxContains(outer, outer));
  EXPECT_TRUE(BoxContains(outer, Box(10, 15, 19, 11, 20, 20)));
  EXPECT_FALSE(BoxContains(outer, Box(9, 15, 15, 11, 16, 16)));
  EXPECT_FALSE(BoxContains(outer, Box(15, 15, 15, 21, 16, 16)));
  EXPECT_FALSE(BoxContains(Box(10, 10, 10, 20, 20, 20), Box(0, 0, 0, 30, 30, 30)));
}

TEST(VoxelBoxTest, ChunksCoveringAlignedAndUnalignedBoxes) {
  const WorldFrame frame = SmallFrame();
  auto covering = [&](const VoxelBox& b) { return ChunksCovering(frame, b); };
  // One chunk exactly.
  ChunkBox c = covering(Box(0, 0, 0, 128, 128, 128));
  EXPECT_EQ(c.lo, (ChunkCoord{0, 0, 0}));
  EXPECT_EQ(c.hi, (ChunkCoord{0, 0, 0}));
  // One voxel past a chunk's edge reaches the next chunk.
  c = covering(Box(0, 0, 0, 129, 128, 128));
  EXPECT_EQ(c.hi, (ChunkCoord{1, 0, 0}));
  // One voxel: its chunk.
  c = covering(Box(255, 128, 127, 256, 129, 128));
  EXPECT_EQ(c.lo, (ChunkCoord{1, 1, 0}));
  EXPECT_EQ(c.hi, (ChunkCoord{1, 1, 0}));
  // Not aligned on either side.
  c = covering(Box(100, 5, 130, 260, 140, 149));
  EXPECT_EQ(c.lo, (ChunkCoord{0, 0, 1}));
  EXPECT_EQ(c.hi, (ChunkCoord{2, 1, 1}));
}

TEST(VoxelBoxTest, ChunksCoveringTheWorldIsTheWholeGridWithItsPartialEdgeChunks) {
  const WorldFrame frame = SmallFrame();
  const ChunkBox c = ChunksCovering(frame, frame.Bounds());
  EXPECT_EQ(c.lo, (ChunkCoord{0, 0, 0}));
  EXPECT_EQ(c.hi, (ChunkCoord{frame.chunks_x() - 1, frame.chunks_y() - 1, frame.chunks_z() - 1}));
  // A box touching the far corner of the world.
  const ChunkBox corner = ChunksCovering(frame, Box(299, 199, 149, 300, 200, 150));
  EXPECT_EQ(corner.lo, c.hi);
  EXPECT_EQ(corner.hi, c.hi);
  // The Earth's far corner: the 21-bit grid's last chunks.
  const WorldFrame earth = WorldFrame::Earth();
  const ChunkBox e = ChunksCovering(earth, earth.Bounds());
  EXPECT_EQ(e.hi, (ChunkCoord{earth.chunks_x() - 1, earth.chunks_y() - 1, earth.chunks_z() - 1}));
}

TEST(VoxelBoxTest, ChunksCoveringHoldsExactlyTheChunksWithAVoxelOfTheBox) {
  const WorldFrame frame = SmallFrame();
  std::mt19937_64 rng(4);
  for (int i = 0; i < 300; ++i) {
    VoxelBox b = RandomBox(rng, 300);
    b.hi.y = std::min<uint64_t>(b.hi.y, 200);
    b.hi.z = std::min<uint64_t>(b.hi.z, 150);
    if (b.empty()) continue;
    const ChunkBox c = ChunksCovering(frame, b);
    for (uint32_t z = 0; z < frame.chunks_z(); ++z) {
      for (uint32_t y = 0; y < frame.chunks_y(); ++y) {
        for (uint32_t x = 0; x < frame.chunks_x(); ++x) {
          const ChunkCoord cc{x, y, z};
          EXPECT_EQ(c.Contains(cc), Meets(frame.VoxelsOfChunk(cc), b));
        }
      }
    }
  }
}

// The voxels of `box`, each a function of its position, x fastest.
std::vector<uint8_t> Pattern(const VoxelBox& box, uint8_t salt) {
  std::vector<uint8_t> out;
  for (uint64_t z = box.lo.z; z < box.hi.z; ++z) {
    for (uint64_t y = box.lo.y; y < box.hi.y; ++y) {
      for (uint64_t x = box.lo.x; x < box.hi.x; ++x) {
        out.push_back(static_cast<uint8_t>(x * 7 + y * 13 + z * 31 + salt));
      }
    }
  }
  return out;
}

size_t IndexIn(const VoxelBox& b, uint64_t x, uint64_t y, uint64_t z) {
  return (x - b.lo.x) + (b.hi.x - b.lo.x) * ((y - b.lo.y) + (b.hi.y - b.lo.y) * (z - b.lo.z));
}

TEST(VoxelBoxTest, CopySubBoxMatchesAVoxelByVoxelCopy) {
  std::mt19937_64 rng(99);
  std::uniform_int_distribution<uint64_t> d(0, 9);
  for (int i = 0; i < 500; ++i) {
    // Two boxes with a common part, far from the origin on one axis.
    const uint64_t base = i % 2 == 0 ? 0 : (uint64_t{1} << 40);
    VoxelBox src_box = Box(base + d(rng), d(rng), d(rng), 0, 0, 0);
    src_box.hi = {src_box.lo.x + 1 + d(rng), src_box.lo.y + 1 + d(rng), src_box.lo.z + 1 + d(rng)};
    VoxelBox dst_box = Box(base + d(rng), d(rng), d(rng), 0, 0, 0);
    dst_box.hi = {dst_box.lo.x + 1 + d(rng), dst_box.lo.y + 1 + d(rng), dst_box.lo.z + 1 + d(rng)};
    const VoxelBox both = Intersect(src_box, dst_box);
    if (both.empty()) continue;
    // A random non-empty part of the common box.
    VoxelBox part = both;
    part.lo.x += d(rng) % (both.hi.x - both.lo.x);
    part.hi.y -= d(rng) % (both.hi.y - both.lo.y);
    const std::vector<uint8_t> src = Pattern(src_box, 1);
    std::vector<uint8_t> dst = Pattern(dst_box, 2);
    std::vector<uint8_t> want = dst;
    for (uint64_t z = part.lo.z; z < part.hi.z; ++z) {
      for (uint64_t y = part.lo.y; y < part.hi.y; ++y) {
        for (uint64_t x = part.lo.x; x < part.hi.x; ++x) {
          want[IndexIn(dst_box, x, y, z)] = src[IndexIn(src_box, x, y, z)];
        }
      }
    }
    CopySubBox(part, src_box, src, dst_box, dst);
    ASSERT_EQ(dst, want) << i;
  }
}

TEST(VoxelBoxTest, CopySubBoxGathersAndScattersBack) {
  const VoxelBox outer = Box(100, 200, 300, 110, 205, 303);
  const VoxelBox inner = Box(103, 201, 300, 107, 205, 302);
  const std::vector<uint8_t> whole = Pattern(outer, 0);
  std::vector<uint8_t> piece(inner.volume());
  CopySubBox(inner, outer, whole, inner, piece);
  EXPECT_EQ(piece, Pattern(inner, 0));
  std::vector<uint8_t> back(outer.volume(), 0);
  CopySubBox(inner, inner, piece, outer, back);
  for (uint64_t z = outer.lo.z; z < outer.hi.z; ++z) {
    for (uint64_t y = outer.lo.y; y < outer.hi.y; ++y) {
      for (uint64_t x = outer.lo.x; x < outer.hi.x; ++x) {
        const size_t i = IndexIn(outer, x, y, z);
        EXPECT_EQ(back[i], Inside(inner, x, y, z) ? whole[i] : 0);
      }
    }
  }
}

TEST(VoxelBoxDeathTest, CopySubBoxRefusesAPartOutsideItsBoxes) {
  const VoxelBox outer = Box(0, 0, 0, 4, 4, 4);
  std::vector<uint8_t> a(64), b(64);
  EXPECT_DEATH(CopySubBox(Box(2, 2, 2, 5, 4, 4), outer, a, outer, b), "");
  EXPECT_DEATH(CopySubBox(outer, outer, std::span<const uint8_t>(a).first(63), outer, b), "");
}

}  // namespace
}  // namespace voxdb::engine
