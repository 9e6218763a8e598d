// The change feed: every committed write, in commit order, kept in memory
// for a while so that subscribers (daemon/subscriptions.h) can follow the
// database and resume after a disconnection (protocol/PROTOCOL.md,
// "Subscriptions").
//
// The database's committer publishes a write once its journal commit is
// durable, so a subscriber never sees a change that a crash could undo. A
// write is one ChangeRecord: its sequence number (the new version of every
// chunk it changed), its operation, and the chunks it changed with, when
// cheap to keep, the changed voxels. The feed retains the newest records up
// to a count and a byte budget; older ones are dropped, and reading from
// before them reports a gap (the reader must resynchronise from the store).
// Records of writes replayed at open are not in the feed: it starts at the
// last sequence number the database had when it opened.
//
// Thread-safety: thread-safe. Records are immutable once published.
#ifndef VOXDB_ENGINE_CHANGE_FEED_H_
#define VOXDB_ENGINE_CHANGE_FEED_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "engine/journal.h"
#include "engine/mutex.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

struct ChangedChunk {
  uint64_t code = 0;     // Morton code
  bool present = false;  // false: the chunk now reads as the fills (deleted, or filled whole)
  // kSetVoxels: the edits applied to this chunk, each PackEdit(local index,
  // material), in order; empty for the other operations.
  std::vector<uint32_t> edits;
};

struct ChangeRecord {
  uint64_t seq = 0;  // the write's sequence number: the new version of its chunks
  JournalOp op = JournalOp::kSetVoxels;
  // Each chunk the write changed once, in the order the write changed them.
  // A FILL_BOX lists the stored or cached chunks it rewrote; the chunks
  // that only read as the fills changed too (see `box`).
  std::vector<ChangedChunk> chunks;
  VoxelBox box;          // kWriteBox: the box written; kFillBox: the fill's box
  uint8_t material = 0;  // kFillBox
  // When its journal commit was known durable (set by the publisher).
  std::chrono::steady_clock::time_point durable;

  // Memory held, for the feed's byte budget.
  size_t MemoryUsage() const;
};

struct ChangeFeedOptions {
  size_t max_records = 100'000;         // DEFAULT: 100,000 writes
  size_t max_bytes = size_t{64} << 20;  // DEFAULT: 64 MiB
};

class ChangeFeed {
 public:
  // `start_seq`: every write up to it happened before the feed (reading
  // from before it is a gap).
  ChangeFeed(const ChangeFeedOptions& options, uint64_t start_seq);

  // Appends records in increasing seq order, then calls the listeners.
  void Publish(std::vector<std::shared_ptr<const ChangeRecord>> records) ABSL_LOCKS_EXCLUDED(mu_);

  // Appends to *out the records with seq > after, at most max_records of
  // them, oldest first. False (nothing appended) when records after `after`
  // were dropped already: the reader missed changes.
  bool Read(uint64_t after, size_t max_records,
            std::vector<std::shared_ptr<const ChangeRecord>>* out) const;

  // The newest seq published (start_seq before any).
  uint64_t last_seq() const;
  // Reading from any `after` >= this succeeds.
  uint64_t resume_floor() const;
  size_t records() const;
  size_t bytes() const;

  // Called after each Publish, on the publisher's thread (the committer):
  // must be quick and must not call back into the database's writes.
  void AddListener(std::function<void()> listener);

 private:
  const ChangeFeedOptions options_;
  mutable Mutex mu_;
  std::deque<std::shared_ptr<const ChangeRecord>> records_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_);
  uint64_t floor_ ABSL_GUARDED_BY(mu_);  // the newest seq dropped (or start_seq)
  // Publish copies them under mu_ and calls the copies after releasing it.
  std::vector<std::function<void()>> listeners_ ABSL_GUARDED_BY(mu_);
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_CHANGE_FEED_H_
