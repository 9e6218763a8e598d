// Spatial query latency on databases of many stored chunks, next to a
// brute-force scan of the same chunks, and the cost of index maintenance
// on flush.
//
//   build/tests/index_bench [--chunks 100000,1000000] [--queries 200] [--flush-chunks 200000]
//                           [--rounds 5]
//
// The world: `chunks` small uniform chunks in columns of 4 layers around
// sea level, in a square around 45.8 N 6.9 E, written through
// engine::Database and flushed (which builds the index). Queries: a 1 km
// radius around random points of the square, and a box of 256^3 chunks.
// Prints one line per measurement (medians / p99 of the queries).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/chunk_codec.h"
#include "engine/database.h"
#include "index/s2_index.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"

namespace voxdb {
namespace {

using Clock = std::chrono::steady_clock;
using engine::ChunkKey;

const engine::WorldFrame kFrame = engine::WorldFrame::Earth();
constexpr uint32_t kLayers = 4;
constexpr uint32_t kSeaCz = 312'500;

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

engine::DatabaseOptions Options(engine::ChunkObserver* index) {
  engine::DatabaseOptions o;
  o.store.sync = false;
  o.durability = engine::Durability::kAsync;
  o.cache_bytes = size_t{8} << 30;
  o.dirty_bytes = size_t{8} << 30;
  o.max_dirty_age = std::chrono::hours(1);  // flush only when asked
  o.flush_high_water = 1.0;
  if (index) o.observers = {index};
  return o;
}

// Puts `n` chunks (columns of kLayers) in a square around (cx0, cy0).
void Fill(engine::Database& db, uint64_t n, uint32_t cx0, uint32_t cy0,
          const std::vector<uint8_t>& record) {
  const uint32_t side = static_cast<uint32_t>(std::ceil(std::sqrt(double(n) / kLayers)));
  uint64_t put = 0;
  for (uint32_t y = 0; y < side && put < n; ++y) {
    for (uint32_t x = 0; x < side && put < n; ++x) {
      for (uint32_t z = 0; z < kLayers && put < n; ++z, ++put) {
        db.PutChunk(ChunkKey::FromCoord({cx0 + x, cy0 + y, kSeaCz - 2 + z}), record, std::nullopt,
                    nullptr);
      }
    }
  }
}

int Run(const std::vector<uint64_t>& sizes, int queries, uint64_t flush_chunks, int rounds) {
  const engine::GeoCoord origin{45.8, 6.9, 0};
  const engine::VoxelCoord ov = *kFrame.GeoToVoxel(origin);
  const uint32_t cx0 = static_cast<uint32_t>(ov.x / 128), cy0 = static_cast<uint32_t>(ov.y / 128);

  // Flush throughput with and without the index, for small uniform chunks
  // (the worst case: an index item costs about as much as the 29-byte
  // chunk record) and for surface terrain chunks.
  const std::vector<uint8_t> dense = testing::SampleSurfaceChunk(1);
  auto surface = engine::Chunk::FromDense(dense);
  surface.Compact();
  const std::vector<uint8_t> surface_record = engine::EncodeChunk(surface, 1, 1);
  for (bool uniform : {true, false}) {
    const uint64_t count = uniform ? flush_chunks : std::max<uint64_t>(1, flush_chunks / 100);
    // Rounds alternate which configuration goes first (a process's first
    // flush runs slower); medians of the rounds.
    // [with_index][rewrite]: the first flush creates the chunks (and index
    // entries); the second flushes new versions of the same chunks.
    std::vector<double> rates[2][2];
    for (int round = 0; round < rounds; ++round) {
      for (int step = 0; step < 2; ++step) {
        const bool with_index = (round + step) % 2 == 1;
        testing::TempDir dir;
        index::S2Index s2(kFrame);
        auto db = engine::Database::Open(dir.Sub("db"), Options(with_index ? &s2 : nullptr));
        if (!db.ok()) return std::fprintf(stderr, "%s\n", db.status().ToString().c_str()), 1;
        for (int rewrite = 0; rewrite < 2; ++rewrite) {
          Fill(**db, count, cx0, cy0,
               uniform ? engine::EncodeChunk(engine::Chunk(3), 1, 1) : surface_record);
          const auto t0 = Clock::now();
          if (!(*db)->Flush().ok()) return 1;
          rates[with_index][rewrite].push_back(double(count) / (Micros(Clock::now() - t0) / 1e6));
        }
      }
    }
    for (int rewrite = 0; rewrite < 2; ++rewrite) {
      const double without = Percentile(rates[0][rewrite], 0.5);
      const double with = Percentile(rates[1][rewrite], 0.5);
      std::printf(
          "flush of %llu %s %s chunks (median of %d rounds): %.0f chunks/s without the index, "
          "%.0f with (%.1f%% less)\n",
          static_cast<unsigned long long>(count), rewrite ? "rewritten" : "new",
          uniform ? "uniform" : "surface", rounds, without, with, 100 * (1 - with / without));
    }
    std::fflush(stdout);
  }

  for (uint64_t n : sizes) {
    testing::TempDir dir;
    index::S2Index s2(kFrame);
    auto opened = engine::Database::Open(dir.Sub("db"), Options(&s2));
    if (!opened.ok()) return 1;
    engine::Database& db = **opened;
    Fill(db, n, cx0, cy0, engine::EncodeChunk(engine::Chunk(3), 1, 1));
    if (!db.Flush().ok()) return 1;
    const uint32_t side = static_cast<uint32_t>(std::ceil(std::sqrt(double(n) / kLayers)));
    std::mt19937_64 rng(1);
    std::vector<double> radius_us, radius_scan_us, box_us, box_scan_us;
    uint64_t radius_hits = 0, box_hits = 0;
    index::QueryOptions options;
    options.limit = 65536;
    auto snapshot = db.store().BeginRead();
    if (!snapshot.ok()) return 1;
    for (int warm = 0; warm < 3; ++warm) {  // map the pages in
      (void)index::Query(
          db,
          index::RadiusRegion{index::ChunkCentre(kFrame, ChunkKey::FromCoord({cx0, cy0, kSeaCz})),
                              1000},
          options);
    }
    for (int q = 0; q < queries; ++q) {
      const ChunkKey at = ChunkKey::FromCoord({cx0 + static_cast<uint32_t>(rng() % side),
                                               cy0 + static_cast<uint32_t>(rng() % side), kSeaCz});
      const index::Region radius = index::RadiusRegion{index::ChunkCentre(kFrame, at), 1000};
      auto t0 = Clock::now();
      auto r = index::Query(db, radius, options);
      radius_us.push_back(Micros(Clock::now() - t0));
      if (!r.ok()) return std::fprintf(stderr, "%s\n", r.status().ToString().c_str()), 1;
      radius_hits += r->chunks.size();
      const engine::VoxelCoord o = kFrame.ChunkOrigin(at.coord());
      const uint64_t half = 128 * 128;
      const index::Region box = index::BoxRegion{
          {{o.x - half, o.y - half, o.z - half}, {o.x + half, o.y + half, o.z + half}}};
      t0 = Clock::now();
      r = index::Query(db, box, options);
      box_us.push_back(Micros(Clock::now() - t0));
      if (!r.ok()) return 1;
      box_hits += r->chunks.size();
      if (q < 5) {  // brute force: every stored chunk tested
        for (const index::Region* region : {&radius, &box}) {
          t0 = Clock::now();
          uint64_t hits = 0;
          (void)(*snapshot)->ScanChunks(engine::MortonRange{0, ChunkKey::kMaxCode + 1},
                                        [&](ChunkKey key, std::span<const uint8_t>) {
                                          hits += index::ChunkInRegion(kFrame, key, *region,
                                                                       std::nullopt);
                                          return true;
                                        });
          (region == &radius ? radius_scan_us : box_scan_us).push_back(Micros(Clock::now() - t0));
        }
      }
    }
    std::printf(
        "%llu chunks: 1 km radius p50 %.0f us p99 %.0f us (%.0f chunks per answer), brute force "
        "%.0f us; 256^3-chunk box p50 %.0f us p99 %.0f us (%.0f chunks), brute force %.0f us\n",
        static_cast<unsigned long long>(n), Percentile(radius_us, 0.5), Percentile(radius_us, 0.99),
        double(radius_hits) / queries, Percentile(radius_scan_us, 0.5), Percentile(box_us, 0.5),
        Percentile(box_us, 0.99), double(box_hits) / queries, Percentile(box_scan_us, 0.5));
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace voxdb

int main(int argc, char** argv) {
  std::vector<uint64_t> sizes = {100'000, 1'000'000};
  int queries = 200;
  uint64_t flush_chunks = 200'000;
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--chunks") {
      sizes.clear();
      for (char* p = argv[i + 1]; *p;) {
        sizes.push_back(std::strtoull(p, &p, 10));
        if (*p == ',') ++p;
      }
    } else if (flag == "--queries") {
      queries = std::atoi(argv[i + 1]);
    } else if (flag == "--rounds") {
      rounds = std::max(1, std::atoi(argv[i + 1]));
    } else if (flag == "--flush-chunks") {
      flush_chunks = std::strtoull(argv[i + 1], nullptr, 10);
    } else {
      std::fprintf(
          stderr,
          "usage: index_bench [--chunks N,M] [--queries Q] [--flush-chunks F] [--rounds R]\n");
      return 2;
    }
  }
  return voxdb::Run(sizes, queries, flush_chunks, rounds);
}
