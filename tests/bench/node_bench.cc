// engine::Node: what partitions cost on one node. Three measurements:
//
//   serve   1 partition against 16 (the same node options) serving
//           GetChunks of random clean stored chunks (zero-copy from LMDB),
//           of random dirty cached chunks (encoded on the read), and of
//           batches of 16 random clean chunks (spanning partitions);
//           durable single-voxel SetVoxels (kSync, a real fsync per journal
//           commit) from 1 and 16 writer threads: writes/s, p50/p99.
//   layout  Split and Move of a partition holding --mb MB of terrain chunk
//           records: MB/s = bytes / (copy + pause) and the pause.
//   during  durable single-voxel writes into a partition while it moves:
//           p50/p99/max latency before, during and after the move.
//
//   build/tests/node_bench --runs 3                 # everything
//   build/tests/node_bench --only serve --runs 3    # one part
//   build/tests/node_bench --smoke                  # tiny, for ctest
//
// --commit-threads N gives the node a pool of N commit threads instead of
// NodeResources' default (what durable writes to many partitions need).
//
// The 16 partitions split a 64 x 64 x 64-chunk block (2^18 Morton codes)
// into 16 ranges of 2^14 codes (aligned to 8^4, the default alignment); the
// first and last also hold the rest of the key space. Reads and writes go
// to keys spread evenly over the block, so each partition takes 1/16 of
// them. Each figure is the median of --runs runs (latency percentiles: the
// median of each run's percentile).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/database.h"
#include "engine/morton.h"
#include "engine/node.h"
#include "engine/node_resources.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"

namespace voxdb::engine {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  int runs = 3;
  double seconds = 3;     // per timed write phase
  int serve_keys = 2048;  // clean chunks stored for the serving test
  int dirty_keys = 256;   // dirty chunks cached for the serving test
  int read_ops = 20000;   // GetChunks calls per clean run
  int dirty_read_ops = 1000;
  int distinct = 128;        // distinct terrain chunks generated
  int mb = 128;              // data in the partition split or moved
  int move_writers = 4;      // writer threads during the move
  double phase_seconds = 2;  // before and after the move
  int commit_threads = 0;    // > 0: the node's commit pool (default: NodeResources')
  std::string only;          // serve, layout, during; empty: all
};
Flags g_flags;

// The 64^3-chunk block the serving test uses, near sea level, and the one
// the layout tests fill (next to it).
constexpr ChunkCoord kServeBase{960, 1984, 312'448};
constexpr ChunkCoord kLayoutBase{1024, 1984, 312'448};
constexpr uint64_t kBlockCodes = uint64_t{1} << 18;
constexpr uint64_t kPartCodes = kBlockCodes / 16;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// The q-quantile (0..1) of latencies in microseconds.
double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "node_bench: %s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

// Records of `count` distinct terrain chunks (surface and underground ones
// near the surface of consecutive columns), encoded as the store keeps them.
const std::vector<std::vector<uint8_t>>& TerrainRecords(size_t count) {
  static std::vector<std::vector<uint8_t>> records;
  if (records.size() >= count) return records;
  testing::TerrainGenerator gen;
  std::vector<uint8_t> dense(testing::kChunkVoxels);
  for (uint32_t col = 0; records.size() < count; ++col) {
    const uint32_t cx = 1000 + col % 64, cy = 2000 + col / 64;
    const auto [lo, hi] = gen.VariedChunkZRange(cx, cy);
    for (uint32_t cz = lo; cz <= hi && records.size() < count; ++cz) {
      gen.FillChunk(cx, cy, cz, dense.data());
      records.push_back(EncodeChunk(Chunk::FromDense(dense), 1, 1));
    }
  }
  return records;
}

NodeOptions Options(Durability d) {
  NodeOptions o;
  o.database.durability = d;
  o.database.store.sync = d == Durability::kSync;
  o.database.store.initial_map_size = size_t{1} << 30;
  // Nothing is flushed behind the benchmark's back.
  o.database.max_dirty_age = std::chrono::hours(1);
  if (g_flags.commit_threads > 0) {
    NodeResourcesOptions r;
    r.cache_bytes = o.database.cache_bytes;
    r.dirty_bytes = o.database.dirty_bytes;
    r.flush_high_water = o.database.flush_high_water;
    r.commit_threads = g_flags.commit_threads;
    auto resources = NodeResources::Create(r);
    Check(resources.status(), "node resources");
    o.database.node = *resources;
  }
  return o;
}

// 1 partition, or 16 over the serving block.
std::vector<PartitionSpec> Partitions(const std::string& dir, int count) {
  if (count == 1) return {{0, MortonRange::All(), dir + "/p0"}};
  const uint64_t base = ChunkKey::FromCoord(kServeBase).code();
  std::vector<PartitionSpec> parts;
  for (int i = 0; i < count; ++i) {
    const uint64_t begin = i == 0 ? 0 : base + static_cast<uint64_t>(i) * kPartCodes;
    const uint64_t end =
        i + 1 == count ? MortonRange::All().end : base + static_cast<uint64_t>(i + 1) * kPartCodes;
    parts.push_back({static_cast<uint64_t>(i), {begin, end}, absl::StrFormat("%s/p%d", dir, i)});
  }
  return parts;
}

// `n` random keys of the serving block, the same for every partition count.
std::vector<ChunkKey> BlockKeys(size_t n, uint64_t seed) {
  const uint64_t base = ChunkKey::FromCoord(kServeBase).code();
  std::mt19937_64 rng(seed);
  std::vector<ChunkKey> keys;
  for (size_t i = 0; i < n; ++i) keys.push_back(ChunkKey::FromCode(base + rng() % kBlockCodes));
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

void PutAll(Node& node, const std::vector<ChunkKey>& keys) {
  const auto& recs = TerrainRecords(static_cast<size_t>(g_flags.distinct));
  for (size_t i = 0; i < keys.size(); ++i) {
    Check(node.PutChunkAndWait(keys[i], recs[i % recs.size()], std::nullopt).status, "put");
  }
}

// Microseconds per GetChunks call of `batch` random keys of `keys`.
double TimeReads(Node& node, const std::vector<ChunkKey>& keys, int ops, size_t batch,
                 ChunkRead::Source want) {
  std::mt19937_64 rng(7);
  std::vector<ChunkKey> req(batch);
  size_t bad = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < ops; ++i) {
    for (auto& k : req) k = keys[rng() % keys.size()];
    std::sort(req.begin(), req.end());
    Check(node.GetChunks(req,
                         [&](size_t, const ChunkRead& r) {
                           if (r.source != want || r.record.empty()) ++bad;
                         }),
          "get");
  }
  const double us = Seconds(Clock::now() - t0) * 1e6 / ops;
  if (bad != 0) {
    std::fprintf(stderr, "node_bench: %zu reads not served as expected\n", bad);
    std::exit(1);
  }
  return us;
}

struct WriteFigures {
  double per_second = 0, p50 = 0, p99 = 0, max = 0;
  double per_commit = 0;  // writes a journal commit (one fsync) covered
};

// Durable single-voxel writes from `threads` threads for `seconds`, to
// random voxels of `chunks`.
WriteFigures TimeWrites(Node& node, const std::vector<ChunkKey>& chunks, int threads,
                        double seconds) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lat(static_cast<size_t>(threads));
  std::vector<std::thread> ts;
  const DatabaseStats s0 = node.Stats();
  const auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
      while (!stop.load(std::memory_order_relaxed)) {
        const ChunkCoord c = chunks[rng() % chunks.size()].coord();
        const VoxelEdit e{{uint64_t{c.x} * kChunkEdge + rng() % kChunkEdge,
                           uint64_t{c.y} * kChunkEdge + rng() % kChunkEdge,
                           uint64_t{c.z} * kChunkEdge + rng() % kChunkEdge},
                          static_cast<uint8_t>(1 + rng() % 12)};
        const auto w0 = Clock::now();
        Check(node.SetVoxelsAndWait(std::span<const VoxelEdit>(&e, 1)).status, "write");
        lat[static_cast<size_t>(t)].push_back(Seconds(Clock::now() - w0) * 1e6);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  const double elapsed = Seconds(Clock::now() - t0);
  const DatabaseStats s1 = node.Stats();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  return {static_cast<double>(all.size()) / elapsed, Quantile(all, 0.5), Quantile(all, 0.99),
          Quantile(all, 1.0),
          static_cast<double>(s1.journal_records - s0.journal_records) /
              static_cast<double>(std::max<uint64_t>(1, s1.journal_commits - s0.journal_commits))};
}

void Serve() {
  const std::vector<ChunkKey> dirty = BlockKeys(static_cast<size_t>(g_flags.dirty_keys), 2);
  // The clean chunks are the others (a dirty one is served from the cache).
  std::vector<ChunkKey> clean;
  for (ChunkKey k : BlockKeys(static_cast<size_t>(g_flags.serve_keys), 1)) {
    if (!std::binary_search(dirty.begin(), dirty.end(), k)) clean.push_back(k);
  }
  // Two chunks in each sixteenth of the block: writes spread over all 16.
  std::vector<ChunkKey> write_chunks;
  const uint64_t base = ChunkKey::FromCoord(kServeBase).code();
  for (uint64_t i = 0; i < 16; ++i) {
    write_chunks.push_back(ChunkKey::FromCode(base + i * kPartCodes + 100));
    write_chunks.push_back(ChunkKey::FromCode(base + i * kPartCodes + 5000));
  }
  std::printf("\n== serve: 1 vs 16 partitions (%zu clean chunks, %zu dirty, medians of %d)\n",
              clean.size(), dirty.size(), g_flags.runs);
  std::printf("%-11s %12s %12s %14s | %-9s %10s %9s %9s %10s\n", "partitions", "clean us",
              "dirty us", "clean x16 us", "writers", "writes/s", "p50 us", "p99 us", "per commit");
  for (int parts : {1, 16}) {
    std::vector<double> c1, d1, c16;
    std::vector<std::vector<WriteFigures>> w(2);
    for (int run = 0; run < g_flags.runs; ++run) {
      {
        testing::TempDir dir;
        auto node = Node::Open(Partitions(dir.path(), parts), Options(Durability::kAsync));
        Check(node.status(), "open");
        PutAll(**node, clean);
        Check((*node)->Flush(), "flush");
        PutAll(**node, dirty);
        // Warm the page cache once.
        TimeReads(**node, clean, static_cast<int>(clean.size()), 1, ChunkRead::Source::kStore);
        c1.push_back(TimeReads(**node, clean, g_flags.read_ops, 1, ChunkRead::Source::kStore));
        c16.push_back(
            TimeReads(**node, clean, g_flags.read_ops / 16, 16, ChunkRead::Source::kStore));
        d1.push_back(
            TimeReads(**node, dirty, g_flags.dirty_read_ops, 1, ChunkRead::Source::kCache));
      }
      testing::TempDir dir;
      auto node = Node::Open(Partitions(dir.path(), parts), Options(Durability::kSync));
      Check(node.status(), "open");
      TimeWrites(**node, write_chunks, 1, 0.2);  // load the chunks into the cache
      for (int i = 0; i < 2; ++i)
        w[static_cast<size_t>(i)].push_back(
            TimeWrites(**node, write_chunks, i == 0 ? 1 : 16, g_flags.seconds));
    }
    for (int i = 0; i < 2; ++i) {
      std::vector<double> r, p50, p99, pc;
      for (const auto& f : w[static_cast<size_t>(i)]) {
        r.push_back(f.per_second);
        p50.push_back(f.p50);
        p99.push_back(f.p99);
        pc.push_back(f.per_commit);
      }
      if (i == 0) {
        std::printf("%-11d %12.1f %12.1f %14.1f | %-9d %10.0f %9.0f %9.0f %10.1f\n", parts,
                    Median(c1), Median(d1), Median(c16), 1, Median(r), Median(p50), Median(p99),
                    Median(pc));
      } else {
        std::printf("%-11s %12s %12s %14s | %-9d %10.0f %9.0f %9.0f %10.1f\n", "", "", "", "", 16,
                    Median(r), Median(p50), Median(p99), Median(pc));
      }
    }
    std::fflush(stdout);
  }
}

// Fills the root partition of a node in `dir` with --mb MB of terrain chunk
// records, one chunk in every 8 codes of the layout block (so that a split
// in its middle halves them), flushed. Returns the keys written.
std::vector<ChunkKey> LoadNode(const std::string& dir) {
  auto node = Node::Open(dir, Options(Durability::kAsync));
  Check(node.status(), "open");
  const auto& recs = TerrainRecords(static_cast<size_t>(g_flags.distinct));
  const uint64_t base = ChunkKey::FromCoord(kLayoutBase).code();
  std::vector<ChunkKey> keys;
  uint64_t bytes = 0;
  for (uint64_t i = 0; bytes < uint64_t(g_flags.mb) << 20; ++i) {
    keys.push_back(ChunkKey::FromCode(base + 8 * i));
    const auto& rec = recs[i % recs.size()];
    Check((*node)->PutChunkAndWait(keys.back(), rec, std::nullopt).status, "put");
    bytes += rec.size();
  }
  Check((*node)->Flush(), "flush");
  return keys;
}

uint64_t SplitPoint(const std::vector<ChunkKey>& keys) {
  const uint64_t unit = uint64_t{1} << (3 * kDefaultAlignLevels);
  return std::max(unit, keys[keys.size() / 2].code() / unit * unit);
}

void Layout() {
  std::printf("\n== layout: split and move of a partition of %d MB (medians of %d)\n", g_flags.mb,
              g_flags.runs);
  std::printf("%-6s %8s %8s %10s %10s %10s %8s\n", "op", "chunks", "MB", "copy s", "pause ms",
              "MB/s", "caught");
  for (const char* op : {"split", "move"}) {
    std::vector<double> copy, pause, mbs, chunks, mb, caught;
    for (int run = 0; run < g_flags.runs; ++run) {
      testing::TempDir dir;
      const std::string data = dir.path() + "/data";
      const std::vector<ChunkKey> keys = LoadNode(data);
      auto node = Node::Open(data, Options(Durability::kSync));
      Check(node.status(), "open");
      StatusOr<LayoutChangeReport> r = std::strcmp(op, "split") == 0
                                           ? (*node)->Split(0, SplitPoint(keys))
                                           : (*node)->Move(0, dir.path() + "/elsewhere");
      Check(r.status(), op);
      copy.push_back(r->copy_seconds);
      pause.push_back(r->pause_seconds * 1e3);
      mb.push_back(static_cast<double>(r->bytes) / 1e6);
      mbs.push_back(static_cast<double>(r->bytes) / 1e6 / (r->copy_seconds + r->pause_seconds));
      chunks.push_back(static_cast<double>(r->chunks));
      caught.push_back(static_cast<double>(r->caught_up_chunks));
    }
    std::printf("%-6s %8.0f %8.1f %10.3f %10.2f %10.0f %8.0f\n", op, Median(chunks), Median(mb),
                Median(copy), Median(pause), Median(mbs), Median(caught));
    std::fflush(stdout);
  }
}

void During() {
  std::printf(
      "\n== during: durable 1-voxel writes (%d threads) into a %d MB partition while it "
      "moves (medians of %d)\n",
      g_flags.move_writers, g_flags.mb, g_flags.runs);
  struct Phase {
    std::vector<double> n, p50, p99, max;
  };
  Phase phases[3];
  std::vector<double> pause, total, caught;
  for (int run = 0; run < g_flags.runs; ++run) {
    testing::TempDir dir;
    const std::string data = dir.path() + "/data";
    const std::vector<ChunkKey> keys = LoadNode(data);
    auto opened = Node::Open(data, Options(Durability::kSync));
    Check(opened.status(), "open");
    Node& node = **opened;
    // 64 of the partition's chunks take the writes (loaded into the cache
    // before the first phase).
    std::vector<ChunkKey> targets;
    for (size_t i = 0; i < 64; ++i) targets.push_back(keys[i * keys.size() / 64]);
    struct Sample {
      Clock::time_point at;
      double us;
    };
    std::atomic<bool> stop{false};
    std::vector<std::vector<Sample>> samples(static_cast<size_t>(g_flags.move_writers));
    std::vector<std::thread> ts;
    for (int t = 0; t < g_flags.move_writers; ++t) {
      ts.emplace_back([&, t] {
        std::mt19937_64 rng(static_cast<uint64_t>(t) + 11);
        while (!stop.load(std::memory_order_relaxed)) {
          const ChunkCoord c = targets[rng() % targets.size()].coord();
          const VoxelEdit e{{uint64_t{c.x} * kChunkEdge + rng() % kChunkEdge,
                             uint64_t{c.y} * kChunkEdge + rng() % kChunkEdge,
                             uint64_t{c.z} * kChunkEdge + rng() % kChunkEdge},
                            static_cast<uint8_t>(1 + rng() % 12)};
          const auto w0 = Clock::now();
          Check(node.SetVoxelsAndWait(std::span<const VoxelEdit>(&e, 1)).status, "write");
          samples[static_cast<size_t>(t)].push_back({w0, Seconds(Clock::now() - w0) * 1e6});
        }
      });
    }
    const auto phase = std::chrono::duration<double>(g_flags.phase_seconds);
    std::this_thread::sleep_for(phase / 2);  // warm-up, not counted
    const auto before = Clock::now();
    std::this_thread::sleep_for(phase);
    const auto move_start = Clock::now();
    StatusOr<LayoutChangeReport> r = node.Move(0, dir.path() + "/elsewhere");
    const auto move_end = Clock::now();
    Check(r.status(), "move");
    std::this_thread::sleep_for(phase);
    stop = true;
    for (auto& t : ts) t.join();
    std::vector<double> lat[3];
    for (const auto& s : samples) {
      for (const Sample& x : s) {
        if (x.at < before) continue;
        lat[x.at < move_start ? 0 : x.at < move_end ? 1 : 2].push_back(x.us);
      }
    }
    for (int i = 0; i < 3; ++i) {
      phases[i].n.push_back(static_cast<double>(lat[i].size()));
      phases[i].p50.push_back(Quantile(lat[i], 0.5));
      phases[i].p99.push_back(Quantile(lat[i], 0.99));
      phases[i].max.push_back(Quantile(lat[i], 1.0));
    }
    pause.push_back(r->pause_seconds * 1e3);
    total.push_back(Seconds(move_end - move_start));
    caught.push_back(static_cast<double>(r->caught_up_chunks));
  }
  std::printf("move: %.3f s, pause %.2f ms, %.0f chunks caught up\n", Median(total), Median(pause),
              Median(caught));
  std::printf("%-8s %8s %9s %9s %9s\n", "phase", "writes", "p50 us", "p99 us", "max us");
  const char* names[3] = {"before", "during", "after"};
  for (int i = 0; i < 3; ++i) {
    std::printf("%-8s %8.0f %9.0f %9.0f %9.0f\n", names[i], Median(phases[i].n),
                Median(phases[i].p50), Median(phases[i].p99), Median(phases[i].max));
  }
  std::fflush(stdout);
}

}  // namespace
}  // namespace voxdb::engine

int main(int argc, char** argv) {
  using voxdb::engine::g_flags;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "node_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--runs") {
      g_flags.runs = std::atoi(next());
    } else if (a == "--seconds") {
      g_flags.seconds = std::atof(next());
    } else if (a == "--mb") {
      g_flags.mb = std::atoi(next());
    } else if (a == "--writers") {
      g_flags.move_writers = std::atoi(next());
    } else if (a == "--commit-threads") {
      g_flags.commit_threads = std::atoi(next());
    } else if (a == "--only") {
      g_flags.only = next();
    } else if (a == "--smoke") {
      g_flags.runs = 1;
      g_flags.seconds = 0.2;
      g_flags.serve_keys = 64;
      g_flags.dirty_keys = 16;
      g_flags.read_ops = 200;
      g_flags.dirty_read_ops = 20;
      g_flags.distinct = 8;
      g_flags.mb = 2;
      g_flags.phase_seconds = 0.2;
    } else {
      std::fprintf(stderr,
                   "usage: node_bench [--runs N] [--seconds S] [--mb MB] [--writers N] "
                   "[--commit-threads N] [--only serve|layout|during] [--smoke]\n");
      return 2;
    }
  }
  const std::string& only = g_flags.only;
  if (only.empty() || only == "serve") voxdb::engine::Serve();
  if (only.empty() || only == "layout") voxdb::engine::Layout();
  if (only.empty() || only == "during") voxdb::engine::During();
  return 0;
}
