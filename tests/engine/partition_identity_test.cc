// The partition a Database holds (DatabaseOptions::partition, engine/partition.h):
// its identity in meta, the range every read and write is held to
// (WRONG_PARTITION), and epoch fencing checked before every journal commit.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/database.h"
#include "engine/format.h"
#include "engine/partition.h"
#include "engine/verify.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"
#include "tests/testing/world.h"

namespace voxdb::engine {
namespace {

using testing::kCx;
using testing::kCy;
using testing::kCz;
using testing::kEdge;
using testing::TempDir;
using testing::TestOptions;

// Chunks (kCx .. kCx+1, kCy .. kCy+1, kCz .. kCz+1): one octree node of
// level 1 (kCx, kCy and kCz are even), so chunk dx = 2 is outside.
MortonRange TestRange() { return MortonRange::OctreeNode(testing::Code(0) >> 3, 1); }

PartitionIdentity TestPartition() { return PartitionIdentity{3, TestRange(), 1}; }

DatabaseOptions PartitionOptions() {
  DatabaseOptions o = TestOptions();
  o.partition = TestPartition();
  return o;
}

// Voxel (i, y) of chunk (kCx + dx, kCy, kCz), in its layer z = 4.
VoxelCoord At(uint64_t dx, uint64_t i = 0, uint64_t y = 0) {
  return {(kCx + dx) * kEdge + i, kCy * kEdge + y, kCz * kEdge + 4};
}

ChunkKey Key(uint64_t dx) { return ChunkKey::FromCode(testing::Code(dx)); }

uint8_t Voxel(Database& db, VoxelCoord v) {
  uint8_t out = 0xEE;
  EXPECT_OK(db.GetVoxels({&v, 1}, &out));
  return out;
}

// The box of chunks [from, to) along x, one chunk deep in y and z.
VoxelBox Row(uint64_t from, uint64_t to) {
  return {{(kCx + from) * kEdge, kCy * kEdge, kCz * kEdge},
          {(kCx + to) * kEdge, (kCy + 1) * kEdge, (kCz + 1) * kEdge}};
}

std::vector<uint8_t> ReadRow(Database& db, uint64_t from, uint64_t to) {
  const VoxelBox box = Row(from, to);
  std::vector<uint8_t> out(box.volume());
  EXPECT_OK(db.ReadBox(box, out.data()));
  return out;
}

// The statuses of GetChunks for `keys`, in order.
std::vector<Status> ChunkStatuses(Database& db, const std::vector<ChunkKey>& keys) {
  std::vector<Status> out(keys.size());
  EXPECT_OK(db.GetChunks(keys, [&](size_t i, const ChunkRead& r) { out[i] = r.status; }));
  return out;
}

// Deletes the partition keys from the closed database at `dir`: a database
// as a build before partitions left it.
void MakeLegacy(const std::string& dir) {
  StoreOptions so;
  so.sync = false;
  auto store = ChunkStore::Open(dir, so);
  ASSERT_TRUE(store.ok()) << store.status();
  WriteBatch batch;
  for (std::string_view key :
       {kMetaPartitionId, kMetaPartitionRange, kMetaPartitionParent, kMetaEpochHistory}) {
    batch.Delete(Table::kMeta, AsBytes(key));
  }
  ASSERT_OK((*store)->Write(batch));
}

bool HasMeta(const std::string& dir, std::string_view key) {
  StoreOptions so;
  so.sync = false;
  auto store = ChunkStore::Open(dir, so);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return false;
  auto snap = (*store)->BeginRead();
  EXPECT_TRUE(snap.ok());
  return (*snap)->Get(Table::kMeta, AsBytes(key)).ok();
}

TEST(PartitionIdentityTest, EncodingsRoundTripAndRefuseDamage) {
  const MortonRange r = TestRange();
  ASSERT_OK_AND_ASSIGN(MortonRange back, DecodeMortonRange(EncodeMortonRange(r)));
  EXPECT_EQ(back, r);
  EXPECT_TRUE(IsCorrupt(DecodeMortonRange(std::vector<uint8_t>(15)).status()));
  const EpochHistory h = {{1, 1}, {4, 10}, {5, 10}};
  ASSERT_OK_AND_ASSIGN(EpochHistory hb, DecodeEpochHistory(EncodeEpochHistory(h)));
  EXPECT_EQ(hb, h);
  EXPECT_TRUE(IsCorrupt(DecodeEpochHistory(std::vector<uint8_t>(17)).status()));
  EXPECT_TRUE(IsCorrupt(DecodeEpochHistory(EncodeEpochHistory({{4, 1}, {4, 2}})).status()));
  EXPECT_TRUE(IsCorrupt(DecodeEpochHistory(EncodeEpochHistory({{4, 5}, {5, 2}})).status()));
  EXPECT_EQ(EpochOfSeq(h, 0), 0u);
  EXPECT_EQ(EpochOfSeq(h, 1), 1u);
  EXPECT_EQ(EpochOfSeq(h, 9), 1u);
  EXPECT_EQ(EpochOfSeq(h, 10), 5u);
  EXPECT_EQ(EpochOfSeq({}, 7), 0u);
}

TEST(PartitionIdentityTest, BadRangesAreInvalidOptions) {
  TempDir dir;
  DatabaseOptions o = TestOptions();
  o.partition.range = MortonRange{5, 5};
  EXPECT_TRUE(absl::IsInvalidArgument(Database::Open(dir.path(), o).status()));
  o.partition.range = MortonRange{0, ChunkKey::kMaxCode + 2};
  EXPECT_TRUE(absl::IsInvalidArgument(Database::Open(dir.path(), o).status()));
}

TEST(PartitionIdentityTest, IdentityIsPersistedAndAnotherIsRefused) {
  TempDir dir;
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
    EXPECT_EQ(db->partition(), TestPartition());
    EXPECT_EQ(db->epoch(), 0u);
    ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(0), 7}}}).status);
  }
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
    EXPECT_EQ(db->partition(), TestPartition());
    EXPECT_EQ(Voxel(*db, At(0)), 7);
  }
  DatabaseOptions other_id = PartitionOptions();
  other_id.partition.id = 4;
  auto s = Database::Open(dir.path(), other_id).status();
  EXPECT_TRUE(IsMismatch(s)) << s;
  EXPECT_NE(s.message().find("partition 3"), std::string::npos) << s;
  EXPECT_NE(s.message().find("partition 4"), std::string::npos) << s;

  DatabaseOptions other_range = PartitionOptions();
  other_range.partition.range.end += 8;
  s = Database::Open(dir.path(), other_range).status();
  EXPECT_TRUE(IsMismatch(s)) << s;
  EXPECT_NE(s.message().find(absl::StrCat(TestRange().end)), std::string::npos) << s;
  EXPECT_NE(s.message().find(absl::StrCat(TestRange().end + 8)), std::string::npos) << s;

  DatabaseOptions defaults = TestOptions();
  EXPECT_TRUE(IsMismatch(Database::Open(dir.path(), defaults).status()));

  // The parent is the stored one's: it is not part of what must match.
  DatabaseOptions other_parent = PartitionOptions();
  other_parent.partition.parent = 9;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), other_parent));
  EXPECT_EQ(db->partition().parent, 1u);
}

TEST(PartitionIdentityTest, LegacyDatabaseOpensWithTheDefaults) {
  TempDir dir;
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
    ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(5), 9}}}).status);
  }
  MakeLegacy(dir.path());
  EXPECT_FALSE(HasMeta(dir.path(), kMetaPartitionId));
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
    EXPECT_EQ(db->partition(), PartitionIdentity{});
    EXPECT_EQ(db->epoch(), 0u);
    EXPECT_TRUE(db->epoch_history().empty());
    EXPECT_EQ(Voxel(*db, At(5)), 9);
    ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(6), 1}}}).status);
  }
  // The defaults are recorded now: another identity is refused.
  EXPECT_TRUE(HasMeta(dir.path(), kMetaPartitionId));
  EXPECT_FALSE(HasMeta(dir.path(), kMetaEpochHistory));
  EXPECT_TRUE(IsMismatch(Database::Open(dir.path(), PartitionOptions()).status()));

  // A legacy database opened as a partition takes that identity.
  MakeLegacy(dir.path());
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
    EXPECT_EQ(db->partition(), TestPartition());
  }
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
  EXPECT_EQ(db->partition(), TestPartition());
}

TEST(PartitionIdentityTest, WritesOutsideTheRangeAreRefusedWhole) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
  ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(0), 5}, VoxelEdit{At(1, 3), 6}}}).status);
  const uint64_t seq = db->Stats().last_seq;
  const std::vector<uint8_t> before = ReadRow(*db, 0, 2);
  auto expect_refused = [&](const WriteResult& r, const char* what) {
    EXPECT_TRUE(IsWrongPartition(r.status)) << what << ": " << r.status;
    EXPECT_EQ(r.version, 0u) << what;
  };

  // One edit outside: none of them applied.
  expect_refused(db->SetVoxelsAndWait({{VoxelEdit{At(0), 50}, VoxelEdit{At(2), 51}}}),
                 "SET_VOXELS");
  // Boxes straddling the end of the range.
  const VoxelBox straddle = Row(1, 3);
  expect_refused(db->WriteBoxAndWait(straddle, std::vector<uint8_t>(straddle.volume(), 52)),
                 "WRITE_BOX");
  expect_refused(db->FillBoxAndWait(straddle, 53), "FILL_BOX");
  const VoxelBox outside = Row(2, 3);
  expect_refused(db->WriteBoxAndWait(outside, std::vector<uint8_t>(outside.volume(), 54)),
                 "WRITE_BOX outside");
  // Whole chunks outside.
  std::vector<uint8_t> record;
  const ChunkKey key0 = Key(0);
  ASSERT_OK(db->GetChunks({&key0, 1}, [&](size_t, const ChunkRead& r) {
    record.assign(r.record.begin(), r.record.end());
  }));
  expect_refused(db->PutChunkAndWait(Key(2), record, std::nullopt), "PUT_CHUNK");
  expect_refused(db->DeleteChunkAndWait(Key(2)), "DELETE_CHUNK");
  // The asynchronous forms answer the same, inline.
  WriteResult async;
  db->SetVoxels({{VoxelEdit{At(2), 55}}}, [&](const WriteResult& r) { async = r; });
  expect_refused(async, "SET_VOXELS async");

  // Nothing of them is visible, and no version was taken.
  EXPECT_EQ(db->Stats().last_seq, seq);
  EXPECT_EQ(ReadRow(*db, 0, 2), before);
  EXPECT_EQ(db->Fills()->size(), 0u);
  ASSERT_OK(db->Flush());
  EXPECT_EQ(ReadRow(*db, 0, 2), before);

  // Inside the range, every write still works.
  ASSERT_OK(db->WriteBoxAndWait(Row(1, 2), std::vector<uint8_t>(Row(1, 2).volume(), 8)).status);
  ASSERT_OK(db->FillBoxAndWait(Row(0, 1), 2).status);
  ASSERT_OK(db->PutChunkAndWait(Key(1), record, std::nullopt).status);
  ASSERT_OK(db->DeleteChunkAndWait(Key(1)).status);
  EXPECT_EQ(db->Stats().last_seq, seq + 4);
}

TEST(PartitionIdentityTest, ReadsOutsideTheRangeAreWrongPartition) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
  ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(1), 4}}}).status);

  const std::vector<Status> statuses = ChunkStatuses(*db, {Key(1), Key(2), Key(0)});
  EXPECT_OK(statuses[0]);
  EXPECT_TRUE(IsWrongPartition(statuses[1])) << statuses[1];
  EXPECT_OK(statuses[2]);

  uint8_t out[2] = {0xEE, 0xEE};
  const VoxelCoord at[2] = {At(1), At(2)};
  EXPECT_TRUE(IsWrongPartition(db->GetVoxels(at, out)));
  EXPECT_EQ(Voxel(*db, At(1)), 4);

  const VoxelBox straddle = Row(1, 3);
  std::vector<uint8_t> buf(straddle.volume());
  EXPECT_TRUE(IsWrongPartition(db->ReadBox(straddle, buf.data())));
  EXPECT_TRUE(IsWrongPartition(db->CheckBoxLimits(straddle)));
  EXPECT_OK(db->CheckBoxLimits(Row(0, 2)));

  ASSERT_OK_AND_ASSIGN(auto snap, db->Snapshot());
  std::vector<Status> in_snap(2);
  const std::vector<ChunkKey> keys = {Key(1), Key(2)};
  ASSERT_OK(snap->GetChunks(keys, [&](size_t i, const ChunkRead& r) { in_snap[i] = r.status; }));
  EXPECT_OK(in_snap[0]);
  EXPECT_TRUE(IsWrongPartition(in_snap[1])) << in_snap[1];
}

// A fence callback the test can hold: the committer waits in it, so that
// writes are in flight, until released.
class HeldCallback {
 public:
  Status operator()(uint64_t epoch) {
    std::unique_lock<std::mutex> l(mu_);
    epochs_.push_back(epoch);
    if (hold_) {
      entered_ = true;
      cv_.notify_all();
      cv_.wait(l, [&] { return !hold_; });
    }
    return refuse_;
  }
  void Hold() {
    std::lock_guard<std::mutex> l(mu_);
    hold_ = true;
    entered_ = false;
  }
  void WaitEntered() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return entered_; });
  }
  void Release() {
    std::lock_guard<std::mutex> l(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  void Refuse(Status s) {
    std::lock_guard<std::mutex> l(mu_);
    refuse_ = std::move(s);
  }
  uint64_t last_epoch() {
    std::lock_guard<std::mutex> l(mu_);
    return epochs_.empty() ? ~uint64_t{0} : epochs_.back();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_ = false, entered_ = false;
  Status refuse_;
  std::vector<uint64_t> epochs_;
};

DatabaseOptions WithCallback(HeldCallback* cb) {
  DatabaseOptions o = PartitionOptions();
  o.fence = [cb](uint64_t epoch) { return (*cb)(epoch); };
  return o;
}

TEST(PartitionIdentityTest, FenceFailsWritesInFlightAndRefusesNewOnes) {
  TempDir dir;
  HeldCallback cb;
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), WithCallback(&cb)));
    ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(0), 1}}}).status);
    EXPECT_EQ(cb.last_epoch(), 0u);
    const uint64_t rollbacks = db->Stats().rollbacks;

    // One write in the commit (held in the callback), one queued behind it.
    cb.Hold();
    auto first = std::async(std::launch::async, [&] {
      return db->SetVoxelsAndWait({{VoxelEdit{At(0), 2}}});
    });
    cb.WaitEntered();
    std::promise<WriteResult> second;
    db->SetVoxels({{VoxelEdit{At(1), 3}}}, [&](const WriteResult& r) { second.set_value(r); });
    db->Fence(1);
    cb.Release();
    const WriteResult r1 = first.get();
    const WriteResult r2 = second.get_future().get();
    EXPECT_TRUE(IsWrongPartition(r1.status)) << r1.status;
    EXPECT_NE(r1.status.message().find("stale epoch 0, fenced at 1"), std::string::npos)
        << r1.status;
    EXPECT_TRUE(IsWrongPartition(r2.status)) << r2.status;
    EXPECT_EQ(db->Stats().rollbacks, rollbacks + 1);

    // Neither is visible, from the cache or the store.
    EXPECT_EQ(Voxel(*db, At(0)), 1);
    EXPECT_EQ(Voxel(*db, At(1)), 0);
    const std::vector<uint8_t> row = ReadRow(*db, 0, 2);

    // New writes are refused before they apply: no version, no rollback.
    const uint64_t seq = db->Stats().last_seq;
    const WriteResult r3 = db->SetVoxelsAndWait({{VoxelEdit{At(0), 4}}});
    EXPECT_TRUE(IsWrongPartition(r3.status)) << r3.status;
    EXPECT_TRUE(IsWrongPartition(db->FillBoxAndWait(Row(0, 1), 4).status));
    EXPECT_EQ(db->Stats().last_seq, seq);
    EXPECT_EQ(db->Stats().rollbacks, rollbacks + 1);
    // A lower fence changes nothing.
    db->Fence(0);
    EXPECT_TRUE(IsWrongPartition(db->SetVoxelsAndWait({{VoxelEdit{At(0), 4}}}).status));
    EXPECT_EQ(ReadRow(*db, 0, 2), row);
    // Reads still answer (what was committed before the fence).
    EXPECT_EQ(Voxel(*db, At(0)), 1);
  }
  // Nor after a reopen; the fence itself is not persisted.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
  EXPECT_EQ(Voxel(*db, At(0)), 1);
  EXPECT_EQ(Voxel(*db, At(1)), 0);
  EXPECT_EQ(db->epoch(), 0u);
  ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(1), 6}}}).status);
}

TEST(PartitionIdentityTest, ConcurrentWritersAcrossAFenceGetExactlyWhatTheirAnswerSays) {
  TempDir dir;
  constexpr int kThreads = 4;
  // Per thread, one answer per voxel it wrote (each voxel once, so that no
  // write hides another): voxel (i, t) of chunk t % 2.
  std::vector<std::vector<WriteResult>> results(kThreads);
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
    std::atomic<int> succeeded{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        int refused = 0;
        for (uint64_t i = 0; i < kEdge && refused < 3; ++i) {
          results[t].push_back(db->SetVoxelsAndWait({{VoxelEdit{At(t % 2, i, t), 1}}}));
          if (results[t].back().status.ok()) {
            succeeded.fetch_add(1);
          } else {
            ++refused;
          }
        }
      });
    }
    while (succeeded.load() < 16) std::this_thread::yield();
    db->Fence(1);
    for (auto& th : threads) th.join();
    int ok = 0, wrong = 0;
    for (int t = 0; t < kThreads; ++t) {
      for (size_t i = 0; i < results[t].size(); ++i) {
        const Status& s = results[t][i].status;
        ASSERT_TRUE(s.ok() || IsWrongPartition(s)) << s;
        (s.ok() ? ok : wrong)++;
        EXPECT_EQ(Voxel(*db, At(t % 2, i, t)), s.ok() ? 1 : 0) << t << "," << i << ": " << s;
      }
    }
    EXPECT_GE(ok, 16);
    EXPECT_GE(wrong, kThreads);  // every writer went on past the fence
  }
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
  for (int t = 0; t < kThreads; ++t) {
    for (size_t i = 0; i < results[t].size(); ++i) {
      EXPECT_EQ(Voxel(*db, At(t % 2, i, t)), results[t][i].status.ok() ? 1 : 0) << t << "," << i;
    }
  }
}

TEST(PartitionIdentityTest, AdoptEpochResumesWritesAndIsPersisted) {
  TempDir dir;
  HeldCallback cb;
  uint64_t first_seq_1 = 0, first_seq_2 = 0;
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), WithCallback(&cb)));
    ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(0), 1}}}).status);
    db->Fence(2);
    EXPECT_TRUE(IsWrongPartition(db->SetVoxelsAndWait({{VoxelEdit{At(0), 2}}}).status));

    first_seq_1 = db->Stats().last_seq + 1;
    ASSERT_OK(db->AdoptEpoch(1));
    EXPECT_EQ(db->epoch(), 1u);
    // Still below the fence.
    const Status still = db->SetVoxelsAndWait({{VoxelEdit{At(0), 2}}}).status;
    EXPECT_TRUE(IsWrongPartition(still)) << still;
    EXPECT_NE(still.message().find("stale epoch 1, fenced at 2"), std::string::npos) << still;
    EXPECT_TRUE(IsConflict(db->AdoptEpoch(1)));
    EXPECT_TRUE(IsConflict(db->AdoptEpoch(0)));

    first_seq_2 = db->Stats().last_seq + 1;
    ASSERT_OK(db->AdoptEpoch(2));
    EXPECT_EQ(db->epoch(), 2u);
    const WriteResult ok = db->SetVoxelsAndWait({{VoxelEdit{At(0), 3}}});
    ASSERT_OK(ok.status);
    EXPECT_EQ(ok.version, first_seq_2);
    EXPECT_EQ(cb.last_epoch(), 2u);
    EXPECT_EQ(Voxel(*db, At(0)), 3);
    EXPECT_EQ(db->epoch_history(), (EpochHistory{{1, first_seq_1}, {2, first_seq_2}}));
  }
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), PartitionOptions()));
  EXPECT_EQ(db->epoch(), 2u);
  EXPECT_EQ(db->epoch_history(), (EpochHistory{{1, first_seq_1}, {2, first_seq_2}}));
  EXPECT_EQ(Voxel(*db, At(0)), 3);
  EXPECT_TRUE(IsConflict(db->AdoptEpoch(2)));
  ASSERT_OK(db->AdoptEpoch(7));
  EXPECT_EQ(db->epoch(), 7u);
  // verify knows the keys, and finds them well formed.
  ASSERT_OK_AND_ASSIGN(VerifyReport r, VerifyStore(db->store()));
  EXPECT_EQ(r.problem_count, 0u) << (r.problems.empty() ? "" : r.problems[0]);
  EXPECT_EQ(r.warning_count, 0u) << (r.warnings.empty() ? "" : r.warnings[0]);
}

TEST(PartitionIdentityTest, AFenceCallbackErrorFailsTheCommit) {
  TempDir dir;
  HeldCallback cb;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), WithCallback(&cb)));
  ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(0), 1}}}).status);
  const uint64_t rollbacks = db->Stats().rollbacks;

  cb.Refuse(WrongPartitionError("the lease expired"));
  WriteResult r = db->SetVoxelsAndWait({{VoxelEdit{At(0), 2}}});
  EXPECT_TRUE(IsWrongPartition(r.status)) << r.status;
  EXPECT_NE(r.status.message().find("the lease expired"), std::string::npos) << r.status;
  EXPECT_EQ(Voxel(*db, At(0)), 1);
  EXPECT_EQ(db->Stats().rollbacks, rollbacks + 1);

  // The callback's status is what the writer gets.
  cb.Refuse(BusyError("etcd is slow"));
  r = db->FillBoxAndWait(Row(0, 2), 9);
  EXPECT_TRUE(IsBusy(r.status)) << r.status;
  EXPECT_EQ(Voxel(*db, At(0)), 1);
  EXPECT_EQ(db->Fills()->size(), 0u);
  EXPECT_EQ(db->Stats().rollbacks, rollbacks + 2);

  cb.Refuse(absl::OkStatus());
  ASSERT_OK(db->SetVoxelsAndWait({{VoxelEdit{At(0), 5}}}).status);
  EXPECT_EQ(Voxel(*db, At(0)), 5);
  ASSERT_OK(db->Flush());
  db.reset();
  ASSERT_OK_AND_ASSIGN(db, Database::Open(dir.path(), PartitionOptions()));
  EXPECT_EQ(Voxel(*db, At(0)), 5);
  EXPECT_EQ(db->Fills()->size(), 0u);
}

}  // namespace
}  // namespace voxdb::engine
