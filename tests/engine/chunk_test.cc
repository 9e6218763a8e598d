#include "engine/chunk.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "engine/chunk_codec.h"
#include "tests/testing/terrain.h"

namespace voxdb::engine {
namespace {

size_t Idx(uint32_t x, uint32_t y, uint32_t z) {
  return x + size_t{kChunkEdge} * (y + size_t{kChunkEdge} * z);
}

// MemoryUsage is kept incrementally; this recounts it from the bricks.
size_t RecountedMemory(const Chunk& c) {
  if (!c.HasGrid()) return sizeof(Chunk);
  size_t bytes = sizeof(Chunk) + sizeof(Brick) * kBricksPerChunk;
  for (int i = 0; i < kBricksPerChunk; ++i) bytes += c.brick(i).BitsBytes();
  return bytes;
}

std::vector<uint8_t> Dense(const Chunk& c) {
  std::vector<uint8_t> out(kChunkVoxels);
  c.ToDense(out.data());
  return out;
}

TEST(ChunkTest, UniformChunkIsTinyAndReadsItsMaterial) {
  Chunk c(7);
  EXPECT_EQ(c.Get(0, 0, 0), 7);
  EXPECT_EQ(c.Get(127, 127, 127), 7);
  EXPECT_EQ(c.UniformMaterial(), 7);
  EXPECT_LE(c.MemoryUsage(), 64u);
  EXPECT_EQ(Dense(c), std::vector<uint8_t>(kChunkVoxels, 7));
}

TEST(ChunkTest, SetGetAgainstDenseModel) {
  std::mt19937 rng(5);
  Chunk c(1);
  std::vector<uint8_t> model(kChunkVoxels, 1);
  // Few materials at first (palette growth 1 -> 2 -> 4 -> 16 bits), then many (raw).
  for (int round = 0; round < 4; ++round) {
    const int materials = round == 0 ? 2 : round == 1 ? 4 : round == 2 ? 16 : 200;
    for (int i = 0; i < 20'000; ++i) {
      const uint32_t x = rng() % 32, y = rng() % 32, z = rng() % 32;  // a few bricks, dense edits
      const uint8_t m = static_cast<uint8_t>(rng() % materials);
      c.Set(x, y, z, m);
      model[Idx(x, y, z)] = m;
    }
    ASSERT_EQ(Dense(c), model) << "round " << round;
    ASSERT_EQ(c.MemoryUsage(), RecountedMemory(c));
    for (int i = 0; i < 1000; ++i) {
      const uint32_t x = rng() % 128, y = rng() % 128, z = rng() % 128;
      ASSERT_EQ(c.Get(x, y, z), model[Idx(x, y, z)]);
    }
  }
  Chunk compacted = c;
  compacted.Compact();
  EXPECT_EQ(Dense(compacted), model);
  EXPECT_TRUE(compacted == c);
  EXPECT_LE(compacted.MemoryUsage(), c.MemoryUsage());
}

TEST(ChunkTest, FromDenseRoundTripsGeneratedTerrain) {
  for (const auto& dense :
       {testing::SampleSurfaceChunk(1), testing::SampleSurfaceChunk(2), testing::NoiseChunk(3),
        testing::UniformChunk(0), testing::UniformChunk(testing::kStone)}) {
    const Chunk c = Chunk::FromDense(dense);
    EXPECT_EQ(Dense(c), dense);
    // Already canonical: Compact() changes nothing, to the byte.
    Chunk compacted = c;
    compacted.Compact();
    EXPECT_EQ(EncodeChunk(c, 1, 2), EncodeChunk(compacted, 1, 2));
    EXPECT_EQ(c.MemoryUsage(), compacted.MemoryUsage());
  }
}

TEST(ChunkTest, BoxReadWriteFill) {
  const std::vector<uint8_t> base = testing::SampleSurfaceChunk(1);
  Chunk c = Chunk::FromDense(base);
  std::vector<uint8_t> model = base;
  const LocalBox box{{3, 17, 30}, {70, 18, 101}};  // crosses bricks, one voxel thick in y
  std::vector<uint8_t> in(box.volume());
  std::mt19937 rng(9);
  for (auto& v : in) v = static_cast<uint8_t>(rng() % 5);
  c.WriteBox(box, in.data());
  size_t i = 0;
  for (uint32_t z = box.lo.z; z < box.hi.z; ++z)
    for (uint32_t y = box.lo.y; y < box.hi.y; ++y)
      for (uint32_t x = box.lo.x; x < box.hi.x; ++x) model[Idx(x, y, z)] = in[i++];
  EXPECT_EQ(Dense(c), model);

  std::vector<uint8_t> out(box.volume());
  c.ReadBox(box, out.data());
  EXPECT_EQ(out, in);

  const LocalBox fill{{0, 0, 0}, {33, 128, 17}};
  c.FillBox(fill, 9);
  for (uint32_t z = 0; z < 17; ++z)
    for (uint32_t y = 0; y < 128; ++y)
      for (uint32_t x = 0; x < 33; ++x) model[Idx(x, y, z)] = 9;
  EXPECT_EQ(Dense(c), model);

  const LocalBox small{{120, 120, 120}, {128, 128, 128}};
  std::vector<uint8_t> corner(small.volume());
  c.ReadBox(small, corner.data());
  i = 0;
  for (uint32_t z = 120; z < 128; ++z)
    for (uint32_t y = 120; y < 128; ++y)
      for (uint32_t x = 120; x < 128; ++x) ASSERT_EQ(corner[i++], model[Idx(x, y, z)]);

  EXPECT_EQ(c.MemoryUsage(), RecountedMemory(c));
  c.FillBox(LocalBox::Whole(), 4);
  EXPECT_EQ(c.UniformMaterial(), 4);
  EXPECT_LE(c.MemoryUsage(), 64u);
}

TEST(ChunkTest, UniformDetectionAndCompaction) {
  Chunk c(2);
  c.Set(10, 10, 10, 3);
  EXPECT_FALSE(c.IsUniform());
  c.Set(10, 10, 10, 2);  // back to uniform content, still a grid
  EXPECT_EQ(c.UniformMaterial(), 2);
  c.Compact();
  EXPECT_FALSE(c.HasGrid());
  EXPECT_LE(c.MemoryUsage(), 64u);
}

TEST(ChunkTest, MemoryGrowsWithNonUniformContent) {
  const Chunk surface = Chunk::FromDense(testing::SampleSurfaceChunk(1));
  // Target: a surface chunk costs <= 40% of its 2 MiB dense form.
  EXPECT_LE(surface.MemoryUsage(), kChunkVoxels * 4 / 10) << surface.MemoryUsage();
  Chunk one(0);
  one.Set(1, 2, 3, 5);
  EXPECT_LT(one.MemoryUsage(), 32 * 1024u);  // one 1-bit brick plus the brick table
}

TEST(ChunkTest, ExpandFastEqualsPortable) {
  std::mt19937 rng(11);
  for (int width : {0, 1, 2, 4, 8}) {
    uint8_t palette[kMaxPalette];
    for (auto& p : palette) p = static_cast<uint8_t>(rng());
    std::vector<uint8_t> bits(512 * width + 1);
    for (auto& b : bits) b = static_cast<uint8_t>(rng());
    std::vector<uint8_t> a(kChunkVoxels, 0), b(kChunkVoxels, 0);
    brick::Expand(width, palette, bits.data(), a.data() + 5, kChunkEdge, kChunkEdge * kChunkEdge);
    brick::ExpandPortable(width, palette, bits.data(), b.data() + 5, kChunkEdge,
                          kChunkEdge * kChunkEdge);
    EXPECT_EQ(a, b) << "width " << width;
  }
}

}  // namespace
}  // namespace voxdb::engine
