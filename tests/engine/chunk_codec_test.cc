#include "engine/chunk_codec.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string_view>
#include <vector>

#include "engine/crc32c.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/terrain.h"

namespace voxdb::engine {
namespace {

// Fixes payload size and checksum, as a (buggy or hostile) writer would.
void Reseal(std::vector<uint8_t>& rec) {
  const uint32_t payload = static_cast<uint32_t>(rec.size() - kChunkHeaderSize);
  for (int i = 0; i < 4; ++i) rec[24 + i] = static_cast<uint8_t>(payload >> (8 * i));
  const uint32_t crc = Crc32cExtend(Crc32cExtend(0, rec.data(), 4), rec.data() + 8, rec.size() - 8);
  for (int i = 0; i < 4; ++i) rec[4 + i] = static_cast<uint8_t>(crc >> (8 * i));
}

std::vector<uint8_t> DecodeDense(std::span<const uint8_t> rec) {
  std::vector<uint8_t> out(kChunkVoxels);
  const Status s = DecodeChunkToDense(rec, out.data());
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

void ExpectRoundTrip(const std::vector<uint8_t>& dense) {
  const Chunk chunk = Chunk::FromDense(dense);
  const std::vector<uint8_t> rec = EncodeChunk(chunk, 42, 1'700'000'000'000'000);
  ASSERT_OK_AND_ASSIGN(ChunkRecordView view, ParseChunkRecord(rec));
  EXPECT_EQ(view.header.version, 42u);
  EXPECT_EQ(view.header.mtime_us, 1'700'000'000'000'000);
  EXPECT_EQ(view.header.format_version, kChunkFormatVersion);
  EXPECT_EQ(DecodeDense(rec), dense);
  ASSERT_OK_AND_ASSIGN(Chunk back, DecodeChunk(rec));
  std::vector<uint8_t> back_dense(kChunkVoxels);
  back.ToDense(back_dense.data());
  EXPECT_EQ(back_dense, dense);
}

TEST(ChunkCodecTest, RoundTrips) {
  ExpectRoundTrip(testing::UniformChunk(0));
  ExpectRoundTrip(testing::UniformChunk(testing::kStone));
  ExpectRoundTrip(testing::SampleSurfaceChunk(1));
  ExpectRoundTrip(testing::SampleSurfaceChunk(7));
  ExpectRoundTrip(testing::NoiseChunk(1));
}

TEST(ChunkCodecTest, UniformRecordIsAtMost32Bytes) {
  const std::vector<uint8_t> rec = EncodeChunk(Chunk(testing::kStone), 1, 2);
  EXPECT_LE(rec.size(), 32u);
  ASSERT_OK_AND_ASSIGN(ChunkRecordView view, ParseChunkRecord(rec));
  EXPECT_EQ(view.header.encoding, ChunkEncoding::kUniform);
  // A grid whose bricks are all one material also encodes as uniform.
  Chunk c(3);
  c.Set(1, 1, 1, 4);
  c.Set(1, 1, 1, 3);
  c.Compact();
  EXPECT_LE(EncodeChunk(c, 1, 2).size(), 32u);
}

// Every single-voxel change of a uniform chunk round-trips. The encoding is
// per brick, so the suite checks every position of one brick plus one
// position in every brick; VOXDB_EXHAUSTIVE=1 checks all 2,097,152.
TEST(ChunkCodecTest, EverySingleVoxelChangeOfAUniformChunk) {
  std::vector<uint8_t> dense(kChunkVoxels, testing::kStone);
  std::vector<uint8_t> out(kChunkVoxels);
  auto check = [&](uint32_t x, uint32_t y, uint32_t z) {
    Chunk c(testing::kStone);
    c.Set(x, y, z, testing::kGoldOre);
    const std::vector<uint8_t> rec = EncodeChunk(c, 1, 1);
    ASSERT_OK(DecodeChunkToDense(rec, out.data()));
    const size_t i = x + kChunkEdge * (y + size_t{kChunkEdge} * z);
    dense[i] = testing::kGoldOre;
    ASSERT_EQ(out, dense) << x << "," << y << "," << z;
    dense[i] = testing::kStone;
  };
  const char* exhaustive = std::getenv("VOXDB_EXHAUSTIVE");
  if (exhaustive && std::string_view(exhaustive) == "1") {
    for (uint32_t z = 0; z < 128; ++z)
      for (uint32_t y = 0; y < 128; ++y)
        for (uint32_t x = 0; x < 128; ++x) check(x, y, z);
    return;
  }
  for (uint32_t z = 0; z < 16; ++z)
    for (uint32_t y = 0; y < 16; ++y)
      for (uint32_t x = 0; x < 16; ++x) check(x + 16, y + 32, z + 48);
  for (uint32_t bz = 0; bz < 8; ++bz)
    for (uint32_t by = 0; by < 8; ++by)
      for (uint32_t bx = 0; bx < 8; ++bx) check(bx * 16 + 15, by * 16 + bx, bz * 16 + by);
}

// A flipped byte anywhere gives CORRUPT: never wrong voxels, never a crash.
void ExpectEveryFlipIsCorrupt(const std::vector<uint8_t>& rec, size_t stride) {
  std::vector<uint8_t> out(kChunkVoxels);
  for (size_t pos = 0; pos < rec.size(); pos += stride) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      std::vector<uint8_t> bad = rec;
      bad[pos] ^= mask;
      const Status s = DecodeChunkToDense(bad, out.data());
      ASSERT_TRUE(IsCorrupt(s)) << "byte " << pos << " mask " << int{mask} << ": " << s;
      ASSERT_TRUE(IsCorrupt(DecodeChunk(bad).status()));
    }
  }
}

TEST(ChunkCodecTest, FlippedByteIsCorrupt) {
  ExpectEveryFlipIsCorrupt(EncodeChunk(Chunk(testing::kDirt), 5, 6), 1);
  const std::vector<uint8_t> surface =
      EncodeChunk(Chunk::FromDense(testing::SampleSurfaceChunk(1)), 5, 6);
  ExpectEveryFlipIsCorrupt(surface, 1);
}

TEST(ChunkCodecTest, TruncatedAndExtendedRecordsAreCorrupt) {
  const std::vector<uint8_t> rec =
      EncodeChunk(Chunk::FromDense(testing::SampleSurfaceChunk(1)), 5, 6);
  for (size_t n : {size_t{0}, size_t{1}, kChunkHeaderSize - 1, kChunkHeaderSize,
                   kChunkHeaderSize + 3, rec.size() / 2, rec.size() - 1}) {
    std::vector<uint8_t> cut(rec.begin(), rec.begin() + static_cast<ptrdiff_t>(n));
    EXPECT_TRUE(IsCorrupt(DecodeChunk(cut).status())) << n;
  }
  std::vector<uint8_t> longer = rec;
  longer.push_back(0);
  EXPECT_TRUE(IsCorrupt(DecodeChunk(longer).status()));
}

// Garbage with a valid checksum (a buggy or hostile writer) must not crash
// the decoder or make it allocate without bound.
TEST(ChunkCodecTest, GarbagePayloadWithValidChecksumIsCorrupt) {
  std::mt19937 rng(17);
  const std::vector<uint8_t> good =
      EncodeChunk(Chunk::FromDense(testing::SampleSurfaceChunk(1)), 1, 1);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<uint8_t> rec = good;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f)
      rec[kChunkHeaderSize + rng() % (rec.size() - kChunkHeaderSize)] ^=
          static_cast<uint8_t>(1 + rng() % 255);
    if (trial % 3 == 0) rec.resize(kChunkHeaderSize + rng() % (rec.size() - kChunkHeaderSize));
    Reseal(rec);
    auto decoded = DecodeChunk(rec);
    if (!decoded.ok()) {
      EXPECT_TRUE(IsCorrupt(decoded.status())) << decoded.status();
    }
  }
}

TEST(ChunkCodecTest, UnknownFormatVersionIsAClearError) {
  std::vector<uint8_t> rec = EncodeChunk(Chunk(1), 1, 1);
  rec[0] = 2;  // a future format, correctly sealed
  Reseal(rec);
  const Status s = DecodeChunk(rec).status();
  EXPECT_TRUE(IsUnsupported(s)) << s;
  EXPECT_NE(s.message().find("format version 2"), std::string_view::npos) << s;
}

TEST(ChunkCodecTest, SurfaceChunkBeatsZstdOfRawBytes) {
  // The size target is measured by tests/bench/codec_bench; this guards the
  // direction so a regression shows up in the suite too.
  const std::vector<uint8_t> dense = testing::SampleSurfaceChunk(1);
  const std::vector<uint8_t> rec = EncodeChunk(Chunk::FromDense(dense), 1, 1);
  EXPECT_LT(rec.size(), kChunkVoxels / 10);
}

}  // namespace

}  // namespace voxdb::engine

namespace voxdb::engine {
namespace {

// The uniform example in engine/FORMAT.md, byte for byte.
TEST(ChunkCodecTest, FormatDocExampleIsExact) {
  const std::vector<uint8_t> expected = {0x01, 0x00, 0x00, 0x00, 0x5f, 0xe5, 0xf5, 0xf4, 0x01, 0x00,
                                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                         0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01};
  EXPECT_EQ(EncodeChunk(Chunk(1), 1, 0), expected);
}

}  // namespace
}  // namespace voxdb::engine
