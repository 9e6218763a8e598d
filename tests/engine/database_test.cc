#include "engine/database.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "engine/chunk_codec.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"
#include "tests/testing/test_database.h"
#include "tests/testing/wait.h"
#include "tests/testing/world.h"

namespace voxdb::engine {
namespace {

using testing::kX;
using testing::kY;
using testing::kZ;
using testing::TempDir;
using testing::TestOptions;

uint64_t StoredChunks(Database& db) {
  auto snap = db.store().BeginRead();
  EXPECT_TRUE(snap.ok());
  auto n = (*snap)->Count(Table::kChunks);
  EXPECT_TRUE(n.ok());
  return *n;
}

uint64_t JournalRecords(Database& db) {
  auto snap = db.store().BeginRead();
  auto n = (*snap)->Count(Table::kJournal);
  return n.ok() ? *n : ~uint64_t{0};
}

uint8_t Voxel(Database& db, VoxelCoord v) {
  uint8_t out = 0xEE;
  EXPECT_OK(db.GetVoxels({&v, 1}, &out));
  return out;
}

struct ReadOne {
  Status status;
  uint64_t version = 0;
  ChunkRead::Source source = ChunkRead::Source::kStore;
  std::vector<uint8_t> dense;
};

ReadOne GetChunk(Database& db, ChunkKey key) {
  ReadOne r;
  EXPECT_OK(db.GetChunks({&key, 1}, [&](size_t, const ChunkRead& read) {
    r.status = read.status;
    r.version = read.version;
    r.source = read.source;
    if (read.status.ok()) {
      r.dense.resize(kChunkVoxels);
      EXPECT_OK(DecodeChunkToDense(read.record, r.dense.data()));
      auto view = ParseChunkRecord(read.record);
      EXPECT_TRUE(view.ok());
      EXPECT_EQ(view->header.version, read.version);
    }
  }));
  return r;
}

TEST(DatabaseTest, UnwrittenWorldIsAirAtVersionZero) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  EXPECT_EQ(Voxel(*db, {kX, kY, kZ}), 0);
  const ReadOne r = GetChunk(*db, ChunkKey::FromCoord({1'000'000, 400'000, 312'500}));
  ASSERT_OK(r.status);
  EXPECT_EQ(r.version, 0u);
  EXPECT_EQ(r.source, ChunkRead::Source::kFills);
  EXPECT_EQ(r.dense, std::vector<uint8_t>(kChunkVoxels, 0));
}

TEST(DatabaseTest, SetVoxelsReadYourWritesThenFlushToStore) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  std::vector<VoxelEdit> edits = {{{kX, kY, kZ}, 5},
                                  {{kX + 127, kY, kZ}, 6},
                                  {{kX + 128, kY, kZ}, 7},  // next chunk
                                  {{kX, kY, kZ}, 8}};       // same voxel again: last wins
  const WriteResult w = db->SetVoxelsAndWait(edits);
  ASSERT_OK(w.status);
  EXPECT_GT(w.version, 0u);
  EXPECT_EQ(Voxel(*db, {kX, kY, kZ}), 8);
  EXPECT_EQ(Voxel(*db, {kX + 127, kY, kZ}), 6);
  EXPECT_EQ(Voxel(*db, {kX + 128, kY, kZ}), 7);
  const ChunkKey key = ChunkKey::FromCoord({1'000'000, 400'000, 312'500});
  ReadOne r = GetChunk(*db, key);
  EXPECT_EQ(r.source, ChunkRead::Source::kCache);
  EXPECT_EQ(r.version, w.version);
  EXPECT_EQ(r.dense[0], 8);
  EXPECT_EQ(StoredChunks(*db), 0u);
  EXPECT_GE(JournalRecords(*db), 1u);

  ASSERT_OK(db->Flush());
  EXPECT_EQ(StoredChunks(*db), 2u);
  EXPECT_EQ(JournalRecords(*db), 0u);  // the flush covered every record
  r = GetChunk(*db, key);
  EXPECT_EQ(r.source, ChunkRead::Source::kStore);  // clean: zero-copy from LMDB
  EXPECT_EQ(r.version, w.version);
  EXPECT_EQ(r.dense[0], 8);

  // Versions grow with every change.
  const WriteResult w2 = db->SetVoxelsAndWait(std::vector<VoxelEdit>{{{kX, kY, kZ}, 9}});
  ASSERT_OK(w2.status);
  EXPECT_GT(w2.version, w.version);
  EXPECT_EQ(GetChunk(*db, key).version, w2.version);
  const DatabaseStats stats = db->Stats();
  EXPECT_GT(stats.journal_commits, 0u);
  EXPECT_GT(stats.flushed_chunks, 0u);
}

TEST(DatabaseTest, DataSurvivesReopen) {
  TempDir dir;
  uint64_t version;
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
    const WriteResult w = db->SetVoxelsAndWait(std::vector<VoxelEdit>{{{kX + 1, kY, kZ}, 3}});
    ASSERT_OK(w.status);
    version = w.version;
  }  // close flushes
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  EXPECT_EQ(Voxel(*db, {kX + 1, kY, kZ}), 3);
  EXPECT_EQ(db->Stats().replayed_records, 0u);
  // Sequence numbers continue past everything stored.
  const WriteResult w = db->SetVoxelsAndWait(std::vector<VoxelEdit>{{{kX + 2, kY, kZ}, 3}});
  EXPECT_GT(w.version, version);
}

TEST(DatabaseTest, JournalIsReplayedAfterAProcessDiesUnflushed) {
  TempDir dir;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    DatabaseOptions o = TestOptions();
    o.store.sync = true;
    auto db = Database::Open(dir.path(), o);
    if (!db.ok()) _exit(2);
    for (uint64_t i = 0; i < 100; ++i) {
      const VoxelEdit e{{kX + i, kY, kZ}, static_cast<uint8_t>(1 + i % 200)};
      if (!(*db)->SetVoxelsAndWait({&e, 1}).status.ok()) _exit(3);
    }
    _exit(0);  // no destructor: nothing flushed, the journal holds everything
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  EXPECT_EQ(db->Stats().replayed_records, 100u);
  for (uint64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(Voxel(*db, {kX + i, kY, kZ}), 1 + i % 200) << i;
  }
}

TEST(DatabaseTest, WriteBoxAndReadBoxAcrossChunks) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  const VoxelBox box{{kX + 100, kY + 120, kZ + 5}, {kX + 300, kY + 140, kZ + 9}};
  std::vector<uint8_t> voxels(box.volume());
  std::mt19937 rng(1);
  for (auto& v : voxels) v = static_cast<uint8_t>(rng() % 6);
  ASSERT_OK(db->WriteBoxAndWait(box, voxels).status);
  std::vector<uint8_t> out(box.volume());
  ASSERT_OK(db->ReadBox(box, out.data()));
  EXPECT_EQ(out, voxels);
  ASSERT_OK(db->Flush());
  std::fill(out.begin(), out.end(), 0xEE);
  ASSERT_OK(db->ReadBox(box, out.data()));
  EXPECT_EQ(out, voxels);
  // A box around it reads air outside.
  const VoxelBox bigger{{kX + 99, kY + 120, kZ + 5}, {kX + 101, kY + 121, kZ + 6}};
  uint8_t two[2];
  ASSERT_OK(db->ReadBox(bigger, two));
  EXPECT_EQ(two[0], 0);
  EXPECT_EQ(two[1], voxels[0]);
  // A whole chunk written at once.
  const VoxelBox chunk_box{{kX, kY, kZ + 128}, {kX + 128, kY + 128, kZ + 256}};
  const std::vector<uint8_t> surface = testing::SampleSurfaceChunk(1);
  ASSERT_OK(db->WriteBoxAndWait(chunk_box, surface).status);
  EXPECT_EQ(GetChunk(*db, ChunkKey::FromCoord({1'000'000, 400'000, 312'501})).dense, surface);
}

TEST(DatabaseTest, InvalidWritesAreRefusedBeforeAnythingIsApplied) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  const std::vector<VoxelEdit> edits = {{{kX, kY, kZ}, 1}, {{0, 0, 80'000'000}, 1}};
  EXPECT_TRUE(IsOutOfBounds(db->SetVoxelsAndWait(edits).status));
  EXPECT_EQ(Voxel(*db, {kX, kY, kZ}), 0);  // the valid edit was not applied either
  EXPECT_TRUE(absl::IsInvalidArgument(db->SetVoxelsAndWait({}).status));
  const VoxelBox box{{0, 0, 0}, {2, 2, 2}};
  EXPECT_TRUE(absl::IsInvalidArgument(db->WriteBoxAndWait(box, std::vector<uint8_t>(7)).status));
  EXPECT_TRUE(IsOutOfBounds(db->FillBoxAndWait({{0, 0, 0}, {1, 1, 80'000'001}}, 1).status));
  EXPECT_TRUE(IsOutOfBounds(db->DeleteChunkAndWait(ChunkKey::FromCoord({1'252'345, 0, 0})).status));
  std::vector<uint8_t> bad = EncodeChunk(Chunk(1), 1, 1);
  bad.back() ^= 1;
  EXPECT_TRUE(
      IsCorrupt(db->PutChunkAndWait(ChunkKey::FromCoord({1, 1, 1}), bad, std::nullopt).status));
  uint8_t v;
  const VoxelCoord outside{160'300'080, 0, 0};
  EXPECT_TRUE(IsOutOfBounds(db->GetVoxels({&outside, 1}, &v)));
}

TEST(DatabaseTest, PutChunkWithExpectedVersion) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  const ChunkKey key = ChunkKey::FromCoord({1'000'000, 400'000, 312'500});
  const std::vector<uint8_t> surface = testing::SampleSurfaceChunk(2);
  const std::vector<uint8_t> rec = EncodeChunk(Chunk::FromDense(surface), 999, 1);
  // A chunk never written is at version 0.
  EXPECT_TRUE(IsConflict(db->PutChunkAndWait(key, rec, 5).status));
  const WriteResult first = db->PutChunkAndWait(key, rec, 0);
  ASSERT_OK(first.status);
  EXPECT_EQ(GetChunk(*db, key).version, first.version);  // the record's own 999 is ignored
  EXPECT_EQ(GetChunk(*db, key).dense, surface);
  const WriteResult stale = db->PutChunkAndWait(key, EncodeChunk(Chunk(1), 1, 1), 0);
  EXPECT_TRUE(IsConflict(stale.status)) << stale.status;
  EXPECT_EQ(GetChunk(*db, key).dense, surface);
  ASSERT_OK(db->PutChunkAndWait(key, EncodeChunk(Chunk(1), 1, 1), first.version).status);
  EXPECT_EQ(Voxel(*db, {kX, kY, kZ}), 1);
  ASSERT_OK(db->Flush());
  ASSERT_OK(db->PutChunkAndWait(key, rec, std::nullopt).status);  // unconditional
  EXPECT_EQ(GetChunk(*db, key).dense, surface);
}

TEST(DatabaseTest, FillsOverlapNewestWins) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  const WriteResult a = db->FillBoxAndWait({{kX, kY, kZ}, {kX + 200, kY + 10, kZ + 10}}, 1);
  const WriteResult b = db->FillBoxAndWait({{kX + 100, kY, kZ}, {kX + 300, kY + 10, kZ + 10}}, 2);
  ASSERT_OK(a.status);
  ASSERT_OK(b.status);
  EXPECT_EQ(Voxel(*db, {kX + 50, kY, kZ}), 1);
  EXPECT_EQ(Voxel(*db, {kX + 150, kY, kZ}), 2);  // overlap: newest
  EXPECT_EQ(Voxel(*db, {kX + 250, kY + 9, kZ + 9}), 2);
  EXPECT_EQ(Voxel(*db, {kX + 250, kY + 10, kZ}), 0);
  // Version of an unstored chunk: its newest fill.
  EXPECT_EQ(GetChunk(*db, ChunkKey::FromCoord({1'000'000, 400'000, 312'500})).version, b.version);
  EXPECT_EQ(GetChunk(*db, ChunkKey::FromCoord({1'000'002, 400'000, 312'500})).version, b.version);
  ASSERT_OK(db->Flush());
  EXPECT_EQ(StoredChunks(*db), 0u);  // fills store no chunks
  db.reset();
  ASSERT_OK_AND_ASSIGN(db, Database::Open(dir.path(), TestOptions()));
  EXPECT_EQ(db->Stats().fills, 2u);
  EXPECT_EQ(Voxel(*db, {kX + 150, kY, kZ}), 2);
}

TEST(DatabaseTest, WriteInsideAFillMaterialisesOnlyThatChunk) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  // 4 x 4 x 4 chunks of rock.
  const VoxelBox rock{{kX, kY, kZ}, {kX + 512, kY + 512, kZ + 512}};
  ASSERT_OK(db->FillBoxAndWait(rock, testing::kStone).status);
  const VoxelCoord dig{kX + 200, kY + 200, kZ + 200};
  ASSERT_OK(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{dig, 0}}).status);
  EXPECT_EQ(Voxel(*db, dig), 0);
  EXPECT_EQ(Voxel(*db, {dig.x + 1, dig.y, dig.z}), testing::kStone);
  ASSERT_OK(db->Flush());
  EXPECT_EQ(StoredChunks(*db), 1u);
  EXPECT_EQ(Voxel(*db, {dig.x + 1, dig.y, dig.z}), testing::kStone);

  // Deleting it reverts to the fill, with a newer version.
  const ChunkKey key = ChunkKey::FromCoord(db->frame().ChunkOf(dig));
  const uint64_t before = GetChunk(*db, key).version;
  const WriteResult del = db->DeleteChunkAndWait(key);
  ASSERT_OK(del.status);
  EXPECT_GT(del.version, before);
  EXPECT_EQ(Voxel(*db, dig), testing::kStone);
  EXPECT_EQ(GetChunk(*db, key).version, del.version);
  ASSERT_OK(db->Flush());
  EXPECT_EQ(GetChunk(*db, key).version, del.version);  // kept by a fills marker
  EXPECT_EQ(Voxel(*db, dig), testing::kStone);
}

TEST(DatabaseTest, FillDeletesChunksWhollyInsideAndRewritesPartlyInside) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  // Two stored chunks side by side.
  const VoxelBox two{{kX, kY, kZ}, {kX + 256, kY + 128, kZ + 128}};
  std::vector<uint8_t> noise(two.volume());
  std::mt19937 rng(2);
  for (auto& v : noise) v = static_cast<uint8_t>(1 + rng() % 4);
  ASSERT_OK(db->WriteBoxAndWait(two, noise).status);
  ASSERT_OK(db->Flush());
  ASSERT_EQ(StoredChunks(*db), 2u);
  // A fill covering the first chunk wholly and the second one's first 10 x-columns.
  const VoxelBox fill{{kX - 5, kY, kZ}, {kX + 138, kY + 128, kZ + 128}};
  const WriteResult f = db->FillBoxAndWait(fill, 9);
  ASSERT_OK(f.status);
  EXPECT_EQ(Voxel(*db, {kX + 64, kY + 64, kZ + 64}), 9);
  EXPECT_EQ(Voxel(*db, {kX + 137, kY + 5, kZ + 5}), 9);
  const size_t i = 138 + 256 * (5 + 128 * 5);
  EXPECT_EQ(Voxel(*db, {kX + 138, kY + 5, kZ + 5}), noise[i]);
  ASSERT_OK(db->Flush());
  EXPECT_EQ(StoredChunks(*db), 1u);  // the wholly covered chunk was deleted
  EXPECT_EQ(Voxel(*db, {kX + 64, kY + 64, kZ + 64}), 9);
  EXPECT_EQ(Voxel(*db, {kX + 138, kY + 5, kZ + 5}), noise[i]);
  EXPECT_EQ(GetChunk(*db, ChunkKey::FromCoord({1'000'000, 400'000, 312'500})).version, f.version);
  EXPECT_EQ(GetChunk(*db, ChunkKey::FromCoord({1'000'001, 400'000, 312'500})).version, f.version);
}

// "Everything more than 10 km below sea level is rock, planet-wide": one
// fill record and milliseconds (tests/bench/database_bench measures it).
TEST(DatabaseTest, PlanetWideFillIsOneSmallRecord) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  // Some terrain near the surface, which the fill must not touch.
  ASSERT_OK(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{{kX, kY, kZ}, 3}}).status);
  ASSERT_OK(db->Flush());
  const WorldFrame& f = db->frame();
  const uint64_t ten_km = 10'000 * 4;  // voxels
  const VoxelBox deep{{0, 0, 0}, {f.extent_x(), f.extent_y(), f.sea_level_z() - ten_km}};
  const auto start = std::chrono::steady_clock::now();
  const WriteResult w = db->FillBoxAndWait(deep, testing::kStone);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  ASSERT_OK(w.status);
  EXPECT_LT(ms, 1000.0);  // milliseconds in practice; generous for sanitizer builds
  const DatabaseStats stats = db->Stats();
  EXPECT_LE(stats.journal_bytes, 256u);
  ASSERT_OK(db->Flush());
  auto snap = db->store().BeginRead();
  uint64_t fill_bytes = 0;
  ASSERT_OK((*snap)->Scan(Table::kFills, {}, {},
                          [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                            fill_bytes += k.size() + v.size();
                            return true;
                          }));
  EXPECT_LE(fill_bytes, 100u);
  EXPECT_EQ(Voxel(*db, {12'345, 67'890, 1'000}), testing::kStone);
  EXPECT_EQ(Voxel(*db, {12'345, 67'890, f.sea_level_z() - ten_km}), 0);
  EXPECT_EQ(Voxel(*db, {kX, kY, kZ}), 3);
  EXPECT_EQ(StoredChunks(*db), 1u);
}

TEST(DatabaseTest, EvictionUnderASmallBudgetKeepsData) {
  TempDir dir;
  DatabaseOptions o = TestOptions();
  o.cache_bytes = 4 << 20;
  o.dirty_bytes = 2 << 20;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), o));
  // 24 chunks of noise-ish terrain, ~ 0.4-2 MiB each in memory.
  std::vector<std::vector<uint8_t>> written;
  for (uint32_t i = 0; i < 24; ++i) {
    std::vector<uint8_t> dense = i % 2 ? testing::NoiseChunk(i) : testing::SampleSurfaceChunk(i);
    const VoxelBox box{{kX + 128 * i, kY, kZ}, {kX + 128 * i + 128, kY + 128, kZ + 128}};
    ASSERT_OK(db->WriteBoxAndWait(box, dense).status);
    written.push_back(std::move(dense));
    EXPECT_LE(db->Stats().cache_bytes, o.cache_bytes + (3u << 20));
  }
  ASSERT_OK(db->Flush());
  for (uint32_t i = 0; i < 24; ++i) {
    EXPECT_EQ(GetChunk(*db, ChunkKey::FromCoord({1'000'000 + i, 400'000, 312'500})).dense,
              written[i]);
    uint8_t v;
    const VoxelCoord at{kX + 128 * i + 3, kY + 4, kZ + 5};
    ASSERT_OK(db->GetVoxels({&at, 1}, &v));  // decodes into the cache, evicting others
    EXPECT_EQ(v, written[i][3 + 128 * (4 + 128 * 5)]);
  }
  const DatabaseStats stats = db->Stats();
  EXPECT_GT(stats.cache_evictions, 0u);
  EXPECT_GT(stats.cache_misses, 0u);
  EXPECT_LE(stats.cache_bytes, o.cache_bytes);
}

TEST(DatabaseTest, AsyncModeAcknowledgesBeforeTheCommit) {
  TempDir dir;
  DatabaseOptions o = TestOptions();
  o.durability = Durability::kAsync;
  o.commit_interval = std::chrono::milliseconds(50);
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), o));
  const WriteResult w = db->SetVoxelsAndWait(std::vector<VoxelEdit>{{{kX, kY, kZ}, 4}});
  ASSERT_OK(w.status);
  EXPECT_EQ(Voxel(*db, {kX, kY, kZ}), 4);
  EXPECT_LT(db->Stats().committed_seq, w.version);  // not yet committed: within the interval
  const auto deadline = testing::DeadlineIn(std::chrono::seconds(5));
  while (db->Stats().committed_seq < w.version && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GE(db->Stats().committed_seq, w.version);
}

TEST(DatabaseTest, CorruptStoredChunkIsReportedAndTheRestServes) {
  TempDir dir;
  const ChunkKey bad = ChunkKey::FromCoord({1'000'000, 400'000, 312'500});
  const ChunkKey good = ChunkKey::FromCoord({1'000'001, 400'000, 312'500});
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
    ASSERT_OK(
        db->SetVoxelsAndWait(std::vector<VoxelEdit>{{{kX, kY, kZ}, 1}, {{kX + 128, kY, kZ}, 2}})
            .status);
  }
  ASSERT_OK(testing::CorruptStoredChunk(dir.path(), bad));  // behind the database's back
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  EXPECT_TRUE(IsCorrupt(GetChunk(*db, bad).status));
  uint8_t v;
  const VoxelCoord at{kX, kY, kZ};
  EXPECT_TRUE(IsCorrupt(db->GetVoxels({&at, 1}, &v)));
  EXPECT_TRUE(IsCorrupt(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{at, 3}}).status));
  EXPECT_EQ(Voxel(*db, {kX + 128, kY, kZ}), 2);
  EXPECT_OK(GetChunk(*db, good).status);
  // Replacing the corrupt chunk whole is allowed.
  ASSERT_OK(db->PutChunkAndWait(bad, EncodeChunk(Chunk(6), 1, 1), std::nullopt).status);
  EXPECT_EQ(Voxel(*db, at), 6);
}

}  // namespace
}  // namespace voxdb::engine

namespace voxdb::engine {
namespace {

// What a snapshot says of one chunk: version and dense voxels.
std::pair<uint64_t, std::vector<uint8_t>> SnapshotChunk(const DatabaseSnapshot& snap,
                                                        ChunkKey key) {
  std::pair<uint64_t, std::vector<uint8_t>> out;
  EXPECT_OK(snap.GetChunks({&key, 1}, [&](size_t, const ChunkRead& read) {
    EXPECT_OK(read.status);
    out.first = read.version;
    out.second.resize(kChunkVoxels);
    EXPECT_OK(DecodeChunkToDense(read.record, out.second.data()));
  }));
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> SnapshotScan(const DatabaseSnapshot& snap,
                                                        const ChunkBox& box, uint64_t from = 0) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  EXPECT_OK(snap.ScanChunks(box, from, [&](ChunkKey key, uint64_t version) {
    out.emplace_back(key.code(), version);
    return true;
  }));
  return out;
}

// A snapshot is one moment: stored, dirty, deleted and filled chunks read
// as they were when it was taken, whatever is written and flushed after.
TEST(DatabaseSnapshotTest, IsOneMomentWhateverHappensAfter) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  const ChunkCoord c0 = ChunkCoord{kX / 128, kY / 128, kZ / 128};
  auto key = [&](uint32_t dx, uint32_t dy = 0, uint32_t dz = 0) {
    return ChunkKey::FromCoord({c0.x + dx, c0.y + dy, c0.z + dz});
  };
  auto voxel = [&](uint32_t dx, uint64_t i = 0) {
    return VoxelCoord{kX + 128 * dx + i, kY + 7, kZ + 9};
  };
  // Chunk 0 stored (flushed); chunk 1 stored then deleted; chunk 2 dirty;
  // a fill over chunk 3 (unstored).
  ASSERT_OK(db->SetVoxelsAndWait({{{voxel(0), 5}}}).status);
  ASSERT_OK(db->SetVoxelsAndWait({{{voxel(1), 6}}}).status);
  ASSERT_OK(db->Flush());
  ASSERT_OK(db->DeleteChunkAndWait(key(1)).status);
  const uint64_t v2 = db->SetVoxelsAndWait({{{voxel(2), 7}}}).version;
  const VoxelBox fill{{kX + 3 * 128, kY, kZ}, {kX + 4 * 128, kY + 64, kZ + 64}};
  const uint64_t vf = db->FillBoxAndWait(fill, 9).version;
  const ChunkBox box{key(0).coord(), key(5).coord()};
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> before;
  for (uint32_t i = 0; i < 5; ++i) {
    ReadOne r = GetChunk(*db, key(i));
    before.emplace_back(r.version, r.dense);
  }

  // Chunk 5: dirty and never read before the snapshot (a read would have
  // marked it shared already).
  const uint64_t v5 = db->SetVoxelsAndWait({{{voxel(5), 11}}}).version;

  ASSERT_OK_AND_ASSIGN(auto snap, db->Snapshot());
  EXPECT_EQ(snap->seq(), v5);
  const auto scan = SnapshotScan(*snap, box);
  ASSERT_EQ(scan.size(), 3u);  // chunks 0 (stored), 2 and 5 (dirty); 1 deleted, 3 only a fill
  EXPECT_EQ(scan[0].first, std::min(key(0).code(), key(2).code()));
  for (uint32_t i = 0; i < 5; ++i) {
    EXPECT_EQ(SnapshotChunk(*snap, key(i)), before[i]) << "chunk " << i;
  }

  // Everything changes, and is flushed.
  ASSERT_OK(db->SetVoxelsAndWait({{{voxel(0), 50}}}).status);
  ASSERT_OK(db->SetVoxelsAndWait({{{voxel(1), 60}}}).status);
  ASSERT_OK(db->SetVoxelsAndWait({{{voxel(2, 1), 70}}}).status);  // dirty: copied, not changed
  EXPECT_NE(GetChunk(*db, key(2)).dense, before[2].second);
  ASSERT_OK(db->DeleteChunkAndWait(key(2)).status);
  ASSERT_OK(db->SetVoxelsAndWait({{{voxel(4), 80}}}).status);
  ASSERT_OK(db->SetVoxelsAndWait({{{voxel(5, 1), 12}}}).status);
  ASSERT_OK(db->FillBoxAndWait({{kX, kY, kZ}, {kX + 5 * 128, kY + 1, kZ + 1}}, 1).status);
  ASSERT_OK(db->Flush());
  EXPECT_NE(GetChunk(*db, key(0)).dense, before[0].second);

  EXPECT_EQ(SnapshotScan(*snap, box), scan);
  for (uint32_t i = 0; i < 5; ++i) {
    EXPECT_EQ(SnapshotChunk(*snap, key(i)), before[i]) << "chunk " << i << " after the writes";
  }
  const auto unwritten = SnapshotChunk(*snap, key(4));
  EXPECT_EQ(unwritten.first, 0u);
  EXPECT_EQ(unwritten.second, std::vector<uint8_t>(kChunkVoxels, 0));
  EXPECT_EQ(snap->fills().size(), 1u);
  EXPECT_EQ(SnapshotChunk(*snap, key(3)).first, vf);
  EXPECT_EQ(SnapshotChunk(*snap, key(2)).first, v2);
  const auto five = SnapshotChunk(*snap, key(5));
  EXPECT_EQ(five.first, v5);
  EXPECT_EQ(five.second[(9 * 128 + 7) * 128 + 0], 11);
  EXPECT_EQ(five.second[(9 * 128 + 7) * 128 + 1], 0) << "a write after the snapshot shows";
  // Scanning from a code on skips what is before it.
  const auto tail = SnapshotScan(*snap, box, scan[0].first + 1);
  using Scan = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(tail, Scan(scan.begin() + 1, scan.end()));
  // A cursor past the box (dirty chunks lie beyond it): nothing, at once.
  ASSERT_OK(db->SetVoxelsAndWait({{{voxel(40), 1}}}).status);
  ASSERT_OK_AND_ASSIGN(auto later, db->Snapshot());
  EXPECT_TRUE(SnapshotScan(*later, box, key(40).code() + 1).empty());
  EXPECT_TRUE(SnapshotScan(*later, box, box.MaxCode() + 1).empty());
  // A new snapshot sees the new state.
  ASSERT_OK_AND_ASSIGN(auto now, db->Snapshot());
  EXPECT_EQ(SnapshotChunk(*now, key(0)),
            std::make_pair(GetChunk(*db, key(0)).version, GetChunk(*db, key(0)).dense));
}

// A snapshot may outlive its database: closing the database ends its read
// transaction (LMDB must have none open then), and it reads UNAVAILABLE.
TEST(DatabaseSnapshotTest, OutlivesItsDatabase) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  ASSERT_OK(db->SetVoxelsAndWait({{{VoxelCoord{kX, kY, kZ}, 3}}}).status);
  ASSERT_OK(db->Flush());
  ASSERT_OK_AND_ASSIGN(auto snap, db->Snapshot());
  ASSERT_OK_AND_ASSIGN(auto second, db->Snapshot());
  second.reset();  // one ends before the database, one after
  const ChunkKey key = ChunkKey::FromCoord({kX / 128, kY / 128, kZ / 128});
  EXPECT_EQ(SnapshotChunk(*snap, key).second[0], 3);
  db.reset();
  EXPECT_TRUE(IsClosing(snap->GetChunks({&key, 1}, [](size_t, const ChunkRead&) {})));
  const ChunkBox box{key.coord(), key.coord()};
  EXPECT_TRUE(IsClosing(snap->ScanChunks(box, 0, [](ChunkKey, uint64_t) { return true; })));
  snap.reset();
  // The database opens again, whole.
  ASSERT_OK_AND_ASSIGN(db, Database::Open(dir.path(), TestOptions()));
  EXPECT_EQ(Voxel(*db, VoxelCoord{kX, kY, kZ}), 3);
}

// Snapshots taken and read while writers and the flusher run (for TSan):
// each reads the same twice.
TEST(DatabaseSnapshotTest, StableUnderConcurrentWritesAndFlushes) {
  TempDir dir;
  DatabaseOptions o = TestOptions();
  o.dirty_bytes = size_t{4} << 20;  // the flusher runs often
  o.flush_high_water = 0.1;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), o));
  const ChunkCoord c0 = ChunkCoord{kX / 128, kY / 128, kZ / 128};
  const ChunkBox box{c0, {c0.x + 3, c0.y, c0.z}};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937_64 rng(7);
    while (!stop.load()) {
      const VoxelCoord v{kX + rng() % 512, kY + rng() % 128, kZ + rng() % 128};
      ASSERT_OK(db->SetVoxelsAndWait({{{v, static_cast<uint8_t>(1 + rng() % 9)}}}).status);
      if (rng() % 64 == 0) ASSERT_OK(db->Flush());
    }
  });
  for (int round = 0; round < 20; ++round) {
    ASSERT_OK_AND_ASSIGN(auto snap, db->Snapshot());
    const auto scan = SnapshotScan(*snap, box);
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> first;
    for (const auto& [code, version] : scan) {
      first.push_back(SnapshotChunk(*snap, ChunkKey::FromCode(code)));
      EXPECT_EQ(first.back().first, version);
      EXPECT_LE(version, snap->seq());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(SnapshotScan(*snap, box), scan);
    for (size_t i = 0; i < scan.size(); ++i) {
      EXPECT_EQ(SnapshotChunk(*snap, ChunkKey::FromCode(scan[i].first)), first[i]);
    }
  }
  stop = true;
  writer.join();
}

}  // namespace
}  // namespace voxdb::engine

namespace voxdb::engine {
namespace {

// A write that fails (here a PUT_CHUNK conflict) takes no sequence number:
// the next write's version follows the last good one, and Flush (which
// waits for every number handed out to commit) returns at once.
TEST(DatabaseTest, AFailedWriteLeavesNoHoleInTheSequence) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
  const uint64_t v1 = db->SetVoxelsAndWait({{{VoxelCoord{kX, kY, kZ}, 3}}}).version;
  const ChunkKey key = ChunkKey::FromCoord({kX / 128, kY / 128, kZ / 128});
  const std::vector<uint8_t> record = EncodeChunk(Chunk(5), 0, 0);
  const WriteResult conflict = db->PutChunkAndWait(key, record, v1 + 7);
  EXPECT_TRUE(IsConflict(conflict.status)) << conflict.status;
  const uint64_t last_after_conflict = db->Stats().last_seq;
  // (The next write would also fill a hole, so it comes before the checks:
  // a broken build fails here instead of hanging in Flush.)
  const uint64_t v2 = db->PutChunkAndWait(key, record, v1).version;
  EXPECT_EQ(last_after_conflict, v1) << "the failed write kept its sequence number";
  EXPECT_EQ(v2, v1 + 1);
  EXPECT_OK(db->Flush());
}

// A FILL_BOX that cannot read the store (every reader slot held, here by
// snapshots) fails and leaves no fill behind, in memory or on disk.
TEST(DatabaseTest, FailedFillLeavesNoFill) {
  TempDir dir;
  DatabaseOptions o = TestOptions();
  o.store.max_readers = 4;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), o));
  ASSERT_OK(db->SetVoxelsAndWait({{{VoxelCoord{kX, kY, kZ}, 3}}}).status);
  std::vector<std::unique_ptr<DatabaseSnapshot>> held;
  for (int i = 0; i < 16; ++i) {
    auto s = db->Snapshot();
    if (!s.ok()) break;
    held.push_back(std::move(*s));
  }
  ASSERT_FALSE(held.empty());
  const VoxelBox box{{kX + 10, kY, kZ}, {kX + 20, kY + 10, kZ + 10}};
  const WriteResult r = db->FillBoxAndWait(box, 9);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(db->Fills()->size(), 0u);
  held.clear();
  EXPECT_EQ(Voxel(*db, VoxelCoord{kX + 15, kY + 5, kZ + 5}), 0);
  ASSERT_OK(db->Flush());
  db.reset();
  ASSERT_OK_AND_ASSIGN(db, Database::Open(dir.path(), TestOptions()));
  EXPECT_EQ(db->Fills()->size(), 0u);
  EXPECT_EQ(Voxel(*db, VoxelCoord{kX + 15, kY + 5, kZ + 5}), 0);
  EXPECT_EQ(Voxel(*db, VoxelCoord{kX, kY, kZ}), 3);
}

}  // namespace
}  // namespace voxdb::engine

namespace voxdb::engine {
namespace {

// The last chunk of the x and y axes is partly outside the world (x ends 48
// voxels into chunk 1,252,344, y 24 into 626,172; z ends on a chunk
// boundary). Voxels past the edge always read as 0 (engine/FORMAT.md,
// "Chunks at the world's edge"), whatever PUT_CHUNK sent there and whatever
// fill covers the chunk, before and after a flush and a reopen.
TEST(DatabaseTest, VoxelsPastTheWorldsEdgeAreAlwaysAir) {
  TempDir dir;
  const ChunkKey edge = ChunkKey::FromCoord({1'252'344, 626'172, 312'500});
  const ChunkKey other = ChunkKey::FromCoord({1'252'344, 400'000, 312'500});  // x edge only
  auto at = [](const std::vector<uint8_t>& dense, uint32_t x, uint32_t y, uint32_t z) {
    return dense[x + 128 * (y + 128 * z)];
  };
  auto check = [&](Database& db, uint8_t inside) {
    const ReadOne r = GetChunk(db, edge);
    ASSERT_OK(r.status);
    EXPECT_EQ(at(r.dense, 0, 0, 0), inside);
    EXPECT_EQ(at(r.dense, 47, 23, 127), inside);
    EXPECT_EQ(at(r.dense, 48, 0, 0), 0);  // past x
    EXPECT_EQ(at(r.dense, 0, 24, 0), 0);  // past y
    EXPECT_EQ(at(r.dense, 127, 127, 127), 0);
    const ReadOne o = GetChunk(db, other);
    ASSERT_OK(o.status);
    EXPECT_EQ(at(o.dense, 47, 127, 127), inside);
    EXPECT_EQ(at(o.dense, 48, 0, 0), 0);
  };
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
    // A uniform record and a dense one with material everywhere.
    ASSERT_OK(db->PutChunkAndWait(edge, EncodeChunk(Chunk(3), 0, 0), std::nullopt).status);
    std::vector<uint8_t> dense(kChunkVoxels, 3);
    dense[5] = 4;
    ASSERT_OK(db->PutChunkAndWait(other, EncodeChunk(Chunk::FromDense(dense), 0, 0), std::nullopt)
                  .status);
    check(*db, 3);
  }
  {
    // Replayed from the journal.
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), TestOptions()));
    check(*db, 3);
    ASSERT_OK(db->Flush());
    check(*db, 3);
    // A fill over the whole world: the edge chunks read as it inside only.
    ASSERT_OK(db->FillBoxAndWait(db->frame().Bounds(), 5).status);
    check(*db, 5);
    ASSERT_OK(db->Flush());
    check(*db, 5);
  }
}

}  // namespace
}  // namespace voxdb::engine
