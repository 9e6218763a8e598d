#include "engine/morton.h"

#include <gtest/gtest.h>

#include <random>

namespace voxdb::engine {
namespace {

// Reference: the source design's bit-by-bit loop (x -> 3i, y -> 3i+1, z -> 3i+2).
uint64_t ReferenceEncode(uint32_t x, uint32_t y, uint32_t z) {
  uint64_t code = 0;
  for (int i = 0; i < kMortonAxisBits; ++i) {
    code |= uint64_t{(x >> i) & 1} << (3 * i);
    code |= uint64_t{(y >> i) & 1} << (3 * i + 1);
    code |= uint64_t{(z >> i) & 1} << (3 * i + 2);
  }
  return code;
}

TEST(MortonTest, KnownVectors) {
  EXPECT_EQ(MortonEncode(0, 0, 0), 0u);
  EXPECT_EQ(MortonEncode(1, 0, 0), 1u);
  EXPECT_EQ(MortonEncode(0, 1, 0), 2u);
  EXPECT_EQ(MortonEncode(0, 0, 1), 4u);
  EXPECT_EQ(MortonEncode(1, 1, 1), 7u);
  EXPECT_EQ(MortonEncode(2, 0, 0), 8u);
  EXPECT_EQ(MortonEncode(3, 5, 7), 0b110101111u);  // (1,1,1) (1,0,1) (0,1,1) interleaved
  EXPECT_EQ(MortonEncode(kMaxChunkAxis, 0, 0), 0x1249249249249249ull);
  EXPECT_EQ(MortonEncode(0, kMaxChunkAxis, 0), 0x2492492492492492ull);
  EXPECT_EQ(MortonEncode(0, 0, kMaxChunkAxis), 0x4924924924924924ull);
  EXPECT_EQ(MortonEncode(kMaxChunkAxis, kMaxChunkAxis, kMaxChunkAxis), ChunkKey::kMaxCode);
  // The source world's largest chunk coordinates.
  EXPECT_EQ(MortonEncode(1'252'344, 626'172, 624'999),
            ReferenceEncode(1'252'344, 626'172, 624'999));
}

TEST(MortonTest, ExtremeCoordinatesRoundTrip) {
  const uint32_t values[] = {0, 1, kMaxChunkAxis - 1, kMaxChunkAxis};
  for (uint32_t x : values) {
    for (uint32_t y : values) {
      for (uint32_t z : values) {
        const uint64_t code = MortonEncode(x, y, z);
        EXPECT_EQ(code, ReferenceEncode(x, y, z));
        EXPECT_EQ(MortonDecode(code), (ChunkCoord{x, y, z}));
        EXPECT_EQ(MortonEncodePortable(x, y, z), code);
        EXPECT_EQ(MortonDecodePortable(code), (ChunkCoord{x, y, z}));
      }
    }
  }
}

TEST(MortonTest, RandomRoundTripAndImplementationsAgree) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 200'000; ++i) {
    const uint32_t x = rng() & kMaxChunkAxis, y = rng() & kMaxChunkAxis, z = rng() & kMaxChunkAxis;
    const uint64_t code = MortonEncodePortable(x, y, z);
    ASSERT_EQ(code, ReferenceEncode(x, y, z));
    ASSERT_EQ(MortonDecodePortable(code), (ChunkCoord{x, y, z}));
    ASSERT_EQ(MortonEncode(x, y, z), code);
    ASSERT_EQ(MortonDecode(code), (ChunkCoord{x, y, z}));
    if (HasBmi2()) {
      ASSERT_EQ(MortonEncodeBmi2(x, y, z), code);
      ASSERT_EQ(MortonDecodeBmi2(code), (ChunkCoord{x, y, z}));
    }
    const uint64_t any = rng() & ChunkKey::kMaxCode;
    ASSERT_EQ(MortonEncode(MortonDecode(any).x, MortonDecode(any).y, MortonDecode(any).z), any);
  }
  if (!HasBmi2()) GTEST_SKIP() << "CPU has no BMI2; only the portable path was checked";
}

TEST(MortonTest, KeyIsEightBytesBigEndianInMortonOrder) {
  const ChunkKey key = ChunkKey::FromCode(0x0123456789abcdefull & ChunkKey::kMaxCode);
  const auto bytes = key.Encode();
  EXPECT_EQ(bytes[0], 0x01);
  EXPECT_EQ(bytes[7], 0xef);
  EXPECT_EQ(ChunkKey::Decode(bytes), key);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10'000; ++i) {
    const ChunkKey a = ChunkKey::FromCode(rng() & ChunkKey::kMaxCode);
    const ChunkKey b = ChunkKey::FromCode(rng() & ChunkKey::kMaxCode);
    ASSERT_EQ(a < b, a.Encode() < b.Encode());  // byte order == Morton order
  }
  const uint8_t too_big[8] = {0x80, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_FALSE(ChunkKey::Decode(too_big).has_value());
  const uint8_t short_key[7] = {};
  EXPECT_FALSE(ChunkKey::Decode(short_key).has_value());
}

// The chunks of one octree node form one contiguous key range, and nothing
// outside the node falls in that range.
TEST(MortonTest, OctreeNodeIsContiguousKeyRange) {
  std::mt19937_64 rng(3);
  for (int level = 1; level <= 4; ++level) {
    const uint32_t edge = 1u << level;
    for (int trial = 0; trial < 5; ++trial) {
      const uint32_t ox = (rng() & kMaxChunkAxis) & ~(edge - 1);
      const uint32_t oy = (rng() & kMaxChunkAxis) & ~(edge - 1);
      const uint32_t oz = (rng() & kMaxChunkAxis) & ~(edge - 1);
      const uint64_t node = ChunkKey::FromCoord({ox, oy, oz}).OctreeNode(level);
      const MortonRange range = MortonRange::OctreeNode(node, level);
      EXPECT_EQ(range.end - range.begin, uint64_t{edge} * edge * edge);
      uint64_t lo = UINT64_MAX, hi = 0;
      for (uint32_t dz = 0; dz < edge; ++dz) {
        for (uint32_t dy = 0; dy < edge; ++dy) {
          for (uint32_t dx = 0; dx < edge; ++dx) {
            const ChunkKey k = ChunkKey::FromCoord({ox + dx, oy + dy, oz + dz});
            ASSERT_TRUE(range.Contains(k.code()));
            ASSERT_EQ(k.OctreeNode(level), node);
            lo = std::min(lo, k.code());
            hi = std::max(hi, k.code());
          }
        }
      }
      EXPECT_EQ(lo, range.begin);
      EXPECT_EQ(hi, range.end - 1);  // edge^3 distinct codes filling the range exactly
      // Every code in the range decodes to a chunk inside the node.
      for (uint64_t code = range.begin; code < range.end; ++code) {
        const ChunkCoord c = MortonDecode(code);
        ASSERT_TRUE(c.x >= ox && c.x < ox + edge && c.y >= oy && c.y < oy + edge && c.z >= oz &&
                    c.z < oz + edge);
      }
    }
  }
  EXPECT_EQ(MortonRange::OctreeNode(0, kMaxOctreeLevel), MortonRange::All());
}

}  // namespace
}  // namespace voxdb::engine
