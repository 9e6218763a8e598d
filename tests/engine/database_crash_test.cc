// Crash tests of engine::Database with a real SIGKILL.
//
// Each round forks a child that opens the database (replaying what the last
// round left), applies a pre-generated sequence of random writes (SetVoxels
// batches, FillBox, WriteBox, PutChunk, DeleteChunk; many in flight), calls
// Flush() now and then from a second thread, and reports every op to the
// parent through a pipe: an INTENT record before submitting it and an ACK
// record from its completion callback. The parent kills the child at a random
// moment (some kills land inside Open / replay, some inside a Flush),
// reopens the database and checks every tracked voxel against an exact model:
// its value must be the one the newest durable write gave it, or one a later
// intended write gave it. Durable: in kSync every acknowledged write and,
// since the journal commits in sequence order, every write before one; in
// kAsync the same for acks received at least commit_interval + 1 s before the
// kill. Also checked: every stored record decodes, chunk versions never go
// back and cover every durable write, Flush() after recovery empties the
// journal, and a clean reopen reads the same. Rounds continue the same
// database, so replays run on top of replays.
//
// Tracked voxels: a fixed pool of sampled voxels (most SetVoxels edits hit
// it), plus every voxel a SetVoxels, WriteBox or small FillBox writes; whole
// chunk fills, PutChunk and DeleteChunk are modelled on the tracked voxels of
// the chunks they change (DeleteChunk: the newest fill covering the voxel,
// else air; the fills after a crash are read back from the `fills` table).
//
// Both sides generate the ops from the same seed before the fork, so INTENT
// and ACK records carry only the op id (and the ack's status and version).
//
// Environment: VOXDB_CRASH_ROUNDS=N runs N rounds per test instead of the
// default (30 kSync, 8 kAsync).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/chunk_store.h"
#include "engine/database.h"
#include "engine/fills.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"

namespace voxdb::engine {
namespace {

using Clock = std::chrono::steady_clock;
using testing::TempDir;

// The region under test: 3 x 3 x 3 chunks around sea level.
constexpr uint32_t kRegionChunks = 3;
constexpr ChunkCoord kBaseChunk{1000, 2000, 312'499};  // 312,500 * 128 = sea level z
constexpr uint64_t kRegionEdge = uint64_t{kRegionChunks} * kChunkEdge;
constexpr VoxelCoord kOrigin{uint64_t{kBaseChunk.x} * kChunkEdge,
                             uint64_t{kBaseChunk.y} * kChunkEdge,
                             uint64_t{kBaseChunk.z} * kChunkEdge};
constexpr int kRegionChunkCount = kRegionChunks * kRegionChunks * kRegionChunks;
constexpr int kPoolSize = 3000;  // sampled voxels that most edits hit

int RoundsFromEnv(int default_rounds) {
  const char* s = std::getenv("VOXDB_CRASH_ROUNDS");
  if (s == nullptr || *s == '\0') return default_rounds;
  return std::max(1, std::atoi(s));
}

// Voxel coordinates relative to the region, packed into one integer.
uint32_t PackLocal(const VoxelCoord& v) {
  return static_cast<uint32_t>((v.x - kOrigin.x) +
                               kRegionEdge * ((v.y - kOrigin.y) + kRegionEdge * (v.z - kOrigin.z)));
}

int RegionChunkIndex(const ChunkCoord& c) {
  return static_cast<int>((c.x - kBaseChunk.x) +
                          kRegionChunks *
                              ((c.y - kBaseChunk.y) + kRegionChunks * (c.z - kBaseChunk.z)));
}

ChunkCoord RegionChunk(int i) {
  return ChunkCoord{kBaseChunk.x + static_cast<uint32_t>(i % kRegionChunks),
                    kBaseChunk.y + static_cast<uint32_t>((i / kRegionChunks) % kRegionChunks),
                    kBaseChunk.z + static_cast<uint32_t>(i / (kRegionChunks * kRegionChunks))};
}

bool InBox(const VoxelBox& b, const VoxelCoord& v) {
  return v.x >= b.lo.x && v.x < b.hi.x && v.y >= b.lo.y && v.y < b.hi.y && v.z >= b.lo.z &&
         v.z < b.hi.z;
}

// The content of a PutChunk op, a function of the in-chunk position and a
// seed: brick-uniform, or with a fine pattern, or uniform.
uint8_t PutPattern(uint32_t lx, uint32_t ly, uint32_t lz, uint8_t seed) {
  switch (seed % 3) {
    case 0:
      return seed;
    case 1:
      return static_cast<uint8_t>((lx >> 4) + 3 * (ly >> 4) + 5 * (lz >> 4) + seed);
    default:
      return static_cast<uint8_t>(((lx ^ ly ^ lz) & 3) + seed);
  }
}

constexpr int kPutSeeds = 12;  // distinct PutChunk contents

std::vector<uint8_t> PutRecord(uint8_t seed) {
  std::vector<uint8_t> dense(kChunkVoxels);
  for (uint32_t z = 0; z < kChunkEdge; ++z)
    for (uint32_t y = 0; y < kChunkEdge; ++y)
      for (uint32_t x = 0; x < kChunkEdge; ++x)
        dense[x + kChunkEdge * (y + size_t{kChunkEdge} * z)] = PutPattern(x, y, z, seed);
  Chunk chunk = Chunk::FromDense(dense);
  // Version and mtime are ignored by PutChunk: give it nonsense.
  return EncodeChunk(chunk, 123'456'789, 42);
}

enum class OpKind : uint8_t { kSetVoxels, kWriteBox, kFillBox, kPutChunk, kDeleteChunk };

struct Op {
  OpKind kind = OpKind::kSetVoxels;
  std::vector<VoxelEdit> edits;  // kSetVoxels
  VoxelBox box;                  // kWriteBox, kFillBox
  std::vector<uint8_t> voxels;   // kWriteBox
  uint8_t material = 0;          // kFillBox; kPutChunk: the pattern seed
  ChunkCoord chunk;              // kPutChunk, kDeleteChunk
};

std::string OpName(const Op& op) {
  switch (op.kind) {
    case OpKind::kSetVoxels:
      return absl::StrFormat("SetVoxels(%d)", op.edits.size());
    case OpKind::kWriteBox:
      return "WriteBox";
    case OpKind::kFillBox:
      return absl::StrFormat("FillBox(m=%d)", op.material);
    case OpKind::kPutChunk:
      return absl::StrFormat("PutChunk(%s)", op.chunk.ToString());
    case OpKind::kDeleteChunk:
      return absl::StrFormat("DeleteChunk(%s)", op.chunk.ToString());
  }
  return "?";
}

// --- Pipe protocol -----------------------------------------------------------

enum MsgType : uint32_t { kReady = 1, kIntent = 2, kAck = 3, kOpenFailed = 4 };

struct Msg {
  uint32_t type = 0;
  uint32_t op = 0;
  int32_t code = 0;  // absl::StatusCode of an ack
  uint32_t pad = 0;
  uint64_t version = 0;
};
static_assert(sizeof(Msg) == 24);

void SendMsg(int fd, const Msg& m) {
  // Smaller than PIPE_BUF: written atomically, callbacks may race.
  for (;;) {
    const ssize_t n = write(fd, &m, sizeof(m));
    if (n == static_cast<ssize_t>(sizeof(m))) return;
    if (n < 0 && errno == EINTR) continue;
    _exit(3);
  }
}

// --- The child ---------------------------------------------------------------

struct ChildPlan {
  DatabaseOptions options;
  int max_in_flight = 32;
  int pace_us = 0;         // sleep between submissions
  int flush_every_ms = 0;  // 0: no Flush() thread
  // Disk-full spells: every this many ms (0: none), the process's file size
  // limit drops to LMDB's meta pages for disk_full_ms, so every commit in
  // between fails (EFBIG, as ENOSPC would).
  int disk_full_every_ms = 0;
  int disk_full_ms = 3;
};

[[noreturn]] void RunChild(const std::string& dir, const ChildPlan& plan,
                           const std::vector<Op>& ops, int fd) {
  auto opened = Database::Open(dir, plan.options);
  if (!opened.ok()) {
    std::fprintf(stderr, "child: open failed: %s\n", opened.status().ToString().c_str());
    SendMsg(fd, Msg{kOpenFailed, 0, static_cast<int32_t>(opened.status().code()), 0, 0});
    _exit(2);
  }
  std::unique_ptr<Database> db = std::move(opened).value();
  SendMsg(fd, Msg{kReady, 0, 0, 0, 0});
  std::atomic<int> in_flight{0};
  std::thread disk_full;
  if (plan.disk_full_every_ms > 0) {
    signal(SIGXFSZ, SIG_IGN);
    disk_full = std::thread([&] {
      rlimit normal{};
      getrlimit(RLIMIT_FSIZE, &normal);
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(plan.disk_full_every_ms));
        rlimit full = normal;
        full.rlim_cur = 8192;
        setrlimit(RLIMIT_FSIZE, &full);
        std::this_thread::sleep_for(std::chrono::milliseconds(plan.disk_full_ms));
        setrlimit(RLIMIT_FSIZE, &normal);
      }
    });
  }
  std::thread flusher;
  if (plan.flush_every_ms > 0) {
    flusher = std::thread([&] {
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(plan.flush_every_ms));
        const Status s = db->Flush();
        if (!s.ok()) std::fprintf(stderr, "child: Flush: %s\n", s.ToString().c_str());
      }
    });
  }
  std::vector<uint8_t> records[kPutSeeds];  // built on first use
  for (uint32_t i = 0; i < ops.size(); ++i) {
    while (in_flight.load() >= plan.max_in_flight)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    const Op& op = ops[i];
    SendMsg(fd, Msg{kIntent, i, 0, 0, 0});
    in_flight.fetch_add(1);
    WriteDone done = [fd, i, &in_flight](const WriteResult& r) {
      SendMsg(fd, Msg{kAck, i, static_cast<int32_t>(r.status.code()), 0, r.version});
      in_flight.fetch_sub(1);
    };
    switch (op.kind) {
      case OpKind::kSetVoxels:
        db->SetVoxels(op.edits, std::move(done));
        break;
      case OpKind::kWriteBox:
        db->WriteBox(op.box, op.voxels, std::move(done));
        break;
      case OpKind::kFillBox:
        db->FillBox(op.box, op.material, std::move(done));
        break;
      case OpKind::kPutChunk: {
        std::vector<uint8_t>& record = records[op.material];
        if (record.empty()) record = PutRecord(op.material);
        db->PutChunk(ChunkKey::FromCoord(op.chunk), record, std::nullopt, std::move(done));
        break;
      }
      case OpKind::kDeleteChunk:
        db->DeleteChunk(ChunkKey::FromCoord(op.chunk), std::move(done));
        break;
    }
    if (plan.pace_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(plan.pace_us));
  }
  for (;;) pause();  // wait for the SIGKILL
}

// --- The parent's model ------------------------------------------------------

// The chunk's box, grown by 0-20 voxels on each side (clipped to the region).
VoxelBox ChunkCoverBox(const ChunkCoord& c, std::mt19937_64& rng) {
  const VoxelCoord o{uint64_t{c.x} * kChunkEdge, uint64_t{c.y} * kChunkEdge,
                     uint64_t{c.z} * kChunkEdge};
  auto lo = [&](uint64_t a, uint64_t origin) { return std::max(origin, a - rng() % 21); };
  auto hi = [&](uint64_t a, uint64_t origin) {
    return std::min(origin + kRegionEdge, a + kChunkEdge + rng() % 21);
  };
  return VoxelBox{{lo(o.x, kOrigin.x), lo(o.y, kOrigin.y), lo(o.z, kOrigin.z)},
                  {hi(o.x, kOrigin.x), hi(o.y, kOrigin.y), hi(o.z, kOrigin.z)}};
}

// The region chunks an op changes.
std::vector<int> ChunksOf(const Op& op) {
  std::vector<int> out;
  auto add = [&](const VoxelCoord& v) {
    const int c = RegionChunkIndex({static_cast<uint32_t>(v.x / kChunkEdge),
                                    static_cast<uint32_t>(v.y / kChunkEdge),
                                    static_cast<uint32_t>(v.z / kChunkEdge)});
    if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
  };
  switch (op.kind) {
    case OpKind::kSetVoxels:
      for (const VoxelEdit& e : op.edits) add(e.at);
      break;
    case OpKind::kWriteBox:
    case OpKind::kFillBox:
      for (uint64_t z = op.box.lo.z / kChunkEdge; z <= (op.box.hi.z - 1) / kChunkEdge; ++z)
        for (uint64_t y = op.box.lo.y / kChunkEdge; y <= (op.box.hi.y - 1) / kChunkEdge; ++y)
          for (uint64_t x = op.box.lo.x / kChunkEdge; x <= (op.box.hi.x - 1) / kChunkEdge; ++x)
            add({x * kChunkEdge, y * kChunkEdge, z * kChunkEdge});
      break;
    case OpKind::kPutChunk:
    case OpKind::kDeleteChunk:
      out.push_back(RegionChunkIndex(op.chunk));
      break;
  }
  return out;
}

struct FillModel {
  VoxelBox box;
  uint8_t material = 0;
};

class CrashModel {
 public:
  explicit CrashModel(uint64_t seed) : rng_(seed) {
    for (int i = 0; i < kPoolSize; ++i) {
      const VoxelCoord v = RandomVoxel();
      pool_.push_back(v);
      Track(v);
    }
  }

  size_t tracked() const { return coords_.size(); }
  const std::vector<VoxelCoord>& coords() const { return coords_; }

  // Generates a round of `n` ops, tracking every voxel they write.
  std::vector<Op> Generate(int n) {
    std::vector<Op> ops;
    ops.reserve(n);
    for (int i = 0; i < n; ++i) {
      Op op;
      const uint32_t r = static_cast<uint32_t>(rng_() % 100);
      if (r < 78) {
        op.kind = OpKind::kSetVoxels;
        const int k = 1 + static_cast<int>(rng_() % 16);
        for (int e = 0; e < k; ++e) {
          VoxelEdit edit;
          // Mostly the pool (so ops overlap), sometimes a fresh voxel; a
          // batch may edit one voxel twice (the last edit wins).
          if (rng_() % 8 == 0) {
            edit.at = RandomVoxel();
          } else if (e > 0 && rng_() % 10 == 0) {
            edit.at = op.edits[rng_() % op.edits.size()].at;
          } else {
            edit.at = pool_[rng_() % pool_.size()];
          }
          edit.material = static_cast<uint8_t>(rng_() % 6 == 0 ? 0 : rng_());
          Track(edit.at);
          op.edits.push_back(edit);
        }
      } else if (r < 88) {
        op.kind = OpKind::kWriteBox;
        op.box = RandomBox(6);
        op.voxels.resize(op.box.volume());
        for (auto& b : op.voxels) b = static_cast<uint8_t>(rng_());
        TrackBox(op.box);
      } else if (r < 94) {
        op.kind = OpKind::kFillBox;
        op.box = RandomBox(8);
        op.material = static_cast<uint8_t>(rng_());
        TrackBox(op.box);
      } else if (r < 95) {
        // A fill covering a whole chunk (and maybe more): the chunk then
        // reads as the fills.
        op.kind = OpKind::kFillBox;
        op.box = ChunkCoverBox(RegionChunk(static_cast<int>(rng_() % kRegionChunkCount)), rng_);
        op.material = static_cast<uint8_t>(rng_());
      } else if (r < 97) {
        op.kind = OpKind::kPutChunk;
        op.chunk = RegionChunk(static_cast<int>(rng_() % kRegionChunkCount));
        op.material = static_cast<uint8_t>(rng_() % kPutSeeds);
      } else {
        op.kind = OpKind::kDeleteChunk;
        op.chunk = RegionChunk(static_cast<int>(rng_() % kRegionChunkCount));
      }
      ops.push_back(std::move(op));
    }
    return ops;
  }

  // Simulates the round from `base` (the value of every tracked voxel) and
  // the stored fills: per tracked voxel, the (op, value after op) list.
  // Ops marked in `failed` (answered with an error) never happened.
  void Simulate(const std::vector<Op>& ops, const std::vector<uint8_t>& base,
                std::vector<FillModel> fills, const std::vector<bool>* failed = nullptr) {
    base_ = base;
    struct Touch {
      int t;
      uint32_t op;
      uint8_t value;
    };
    std::vector<Touch> raw;
    auto set = [&](int t, uint32_t op, uint8_t value) { raw.push_back({t, op, value}); };
    for (uint32_t i = 0; i < ops.size(); ++i) {
      const Op& op = ops[i];
      if (failed != nullptr && (*failed)[i]) continue;
      switch (op.kind) {
        case OpKind::kSetVoxels:
          for (const VoxelEdit& e : op.edits) set(index_.at(PackLocal(e.at)), i, e.material);
          break;
        case OpKind::kWriteBox:
        case OpKind::kFillBox: {
          const uint64_t sx = op.box.hi.x - op.box.lo.x, sy = op.box.hi.y - op.box.lo.y;
          for (int c : ChunksOf(op)) {
            for (int t : by_chunk_[c]) {
              const VoxelCoord& v = coords_[t];
              if (!InBox(op.box, v)) continue;
              const uint8_t m =
                  op.kind == OpKind::kFillBox
                      ? op.material
                      : op.voxels[(v.x - op.box.lo.x) +
                                  sx * ((v.y - op.box.lo.y) + sy * (v.z - op.box.lo.z))];
              set(t, i, m);
            }
          }
          if (op.kind == OpKind::kFillBox) fills.push_back({op.box, op.material});
          break;
        }
        case OpKind::kPutChunk: {
          const VoxelCoord o{uint64_t{op.chunk.x} * kChunkEdge, uint64_t{op.chunk.y} * kChunkEdge,
                             uint64_t{op.chunk.z} * kChunkEdge};
          for (int t : by_chunk_[RegionChunkIndex(op.chunk)]) {
            const VoxelCoord& v = coords_[t];
            set(t, i,
                PutPattern(static_cast<uint32_t>(v.x - o.x), static_cast<uint32_t>(v.y - o.y),
                           static_cast<uint32_t>(v.z - o.z), op.material));
          }
          break;
        }
        case OpKind::kDeleteChunk:
          for (int t : by_chunk_[RegionChunkIndex(op.chunk)]) {
            uint8_t m = 0;
            for (auto it = fills.rbegin(); it != fills.rend(); ++it) {
              if (InBox(it->box, coords_[t])) {
                m = it->material;
                break;
              }
            }
            set(t, i, m);
          }
          break;
      }
    }
    // Group by voxel (stable: op order), one entry per op (a batch may edit
    // a voxel twice: the last edit wins).
    offsets_.assign(coords_.size() + 1, 0);
    for (const Touch& x : raw) ++offsets_[x.t + 1];
    for (size_t t = 0; t < coords_.size(); ++t) offsets_[t + 1] += offsets_[t];
    std::vector<size_t> fill_at(offsets_.begin(), offsets_.end() - 1);
    std::vector<std::pair<uint32_t, uint8_t>> grouped(raw.size());
    for (const Touch& x : raw) grouped[fill_at[x.t]++] = {x.op, x.value};
    touches_.clear();
    touches_.reserve(grouped.size());
    std::vector<size_t> new_offsets(coords_.size() + 1, 0);
    for (size_t t = 0; t < coords_.size(); ++t) {
      for (size_t k = offsets_[t]; k < offsets_[t + 1]; ++k) {
        if (touches_.size() > new_offsets[t] && touches_.back().first == grouped[k].first) {
          touches_.back().second = grouped[k].second;
        } else {
          touches_.push_back(grouped[k]);
        }
      }
      new_offsets[t + 1] = touches_.size();
    }
    offsets_ = std::move(new_offsets);
  }

  // The touches of tracked voxel t, in op order.
  std::span<const std::pair<uint32_t, uint8_t>> TouchesOf(size_t t) const {
    return std::span<const std::pair<uint32_t, uint8_t>>(touches_).subspan(
        offsets_[t], offsets_[t + 1] - offsets_[t]);
  }

  struct Verdict {
    int violations = 0;         // value not allowed even by the per-voxel rule
    int prefix_violations = 0;  // allowed per voxel, but an op older than a durable one is lost
    std::string report;
  };

  // actual: the recovered value of every tracked voxel. durable_upto: every op
  // <= it must be durable (-1: none); acked[i]: op i was acknowledged with OK
  // (and the ack is old enough to count); failed[i]: op i was answered with
  // an error, so it must never show; max_intent: ops after it never ran.
  Verdict Check(const std::vector<uint8_t>& actual, int64_t durable_upto,
                const std::vector<bool>& acked, const std::vector<bool>& failed, int64_t max_intent,
                const std::vector<Op>& ops) const {
    Verdict v;
    for (size_t t = 0; t < coords_.size(); ++t) {
      const auto touches = TouchesOf(t);
      std::vector<std::pair<uint32_t, uint8_t>> list(touches.begin(), touches.end());
      std::erase_if(list, [&](const auto& touch) { return failed[touch.first]; });
      if (list.empty()) {
        if (actual[t] != base_[t]) {
          ++v.violations;
          if (v.violations <= 10)
            v.report += absl::StrFormat("  %s: untouched this round, was %d, now %d\n",
                                        coords_[t].ToString(), base_[t], actual[t]);
        }
        continue;
      }
      // Per voxel (the weak rule): the newest individually acked op, or later.
      // Prefix rule: the newest op <= durable_upto, or later.
      auto allowed = [&](int64_t floor_op) {
        std::vector<uint8_t> values;
        uint8_t floor_value = base_[t];
        for (const auto& [op, value] : list) {
          if (static_cast<int64_t>(op) <= floor_op) floor_value = value;
        }
        values.push_back(floor_value);
        for (const auto& [op, value] : list) {
          if (static_cast<int64_t>(op) > floor_op && static_cast<int64_t>(op) <= max_intent)
            values.push_back(value);
        }
        return values;
      };
      int64_t newest_acked = -1;
      for (const auto& [op, value] : list)
        if (acked[op]) newest_acked = op;
      const std::vector<uint8_t> weak = allowed(newest_acked);
      const std::vector<uint8_t> strong = allowed(std::max(newest_acked, durable_upto));
      const bool weak_ok = std::find(weak.begin(), weak.end(), actual[t]) != weak.end();
      const bool strong_ok = std::find(strong.begin(), strong.end(), actual[t]) != strong.end();
      if (weak_ok && strong_ok) continue;
      if (!weak_ok) {
        ++v.violations;
      } else {
        ++v.prefix_violations;
      }
      if (v.violations + v.prefix_violations <= 10) {
        std::string history;
        for (const auto& [op, value] : list) {
          history += absl::StrFormat(" #%d %s->%d%s%s", op, OpName(ops[op]), value,
                                     acked[op] ? " acked" : "",
                                     static_cast<int64_t>(op) > max_intent ? " never-sent" : "");
        }
        v.report += absl::StrFormat("  %s %s: got %d, base %d, history:%s\n",
                                    weak_ok ? "[prefix]" : "[lost/invented]", coords_[t].ToString(),
                                    actual[t], base_[t], history);
      }
    }
    return v;
  }

 private:
  VoxelCoord RandomVoxel() {
    return VoxelCoord{kOrigin.x + rng_() % kRegionEdge, kOrigin.y + rng_() % kRegionEdge,
                      kOrigin.z + rng_() % kRegionEdge};
  }
  // A box of edges 1..max_edge around a pool voxel, clipped to the region
  // (boxes cross chunk borders).
  VoxelBox RandomBox(int max_edge) {
    const VoxelCoord c = pool_[rng_() % pool_.size()];
    VoxelBox b;
    uint64_t* lo[3] = {&b.lo.x, &b.lo.y, &b.lo.z};
    uint64_t* hi[3] = {&b.hi.x, &b.hi.y, &b.hi.z};
    const uint64_t cc[3] = {c.x, c.y, c.z};
    const uint64_t oo[3] = {kOrigin.x, kOrigin.y, kOrigin.z};
    for (int a = 0; a < 3; ++a) {
      const uint64_t edge = 1 + rng_() % static_cast<uint64_t>(max_edge);
      const uint64_t start = cc[a] - std::min<uint64_t>(cc[a] - oo[a], rng_() % edge);
      *lo[a] = start;
      *hi[a] = std::min(start + edge, oo[a] + kRegionEdge);
    }
    return b;
  }
  void Track(const VoxelCoord& v) {
    const uint32_t key = PackLocal(v);
    if (index_.count(key)) return;
    index_[key] = static_cast<int>(coords_.size());
    by_chunk_[RegionChunkIndex({static_cast<uint32_t>(v.x / kChunkEdge),
                                static_cast<uint32_t>(v.y / kChunkEdge),
                                static_cast<uint32_t>(v.z / kChunkEdge)})]
        .push_back(static_cast<int>(coords_.size()));
    coords_.push_back(v);
  }
  void TrackBox(const VoxelBox& b) {
    for (uint64_t z = b.lo.z; z < b.hi.z; ++z)
      for (uint64_t y = b.lo.y; y < b.hi.y; ++y)
        for (uint64_t x = b.lo.x; x < b.hi.x; ++x) Track({x, y, z});
  }

  std::mt19937_64 rng_;
  std::vector<VoxelCoord> pool_;
  std::vector<VoxelCoord> coords_;
  std::unordered_map<uint32_t, int> index_;
  std::vector<int> by_chunk_[kRegionChunkCount];
  std::vector<uint8_t> base_;
  // Per tracked voxel t, its (op, value after op) list is
  // touches_[offsets_[t], offsets_[t + 1]).
  std::vector<std::pair<uint32_t, uint8_t>> touches_;
  std::vector<size_t> offsets_;
};

// --- Reading and checking the recovered database ------------------------------

std::vector<FillModel> ReadFills(Database& db) {
  std::vector<FillModel> fills;
  auto snap = db.store().BeginRead();
  EXPECT_TRUE(snap.ok()) << snap.status();
  if (!snap.ok()) return fills;
  const Status s = (*snap)->Scan(Table::kFills, {}, {},
                                 [&](std::span<const uint8_t> key, std::span<const uint8_t> value) {
                                   EXPECT_EQ(key.size(), 8u);
                                   uint64_t seq = 0;
                                   for (uint8_t b : key) seq = seq << 8 | b;
                                   auto fill = Fill::Decode(seq, value);
                                   EXPECT_TRUE(fill.ok()) << fill.status();
                                   if (fill.ok()) fills.push_back({fill->box, fill->material});
                                   return true;
                                 });
  EXPECT_OK(s);
  return fills;
}

std::vector<ChunkKey> RegionKeys() {
  std::vector<ChunkKey> keys;
  for (int i = 0; i < static_cast<int>(kRegionChunks * kRegionChunks * kRegionChunks); ++i)
    keys.push_back(ChunkKey::FromCoord(RegionChunk(i)));
  return keys;
}

// Every stored chunk parses and decodes; every region chunk reads through
// GetChunks. Returns the versions GetChunks reports.
// deep: decode every record (else parse and checksum only).
std::vector<uint64_t> CheckConsistent(Database& db, bool deep) {
  {
    auto snap = db.store().BeginRead();
    EXPECT_TRUE(snap.ok()) << snap.status();
    if (snap.ok()) {
      EXPECT_OK(
          (*snap)->ScanChunks(MortonRange::All(), [&](ChunkKey key, std::span<const uint8_t> rec) {
            auto view = ParseChunkRecord(rec);
            EXPECT_TRUE(view.ok()) << key.ToString() << ": " << view.status();
            if (deep && view.ok() && view->header.encoding != ChunkEncoding::kFills) {
              auto chunk = DecodeChunk(rec);
              EXPECT_TRUE(chunk.ok()) << key.ToString() << ": " << chunk.status();
            }
            return true;
          }));
    }
  }
  const std::vector<ChunkKey> keys = RegionKeys();
  std::vector<uint64_t> versions(keys.size(), 0);
  std::vector<uint8_t> dense(kChunkVoxels);
  EXPECT_OK(db.GetChunks(keys, [&](size_t i, const ChunkRead& r) {
    EXPECT_OK(r.status);
    versions[i] = r.version;
    if (r.status.ok()) {
      EXPECT_OK(deep ? DecodeChunkToDense(r.record, dense.data())
                     : ParseChunkRecord(r.record).status());
    }
  }));
  const DatabaseStats st = db.Stats();
  for (uint64_t v : versions) EXPECT_LE(v, st.last_seq);
  EXPECT_LE(st.committed_seq, st.last_seq);
  EXPECT_LE(st.dirty_bytes, st.cache_bytes);
  EXPECT_LE(st.dirty_chunks, st.cache_chunks);
  return versions;
}

std::vector<uint8_t> ReadTracked(Database& db, const std::vector<VoxelCoord>& coords) {
  std::vector<uint8_t> out(coords.size());
  EXPECT_OK(db.GetVoxels(coords, out.data()));
  return out;
}

uint64_t JournalCount(Database& db) {
  auto snap = db.store().BeginRead();
  if (!snap.ok()) return ~uint64_t{0};
  auto n = (*snap)->Count(Table::kJournal);
  return n.ok() ? *n : ~uint64_t{0};
}

struct RoundConfig {
  Durability durability = Durability::kSync;
  int rounds = 30;
  int ops_per_round = 1000;
  int min_delay_ms = 20, max_delay_ms = 300;
  int max_in_flight = 32;
  int pace_us = 0;
  // kAsync: acks received at least this long before the kill must be durable.
  std::chrono::milliseconds durable_after{0};
  // See ChildPlan. Writes answered with an error must then never appear.
  int disk_full_every_ms = 0;
};

DatabaseOptions BaseOptions(Durability d) {
  DatabaseOptions o;
  o.durability = d;
  o.store.sync = true;
  o.commit_interval = std::chrono::milliseconds(5);
  o.cache_bytes = size_t{64} << 20;
  o.dirty_bytes = size_t{16} << 20;
  return o;
}

struct RoundStats {
  int acked = 0, intents = 0, durable_checked = 0, failed = 0;
  int kills_before_ready = 0, early_kills = 0;
  uint64_t replayed = 0;
};

void RunCrashRounds(const RoundConfig& cfg) {
  TempDir dir;
  const std::string path = dir.Sub("db");
  std::mt19937_64 rng(cfg.durability == Durability::kSync ? 7 : 11);
  CrashModel model(rng());
  std::vector<uint64_t> last_versions(kRegionChunks * kRegionChunks * kRegionChunks, 0);
  uint64_t last_seq_seen = 0;
  RoundStats totals;
  double setup_secs = 0, check_secs = 0;
  const auto test_start = Clock::now();

  for (int round = 0; round < cfg.rounds; ++round) {
    SCOPED_TRACE(absl::StrFormat("round %d", round));
    const auto round_start = Clock::now();
    const std::vector<Op> ops = model.Generate(cfg.ops_per_round);
    const DatabaseOptions options = BaseOptions(cfg.durability);
    // Base state: whatever the database holds now (verified last round).
    std::vector<uint8_t> base;
    std::vector<FillModel> fills;
    {
      ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path, options));
      base = ReadTracked(*db, model.coords());
      fills = ReadFills(*db);
    }
    model.Simulate(ops, base, fills);

    ChildPlan plan;
    plan.options = options;
    const int age_choice = static_cast<int>(rng() % 3);
    plan.options.max_dirty_age = std::chrono::milliseconds(age_choice == 0   ? 10
                                                           : age_choice == 1 ? 100
                                                                             : 30'000);
    plan.max_in_flight = 1 + static_cast<int>(rng() % static_cast<uint64_t>(cfg.max_in_flight));
    plan.pace_us = cfg.pace_us;
    plan.flush_every_ms = rng() % 4 == 0 ? 0 : 5 + static_cast<int>(rng() % 40);
    plan.disk_full_every_ms = cfg.disk_full_every_ms;
    const bool kill_from_fork = rng() % 6 == 0;
    // A kill timed from the fork comes early, often inside Open / replay.
    const int delay_ms =
        kill_from_fork ? static_cast<int>(rng() % 6)
                       : cfg.min_delay_ms +
                             static_cast<int>(rng() % static_cast<uint64_t>(cfg.max_delay_ms -
                                                                            cfg.min_delay_ms + 1));

    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      RunChild(path, plan, ops, fds[1]);
    }
    close(fds[1]);
    const auto fork_time = Clock::now();
    setup_secs += std::chrono::duration<double>(fork_time - round_start).count();

    std::vector<bool> acked(ops.size(), false);
    std::vector<bool> failed(ops.size(), false);  // answered with an error
    std::vector<Clock::time_point> ack_time(ops.size());
    std::vector<uint64_t> ack_version(ops.size(), 0);
    int64_t max_intent = -1;
    bool ready = false;
    bool open_failed = false;
    std::vector<uint8_t> buf;
    std::vector<std::string> bad_acks;
    auto consume = [&](bool dead) {
      char tmp[4096];
      for (;;) {
        const ssize_t n = read(fds[0], tmp, sizeof(tmp));
        if (n > 0) {
          buf.insert(buf.end(), tmp, tmp + n);
          if (!dead) break;
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;  // EOF (dead) or error
      }
      const auto now = Clock::now();
      size_t used = 0;
      while (buf.size() - used >= sizeof(Msg)) {
        Msg m;
        std::memcpy(&m, buf.data() + used, sizeof(m));
        used += sizeof(m);
        switch (m.type) {
          case kReady:
            ready = true;
            break;
          case kOpenFailed:
            open_failed = true;
            break;
          case kIntent:
            max_intent = std::max<int64_t>(max_intent, m.op);
            break;
          case kAck:
            if (m.code == 0) {
              acked[m.op] = true;
              ack_time[m.op] = now;
              ack_version[m.op] = m.version;
            } else if (cfg.disk_full_every_ms > 0 &&
                       (m.code == static_cast<int32_t>(absl::StatusCode::kResourceExhausted) ||
                        m.code == static_cast<int32_t>(absl::StatusCode::kInternal))) {
              failed[m.op] = true;  // a disk-full spell: must never appear
              ++totals.failed;
            } else if (bad_acks.size() < 5) {
              bad_acks.push_back(
                  absl::StrFormat("op %d %s: code %d", m.op, OpName(ops[m.op]), m.code));
            }
            break;
          default:
            ADD_FAILURE() << "bad message type " << m.type;
        }
      }
      buf.erase(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(used));
    };
    // Wait for the child to open (unless this kill is timed from the fork).
    const auto open_deadline = fork_time + testing::Scaled(std::chrono::seconds(60));
    while (!kill_from_fork && !ready && !open_failed && Clock::now() < open_deadline) {
      pollfd p{fds[0], POLLIN, 0};
      if (poll(&p, 1, 100) > 0) consume(false);
      if (p.revents & POLLHUP) break;
    }
    const auto kill_at =
        (kill_from_fork ? fork_time : Clock::now()) + std::chrono::milliseconds(delay_ms);
    bool hup = false;
    while (!hup) {
      const auto now = Clock::now();
      if (now >= kill_at) break;
      pollfd p{fds[0], POLLIN, 0};
      const int ms =
          static_cast<int>(
              std::chrono::duration_cast<std::chrono::milliseconds>(kill_at - now).count()) +
          1;
      if (poll(&p, 1, ms) > 0) {
        if (p.revents & POLLIN)
          consume(false);
        else if (p.revents & POLLHUP)
          hup = true;
      }
    }
    const bool was_ready = ready;
    kill(pid, SIGKILL);
    const auto kill_time = Clock::now();
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    consume(true);
    close(fds[0]);
    ASSERT_FALSE(open_failed) << "the child could not open the database";
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
        << "the child died before the kill (status " << wstatus << ")";
    EXPECT_TRUE(bad_acks.empty()) << "ops failed in the child: " << bad_acks[0];
    if (kill_from_fork) ++totals.early_kills;
    if (!was_ready) ++totals.kills_before_ready;

    // Writes answered with an error never happened: a fill among them
    // changes what a later DeleteChunk reads as.
    if (totals.failed > 0) model.Simulate(ops, base, fills, &failed);

    // Which acks must be durable.
    std::vector<bool> durable(ops.size(), false);
    int64_t durable_upto = -1;
    uint64_t max_durable_version = 0;
    int n_acked = 0, n_durable = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      if (!acked[i]) continue;
      ++n_acked;
      if (cfg.durability == Durability::kAsync && ack_time[i] + cfg.durable_after > kill_time)
        continue;
      durable[i] = true;
      ++n_durable;
      durable_upto = std::max<int64_t>(durable_upto, static_cast<int64_t>(i));
      max_durable_version = std::max(max_durable_version, ack_version[i]);
    }
    totals.acked += n_acked;
    totals.durable_checked += n_durable;
    totals.intents += static_cast<int>(max_intent + 1);

    // Recover and check.
    std::vector<uint8_t> recovered;
    std::vector<uint64_t> versions;
    {
      ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path, options));
      const DatabaseStats st = db->Stats();
      totals.replayed += st.replayed_records;
      EXPECT_GE(st.last_seq, max_durable_version) << "sequence numbers went back";
      EXPECT_GE(st.last_seq, last_seq_seen) << "sequence numbers went back";
      recovered = ReadTracked(*db, model.coords());
      const CrashModel::Verdict verdict =
          model.Check(recovered, durable_upto, durable, failed, max_intent, ops);
      EXPECT_EQ(verdict.violations, 0)
          << verdict.violations << " voxels hold a value no durable/intended write gave them ("
          << verdict.prefix_violations << " more break the prefix rule); " << n_acked << " acked, "
          << n_durable << " must be durable, last intent " << max_intent << ", durable_upto "
          << durable_upto << "\n"
          << verdict.report;
      if (verdict.violations == 0) {
        EXPECT_EQ(verdict.prefix_violations, 0)
            << verdict.prefix_violations
            << " voxels lost an op older than a durable one (the journal is not a prefix); "
            << "durable_upto " << durable_upto << "\n"
            << verdict.report;
      }
      versions = CheckConsistent(*db, /*deep=*/true);
      // A chunk's version is at least that of every durable write that changed it.
      int version_errors = 0;
      for (size_t i = 0; i < ops.size() && version_errors < 3; ++i) {
        if (!durable[i]) continue;
        for (int c : ChunksOf(ops[i])) {
          if (versions[c] >= ack_version[i]) continue;
          ++version_errors;
          ADD_FAILURE() << "chunk " << RegionChunk(c).ToString() << " is at version " << versions[c]
                        << " after recovery, older than durable op #" << i << " " << OpName(ops[i])
                        << " (version " << ack_version[i] << ")";
        }
      }
      for (size_t i = 0; i < versions.size(); ++i) {
        EXPECT_GE(versions[i], last_versions[i])
            << "chunk " << RegionChunk(static_cast<int>(i)).ToString() << " version went back";
      }
      ASSERT_OK(db->Flush());
      EXPECT_EQ(JournalCount(*db), 0u) << "journal records left after Flush()";
      const DatabaseStats after = db->Stats();
      EXPECT_EQ(after.dirty_chunks, 0u);
      EXPECT_EQ(after.dirty_bytes, 0u);
      last_seq_seen = after.last_seq;
    }
    {
      // A clean reopen reads the same and replays nothing.
      ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path, options));
      EXPECT_EQ(db->Stats().replayed_records, 0u);
      const std::vector<uint8_t> again = ReadTracked(*db, model.coords());
      EXPECT_TRUE(again == recovered) << "a clean reopen reads other values";
      const std::vector<uint64_t> versions2 = CheckConsistent(*db, /*deep=*/false);
      EXPECT_EQ(versions2, versions) << "a clean reopen reports other versions";
      last_versions = versions2;
    }
    check_secs += std::chrono::duration<double>(Clock::now() - kill_time).count();
    if (::testing::Test::HasFatalFailure() || ::testing::Test::HasFailure()) break;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - test_start).count();
  if (cfg.disk_full_every_ms > 0) {
    EXPECT_GT(totals.failed, 0) << "no disk-full spell made a write fail";
    std::printf("%d writes answered with a disk-full error, none of them recovered\n",
                totals.failed);
  }
  std::printf(
      "%d rounds in %.1f s: %d ops intended, %d acked, %d checked as durable, %llu journal "
      "records replayed, %d of %d early kills before the child opened, %zu voxels tracked; %.1f s "
      "generating "
      "and simulating, %.1f s recovering and checking\n",
      cfg.rounds, secs, totals.intents, totals.acked, totals.durable_checked,
      static_cast<unsigned long long>(totals.replayed), totals.kills_before_ready,
      totals.early_kills, model.tracked(), setup_secs, check_secs);
}

TEST(DatabaseCrashTest, SyncDurabilitySurvivesSigkill) {
  RoundConfig cfg;
  cfg.durability = Durability::kSync;
  cfg.rounds = RoundsFromEnv(30);
  RunCrashRounds(cfg);
}

TEST(DatabaseCrashTest, AsyncDurabilityLosesAtMostTheCommitInterval) {
  RoundConfig cfg;
  cfg.durability = Durability::kAsync;
  cfg.rounds = RoundsFromEnv(8);
  // Rounds must outlast the bound for some acks to count as durable.
  cfg.min_delay_ms = 1100;
  cfg.max_delay_ms = 1600;
  cfg.ops_per_round = 2500;
  cfg.pace_us = 500;
  cfg.max_in_flight = 64;
  cfg.durable_after = std::chrono::milliseconds(5) + std::chrono::seconds(1);
  RunCrashRounds(cfg);
}

// Disk-full spells while writers run (and kill -9 at a random moment): a
// write answered with an error, and every write queued behind it, never
// shows after recovery; every acknowledged write does.
TEST(DatabaseCrashTest, SyncWritesAnsweredWithDiskFullNeverAppear) {
  RoundConfig cfg;
  cfg.durability = Durability::kSync;
  cfg.rounds = RoundsFromEnv(12);
  cfg.disk_full_every_ms = 15;
  RunCrashRounds(cfg);
}

// A fill covering a whole stored chunk makes it read as the fills; if the
// flusher writes that state back (dropping the stored chunk) before the
// fill's journal record is committed, a crash must not lose the chunk's
// older, durable content: the fill is either there or not, and the voxel
// reads as the fill or as before it, never as air.
TEST(DatabaseCrashTest, WholeChunkFillFlushedBeforeItsCommit) {
  TempDir dir;
  const std::string path = dir.Sub("db");
  DatabaseOptions options = BaseOptions(Durability::kAsync);
  options.commit_interval = std::chrono::milliseconds(3000);  // the fill stays uncommitted
  options.max_dirty_age = std::chrono::milliseconds(10);      // the flusher runs meanwhile
  const ChunkCoord c = kBaseChunk;
  const VoxelCoord o{uint64_t{c.x} * kChunkEdge, uint64_t{c.y} * kChunkEdge,
                     uint64_t{c.z} * kChunkEdge};
  const VoxelCoord v{o.x + 5, o.y + 6, o.z + 7};
  const VoxelBox whole{o, {o.x + kChunkEdge, o.y + kChunkEdge, o.z + kChunkEdge}};
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto db = Database::Open(path, options);
    if (!db.ok()) _exit(2);
    const VoxelEdit edit{v, 77};
    if (!(*db)->SetVoxelsAndWait(std::span<const VoxelEdit>(&edit, 1)).status.ok()) _exit(3);
    if (!(*db)->Flush().ok()) _exit(4);  // durable: committed and stored
    if (!(*db)->FillBoxAndWait(whole, 5).status.ok()) _exit(5);
    // The flusher writes the chunk meanwhile (by age); the fill may or may
    // not be committed by then (an implementation may commit it first).
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if ((*db)->Stats().flushes < 2) _exit(6);  // the chunk was not flushed: no test
    raise(SIGKILL);
    _exit(7);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path, options));
  uint8_t got = 0;
  ASSERT_OK(db->GetVoxels(std::span<const VoxelCoord>(&v, 1), &got));
  EXPECT_TRUE(got == 77 || got == 5)
      << "the voxel reads " << int{got} << ": neither the durable edit (77) nor the fill (5)";
}

}  // namespace
}  // namespace voxdb::engine
