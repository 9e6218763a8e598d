// Database::Impl: the orchestrator of the engine's parts (engine/database.h
// is the front door, engine/database_impl.h the class). This file opens the
// store and replays the journal, serves the reads, runs the rollback when a
// journal commit fails, and forwards the front door's calls; the write path
// (validation, Submit and the Apply* functions, which recovery replays
// through too) is engine/database_write.cc. The parts, each with its own
// state and lock:
//   ChunkCache      (chunk_cache.h)        the sharded write-back cache
//   GroupCommitter  (group_committer.h)    the journal, durable sequence numbers
//   Flusher         (flusher.h)            the dirty set, writing chunks back
//   WriteAdmission  (write_admission.h)    back-pressure
//   SnapshotRegistry (database_snapshot.h) the live DatabaseSnapshots
//
// Lock order. A thread holding a lock may take only locks below it:
//   1. store_write_mu_ (Impl)      no flush commits, no rollback (held by the
//                                  flusher's store write, RebuildFromStore,
//                                  CaptureSnapshotState and Fail)
//   2. edit_mu_ (Impl)             writes apply one at a time: sequence
//                                  numbers, and the flusher's dirty set
//   3. ChunkCache shard `mu`       one shard at a time
//   4. leaves, nothing under them: CurrentFills' lock, GroupCommitter's
//      commit_mu_ / durable_mu_ / ack_mu_, Flusher::flush_mu_,
//      WriteAdmission's lock, SnapshotRegistry::mu, the ChangeFeed's lock,
//      partition_mu_ (Impl, the epoch history).
// LMDB's own write lock (ChunkStore::Write) may be taken under 1 and 2 (the
// seq reservation, the undo of a failed commit, the final write of Close)
// but under no lock of 3 or 4. A store read transaction is never held while
// waiting for the journal (GroupCommitter::WaitDurable takes no lock of
// ours, but a commit growing the map waits for every reader), and no
// callback (WriteDone, observers, on_commit, on_flush) runs under any lock.
//
// The compiler checks what it can: edit_mu_ and store_write_mu_ are
// voxdb::Mutex and the state under them is ABSL_GUARDED_BY; the flusher's
// dirty set is under edit_mu_ too, reached through a pointer the analysis
// cannot tie to ours (hence flusher_.AssertEditLockHeld() where we hold it).
#include "engine/database.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <unordered_map>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/database_impl.h"
#include "engine/format.h"
#include "engine/morton_box.h"
#include "engine/partition_range.h"

namespace voxdb::engine {

// --- Open, replay, close ------------------------------------------------------

Status Database::Impl::CheckOptions(const DatabaseOptions& options) {
  if (options.dirty_bytes == 0 || options.dirty_bytes > options.cache_bytes) {
    return absl::InvalidArgumentError("dirty_bytes must be in (0, cache_bytes]");
  }
  if (!(options.flush_high_water > 0 && options.flush_high_water <= 1)) {
    return absl::InvalidArgumentError("flush_high_water must be in (0, 1]");
  }
  return CheckPartitionIdentity(options.partition);
}

Status Database::Impl::Open() {
  VOXDB_RETURN_IF_ERROR(LoadPartition());
  VOXDB_RETURN_IF_ERROR(LoadFills());
  uint64_t last = 0;
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
    auto meta = snap->Get(Table::kMeta, AsBytes(kMetaLastSeq));
    if (meta.ok() && meta->size() == 8) last = DecodeFixed64(meta->data());
    // Numbers up to the reservation may have been handed out to writes a
    // crash lost: never again.
    auto reserved = snap->Get(Table::kMeta, AsBytes(kMetaSeqReserved));
    if (reserved.ok() && reserved->size() == 8)
      last = std::max(last, DecodeFixed64(reserved->data()));
    auto journal_last = snap->LastKey(Table::kJournal);
    if (journal_last.ok()) last = std::max(last, DecodeJournalKey(*journal_last));
    for (const Fill& f : fills_.Get()->fills()) last = std::max(last, f.seq);
  }
  {
    MutexLock lock(&edit_mu_);
    next_seq_ = last + 1;
    last_seq_ = last;
    seq_reserved_ = last;
    VOXDB_RETURN_IF_ERROR(ReplayLocked());
    last = next_seq_ - 1;
  }
  committer_.Start(last);
  flusher_.Start();
  open_ = true;
  return absl::OkStatus();
}

Status Database::Impl::LoadPartition() {
  std::optional<PartitionIdentity> stored;
  EpochHistory history;
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
    // One meta value of `size` bytes (0: any), or nullopt when absent.
    auto get = [&](std::string_view key,
                   size_t size) -> StatusOr<std::optional<std::span<const uint8_t>>> {
      auto v = snap->Get(Table::kMeta, AsBytes(key));
      if (absl::IsNotFound(v.status())) return std::nullopt;
      if (!v.ok()) return v.status();
      if (size != 0 && v->size() != size) {
        return CorruptError(absl::StrFormat("meta %s has %u bytes, not %u", key, v->size(), size));
      }
      return *v;
    };
    VOXDB_ASSIGN_OR_RETURN(auto id, get(kMetaPartitionId, 8));
    VOXDB_ASSIGN_OR_RETURN(auto range, get(kMetaPartitionRange, 16));
    VOXDB_ASSIGN_OR_RETURN(auto parent, get(kMetaPartitionParent, 8));
    if (id || range || parent) {
      // Written together: one without the others is damage.
      if (!id || !range || !parent) {
        return CorruptError(
            "meta holds part of a partition identity (partition_id, "
            "partition_range and partition_parent go together)");
      }
      PartitionIdentity p;
      p.id = DecodeFixed64(id->data());
      VOXDB_ASSIGN_OR_RETURN(p.range, DecodeMortonRange(*range));
      p.parent = DecodeFixed64(parent->data());
      stored = p;
    }
    VOXDB_ASSIGN_OR_RETURN(auto epochs, get(kMetaEpochHistory, 0));
    if (epochs) {
      VOXDB_ASSIGN_OR_RETURN(history, DecodeEpochHistory(*epochs));
    }
  }
  const PartitionIdentity& wanted = options_.partition;
  if (stored) {
    if (stored->id != wanted.id || stored->range != wanted.range) {
      return MismatchError(absl::StrCat("the database holds ", DescribePartition(*stored), ", not ",
                                        DescribePartition(wanted), " as it was opened"));
    }
    partition_ = *stored;
  } else {
    // The first open that knows partitions: record the identity (older
    // builds see unknown meta keys, engine/FORMAT.md).
    WriteBatch batch;
    std::vector<uint8_t> value(8);
    EncodeFixed64(value.data(), wanted.id);
    batch.Put(Table::kMeta, AsBytes(kMetaPartitionId), value);
    batch.Put(Table::kMeta, AsBytes(kMetaPartitionRange), EncodeMortonRange(wanted.range));
    EncodeFixed64(value.data(), wanted.parent);
    batch.Put(Table::kMeta, AsBytes(kMetaPartitionParent), std::move(value));
    Status s = store_->Write(batch);
    if (s.ok()) s = store_->Sync();
    if (!s.ok()) {
      return Status(s.code(), absl::StrCat("cannot record the partition identity: ", s.message()));
    }
    partition_ = wanted;
  }
  whole_range_ = partition_.range == MortonRange::All();
  MutexLock l(&partition_mu_);
  epoch_ = history.empty() ? 0 : history.back().epoch;
  epoch_history_ = std::move(history);
  return absl::OkStatus();
}

Status Database::Impl::CheckInPartition(uint64_t code) const {
  if (whole_range_ || partition_.range.Contains(code)) return absl::OkStatus();
  return WrongPartitionError(absl::StrCat("chunk ", ChunkKey::FromCode(code).ToString(), " (code ",
                                          code, ") is not in ", DescribePartition(partition_)));
}

Status Database::Impl::CheckBoxInPartition(const VoxelBox& box) const {
  if (whole_range_) return absl::OkStatus();
  // Inside the range when it meets neither side of it.
  const ChunkBox chunks = ChunksCovering(frame(), box);
  const MortonRange below{0, partition_.range.begin};
  const MortonRange above{partition_.range.end, ChunkKey::kMaxCode + 1};
  if (!BoxMeetsRange(chunks, below) && !BoxMeetsRange(chunks, above)) return absl::OkStatus();
  return WrongPartitionError(absl::StrFormat(
      "the box [%d,%d,%d .. %d,%d,%d) touches chunks that are not in %s", box.lo.x, box.lo.y,
      box.lo.z, box.hi.x, box.hi.y, box.hi.z, DescribePartition(partition_)));
}

Status Database::Impl::CheckNotFenced() const {
  const uint64_t epoch = epoch_.load(std::memory_order_acquire);
  const uint64_t fenced = fenced_below_.load(std::memory_order_acquire);
  if (epoch >= fenced) return absl::OkStatus();
  return WrongPartitionError(absl::StrFormat("stale epoch %u, fenced at %u", epoch, fenced));
}

Status Database::Impl::CheckCommitEpoch(uint64_t first_seq) const {
  uint64_t epoch;
  {
    MutexLock l(&partition_mu_);
    epoch = EpochOfSeq(epoch_history_, first_seq);
  }
  if (options_.fence) VOXDB_RETURN_IF_ERROR(options_.fence(epoch));
  // Read after the callback: a Fence while it ran still counts.
  const uint64_t fenced = fenced_below_.load(std::memory_order_acquire);
  if (epoch >= fenced) return absl::OkStatus();
  return WrongPartitionError(absl::StrFormat("stale epoch %u, fenced at %u", epoch, fenced));
}

Status Database::Impl::AdoptEpoch(uint64_t epoch) {
  MutexLock lock(&edit_mu_);
  if (closing_) return ClosingError("the database is closing");
  EpochHistory next = epoch_history();
  const uint64_t current = next.empty() ? 0 : next.back().epoch;
  if (epoch <= current) {
    return ConflictError(
        absl::StrFormat("epoch %u is not newer than the current epoch %u", epoch, current));
  }
  // Every write with a number from next_seq_ on is of the new epoch (writes
  // take their numbers under edit_mu_, which this holds).
  next.push_back({epoch, next_seq_});
  WriteBatch batch;
  batch.Put(Table::kMeta, AsBytes(kMetaEpochHistory), EncodeEpochHistory(next));
  Status s = store_->Write(batch);
  if (s.ok()) s = store_->Sync();
  if (!s.ok()) {
    return Status(s.code(), absl::StrCat("cannot record epoch ", epoch, ": ", s.message()));
  }
  MutexLock l(&partition_mu_);
  epoch_history_ = std::move(next);
  epoch_.store(epoch, std::memory_order_release);
  return absl::OkStatus();
}

Status Database::Impl::LoadFills() {
  VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
  auto fills = std::make_shared<FillSet>();
  Status inner;
  VOXDB_RETURN_IF_ERROR(snap->Scan(Table::kFills, {}, {},
                                   [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                                     auto f = Fill::Decode(DecodeJournalKey(k), v);
                                     if (!f.ok()) {
                                       inner = f.status();
                                       return false;
                                     }
                                     fills->Add(*f);
                                     return true;
                                   }));
  VOXDB_RETURN_IF_ERROR(inner);
  fills_.Set(std::move(fills));
  return absl::OkStatus();
}

Status Database::Impl::ReplayLocked() {
  VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
  Status inner;
  VOXDB_RETURN_IF_ERROR(snap->Scan(
      Table::kJournal, {}, {},
      [&](std::span<const uint8_t> k,
          std::span<const uint8_t> v) ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) {
        const uint64_t seq = DecodeJournalKey(k);
        auto rec = DecodeJournalRecord(v);
        if (!rec.ok()) {
          inner =
              CorruptError(absl::StrFormat("journal record %u: %s", seq, rec.status().message()));
          return false;
        }
        // A record whose apply fails failed the same way when it was written
        // (a corrupt stored chunk): keep going, as the live write did.
        (void)ApplyRecord(seq, *rec);
        ++replayed_;
        return true;
      }));
  return inner;
}

void Database::Impl::Close() {
  if (!open_) return;
  {
    MutexLock lock(&edit_mu_);
    closing_ = true;
  }
  admission_.WakeWriters();
  (void)Flush();
  flusher_.Stop();
  committer_.Stop();
  {
    // A clean close hands out nothing past last_seq: the next open need
    // not skip the rest of the reserved block.
    MutexLock lock(&edit_mu_);
    if (poisoned_.ok() && seq_reserved_ > next_seq_ - 1) {
      WriteBatch batch;
      std::vector<uint8_t> value(8);
      EncodeFixed64(value.data(), next_seq_ - 1);
      batch.Put(Table::kMeta, AsBytes(kMetaSeqReserved), std::move(value));
      if (store_->Write(batch).ok()) (void)store_->Sync();
    }
  }
  open_ = false;
}

// --- Reads ------------------------------------------------------------------------

Status Database::Impl::GetChunks(std::span<const ChunkKey> keys,
                                 const std::function<void(size_t, const ChunkRead&)>& fn) {
  // One read transaction for the call, renewed when a flush has committed
  // since it began: a chunk found clean in the cache may have been written
  // by that flush, after the transaction's snapshot.
  std::unique_ptr<ChunkStore::Snapshot> snap;
  uint64_t snap_generation = 0;
  // The fills for clean chunks, once per call: a clean chunk's version and
  // voxels both come from it (a fill applied meanwhile reads as after it).
  // In kSync only once they are durable.
  std::shared_ptr<const FillSet> fills;
  for (;;) {
    const uint64_t epoch = committer_.epoch();
    fills = fills_.Get();
    if (WaitDurable(fills->last_seq(), epoch)) break;
  }
  const CodecOptions codec{options_.zstd_level};
  for (size_t i = 0; i < keys.size(); ++i) {
    ChunkRead read;
    read.key = keys[i];
    const uint64_t code = keys[i].code();
    const ChunkCoord c = keys[i].coord();
    if (Status s = frame().CheckChunk(c); !s.ok()) {
      read.status = s;
      fn(i, read);
      continue;
    }
    if (Status s = CheckInPartition(code); !s.ok()) {
      read.status = s;
      fn(i, read);
      continue;
    }
    // Dirty chunks come from the cache: chunk, fills and version of one
    // moment (taken under the shard lock), once that moment is durable.
    ChunkRef dirty;
    bool is_dirty = false;
    for (;;) {
      const uint64_t epoch = committer_.epoch();
      is_dirty = cache_.ReadDirty(code, fills, &dirty);
      if (!is_dirty) break;
      // No read transaction may stay open while waiting: a commit that must
      // grow the map waits for every one to end.
      if (!committer_.IsDurable(dirty.version, epoch)) snap.reset();
      if (WaitDurable(dirty.version, epoch)) break;
    }
    std::vector<uint8_t> owned;
    if (is_dirty) {
      read.source = ChunkRead::Source::kCache;
      read.version = dirty.version;
      owned = EncodeDirty(dirty.chunk.get(), dirty.version, *dirty.fills, frame(), c, codec);
      read.record = owned;
      fn(i, read);
      continue;
    }
    // Clean: straight from the memory map when stored as chunk data.
    const uint64_t generation = flusher_.generation();
    if (!snap || snap_generation != generation) {
      snap.reset();
      VOXDB_ASSIGN_OR_RETURN(snap, store_->BeginRead());
      snap_generation = generation;
    }
    ReadClean(*snap, *fills, frame(), codec, &read, &owned);
    fn(i, read);
  }
  return absl::OkStatus();
}

Status Database::Impl::GetVoxels(std::span<const VoxelCoord> at, uint8_t* out) {
  for (const VoxelCoord& v : at) VOXDB_RETURN_IF_ERROR(frame().CheckVoxel(v));
  if (!whole_range_) {
    for (const VoxelCoord& v : at) {
      const ChunkCoord c = frame().ChunkOf(v);
      VOXDB_RETURN_IF_ERROR(CheckInPartition(MortonEncode(c.x, c.y, c.z)));
    }
  }
  for (;;) {
    // Read everything, then wait until what was read is durable (kSync);
    // read again if a failed commit rolled writes back meanwhile.
    const uint64_t epoch = committer_.epoch();
    uint64_t newest = 0;
    std::unordered_map<uint64_t, std::shared_ptr<const Chunk>> chunks;
    for (size_t i = 0; i < at.size(); ++i) {
      const ChunkCoord c = frame().ChunkOf(at[i]);
      const uint64_t code = MortonEncode(c.x, c.y, c.z);
      auto it = chunks.find(code);
      if (it == chunks.end()) {
        // A cached chunk is read in place (ChunkCache::ReadVoxelInPlace).
        uint64_t version;
        if (cache_.ReadVoxelInPlace(code, frame().OffsetInChunk(at[i]), &out[i], &version)) {
          newest = std::max(newest, version);
          continue;
        }
        ChunkRef ref;
        VOXDB_RETURN_IF_ERROR(cache_.Read(code, &ref));
        newest = std::max(newest, ref.version);
        if (ref.fills) newest = std::max(newest, ref.fills->last_seq());
        it = chunks.emplace(code, ref.Materialise(frame(), code)).first;
      }
      const ChunkCoord o = frame().OffsetInChunk(at[i]);
      out[i] = it->second->Get(o.x, o.y, o.z);
    }
    if (WaitDurable(newest, epoch)) return absl::OkStatus();
  }
}

Status Database::Impl::CheckReadBox(const VoxelBox& box) const {
  VOXDB_RETURN_IF_ERROR(
      engine::CheckBoxLimits(frame(), box, options_.max_box_voxels, options_.max_box_chunks));
  return CheckBoxInPartition(box);
}

Status Database::Impl::ReadBox(const VoxelBox& box, uint8_t* out, const std::atomic<bool>* cancel) {
  VOXDB_RETURN_IF_ERROR(CheckReadBox(box));
  const ChunkBox chunks = ChunksCovering(frame(), box);
  std::vector<uint8_t> part;
  for (;;) {
    const uint64_t epoch = committer_.epoch();
    uint64_t newest = 0;
    for (uint32_t cz = chunks.lo.z; cz <= chunks.hi.z; ++cz) {
      for (uint32_t cy = chunks.lo.y; cy <= chunks.hi.y; ++cy) {
        for (uint32_t cx = chunks.lo.x; cx <= chunks.hi.x; ++cx) {
          if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
            return ClosingError("the read was cancelled (its connection closed)");
          }
          const ChunkCoord c{cx, cy, cz};
          const uint64_t code = MortonEncode(cx, cy, cz);
          ChunkRef ref;
          VOXDB_RETURN_IF_ERROR(cache_.Read(code, &ref));
          newest = std::max(newest, ref.version);
          if (ref.fills) newest = std::max(newest, ref.fills->last_seq());
          const std::shared_ptr<const Chunk> chunk = ref.Materialise(frame(), code);
          const VoxelBox pbox = Intersect(box, frame().VoxelsOfChunk(c));
          const LocalBox local = LocalPart(pbox, c);
          part.resize(local.volume());
          chunk->ReadBox(local, part.data());
          CopySubBox(pbox, pbox, part, box, {out, box.volume()});
        }
      }
    }
    if (WaitDurable(newest, epoch)) return absl::OkStatus();
  }
}

void Database::Impl::Fail(const Status& cause, std::vector<Pending> batch, bool written) {
  // The error the writers get: what failed, and that nothing was applied.
  Status error(
      cause.code(),
      absl::StrCat("the journal commit failed, so the write was not applied: ", cause.message()));
  // Keeps what the payloads say (WRONG_PARTITION from the fencing check).
  cause.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& payload) { error.SetPayload(url, payload); });
  Status poison;
  if (written) {
    // The records are in a committed transaction whose sync failed: take
    // them out again before anything could make them durable.
    WriteBatch undo;
    for (const Pending& p : batch) undo.Delete(Table::kJournal, JournalKey(p.seq));
    Status s = store_->Write(undo);
    if (s.ok()) s = store_->Sync();
    if (!s.ok()) {
      poison = IoError(absl::StrCat(
          "the disk failed a sync and then the undo of the writes it held (", s.message(),
          "); no write is accepted until voxdbd restarts (the writes answered with this error "
          "may or may not be in the journal then)"));
    }
  }
  std::vector<Pending> queued;
  {
    MutexLock w(&store_write_mu_);
    MutexLock lock(&edit_mu_);
    queued = committer_.TakeQueued();
    last_failure_ = error;
    if (!poison.ok()) {
      poisoned_ = poison;
    } else if (Status s = ReloadLocked(); !s.ok()) {
      poisoned_ = IoError(
          absl::StrCat("after a failed journal commit the database could not be read back (",
                       s.message(), "); no write is accepted until voxdbd restarts"));
    }
    // Every number handed out is now durable or failed.
    committer_.MarkRolledBack(next_seq_ - 1);
  }
  committer_.WakeAfterRollback();
  admission_.WakeWriters();
  std::move(queued.begin(), queued.end(), std::back_inserter(batch));
  committer_.Answer(error, std::move(batch));
}

Status Database::Impl::ReloadLocked() {
  // Forget every cached chunk, dirty or not, and every fill not yet
  // persisted; read the fills back and replay the journal: the state of
  // the last durable commit. (Snapshots keep their own copies.)
  cache_.Clear();
  flusher_.AssertEditLockHeld();
  flusher_.Clear();
  VOXDB_RETURN_IF_ERROR(LoadFills());
  const uint64_t keep_next = next_seq_;
  Status s = ReplayLocked();
  next_seq_ = std::max(next_seq_, keep_next);  // failed numbers are never reused
  last_seq_ = next_seq_ - 1;
  return s;
}

Status Database::Impl::Flush() {
  uint64_t target, epoch;
  {
    MutexLock lock(&edit_mu_);
    target = next_seq_ - 1;
    epoch = committer_.epoch();
  }
  if (!WaitDurable(target, epoch, /*any_mode=*/true)) {
    // A write submitted before the call failed its commit and was rolled
    // back: what this flush was to make durable did not all happen.
    MutexLock lock(&edit_mu_);
    if (!last_failure_.ok()) return last_failure_;
  }
  return flusher_.Flush(target);
}

DatabaseStats Database::Impl::Stats() const {
  DatabaseStats s;
  s.cache_hits = cache_.hits();
  s.cache_misses = cache_.misses();
  s.cache_evictions = cache_.evictions();
  s.cache_bytes = static_cast<uint64_t>(std::max<int64_t>(0, cache_.cache_bytes()));
  s.dirty_bytes = static_cast<uint64_t>(std::max<int64_t>(0, cache_.dirty_bytes()));
  s.dirty_chunks = flusher_.dirty_chunks();
  s.cache_chunks = cache_.CountEntries();
  {
    MutexLock lock(&edit_mu_);
    flusher_.AssertEditLockHeld();
    if (std::optional<int64_t> oldest = flusher_.OldestDirtySinceUs()) {
      s.oldest_dirty_age_s = static_cast<double>(SteadyMicros() - *oldest) / 1e6;
    }
    s.fills = fills_.Get()->size();
  }
  s.journal_records = committer_.journal_records();
  s.journal_bytes = committer_.journal_bytes();
  s.journal_commits = committer_.journal_commits();
  s.last_seq = last_seq_;
  s.committed_seq = committer_.committed_seq();
  s.durable_seq = committer_.durable_seq();
  s.rollbacks = committer_.rollbacks();
  s.journal_waits = committer_.journal_waits();
  s.replayed_records = replayed_;
  s.flushes = flusher_.flushes();
  s.flushed_chunks = flusher_.flushed_chunks();
  s.flushed_bytes = flusher_.flushed_bytes();
  s.write_waits = admission_.write_waits();
  s.busy_rejections = admission_.busy_rejections();
  return s;
}

// --- Database -----------------------------------------------------------------

Database::Database(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)), snapshots_(std::make_shared<SnapshotRegistry>()) {}
// Snapshots still alive lose their read transactions first: LMDB must have
// none open when its environment closes.
Database::~Database() { snapshots_->CloseAll(); }

void Database::EndSnapshots() { snapshots_->CloseAll(); }

StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& dir,
                                                   const DatabaseOptions& options) {
  VOXDB_RETURN_IF_ERROR(Impl::CheckOptions(options));
  VOXDB_ASSIGN_OR_RETURN(auto store, ChunkStore::Open(dir, options.store));
  auto impl = std::make_unique<Impl>(options, std::move(store));
  VOXDB_RETURN_IF_ERROR(impl->Open());
  return std::unique_ptr<Database>(new Database(std::move(impl)));
}

const WorldFrame& Database::frame() const { return impl_->frame(); }
ChunkStore& Database::store() { return impl_->store(); }
ChangeFeed& Database::changes() { return *impl_->feed(); }

Status Database::GetChunks(std::span<const ChunkKey> keys,
                           const std::function<void(size_t, const ChunkRead&)>& fn) {
  return impl_->GetChunks(keys, fn);
}
Status Database::GetVoxels(std::span<const VoxelCoord> at, uint8_t* out) {
  return impl_->GetVoxels(at, out);
}
Status Database::ReadBox(const VoxelBox& box, uint8_t* out, const std::atomic<bool>* cancel) {
  return impl_->ReadBox(box, out, cancel);
}
Status Database::CheckBoxLimits(const VoxelBox& box) const { return impl_->CheckReadBox(box); }
uint64_t Database::max_box_voxels() const { return impl_->max_box_voxels(); }
void Database::SetVoxels(std::span<const VoxelEdit> edits, WriteDone done) {
  impl_->SetVoxels(edits, std::move(done));
}
void Database::WriteBox(const VoxelBox& box, std::span<const uint8_t> voxels, WriteDone done) {
  impl_->WriteBox(box, voxels, std::move(done));
}
void Database::FillBox(const VoxelBox& box, uint8_t material, WriteDone done) {
  impl_->FillBox(box, material, std::move(done));
}
void Database::PutChunk(ChunkKey key, std::span<const uint8_t> record,
                        std::optional<uint64_t> expected_version, WriteDone done) {
  impl_->PutChunk(key, record, expected_version, std::move(done));
}
void Database::DeleteChunk(ChunkKey key, WriteDone done) {
  impl_->DeleteChunk(key, std::move(done));
}
Status Database::Flush() { return impl_->Flush(); }
const PartitionIdentity& Database::partition() const { return impl_->partition(); }
uint64_t Database::epoch() const { return impl_->epoch(); }
EpochHistory Database::epoch_history() const { return impl_->epoch_history(); }
Status Database::AdoptEpoch(uint64_t epoch) { return impl_->AdoptEpoch(epoch); }
void Database::Fence(uint64_t min_epoch) { impl_->Fence(min_epoch); }
DatabaseStats Database::Stats() const { return impl_->Stats(); }

bool Database::WritesWouldWait() const { return impl_->WritesWouldWait(); }

Status Database::Backup(const std::string& dest_dir, uint64_t* bytes) {
  *bytes = 0;
  // Refused before waiting: a NUL, a relative path, an existing destination.
  VOXDB_RETURN_IF_ERROR(ChunkStore::CheckBackupDestination(dest_dir));
  VOXDB_RETURN_IF_ERROR(impl_->WaitForSubmitted());
  return store().Backup(dest_dir, bytes);
}
std::vector<Database::DirtyChunk> Database::DirtyChunks() const { return impl_->DirtyChunks(); }

StatusOr<std::unique_ptr<DatabaseSnapshot>> Database::Snapshot() {
  // Everything submitted so far durable first, so that the wait below,
  // which holds the snapshot's read transaction (and so would hold up a
  // commit that must grow the map), is for the few writes of the moment
  // between.
  (void)impl_->WaitForSubmitted();
  for (;;) {
    std::unique_ptr<DatabaseSnapshot> snap(new DatabaseSnapshot(impl_->frame()));
    snap->registry_ = snapshots_;
    snap->zstd_level_ = impl_->zstd_level();
    snap->partition_ = impl_->partition();
    std::map<uint64_t, std::pair<std::shared_ptr<const Chunk>, uint64_t>> dirty;
    uint64_t epoch = 0;
    VOXDB_RETURN_IF_ERROR(
        impl_->CaptureSnapshotState(&snap->store_, &dirty, &snap->fills_, &snap->seq_, &epoch));
    for (auto& [code, d] : dirty) {
      snap->dirty_.emplace(code, DatabaseSnapshot::Dirty{std::move(d.first), d.second});
    }
    if (!snapshots_->Add(snap.get())) return ClosingError("the database is closing");
    // Only what is durable: a write in the view is not one that could still
    // fail (or be lost in a crash). If one failed, the view held it: again.
    if (impl_->WaitDurable(snap->seq_, epoch, /*any_mode=*/true)) return snap;
  }
}

std::shared_ptr<const FillSet> Database::Fills() const { return impl_->Fills(); }
Status Database::RebuildFromStore(
    const std::function<Status(const ChunkStore::Snapshot&, WriteBatch*)>& build) {
  return impl_->RebuildFromStore(build);
}

namespace {
template <typename Submit>
WriteResult Wait(Submit&& submit) {
  std::promise<WriteResult> promise;
  auto future = promise.get_future();
  submit([&promise](const WriteResult& r) { promise.set_value(r); });
  return future.get();
}
}  // namespace

WriteResult Database::SetVoxelsAndWait(std::span<const VoxelEdit> edits) {
  return Wait([&](WriteDone d) { SetVoxels(edits, std::move(d)); });
}
WriteResult Database::WriteBoxAndWait(const VoxelBox& box, std::span<const uint8_t> voxels) {
  return Wait([&](WriteDone d) { WriteBox(box, voxels, std::move(d)); });
}
WriteResult Database::FillBoxAndWait(const VoxelBox& box, uint8_t material) {
  return Wait([&](WriteDone d) { FillBox(box, material, std::move(d)); });
}
WriteResult Database::PutChunkAndWait(ChunkKey key, std::span<const uint8_t> record,
                                      std::optional<uint64_t> expected_version) {
  return Wait([&](WriteDone d) { PutChunk(key, record, expected_version, std::move(d)); });
}
WriteResult Database::DeleteChunkAndWait(ChunkKey key) {
  return Wait([&](WriteDone d) { DeleteChunk(key, std::move(d)); });
}

}  // namespace voxdb::engine
