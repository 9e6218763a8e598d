// The LOD pyramid (docs/DESIGN.md, section 9): levels 1..N of downsampled chunks.
//
// The level-l LOD chunk of octree node `code >> 3l` is 128^3 voxels of
// 0.25 m * 2^l: each voxel is the most common material of its 2x2x2
// children at level l-1 (level 0: the chunks as Database::GetChunks reads
// them, so dirty chunks, stored chunks and fills all count). Ties go to a
// non-air material, and among non-air materials to the smallest id, so thin
// surfaces survive. A level-l node is built from its 8 level-(l-1) children,
// each child 128^3 -> one 64^3 octant of the parent (octant bits: x 1, y 2,
// z 4, like the Morton code).
//
// Storage (table `lod`, engine/FORMAT.md): records keyed by level + node,
// and dirty markers keyed by 0xFF + level + node. LodObserver marks the
// level-1 parent of every chunk the flusher stores or removes, in the
// flush's own transaction. A fill marks only the nodes on its boundary (at
// every level: those it covers in part); a node a fill covers wholly reads
// as that fill (uniform, version the fill's seq) unless its last built
// record is at least as new, the way an unstored chunk reads through the
// fills. (The stored chunks a fill covers are rewritten by the fill, so
// their flush marks their nodes.) LodPyramid's builder thread rebuilds dirty nodes
// bottom-up (every dirty level-1 node, then level 2, ...), writing each
// record, the parent's marker and the deletion of its own marker in one
// store write; the marker is deleted only if it still holds the token read
// before the build, so a chunk flushed during a build marks the node again.
//
// Example:
//   LodObserver observer;
//   options.observers.push_back(&observer);
//   VOXDB_ASSIGN_OR_RETURN(auto db, Database::Open(dir, options));
//   LodPyramid lod(db.get(), LodOptions{});
//   lod.Start();
//   ...
//   lod.Stop();  // before db is destroyed
//
// Thread-safety: every method is thread-safe, but Start and Stop, which the
// owner calls from one thread.
#ifndef VOXDB_ENGINE_LOD_H_
#define VOXDB_ENGINE_LOD_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "engine/database.h"
#include "engine/mutex.h"
#include "engine/status.h"

namespace voxdb::engine {

inline constexpr int kDefaultLodLevels = 4;
inline constexpr int kMaxLodLevels = 16;
// The first byte of a dirty marker key (records start with their level).
inline constexpr uint8_t kLodDirtyPrefix = 0xFF;
// The one-byte key of the fill cursor: the newest fill seq whose nodes
// were marked dirty (u64 big-endian).
inline constexpr uint8_t kLodFillCursorKey = 0xFE;

// Record key: level (u8) + node code (u64 big-endian).
std::array<uint8_t, 9> LodRecordKey(int level, uint64_t node);
// Dirty marker key: 0xFF + level (u8) + node code (u64 big-endian).
std::array<uint8_t, 10> LodDirtyKey(int level, uint64_t node);

// The mode of 8 materials: the most common; ties go to non-air, then to the
// smallest material id.
uint8_t LodMode8(const uint8_t* v);
// Downsamples a dense 128^3 child (x fastest) into octant `octant` (0..7) of
// a dense 128^3 parent.
void LodDownsampleOctant(const uint8_t* child, int octant, uint8_t* parent);

// Marks the level-1 parent of every chunk the flusher stores or removes,
// once per flush, with a fresh token.
class LodObserver : public ChunkObserver {
 public:
  void OnFlush(std::span<const FlushedChunk> chunks, WriteBatch* batch) override;
};

struct LodOptions {
  // Levels 1..levels are kept. REQUIRES: 1 <= levels <= kMaxLodLevels.
  // DEFAULT: 4.
  int levels = kDefaultLodLevels;
  // zstd level of LOD records. DEFAULT: the codec's.
  int zstd_level = CodecOptions::kDefaultZstdLevel;
  // Nodes rebuilt per store write by the builder. DEFAULT: 16.
  int nodes_per_write = 16;
  // RebuildAll refuses (RESOURCE_EXHAUSTED) worlds with more level-1 nodes
  // than this under stored chunks and fills. DEFAULT: 2^20.
  uint64_t max_rebuild_nodes = uint64_t{1} << 20;
};

struct LodRead {
  uint64_t version = 0;         // max version of the level-0 chunks under it
  std::vector<uint8_t> record;  // a chunk record (engine/FORMAT.md)
  bool dirty = false;           // a rebuild is pending: this is the last built one
};

class LodPyramid {
 public:
  // REQUIRES: db outlives this object; the Database was opened with a
  // LodObserver among its observers (else only RebuildAll updates it).
  LodPyramid(Database* db, const LodOptions& options);
  // Stops the builder.
  ~LodPyramid();
  LodPyramid(const LodPyramid&) = delete;
  LodPyramid& operator=(const LodPyramid&) = delete;

  // The levels kept: 1..levels().
  int levels() const { return options_.levels; }

  // Starts / stops the background builder. The builder works in passes of
  // nodes_per_write nodes and checks for Stop between them, so Stop returns
  // within one pass (what is left stays marked: the next Start resumes it).
  // Stop also fails the WhenSynced waiters (UNAVAILABLE). Call
  // it before the Database is destroyed. The owner calls Start and Stop from
  // one thread (they are not safe against each other).
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // The last built record of the node. NOT_FOUND when the node was never
  // built: no stored chunk or fill lies under it (it reads as air), or its
  // first build is still pending (see `dirty` of later reads and
  // DirtyCount()). INVALID for a level outside 1..levels.
  StatusOr<LodRead> GetLod(int level, uint64_t node_code);

  // Drops every record and rebuilds the pyramid from the chunks, on the
  // calling thread: MarkAllForRebuild, then builds until no marker is left.
  // Reads may see NOT_FOUND meanwhile (or the fill a node lies in).
  Status RebuildAll() ABSL_LOCKS_EXCLUDED(build_mu_);
  // The first half of RebuildAll: drops every record and marks the nodes to
  // build: the level-1 parents of stored and dirty chunks (at most
  // max_rebuild_nodes, else TOO_LARGE before anything is dropped) and the
  // fills' boundary nodes. The builder builds them (WhenSynced, called
  // after, tells when); a stop leaves them marked (resumable).
  Status MarkAllForRebuild() ABSL_LOCKS_EXCLUDED(build_mu_);
  // Fails every WhenSynced waiter with `why` (the server is stopping).
  void CancelWaiters(const Status& why) ABSL_LOCKS_EXCLUDED(mu_);

  // Calls done(OK) once the pyramid has caught up with everything marked
  // before this call ("synced"): every node marked dirty before it (and
  // every fill made before it) is built, and so, level by level up to the
  // top, are the parents those builds mark. Nodes marked after the call
  // (later flushes and fills) are not waited for, so it answers while
  // writes keep coming, as soon as the builder has worked off what was there
  // before them. (The builder takes the lowest dirty level first: while
  // level-1 nodes are marked faster than it builds them, the levels above
  // wait, and so does this.) done(error) if a builder pass fails first, done(UNAVAILABLE)
  // on Stop or CancelWaiters. With nothing marked, the next builder pass
  // answers it. done runs on the builder's thread or the caller's, once; it
  // must not block.
  void WhenSynced(std::function<void(const Status&)> done) ABSL_LOCKS_EXCLUDED(mu_);
  // WhenSynced, blocking: its status, or BUSY when `timeout` passes first.
  // With no writes meanwhile, DirtyCount() is 0 after an OK.
  Status WaitIdle(std::chrono::steady_clock::duration timeout =
                      std::chrono::steady_clock::duration::max()) ABSL_LOCKS_EXCLUDED(mu_);

  // Dirty markers in the store.
  uint64_t DirtyCount();

 private:
  struct Marker {
    int level;
    uint64_t node;
    std::vector<uint8_t> token;
  };
  struct Built {
    int level;
    uint64_t node;
    std::vector<uint8_t> record;
  };
  // A WhenSynced caller. The first pass numbered above `after` arms it
  // (level 1); it then waits, level by level, until no marker of `level`
  // holds a token below `below`, the token counter when it reached it.
  struct SyncWaiter {
    uint64_t after;
    int level;  // 0: not armed yet; levels() + 1: synced
    uint64_t below;
    std::function<void(const Status&)> done;
  };
  void Run() ABSL_LOCKS_EXCLUDED(mu_, build_mu_);
  // After builder pass `pass` (`busy`: it built something): advances the
  // sync waiters and returns those to answer. Called and returns with mu_
  // held; drops it to scan the store.
  std::vector<SyncWaiter> AdvanceSyncs(uint64_t pass, bool busy, const Status& pass_status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The smallest marker token of each level (index 1..levels; UINT64_MAX for
  // none; all 0 when the store cannot be read).
  std::vector<uint64_t> OldestTokens() ABSL_LOCKS_EXCLUDED(mu_);
  // Marks the boundary nodes of the fills newer than the fill cursor dirty
  // (the flusher reports only chunks it stores, not unstored ones a fill
  // covers) and advances the cursor, in one write.
  Status MarkNewFills() ABSL_EXCLUSIVE_LOCKS_REQUIRED(build_mu_);
  // Calls fn(level, node) for each node of levels 1..levels that the fill
  // covers in part (its boundary); RESOURCE_EXHAUSTED (calling fn for none)
  // when they are more than max_rebuild_nodes.
  Status ForEachFillBoundaryNode(const Fill& fill,
                                 const std::function<void(int, uint64_t)>& fn) const;
  // The node as reads see it: its record, or the newest fill covering it
  // wholly when that is newer than the record (or there is none). NOT_FOUND
  // when neither. `dirty` is not set.
  StatusOr<LodRead> ReadNode(const ChunkStore::Snapshot& snapshot, const FillSet& fills, int level,
                             uint64_t node) const;
  // One pass over the lowest dirty level; *did_work false when none is left.
  Status BuildDirty(bool* did_work) ABSL_LOCKS_EXCLUDED(build_mu_);
  // Builds the node into *out (record with its version).
  Status BuildNode(int level, uint64_t node, std::vector<uint8_t>* out);
  Status BuildLevel1(uint64_t node, uint8_t* dense, uint64_t* version);
  Status BuildUpper(int level, uint64_t node, uint8_t* dense, uint64_t* version);

  Database* const db_;
  const LodOptions options_;
  // One build (builder pass or RebuildAll) at a time. Lock order: build_mu_,
  // then the Database's and the store's locks; mu_ is never held with
  // build_mu_.
  Mutex build_mu_;
  // MarkAllForRebuild calls waiting for build_mu_: the builder lets them in
  // between its passes (the std::mutex under Mutex is not fair; they would
  // starve).
  std::atomic<int> markers_waiting_{0};
  Mutex mu_;
  CondVar cv_{&mu_};
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  Status last_error_ ABSL_GUARDED_BY(mu_);
  uint64_t passes_ ABSL_GUARDED_BY(mu_) = 0;  // builder passes begun
  std::vector<SyncWaiter> syncs_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point last_sync_check_;  // the builder's thread only
  std::thread thread_;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_LOD_H_
