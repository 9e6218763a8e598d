// WriteAdmission: the database's back-pressure. Before a write is applied
// it reserves room in the dirty-bytes budget (ReserveRoom), waiting for the
// flusher when the budget is full; in kAsync it also waits while the journal
// lags too far behind the writes already acknowledged (WaitForJournal).
// Either wait fails with BUSY after DatabaseOptions::busy_timeout.
//
// With a NodeResources (DatabaseOptions::node) the dirty-bytes budget is the
// node's: the reservations are the node's (NodeResources::ReserveDirty), so
// a writer of this database waits while any database of the node holds the
// room, and the flushers of all of them are woken.
//
// Locks: mu_ (the reservations) is a leaf: nothing is taken under it. A
// writer waiting for room wakes the flusher through `wake_flusher`, which
// must take no lock. With a node, the node's room lock is taken instead of
// mu_, and the node wakes the flushers (engine/node_resources.h has the lock
// order).
//
// Thread-safety: thread-safe.
#ifndef VOXDB_ENGINE_WRITE_ADMISSION_H_
#define VOXDB_ENGINE_WRITE_ADMISSION_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "engine/database.h"
#include "engine/mutex.h"
#include "engine/node_resources.h"
#include "engine/status.h"

namespace voxdb::engine {

class ChunkCache;
class GroupCommitter;

class WriteAdmission {
 public:
  // Neither is owned; both must outlive this. `wake_flusher` asks the
  // flusher to make room.
  WriteAdmission(const DatabaseOptions& options, const ChunkCache* cache, GroupCommitter* committer,
                 std::function<void()> wake_flusher);
  WriteAdmission(const WriteAdmission&) = delete;
  WriteAdmission& operator=(const WriteAdmission&) = delete;

  // Reserves `estimate` bytes of the dirty budget, waiting for the flusher
  // when they do not fit. BUSY after busy_timeout.
  Status ReserveRoom(size_t estimate) ABSL_LOCKS_EXCLUDED(mu_);
  // Gives back a reservation once its write has been applied (its bytes
  // are dirty now) or has failed.
  void ReleaseRoom(size_t estimate) ABSL_LOCKS_EXCLUDED(mu_);
  // Dirty bytes went down, or the database closes: wakes the writers
  // waiting for room to look again.
  void WakeWriters() {
    if (node_) node_->WakeWriters();
    room_cv_.SignalAll();
  }

  // kAsync back-pressure: waits while the oldest write not yet committed is
  // older than AsyncLagBoundMicros(). BUSY after busy_timeout.
  Status WaitForJournal();

  // See Database::WritesWouldWait.
  bool WritesWouldWait() const;
  // Writers blocked in ReserveRoom now.
  int waiting_writers() const { return waiting_writers_.load(); }
  uint64_t write_waits() const { return write_waits_.load(); }
  uint64_t busy_rejections() const { return busy_rejections_.load(); }

 private:
  bool FitsLocked(int64_t want) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t AsyncLagBoundMicros() const;

  const DatabaseOptions& options_;
  NodeResources* const node_;  // null: the database's own budget
  const ChunkCache* const cache_;
  GroupCommitter* const committer_;
  const std::function<void()> wake_flusher_;

  Mutex mu_;
  CondVar room_cv_{&mu_};
  int64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;  // admitted, not yet applied
  std::atomic<int> waiting_writers_{0};        // writers blocked on back-pressure
  std::atomic<uint64_t> write_waits_{0}, busy_rejections_{0};
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_WRITE_ADMISSION_H_
