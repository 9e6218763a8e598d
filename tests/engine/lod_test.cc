// Tests of the LOD pyramid against a brute-force mode downsampling.
#include "engine/lod.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/database.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"
#include "tests/testing/test_database.h"
#include "tests/testing/wait.h"

namespace voxdb::engine {
namespace {

using Coord = std::tuple<uint32_t, uint32_t, uint32_t>;
using Dense = std::vector<uint8_t>;  // empty: all air

constexpr int kLevels = 3;

ChunkCoord Base() {
  const auto c = testing::SampleSurfaceChunkCoords(1);
  return ChunkCoord{c[0] & ~7u, c[1] & ~7u, c[2] & ~7u};
}

ChunkCoord At(uint32_t dx, uint32_t dy, uint32_t dz) {
  const ChunkCoord b = Base();
  return ChunkCoord{b.x + dx, b.y + dy, b.z + dz};
}

// The brute-force mode: counts of the 8 children, ties to non-air then to
// the smallest id.
uint8_t NaiveMode(const std::array<uint8_t, 8>& v) {
  std::map<uint8_t, int> counts;
  for (uint8_t m : v) ++counts[m];
  int best_count = -1;
  uint8_t best = 0;
  for (const auto& [m, count] : counts) {  // ascending ids
    if (m == 0) continue;
    if (count > best_count) best = m, best_count = count;
  }
  if (counts.count(0) && counts[0] > best_count) best = 0;
  return best;
}

class LodTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(/*start=*/true); }
  void TearDown() override { Close(); }

  // Opens the database with a LodObserver and a pyramid over it; starts
  // its builder when `start`.
  void Open(bool start) {
    DatabaseOptions o = testing::TestOptions();
    o.observers = {&observer_};
    ASSERT_OK_AND_ASSIGN(db_, Database::Open(dir_.path(), o));
    LodOptions lo;
    lo.levels = kLevels;
    lo.max_rebuild_nodes = max_rebuild_nodes_;
    lod_ = std::make_unique<LodPyramid>(db_.get(), lo);
    if (start) lod_->Start();
  }
  void Close() {
    if (lod_) lod_->Stop();
    lod_.reset();
    db_.reset();
  }
  void Reopen(bool start) {
    Close();
    Open(start);
  }

  void Put(const ChunkCoord& c, const Dense& dense) {
    const auto record = EncodeChunk(Chunk::FromDense(dense), 0, 0);
    ASSERT_OK(db_->PutChunkAndWait(ChunkKey::FromCoord(c), record, std::nullopt).status);
    chunks_.insert({c.x, c.y, c.z});
  }

  // Flushes, then waits for the builder to catch up (a bound for a hang:
  // two minutes, scaled).
  void Settle() {
    ASSERT_OK(db_->Flush());
    ASSERT_OK(lod_->WaitIdle(testing::Scaled(std::chrono::minutes(2))));
  }

  // Level 0 of a chunk we know, read through the Database (fills included).
  Dense Level0(const Coord& c) {
    if (!chunks_.count(c)) return {};
    const auto [x, y, z] = c;
    Dense dense(kChunkVoxels);
    EXPECT_OK(db_->ReadBox(db_->frame().VoxelsOfChunk(ChunkCoord{x, y, z}), dense.data()));
    return dense;
  }

  Dense Naive(int level, const Coord& c) {
    if (level == 0) return Level0(c);
    auto it = memo_[level].find(c);
    if (it != memo_[level].end()) return it->second;
    const auto [x, y, z] = c;
    std::array<Dense, 8> kids;
    bool any = false;
    for (int i = 0; i < 8; ++i) {
      kids[i] = Naive(level - 1, {2 * x + (i & 1), 2 * y + ((i >> 1) & 1), 2 * z + (i >> 2)});
      any |= !kids[i].empty();
    }
    Dense out;
    if (any) {
      out.assign(kChunkVoxels, 0);
      for (int pz = 0; pz < kChunkEdge; ++pz) {
        for (int py = 0; py < kChunkEdge; ++py) {
          for (int px = 0; px < kChunkEdge; ++px) {
            const int octant = (px >= 64) | ((py >= 64) << 1) | ((pz >= 64) << 2);
            const Dense& kid = kids[octant];
            if (kid.empty()) continue;
            std::array<uint8_t, 8> v;
            for (int j = 0; j < 8; ++j) {
              const int cx = 2 * (px % 64) + (j & 1), cy = 2 * (py % 64) + ((j >> 1) & 1),
                        cz = 2 * (pz % 64) + (j >> 2);
              v[j] = kid[cx + 128 * (cy + 128 * cz)];
            }
            out[px + 128 * (py + 128 * pz)] = NaiveMode(v);
          }
        }
      }
    }
    memo_[level][c] = out;
    return out;
  }

  // Compares every node above a known chunk, levels 1..kLevels.
  void ExpectMatchesNaive() {
    memo_.clear();
    for (int level = 1; level <= kLevels; ++level) {
      std::set<Coord> nodes;
      for (const auto& [x, y, z] : chunks_) nodes.insert({x >> level, y >> level, z >> level});
      for (const Coord& n : nodes) {
        const auto [x, y, z] = n;
        const Dense want = Naive(level, n);
        auto read = lod_->GetLod(level, MortonEncode(x, y, z));
        ASSERT_TRUE(read.ok()) << read.status() << " level " << level;
        Dense got(kChunkVoxels);
        ASSERT_OK(DecodeChunkToDense(read->record, got.data()));
        if (want.empty()) {
          EXPECT_EQ(got, Dense(kChunkVoxels, 0)) << "level " << level;
        } else {
          EXPECT_TRUE(got == want) << "level " << level << " node " << x << "," << y << "," << z;
        }
      }
    }
  }

  ::voxdb::testing::TempDir dir_;
  LodObserver observer_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<LodPyramid> lod_;
  uint64_t max_rebuild_nodes_ = uint64_t{1} << 20;
  std::set<Coord> chunks_;
  std::map<int, std::map<Coord, Dense>> memo_;
};

TEST(LodModeTest, TiesGoToNonAirThenSmallestId) {
  const uint8_t half[8] = {0, 0, 0, 0, 5, 5, 5, 5};
  EXPECT_EQ(LodMode8(half), 5);
  const uint8_t three_way[8] = {9, 9, 9, 3, 3, 3, 0, 0};
  EXPECT_EQ(LodMode8(three_way), 3);
  const uint8_t air_wins[8] = {0, 0, 0, 0, 9, 9, 3, 3};
  EXPECT_EQ(LodMode8(air_wins), 0);
  const uint8_t majority[8] = {7, 7, 7, 1, 0, 0, 2, 4};
  EXPECT_EQ(LodMode8(majority), 7);
  const uint8_t uniform[8] = {6, 6, 6, 6, 6, 6, 6, 6};
  EXPECT_EQ(LodMode8(uniform), 6);
}

TEST_F(LodTest, CraftedTieKeepsThinSurface) {
  Dense dense(kChunkVoxels, 0);
  // The 2x2x2 cell at (0,0,0): the lower layer (z = 0) is material 5.
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 2; ++x) dense[x + 128 * y] = 5;
  }
  // The cell at (2,0,0): two 4s, two 3s, four air: air wins.
  dense[2] = dense[3] = 4;
  dense[2 + 128] = dense[3 + 128] = 3;
  const ChunkCoord c = At(1, 0, 0);  // octant 1 of its level-1 node
  Put(c, dense);
  Settle();
  ASSERT_OK_AND_ASSIGN(LodRead read, lod_->GetLod(1, ChunkKey::FromCoord(c).OctreeNode(1)));
  Dense got(kChunkVoxels);
  ASSERT_OK(DecodeChunkToDense(read.record, got.data()));
  EXPECT_EQ(got[64], 5);
  EXPECT_EQ(got[65], 0);
  EXPECT_EQ(got[0], 0);
  ExpectMatchesNaive();
}

TEST_F(LodTest, MatchesBruteForceAndFollowsEdits) {
  Put(At(0, 0, 0), testing::SampleSurfaceChunk(1));
  Put(At(1, 0, 0), testing::SampleSurfaceChunk(2));
  Dense noise = testing::NoiseChunk(3);
  for (auto& v : noise) v &= 3;  // a small alphabet: many ties
  Put(At(3, 2, 1), noise);
  Put(At(5, 5, 5), testing::UniformChunk(9));
  Settle();
  EXPECT_EQ(lod_->DirtyCount(), 0u);
  ExpectMatchesNaive();

  // Versions: the max version of the level-0 chunks under the node.
  ASSERT_OK_AND_ASSIGN(LodRead top,
                       lod_->GetLod(3, ChunkKey::FromCoord(At(0, 0, 0)).OctreeNode(3)));
  EXPECT_EQ(top.version, db_->Stats().last_seq);
  EXPECT_FALSE(top.dirty);

  // Edits, a delete and a fill (over a chunk never stored).
  std::vector<VoxelEdit> edits;
  const VoxelCoord origin = db_->frame().ChunkOrigin(At(0, 0, 0));
  for (uint64_t i = 0; i < 64; ++i) {
    edits.push_back({VoxelCoord{origin.x + i, origin.y + 2 * i, origin.z + i}, 11});
  }
  ASSERT_OK(db_->SetVoxelsAndWait(edits).status);
  ASSERT_OK(db_->DeleteChunkAndWait(ChunkKey::FromCoord(At(1, 0, 0))).status);
  const VoxelCoord f = db_->frame().ChunkOrigin(At(6, 1, 2));
  ASSERT_OK(
      db_->FillBoxAndWait(VoxelBox{{f.x + 10, f.y + 3, f.z}, {f.x + 200, f.y + 100, f.z + 31}}, 12)
          .status);
  chunks_.insert({At(6, 1, 2).x, At(6, 1, 2).y, At(6, 1, 2).z});
  chunks_.insert({At(7, 1, 2).x, At(7, 1, 2).y, At(7, 1, 2).z});
  Settle();
  ExpectMatchesNaive();

  // A full rebuild gives the same pyramid.
  std::map<std::pair<int, Coord>, LodRead> before;
  for (int level = 1; level <= kLevels; ++level) {
    for (const auto& [x, y, z] : chunks_) {
      const Coord n{x >> level, y >> level, z >> level};
      auto read = lod_->GetLod(level, MortonEncode(x >> level, y >> level, z >> level));
      ASSERT_OK(read.status());
      before[{level, n}] = *read;
    }
  }
  lod_->Stop();
  ASSERT_OK(lod_->RebuildAll());
  for (const auto& [k, old] : before) {
    const auto [x, y, z] = k.second;
    ASSERT_OK_AND_ASSIGN(LodRead now, lod_->GetLod(k.first, MortonEncode(x, y, z)));
    Dense a(kChunkVoxels), b(kChunkVoxels);
    ASSERT_OK(DecodeChunkToDense(old.record, a.data()));
    ASSERT_OK(DecodeChunkToDense(now.record, b.data()));
    EXPECT_TRUE(a == b) << "level " << k.first;
    EXPECT_EQ(old.version, now.version) << "level " << k.first;
  }
  ExpectMatchesNaive();
}

TEST_F(LodTest, KeepsUpWithWritesDuringBuilds) {
  Put(At(0, 0, 0), testing::SampleSurfaceChunk(1));
  Put(At(2, 0, 0), testing::SampleSurfaceChunk(2));
  const VoxelCoord origin = db_->frame().ChunkOrigin(At(0, 0, 0));
  // Flushes while the builder runs: markers rewritten mid-build must stay.
  for (uint64_t round = 0; round < 30; ++round) {
    std::vector<VoxelEdit> edits;
    for (uint64_t i = 0; i < 16; ++i) {
      edits.push_back({VoxelCoord{origin.x + 2 * i, origin.y + 2 * round, origin.z + 100},
                       static_cast<uint8_t>(20 + round)});
      edits.push_back({VoxelCoord{origin.x + 2 * i + 1, origin.y + 2 * round, origin.z + 100},
                       static_cast<uint8_t>(20 + round)});
    }
    ASSERT_OK(db_->SetVoxelsAndWait(edits).status);
    ASSERT_OK(db_->Flush());
  }
  Settle();
  ExpectMatchesNaive();
}

TEST_F(LodTest, MarkersSurviveReopen) {
  Put(At(0, 0, 0), testing::SampleSurfaceChunk(1));
  Settle();
  lod_->Stop();
  // Changes flushed while no builder runs, then a restart.
  Put(At(1, 1, 0), testing::SampleSurfaceChunk(3));
  const VoxelCoord f = db_->frame().ChunkOrigin(At(4, 0, 0));
  ASSERT_OK(db_->FillBoxAndWait(VoxelBox{f, {f.x + 64, f.y + 64, f.z + 64}}, 3).status);
  chunks_.insert({At(4, 0, 0).x, At(4, 0, 0).y, At(4, 0, 0).z});
  ASSERT_OK(db_->Flush());
  EXPECT_GT(lod_->DirtyCount(), 0u);
  Reopen(/*start=*/true);
  Settle();
  ExpectMatchesNaive();
}

TEST_F(LodTest, NeverBuiltIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(lod_->GetLod(1, 12345).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(lod_->GetLod(kLevels + 1, 0).status()));
}

// Fills: a node a fill covers wholly reads as the fill without being built;
// the nodes on a fill's boundary, and those with chunks written after it,
// are built. Every node matches the brute-force downsampling.
TEST_F(LodTest, FillsReadThroughWhatTheyCoverAndBuildTheirBoundary) {
  const auto insert_chunks = [&](uint32_t x0, uint32_t y0, uint32_t z0, uint32_t x1, uint32_t y1,
                                 uint32_t z1) {
    for (uint32_t z = z0; z < z1; ++z) {
      for (uint32_t y = y0; y < y1; ++y) {
        for (uint32_t x = x0; x < x1; ++x)
          chunks_.insert({At(x, y, z).x, At(x, y, z).y, At(x, y, z).z});
      }
    }
  };
  Put(At(1, 1, 1), testing::SampleSurfaceChunk(1));  // stored before the fill, inside it
  Put(At(9, 1, 0), testing::SampleSurfaceChunk(2));  // on the second fill's boundary
  Settle();
  // A fill covering level-2 node At(0..3)^3 wholly (aligned to it).
  const VoxelCoord o = db_->frame().ChunkOrigin(At(0, 0, 0));
  const VoxelCoord e = db_->frame().ChunkOrigin(At(4, 4, 4));
  const WriteResult aligned = db_->FillBoxAndWait(VoxelBox{o, e}, 7);
  ASSERT_OK(aligned.status);
  insert_chunks(0, 0, 0, 4, 4, 4);
  // A fill aligned to nothing.
  const VoxelCoord a = db_->frame().ChunkOrigin(At(8, 0, 0));
  const VoxelCoord b = db_->frame().ChunkOrigin(At(11, 3, 2));
  ASSERT_OK(db_->FillBoxAndWait(
                   VoxelBox{{a.x + 100, a.y + 5, a.z + 60}, {b.x + 30, b.y + 40, b.z + 10}}, 8)
                .status);
  insert_chunks(8, 0, 0, 12, 4, 3);
  Settle();
  ExpectMatchesNaive();
  // Level-1 node At(2..3, 0..1, 0..1) lies wholly in the first fill and
  // holds no stored chunk: it reads as the fill.
  ASSERT_OK_AND_ASSIGN(LodRead inside,
                       lod_->GetLod(1, ChunkKey::FromCoord(At(2, 0, 0)).OctreeNode(1)));
  EXPECT_EQ(inside.version, aligned.version);
  EXPECT_FALSE(inside.dirty);

  // A chunk written inside the fill after it, and a fill over part of it.
  Put(At(2, 2, 2), testing::SampleSurfaceChunk(3));
  const VoxelCoord p = db_->frame().ChunkOrigin(At(3, 0, 0));
  ASSERT_OK(db_->FillBoxAndWait(
                   VoxelBox{{p.x + 10, p.y + 10, p.z + 10}, {p.x + 50, p.y + 300, p.z + 20}}, 9)
                .status);
  Settle();
  ExpectMatchesNaive();

  // A full rebuild gives the same.
  lod_->Stop();
  ASSERT_OK(lod_->RebuildAll());
  ExpectMatchesNaive();
}

// A fill over 256 x 256 x 8 chunks (65,536 level-1 nodes), aligned to the
// level-3 nodes: nothing to build (the builder used to rebuild every node
// under it, for minutes), and every level reads as the fill.
TEST_F(LodTest, ABigFillLeavesNoNodeToBuild) {
  const VoxelCoord o = db_->frame().ChunkOrigin(At(0, 0, 0));
  const VoxelCoord e = db_->frame().ChunkOrigin(At(256, 256, 8));
  const WriteResult fill = db_->FillBoxAndWait(VoxelBox{o, e}, 5);
  ASSERT_OK(fill.status);
  Settle();
  EXPECT_EQ(lod_->DirtyCount(), 0u);
  for (int level = 1; level <= kLevels; ++level) {
    for (const ChunkCoord& c : {At(0, 0, 0), At(255, 255, 7), At(100, 37, 3)}) {
      ASSERT_OK_AND_ASSIGN(LodRead read,
                           lod_->GetLod(level, ChunkKey::FromCoord(c).OctreeNode(level)));
      EXPECT_EQ(read.version, fill.version) << "level " << level;
      Dense got(kChunkVoxels);
      ASSERT_OK(DecodeChunkToDense(read.record, got.data()));
      EXPECT_EQ(got, Dense(kChunkVoxels, 5)) << "level " << level;
    }
  }
  // Just outside it: air, never built.
  EXPECT_TRUE(
      absl::IsNotFound(lod_->GetLod(1, ChunkKey::FromCoord(At(256, 0, 0)).OctreeNode(1)).status()));
}

// LOD_REBUILD's halves: the marks, then the builder; a waiter hears when it
// is done, or that the builder stopped (the marks stay: resumable).
TEST_F(LodTest, RebuildMarksForTheBuilderAndWaitersHearTheEnd) {
  Put(At(0, 0, 0), testing::SampleSurfaceChunk(1));
  Put(At(3, 2, 1), testing::SampleSurfaceChunk(2));
  Settle();
  ASSERT_OK(lod_->MarkAllForRebuild());
  std::promise<Status> done;
  lod_->WhenSynced([&](const Status& s) { done.set_value(s); });
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(testing::Scaled(std::chrono::seconds(60))), std::future_status::ready);
  EXPECT_OK(f.get());
  EXPECT_EQ(lod_->DirtyCount(), 0u);
  ExpectMatchesNaive();

  lod_->Stop();
  ASSERT_OK(lod_->MarkAllForRebuild());
  EXPECT_GT(lod_->DirtyCount(), 0u);
  std::promise<Status> stopped;
  lod_->WhenSynced([&](const Status& s) { stopped.set_value(s); });
  EXPECT_TRUE(IsClosing(stopped.get_future().get()));
  Reopen(/*start=*/true);  // resumes
  Settle();
  ExpectMatchesNaive();
}

// A rebuild over more level-1 nodes than max_rebuild_nodes is a request
// over a limit (TOO_LARGE on the wire, not STORAGE_FULL), and it is refused
// before anything is dropped: the built nodes stay readable, none is marked.
TEST_F(LodTest, ARebuildOverTheNodeLimitIsTooLargeAndDropsNothing) {
  Put(At(0, 0, 0), testing::SampleSurfaceChunk(1));
  Put(At(3, 2, 1), testing::SampleSurfaceChunk(2));  // another level-1 node
  Settle();
  max_rebuild_nodes_ = 1;
  Reopen(/*start=*/true);
  const Status s = lod_->MarkAllForRebuild();
  EXPECT_TRUE(IsTooLarge(s)) << s;
  EXPECT_EQ(lod_->DirtyCount(), 0u);
  EXPECT_OK(lod_->GetLod(1, ChunkKey::FromCoord(At(0, 0, 0)).OctreeNode(1)).status());
  EXPECT_OK(lod_->GetLod(1, ChunkKey::FromCoord(At(3, 2, 1)).OctreeNode(1)).status());
  ExpectMatchesNaive();
}

// WhenSynced answers once what was marked before it is built: every level
// over a flushed chunk has its version, while another thread keeps writing
// chunks under other nodes. (The writer does not flush: the builder takes
// the lowest dirty level first, so a writer marking level-1 nodes faster
// than they are built would hold the levels above, and WhenSynced, back;
// lod.h states that limit. Its writes are marked by the test's flushes.)
TEST_F(LodTest, WhenSyncedWaitsForWhatWasMarkedBeforeItWhileWritesGoOn) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};
  std::thread writer([&] {
    const VoxelCoord far = db_->frame().ChunkOrigin(At(64, 0, 0));
    for (uint64_t i = 0; !stop.load(); ++i) {
      const VoxelCoord v{far.x + 128 * (i % 16) + i % 100, far.y, far.z};
      const VoxelEdit edit{v, static_cast<uint8_t>(1 + i % 200)};
      ASSERT_OK(db_->SetVoxelsAndWait({&edit, 1}).status);
      ++writes;
    }
  });
  // Stopped and joined however the test ends (a failed ASSERT returns).
  struct Joiner {
    std::atomic<bool>* stop;
    std::thread* t;
    ~Joiner() {
      *stop = true;
      if (t->joinable()) t->join();
    }
  } joiner{&stop, &writer};
  ASSERT_TRUE(testing::WaitUntil([&] { return writes.load() >= 3; }, std::chrono::seconds(30)));
  const uint64_t first = writes.load();
  for (uint32_t round = 0; round < 3; ++round) {
    const ChunkCoord c = At(round, 0, 0);
    const VoxelCoord o = db_->frame().ChunkOrigin(c);
    const VoxelEdit edit{o, static_cast<uint8_t>(7 + round)};
    const WriteResult w = db_->SetVoxelsAndWait({&edit, 1});
    ASSERT_OK(w.status);
    ASSERT_OK(db_->Flush());
    // Shared: after a failed wait the builder may still answer it.
    auto done = std::make_shared<std::promise<Status>>();
    lod_->WhenSynced([done](const Status& s) { done->set_value(s); });
    auto f = done->get_future();
    ASSERT_EQ(f.wait_for(testing::Scaled(std::chrono::seconds(60))), std::future_status::ready);
    ASSERT_OK(f.get());
    for (int level = 1; level <= kLevels; ++level) {
      ASSERT_OK_AND_ASSIGN(LodRead read,
                           lod_->GetLod(level, ChunkKey::FromCoord(c).OctreeNode(level)));
      EXPECT_EQ(read.version, w.version) << "level " << level << ", round " << round;
      EXPECT_FALSE(read.dirty) << "level " << level << ", round " << round;
    }
  }
  EXPECT_GT(writes.load(), first) << "the writer wrote nothing while the test ran";
  stop = true;
  if (writer.joinable()) writer.join();
  ASSERT_OK(db_->Flush());
  Settle();
  EXPECT_EQ(lod_->DirtyCount(), 0u);
}

// WhenSynced with nothing marked answers at once; on a stopped builder it
// fails (UNAVAILABLE), and WaitIdle says BUSY when its timeout passes first.
TEST_F(LodTest, WhenSyncedOnAStoppedBuilderFails) {
  ASSERT_OK(lod_->WaitIdle(testing::Scaled(std::chrono::seconds(30))));
  Put(At(0, 0, 0), testing::SampleSurfaceChunk(1));
  lod_->Stop();
  ASSERT_OK(db_->Flush());
  std::promise<Status> stopped;
  lod_->WhenSynced([&](const Status& s) { stopped.set_value(s); });
  EXPECT_TRUE(IsClosing(stopped.get_future().get()));
  Reopen(/*start=*/false);
  EXPECT_GT(lod_->DirtyCount(), 0u);
  // Not started: nothing builds, so the wait runs out.
  const Status s = lod_->WaitIdle(std::chrono::milliseconds(50));
  EXPECT_TRUE(IsBusy(s)) << s;
  lod_->Start();
  Settle();
  EXPECT_EQ(lod_->DirtyCount(), 0u);
  ExpectMatchesNaive();
}

}  // namespace
}  // namespace voxdb::engine
