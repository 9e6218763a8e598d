#include "engine/change_feed.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "engine/database.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"
#include "tests/testing/world.h"

namespace voxdb::engine {
namespace {

using testing::kX;
using testing::kY;
using testing::kZ;
using testing::TempDir;
using testing::TestOptions;

std::vector<std::shared_ptr<const ChangeRecord>> ReadAll(const ChangeFeed& feed, uint64_t after) {
  std::vector<std::shared_ptr<const ChangeRecord>> out;
  EXPECT_TRUE(feed.Read(after, SIZE_MAX, &out));
  return out;
}

uint64_t CodeOf(const Database& db, VoxelCoord v) {
  const ChunkCoord c = db.frame().ChunkOf(v);
  return MortonEncode(c.x, c.y, c.z);
}

TEST(DatabaseChangeFeedTest, EveryKindOfWriteIsPublishedInCommitOrderOnceAcknowledged) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  ChangeFeed& feed = db->changes();
  EXPECT_EQ(feed.last_seq(), 0u);

  const VoxelCoord a{kX + 1, kY + 2, kZ + 3}, b{kX + 130, kY + 2, kZ + 3};
  const VoxelEdit edits[] = {{a, 7}, {b, 8}, {a, 9}};
  const WriteResult set = db->SetVoxelsAndWait(edits);
  ASSERT_OK(set.status);
  // Published before the writer is told: a subscriber is never behind an
  // acknowledged write for longer than the push takes.
  auto records = ReadAll(feed, 0);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]->seq, set.version);
  EXPECT_EQ(records[0]->op, JournalOp::kSetVoxels);
  ASSERT_EQ(records[0]->chunks.size(), 2u);
  EXPECT_EQ(records[0]->chunks[0].code, CodeOf(*db, a));
  EXPECT_TRUE(records[0]->chunks[0].present);
  const ChunkCoord o = db->frame().OffsetInChunk(a);
  const uint32_t local = o.x | o.y << 7 | o.z << 14;
  EXPECT_EQ(records[0]->chunks[0].edits,
            (std::vector<uint32_t>{PackEdit(local, 7), PackEdit(local, 9)}));
  EXPECT_EQ(records[0]->chunks[1].code, CodeOf(*db, b));
  EXPECT_EQ(records[0]->chunks[1].edits.size(), 1u);

  const VoxelBox box{{kX, kY, kZ}, {kX + 200, kY + 10, kZ + 10}};
  std::vector<uint8_t> voxels(box.volume(), 3);
  const WriteResult wrote = db->WriteBoxAndWait(box, voxels);
  ASSERT_OK(wrote.status);
  const WriteResult filled = db->FillBoxAndWait(box, 0);
  ASSERT_OK(filled.status);
  const WriteResult deleted = db->DeleteChunkAndWait(ChunkKey::FromCode(CodeOf(*db, a)));
  ASSERT_OK(deleted.status);

  records = ReadAll(feed, set.version);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0]->seq, wrote.version);
  EXPECT_EQ(records[0]->op, JournalOp::kWriteBox);
  EXPECT_EQ(records[0]->box, box);
  EXPECT_EQ(records[0]->chunks.size(), 2u);  // the box spans two chunks in x
  EXPECT_EQ(records[1]->seq, filled.version);
  EXPECT_EQ(records[1]->op, JournalOp::kFillBox);
  EXPECT_EQ(records[1]->box, box);
  EXPECT_EQ(records[1]->material, 0);
  EXPECT_EQ(records[1]->chunks.size(), 2u);  // the cached chunks it rewrote
  EXPECT_EQ(records[2]->seq, deleted.version);
  EXPECT_EQ(records[2]->op, JournalOp::kDeleteChunk);
  ASSERT_EQ(records[2]->chunks.size(), 1u);
  EXPECT_FALSE(records[2]->chunks[0].present);
  EXPECT_EQ(feed.last_seq(), deleted.version);

  // A failed write publishes nothing and leaves no hole.
  const VoxelEdit outside[] = {{{~uint64_t{0}, 0, 0}, 1}};
  EXPECT_FALSE(db->SetVoxelsAndWait(outside).status.ok());
  EXPECT_EQ(feed.last_seq(), deleted.version);
}

TEST(DatabaseChangeFeedTest, ConcurrentWritersAppearInSequenceOrderWithNoneMissing) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  constexpr int kThreads = 4, kWrites = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWrites; ++i) {
        const VoxelEdit e[] = {{{kX + 128u * t, kY + i, kZ}, static_cast<uint8_t>(i)}};
        ASSERT_OK(db->SetVoxelsAndWait(e).status);
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto records = ReadAll(db->changes(), 0);
  ASSERT_EQ(records.size(), size_t{kThreads * kWrites});
  for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ(records[i]->seq, i + 1);
}

TEST(DatabaseChangeFeedTest, DroppedRecordsMakeAGapAndAReopenedDatabaseStartsAfterItsLastWrite) {
  TempDir dir;
  DatabaseOptions options = TestOptions();
  options.changes.max_records = 3;
  uint64_t last = 0;
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
    for (int i = 0; i < 5; ++i) {
      const VoxelEdit e[] = {{{kX, kY, kZ + i}, 1}};
      last = db->SetVoxelsAndWait(e).version;
    }
    ChangeFeed& feed = db->changes();
    std::vector<std::shared_ptr<const ChangeRecord>> out;
    EXPECT_FALSE(feed.Read(0, SIZE_MAX, &out));  // 1 and 2 are gone
    EXPECT_FALSE(feed.Read(1, SIZE_MAX, &out));
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(feed.resume_floor(), 2u);
    ASSERT_TRUE(feed.Read(2, SIZE_MAX, &out));
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0]->seq, 3u);
    out.clear();
    ASSERT_TRUE(feed.Read(3, 1, &out));  // at most max_records
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0]->seq, 4u);
  }
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  std::vector<std::shared_ptr<const ChangeRecord>> out;
  EXPECT_FALSE(db->changes().Read(last - 1, SIZE_MAX, &out));
  EXPECT_TRUE(db->changes().Read(last, SIZE_MAX, &out));
  EXPECT_TRUE(out.empty());
  const VoxelEdit e[] = {{{kX, kY, kZ}, 2}};
  EXPECT_EQ(db->SetVoxelsAndWait(e).version, last + 1);
  EXPECT_EQ(ReadAll(db->changes(), last).size(), 1u);
}

TEST(DatabaseChangeFeedTest, TheByteBudgetBoundsTheRetainedRecords) {
  ChangeFeedOptions options;
  options.max_bytes = 64 << 10;
  ChangeFeed feed(options, 0);
  std::atomic<int> told{0};
  feed.AddListener([&] { ++told; });
  for (uint64_t seq = 1; seq <= 100; ++seq) {
    auto r = std::make_shared<ChangeRecord>();
    r->seq = seq;
    r->chunks.push_back({seq, true, std::vector<uint32_t>(1000, 1)});
    feed.Publish({r});
  }
  EXPECT_EQ(told.load(), 100);
  EXPECT_LE(feed.bytes(), options.max_bytes);
  EXPECT_GE(feed.records(), 10u);
  EXPECT_LT(feed.records(), 20u);
  EXPECT_EQ(feed.last_seq(), 100u);
  EXPECT_EQ(feed.resume_floor(), 100 - feed.records());
}

TEST(DatabaseChangeFeedTest, AsyncWritesArePublishedWhenTheirCommitIsDone) {
  TempDir dir;
  DatabaseOptions options = TestOptions();
  options.durability = Durability::kAsync;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  const VoxelEdit e[] = {{{kX, kY, kZ}, 1}};
  const uint64_t v = db->SetVoxelsAndWait(e).version;
  ASSERT_OK(db->Flush());  // commits the journal first
  const auto records = ReadAll(db->changes(), 0);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]->seq, v);
}

}  // namespace
}  // namespace voxdb::engine
