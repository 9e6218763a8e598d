// Tests of the journal record codec (engine/journal.h, engine/FORMAT.md
// "journal"): every op round-trips, keys sort by sequence number, and a
// damaged or malformed record is CORRUPT, never a crash or a huge
// allocation.
#include "engine/journal.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/coding.h"
#include "engine/crc32c.h"
#include "engine/status.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/world.h"

namespace voxdb::engine {
namespace {

const VoxelBox kBox{{testing::kX, testing::kY, testing::kZ},
                    {testing::kX + 5, testing::kY + 3, testing::kZ + 2}};

// Seals `value` again after a test changed its body: the checksum passes,
// so the decoder has to find what is wrong with the body itself.
std::vector<uint8_t> Reseal(std::vector<uint8_t> value) {
  EncodeFixed32(value.data(), Crc32cExtend(0, value.data() + 4, value.size() - 4));
  return value;
}

void ExpectCorrupt(std::span<const uint8_t> value, const char* what) {
  const auto r = DecodeJournalRecord(value);
  ASSERT_FALSE(r.ok()) << what;
  EXPECT_TRUE(IsCorrupt(r.status())) << what << ": " << r.status();
}

TEST(JournalTest, SetVoxelsRoundTripsWithItsGroupsInOrder) {
  std::vector<ChunkEdits> edits(2);
  edits[0].code = ChunkKey::FromCoord({1'000'000, 400'000, 312'500}).code();
  edits[0].packed = {PackEdit(0, 1), PackEdit((1u << 21) - 1, 255), PackEdit(77, 0)};
  edits[1].code = ChunkKey::kMaxCode;
  edits[1].packed = {PackEdit(5, 9)};
  const std::vector<uint8_t> value = EncodeSetVoxels(edits);
  EXPECT_EQ(EncodedJournalOp(value), JournalOp::kSetVoxels);
  ASSERT_OK_AND_ASSIGN(JournalRecord r, DecodeJournalRecord(value));
  EXPECT_EQ(r.op, JournalOp::kSetVoxels);
  ASSERT_EQ(r.edits.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(r.edits[i].code, edits[i].code);
    EXPECT_EQ(r.edits[i].packed, edits[i].packed);
  }
  EXPECT_EQ(EditIndex(r.edits[0].packed[1]), (1u << 21) - 1);
  EXPECT_EQ(EditMaterial(r.edits[0].packed[1]), 255);
  // No groups at all is a record too.
  ASSERT_OK_AND_ASSIGN(JournalRecord empty, DecodeJournalRecord(EncodeSetVoxels({})));
  EXPECT_TRUE(empty.edits.empty());
}

TEST(JournalTest, BoxOpsAndChunkOpsRoundTrip) {
  std::vector<uint8_t> voxels(kBox.volume());
  for (size_t i = 0; i < voxels.size(); ++i) voxels[i] = static_cast<uint8_t>(i * 7);
  ASSERT_OK_AND_ASSIGN(JournalRecord w, DecodeJournalRecord(EncodeWriteBox(kBox, voxels)));
  EXPECT_EQ(w.op, JournalOp::kWriteBox);
  EXPECT_EQ(w.box.lo, kBox.lo);
  EXPECT_EQ(w.box.hi, kBox.hi);
  EXPECT_EQ(w.voxels, voxels);

  ASSERT_OK_AND_ASSIGN(JournalRecord f, DecodeJournalRecord(EncodeFillBox(kBox, 42)));
  EXPECT_EQ(f.op, JournalOp::kFillBox);
  EXPECT_EQ(f.box.lo, kBox.lo);
  EXPECT_EQ(f.box.hi, kBox.hi);
  EXPECT_EQ(f.material, 42);

  const ChunkKey key = ChunkKey::FromCode(testing::Code(3));
  const std::vector<uint8_t> record{1, 2, 3, 4, 5};
  ASSERT_OK_AND_ASSIGN(JournalRecord p, DecodeJournalRecord(EncodePutChunk(key, record)));
  EXPECT_EQ(p.op, JournalOp::kPutChunk);
  EXPECT_EQ(p.code, key.code());
  EXPECT_EQ(p.record, record);

  ASSERT_OK_AND_ASSIGN(JournalRecord d, DecodeJournalRecord(EncodeDeleteChunk(key)));
  EXPECT_EQ(d.op, JournalOp::kDeleteChunk);
  EXPECT_EQ(d.code, key.code());
  EXPECT_EQ(EncodedJournalOp(EncodeDeleteChunk(key)), JournalOp::kDeleteChunk);
}

// Keys are the sequence number big-endian, so the table's byte order is
// commit order.
TEST(JournalTest, KeysSortInSequenceOrder) {
  const std::vector<uint64_t> seqs{0, 1, 255, 256, 65'536, uint64_t{1} << 40, UINT64_MAX};
  std::vector<std::array<uint8_t, 8>> keys;
  for (uint64_t seq : seqs) {
    keys.push_back(JournalKey(seq));
    EXPECT_EQ(DecodeJournalKey(keys.back()), seq);
  }
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(JournalKey(0x0102030405060708), (std::array<uint8_t, 8>{1, 2, 3, 4, 5, 6, 7, 8}));
}

// Any flipped bit fails the checksum; a value shorter than the header is
// malformed.
TEST(JournalTest, ADamagedRecordIsCorrupt) {
  const std::vector<uint8_t> good = EncodeFillBox(kBox, 7);
  for (size_t i = 0; i < good.size(); ++i) {
    std::vector<uint8_t> bad = good;
    bad[i] ^= 0x10;
    ExpectCorrupt(bad, "a flipped bit");
  }
  for (size_t n = 0; n < 5; ++n) {
    ExpectCorrupt(std::span<const uint8_t>(good.data(), n), "shorter than the header");
  }
  // Cut short, sealed or not.
  std::vector<uint8_t> cut(good.begin(), good.end() - 1);
  ExpectCorrupt(cut, "cut, unsealed");
  ExpectCorrupt(Reseal(cut), "cut, sealed");
}

// Bodies that pass the checksum but are malformed: each is CORRUPT.
TEST(JournalTest, AMalformedBodyIsCorruptEvenWithAGoodChecksum) {
  const ChunkKey key = ChunkKey::FromCode(testing::Code());
  {
    std::vector<uint8_t> v = EncodeDeleteChunk(key);
    v[4] = 9;  // no such op
    ExpectCorrupt(Reseal(v), "unknown op");
  }
  {
    std::vector<uint8_t> v = EncodeDeleteChunk(key);
    v.push_back(0);
    ExpectCorrupt(Reseal(v), "trailing bytes");
  }
  {
    std::vector<uint8_t> v = EncodeDeleteChunk(key);
    EncodeFixed64(v.data() + 5, ChunkKey::kMaxCode + 1);
    ExpectCorrupt(Reseal(v), "a chunk key past the grid");
  }
  {
    std::vector<uint8_t> v = EncodePutChunk(key, std::vector<uint8_t>{1, 2});
    EncodeFixed64(v.data() + 5, UINT64_MAX);
    ExpectCorrupt(Reseal(v), "a put past the grid");
  }
  {
    // A group count far beyond what the value holds: refused before any
    // allocation.
    std::vector<uint8_t> v = EncodeSetVoxels({});
    EncodeFixed32(v.data() + 5, 0xFFFFFFFF);
    ExpectCorrupt(Reseal(v), "group count");
  }
  {
    // A group whose edit count runs past the end.
    std::vector<ChunkEdits> edits(1);
    edits[0].code = key.code();
    edits[0].packed = {PackEdit(1, 1)};
    std::vector<uint8_t> v = EncodeSetVoxels(edits);
    EncodeFixed32(v.data() + 5 + 4 + 8, 1'000'000);
    ExpectCorrupt(Reseal(v), "edit count");
  }
  {
    // A fill whose box is empty (hi <= lo).
    std::vector<uint8_t> v = EncodeFillBox(kBox, 3);
    EncodeFixed64(v.data() + 5 + 24, kBox.lo.x);  // hi.x = lo.x
    ExpectCorrupt(Reseal(v), "an empty fill box");
  }
  {
    // A write whose voxels do not match its box's volume.
    std::vector<uint8_t> voxels(kBox.volume(), 1);
    std::vector<uint8_t> v = EncodeWriteBox(kBox, voxels);
    EncodeFixed64(v.data() + 5 + 24, kBox.hi.x + 1);  // one column more
    ExpectCorrupt(Reseal(v), "box voxels");
  }
  {
    // A write box so large its voxels could not be allocated.
    std::vector<uint8_t> v = EncodeWriteBox(kBox, std::vector<uint8_t>(kBox.volume(), 1));
    EncodeFixed64(v.data() + 5 + 24, kBox.lo.x + (uint64_t{1} << 40));
    ExpectCorrupt(Reseal(v), "a huge box");
  }
}

}  // namespace
}  // namespace voxdb::engine
