// Databases sharing a NodeResources: one cache budget and one dirty budget
// for all of them (engine/node_resources.h). Real Databases in temporary
// directories.
#include "engine/node_resources.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
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

using testing::kCx;
using testing::kCy;
using testing::kCz;
using testing::kX;
using testing::kY;
using testing::kZ;
using testing::TempDir;

constexpr size_t kMiB = size_t{1} << 20;
// The most one chunk holds in memory (dense voxels, their bricks and the
// entry): a reader's insert may pass the budget by one chunk before it
// evicts.
constexpr size_t kOneChunk = kChunkVoxels + 2 * sizeof(Brick) * kBricksPerChunk + 4096;

VoxelBox ChunkBox(uint32_t i) {
  return VoxelBox{{kX + 128 * i, kY, kZ}, {kX + 128 * i + 128, kY + 128, kZ + 128}};
}

// The voxels of chunk i, as the database reads them.
std::vector<uint8_t> ReadChunk(Database& db, uint32_t i) {
  std::vector<uint8_t> dense;
  const ChunkKey key = ChunkKey::FromCoord(
      {static_cast<uint32_t>(kCx + i), static_cast<uint32_t>(kCy), static_cast<uint32_t>(kCz)});
  EXPECT_OK(db.GetChunks({&key, 1}, [&](size_t, const ChunkRead& read) {
    EXPECT_OK(read.status);
    if (!read.status.ok()) return;
    dense.resize(kChunkVoxels);
    EXPECT_OK(DecodeChunkToDense(read.record, dense.data()));
  }));
  return dense;
}

std::vector<uint8_t> ChunkData(uint32_t db, uint32_t i) {
  return (db + i) % 2 ? testing::NoiseChunk(db * 100 + i)
                      : testing::SampleSurfaceChunk(db * 100 + i);
}

DatabaseOptions SharedOptions(std::shared_ptr<NodeResources> node) {
  DatabaseOptions o = testing::TestOptions();
  o.node = std::move(node);
  return o;
}

// Records the most the node's caches held, sampled every millisecond.
class CacheSampler {
 public:
  explicit CacheSampler(const NodeResources* node)
      : thread_([this, node] {
          while (!stop_.load()) {
            max_ = std::max(max_.load(), node->cache_bytes());
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
        }) {}
  ~CacheSampler() { Stop(); }
  int64_t Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return max_.load();
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> max_{0};
  std::thread thread_;
};

// An observer that holds the flush transactions of its database until
// opened: dirty chunks stay dirty meanwhile.
class FlushGate : public ChunkObserver {
 public:
  void OnFlush(std::span<const FlushedChunk>, WriteBatch*) override {
    std::unique_lock l(mu_);
    ++waiting_;
    cv_.wait(l, [&] { return open_; });
  }
  void Open() {
    std::lock_guard l(mu_);
    open_ = true;
    cv_.notify_all();
  }
  int waiting() {
    std::lock_guard l(mu_);
    return waiting_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int waiting_ = 0;
};

TEST(NodeResourcesTest, CreateRefusesBadBudgets) {
  NodeResourcesOptions n;
  n.cache_bytes = kMiB;
  n.dirty_bytes = 2 * kMiB;
  EXPECT_TRUE(absl::IsInvalidArgument(NodeResources::Create(n).status()));
  n.dirty_bytes = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(NodeResources::Create(n).status()));
  n.dirty_bytes = kMiB / 2;
  n.flush_high_water = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(NodeResources::Create(n).status()));
  n.flush_high_water = 1.5;
  EXPECT_TRUE(absl::IsInvalidArgument(NodeResources::Create(n).status()));
  n.flush_high_water = 1;
  ASSERT_OK_AND_ASSIGN(auto node, NodeResources::Create(n));
  EXPECT_EQ(node->cache_budget(), kMiB);
  EXPECT_EQ(node->dirty_budget(), kMiB / 2);
}

TEST(NodeResourcesTest, EightDatabasesStayWithinOneCacheBudget) {
  NodeResourcesOptions n;
  n.cache_bytes = 12 * kMiB;
  n.dirty_bytes = 6 * kMiB;
  ASSERT_OK_AND_ASSIGN(auto node, NodeResources::Create(n));
  constexpr uint32_t kDbs = 8, kChunks = 6;
  std::vector<std::unique_ptr<TempDir>> dirs;
  std::vector<std::unique_ptr<Database>> dbs;
  for (uint32_t d = 0; d < kDbs; ++d) {
    dirs.push_back(std::make_unique<TempDir>());
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dirs.back()->path(), SharedOptions(node)));
    dbs.push_back(std::move(db));
  }
  EXPECT_EQ(node->caches(), kDbs);
  EXPECT_EQ(node->flushers(), kDbs);
  CacheSampler sampler(node.get());
  // Each database its own writer, then reader: 8 × 6 chunks of up to 2 MiB
  // each, four times the budget.
  std::vector<std::thread> threads;
  for (uint32_t d = 0; d < kDbs; ++d) {
    threads.emplace_back([&, d] {
      Database& db = *dbs[d];
      for (uint32_t i = 0; i < kChunks; ++i) {
        ASSERT_OK(db.WriteBoxAndWait(ChunkBox(i), ChunkData(d, i)).status);
      }
      for (int round = 0; round < 2; ++round) {
        for (uint32_t i = 0; i < kChunks; ++i) EXPECT_EQ(ReadChunk(db, i), ChunkData(d, i));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const int64_t most = sampler.Stop();
  // Dirty chunks are never evicted, but they stay within the dirty budget;
  // beyond the budget only what the threads were inserting at that moment.
  EXPECT_LE(most, static_cast<int64_t>(n.cache_bytes + kDbs * kOneChunk));
  EXPECT_LE(node->cache_bytes(), static_cast<int64_t>(n.cache_bytes));
  // The node's totals are the sum of the databases' own figures.
  int64_t cache = 0, dirty = 0;
  uint64_t evictions = 0;
  for (auto& db : dbs) {
    const DatabaseStats s = db->Stats();
    cache += static_cast<int64_t>(s.cache_bytes);
    dirty += static_cast<int64_t>(s.dirty_bytes);
    evictions += s.cache_evictions;
  }
  EXPECT_EQ(cache, node->cache_bytes());
  EXPECT_EQ(dirty, node->dirty_bytes());
  EXPECT_GT(evictions, 0u);
  // Closing gives the memory back.
  dbs.clear();
  EXPECT_EQ(node->cache_bytes(), 0);
  EXPECT_EQ(node->dirty_bytes(), 0);
  EXPECT_EQ(node->caches(), 0u);
  EXPECT_EQ(node->flushers(), 0u);
}

TEST(NodeResourcesTest, AColdDatabaseGivesUpItsCacheToAHotOne) {
  NodeResourcesOptions n;
  n.cache_bytes = 10 * kMiB;
  n.dirty_bytes = 5 * kMiB;
  n.idle_after = std::chrono::milliseconds(100);
  ASSERT_OK_AND_ASSIGN(auto node, NodeResources::Create(n));
  TempDir cold_dir, hot_dir;
  ASSERT_OK_AND_ASSIGN(auto cold, Database::Open(cold_dir.path(), SharedOptions(node)));
  ASSERT_OK_AND_ASSIGN(auto hot, Database::Open(hot_dir.path(), SharedOptions(node)));
  // The cold database fills most of the budget, then goes quiet.
  for (uint32_t i = 0; i < 4; ++i) {
    ASSERT_OK(cold->WriteBoxAndWait(ChunkBox(i), ChunkData(0, i)).status);
  }
  ASSERT_OK(cold->Flush());
  for (uint32_t i = 0; i < 4; ++i) EXPECT_EQ(ReadChunk(*cold, i), ChunkData(0, i));
  const uint64_t cold_before = cold->Stats().cache_bytes;
  ASSERT_GT(cold_before, 3 * kMiB);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // The hot one reads a working set larger than the budget, over and over.
  for (uint32_t i = 0; i < 12; ++i) {
    ASSERT_OK(hot->WriteBoxAndWait(ChunkBox(i), ChunkData(1, i)).status);
  }
  ASSERT_OK(hot->Flush());
  for (int round = 0; round < 3; ++round) {
    for (uint32_t i = 0; i < 12; ++i) EXPECT_EQ(ReadChunk(*hot, i), ChunkData(1, i));
  }
  // The cold database's chunks went first: it holds less than a chunk now.
  EXPECT_LT(cold->Stats().cache_bytes, kOneChunk);
  EXPECT_GT(cold->Stats().cache_evictions, 0u);
  EXPECT_GT(node->cross_evicted_bytes(), 3 * kMiB);
  EXPECT_LE(node->cache_bytes(), static_cast<int64_t>(n.cache_bytes));
  // Its data reads back from the store.
  for (uint32_t i = 0; i < 4; ++i) EXPECT_EQ(ReadChunk(*cold, i), ChunkData(0, i));
}

TEST(NodeResourcesTest, TwoBusyDatabasesShareTheCache) {
  // Both in use: neither is squeezed out, each keeps about its half.
  NodeResourcesOptions n;
  n.cache_bytes = 10 * kMiB;
  n.dirty_bytes = 5 * kMiB;
  n.idle_after = std::chrono::seconds(60);
  ASSERT_OK_AND_ASSIGN(auto node, NodeResources::Create(n));
  TempDir a_dir, b_dir;
  ASSERT_OK_AND_ASSIGN(auto a, Database::Open(a_dir.path(), SharedOptions(node)));
  ASSERT_OK_AND_ASSIGN(auto b, Database::Open(b_dir.path(), SharedOptions(node)));
  for (uint32_t i = 0; i < 8; ++i) {
    ASSERT_OK(a->WriteBoxAndWait(ChunkBox(i), ChunkData(0, i)).status);
    ASSERT_OK(b->WriteBoxAndWait(ChunkBox(i), ChunkData(1, i)).status);
  }
  ASSERT_OK(a->Flush());
  ASSERT_OK(b->Flush());
  for (int round = 0; round < 2; ++round) {
    for (uint32_t i = 0; i < 8; ++i) {
      EXPECT_EQ(ReadChunk(*a, i), ChunkData(0, i));
      EXPECT_EQ(ReadChunk(*b, i), ChunkData(1, i));
    }
  }
  const uint64_t half = n.cache_bytes / 2;
  EXPECT_LE(a->Stats().cache_bytes, half + kOneChunk);
  EXPECT_LE(b->Stats().cache_bytes, half + kOneChunk);
  EXPECT_GT(a->Stats().cache_bytes, half - 2 * kOneChunk);
  EXPECT_GT(b->Stats().cache_bytes, half - 2 * kOneChunk);
}

TEST(NodeResourcesTest, DirtyBackPressureSpansDatabases) {
  NodeResourcesOptions n;
  n.cache_bytes = 64 * kMiB;
  n.dirty_bytes = 6 * kMiB;
  n.flush_high_water = 1;  // flush only when writers wait
  ASSERT_OK_AND_ASSIGN(auto node, NodeResources::Create(n));
  TempDir a_dir, b_dir, c_dir;
  FlushGate gate;
  DatabaseOptions bo = SharedOptions(node);
  bo.observers = {&gate};
  bo.busy_timeout = std::chrono::milliseconds(300);
  ASSERT_OK_AND_ASSIGN(auto b, Database::Open(b_dir.path(), bo));
  DatabaseOptions ao = SharedOptions(node);
  ao.busy_timeout = std::chrono::seconds(60);
  ASSERT_OK_AND_ASSIGN(auto a, Database::Open(a_dir.path(), ao));
  DatabaseOptions co = SharedOptions(node);
  co.busy_timeout = std::chrono::milliseconds(200);
  ASSERT_OK_AND_ASSIGN(auto c, Database::Open(c_dir.path(), co));
  // Whatever happens, the gate opens before the databases close.
  struct Opener {
    FlushGate* gate;
    ~Opener() { gate->Open(); }
  } opener{&gate};

  // B fills the node's dirty budget; its flush is held at the gate, so it
  // ends up refused itself.
  uint32_t b_written = 0;
  for (; b_written < 32; ++b_written) {
    const WriteResult r = b->WriteBoxAndWait(ChunkBox(b_written), ChunkData(1, b_written));
    if (!r.status.ok()) {
      ASSERT_TRUE(IsBusy(r.status)) << r.status;
      break;
    }
  }
  ASSERT_LT(b_written, 32u);
  ASSERT_GT(b_written, 0u);
  EXPECT_GT(node->dirty_bytes(), static_cast<int64_t>(n.dirty_bytes / 2));
  EXPECT_EQ(a->Stats().dirty_bytes, 0u);
  EXPECT_TRUE(testing::WaitUntil([&] { return gate.waiting() > 0; }, std::chrono::seconds(10)));

  // C has nothing dirty, yet its write waits for B's room and fails BUSY.
  const WriteResult refused = c->WriteBoxAndWait(ChunkBox(0), ChunkData(2, 0));
  EXPECT_TRUE(IsBusy(refused.status)) << refused.status;
  EXPECT_EQ(c->Stats().busy_rejections, 1u);
  EXPECT_EQ(c->Stats().dirty_bytes, 0u);
  uint8_t v = 0xEE;
  const VoxelCoord at{kX + 1, kY + 2, kZ + 3};
  ASSERT_OK(c->GetVoxels({&at, 1}, &v));
  EXPECT_EQ(v, 0);  // the refused write is not visible

  // A's write waits...
  std::atomic<bool> a_done{false};
  WriteResult a_result;
  std::thread writer([&] {
    a_result = a->WriteBoxAndWait(ChunkBox(0), ChunkData(0, 0));
    a_done = true;
  });
  EXPECT_TRUE(
      testing::WaitUntil([&] { return a->Stats().write_waits > 0; }, std::chrono::seconds(10)));
  EXPECT_TRUE(a->WritesWouldWait());
  EXPECT_EQ(node->waiting_writers(), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(a_done.load());
  // ...until B's flush makes room.
  gate.Open();
  writer.join();
  ASSERT_OK(a_result.status);
  EXPECT_GT(b->Stats().flushes, 0u);
  EXPECT_EQ(a->Stats().busy_rejections, 0u);

  // Everything written reads back.
  EXPECT_EQ(ReadChunk(*a, 0), ChunkData(0, 0));
  for (uint32_t i = 0; i < b_written; ++i) EXPECT_EQ(ReadChunk(*b, i), ChunkData(1, i));
  ASSERT_OK(c->WriteBoxAndWait(ChunkBox(0), ChunkData(2, 0)).status);
  EXPECT_EQ(ReadChunk(*c, 0), ChunkData(2, 0));
}

TEST(NodeResourcesTest, FlushersStartAtTheNodesHighWaterMark) {
  // Each database alone stays far below the mark; together they pass it.
  NodeResourcesOptions n;
  n.cache_bytes = 64 * kMiB;
  n.dirty_bytes = 16 * kMiB;
  n.flush_high_water = 0.25;  // 4 MiB
  ASSERT_OK_AND_ASSIGN(auto node, NodeResources::Create(n));
  constexpr uint32_t kDbs = 4;
  std::vector<std::unique_ptr<TempDir>> dirs;
  std::vector<std::unique_ptr<Database>> dbs;
  for (uint32_t d = 0; d < kDbs; ++d) {
    dirs.push_back(std::make_unique<TempDir>());
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dirs.back()->path(), SharedOptions(node)));
    dbs.push_back(std::move(db));
  }
  for (uint32_t d = 0; d < kDbs; ++d) {
    for (uint32_t i = 0; i < 2; ++i) {
      ASSERT_OK(dbs[d]->WriteBoxAndWait(ChunkBox(i), ChunkData(d, i)).status);
    }
  }
  EXPECT_TRUE(testing::WaitUntil([&] { return node->dirty_bytes() <= node->high_water(); },
                                 std::chrono::seconds(20)));
  uint64_t flushes = 0;
  for (auto& db : dbs) flushes += db->Stats().flushes;
  EXPECT_GT(flushes, 0u);
  for (uint32_t d = 0; d < kDbs; ++d) {
    for (uint32_t i = 0; i < 2; ++i) EXPECT_EQ(ReadChunk(*dbs[d], i), ChunkData(d, i));
  }
}

// Threads of this process now.
int CountThreads() {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) n += e.exists();
  return n;
}

TEST(NodeResourcesTest, TwoHundredDatabasesRunOnAFewThreads) {
  TempDir root;
  // Without shared threads a Database has three: committer, acker, flusher.
  {
    const int before = CountThreads();
    std::vector<std::unique_ptr<Database>> own;
    for (int d = 0; d < 4; ++d) {
      ASSERT_OK_AND_ASSIGN(
          auto db, Database::Open(root.Sub("own" + std::to_string(d)), testing::TestOptions()));
      own.push_back(std::move(db));
    }
    EXPECT_EQ(CountThreads(), before + 12);
  }
  NodeResourcesOptions n;
  n.cache_bytes = 256 * kMiB;
  n.dirty_bytes = 64 * kMiB;
  n.commit_threads = 2;
  n.flush_threads = 2;
  const int before_node = CountThreads();
  ASSERT_OK_AND_ASSIGN(auto node, NodeResources::Create(n));
  const int before = CountThreads();
  EXPECT_EQ(before, before_node + 4);
  constexpr int kDbs = 200;
  std::vector<std::unique_ptr<Database>> dbs;
  for (int d = 0; d < kDbs; ++d) {
    DatabaseOptions o = SharedOptions(node);
    // Half of them acknowledge before the commit (the gathering timer).
    if (d % 2) o.durability = Durability::kAsync;
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(root.Sub("p" + std::to_string(d)), o));
    dbs.push_back(std::move(db));
  }
  EXPECT_EQ(CountThreads(), before);
  EXPECT_EQ(node->flushers(), static_cast<size_t>(kDbs));
  // Writes and reads on all of them at once, from four threads.
  auto at = [](int d, int k) {
    return VoxelCoord{kX + static_cast<uint64_t>(d), kY + static_cast<uint64_t>(k), kZ};
  };
  auto material = [](int d, int k) { return static_cast<uint8_t>(1 + (d * 7 + k) % 250); };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 3; ++k) {
        for (int d = t; d < kDbs; d += 4) {
          const WriteResult r =
              dbs[d]->SetVoxelsAndWait(std::vector<VoxelEdit>{{at(d, k), material(d, k)}});
          ASSERT_OK(r.status);
          uint8_t v = 0;
          const VoxelCoord c = at(d, k);
          ASSERT_OK(dbs[d]->GetVoxels({&c, 1}, &v));
          EXPECT_EQ(v, material(d, k));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(CountThreads(), before);
  // Every write commits, kAsync ones within their interval.
  for (int d = 0; d < kDbs; ++d) {
    EXPECT_TRUE(testing::WaitUntil(
        [&] { return dbs[d]->Stats().committed_seq >= dbs[d]->Stats().last_seq; },
        std::chrono::seconds(10)))
        << d;
  }
  for (int d = 0; d < kDbs; d += 2) ASSERT_OK(dbs[d]->Flush());
  EXPECT_GT(dbs[0]->Stats().flushes, 0u);
  // Closing is clean: everything is written back, no thread is left over.
  dbs.clear();
  EXPECT_EQ(CountThreads(), before);
  EXPECT_EQ(node->flushers(), 0u);
  EXPECT_EQ(node->caches(), 0u);
  EXPECT_EQ(node->dirty_bytes(), 0);
  // What was written is there after reopening.
  for (int d : {0, 1, 198, 199}) {
    ASSERT_OK_AND_ASSIGN(auto db,
                         Database::Open(root.Sub("p" + std::to_string(d)), SharedOptions(node)));
    EXPECT_EQ(db->Stats().replayed_records, 0u);  // the close flushed it all
    for (int k = 0; k < 3; ++k) {
      uint8_t v = 0;
      const VoxelCoord c = at(d, k);
      ASSERT_OK(db->GetVoxels({&c, 1}, &v));
      EXPECT_EQ(v, material(d, k)) << d << " " << k;
    }
  }
}

TEST(NodeResourcesTest, AsyncCommitsOnTheSharedThreadsKeepTheirInterval) {
  NodeResourcesOptions n;
  n.commit_threads = 1;
  n.flush_threads = 1;
  ASSERT_OK_AND_ASSIGN(auto node, NodeResources::Create(n));
  TempDir dir;
  DatabaseOptions o = SharedOptions(node);
  o.durability = Durability::kAsync;
  o.commit_interval = std::chrono::milliseconds(100);
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), o));
  const WriteResult w = db->SetVoxelsAndWait(std::vector<VoxelEdit>{{{kX, kY, kZ}, 4}});
  ASSERT_OK(w.status);
  // Acknowledged, not yet committed: the commit waits for the interval.
  EXPECT_LT(db->Stats().committed_seq, w.version);
  EXPECT_TRUE(testing::WaitUntil([&] { return db->Stats().committed_seq >= w.version; },
                                 std::chrono::seconds(5)));
  // Flush asks for the commit now rather than at the end of the interval.
  const WriteResult w2 = db->SetVoxelsAndWait(std::vector<VoxelEdit>{{{kX, kY, kZ}, 5}});
  ASSERT_OK(w2.status);
  ASSERT_OK(db->Flush());
  // What Flush waits for: durable_seq (committed_seq, a figure, moves just
  // after it).
  EXPECT_GE(db->Stats().durable_seq, w2.version);
  EXPECT_EQ(db->Stats().dirty_chunks, 0u);
  uint8_t v = 0;
  const VoxelCoord c{kX, kY, kZ};
  ASSERT_OK(db->GetVoxels({&c, 1}, &v));
  EXPECT_EQ(v, 5);
}

TEST(NodeResourcesTest, CreateRefusesOnePoolWithoutTheOther) {
  NodeResourcesOptions n;
  n.commit_threads = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(NodeResources::Create(n).status()));
  n.flush_threads = 0;
  ASSERT_OK_AND_ASSIGN(auto node, NodeResources::Create(n));
  EXPECT_EQ(node->commit_pool(), nullptr);
  // Then each Database runs its own threads, on the node's budgets.
  TempDir dir;
  const int before = CountThreads();
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), SharedOptions(node)));
  EXPECT_EQ(CountThreads(), before + 3);
  ASSERT_OK(db->SetVoxelsAndWait(std::vector<VoxelEdit>{{{kX, kY, kZ}, 9}}).status);
  EXPECT_GT(node->dirty_bytes(), 0);
}

}  // namespace
}  // namespace voxdb::engine
