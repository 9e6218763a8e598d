// Flusher: writes dirty chunks back to the store. It keeps the dirty set
// (which chunks are dirty since which write, oldest first), the fills not
// yet persisted and the journal floor, and runs one thread that flushes in
// large transactions: when dirty bytes pass the high-water mark, when
// writers wait for room, when a chunk has been dirty longer than
// max_dirty_age, and on Flush(). Each flush transaction also stores the
// fills and last_seq it covers, what the observers add, and deletes the
// journal records every flushed state covers. A flushed state is never
// ahead of the journal: a flush waits until what it writes is durable.
//
// One flush batch goes: PickBatch (under the edit lock: take the oldest
// dirty chunks' copy-on-write state), AwaitJournal (until that state is
// durable), BuildWriteBatch (encode, outside every lock), WriteAndRetire
// (write, then mark the chunks clean, under the store-write lock).
//
// With a NodeResources (DatabaseOptions::node) the high-water mark and the
// waiting writers are the node's: the flusher registers with the node while
// its thread runs, is woken by it, and writes back its own dirty chunks
// (oldest first) while the node's dirty bytes are above the node's
// high-water mark or writers of any database wait for room.
//
// With a node that has a flush pool, the flusher is a task on the pool
// instead of a thread: posted when woken, asked to flush or stopped, and by
// a timer every tick (for max_dirty_age); at most one runs at a time
// (flush_scheduled_).
//
// Locks: the dirty set is guarded by the database's edit lock (`edit_mu`,
// given at construction: every write lists its chunks here while it
// applies). The flusher takes the store-write lock before the edit lock,
// and under the edit lock only cache shard locks (ChunkCache::TakeForFlush,
// MarkClean) and CurrentFills' lock. flush_mu_ (the requests) is a leaf.
// Because the analysis cannot see that the database's edit lock and
// `edit_mu_` here are one Mutex, the database says so with
// AssertEditLockHeld() before calling the methods that require it.
//
// Thread-safety: thread-safe.
#ifndef VOXDB_ENGINE_FLUSHER_H_
#define VOXDB_ENGINE_FLUSHER_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "engine/chunk.h"
#include "engine/chunk_store.h"
#include "engine/database.h"
#include "engine/fills.h"
#include "engine/mutex.h"
#include "engine/status.h"
#include "engine/worker_pool.h"

namespace voxdb::engine {

class ChunkCache;
class CurrentFills;
class GroupCommitter;
class NodeResources;
class WriteAdmission;

class Flusher {
 public:
  // Nothing is owned; everything must outlive the flusher. `edit_mu` is the
  // database's edit lock, `store_write_mu` its store-write lock (held
  // around every store write that must not race a rollback), `last_seq`
  // the newest sequence number handed out (read under `edit_mu`).
  Flusher(const DatabaseOptions& options, ChunkStore* store, ChunkCache* cache,
          const CurrentFills* fills, GroupCommitter* committer, WriteAdmission* admission,
          Mutex* edit_mu, Mutex* store_write_mu, const std::atomic<uint64_t>* last_seq);
  Flusher(const Flusher&) = delete;
  Flusher& operator=(const Flusher&) = delete;

  void Start();
  // Serves the Flush() requests still pending, then stops the thread.
  void Stop() ABSL_LOCKS_EXCLUDED(flush_mu_);

  // Writes back every chunk that became dirty with a write up to `target`
  // (and the fills and journal they cover). The first error of those
  // writes.
  Status Flush(uint64_t target) ABSL_LOCKS_EXCLUDED(flush_mu_);
  // Asks the flusher to look for work now (writers wait for room). On a
  // pool it takes flush_mu_ (a leaf but for the pool's lock).
  void Wake() ABSL_LOCKS_EXCLUDED(flush_mu_) {
    if (pool_) {
      MutexLock l(&flush_mu_);
      KickLocked();
    }
    flush_cv_.SignalAll();
  }

  // Whether the database has dirty chunks now (no lock).
  bool HoldsDirty() const;

  // --- The dirty set: the database's edit lock held ---
  void AssertEditLockHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK(edit_mu_) {}
  // `seq` changed the chunk `code`.
  void NoteDirty(uint64_t code, uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  // `fill` was applied; the next flush persists it.
  void AddFill(const Fill& fill) ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  // fn(code) for every dirty chunk, in Morton order.
  template <typename Fn>
  void ForEachDirty(Fn&& fn) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) {
    for (const auto& [code, info] : dirty_) fn(code);
  }
  size_t dirty_count() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) { return dirty_.size(); }
  // When the chunk dirty the longest became dirty (SteadyMicros); none when
  // nothing is dirty.
  std::optional<int64_t> OldestDirtySinceUs() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  // Forgets every dirty chunk and unpersisted fill (a rollback).
  void Clear() ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);

  // Bumped after each flush commits, before its chunks turn clean: a read
  // transaction older than that may miss what a clean chunk holds.
  uint64_t generation() const { return flush_generation_.load(std::memory_order_acquire); }
  uint64_t dirty_chunks() const { return dirty_chunks_.load(); }
  uint64_t flushes() const { return flushes_.load(); }
  uint64_t flushed_chunks() const { return flushed_chunks_.load(); }
  uint64_t flushed_bytes() const { return flushed_bytes_.load(); }

 private:
  struct DirtyInfo {
    uint64_t first_seq = 0;  // oldest edit not yet flushed
    uint64_t last_seq = 0;   // newest edit
    int64_t since_us = 0;    // when first_seq was applied
    bool in_flight = false;  // a flush holds a snapshot
    uint64_t snapshot_seq = 0;
    uint64_t pending_first = 0;  // first edit after the snapshot
  };
  // One flush transaction in the making.
  struct Batch {
    struct Item {
      uint64_t code = 0;
      std::shared_ptr<const Chunk> chunk;  // null: reads as the fills
      uint64_t version = 0;
    };
    std::vector<Item> items;
    std::vector<Fill> fills_to_persist;
    std::shared_ptr<const FillSet> fills;
    // Journal records below low_water are covered; those below
    // journal_floor are already gone.
    uint64_t low_water = 0, last_seq = 0, journal_floor = 0, epoch = 0;
  };

  void FlusherLoop() ABSL_LOCKS_EXCLUDED(flush_mu_);
  // How often the flusher looks for chunks older than max_dirty_age.
  std::chrono::milliseconds Tick() const;
  // The flush work FlusherLoop does once awake (not for a request): above
  // the high-water mark, then what is too old. Its first error.
  Status FlushDue();
  // On a pool: one pass of FlusherLoop without waiting; posts itself again
  // while there is work.
  void FlushTask() ABSL_LOCKS_EXCLUDED(flush_mu_);
  // On a pool: posts FlushTask unless it is scheduled.
  void KickLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(flush_mu_);
  // On a pool: sets the tick timer unless one is set.
  void ArmTickLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(flush_mu_);
  // Whether the flusher should flush without a request.
  bool OverHighWater() const;
  // Flushes up to one batch of dirty chunks whose first_seq <= max_first_seq
  // and that became dirty before `dirty_before_us`; sets *more when more such
  // chunks remain.
  Status FlushBatch(uint64_t max_first_seq, int64_t dirty_before_us, size_t max_bytes, bool* more)
      ABSL_LOCKS_EXCLUDED(edit_mu_, store_write_mu_);
  // Takes the oldest eligible dirty chunks' state (up to max_bytes) and
  // marks them in flight. Returns whether eligible chunks remain.
  bool PickBatch(uint64_t max_first_seq, int64_t dirty_before_us, size_t max_bytes, Batch* b)
      ABSL_LOCKS_EXCLUDED(edit_mu_);
  // Waits until everything the batch holds is durable, then adds the fills
  // it covers. False when a failed commit rolled writes back meanwhile (the
  // batch may hold them): start again.
  bool AwaitJournal(Batch* b) ABSL_LOCKS_EXCLUDED(edit_mu_);
  // The flush transaction: the chunks encoded, what the observers add, the
  // fills, last_seq and the journal range. Outside every lock (the chunk
  // states are immutable: copy on write). *bytes: the chunks' encoded size.
  WriteBatch BuildWriteBatch(const Batch& b, uint64_t* bytes) const;
  // Writes `batch` and retires the flushed chunks, all under the
  // store-write lock: no rollback in between. False (nothing written) when
  // a rollback happened since the batch was picked.
  bool WriteAndRetire(const Batch& b, const WriteBatch& batch, Status* status)
      ABSL_LOCKS_EXCLUDED(edit_mu_, store_write_mu_);
  // After the write: clean chunks leave the dirty set, ones written again
  // meanwhile stay with their newer edits; on failure all stay.
  void RetireLocked(const Batch& b, bool written) ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);

  const DatabaseOptions& options_;
  NodeResources* const node_;  // null: the database's own budget
  WorkerPool* const pool_;     // the node's flush pool; null: a thread of our own
  const std::shared_ptr<PoolToken> token_ = std::make_shared<PoolToken>();
  ChunkStore* const store_;
  ChunkCache* const cache_;
  const CurrentFills* const fills_;
  GroupCommitter* const committer_;
  WriteAdmission* const admission_;
  Mutex* const edit_mu_;
  Mutex* const store_write_mu_;
  const std::atomic<uint64_t>* const last_seq_;

  // The dirty set.
  std::map<uint64_t, DirtyInfo> dirty_ ABSL_GUARDED_BY(edit_mu_);
  // (first_seq, code) of every dirty chunk: oldest first.
  std::set<std::pair<uint64_t, uint64_t>> dirty_order_ ABSL_GUARDED_BY(edit_mu_);
  std::vector<Fill> unpersisted_fills_ ABSL_GUARDED_BY(edit_mu_);
  // Journal keys below it are gone.
  uint64_t journal_floor_ ABSL_GUARDED_BY(edit_mu_) = 0;
  std::atomic<uint64_t> dirty_chunks_{0};

  // Flush() requests: generation numbers, and the seq they must cover.
  Mutex flush_mu_;
  CondVar flush_cv_{&flush_mu_};    // work for the flusher
  CondVar flushed_cv_{&flush_mu_};  // a requested flush finished
  uint64_t flush_requested_ ABSL_GUARDED_BY(flush_mu_) = 0;
  uint64_t flush_served_ ABSL_GUARDED_BY(flush_mu_) = 0;
  // Flush all with first_seq <= this.
  uint64_t flush_target_ ABSL_GUARDED_BY(flush_mu_) = 0;
  // Of the last requested flush.
  Status flush_status_ ABSL_GUARDED_BY(flush_mu_);
  bool stop_flusher_ ABSL_GUARDED_BY(flush_mu_) = false;
  // On a pool: FlushTask is posted or running; the tick timer is set; it
  // fired (time for FlushDue); after a failed flush, no FlushDue before
  // backoff_until_.
  bool flush_scheduled_ ABSL_GUARDED_BY(flush_mu_) = false;
  bool tick_armed_ ABSL_GUARDED_BY(flush_mu_) = false;
  bool tick_due_ ABSL_GUARDED_BY(flush_mu_) = false;
  std::chrono::steady_clock::time_point backoff_until_ ABSL_GUARDED_BY(flush_mu_);

  std::atomic<uint64_t> flushes_{0}, flushed_chunks_{0}, flushed_bytes_{0};
  std::atomic<uint64_t> flush_generation_{0};
  std::thread thread_;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_FLUSHER_H_
