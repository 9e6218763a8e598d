// ChunkStore put/get with ~60 KB values (a compressed surface chunk of the
// source design's zstd format), in Morton and in random key order.
//
//   build/tests/store_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
//
// Puts rewrite stored chunks in write batches of 64 (as the flusher writes),
// with sync off so the figure is the engine's, not the disk's fsync latency; gets read a
// zero-copy view and touch every byte. Items/s is operations per second.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/chunk_store.h"
#include "tests/testing/temp_dir.h"

namespace voxdb::engine {
namespace {

constexpr size_t kValueSize = 60 * 1024;
constexpr size_t kBatch = 64;

std::vector<ChunkKey> Keys(bool random_order) {
  // A 16 x 16 x 16 block of chunks: Morton order walks it as an octree.
  std::vector<ChunkKey> keys;
  for (uint32_t z = 0; z < 16; ++z)
    for (uint32_t y = 0; y < 16; ++y)
      for (uint32_t x = 0; x < 16; ++x)
        keys.push_back(ChunkKey::FromCoord({x + 5000, y + 7000, z + 312'000}));
  std::sort(keys.begin(), keys.end());
  if (random_order) std::shuffle(keys.begin(), keys.end(), std::mt19937(1));
  return keys;
}

std::vector<uint8_t> Value(uint32_t i) {
  std::vector<uint8_t> v(kValueSize);
  std::mt19937 rng(i);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

StoreOptions BenchOptions() {
  StoreOptions o;
  o.sync = false;
  o.initial_map_size = size_t{1} << 30;
  return o;
}

// Steady state: the store holds the 4096 chunks; every iteration rewrites all
// of them (as the flusher rewrites dirty chunks), so LMDB reuses freed pages
// instead of growing a fresh file each time.
void BM_Put(benchmark::State& state) {
  testing::TempDir dir;
  auto store = ChunkStore::Open(dir.path(), BenchOptions());
  if (!store.ok()) {
    state.SkipWithError("open failed");
    return;
  }
  const std::vector<ChunkKey> keys = Keys(state.range(0) != 0);
  const std::vector<uint8_t> value = Value(1);
  const size_t batch_size = static_cast<size_t>(state.range(1));
  auto put_all = [&] {
    for (size_t i = 0; i < keys.size(); i += batch_size) {
      WriteBatch batch;
      for (size_t j = i; j < std::min(keys.size(), i + batch_size); ++j)
        batch.PutChunk(keys[j], value);
      if (!(*store)->Write(batch).ok()) state.SkipWithError("write failed");
    }
  };
  put_all();  // first insert, untimed
  for (auto _ : state) put_all();
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * keys.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * keys.size() * kValueSize));
  state.SetLabel(std::string(state.range(0) ? "random order" : "morton order") + ", batch " +
                 std::to_string(batch_size));
}

void BM_Get(benchmark::State& state) {
  testing::TempDir dir;
  auto store = ChunkStore::Open(dir.path(), BenchOptions());
  if (!store.ok()) {
    state.SkipWithError("open failed");
    return;
  }
  const std::vector<ChunkKey> sorted = Keys(false);
  for (size_t i = 0; i < sorted.size(); i += kBatch) {
    WriteBatch batch;
    for (size_t j = i; j < std::min(sorted.size(), i + kBatch); ++j)
      batch.PutChunk(sorted[j], Value(static_cast<uint32_t>(j)));
    if (!(*store)->Write(batch).ok()) state.SkipWithError("write failed");
  }
  const std::vector<ChunkKey> keys = Keys(state.range(0) != 0);
  for (auto _ : state) {
    auto snap = (*store)->BeginRead();
    uint64_t sum = 0;
    for (const ChunkKey& k : keys) {
      auto v = (*snap)->GetChunk(k);
      if (!v.ok()) state.SkipWithError("get failed");
      for (size_t off = 0; off < v->size(); off += 64) sum += (*v)[off];  // touch every line
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * keys.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * keys.size() * kValueSize));
  state.SetLabel(state.range(0) ? "random order" : "morton order");
}

BENCHMARK(BM_Put)
    ->Args({0, kBatch})
    ->Args({1, kBatch})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({0, 1024})
    ->Args({1, 1024})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Get)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace voxdb::engine

BENCHMARK_MAIN();
