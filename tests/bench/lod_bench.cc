// LOD pyramid benchmark: full rebuild speed (level-0 chunks per second) on
// surface terrain, the incremental builder after a flush, and the flush cost
// of LOD maintenance (a flush with and without LodObserver).
//
//   build/tests/lod_bench [--side 8] [--levels 4]
//
// --side N stores the surface chunk (and the one below) of N x N columns.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/database.h"
#include "engine/lod.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"

namespace voxdb::engine {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

struct World {
  std::vector<ChunkKey> keys;
  std::vector<std::vector<uint8_t>> records;
};

World MakeWorld(int side) {
  testing::TerrainGenerator gen;
  const auto c = testing::SampleSurfaceChunkCoords(1);
  World world;
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      const uint32_t cx = (c[0] & ~7u) + x, cy = (c[1] & ~7u) + y;
      const int64_t z =
          gen.SurfaceZ(uint64_t{cx} * kChunkEdge + 64, uint64_t{cy} * kChunkEdge + 64);
      const uint32_t cz = static_cast<uint32_t>(z / kChunkEdge);
      for (uint32_t dz = 0; dz < 2; ++dz) {
        Chunk chunk = Chunk::FromDense(gen.Chunk(cx, cy, cz - dz));
        chunk.Compact();
        world.keys.push_back(ChunkKey::FromCoord(ChunkCoord{cx, cy, cz - dz}));
        world.records.push_back(EncodeChunk(chunk, 0, 0));
      }
    }
  }
  return world;
}

// Puts every chunk and times the flush that stores them.
double LoadAndFlush(Database* db, const World& world) {
  for (size_t i = 0; i < world.keys.size(); ++i) {
    WriteResult r = db->PutChunkAndWait(world.keys[i], world.records[i], std::nullopt);
    if (!r.status.ok()) {
      std::fprintf(stderr, "put: %s\n", r.status.ToString().c_str());
      std::exit(1);
    }
  }
  const auto start = std::chrono::steady_clock::now();
  Status s = db->Flush();
  if (!s.ok()) {
    std::fprintf(stderr, "flush: %s\n", s.ToString().c_str());
    std::exit(1);
  }
  return Seconds(start);
}

constexpr int kFlushRounds = 3;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::unique_ptr<Database> OpenDb(const std::string& dir, ChunkObserver* observer) {
  DatabaseOptions o;
  o.store.sync = false;
  o.durability = Durability::kAsync;
  if (observer) o.observers = {observer};
  auto db = Database::Open(dir, o);
  if (!db.ok()) {
    std::fprintf(stderr, "open: %s\n", db.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*db);
}

int Main(int argc, char** argv) {
  int side = 8;
  LodOptions options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--side") {
      side = std::atoi(argv[i + 1]);
    } else if (flag == "--levels") {
      options.levels = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: lod_bench [--side N] [--levels L]\n");
      return 2;
    }
  }
  if (side < 1 || options.levels < 1 || options.levels > kMaxLodLevels) {
    std::fprintf(stderr, "lod_bench: bad --side or --levels\n");
    return 2;
  }
  const World world = MakeWorld(side);
  const size_t n = world.keys.size();
  std::printf("lod_bench: %zu surface chunks (%d x %d columns), %d levels\n", n, side, side,
              options.levels);

  testing::TempDir dir;
  // Flush cost: the same chunks flushed without and with LodObserver, in
  // alternating rounds (the first flushes of a process run slower), medians.
  LodObserver observer;
  std::vector<double> plain_runs, lod_runs;
  for (int round = 0; round < kFlushRounds; ++round) {
    for (bool with_lod : {false, true}) {
      auto db = OpenDb(dir.Sub(absl::StrCat(with_lod ? "lod" : "plain", round)),
                       with_lod ? &observer : nullptr);
      (with_lod ? lod_runs : plain_runs).push_back(LoadAndFlush(db.get(), world));
    }
  }
  const double plain_s = Median(plain_runs), lod_s = Median(lod_runs);
  std::printf("flush without LOD      %8.1f ms (%.1f us/chunk; median of %d)\n", plain_s * 1e3,
              plain_s * 1e6 / n, kFlushRounds);
  std::printf("flush with LodObserver %8.1f ms (%.1f us/chunk, %+.1f%%)\n", lod_s * 1e3,
              lod_s * 1e6 / n, plain_s > 0 ? (lod_s / plain_s - 1) * 100 : 0.0);
  auto db = OpenDb(dir.Sub("lod"), &observer);
  LoadAndFlush(db.get(), world);

  LodPyramid lod(db.get(), options);
  // Incremental: the builder works off the markers of that flush.
  auto start = std::chrono::steady_clock::now();
  lod.Start();
  Status s = lod.WaitIdle();
  const double incremental_s = Seconds(start);
  lod.Stop();
  if (!s.ok()) {
    std::fprintf(stderr, "builder: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("incremental build      %8.1f ms (%.0f level-0 chunks/s, 1 thread)\n",
              incremental_s * 1e3, n / incremental_s);

  start = std::chrono::steady_clock::now();
  s = lod.RebuildAll();
  const double rebuild_s = Seconds(start);
  if (!s.ok()) {
    std::fprintf(stderr, "rebuild: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("full rebuild           %8.1f ms (%.0f level-0 chunks/s, 1 thread; target >= 200)\n",
              rebuild_s * 1e3, n / rebuild_s);
  return 0;
}

}  // namespace
}  // namespace voxdb::engine

int main(int argc, char** argv) { return voxdb::engine::Main(argc, argv); }
