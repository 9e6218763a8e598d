// The write contract of engine::Database (protocol/PROTOCOL.md, "Consistency
// and durability"): a write answered with an error is never applied, kSync
// readers never see what a crash could undo, versions are never handed out
// twice, a chunk's voxels and version are read together, and no single
// request may take memory or time from everyone else.
//
// Commit failures are real: the process's file size limit (RLIMIT_FSIZE,
// with SIGXFSZ ignored) set to LMDB's two meta pages makes every write of
// a data page fail with EFBIG, as a full disk fails them with ENOSPC;
// raising the limit again is the disk getting space back.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/chunk_codec.h"
#include "engine/database.h"
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

const ChunkCoord kBase{testing::kCx, testing::kCy, testing::kCz};

VoxelBox ChunkBoxAt(uint32_t dx) {
  const uint64_t x = kX + 128 * uint64_t{dx};
  return VoxelBox{{x, kY, kZ}, {x + 128, kY + 128, kZ + 128}};
}

uint8_t Voxel(Database& db, VoxelCoord v) {
  uint8_t out = 0xEE;
  EXPECT_OK(db.GetVoxels({&v, 1}, &out));
  return out;
}

// While alive, this process cannot write a file past `bytes` (by default
// LMDB's two meta pages: every commit then fails writing its data pages).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(uint64_t bytes = 8192) {
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &saved_);
    rlimit lower = saved_;
    lower.rlim_cur = bytes;
    EXPECT_EQ(setrlimit(RLIMIT_FSIZE, &lower), 0);
  }
  ~FileSizeLimit() { Lift(); }
  void Lift() {
    if (lifted_) return;
    lifted_ = true;
    EXPECT_EQ(setrlimit(RLIMIT_FSIZE, &saved_), 0);
  }

 private:
  rlimit saved_{};
  bool lifted_ = false;
};

// A chunk of noise whose every voxel is `material` or `material + 1`: a
// record of about 2 MiB, and a voxel value no other write in the test uses.
std::vector<uint8_t> TwoValueNoise(uint8_t material, uint64_t seed) {
  std::vector<uint8_t> dense = testing::NoiseChunk(static_cast<uint32_t>(seed));
  for (uint8_t& v : dense) v = static_cast<uint8_t>(material + (v & 1));
  return dense;
}

// The heart of the contract: a WRITE_BOX whose journal commit fails (the
// disk is full) is answered with the error, and no reader, no subscriber
// (the change feed), no flush and no reopen ever sees it; once the disk has
// room again, writes succeed without a restart.
TEST(DatabaseContractTest, AWriteWhoseCommitFailsIsNeverVisibleAndTheErrorClears) {
  TempDir dir;
  DatabaseOptions options;
  options.store.initial_map_size = size_t{64} << 20;
  const VoxelBox box = ChunkBoxAt(0);
  const VoxelCoord probe = box.lo;
  uint64_t good_version = 0;
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
    ASSERT_OK(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{probe, 3}}).status);
    ASSERT_OK(db->Flush());
    const uint64_t feed_before = db->changes().last_seq();
    const uint64_t version_before = db->Stats().last_seq;

    // Readers on other threads while the failing write runs: none may see
    // its voxels (materials 200 / 201), not even for a moment.
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> reads{0}, seen{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < 2; ++r) {
      readers.emplace_back([&, r] {
        std::vector<uint8_t> out(128);
        const VoxelBox row{box.lo, {box.lo.x + 128, box.lo.y + 1, box.lo.z + 1}};
        while (!stop.load()) {
          if (r == 0) {
            if (db->ReadBox(row, out.data()).ok()) {
              for (uint8_t v : out) seen += v >= 200;
            }
          } else {
            uint8_t v = 0;
            const VoxelCoord at{box.lo.x + 1, box.lo.y, box.lo.z};
            if (db->GetVoxels({&at, 1}, &v).ok()) seen += v >= 200;
          }
          ++reads;
        }
      });
    }
    WriteResult failed;
    {
      FileSizeLimit full;
      failed = db->WriteBoxAndWait(box, TwoValueNoise(200, 0));
    }
    stop = true;
    for (auto& t : readers) t.join();
    ASSERT_FALSE(failed.status.ok()) << "the file size limit did not make a commit fail";
    EXPECT_THAT(std::string(failed.status.message()), ::testing::HasSubstr("not applied"));
    EXPECT_EQ(seen.load(), 0u) << "of " << reads.load() << " reads";
    // Not readable, not published.
    EXPECT_EQ(Voxel(*db, probe), 3);
    EXPECT_EQ(Voxel(*db, {box.lo.x + 1, box.lo.y, box.lo.z}), 0);
    EXPECT_EQ(db->changes().last_seq(), feed_before);
    EXPECT_GE(db->Stats().rollbacks, 1u);
    // The disk has room again: no restart needed.
    const WriteResult good = db->WriteBoxAndWait(box, TwoValueNoise(100, 9));
    ASSERT_OK(good.status);
    good_version = good.version;
    EXPECT_GT(good.version, version_before);
    EXPECT_EQ(db->changes().last_seq(), good.version);
    EXPECT_GE(Voxel(*db, probe), 100);
    ASSERT_OK(db->Flush());
  }
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  std::vector<uint8_t> dense(kChunkVoxels);
  ASSERT_OK(db->ReadBox(box, dense.data()));
  EXPECT_EQ(dense, TwoValueNoise(100, 9));
  EXPECT_GE(db->Stats().last_seq, good_version);
}

// A FILL_BOX whose commit fails leaves no fill behind: not in memory, not
// after a flush, not after a reopen.
TEST(DatabaseContractTest, AFailedFillLeavesNoFillBehind) {
  TempDir dir;
  DatabaseOptions options;
  const VoxelBox box = ChunkBoxAt(0);
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
    ASSERT_OK(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{ChunkBoxAt(5).lo, 1}}).status);
    ASSERT_OK(db->Flush());
    WriteResult fill;
    {
      FileSizeLimit full;
      fill = db->FillBoxAndWait(box, 77);
    }
    ASSERT_FALSE(fill.status.ok());
    EXPECT_EQ(Voxel(*db, box.lo), 0);
    EXPECT_EQ(db->Fills()->size(), 0u);
    ASSERT_OK(db->Flush());
  }
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  EXPECT_EQ(db->Fills()->size(), 0u);
  EXPECT_EQ(Voxel(*db, box.lo), 0);
  EXPECT_EQ(Voxel(*db, ChunkBoxAt(5).lo), 1);
}

// kAsync acknowledges before the commit, so a crash may lose acknowledged
// writes; their versions must never be handed out again (PUT_CHUNK's
// expected-version check relies on one version naming one state).
TEST(DatabaseContractTest, VersionsAreNeverHandedOutTwiceAcrossACrash) {
  TempDir dir;
  DatabaseOptions options;
  options.durability = Durability::kAsync;
  options.commit_interval = std::chrono::milliseconds(60'000);  // nothing commits
  options.max_dirty_age = std::chrono::hours(1);
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
    ASSERT_OK(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{ChunkBoxAt(0).lo, 1}}).status);
  }  // a clean close: committed
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipe_fds[0]);
    auto db = Database::Open(dir.path(), options);
    if (!db.ok()) _exit(2);
    uint64_t newest = 0;
    for (uint8_t m = 2; m < 12; ++m) {
      const WriteResult r = (*db)->SetVoxelsAndWait(std::vector<VoxelEdit>{{ChunkBoxAt(0).lo, m}});
      if (!r.status.ok()) _exit(3);
      newest = r.version;
    }
    if (write(pipe_fds[1], &newest, sizeof newest) != sizeof newest) _exit(4);
    pause();  // killed here, the writes acknowledged but not committed
    _exit(0);
  }
  close(pipe_fds[1]);
  uint64_t acked = 0;
  ASSERT_EQ(read(pipe_fds[0], &acked, sizeof acked), static_cast<ssize_t>(sizeof acked));
  close(pipe_fds[0]);
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_GT(acked, 1u);

  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  EXPECT_EQ(Voxel(*db, ChunkBoxAt(0).lo), 1) << "the lost writes are lost (async)";
  const WriteResult next = db->SetVoxelsAndWait(std::vector<VoxelEdit>{{ChunkBoxAt(0).lo, 99}});
  ASSERT_OK(next.status);
  EXPECT_GT(next.version, acked) << "a version the crashed process acknowledged was issued again";
}

// A chunk's voxels and its version always go together: a GET of a chunk
// being filled or edited over and over never pairs new voxels with the
// version before them (or old voxels with the new version).
TEST(DatabaseContractTest, GetChunksNeverTearsVoxelsFromTheirVersion) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), testing::TestOptions()));
  const ChunkKey filled = ChunkKey::FromCoord(kBase);
  const ChunkKey edited = ChunkKey::FromCoord({kBase.x + 1, kBase.y, kBase.z});
  const VoxelCoord edit_at{kX + 128, kY, kZ};
  // Make both chunks dirty entries (the filled one reads as the fills).
  ASSERT_OK(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{ChunkBoxAt(0).lo, 1}}).status);
  ASSERT_OK(db->FillBoxAndWait(ChunkBoxAt(0), 1).status);
  ASSERT_OK(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{edit_at, 1}}).status);

  std::mutex mu;
  std::map<uint64_t, uint8_t> written;  // version -> the material it set
  std::vector<std::pair<uint64_t, uint8_t>> seen_filled, seen_edited;
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    const std::vector<ChunkKey> keys{filled, edited};
    std::vector<uint8_t> dense(kChunkVoxels);
    while (!stop.load()) {
      EXPECT_OK(db->GetChunks(keys, [&](size_t i, const ChunkRead& read) {
        if (!read.status.ok() || !DecodeChunkToDense(read.record, dense.data()).ok()) return;
        if (i == 0) {
          seen_filled.push_back({read.version, dense[0]});
        } else {
          seen_edited.push_back({read.version, dense[0]});
        }
      }));
    }
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  for (int k = 0; k < 2000 || std::chrono::steady_clock::now() < until; ++k) {
    const uint8_t m = static_cast<uint8_t>(2 + k % 250);
    const WriteResult f = db->FillBoxAndWait(ChunkBoxAt(0), m);
    ASSERT_OK(f.status);
    const WriteResult e = db->SetVoxelsAndWait(std::vector<VoxelEdit>{{edit_at, m}});
    ASSERT_OK(e.status);
    std::lock_guard<std::mutex> l(mu);
    written[f.version] = m;
    written[e.version] = m;
  }
  stop = true;
  reader.join();
  size_t torn = 0, checked = 0;
  for (const auto* seen : {&seen_filled, &seen_edited}) {
    for (const auto& [version, material] : *seen) {
      auto it = written.find(version);
      if (it == written.end()) continue;  // the setup's writes
      ++checked;
      torn += it->second != material;
    }
  }
  EXPECT_GT(checked, 0u);
  EXPECT_EQ(torn, 0u) << "of " << checked << " reads paired voxels with another write's version";
}

// A fill that covers a corrupt stored chunk wholly replaces it.
TEST(DatabaseContractTest, AFillCoveringACorruptChunkReplacesIt) {
  TempDir dir;
  const DatabaseOptions options = testing::TestOptions();
  const ChunkKey bad = ChunkKey::FromCoord(kBase);
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
    ASSERT_OK(db->WriteBoxAndWait(ChunkBoxAt(0), TwoValueNoise(10, 3)).status);
  }
  ASSERT_OK(testing::CorruptStoredChunk(dir.path(), bad));
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  uint8_t v = 0;
  const VoxelCoord at = ChunkBoxAt(0).lo;
  ASSERT_TRUE(IsCorrupt(db->GetVoxels({&at, 1}, &v)));
  // A fill over part of it cannot repair it (and says nothing of it).
  ASSERT_OK(db->FillBoxAndWait({at, {at.x + 5, at.y + 5, at.z + 5}}, 4).status);
  EXPECT_TRUE(IsCorrupt(db->GetVoxels({&at, 1}, &v)));
  // A fill over all of it replaces it.
  const WriteResult fill =
      db->FillBoxAndWait({{at.x - 10, at.y, at.z}, {at.x + 200, at.y + 128, at.z + 128}}, 7);
  ASSERT_OK(fill.status);
  EXPECT_EQ(Voxel(*db, at), 7);
  ASSERT_OK(db->Flush());
  ASSERT_OK_AND_ASSIGN(auto snap, db->store().BeginRead());
  EXPECT_TRUE(absl::IsNotFound(snap->GetChunk(bad).status()) ||
              ParseChunkRecord(*snap->GetChunk(bad)).ok());
}

// Numbers a client sends cannot make a box's size wrap around, nor make one
// request take unbounded memory or time: each is refused with TOO_LARGE
// before anything is allocated or applied.
TEST(DatabaseContractTest, OversizedRequestsAreRefusedBeforeTheyCost) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), testing::TestOptions()));
  // 2^27 x 2^26 x 2^11 = 2^64 voxels: the volume wraps to 0 in 64 bits.
  const VoxelBox wraps{{0, 0, 0}, {uint64_t{1} << 27, uint64_t{1} << 26, uint64_t{1} << 11}};
  EXPECT_EQ(wraps.volume(), UINT64_MAX);
  uint8_t sink[16];
  Status s = db->ReadBox(wraps, sink);
  EXPECT_TRUE(IsTooLarge(s)) << s;
  s = db->WriteBoxAndWait(wraps, {}).status;
  EXPECT_TRUE(IsTooLarge(s)) << s;
  // A thin column crossing half a million chunks.
  const VoxelBox column{{kX, kY, 0}, {kX + 1, kY + 1, uint64_t{1} << 26}};
  std::vector<uint8_t> out(column.volume());
  s = db->ReadBox(column, out.data());
  EXPECT_TRUE(IsTooLarge(s)) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("chunks"));
  // One SET_VOXELS with an edit in each of 65,536 chunks: ~1 GiB of bricks.
  std::vector<VoxelEdit> edits;
  for (uint64_t i = 0; i < 65'536; ++i) {
    edits.push_back({{kX + 128 * (i % 256), kY + 128 * (i / 256), kZ}, 5});
  }
  s = db->SetVoxelsAndWait(edits).status;
  EXPECT_TRUE(IsTooLarge(s)) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("dirty-bytes"));
  EXPECT_EQ(db->Stats().dirty_bytes, 0u);
  EXPECT_EQ(Voxel(*db, edits[0].at), 0);
  // The planet-wide fill is one small write.
  const VoxelBox world = db->frame().Bounds();
  ASSERT_OK(db->FillBoxAndWait({world.lo, {world.hi.x, world.hi.y, 1000}}, 9).status);
  EXPECT_EQ(Voxel(*db, {0, 0, 0}), 9);
  EXPECT_EQ(Voxel(*db, {world.hi.x - 1, world.hi.y - 1, 999}), 9);
  EXPECT_EQ(Voxel(*db, {world.hi.x - 1, world.hi.y - 1, 1000}), 0);
}

// kAsync: the journal may not fall behind the acknowledged writes by more
// than its bound (2 x commit_interval + 20 ms): writers wait instead. Here
// the journal is held up for real: a commit that must grow the map waits
// for an open snapshot to end.
TEST(DatabaseContractTest, AsyncWritersWaitWhenTheJournalFallsBehind) {
  TempDir dir;
  DatabaseOptions options;
  options.durability = Durability::kAsync;
  options.commit_interval = std::chrono::milliseconds(1);
  options.store.initial_map_size = size_t{4} << 20;
  options.store.grow_wait = std::chrono::seconds(120);  // the growth waits for the snapshot
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  ASSERT_OK(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{ChunkBoxAt(0).lo, 1}}).status);
  ASSERT_OK(db->Flush());
  std::atomic<uint64_t> max_lag{0};
  std::atomic<bool> stop{false};
  std::thread sampler([&] {
    while (!stop.load()) {
      const DatabaseStats st = db->Stats();
      const uint64_t lag = st.last_seq - std::min(st.last_seq, st.committed_seq);
      uint64_t m = max_lag.load();
      while (lag > m && !max_lag.compare_exchange_weak(m, lag)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  // The writes' voxels, made before the journal is held (slow under ASan).
  std::vector<std::vector<uint8_t>> noise;
  for (uint64_t i = 0; i < 4; ++i) noise.push_back(TwoValueNoise(20, i));
  ASSERT_OK_AND_ASSIGN(auto snapshot, db->Snapshot());
  std::thread writer([&] {
    for (int i = 0; i < 40; ++i) {
      EXPECT_OK(
          db->WriteBoxAndWait(ChunkBoxAt(static_cast<uint32_t>(1 + i % 8)), noise[i % 4]).status);
    }
  });
  // The journal cannot commit past the map's 4 MiB while the snapshot
  // lives: the writer soon waits for it (or the test fails after 60 s).
  const auto deadline = testing::DeadlineIn(std::chrono::seconds(60));
  while (db->Stats().journal_waits == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // it stays waiting
  const uint64_t lag_while_held = db->Stats().last_seq - db->Stats().committed_seq;
  snapshot.reset();
  writer.join();
  stop = true;
  sampler.join();
  const DatabaseStats st = db->Stats();
  EXPECT_GT(st.journal_waits, 0u);
  // Without the bound the writer ran 40 writes ahead of the journal.
  EXPECT_LE(max_lag.load(), 8u);
  EXPECT_LE(lag_while_held, 8u);
  std::printf("journal waits %llu, max lag %llu writes (%llu while the journal was held)\n",
              static_cast<unsigned long long>(st.journal_waits),
              static_cast<unsigned long long>(max_lag.load()),
              static_cast<unsigned long long>(lag_while_held));
}

}  // namespace
}  // namespace voxdb::engine
