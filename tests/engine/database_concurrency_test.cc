// Concurrency tests of engine::Database: readers and writers at once on a
// small cache (eviction and flushing run during the test), GetChunks racing a
// flush, and back-pressure keeping memory within its budget under writers
// faster than the flusher.
//
// Readers check that every value they see was written to that voxel at some
// point (or is the initial air): writers own disjoint voxel sets and record,
// before submitting, which of their few materials each voxel has been given.
//
// Environment: VOXDB_STRESS_SECONDS=S runs each stress phase for S seconds
// (default 2).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/database.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"
#include "tests/testing/test_database.h"

namespace voxdb::engine {
namespace {

using Clock = std::chrono::steady_clock;
using testing::TempDir;

double StressSeconds() {
  const char* s = std::getenv("VOXDB_STRESS_SECONDS");
  if (s == nullptr || *s == '\0') return 2.0;
  return std::max(0.1, std::atof(s));
}

// --- Readers and writers ------------------------------------------------------

// A 4 x 2 x 2-chunk region; writer w owns the voxels whose local y lies in a
// 32-voxel slab s with s % kWriters == w, so every chunk is shared by every
// writer and the final value of each voxel is its owner's last write.
constexpr int kWriters = 4;
constexpr int kReaders = 4;
constexpr uint32_t kChunksX = 4, kChunksYZ = 2;
constexpr uint64_t kEdgeX = uint64_t{kChunksX} * kChunkEdge;  // 512
constexpr uint64_t kEdge = uint64_t{kChunksYZ} * kChunkEdge;  // 256: y and z
constexpr uint64_t kSlab = 32;
constexpr ChunkCoord kBase{500, 600, 312'499};
constexpr VoxelCoord kOrigin{uint64_t{kBase.x} * kChunkEdge, uint64_t{kBase.y} * kChunkEdge,
                             uint64_t{kBase.z} * kChunkEdge};
// Writer w writes materials 1 + w * kValues + k, k < kValues: 12 materials
// plus air fit one 16-entry brick palette.
constexpr int kValues = 3;

int OwnerOfLocalY(uint64_t ly) { return static_cast<int>((ly / kSlab) % kWriters); }
size_t LocalIndex(uint64_t lx, uint64_t ly, uint64_t lz) { return lx + kEdgeX * (ly + kEdge * lz); }
uint8_t Material(int writer, int k) { return static_cast<uint8_t>(1 + writer * kValues + k); }

class SharedModel {
 public:
  SharedModel() : written_(kEdgeX * kEdge * kEdge), last_(kEdgeX * kEdge * kEdge, 0) {}

  // Called by the owner before it submits the write.
  void Record(size_t i, uint8_t material) {
    written_[i].fetch_or(static_cast<uint8_t>(1u << ((material - 1) % kValues)),
                         std::memory_order_release);
    last_[i] = material;
  }
  // Whether a reader may see `value` at local (lx, ly, lz).
  bool Allowed(uint64_t lx, uint64_t ly, uint64_t lz, uint8_t value) const {
    if (value == 0) return true;  // the initial air
    const int writer = (value - 1) / kValues;
    if (writer != OwnerOfLocalY(ly)) return false;
    const uint8_t bits = written_[LocalIndex(lx, ly, lz)].load(std::memory_order_acquire);
    return (bits >> ((value - 1) % kValues)) & 1;
  }
  uint8_t last(size_t i) const { return last_[i]; }

 private:
  std::vector<std::atomic<uint8_t>> written_;  // bit k: material k of the owner was written
  std::vector<uint8_t> last_;                  // the owner's newest write (owner-only access)
};

DatabaseOptions SmallCacheOptions(Durability d) {
  DatabaseOptions o = testing::TestOptions();  // about concurrency, not the disk
  o.durability = d;
  o.cache_bytes = size_t{6} << 20;
  o.dirty_bytes = size_t{2} << 20;
  o.max_dirty_age = std::chrono::milliseconds(50);
  o.cache_shards = 4;
  return o;
}

struct ReaderCounts {
  std::atomic<uint64_t> voxel_reads{0}, chunk_reads{0}, box_reads{0}, bad{0}, errors{0};
  std::mutex mu;
  std::string first_bad;
  void Bad(const std::string& what) {
    if (bad.fetch_add(1) == 0) {
      std::lock_guard<std::mutex> lock(mu);
      first_bad = what;
    }
  }
};

void WriterLoop(Database& db, SharedModel& model, int w, uint64_t seed, Clock::time_point stop,
                std::atomic<uint64_t>& ops, std::atomic<uint64_t>& failures,
                std::string& first_failure) {
  std::mt19937_64 rng(seed);
  std::atomic<int> in_flight{0};
  std::mutex mu;
  auto done = [&](const WriteResult& r) {
    if (!r.status.ok()) {
      if (failures.fetch_add(1) == 0) {
        std::lock_guard<std::mutex> lock(mu);
        first_failure = r.status.ToString();
      }
    }
    in_flight.fetch_sub(1);
  };
  auto own_y = [&]() {
    const uint64_t slab =
        static_cast<uint64_t>(w) + kWriters * (rng() % (kEdge / kSlab / kWriters));
    return slab * kSlab;
  };
  while (Clock::now() < stop) {
    while (in_flight.load() >= 8) std::this_thread::sleep_for(std::chrono::microseconds(100));
    const int r = static_cast<int>(rng() % 100);
    if (r < 70) {
      // Edits within a 64-voxel neighbourhood (1-4 chunks), mostly.
      std::vector<VoxelEdit> edits(1 + rng() % 64);
      const bool spread = rng() % 10 == 0;
      const uint64_t cx = rng() % (kEdgeX - 64), cz = rng() % (kEdge - 64);
      for (auto& e : edits) {
        const uint64_t lx = spread ? rng() % kEdgeX : cx + rng() % 64;
        const uint64_t lz = spread ? rng() % kEdge : cz + rng() % 64;
        const uint64_t ly = own_y() + rng() % kSlab;
        e.at = {kOrigin.x + lx, kOrigin.y + ly, kOrigin.z + lz};
        e.material = Material(w, static_cast<int>(rng() % kValues));
        model.Record(LocalIndex(lx, ly, lz), e.material);
      }
      in_flight.fetch_add(1);
      if (r < 60) {
        db.SetVoxels(edits, done);  // `edits` dies right after the call returns
      } else {
        done(db.SetVoxelsAndWait(edits));
      }
    } else {
      // A box inside one of the writer's slabs, crossing chunk borders in x / z.
      const uint64_t sx = 1 + rng() % 48, sy = 1 + rng() % kSlab, sz = 1 + rng() % 48;
      const uint64_t lx = rng() % (kEdgeX - sx + 1), lz = rng() % (kEdge - sz + 1);
      const uint64_t ly = own_y() + rng() % (kSlab - sy + 1);
      const VoxelBox box{{kOrigin.x + lx, kOrigin.y + ly, kOrigin.z + lz},
                         {kOrigin.x + lx + sx, kOrigin.y + ly + sy, kOrigin.z + lz + sz}};
      std::vector<uint8_t> voxels(box.volume());
      const bool uniform = rng() % 4 == 0;
      const uint8_t one = Material(w, static_cast<int>(rng() % kValues));
      size_t k = 0;
      for (uint64_t z = 0; z < sz; ++z)
        for (uint64_t y = 0; y < sy; ++y)
          for (uint64_t x = 0; x < sx; ++x, ++k) {
            voxels[k] = uniform ? one : Material(w, static_cast<int>(rng() % kValues));
            model.Record(LocalIndex(lx + x, ly + y, lz + z), voxels[k]);
          }
      in_flight.fetch_add(1);
      if (r < 95) {
        db.WriteBox(box, voxels, done);
      } else {
        done(db.WriteBoxAndWait(box, voxels));
      }
    }
    ops.fetch_add(1);
  }
  while (in_flight.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void ReaderLoop(Database& db, const SharedModel& model, uint64_t seed, Clock::time_point stop,
                ReaderCounts& counts) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> dense(kChunkVoxels);
  while (Clock::now() < stop) {
    const int r = static_cast<int>(rng() % 100);
    if (r < 60) {
      // Half the time spread over the region (cache misses and evictions),
      // else a 64-voxel neighbourhood.
      std::vector<VoxelCoord> at(1 + rng() % 512);
      const bool spread = rng() % 2 == 0;
      const uint64_t cx = rng() % (kEdgeX - 64), cy = rng() % (kEdge - 64),
                     cz = rng() % (kEdge - 64);
      for (auto& v : at) {
        v = spread ? VoxelCoord{kOrigin.x + rng() % kEdgeX, kOrigin.y + rng() % kEdge,
                                kOrigin.z + rng() % kEdge}
                   : VoxelCoord{kOrigin.x + cx + rng() % 64, kOrigin.y + cy + rng() % 64,
                                kOrigin.z + cz + rng() % 64};
      }
      std::vector<uint8_t> out(at.size());
      const Status s = db.GetVoxels(at, out.data());
      if (!s.ok()) {
        counts.errors.fetch_add(1);
        counts.Bad("GetVoxels: " + s.ToString());
        continue;
      }
      for (size_t i = 0; i < at.size(); ++i) {
        if (!model.Allowed(at[i].x - kOrigin.x, at[i].y - kOrigin.y, at[i].z - kOrigin.z, out[i]))
          counts.Bad(absl::StrFormat("GetVoxels %s read %d", at[i].ToString(), out[i]));
      }
      counts.voxel_reads.fetch_add(at.size());
    } else if (r < 65) {
      std::vector<ChunkKey> keys;
      std::vector<ChunkCoord> coords;
      for (uint64_t n = 1 + rng() % 3; n > 0; --n) {
        const ChunkCoord c{kBase.x + static_cast<uint32_t>(rng() % kChunksX),
                           kBase.y + static_cast<uint32_t>(rng() % kChunksYZ),
                           kBase.z + static_cast<uint32_t>(rng() % kChunksYZ)};
        coords.push_back(c);
        keys.push_back(ChunkKey::FromCoord(c));
      }
      const Status s = db.GetChunks(keys, [&](size_t i, const ChunkRead& read) {
        if (!read.status.ok()) {
          counts.Bad("GetChunks status: " + read.status.ToString());
          return;
        }
        const Status d = DecodeChunkToDense(read.record, dense.data());
        if (!d.ok()) {
          counts.Bad("GetChunks record: " + d.ToString());
          return;
        }
        const uint64_t ox = (coords[i].x - kBase.x) * uint64_t{kChunkEdge};
        const uint64_t oy = (coords[i].y - kBase.y) * uint64_t{kChunkEdge};
        const uint64_t oz = (coords[i].z - kBase.z) * uint64_t{kChunkEdge};
        // A sample of the chunk (checking all 2M voxels would starve the writers).
        for (int n = 0; n < 8192; ++n) {
          const uint64_t k = rng() % kChunkVoxels;
          const uint64_t x = k % kChunkEdge, y = (k / kChunkEdge) % kChunkEdge,
                         z = k / (uint64_t{kChunkEdge} * kChunkEdge);
          if (!model.Allowed(ox + x, oy + y, oz + z, dense[k]))
            counts.Bad(absl::StrFormat("GetChunks %s (%d,%d,%d) read %d", coords[i].ToString(), x,
                                       y, z, dense[k]));
        }
      });
      if (!s.ok()) counts.Bad("GetChunks: " + s.ToString());
      counts.chunk_reads.fetch_add(keys.size());
    } else {
      const uint64_t sx = 1 + rng() % 48, sy = 1 + rng() % 48, sz = 1 + rng() % 48;
      const uint64_t lx = rng() % (kEdgeX - sx + 1), ly = rng() % (kEdge - sy + 1),
                     lz = rng() % (kEdge - sz + 1);
      const VoxelBox box{{kOrigin.x + lx, kOrigin.y + ly, kOrigin.z + lz},
                         {kOrigin.x + lx + sx, kOrigin.y + ly + sy, kOrigin.z + lz + sz}};
      std::vector<uint8_t> out(box.volume());
      const Status s = db.ReadBox(box, out.data());
      if (!s.ok()) {
        counts.Bad("ReadBox: " + s.ToString());
        continue;
      }
      size_t k = 0;
      for (uint64_t z = 0; z < sz; ++z)
        for (uint64_t y = 0; y < sy; ++y)
          for (uint64_t x = 0; x < sx; ++x, ++k)
            if (!model.Allowed(lx + x, ly + y, lz + z, out[k]))
              counts.Bad(absl::StrFormat("ReadBox voxel (%d,%d,%d) read %d", lx + x, ly + y, lz + z,
                                         out[k]));
      counts.box_reads.fetch_add(1);
    }
  }
}

// The whole region equals the model; returns the number of differences.
uint64_t CompareRegion(Database& db, const SharedModel& model, std::string* first) {
  const VoxelBox box{kOrigin, {kOrigin.x + kEdgeX, kOrigin.y + kEdge, kOrigin.z + kEdge}};
  std::vector<uint8_t> out(box.volume());
  const Status s = db.ReadBox(box, out.data());
  if (!s.ok()) {
    *first = "ReadBox: " + s.ToString();
    return ~uint64_t{0};
  }
  uint64_t diffs = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] != model.last(i)) {
      if (diffs++ == 0) {
        *first = absl::StrFormat("local (%d,%d,%d): got %d, want %d", i % kEdgeX,
                                 (i / kEdgeX) % kEdge, i / (kEdgeX * kEdge), out[i], model.last(i));
      }
    }
  }
  return diffs;
}

void RunReadersAndWriters(Durability durability) {
  TempDir dir;
  const DatabaseOptions options = SmallCacheOptions(durability);
  auto model = std::make_unique<SharedModel>();
  ReaderCounts counts;
  std::atomic<uint64_t> write_ops{0}, write_failures{0};
  std::string first_failure[kWriters];
  DatabaseStats stats;
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
    // Start from a region whose every voxel was written (by its owner), so
    // the 16 chunks (~1 MiB each in memory) far exceed the cache.
    {
      std::mt19937_64 rng(7);
      std::vector<uint8_t> dense(kChunkVoxels);
      for (uint32_t cz = 0; cz < kChunksYZ; ++cz)
        for (uint32_t cy = 0; cy < kChunksYZ; ++cy)
          for (uint32_t cx = 0; cx < kChunksX; ++cx) {
            size_t k = 0;
            for (uint64_t z = 0; z < kChunkEdge; ++z)
              for (uint64_t y = 0; y < kChunkEdge; ++y)
                for (uint64_t x = 0; x < kChunkEdge; ++x, ++k) {
                  const uint64_t lx = cx * uint64_t{kChunkEdge} + x,
                                 ly = cy * uint64_t{kChunkEdge} + y,
                                 lz = cz * uint64_t{kChunkEdge} + z;
                  dense[k] = Material(OwnerOfLocalY(ly), static_cast<int>(rng() % kValues));
                  model->Record(LocalIndex(lx, ly, lz), dense[k]);
                }
            const VoxelCoord o{kOrigin.x + cx * uint64_t{kChunkEdge},
                               kOrigin.y + cy * uint64_t{kChunkEdge},
                               kOrigin.z + cz * uint64_t{kChunkEdge}};
            ASSERT_OK(db->WriteBoxAndWait(
                            {o, {o.x + kChunkEdge, o.y + kChunkEdge, o.z + kChunkEdge}}, dense)
                          .status);
          }
      ASSERT_OK(db->Flush());
    }
    const auto stop = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(StressSeconds()));
    std::vector<std::thread> threads;
    for (int w = 0; w < kWriters; ++w) {
      threads.emplace_back([&, w] {
        WriterLoop(*db, *model, w, 100 + static_cast<uint64_t>(w), stop, write_ops, write_failures,
                   first_failure[w]);
      });
    }
    for (int r = 0; r < kReaders; ++r) {
      threads.emplace_back(
          [&, r] { ReaderLoop(*db, *model, 200 + static_cast<uint64_t>(r), stop, counts); });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(write_failures.load(), 0u) << "first failure: " << [&] {
      for (const auto& f : first_failure)
        if (!f.empty()) return f;
      return std::string();
    }();
    EXPECT_EQ(counts.bad.load(), 0u) << "first: " << counts.first_bad;
    ASSERT_OK(db->Flush());
    stats = db->Stats();
    EXPECT_EQ(stats.dirty_chunks, 0u);
    EXPECT_LE(stats.cache_bytes, options.cache_bytes * 11 / 10);
    std::string first;
    EXPECT_EQ(CompareRegion(*db, *model, &first), 0u) << "after Flush: " << first;
  }
  std::printf(
      "%llu write ops; reads: %llu voxels, %llu chunks, %llu boxes; cache: %llu hits, %llu misses, "
      "%llu evictions, %.2f MiB in %llu chunks at the end; %llu flushes (%llu chunks); %llu "
      "journal "
      "commits; %llu write waits\n",
      static_cast<unsigned long long>(write_ops.load()),
      static_cast<unsigned long long>(counts.voxel_reads.load()),
      static_cast<unsigned long long>(counts.chunk_reads.load()),
      static_cast<unsigned long long>(counts.box_reads.load()),
      static_cast<unsigned long long>(stats.cache_hits),
      static_cast<unsigned long long>(stats.cache_misses),
      static_cast<unsigned long long>(stats.cache_evictions),
      static_cast<double>(stats.cache_bytes) / (1 << 20),
      static_cast<unsigned long long>(stats.cache_chunks),
      static_cast<unsigned long long>(stats.flushes),
      static_cast<unsigned long long>(stats.flushed_chunks),
      static_cast<unsigned long long>(stats.journal_commits),
      static_cast<unsigned long long>(stats.write_waits));
  // The test is only meaningful if the cache had to evict and flush.
  EXPECT_GT(stats.cache_evictions, 0u);
  EXPECT_GT(stats.flushes, 0u);
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  EXPECT_EQ(db->Stats().replayed_records, 0u);
  std::string first;
  EXPECT_EQ(CompareRegion(*db, *model, &first), 0u) << "after reopen: " << first;
}

TEST(DatabaseConcurrencyTest, ReadersSeeOnlyWrittenValuesSync) {
  RunReadersAndWriters(Durability::kSync);
}

TEST(DatabaseConcurrencyTest, ReadersSeeOnlyWrittenValuesAsync) {
  RunReadersAndWriters(Durability::kAsync);
}

// GetChunks must not serve a chunk from a store snapshot older than a write
// acknowledged before the call: here the chunk is flushed (turning clean)
// while the call is running, between its snapshot and its dirty check.
TEST(DatabaseConcurrencyTest, GetChunksSeesAWriteAcknowledgedBeforeTheCall) {
  TempDir dir;
  DatabaseOptions options = testing::TestOptions();
  options.max_dirty_age = std::chrono::hours(1);
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  const ChunkCoord a = kBase, b{kBase.x + 1, kBase.y, kBase.z};
  const VoxelEdit edit{
      {uint64_t{b.x} * kChunkEdge, uint64_t{b.y} * kChunkEdge, uint64_t{b.z} * kChunkEdge}, 9};
  ASSERT_OK(db->SetVoxelsAndWait(std::span<const VoxelEdit>(&edit, 1)).status);
  const std::vector<ChunkKey> keys = {ChunkKey::FromCoord(a), ChunkKey::FromCoord(b)};
  std::vector<uint8_t> dense(kChunkVoxels);
  ASSERT_OK(db->GetChunks(keys, [&](size_t i, const ChunkRead& read) {
    if (i == 0) {
      // Another thread flushes meanwhile (as the background flusher may).
      std::thread flusher([&] { EXPECT_OK(db->Flush()); });
      flusher.join();
      return;
    }
    ASSERT_OK(read.status);
    ASSERT_OK(DecodeChunkToDense(read.record, dense.data()));
    EXPECT_EQ(dense[0], 9) << "GetChunks returned the chunk as it was before an acknowledged "
                              "write (source "
                           << static_cast<int>(read.source) << ", version " << read.version << ")";
  }));
}

// --- Back-pressure ------------------------------------------------------------

// Writers fill distinct chunks with noise (about 2 MiB in memory and on disk
// each) much faster than a syncing flusher writes them back; memory stays
// within its budgets and nothing is lost.
TEST(DatabaseConcurrencyTest, BackPressureKeepsMemoryWithinBudget) {
  TempDir dir;
  DatabaseOptions options;
  options.store.sync = true;
  options.durability = Durability::kAsync;
  options.cache_bytes = size_t{16} << 20;
  options.dirty_bytes = size_t{8} << 20;
  options.busy_timeout = std::chrono::milliseconds(60'000);
  constexpr int kChunkCount = 40;
  constexpr int kThreads = 2;
  const ChunkCoord base{7000, 3000, 312'500};
  auto coord = [&](int i) {
    return ChunkCoord{base.x + static_cast<uint32_t>(i % 4),
                      base.y + static_cast<uint32_t>((i / 4) % 4),
                      base.z + static_cast<uint32_t>(i / 16)};
  };
  std::atomic<uint64_t> max_dirty{0}, max_cache{0}, samples{0};
  std::atomic<int> failures{0}, busy{0};
  std::atomic<bool> stop{false};
  DatabaseStats final_stats;
  const auto start = Clock::now();
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
    std::thread sampler([&] {
      while (!stop.load()) {
        const DatabaseStats s = db->Stats();
        uint64_t m = max_dirty.load();
        while (s.dirty_bytes > m && !max_dirty.compare_exchange_weak(m, s.dirty_bytes)) {
        }
        m = max_cache.load();
        while (s.cache_bytes > m && !max_cache.compare_exchange_weak(m, s.cache_bytes)) {
        }
        samples.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
    std::vector<std::thread> writers;
    for (int t = 0; t < kThreads; ++t) {
      writers.emplace_back([&, t] {
        for (int i = t; i < kChunkCount; i += kThreads) {
          const ChunkCoord c = coord(i);
          const VoxelCoord o{uint64_t{c.x} * kChunkEdge, uint64_t{c.y} * kChunkEdge,
                             uint64_t{c.z} * kChunkEdge};
          const VoxelBox box{o, {o.x + kChunkEdge, o.y + kChunkEdge, o.z + kChunkEdge}};
          const std::vector<uint8_t> noise = testing::NoiseChunk(static_cast<uint64_t>(i) + 1);
          const WriteResult r = db->WriteBoxAndWait(box, noise);
          if (!r.status.ok()) {
            failures.fetch_add(1);
            if (IsBusy(r.status)) busy.fetch_add(1);
            ADD_FAILURE() << "chunk " << i << ": " << r.status;
          }
        }
      });
    }
    for (auto& w : writers) w.join();
    stop.store(true);
    sampler.join();
    ASSERT_OK(db->Flush());
    final_stats = db->Stats();
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf(
      "%d noise chunks in %.2f s; max dirty %.2f MiB (budget %.0f), max cache %.2f MiB (budget "
      "%.0f), %llu samples, %llu write waits, %llu busy rejections, %llu flushes\n",
      kChunkCount, secs, static_cast<double>(max_dirty.load()) / (1 << 20),
      static_cast<double>(options.dirty_bytes) / (1 << 20),
      static_cast<double>(max_cache.load()) / (1 << 20),
      static_cast<double>(options.cache_bytes) / (1 << 20),
      static_cast<unsigned long long>(samples.load()),
      static_cast<unsigned long long>(final_stats.write_waits),
      static_cast<unsigned long long>(final_stats.busy_rejections),
      static_cast<unsigned long long>(final_stats.flushes));
  EXPECT_EQ(failures.load(), 0) << busy.load() << " BUSY";
  EXPECT_LE(max_dirty.load(), options.dirty_bytes * 11 / 10);
  EXPECT_LE(max_cache.load(), options.cache_bytes * 11 / 10);
  EXPECT_GT(final_stats.write_waits, 0u) << "the writers never waited: no back-pressure tested";

  // Nothing lost.
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), options));
  EXPECT_EQ(db->Stats().replayed_records, 0u);
  std::vector<ChunkKey> keys;
  for (int i = 0; i < kChunkCount; ++i) keys.push_back(ChunkKey::FromCoord(coord(i)));
  std::vector<uint8_t> dense(kChunkVoxels);
  int good = 0;
  ASSERT_OK(db->GetChunks(keys, [&](size_t i, const ChunkRead& read) {
    ASSERT_OK(read.status);
    EXPECT_EQ(read.source, ChunkRead::Source::kStore);
    ASSERT_OK(DecodeChunkToDense(read.record, dense.data()));
    if (dense == testing::NoiseChunk(static_cast<uint64_t>(i) + 1)) {
      ++good;
    } else {
      ADD_FAILURE() << "chunk " << i << " differs after reopen";
    }
  }));
  EXPECT_EQ(good, kChunkCount);
}

}  // namespace
}  // namespace voxdb::engine
