#include "engine/chunk_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include "engine/chunk_codec.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"

namespace voxdb::engine {
namespace {

using testing::TempDir;

StoreOptions FastOptions() {
  StoreOptions o;
  o.sync = false;  // tests do not need power-loss durability
  return o;
}

std::vector<uint8_t> Record(uint8_t material, uint64_t version) {
  return EncodeChunk(Chunk(material), version, NowMicros());
}

// A random-content record of about `bytes` bytes (incompressible voxels).
std::vector<uint8_t> BigRecord(uint64_t seed) {
  return EncodeChunk(Chunk::FromDense(testing::NoiseChunk(seed)), 1, 1);
}

TEST(ChunkStoreTest, PutGetDeleteSurviveReopen) {
  TempDir dir;
  const ChunkKey a = ChunkKey::FromCoord({1, 2, 3});
  const ChunkKey b = ChunkKey::FromCoord({100, 200, 300});
  const std::vector<uint8_t> surface =
      EncodeChunk(Chunk::FromDense(testing::SampleSurfaceChunk(1)), 9, 10);
  {
    ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), FastOptions()));
    WriteBatch batch;
    batch.PutChunk(a, Record(3, 1));
    batch.PutChunk(b, surface);
    ASSERT_OK(store->Write(batch));
    WriteBatch del;
    del.DeleteChunk(a);
    del.DeleteChunk(ChunkKey::FromCoord({9, 9, 9}));  // absent: not an error
    ASSERT_OK(store->Write(del));
  }
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), FastOptions()));
  ASSERT_OK_AND_ASSIGN(auto snap, store->BeginRead());
  EXPECT_TRUE(absl::IsNotFound(snap->GetChunk(a).status()));
  ASSERT_OK_AND_ASSIGN(std::span<const uint8_t> got, snap->GetChunk(b));
  EXPECT_TRUE(std::equal(got.begin(), got.end(), surface.begin(), surface.end()));
  std::vector<uint8_t> dense(kChunkVoxels);
  ASSERT_OK(DecodeChunkToDense(got, dense.data()));  // zero-copy view decodes in place
  EXPECT_EQ(dense, testing::SampleSurfaceChunk(1));
  ASSERT_OK_AND_ASSIGN(uint64_t n, snap->Count(Table::kChunks));
  EXPECT_EQ(n, 1u);
}

TEST(ChunkStoreTest, IterationIsInMortonOrderAndRangesAreExact) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), FastOptions()));
  std::mt19937 rng(1);
  std::vector<uint64_t> codes;
  WriteBatch batch;
  for (int i = 0; i < 2000; ++i) {
    const ChunkCoord c{static_cast<uint32_t>(rng() % 64), static_cast<uint32_t>(rng() % 64),
                       static_cast<uint32_t>(rng() % 64)};
    const ChunkKey k = ChunkKey::FromCoord(c);
    codes.push_back(k.code());
    batch.PutChunk(k, Record(static_cast<uint8_t>(i), i));
  }
  ASSERT_OK(store->Write(batch));
  std::sort(codes.begin(), codes.end());
  codes.erase(std::unique(codes.begin(), codes.end()), codes.end());
  ASSERT_OK_AND_ASSIGN(auto snap, store->BeginRead());
  std::vector<uint64_t> seen;
  ASSERT_OK(snap->ScanChunks(MortonRange::All(), [&](ChunkKey k, std::span<const uint8_t> v) {
    EXPECT_TRUE(ParseChunkRecord(v).ok());
    seen.push_back(k.code());
    return true;
  }));
  EXPECT_EQ(seen, codes);
  // An octree node's range returns exactly the chunks inside it.
  const uint64_t node = codes[codes.size() / 2] >> 9;  // level 3: 8^3 chunks
  const MortonRange range = MortonRange::OctreeNode(node, 3);
  std::vector<uint64_t> in_range;
  ASSERT_OK(snap->ScanChunks(range, [&](ChunkKey k, std::span<const uint8_t>) {
    in_range.push_back(k.code());
    return true;
  }));
  std::vector<uint64_t> expected;
  for (uint64_t c : codes)
    if (range.Contains(c)) expected.push_back(c);
  EXPECT_EQ(in_range, expected);
  EXPECT_FALSE(expected.empty());
  // Early stop.
  int count = 0;
  ASSERT_OK(snap->ScanChunks(MortonRange::All(),
                             [&](ChunkKey, std::span<const uint8_t>) { return ++count < 5; }));
  EXPECT_EQ(count, 5);
}

TEST(ChunkStoreTest, MapGrowsFromATinyInitialSize) {
  TempDir dir;
  StoreOptions o = FastOptions();
  o.initial_map_size = 256 << 10;  // 256 KiB
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), o));
  ASSERT_OK_AND_ASSIGN(StoreStats before, store->Stats());
  std::vector<uint8_t> rec = BigRecord(1);  // ~2 MiB of noise
  for (uint32_t i = 0; i < 20; ++i) {
    WriteBatch batch;
    batch.PutChunk(ChunkKey::FromCoord({i, 0, 0}), rec);
    ASSERT_OK(store->Write(batch));
  }
  ASSERT_OK_AND_ASSIGN(StoreStats after, store->Stats());
  EXPECT_GT(after.map_size, before.map_size);
  EXPECT_GE(after.map_grows, 1u);
  EXPECT_EQ(after.chunk_count, 20u);
  EXPECT_GT(after.used_bytes, 20 * rec.size());
}

// WriteBatch::Update reads and rewrites a key inside the transaction:
// absent keys, present keys, deletion, several keys, and a batch that is
// retried after the map grows (the updater runs again on the same values).
TEST(ChunkStoreTest, UpdateIsAReadModifyWriteInTheTransaction) {
  TempDir dir;
  StoreOptions o = FastOptions();
  o.initial_map_size = 256 << 10;
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), o));
  auto key = [](uint8_t k) { return std::vector<uint8_t>{k}; };
  // Appends `suffix` to the current value; absent counts as empty.
  auto append = [](uint8_t suffix) {
    return [suffix](std::optional<std::span<const uint8_t>> current) {
      std::vector<uint8_t> v;
      if (current) v.assign(current->begin(), current->end());
      v.push_back(suffix);
      return std::optional<std::vector<uint8_t>>(std::move(v));
    };
  };
  WriteBatch first;
  first.Put(Table::kLod, key(1), std::vector<uint8_t>{10});
  first.Update(Table::kLod, key(1), append(11), 8);  // sees the put before it
  first.Update(Table::kLod, key(2), append(20), 8);  // absent
  first.Put(Table::kLod, key(3), std::vector<uint8_t>{30});
  ASSERT_OK(store->Write(first));
  // Deletion, an absent key left absent, and a retry after growth: the
  // big record does not fit the 256 KiB map.
  WriteBatch second;
  second.Update(
      Table::kLod, key(3), [](auto) { return std::optional<std::vector<uint8_t>>(); }, 0);
  second.Update(
      Table::kLod, key(4), [](auto) { return std::optional<std::vector<uint8_t>>(); }, 0);
  second.Update(Table::kLod, key(2), append(21), 8);
  second.PutChunk(ChunkKey::FromCoord({1, 1, 1}), BigRecord(2));
  ASSERT_OK_AND_ASSIGN(StoreStats before, store->Stats());
  ASSERT_OK(store->Write(second));
  ASSERT_OK_AND_ASSIGN(StoreStats after, store->Stats());
  EXPECT_GT(after.map_grows, before.map_grows);
  ASSERT_OK_AND_ASSIGN(auto snap, store->BeginRead());
  auto get = [&](uint8_t k) -> std::optional<std::vector<uint8_t>> {
    auto v = snap->Get(Table::kLod, key(k));
    if (!v.ok()) return std::nullopt;
    return std::vector<uint8_t>(v->begin(), v->end());
  };
  EXPECT_EQ(get(1), (std::vector<uint8_t>{10, 11}));
  EXPECT_EQ(get(2), (std::vector<uint8_t>{20, 21}));  // once: the retry started over
  EXPECT_EQ(get(3), std::nullopt);
  EXPECT_EQ(get(4), std::nullopt);
}

// A long read (a snapshot that outlives a call) holds no lock while it
// lives, yet the map grows only once it has ended: until then growth waits
// grow_wait and fails BUSY, and reads and the long read go on.
TEST(ChunkStoreTest, MapGrowthWaitsForLongReads) {
  TempDir dir;
  StoreOptions o = FastOptions();
  o.initial_map_size = 256 << 10;
  o.grow_wait = std::chrono::milliseconds(200);
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), o));
  WriteBatch small;
  small.PutChunk(ChunkKey::FromCoord({0, 0, 0}), std::vector<uint8_t>{1, 2, 3});
  ASSERT_OK(store->Write(small));
  ASSERT_OK_AND_ASSIGN(auto long_read, store->BeginLongRead());
  WriteBatch big;
  big.PutChunk(ChunkKey::FromCoord({1, 0, 0}), BigRecord(1));
  EXPECT_TRUE(IsBusy(store->Write(big))) << "grew under an open long read";
  // Short reads and the long one still work.
  ASSERT_OK_AND_ASSIGN(auto short_read, store->BeginRead());
  EXPECT_OK(short_read->GetChunk(ChunkKey::FromCoord({0, 0, 0})).status());
  short_read.reset();
  EXPECT_OK(long_read->GetChunk(ChunkKey::FromCoord({0, 0, 0})).status());
  // Ended on another thread: then the map grows.
  std::thread([&] { long_read.reset(); }).join();
  ASSERT_OK(store->Write(big));
  ASSERT_OK_AND_ASSIGN(StoreStats stats, store->Stats());
  EXPECT_GE(stats.map_grows, 1u);
}

TEST(ChunkStoreTest, MaximumMapSizeGivesStorageFullAndReadsGoOn) {
  TempDir dir;
  StoreOptions o = FastOptions();
  o.initial_map_size = 1 << 20;
  o.max_map_size = 8 << 20;
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), o));
  const std::vector<uint8_t> rec = BigRecord(2);
  Status last;
  uint32_t stored = 0;
  for (uint32_t i = 0; i < 10; ++i) {
    WriteBatch batch;
    batch.PutChunk(ChunkKey::FromCoord({i, 0, 0}), rec);
    last = store->Write(batch);
    if (!last.ok()) break;
    ++stored;
  }
  ASSERT_TRUE(IsStorageFull(last)) << last;
  EXPECT_NE(last.message().find("maximum"), std::string_view::npos) << last;
  EXPECT_GE(stored, 1u);
  // Reads go on, and every stored chunk is intact.
  ASSERT_OK_AND_ASSIGN(auto snap, store->BeginRead());
  for (uint32_t i = 0; i < stored; ++i) {
    ASSERT_OK_AND_ASSIGN(auto got, snap->GetChunk(ChunkKey::FromCoord({i, 0, 0})));
    EXPECT_OK(ParseChunkRecord(got));
  }
  snap.reset();
  // Deletes and small writes still work where they fit.
  WriteBatch small;
  small.PutChunk(ChunkKey::FromCoord({0, 0, 0}), Record(1, 2));
  EXPECT_OK(store->Write(small));
}

TEST(ChunkStoreTest, RaisingTheMaximumMapSizeLetsWritesGoOnWithoutReopening) {
  TempDir dir;
  StoreOptions o = FastOptions();
  o.initial_map_size = 1 << 20;
  o.max_map_size = 8 << 20;
  int alerts = 0;
  o.on_alert = [&](const Status&) { ++alerts; };
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), o));
  const std::vector<uint8_t> rec = BigRecord(3);
  Status last;
  uint32_t i = 0;
  for (; i < 10 && last.ok(); ++i) {
    WriteBatch batch;
    batch.PutChunk(ChunkKey::FromCoord({i, 0, 0}), rec);
    last = store->Write(batch);
  }
  ASSERT_TRUE(IsStorageFull(last)) << last;
  WriteBatch again;
  again.PutChunk(ChunkKey::FromCoord({i, 0, 0}), rec);
  EXPECT_TRUE(IsStorageFull(store->Write(again)));
  EXPECT_EQ(alerts, 1);  // once, not per write
  ASSERT_OK_AND_ASSIGN(StoreStats stats, store->Stats());
  // A map does not shrink while open.
  EXPECT_TRUE(absl::IsInvalidArgument(store->SetMaxMapSize(stats.map_size - 1)));
  ASSERT_OK(store->SetMaxMapSize(64 << 20));
  EXPECT_OK(store->Write(again));
  ASSERT_OK_AND_ASSIGN(stats, store->Stats());
  EXPECT_EQ(stats.max_map_size, uint64_t{64} << 20);
  EXPECT_GT(stats.map_size, uint64_t{8} << 20);
}

TEST(ChunkStoreTest, WorldFrameMismatchIsRefused) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(WorldFrame small, WorldFrame::Create(4096, 4096, 4096, 0.5, 128, 2048));
  StoreOptions o = FastOptions();
  o.frame = small;
  { ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), o)); }
  o.frame = WorldFrame::Earth();
  const Status s = ChunkStore::Open(dir.path(), o).status();
  EXPECT_TRUE(IsMismatch(s)) << s;
  EXPECT_NE(s.message().find("world frame"), std::string_view::npos) << s;
  // Without a frame in the options, the stored one is used.
  o.frame.reset();
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), o));
  EXPECT_EQ(store->frame(), small);
}

TEST(ChunkStoreTest, NewerStoreFormatIsRefused) {
  TempDir dir;
  {
    ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), FastOptions()));
    WriteBatch batch;
    const std::string_view key = "format_version";
    const uint8_t v[4] = {99, 0, 0, 0};
    batch.Put(Table::kMeta,
              std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(key.data()), key.size()),
              std::span<const uint8_t>(v, 4));
    ASSERT_OK(store->Write(batch));
  }
  const Status s = ChunkStore::Open(dir.path(), FastOptions()).status();
  EXPECT_TRUE(IsUnsupported(s)) << s;
  EXPECT_NE(s.message().find("format 99"), std::string_view::npos) << s;
}

TEST(ChunkStoreTest, MissingDatabaseAndSecondOpener) {
  TempDir dir;
  StoreOptions o = FastOptions();
  o.create_if_missing = false;
  EXPECT_TRUE(absl::IsNotFound(ChunkStore::Open(dir.Sub("none"), o).status()));
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), FastOptions()));
  // Another process (flock is per open file description, so a second open
  // in this process stands in for it).
  const Status s = ChunkStore::Open(dir.path(), FastOptions()).status();
  EXPECT_TRUE(IsBusy(s)) << s;
}

// The exclusive lock lives on data.mdb: deleting LOCK (a "stale lock") lets
// no second opener in, and the refusal names the holder.
TEST(ChunkStoreTest, DeletingTheLockFileDoesNotUnlockTheDatabase) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), FastOptions()));
  ASSERT_EQ(::unlink((dir.path() + "/LOCK").c_str()), 0);
  const Status s = ChunkStore::Open(dir.path(), FastOptions()).status();
  EXPECT_TRUE(IsBusy(s)) << s;
  EXPECT_NE(s.message().find("in use by"), std::string_view::npos) << s;
  // The first store goes on writing.
  WriteBatch batch;
  batch.PutChunk(ChunkKey::FromCoord({1, 1, 1}), Record(2, 1));
  EXPECT_OK(store->Write(batch));
  store.reset();
  // Once it has closed, the database opens again.
  EXPECT_OK(ChunkStore::Open(dir.path(), FastOptions()).status());
}

TEST(ChunkStoreTest, DeletedDataFileRefusesWritesAndAlertsOnce) {
  TempDir dir;
  StoreOptions o = FastOptions();
  std::vector<std::string> alerts;
  o.on_alert = [&](const Status& s) { alerts.push_back(std::string(s.message())); };
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), o));
  WriteBatch batch;
  batch.PutChunk(ChunkKey::FromCoord({1, 1, 1}), Record(2, 1));
  ASSERT_OK(store->Write(batch));
  ASSERT_EQ(::unlink((dir.path() + "/data.mdb").c_str()), 0);
  for (int i = 0; i < 2; ++i) {
    const Status s = store->Write(batch);
    EXPECT_TRUE(absl::IsInternal(s)) << s;
    EXPECT_NE(s.message().find("data.mdb was deleted"), std::string_view::npos) << s;
  }
  EXPECT_TRUE(absl::IsInternal(store->Sync()));
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_NE(alerts[0].find("/proc/"), std::string::npos) << alerts[0];
  // Reads go on.
  ASSERT_OK_AND_ASSIGN(auto snap, store->BeginRead());
  EXPECT_OK(snap->GetChunk(ChunkKey::FromCoord({1, 1, 1})).status());
}

// LMDB resets its reader table when the first process opens the
// environment, so a stale slot only outlives its process while another one
// keeps the environment open (a tool such as mdb_stat, or a backup).
TEST(ChunkStoreTest, StaleReadersOfAKilledProcessAreCleared) {
  TempDir dir;
  StoreOptions shared = FastOptions();
  shared.exclusive = false;
  { ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), shared)); }
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t holder = fork();  // keeps the environment open
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    auto store = ChunkStore::Open(dir.path(), shared);
    const char c = store.ok() ? 'y' : 'n';
    if (write(ready[1], &c, 1) != 1) _exit(2);
    pause();
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  const pid_t reader = fork();
  ASSERT_GE(reader, 0);
  if (reader == 0) {
    auto store = ChunkStore::Open(dir.path(), shared);
    if (!store.ok()) _exit(2);
    auto snap = (*store)->BeginRead();
    if (!snap.ok()) _exit(3);
    raise(SIGKILL);  // dies holding a reader slot
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(reader, &status, 0), reader);
  ASSERT_TRUE(WIFSIGNALED(status)) << "reader exited with " << WEXITSTATUS(status);
  auto store = ChunkStore::Open(dir.path(), shared);
  kill(holder, SIGKILL);
  waitpid(holder, &status, 0);
  close(ready[0]);
  close(ready[1]);
  ASSERT_OK(store);
  ASSERT_OK_AND_ASSIGN(StoreStats stats, (*store)->Stats());
  EXPECT_EQ(stats.stale_readers_cleared, 1u);
}

TEST(ChunkStoreTest, LmdbCodesTranslateInOnePlace) {
  EXPECT_TRUE(absl::IsNotFound(LmdbStatus(MDB_NOTFOUND, "x")));
  EXPECT_TRUE(IsStorageFull(LmdbStatus(MDB_MAP_FULL, "x")));
  EXPECT_TRUE(IsStorageFull(LmdbStatus(ENOSPC, "x")));
  EXPECT_TRUE(IsCorrupt(LmdbStatus(MDB_CORRUPTED, "x")));
  EXPECT_TRUE(IsBusy(LmdbStatus(MDB_READERS_FULL, "x")));
  EXPECT_TRUE(IsMismatch(LmdbStatus(MDB_INVALID, "x")));
  EXPECT_TRUE(LmdbStatus(MDB_SUCCESS, "x").ok());
}

// A real full file system: a 12 MiB tmpfs. Needs root (CAP_SYS_ADMIN).
class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "not root: cannot mount a tmpfs for the disk-full test";
    mount_point_ = dir_.Sub("fs");
    std::filesystem::create_directory(mount_point_);
    if (mount("voxdb-test", mount_point_.c_str(), "tmpfs", 0, "size=12m") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno)
                   << "); disk-full test skipped";
    }
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) umount2(mount_point_.c_str(), MNT_DETACH);
  }
  TempDir dir_;
  std::string mount_point_;
  bool mounted_ = false;
};

TEST_F(DiskFullTest, FullDiskGivesStorageFullAndNoCorruption) {
  const std::string db = mount_point_ + "/db";
  StoreOptions o;  // sync on, as in production
  o.initial_map_size = 1 << 20;
  o.max_map_size = size_t{1} << 30;  // far beyond the disk
  std::vector<uint32_t> stored;
  Status last;
  const std::vector<uint8_t> rec = BigRecord(3);
  {
    ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(db, o));
    for (uint32_t i = 0; i < 20; ++i) {
      WriteBatch batch;
      batch.PutChunk(ChunkKey::FromCoord({i, 1, 1}), rec);
      last = store->Write(batch);
      if (!last.ok()) break;
      stored.push_back(i);
    }
    ASSERT_TRUE(IsStorageFull(last)) << last;
    EXPECT_NE(last.message().find("disk is full"), std::string_view::npos) << last;
    ASSERT_FALSE(stored.empty());
    // The store keeps serving reads of everything committed.
    ASSERT_OK_AND_ASSIGN(auto snap, store->BeginRead());
    for (uint32_t i : stored) {
      ASSERT_OK_AND_ASSIGN(auto got, snap->GetChunk(ChunkKey::FromCoord({i, 1, 1})));
      EXPECT_OK(ParseChunkRecord(got));
    }
  }
  // Reopen: nothing lost, nothing half-written, and a small write fits again
  // once space is freed.
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(db, o));
  ASSERT_OK_AND_ASSIGN(auto snap, store->BeginRead());
  ASSERT_OK_AND_ASSIGN(uint64_t n, snap->Count(Table::kChunks));
  EXPECT_EQ(n, stored.size());
  for (uint32_t i : stored) {
    ASSERT_OK_AND_ASSIGN(auto got, snap->GetChunk(ChunkKey::FromCoord({i, 1, 1})));
    std::vector<uint8_t> dense(kChunkVoxels);
    ASSERT_OK(DecodeChunkToDense(got, dense.data()));
  }
  snap.reset();
  WriteBatch del;
  del.DeleteChunk(ChunkKey::FromCoord({stored.back(), 1, 1}));
  EXPECT_OK(store->Write(del));
}

}  // namespace
}  // namespace voxdb::engine
