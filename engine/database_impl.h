// Database::Impl, the engine's orchestrator (engine/database.h is the front
// door, engine/database.cc the lock order and the lifecycle, reads and
// rollback; engine/database_write.cc the write path). Private to the engine:
// only those two files include it.
//
// Thread-safety: as Database; the locking rules are at the top of
// engine/database.cc and in the annotations below.
#ifndef VOXDB_ENGINE_DATABASE_IMPL_H_
#define VOXDB_ENGINE_DATABASE_IMPL_H_

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "engine/chunk_cache.h"
#include "engine/database.h"
#include "engine/database_snapshot.h"
#include "engine/fills.h"
#include "engine/flusher.h"
#include "engine/group_committer.h"
#include "engine/journal.h"
#include "engine/mutex.h"
#include "engine/write_admission.h"

namespace voxdb::engine {

class Database::Impl {
 public:
  Impl(const DatabaseOptions& options, std::unique_ptr<ChunkStore> store)
      : options_(options),
        store_(std::move(store)),
        committer_(
            options_, store_.get(),
            [this](const Status& cause, std::vector<Pending> batch, bool written) {
              Fail(cause, std::move(batch), written);
            },
            [this](uint64_t first_seq) { return CheckCommitEpoch(first_seq); }),
        cache_(options_, store_.get(), &fills_),
        admission_(options_, &cache_, &committer_, [this] { flusher_.Wake(); }),
        flusher_(options_, store_.get(), &cache_, &fills_, &committer_, &admission_, &edit_mu_,
                 &store_write_mu_, &last_seq_) {}
  ~Impl() { Close(); }

  // INVALID for options Open refuses.
  static Status CheckOptions(const DatabaseOptions& options);
  Status Open() ABSL_LOCKS_EXCLUDED(edit_mu_);
  void Close() ABSL_LOCKS_EXCLUDED(store_write_mu_, edit_mu_);
  const WorldFrame& frame() const { return store_->frame(); }
  ChunkStore& store() { return *store_; }
  ChangeFeed* feed() { return &committer_.feed(); }
  int zstd_level() const { return options_.zstd_level; }
  uint64_t max_box_voxels() const { return options_.max_box_voxels; }

  Status GetChunks(std::span<const ChunkKey> keys,
                   const std::function<void(size_t, const ChunkRead&)>& fn);
  Status GetVoxels(std::span<const VoxelCoord> at, uint8_t* out);
  Status ReadBox(const VoxelBox& box, uint8_t* out, const std::atomic<bool>* cancel);

  void SetVoxels(std::span<const VoxelEdit> edits, WriteDone done);
  void WriteBox(const VoxelBox& box, std::span<const uint8_t> voxels, WriteDone done);
  void FillBox(const VoxelBox& box, uint8_t material, WriteDone done);
  void PutChunk(ChunkKey key, std::span<const uint8_t> record,
                std::optional<uint64_t> expected_version, WriteDone done);
  void DeleteChunk(ChunkKey key, WriteDone done);
  Status Flush() ABSL_LOCKS_EXCLUDED(edit_mu_);
  DatabaseStats Stats() const ABSL_LOCKS_EXCLUDED(edit_mu_);

  std::shared_ptr<const FillSet> Fills() const { return fills_.Get(); }

  // Waits until every write submitted so far is durable. The error of the
  // failed commit that rolled some of them back, if one did.
  Status WaitForSubmitted() ABSL_LOCKS_EXCLUDED(edit_mu_) {
    uint64_t target, epoch;
    {
      MutexLock lock(&edit_mu_);
      target = next_seq_ - 1;
      epoch = committer_.epoch();
    }
    if (committer_.WaitDurable(target, epoch, /*any_mode=*/true)) return absl::OkStatus();
    MutexLock lock(&edit_mu_);
    return last_failure_;
  }

  std::vector<Database::DirtyChunk> DirtyChunks() ABSL_LOCKS_EXCLUDED(edit_mu_) {
    for (;;) {
      std::vector<Database::DirtyChunk> out;
      uint64_t epoch, newest = 0;
      {
        MutexLock lock(&edit_mu_);
        epoch = committer_.epoch();
        flusher_.AssertEditLockHeld();
        out.reserve(flusher_.dirty_count());
        flusher_.ForEachDirty([&](uint64_t code) {
          uint64_t version;
          bool present;
          if (!cache_.Peek(code, &version, &present)) return;
          out.push_back({ChunkKey::FromCode(code), version, present});
          newest = std::max(newest, version);
        });
      }
      // kSync: only once all of it is durable (else list again).
      if (committer_.WaitDurable(newest, epoch)) return out;
    }
  }

  Status RebuildFromStore(
      const std::function<Status(const ChunkStore::Snapshot&, WriteBatch*)>& build)
      ABSL_LOCKS_EXCLUDED(store_write_mu_) {
    MutexLock l(&store_write_mu_);
    WriteBatch batch;
    {
      VOXDB_ASSIGN_OR_RETURN(auto snapshot, store_->BeginRead());
      VOXDB_RETURN_IF_ERROR(build(*snapshot, &batch));
    }
    return store_->Write(batch);
  }

  // The parts of a DatabaseSnapshot that need the internals: no flush may
  // commit (store_write_mu_) and no write may apply (edit_mu_) between the
  // read transaction and the list of dirty chunks, so that the two are one
  // moment. Dirty chunks are marked held by readers: their writers copy
  // them.
  Status CaptureSnapshotState(
      std::unique_ptr<ChunkStore::Snapshot>* store,
      std::map<uint64_t, std::pair<std::shared_ptr<const Chunk>, uint64_t>>* dirty,
      std::shared_ptr<const FillSet>* fills, uint64_t* seq, uint64_t* epoch)
      ABSL_LOCKS_EXCLUDED(store_write_mu_, edit_mu_) {
    MutexLock w(&store_write_mu_);
    MutexLock lock(&edit_mu_);
    *epoch = committer_.epoch();
    VOXDB_ASSIGN_OR_RETURN(*store, store_->BeginLongRead());
    flusher_.AssertEditLockHeld();
    flusher_.ForEachDirty([&](uint64_t code) {
      std::shared_ptr<const Chunk> chunk;
      uint64_t version;
      if (!cache_.Share(code, &chunk, &version)) return;
      dirty->emplace(code, std::make_pair(std::move(chunk), version));
    });
    *fills = fills_.Get();
    *seq = next_seq_ - 1;
    return absl::OkStatus();
  }

  // See GroupCommitter::WaitDurable.
  bool WaitDurable(uint64_t seq, uint64_t epoch, bool any_mode = false) {
    return committer_.WaitDurable(seq, epoch, any_mode);
  }
  // OUT_OF_BOUNDS / INVALID / TOO_LARGE for a box ReadBox or WriteBox refuses.
  Status CheckReadBox(const VoxelBox& box) const;

  bool WritesWouldWait() const { return admission_.WritesWouldWait(); }

  // --- Partition and epochs (see Database) ---
  const PartitionIdentity& partition() const { return partition_; }
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  EpochHistory epoch_history() const ABSL_LOCKS_EXCLUDED(partition_mu_) {
    MutexLock l(&partition_mu_);
    return epoch_history_;
  }
  Status AdoptEpoch(uint64_t epoch) ABSL_LOCKS_EXCLUDED(edit_mu_, partition_mu_);
  void Fence(uint64_t min_epoch) {
    uint64_t cur = fenced_below_.load(std::memory_order_acquire);
    while (cur < min_epoch && !fenced_below_.compare_exchange_weak(cur, min_epoch)) {
    }
  }
  // WRONG_PARTITION for a chunk code outside the partition's range.
  Status CheckInPartition(uint64_t code) const;

 private:
  using Entry = ChunkCache::Entry;
  using ChunkRef = ChunkCache::ChunkRef;
  using Need = ChunkCache::Need;

  // --- Writes: all under edit_mu_ ---
  // Changes a pinned entry (ChunkCache::MarkDirty) and lists it dirty.
  // Returns what the change feed records of it.
  template <typename F>
  ChangedChunk Change(uint64_t code, Entry* e, uint64_t seq, F&& mutate)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);

  // Applies a validated write: waits for room for `estimate` more dirty
  // bytes, takes a sequence number, runs apply(seq) under edit_mu_ and queues
  // the journal record.
  // `describe`, when set, adds what the change feed keeps of the write
  // (the changed voxels) to its record once applied.
  template <typename Fn>
  void Submit(std::vector<uint8_t> record, WriteDone done, size_t estimate, Fn&& apply,
              const std::function<void(ChangeRecord*)>& describe = {})
      ABSL_LOCKS_EXCLUDED(edit_mu_);
  // The Apply* functions apply a validated write as `seq` and return the
  // chunks it changed, in the order it changed them (for the change feed).
  // They fail before they change anything.
  using Changes = std::vector<ChangedChunk>;
  StatusOr<Changes> ApplySetVoxels(uint64_t seq, const std::vector<ChunkEdits>& edits)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  StatusOr<Changes> ApplyWriteBox(uint64_t seq, const VoxelBox& box,
                                  std::span<const uint8_t> voxels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  StatusOr<Changes> ApplyFillBox(uint64_t seq, const VoxelBox& box, uint8_t material)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  StatusOr<Changes> ApplyPutChunk(uint64_t seq, uint64_t code, std::span<const uint8_t> record,
                                  std::optional<uint64_t> expected)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  StatusOr<Changes> ApplyDeleteChunk(uint64_t seq, uint64_t code)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  StatusOr<Changes> ApplyRecord(uint64_t seq, const JournalRecord& rec)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  // Reads the fills table into fills_.
  Status LoadFills();
  // Reads the partition identity and epoch history from meta, compares the
  // identity with the options' (MISMATCH) or stores it when there is none.
  Status LoadPartition() ABSL_LOCKS_EXCLUDED(partition_mu_);
  // WRONG_PARTITION when some chunk of `box` (a valid box) is outside the
  // partition's range.
  Status CheckBoxInPartition(const VoxelBox& box) const;
  // WRONG_PARTITION while the current epoch is fenced (Fence).
  Status CheckNotFenced() const;
  // The group committer's check before each journal commit: the epoch of
  // the oldest write in it (`first_seq`) is not fenced, and the fence
  // callback accepts it.
  Status CheckCommitEpoch(uint64_t first_seq) const ABSL_LOCKS_EXCLUDED(partition_mu_);
  // Applies every journal record in the store.
  Status ReplayLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  // Persists (synced) a new reservation of sequence numbers from next_seq_.
  Status ReserveSeqs() ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  // `part` (inside chunk c) in the chunk's own coordinates.
  LocalBox LocalPart(const VoxelBox& part, ChunkCoord c) const {
    const VoxelCoord o = frame().ChunkOrigin(c);
    return LocalBox{{static_cast<uint32_t>(part.lo.x - o.x), static_cast<uint32_t>(part.lo.y - o.y),
                     static_cast<uint32_t>(part.lo.z - o.z)},
                    {static_cast<uint32_t>(part.hi.x - o.x), static_cast<uint32_t>(part.hi.y - o.y),
                     static_cast<uint32_t>(part.hi.z - o.z)}};
  }
  // The most dirty memory one write may ask for: half the dirty budget, but
  // always enough for a 2 x 2 x 2 block of whole chunks (which then goes
  // alone if it must).
  size_t MaxWriteBytes() const {
    constexpr size_t kOneChunk = kChunkVoxels + 2 * sizeof(Brick) * kBricksPerChunk + 4096;
    return std::max(options_.dirty_bytes / 2, 8 * kOneChunk);
  }

  // --- Committer and flusher ---
  using Pending = GroupCommitter::Pending;
  // A batch failed (`written`: its transaction committed but its sync
  // failed): removes its records from the journal, rolls the database back
  // to its durable state (failing every write queued behind it too) and
  // answers them all with the error.
  void Fail(const Status& cause, std::vector<Pending> batch, bool written)
      ABSL_LOCKS_EXCLUDED(store_write_mu_, edit_mu_);
  // Empties the cache and reloads fills and journal: the durable state.
  Status ReloadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(store_write_mu_, edit_mu_);

  const DatabaseOptions options_;
  const std::unique_ptr<ChunkStore> store_;
  GroupCommitter committer_;
  CurrentFills fills_;
  ChunkCache cache_;
  WriteAdmission admission_;

  // Writes.
  mutable Mutex edit_mu_;
  uint64_t next_seq_ ABSL_GUARDED_BY(edit_mu_) = 1;
  bool closing_ ABSL_GUARDED_BY(edit_mu_) = false;
  // No sequence number above it has been handed out (kMetaSeqReserved).
  uint64_t seq_reserved_ ABSL_GUARDED_BY(edit_mu_) = 0;
  // Set when the disk failed a sync and the undo: every write fails with it.
  Status poisoned_ ABSL_GUARDED_BY(edit_mu_);
  // Of the last failed commit.
  Status last_failure_ ABSL_GUARDED_BY(edit_mu_);
  // next_seq_ - 1, written under edit_mu_; read anywhere.
  std::atomic<uint64_t> last_seq_{0};
  // Held around the flusher's store writes, RebuildFromStore,
  // CaptureSnapshotState and the rollback.
  Mutex store_write_mu_;
  Flusher flusher_;

  // Partition: the identity is set by Open, before any other thread runs.
  PartitionIdentity partition_;
  bool whole_range_ = true;  // partition_.range is the whole key space
  // A leaf: taken under edit_mu_ (AdoptEpoch) or alone (the committer).
  mutable Mutex partition_mu_;
  EpochHistory epoch_history_ ABSL_GUARDED_BY(partition_mu_);
  // The last epoch of epoch_history_; written under edit_mu_ and
  // partition_mu_, read anywhere.
  std::atomic<uint64_t> epoch_{0};
  // Epochs below it are stale (Fence); it only rises.
  std::atomic<uint64_t> fenced_below_{0};

  uint64_t replayed_ = 0;
  bool open_ = false;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_DATABASE_IMPL_H_
