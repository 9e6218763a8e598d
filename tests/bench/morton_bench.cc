// Morton encode/decode: the dispatched path, the portable path and BMI2.
//
//   build/tests/morton_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "engine/morton.h"

namespace voxdb::engine {
namespace {

constexpr size_t kN = 4096;

struct Inputs {
  std::vector<ChunkCoord> coords;
  std::vector<uint64_t> codes;
  Inputs() {
    std::mt19937_64 rng(1);
    for (size_t i = 0; i < kN; ++i) {
      coords.push_back({static_cast<uint32_t>(rng() & kMaxChunkAxis),
                        static_cast<uint32_t>(rng() & kMaxChunkAxis),
                        static_cast<uint32_t>(rng() & kMaxChunkAxis)});
      codes.push_back(rng() & ChunkKey::kMaxCode);
    }
  }
};
const Inputs& In() {
  static const Inputs in;
  return in;
}

template <uint64_t (*Encode)(uint32_t, uint32_t, uint32_t), bool kNeedsBmi2 = false>
void BM_Encode(benchmark::State& state) {
  if (kNeedsBmi2 && !HasBmi2()) state.SkipWithError("this CPU has no BMI2");
  const auto& c = In().coords;
  for (auto _ : state) {
    uint64_t acc = 0;
    for (const ChunkCoord& v : c) acc ^= Encode(v.x, v.y, v.z);
    benchmark::DoNotOptimize(acc);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kN));
}

template <ChunkCoord (*Decode)(uint64_t), bool kNeedsBmi2 = false>
void BM_Decode(benchmark::State& state) {
  if (kNeedsBmi2 && !HasBmi2()) state.SkipWithError("this CPU has no BMI2");
  const auto& codes = In().codes;
  for (auto _ : state) {
    uint32_t acc = 0;
    for (uint64_t code : codes) {
      const ChunkCoord c = Decode(code);
      acc ^= c.x ^ c.y ^ c.z;
    }
    benchmark::DoNotOptimize(acc);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kN));
}

BENCHMARK(BM_Encode<MortonEncode>)->Name("BM_Encode/dispatched");
BENCHMARK(BM_Encode<MortonEncodePortable>)->Name("BM_Encode/portable");
BENCHMARK(BM_Decode<MortonDecode>)->Name("BM_Decode/dispatched");
BENCHMARK(BM_Decode<MortonDecodePortable>)->Name("BM_Decode/portable");
#if defined(__x86_64__)
BENCHMARK(BM_Encode<MortonEncodeBmi2, true>)->Name("BM_Encode/bmi2");
BENCHMARK(BM_Decode<MortonDecodeBmi2, true>)->Name("BM_Decode/bmi2");
#endif

}  // namespace
}  // namespace voxdb::engine

BENCHMARK_MAIN();
