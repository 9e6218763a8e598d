// NodeResources: what the Databases of one node share, so that a node can
// host many partitions (one Database each) without giving each its own
// memory. Created once per node and handed to every Database through
// DatabaseOptions::node; with it, the node's budgets replace the Databases'
// own cache_bytes and dirty_bytes:
//   - the cache budget: the chunk caches of all Databases together hold at
//     most this much (clean chunks are evicted across partitions, see
//     MakeRoom);
//   - the dirty budget: dirty chunks of all Databases together hold at most
//     this much; a writer of any partition waits (and fails with BUSY after
//     its Database's busy_timeout) while the node is at its budget, and every
//     flusher with dirty chunks writes its own back, oldest first, while the
//     node is above its high-water mark.
// Each Database keeps its own figures (DatabaseStats); the node totals are
// here.
//
// The caches register themselves at construction (RegisterCache) and the
// flushers while their thread runs (RegisterFlusher), and leave before they
// are destroyed: registry_mu_ is held while the node calls into a member, so
// that leaving waits for such a call to finish.
//
// Locks, in the order they may be taken:
//   1. a Database's edit lock (held by a writer making room, MakeRoom)
//   2. room_mu_ (the dirty reservations: ReserveDirty)
//   3. registry_mu_ (the members; held while evicting from them or waking
//      them)
//   4. one ChunkCache shard lock at a time (ChunkCache::Evict), or one
//      Flusher's flush_mu_ (Flusher::Wake: on a pool it posts a task)
//   5. a WorkerPool's lock (a leaf; also taken under a GroupCommitter's
//      commit_mu_ and ack_mu_ to post their tasks)
// A cache never calls into the node while it holds a shard lock, and the
// node never holds one cache's lock while it calls into another: Evict
// takes and releases each shard lock itself.
//
// With commit_threads and flush_threads the node also runs the Databases'
// group committers, ackers and flushers on two shared WorkerPools, so that
// hundreds of Databases need a handful of threads (LOD builders, which the
// daemon runs per Database, are not shared).
//
// Example:
//   NodeResourcesOptions n;
//   n.cache_bytes = size_t{8} << 30;
//   n.dirty_bytes = size_t{2} << 30;
//   VOXDB_ASSIGN_OR_RETURN(std::shared_ptr<NodeResources> node, NodeResources::Create(n));
//   DatabaseOptions o;
//   o.node = node;                      // for every partition's Database
//   auto db = Database::Open(dir, o);
//
// Thread-safety: thread-safe. It must outlive its Databases (they hold it
// through their options), and its last reference must not be dropped on one
// of its own threads (a WriteDone callback, an observer): that would join
// the thread from itself.
#ifndef VOXDB_ENGINE_NODE_RESOURCES_H_
#define VOXDB_ENGINE_NODE_RESOURCES_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/mutex.h"
#include "engine/status.h"
#include "engine/worker_pool.h"

namespace voxdb::engine {

class ChunkCache;
class Flusher;

struct NodeResourcesOptions {
  // Memory for the cached chunks of all Databases, clean and dirty, in
  // bytes. DEFAULT: 4 GiB.
  size_t cache_bytes = size_t{4} << 30;
  // Dirty chunks of all Databases may hold at most this much; writers then
  // wait for the flushers. REQUIRES: <= cache_bytes. DEFAULT: 1 GiB.
  size_t dirty_bytes = size_t{1} << 30;
  // The flushers start when the node's dirty bytes pass this fraction of
  // dirty_bytes. REQUIRES: in (0, 1]. DEFAULT: 0.5.
  double flush_high_water = 0.5;
  // A cache that has not been read or written for this long counts as
  // idle: it is entitled to no share of the cache budget, and is the first
  // to give up clean chunks to the others. DEFAULT: 1 s.
  std::chrono::milliseconds idle_after{1000};
  // Threads the Databases' group committers and ackers share, and threads
  // their flushers share (WorkerPool). Two pools: a flush waits for the
  // journal commits it covers, so flushes must not hold every thread
  // commits could run on. 0 (both): each Database runs threads of its own.
  // REQUIRES: both 0 or both > 0. DEFAULT: 2 and 2.
  int commit_threads = 2;
  int flush_threads = 2;
};

class NodeResources {
 public:
  // INVALID for options outside their REQUIRES.
  static StatusOr<std::shared_ptr<NodeResources>> Create(const NodeResourcesOptions& options);
  explicit NodeResources(const NodeResourcesOptions& options);
  // REQUIRES: every Database using it is closed.
  ~NodeResources();
  NodeResources(const NodeResources&) = delete;
  NodeResources& operator=(const NodeResources&) = delete;

  // --- The budgets (may be changed while Databases run) ---
  size_t cache_budget() const { return cache_budget_.load(std::memory_order_relaxed); }
  size_t dirty_budget() const { return dirty_budget_.load(std::memory_order_relaxed); }
  void set_cache_budget(size_t bytes) { cache_budget_.store(bytes, std::memory_order_relaxed); }
  // Writers waiting for room look again.
  void set_dirty_budget(size_t bytes) ABSL_LOCKS_EXCLUDED(room_mu_);
  // Dirty bytes above which the flushers write back.
  int64_t high_water() const {
    return static_cast<int64_t>(options_.flush_high_water * static_cast<double>(dirty_budget()));
  }

  // --- Node totals ---
  // Memory of every cached chunk, clean and dirty, of all Databases.
  int64_t cache_bytes() const { return cache_bytes_.load(std::memory_order_relaxed); }
  int64_t dirty_bytes() const { return dirty_bytes_.load(std::memory_order_relaxed); }
  // Writers blocked in ReserveDirty now, of all Databases.
  int waiting_writers() const { return waiting_writers_.load(); }
  // Bytes of clean chunks evicted from a cache other than the one that
  // needed the room.
  uint64_t cross_evicted_bytes() const { return cross_evicted_bytes_.load(); }
  size_t caches() const ABSL_LOCKS_EXCLUDED(registry_mu_);
  size_t flushers() const ABSL_LOCKS_EXCLUDED(registry_mu_);

  // --- The shared threads (null: each Database runs its own) ---
  WorkerPool* commit_pool() const { return commit_pool_.get(); }
  WorkerPool* flush_pool() const { return flush_pool_.get(); }

  // --- For the caches ---
  void RegisterCache(ChunkCache* cache) ABSL_LOCKS_EXCLUDED(registry_mu_);
  // Waits for a MakeRoom evicting from it to finish.
  void UnregisterCache(ChunkCache* cache) ABSL_LOCKS_EXCLUDED(registry_mu_);
  // A cache's memory changed by these deltas (no lock needed).
  void AddBytes(int64_t cache_delta, int64_t dirty_delta) {
    if (cache_delta != 0) cache_bytes_.fetch_add(cache_delta, std::memory_order_relaxed);
    if (dirty_delta != 0) dirty_bytes_.fetch_add(dirty_delta, std::memory_order_relaxed);
  }
  // Evicts clean chunks so that the node's caches, plus `headroom` bytes
  // about to be added by `self`, fit the cache budget: first from `self`
  // while it holds more than its fair share (the budget divided among the
  // caches not idle), then from the other caches, those idle or furthest
  // above their share first. REQUIRES: no shard lock of any cache held.
  void MakeRoom(ChunkCache* self, size_t headroom) ABSL_LOCKS_EXCLUDED(registry_mu_);

  // --- For the write admission and the flushers ---
  void RegisterFlusher(Flusher* flusher) ABSL_LOCKS_EXCLUDED(registry_mu_);
  // Waits for a WakeFlushers calling it to finish.
  void UnregisterFlusher(Flusher* flusher) ABSL_LOCKS_EXCLUDED(registry_mu_);
  // Reserves `want` bytes of the node's dirty budget, waiting (and waking
  // the flushers) while they do not fit; a write larger than the budget
  // goes alone. False at `deadline`. Adds one to *waits when it starts to
  // wait.
  bool ReserveDirty(int64_t want, std::chrono::steady_clock::time_point deadline,
                    std::atomic<uint64_t>* waits) ABSL_LOCKS_EXCLUDED(room_mu_, registry_mu_);
  // Gives a reservation back (its bytes are dirty now, or its write
  // failed); wakes the flushers when the node is above its high-water mark.
  void ReleaseDirty(int64_t want) ABSL_LOCKS_EXCLUDED(room_mu_, registry_mu_);
  // Dirty bytes went down: the waiting writers look again.
  void WakeWriters() { room_cv_.SignalAll(); }
  // Whether a write would wait for room now.
  bool WritesWouldWait() const {
    return waiting_writers() > 0 || dirty_bytes() >= static_cast<int64_t>(dirty_budget());
  }
  // Whether the flushers should write back now: above the high-water mark,
  // or writers wait for room.
  bool FlushWanted() const { return dirty_bytes() > high_water() || waiting_writers() > 0; }
  // Asks every flusher holding dirty chunks to look for work (at most once a
  // millisecond).
  void WakeFlushers() ABSL_LOCKS_EXCLUDED(registry_mu_);

 private:
  bool FitsLocked(int64_t want) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(room_mu_);

  const NodeResourcesOptions options_;
  std::atomic<size_t> cache_budget_;
  std::atomic<size_t> dirty_budget_;
  std::atomic<int64_t> cache_bytes_{0};
  std::atomic<int64_t> dirty_bytes_{0};
  std::atomic<int> waiting_writers_{0};
  std::atomic<uint64_t> cross_evicted_bytes_{0};
  std::atomic<int64_t> last_flusher_wake_us_{0};

  Mutex room_mu_;
  CondVar room_cv_{&room_mu_};
  int64_t reserved_ ABSL_GUARDED_BY(room_mu_) = 0;  // admitted, not yet applied

  mutable Mutex registry_mu_;
  std::vector<ChunkCache*> caches_ ABSL_GUARDED_BY(registry_mu_);
  std::vector<Flusher*> flushers_ ABSL_GUARDED_BY(registry_mu_);

  // Declared last, so joined first: a worker may still be in ReleaseDirty
  // or WakeFlushers.
  std::unique_ptr<WorkerPool> commit_pool_;
  std::unique_ptr<WorkerPool> flush_pool_;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_NODE_RESOURCES_H_
