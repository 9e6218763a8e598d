// voxdb_demo: generates a demo terrain region into a database directory
// through the engine's store (engine/chunk_store.h) and prints what it
// stored: chunk counts, bytes, the compression ratio and the memory the
// chunks take as bricks.
//
//   voxdb_demo [--data DIR] [--size N] [--seed S] [--lat DEG] [--lon DEG]
//
// Stores the N x N chunk columns around (lat, lon): every chunk of each column
// that holds terrain variation (surface, soil, caves, ores); pure sky and deep
// rock above and below are left out (a real world would cover them with
// fills; the demo writes none). Running it again
// overwrites the same chunks with new versions.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/chunk_store.h"
#include "tests/testing/terrain.h"

namespace {

using namespace voxdb;
using namespace voxdb::engine;

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--data DIR] [--size N] [--seed S] [--lat DEG] [--lon DEG]\n"
               "  --data DIR   database directory (default ./data)\n"
               "  --size N     N x N chunk columns, 1..64 (default 8)\n"
               "  --seed S     terrain seed (default 1)\n"
               "  --lat/--lon  centre of the region in degrees (default 45.8, 6.9)\n",
               argv0);
  return 2;
}

int Run(int argc, char** argv) {
  std::string data = "data";
  long size = 8;
  unsigned long long seed = 1;
  double lat = 45.8, lon = 6.9;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return Usage(argv[0]), 0;
    if (i + 1 >= argc) return Usage(argv[0]);
    const char* v = argv[++i];
    char* end = nullptr;
    if (arg == "--data") {
      data = v;
    } else if (arg == "--size") {
      size = std::strtol(v, &end, 10);
      if (*end || size < 1 || size > 64) {
        std::fprintf(stderr, "voxdb_demo: --size must be an integer in 1..64, got '%s'\n", v);
        return 2;
      }
    } else if (arg == "--seed") {
      seed = std::strtoull(v, &end, 10);
      if (*end) return Usage(argv[0]);
    } else if (arg == "--lat" || arg == "--lon") {
      (arg == "--lat" ? lat : lon) = std::strtod(v, &end);
      if (*end) return Usage(argv[0]);
    } else {
      return Usage(argv[0]);
    }
  }

  StoreOptions options;
  auto store_or = ChunkStore::Open(data, options);
  if (!store_or.ok()) {
    std::fprintf(stderr, "voxdb_demo: cannot open %s: %s\n", data.c_str(),
                 std::string(store_or.status().message()).c_str());
    return 1;
  }
  ChunkStore& store = **store_or;
  const WorldFrame& frame = store.frame();
  auto centre = frame.GeoToVoxel({lat, lon, 0});
  if (!centre.ok()) {
    std::fprintf(stderr, "voxdb_demo: %s\n", std::string(centre.status().message()).c_str());
    return 2;
  }
  testing::TerrainOptions terrain_options;
  terrain_options.seed = seed;
  terrain_options.sea_level_z = frame.sea_level_z();
  terrain_options.voxel_size_m = frame.voxel_size_m();
  const testing::TerrainGenerator terrain(terrain_options);
  const ChunkCoord c0 = frame.ChunkOf(*centre);

  const auto start = std::chrono::steady_clock::now();
  uint64_t chunks = 0, uniform = 0, stored_bytes = 0, memory_bytes = 0;
  std::vector<uint8_t> dense(kChunkVoxels);
  WriteBatch batch;
  for (long dy = 0; dy < size; ++dy) {
    for (long dx = 0; dx < size; ++dx) {
      const uint32_t cx = static_cast<uint32_t>(c0.x + dx - size / 2);
      const uint32_t cy = static_cast<uint32_t>(c0.y + dy - size / 2);
      const auto [zlo, zhi] = terrain.VariedChunkZRange(cx, cy);
      for (uint32_t cz = zlo; cz <= zhi; ++cz) {
        terrain.FillChunk(cx, cy, cz, dense.data());
        const Chunk chunk = Chunk::FromDense(dense);
        std::vector<uint8_t> rec = EncodeChunk(chunk, 1, NowMicros());
        ++chunks;
        uniform += chunk.IsUniform() ? 1 : 0;
        stored_bytes += rec.size();
        memory_bytes += chunk.MemoryUsage();
        batch.PutChunk(ChunkKey::FromCoord({cx, cy, cz}), std::move(rec));
        if (batch.ByteSize() > (size_t{64} << 20)) {
          if (Status s = store.Write(batch); !s.ok()) {
            std::fprintf(stderr, "voxdb_demo: write failed: %s\n",
                         std::string(s.message()).c_str());
            return 1;
          }
          batch.Clear();
        }
      }
    }
  }
  if (Status s = store.Write(batch); !s.ok()) {
    std::fprintf(stderr, "voxdb_demo: write failed: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto stats = store.Stats();
  const double raw = static_cast<double>(chunks) * kChunkVoxels;
  std::printf("voxdb demo: %ld x %ld chunk columns around lat %.4f lon %.4f (seed %llu) in %s\n",
              size, size, lat, lon, seed, data.c_str());
  std::printf("  world frame      %s\n", frame.ToString().c_str());
  std::printf("  chunks stored    %llu (%llu uniform)\n", static_cast<unsigned long long>(chunks),
              static_cast<unsigned long long>(uniform));
  std::printf("  raw voxels       %.1f MiB\n", raw / (1 << 20));
  std::printf("  stored records   %.2f MiB (ratio %.1f:1, %.1f KiB per chunk)\n",
              static_cast<double>(stored_bytes) / (1 << 20),
              raw / static_cast<double>(std::max<uint64_t>(stored_bytes, 1)),
              static_cast<double>(stored_bytes) / 1024 /
                  static_cast<double>(std::max<uint64_t>(chunks, 1)));
  std::printf("  in memory        %.2f MiB as bricks (%.1f%% of dense)\n",
              static_cast<double>(memory_bytes) / (1 << 20),
              100.0 * static_cast<double>(memory_bytes) / std::max(raw, 1.0));
  if (stats.ok()) {
    std::printf("  database         %llu chunks, %.2f MiB used of a %.0f MiB map\n",
                static_cast<unsigned long long>(stats->chunk_count),
                static_cast<double>(stats->used_bytes) / (1 << 20),
                static_cast<double>(stats->map_size) / (1 << 20));
  }
  std::printf("  time             %.2f s (%.0f chunks/s)\n", secs,
              static_cast<double>(chunks) / std::max(secs, 1e-9));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
