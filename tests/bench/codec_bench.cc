// Chunk codec next to plain zstd of the raw 2 MiB, on the terrain generator's
// surface chunk, all-air, all-stone and random noise.
//
//   build/tests/codec_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
//
// Counters: stored_bytes (record or zstd frame size), ratio (raw / stored),
// mem_bytes (Chunk::MemoryUsage, ours only). Throughput is in voxels (bytes
// of the dense chunk) per second, for encode and for decode to a dense array.
#include <benchmark/benchmark.h>
#include <zstd.h>

#include <vector>

#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "tests/testing/terrain.h"

namespace voxdb {
namespace {

using engine::Chunk;
using engine::kChunkVoxels;

enum Kind { kSurface, kAir, kStone, kNoise };

const std::vector<uint8_t>& Input(int kind) {
  static const std::vector<uint8_t> inputs[] = {
      testing::SampleSurfaceChunk(1), testing::UniformChunk(testing::kAir),
      testing::UniformChunk(testing::kStone), testing::NoiseChunk(1)};
  return inputs[kind];
}

const char* KindName(int kind) {
  static const char* names[] = {"surface", "air", "stone", "noise"};
  return names[kind];
}

void SetCounters(benchmark::State& state, size_t stored) {
  state.counters["stored_bytes"] = static_cast<double>(stored);
  state.counters["ratio"] = static_cast<double>(kChunkVoxels) / static_cast<double>(stored);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChunkVoxels));
  state.SetLabel(KindName(static_cast<int>(state.range(0))));
}

// Ours: dense -> Chunk (bricks) -> record.
void BM_VoxdbEncode(benchmark::State& state) {
  const std::vector<uint8_t>& dense = Input(static_cast<int>(state.range(0)));
  size_t stored = 0;
  for (auto _ : state) {
    const Chunk chunk = Chunk::FromDense(dense);
    std::vector<uint8_t> rec = engine::EncodeChunk(chunk, 1, 1);
    stored = rec.size();
    benchmark::DoNotOptimize(rec.data());
  }
  SetCounters(state, stored);
  state.counters["mem_bytes"] = static_cast<double>(Chunk::FromDense(dense).MemoryUsage());
}

// Ours, from a chunk already in memory (the flusher's path).
void BM_VoxdbEncodeFromChunk(benchmark::State& state) {
  const Chunk chunk = Chunk::FromDense(Input(static_cast<int>(state.range(0))));
  size_t stored = 0;
  for (auto _ : state) {
    std::vector<uint8_t> rec = engine::EncodeChunk(chunk, 1, 1);
    stored = rec.size();
    benchmark::DoNotOptimize(rec.data());
  }
  SetCounters(state, stored);
}

// Ours at other zstd levels of the brick stream (the default is 3).
void BM_VoxdbEncodeLevel(benchmark::State& state) {
  const std::vector<uint8_t>& dense = Input(static_cast<int>(state.range(0)));
  engine::CodecOptions options;
  options.zstd_level = static_cast<int>(state.range(1));
  size_t stored = 0;
  for (auto _ : state) {
    const Chunk chunk = Chunk::FromDense(dense);
    std::vector<uint8_t> rec = engine::EncodeChunk(chunk, 1, 1, options);
    stored = rec.size();
    benchmark::DoNotOptimize(rec.data());
  }
  SetCounters(state, stored);
  state.SetLabel(std::string(KindName(static_cast<int>(state.range(0)))) + " level " +
                 std::to_string(options.zstd_level));
}

void BM_VoxdbDecodeToDense(benchmark::State& state) {
  const std::vector<uint8_t> rec =
      engine::EncodeChunk(Chunk::FromDense(Input(static_cast<int>(state.range(0)))), 1, 1);
  std::vector<uint8_t> out(kChunkVoxels);
  for (auto _ : state) {
    if (!engine::DecodeChunkToDense(rec, out.data()).ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(out.data());
  }
  SetCounters(state, rec.size());
}

void BM_ZstdEncode(benchmark::State& state) {
  const std::vector<uint8_t>& dense = Input(static_cast<int>(state.range(0)));
  const int level = static_cast<int>(state.range(1));
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  std::vector<uint8_t> out(ZSTD_compressBound(dense.size()));
  size_t n = 0;
  for (auto _ : state) {
    n = ZSTD_compressCCtx(cctx, out.data(), out.size(), dense.data(), dense.size(), level);
    benchmark::DoNotOptimize(out.data());
  }
  ZSTD_freeCCtx(cctx);
  SetCounters(state, n);
  state.SetLabel(std::string(KindName(static_cast<int>(state.range(0)))) + " zstd-" +
                 std::to_string(level));
}

void BM_ZstdDecode(benchmark::State& state) {
  const std::vector<uint8_t>& dense = Input(static_cast<int>(state.range(0)));
  const int level = static_cast<int>(state.range(1));
  std::vector<uint8_t> frame(ZSTD_compressBound(dense.size()));
  frame.resize(ZSTD_compress(frame.data(), frame.size(), dense.data(), dense.size(), level));
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::vector<uint8_t> out(kChunkVoxels);
  for (auto _ : state) {
    ZSTD_decompressDCtx(dctx, out.data(), out.size(), frame.data(), frame.size());
    benchmark::DoNotOptimize(out.data());
  }
  ZSTD_freeDCtx(dctx);
  SetCounters(state, frame.size());
  state.SetLabel(std::string(KindName(static_cast<int>(state.range(0)))) + " zstd-" +
                 std::to_string(level));
}

void Kinds(benchmark::internal::Benchmark* b) {
  for (int k : {kSurface, kAir, kStone, kNoise}) b->Arg(k);
}
void KindsAndLevels(benchmark::internal::Benchmark* b) {
  for (int k : {kSurface, kAir, kStone, kNoise})
    for (int level : {1, 3}) b->Args({k, level});
}

BENCHMARK(BM_VoxdbEncode)->Apply(Kinds)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_VoxdbEncodeLevel)
    ->Args({kSurface, 1})
    ->Args({kSurface, 6})
    ->Args({kSurface, 9})
    ->Args({kSurface, 12})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_VoxdbEncodeFromChunk)->Apply(Kinds)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_VoxdbDecodeToDense)->Apply(Kinds)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ZstdEncode)->Apply(KindsAndLevels)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ZstdDecode)->Apply(KindsAndLevels)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace voxdb

BENCHMARK_MAIN();
