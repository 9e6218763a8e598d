// engine::Database: voxel edit throughput (async and durable), durable
// single-edit writes with concurrent writers (group commit), cache-hit
// reads, flush throughput and journal recovery speed.
//
//   build/tests/database_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
//
// Edits go to random voxels of a 3 x 3 x 3-chunk neighbourhood at sea level.
// "sync" figures use Durability::kSync with an fsync per journal commit
// (StoreOptions::sync), so they measure this machine's disk as much as the
// engine. Items/s is voxel edits (or chunk reads, or replayed records) per
// second; bytes/s of BM_Flush is encoded chunk records written.
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/database.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"

namespace voxdb::engine {
namespace {

constexpr ChunkCoord kBase{1000, 2000, 312'499};
constexpr uint64_t kRegionEdge = 3 * kChunkEdge;

DatabaseOptions Options(Durability d) {
  DatabaseOptions o;
  o.durability = d;
  o.store.sync = d == Durability::kSync;
  o.store.initial_map_size = size_t{256} << 20;
  return o;
}

VoxelCoord RandomVoxel(std::mt19937_64& rng) {
  return VoxelCoord{uint64_t{kBase.x} * kChunkEdge + rng() % kRegionEdge,
                    uint64_t{kBase.y} * kChunkEdge + rng() % kRegionEdge,
                    uint64_t{kBase.z} * kChunkEdge + rng() % kRegionEdge};
}

std::vector<std::vector<VoxelEdit>> RandomBatches(size_t batch, int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<VoxelEdit>> batches(static_cast<size_t>(count));
  for (auto& b : batches) {
    b.resize(batch);
    for (auto& e : b) e = VoxelEdit{RandomVoxel(rng), static_cast<uint8_t>(1 + rng() % 12)};
  }
  return batches;
}

// Batches of 1, 64 or 4096 random edits, each waited for. Arg 1: 1 = kAsync, 0 = kSync.
void BM_SetVoxels(benchmark::State& state) {
  const size_t batch = static_cast<size_t>(state.range(0));
  const bool async = state.range(1) != 0;
  testing::TempDir dir;
  auto db = Database::Open(dir.path(), Options(async ? Durability::kAsync : Durability::kSync));
  if (!db.ok()) {
    state.SkipWithError("open failed");
    return;
  }
  const auto batches = RandomBatches(batch, 64, 1);
  // Warm up: load the 27 chunks into the cache.
  (*db)->SetVoxelsAndWait(batches[0]);
  size_t i = 0;
  for (auto _ : state) {
    const WriteResult r = (*db)->SetVoxelsAndWait(batches[i++ % batches.size()]);
    if (!r.status.ok()) state.SkipWithError("write failed");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
  state.SetLabel(std::string(async ? "async" : "sync") + ", batch " + std::to_string(batch));
}
BENCHMARK(BM_SetVoxels)
    ->ArgsProduct({{1, 64, 4096}, {1, 0}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Durable single-edit writes from N threads at once: group commit shares an
// fsync between the writers waiting for it.
std::unique_ptr<testing::TempDir> g_dir;
std::unique_ptr<Database> g_db;

void BM_DurableWriters(benchmark::State& state) {
  if (state.thread_index() == 0) {
    g_dir = std::make_unique<testing::TempDir>();
    auto db = Database::Open(g_dir->path(), Options(Durability::kSync));
    if (db.ok()) g_db = std::move(db).value();
  }
  // (The benchmark's start barrier orders thread 0's setup before the loop.)
  std::mt19937_64 rng(static_cast<uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) {
    if (!g_db) {
      state.SkipWithError("open failed");
      break;
    }
    const VoxelEdit edit{RandomVoxel(rng), static_cast<uint8_t>(1 + rng() % 12)};
    const WriteResult r = g_db->SetVoxelsAndWait(std::span<const VoxelEdit>(&edit, 1));
    if (!r.status.ok()) state.SkipWithError("write failed");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  if (state.thread_index() == 0) {
    if (g_db) {
      const DatabaseStats s = g_db->Stats();
      state.counters["edits_per_commit"] =
          s.journal_commits
              ? static_cast<double>(s.last_seq) / static_cast<double>(s.journal_commits)
              : 0;
    }
    g_db.reset();
    g_dir.reset();
  }
}
BENCHMARK(BM_DurableWriters)
    ->Threads(1)
    ->Threads(16)
    ->Threads(64)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// --- Reads ----------------------------------------------------------------------

const std::vector<uint8_t>& SurfaceRecord() {
  static const std::vector<uint8_t> rec =
      EncodeChunk(Chunk::FromDense(testing::SampleSurfaceChunk(1)), 1, 1);
  return rec;
}

// Cache-hit chunk reads. Arg: 0 = a dirty cached chunk, 1 = a clean stored one.
void BM_GetChunk(benchmark::State& state) {
  const bool clean = state.range(0) != 0;
  testing::TempDir dir;
  DatabaseOptions o = Options(Durability::kAsync);
  o.max_dirty_age = std::chrono::hours(1);
  auto db = Database::Open(dir.path(), o);
  if (!db.ok()) {
    state.SkipWithError("open failed");
    return;
  }
  const ChunkKey key = ChunkKey::FromCoord(kBase);
  if (!(*db)->PutChunkAndWait(key, SurfaceRecord(), std::nullopt).status.ok() ||
      (clean && !(*db)->Flush().ok())) {
    state.SkipWithError("setup failed");
    return;
  }
  ChunkRead::Source source = ChunkRead::Source::kStore;
  size_t bytes = 0;
  for (auto _ : state) {
    const Status s =
        (*db)->GetChunks(std::span<const ChunkKey>(&key, 1), [&](size_t, const ChunkRead& r) {
          bytes = r.record.size();
          source = r.source;
          benchmark::DoNotOptimize(r.record.data());
        });
    if (!s.ok()) state.SkipWithError("read failed");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["record_bytes"] = static_cast<double>(bytes);
  state.SetLabel(std::string(clean ? "clean" : "dirty") + ", served from " +
                 (source == ChunkRead::Source::kStore   ? "store"
                  : source == ChunkRead::Source::kCache ? "cache"
                                                        : "fills"));
}
BENCHMARK(BM_GetChunk)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// One voxel of a cached chunk.
void BM_GetVoxel(benchmark::State& state) {
  testing::TempDir dir;
  auto db = Database::Open(dir.path(), Options(Durability::kAsync));
  if (!db.ok()) {
    state.SkipWithError("open failed");
    return;
  }
  const ChunkKey key = ChunkKey::FromCoord(kBase);
  if (!(*db)->PutChunkAndWait(key, SurfaceRecord(), std::nullopt).status.ok()) {
    state.SkipWithError("setup failed");
    return;
  }
  std::mt19937_64 rng(1);
  std::vector<VoxelCoord> at(1024);
  for (auto& v : at) {
    v = VoxelCoord{uint64_t{kBase.x} * kChunkEdge + rng() % kChunkEdge,
                   uint64_t{kBase.y} * kChunkEdge + rng() % kChunkEdge,
                   uint64_t{kBase.z} * kChunkEdge + rng() % kChunkEdge};
  }
  size_t i = 0;
  uint8_t out = 0;
  for (auto _ : state) {
    if (!(*db)->GetVoxels(std::span<const VoxelCoord>(&at[i++ % at.size()], 1), &out).ok())
      state.SkipWithError("read failed");
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_GetVoxel)->Unit(benchmark::kNanosecond);

// --- Fills ------------------------------------------------------------------------

// Random fills around kBase: mostly small boxes (a voxel to a few chunks), one
// in 64 a wide slab, one in 64 a thin column a few hundred chunks tall.
std::vector<VoxelBox> RandomFills(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  constexpr uint64_t kSpan = 64 * kChunkEdge;  // a 64^3-chunk region
  const VoxelCoord base{uint64_t{kBase.x} * kChunkEdge, uint64_t{kBase.y} * kChunkEdge,
                        uint64_t{kBase.z} * kChunkEdge - kSpan / 2};
  std::vector<VoxelBox> out(n);
  for (VoxelBox& b : out) {
    uint64_t ex = 1 + rng() % 400, ey = 1 + rng() % 400, ez = 1 + rng() % 400;
    const uint64_t kind = rng() % 64;
    if (kind == 0) ex = ey = 4096 + rng() % 8192, ez = 1 + rng() % 256;    // slab
    if (kind == 1) ex = ey = 1 + rng() % 128, ez = 16384 + rng() % 32768;  // column
    b.lo = {base.x + rng() % kSpan, base.y + rng() % kSpan, base.z + rng() % kSpan};
    b.hi = {b.lo.x + ex, b.lo.y + ey, b.lo.z + ez};
  }
  return out;
}

// Opens a database in `dir` holding `n` random fills (untimed setup).
std::unique_ptr<Database> DatabaseWithFills(const std::string& dir, size_t n) {
  DatabaseOptions o = Options(Durability::kAsync);
  o.max_dirty_age = std::chrono::hours(1);
  auto db = Database::Open(dir, o);
  if (!db.ok()) return nullptr;
  std::atomic<size_t> pending{0};
  for (const VoxelBox& b : RandomFills(n, 7)) {
    pending.fetch_add(1);
    (*db)->FillBox(b, 3, [&](const WriteResult&) { pending.fetch_sub(1); });
  }
  while (pending.load() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!(*db)->Flush().ok()) return nullptr;
  return std::move(*db);
}

// FILL_BOX inserts per second with Arg fills already recorded: an insert
// copies O(log n) nodes of the persistent FillSet, not the whole set.
void BM_FillBoxInsert(benchmark::State& state) {
  testing::TempDir dir;
  auto db = DatabaseWithFills(dir.path(), static_cast<size_t>(state.range(0)));
  if (!db) {
    state.SkipWithError("setup failed");
    return;
  }
  const auto boxes = RandomFills(4096, 8);
  size_t i = 0;
  for (auto _ : state) {
    if (!db->FillBoxAndWait(boxes[i++ % boxes.size()], 5).status.ok())
      state.SkipWithError("fill failed");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_FillBoxInsert)
    ->Arg(10'000)
    ->Arg(80'000)
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(500);

// With 20,000 fills, reads of chunks nothing stores (each rasterised from the
// fills). Arg 0: ReadBox of a thin column, 1 x 1 x 4096 chunks (one voxel
// wide) through the fill region; arg 1: GetVoxels of 1024 random voxels there.
void BM_ReadUnstored(benchmark::State& state) {
  testing::TempDir dir;
  auto db = DatabaseWithFills(dir.path(), 20'000);
  if (!db) {
    state.SkipWithError("setup failed");
    return;
  }
  const uint64_t x = uint64_t{kBase.x + 20} * kChunkEdge + 5,
                 y = uint64_t{kBase.y + 30} * kChunkEdge + 7;
  const uint64_t z0 = uint64_t{kBase.z - 2048} * kChunkEdge;
  size_t chunks = 0;
  if (state.range(0) == 0) {
    const VoxelBox column{{x, y, z0}, {x + 1, y + 1, z0 + 4096 * kChunkEdge}};
    std::vector<uint8_t> out(column.volume());
    for (auto _ : state) {
      if (!db->ReadBox(column, out.data()).ok()) state.SkipWithError("read failed");
      benchmark::DoNotOptimize(out.data());
    }
    chunks = 4096;
    state.SetLabel("thin column of 4096 chunks");
  } else {
    std::mt19937_64 rng(3);
    std::vector<VoxelCoord> at(1024);
    for (auto& v : at) {
      v = {uint64_t{kBase.x} * kChunkEdge + rng() % (64 * kChunkEdge),
           uint64_t{kBase.y} * kChunkEdge + rng() % (64 * kChunkEdge),
           uint64_t{kBase.z - 32} * kChunkEdge + rng() % (64 * kChunkEdge)};
    }
    std::vector<uint8_t> out(at.size());
    for (auto _ : state) {
      if (!db->GetVoxels(at, out.data()).ok()) state.SkipWithError("read failed");
      benchmark::DoNotOptimize(out.data());
    }
    chunks = at.size();
    state.SetLabel("1024 random voxels");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * chunks));
}
BENCHMARK(BM_ReadUnstored)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// --- Flush ------------------------------------------------------------------------

// Records of generated terrain surface chunks (cached across benchmarks).
const std::vector<std::pair<ChunkKey, std::vector<uint8_t>>>& TerrainRecords() {
  static const auto records = [] {
    std::vector<std::pair<ChunkKey, std::vector<uint8_t>>> out;
    testing::TerrainGenerator gen;
    const auto c = testing::SampleSurfaceChunkCoords(1);
    for (uint32_t dy = 0; dy < 4 && out.size() < 16; ++dy) {
      for (uint32_t dx = 0; dx < 4 && out.size() < 16; ++dx) {
        const auto [lo, hi] = gen.VariedChunkZRange(c[0] + dx, c[1] + dy);
        for (uint32_t cz = lo; cz <= hi && out.size() < 16; ++cz) {
          if (gen.Classify(c[0] + dx, c[1] + dy, cz) !=
              testing::TerrainGenerator::ChunkKind::kSurface)
            continue;
          Chunk chunk = Chunk::FromDense(gen.Chunk(c[0] + dx, c[1] + dy, cz));
          out.emplace_back(ChunkKey::FromCoord({c[0] + dx, c[1] + dy, cz}),
                           EncodeChunk(chunk, 1, 1));
        }
      }
    }
    return out;
  }();
  return records;
}

// Dirty 16 surface chunks (PutChunk, untimed), then time Flush(). Arg: store sync.
void BM_Flush(benchmark::State& state) {
  const bool sync = state.range(0) != 0;
  testing::TempDir dir;
  DatabaseOptions o = Options(Durability::kAsync);
  o.store.sync = sync;
  o.max_dirty_age = std::chrono::hours(1);
  auto db = Database::Open(dir.path(), o);
  if (!db.ok()) {
    state.SkipWithError("open failed");
    return;
  }
  const auto& records = TerrainRecords();
  uint64_t flushed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (const auto& [key, rec] : records) {
      if (!(*db)->PutChunkAndWait(key, rec, std::nullopt).status.ok())
        state.SkipWithError("put failed");
    }
    const uint64_t before = (*db)->Stats().flushed_bytes;
    state.ResumeTiming();
    if (!(*db)->Flush().ok()) state.SkipWithError("flush failed");
    state.PauseTiming();
    flushed += (*db)->Stats().flushed_bytes - before;
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(flushed));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * records.size()));
  state.SetLabel(std::to_string(records.size()) + " surface chunks, " +
                 (sync ? "fsync" : "no fsync"));
}
BENCHMARK(BM_Flush)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

// --- Recovery ----------------------------------------------------------------------

constexpr int kRecoveryRecords = 100'000;

// A child process writes kRecoveryRecords single-edit SetVoxels (kAsync,
// nothing flushes), waits until the journal is committed and SIGKILLs
// itself. Returns false on failure.
bool MakeCrashedDatabase(const std::string& dir) {
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    DatabaseOptions o = Options(Durability::kAsync);
    o.max_dirty_age = std::chrono::hours(1);
    o.flush_high_water = 1.0;
    auto db = Database::Open(dir, o);
    if (!db.ok()) _exit(2);
    std::mt19937_64 rng(1);
    for (int i = 0; i < kRecoveryRecords; ++i) {
      const VoxelEdit edit{RandomVoxel(rng), static_cast<uint8_t>(1 + rng() % 12)};
      (*db)->SetVoxels(std::span<const VoxelEdit>(&edit, 1), [](const WriteResult& r) {
        if (!r.status.ok()) _exit(3);
      });
    }
    for (int tries = 0; tries < 1000; ++tries) {
      const DatabaseStats s = (*db)->Stats();
      if (s.committed_seq >= s.last_seq) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    raise(SIGKILL);
    _exit(4);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return false;
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

void CopyDir(const std::string& from, const std::string& to) {
  std::filesystem::remove_all(to);
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
}

// Database::Open replaying the crashed journal (on a fresh copy each time).
void BM_Recovery(benchmark::State& state) {
  testing::TempDir dir;
  const std::string crashed = dir.Sub("crashed");
  if (!MakeCrashedDatabase(crashed)) {
    state.SkipWithError("could not make the crashed database");
    return;
  }
  const DatabaseOptions o = Options(Durability::kAsync);
  uint64_t replayed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    CopyDir(crashed, dir.Sub("copy"));
    state.ResumeTiming();
    auto db = Database::Open(dir.Sub("copy"), o);
    state.PauseTiming();
    if (!db.ok()) {
      state.SkipWithError("open failed");
      break;
    }
    replayed += (*db)->Stats().replayed_records;
    db->reset();  // flushes on close: untimed
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<int64_t>(replayed));
  state.counters["replayed"] =
      benchmark::Counter(static_cast<double>(replayed) /
                         static_cast<double>(std::max<int64_t>(1, state.iterations())));
  state.SetLabel("100,000 single-edit records; items/s = records replayed per second");
}
BENCHMARK(BM_Recovery)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace
}  // namespace voxdb::engine

BENCHMARK_MAIN();
