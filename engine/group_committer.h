// GroupCommitter: the journal's group commit. Writers queue their journal
// records (Enqueue); one thread commits every queued record in one LMDB
// transaction, and a second thread answers the writers, so that waking the
// writers of one commit overlaps the next commit's fsync.
//
// It also keeps the sequence numbers that say how far the journal is:
//   committed_seq  every write up to it is in a committed transaction;
//   durable_seq    every write up to it is on disk (or failed and was
//                  rolled back): kSync readers see nothing newer.
// and the rollback epoch, bumped each time a failed commit rolled the
// database back, so that a reader can tell that what it read may be gone
// (WaitDurable).
//
// With lazy meta sync (StoreOptions::lazy_meta_sync) a commit is durable
// only once the following commit, or a Sync when the committer goes idle,
// has flushed its meta page: its writers are answered then.
//
// Immediately before each journal commit, the committer asks the owner's
// `check` function whether the batch may commit (engine/database.cc: the
// batch's epoch is not fenced); when it refuses, the batch fails as a
// commit that failed would, with its status.
//
// When a commit fails, the committer calls the owner's `fail` function with
// the batch (engine/database.cc rolls the database back to its durable state,
// then calls TakeQueued, MarkRolledBack and Answer here).
//
// With a NodeResources that has a commit pool (DatabaseOptions::node), the
// committer and the acker are tasks on the node's pool instead of threads:
// each is posted when it has work, at most one of each runs at a time (the
// commit_scheduled_ and ack_scheduled_ flags), and the kAsync gathering
// interval is a timer of the pool. Commits stay in order, and answers come
// after durability, as with threads.
//
// Locks: commit_mu_ (the queue, the commit-now flag, committed_seq_'s
// waiters), durable_mu_ (durable_seq_'s waiters) and ack_mu_ (the answers)
// are leaves but for the pool's lock (posting a task): nothing else is taken
// under them, and no callback runs under them.
// A caller may hold the database's edit lock (and the store-write lock)
// while calling Enqueue, TakeQueued or MarkRolledBack.
//
// Thread-safety: thread-safe.
#ifndef VOXDB_ENGINE_GROUP_COMMITTER_H_
#define VOXDB_ENGINE_GROUP_COMMITTER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "engine/change_feed.h"
#include "engine/chunk_store.h"
#include "engine/database.h"
#include "engine/mutex.h"
#include "engine/status.h"
#include "engine/worker_pool.h"

namespace voxdb::engine {

// The steady clock in microseconds: the time stamps of the write path
// (queued writes, dirty chunks).
inline int64_t SteadyMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class GroupCommitter {
 public:
  // One write's journal record, queued for the next commit.
  struct Pending {
    uint64_t seq;
    int64_t enqueued_us;  // SteadyMicros() when queued (async lag)
    std::vector<uint8_t> record;
    WriteDone done;                        // null in async mode (already acknowledged)
    std::shared_ptr<ChangeRecord> change;  // for the change feed
  };
  // Called on the committer thread when a batch failed (`written`: its
  // transaction committed but its sync failed), with no lock held.
  using FailFn = std::function<void(const Status& cause, std::vector<Pending> batch, bool written)>;
  // Called on the committer thread before each commit with the sequence
  // number of the batch's oldest write, with no lock held: an error fails
  // the batch (FailFn, not written).
  using CheckFn = std::function<Status(uint64_t first_seq)>;

  // `store` must outlive the committer. `check` may be empty.
  GroupCommitter(const DatabaseOptions& options, ChunkStore* store, FailFn fail,
                 CheckFn check = {});
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  // Every write up to `last_seq` is durable (replayed at open); starts the
  // threads and the change feed.
  void Start(uint64_t last_seq);
  // Commits what is queued, then stops both threads (after answering every
  // writer). Once stopped nothing more becomes durable.
  void Stop();

  // Queues a write's record for the next commit.
  void Enqueue(Pending pending) ABSL_LOCKS_EXCLUDED(commit_mu_);

  // Returns once every write up to `seq` is durable (true), or false when a
  // failed commit rolled writes back since `epoch` (epoch() read before
  // what is to be checked was read): read again. Only in kSync unless
  // any_mode. The caller must hold no store read transaction (a commit
  // growing the map waits for them all) and no lock.
  bool WaitDurable(uint64_t seq, uint64_t epoch, bool any_mode = false)
      ABSL_LOCKS_EXCLUDED(commit_mu_, durable_mu_);
  bool IsDurable(uint64_t seq, uint64_t epoch) const;
  // kAsync back-pressure: returns true once the oldest write not yet
  // committed is at most `bound_us` old (or the committer is stopping),
  // asking the committer to commit now meanwhile; false at `deadline`.
  // Counts journal_waits once when it has to wait.
  bool WaitForLag(int64_t bound_us, std::chrono::steady_clock::time_point deadline)
      ABSL_LOCKS_EXCLUDED(commit_mu_);

  // --- The failure path (engine/database.cc, Fail) ---
  // Takes every write queued behind the failed batch: applied on top of
  // it, they are rolled back with it.
  std::vector<Pending> TakeQueued() ABSL_LOCKS_EXCLUDED(commit_mu_);
  // The database was rolled back: bumps the epoch and counts the rollback;
  // every number up to `resolved` is now durable or failed. The caller
  // holds the edit lock (so no write is applied meanwhile).
  void MarkRolledBack(uint64_t resolved) ABSL_LOCKS_EXCLUDED(commit_mu_, durable_mu_);
  // Wakes the waiters of durable_seq and committed_seq after
  // MarkRolledBack, once the caller has let go of its locks.
  void WakeAfterRollback();
  // Answers every write in `batch` with `status` (on the acker thread).
  void Answer(Status status, std::vector<Pending> batch) ABSL_LOCKS_EXCLUDED(ack_mu_);

  ChangeFeed& feed() { return *feed_; }
  uint64_t epoch() const { return reset_epoch_.load(std::memory_order_acquire); }
  uint64_t committed_seq() const { return committed_seq_.load(); }
  uint64_t durable_seq() const { return durable_seq_.load(); }
  uint64_t rollbacks() const { return rollbacks_.load(); }
  uint64_t journal_waits() const { return journal_waits_.load(); }
  uint64_t journal_records() const { return journal_records_.load(); }
  uint64_t journal_bytes() const { return journal_bytes_.load(); }
  uint64_t journal_commits() const { return journal_commits_.load(); }

 private:
  void CommitterLoop();
  void AckerLoop();
  // Commits `batch` (taken from pending_), and acknowledges or fails it and
  // what `unacked` held.
  void CommitBatch(std::vector<Pending> batch, std::vector<Pending>* unacked);
  // On a pool: one pass of CommitterLoop, without waiting; posts itself
  // again while there is work.
  void CommitTask() ABSL_LOCKS_EXCLUDED(commit_mu_);
  // On a pool: posts CommitTask unless it is scheduled; `now` also ends a
  // kAsync gathering interval early.
  void KickLocked(bool now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_);
  void AckTask() ABSL_LOCKS_EXCLUDED(ack_mu_);
  // A batch is durable: publishes it, moves durable_seq_, queues its
  // acknowledgements.
  void Acknowledge(std::vector<Pending> batch);
  // Gives the change feed the batch's records.
  void Publish(const std::vector<Pending>& batch);
  // Syncs the store to make `unacked` (committed with lazy meta sync)
  // durable, and acknowledges or fails it.
  void SyncUnacked(std::vector<Pending>* unacked);
  // The enqueue time of the oldest write not yet committed; 0 for none.
  int64_t OldestUncommittedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_);

  const DatabaseOptions& options_;
  ChunkStore* const store_;
  const FailFn fail_;
  const CheckFn check_;
  // The node's commit pool; null: threads of our own.
  WorkerPool* const pool_;
  const std::shared_ptr<PoolToken> token_ = std::make_shared<PoolToken>();
  // Committed writes, published once durable (created by Start).
  std::unique_ptr<ChangeFeed> feed_;

  Mutex commit_mu_;
  CondVar commit_cv_{&commit_mu_};     // work for the committer
  CondVar committed_cv_{&commit_mu_};  // committed_seq_ moved
  std::vector<Pending> pending_ ABSL_GUARDED_BY(commit_mu_);
  bool commit_now_ ABSL_GUARDED_BY(commit_mu_) = false;
  bool stop_committer_ ABSL_GUARDED_BY(commit_mu_) = false;
  // The batch committing: its oldest write's enqueue time.
  int64_t inflight_oldest_us_ ABSL_GUARDED_BY(commit_mu_) = 0;
  // On a pool: CommitTask is posted or running (or gathering: waiting for
  // its timer, whose generation is gather_gen_).
  bool commit_scheduled_ ABSL_GUARDED_BY(commit_mu_) = false;
  bool gathering_ ABSL_GUARDED_BY(commit_mu_) = false;
  uint64_t gather_gen_ ABSL_GUARDED_BY(commit_mu_) = 0;
  std::optional<std::chrono::steady_clock::time_point> gather_deadline_ ABSL_GUARDED_BY(commit_mu_);
  // On a pool: CommitterLoop's `unacked`, used by one CommitTask at a time.
  std::vector<Pending> unacked_;
  // Written under commit_mu_ (or after Stop); read anywhere.
  std::atomic<uint64_t> committed_seq_{0};
  std::atomic<uint64_t> journal_waits_{0};

  // Every write up to durable_seq_ is durable (or failed and rolled back).
  Mutex durable_mu_;
  CondVar durable_cv_{&durable_mu_};
  // Written under durable_mu_; read anywhere.
  std::atomic<uint64_t> durable_seq_{0};
  bool committer_stopped_ ABSL_GUARDED_BY(durable_mu_) = false;
  // Bumped (under the database's store-write and edit locks) each time a
  // failed commit rolled the database back: what was read before may be
  // gone.
  std::atomic<uint64_t> reset_epoch_{0};
  std::atomic<uint64_t> rollbacks_{0};
  std::atomic<uint64_t> journal_records_{0}, journal_bytes_{0}, journal_commits_{0};

  // Answers run on their own thread, so that waking the writers of one
  // commit overlaps the next commit's fsync.
  Mutex ack_mu_;
  CondVar ack_cv_{&ack_mu_};
  std::vector<std::pair<Status, std::vector<Pending>>> acks_ ABSL_GUARDED_BY(ack_mu_);
  bool stop_acker_ ABSL_GUARDED_BY(ack_mu_) = false;
  bool ack_scheduled_ ABSL_GUARDED_BY(ack_mu_) = false;  // on a pool: AckTask posted or running

  std::thread committer_;
  std::thread acker_;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_GROUP_COMMITTER_H_
