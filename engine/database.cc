// Database::Impl: the orchestrator of the engine's parts (engine/database.h
// is the front door). It opens the store and replays the journal, validates
// writes and applies them (Submit, the Apply* functions, which recovery
// replays through too), serves the reads, and runs the rollback when a
// journal commit fails. The parts, each with its own state and lock:
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
//      WriteAdmission's lock, SnapshotRegistry::mu, the ChangeFeed's lock.
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
#include "engine/chunk_cache.h"
#include "engine/coding.h"
#include "engine/database_snapshot.h"
#include "engine/fills.h"
#include "engine/flusher.h"
#include "engine/group_committer.h"
#include "engine/journal.h"
#include "engine/morton_box.h"
#include "engine/write_admission.h"

namespace voxdb::engine {
namespace {

constexpr std::string_view kMetaLastSeq = "last_seq";
// No sequence number above this value has ever been handed out: numbers
// are reserved in blocks, durably, before they are used, so that a crash
// (which may lose writes that async mode acknowledged) never leads to a
// number being issued twice.
constexpr std::string_view kMetaSeqReserved = "seq_reserved";
constexpr uint64_t kSeqBlock = uint64_t{1} << 16;

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

LocalBox ToLocal(const VoxelBox& part, const VoxelCoord& origin) {
  return LocalBox{
      {static_cast<uint32_t>(part.lo.x - origin.x), static_cast<uint32_t>(part.lo.y - origin.y),
       static_cast<uint32_t>(part.lo.z - origin.z)},
      {static_cast<uint32_t>(part.hi.x - origin.x), static_cast<uint32_t>(part.hi.y - origin.y),
       static_cast<uint32_t>(part.hi.z - origin.z)}};
}

// The chunks a voxel box touches.
ChunkBox ChunksOf(const WorldFrame& frame, const VoxelBox& box) {
  return ChunkBox{frame.ChunkOf(box.lo), frame.ChunkOf({box.hi.x - 1, box.hi.y - 1, box.hi.z - 1})};
}

// Voxels past the world's edge always read as 0 (engine/FORMAT.md, "Chunks
// at the world's edge"): clears them in a chunk of the last x, y or z layer.
void ClearPastEdge(const WorldFrame& frame, ChunkCoord c, Chunk* chunk) {
  const VoxelBox in = frame.ChunkBox(c);
  const VoxelCoord o = frame.ChunkOrigin(c);
  const uint32_t ex = static_cast<uint32_t>(in.hi.x - o.x);
  const uint32_t ey = static_cast<uint32_t>(in.hi.y - o.y);
  const uint32_t ez = static_cast<uint32_t>(in.hi.z - o.z);
  constexpr uint32_t e = kChunkEdge;
  if (ex < e) chunk->FillBox(LocalBox{{ex, 0, 0}, {e, e, e}}, 0);
  if (ey < e) chunk->FillBox(LocalBox{{0, ey, 0}, {e, e, e}}, 0);
  if (ez < e) chunk->FillBox(LocalBox{{0, 0, ez}, {e, e, e}}, 0);
}

}  // namespace

class Database::Impl {
 public:
  Impl(const DatabaseOptions& options, std::unique_ptr<ChunkStore> store)
      : options_(options),
        store_(std::move(store)),
        committer_(options_, store_.get(),
                   [this](const Status& cause, std::vector<Pending> batch, bool written) {
                     Fail(cause, std::move(batch), written);
                   }),
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
  // Applies every journal record in the store.
  Status ReplayLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
  // Persists (synced) a new reservation of sequence numbers from next_seq_.
  Status ReserveSeqs() ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_);
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

  uint64_t replayed_ = 0;
  bool open_ = false;
};

// --- Open, replay, close ------------------------------------------------------

Status Database::Impl::CheckOptions(const DatabaseOptions& options) {
  if (options.dirty_bytes == 0 || options.dirty_bytes > options.cache_bytes) {
    return absl::InvalidArgumentError("dirty_bytes must be in (0, cache_bytes]");
  }
  if (!(options.flush_high_water > 0 && options.flush_high_water <= 1)) {
    return absl::InvalidArgumentError("flush_high_water must be in (0, 1]");
  }
  return absl::OkStatus();
}

Status Database::Impl::Open() {
  VOXDB_RETURN_IF_ERROR(LoadFills());
  uint64_t last = 0;
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
    auto meta = snap->Get(Table::kMeta, Bytes(kMetaLastSeq));
    if (meta.ok() && meta->size() == 8) last = DecodeFixed64(meta->data());
    // Numbers up to the reservation may have been handed out to writes a
    // crash lost: never again.
    auto reserved = snap->Get(Table::kMeta, Bytes(kMetaSeqReserved));
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
      batch.Put(Table::kMeta, Bytes(kMetaSeqReserved), std::move(value));
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
  VOXDB_RETURN_IF_ERROR(frame().CheckBox(box));
  if (box.volume() > options_.max_box_voxels) {
    return TooLargeError(absl::StrFormat(
        "the box holds %s voxels, more than the limit of %u for reading or writing voxels",
        box.volume() == UINT64_MAX ? std::string("over 2^64") : absl::StrCat(box.volume()),
        options_.max_box_voxels));
  }
  const ChunkBox chunks = ChunksOf(frame(), box);
  const uint64_t touched = uint64_t{chunks.hi.x - chunks.lo.x + 1} *
                           (chunks.hi.y - chunks.lo.y + 1) * (chunks.hi.z - chunks.lo.z + 1);
  if (touched > options_.max_box_chunks) {
    return TooLargeError(absl::StrFormat(
        "the box touches %u chunks, more than the limit of %u for reading or writing voxels "
        "(a thin box crossing many chunks costs a chunk each): split it",
        touched, options_.max_box_chunks));
  }
  return absl::OkStatus();
}

Status Database::Impl::ReadBox(const VoxelBox& box, uint8_t* out, const std::atomic<bool>* cancel) {
  VOXDB_RETURN_IF_ERROR(CheckReadBox(box));
  const uint64_t sx = box.hi.x - box.lo.x, sy = box.hi.y - box.lo.y;
  const ChunkBox chunks = ChunksOf(frame(), box);
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
          const VoxelBox pbox = Intersect(box, frame().ChunkBox(c));
          const LocalBox local = ToLocal(pbox, frame().ChunkOrigin(c));
          part.resize(local.volume());
          chunk->ReadBox(local, part.data());
          const uint64_t px = pbox.hi.x - pbox.lo.x, py = pbox.hi.y - pbox.lo.y;
          for (uint64_t z = pbox.lo.z; z < pbox.hi.z; ++z) {
            for (uint64_t y = pbox.lo.y; y < pbox.hi.y; ++y) {
              std::memcpy(
                  out + (pbox.lo.x - box.lo.x) + sx * ((y - box.lo.y) + sy * (z - box.lo.z)),
                  part.data() + px * ((y - pbox.lo.y) + py * (z - pbox.lo.z)), px);
            }
          }
        }
      }
    }
    if (WaitDurable(newest, epoch)) return absl::OkStatus();
  }
}

// --- Writes ------------------------------------------------------------------------

template <typename F>
ChangedChunk Database::Impl::Change(uint64_t code, Entry* e, uint64_t seq, F&& mutate) {
  ChangedChunk changed = cache_.MarkDirty(code, e, seq, std::forward<F>(mutate));
  flusher_.AssertEditLockHeld();
  flusher_.NoteDirty(code, seq);
  return changed;
}

template <typename Fn>
void Database::Impl::Submit(std::vector<uint8_t> record, WriteDone done, size_t estimate,
                            Fn&& apply, const std::function<void(ChangeRecord*)>& describe) {
  const bool sync = options_.durability == Durability::kSync;
  if (estimate > MaxWriteBytes()) {
    if (done) {
      done({TooLargeError(absl::StrFormat(
                "this write would make about %u bytes of chunks dirty, more than one write may "
                "take (%u: half of the dirty-bytes budget of %u, or 8 whole chunks): split it",
                estimate, MaxWriteBytes(), options_.dirty_bytes)),
            0});
    }
    return;
  }
  if (!sync) {
    if (Status s = admission_.WaitForJournal(); !s.ok()) {
      if (done) done({s, 0});
      return;
    }
  }
  if (Status s = admission_.ReserveRoom(estimate); !s.ok()) {
    if (done) done({s, 0});
    return;
  }
  uint64_t seq = 0;
  Status status;
  Changes changed;
  {
    MutexLock lock(&edit_mu_);
    if (closing_) {
      status = ClosingError("the database is closing");
    } else if (!poisoned_.ok()) {
      status = poisoned_;
    } else if (next_seq_ > seq_reserved_ && !(status = ReserveSeqs()).ok()) {
      // Nothing applied, no number handed out.
    } else {
      seq = next_seq_++;
      last_seq_ = seq;
      // Writes are serialised here: make room for this one's growth first,
      // so that concurrent writers cannot overshoot the cache together.
      cache_.MaybeEvict(estimate);
      StatusOr<Changes> applied = apply(seq);
      status = applied.status();
      if (applied.ok()) {
        changed = std::move(*applied);
      } else {
        // Applying fails before it changes anything (writes pin or read all
        // they need first): the write did not happen, and its number goes
        // back, else it would be a hole that WaitCommitted (Flush, Backup,
        // Snapshot) waits on until some later write commits.
        next_seq_ = seq;
        last_seq_ = seq - 1;
      }
    }
    if (status.ok()) {
      auto change = std::make_shared<ChangeRecord>();
      change->seq = seq;
      change->op = EncodedJournalOp(record);
      change->chunks = std::move(changed);
      if (describe) describe(change.get());
      committer_.Enqueue(Pending{seq, SteadyMicros(), std::move(record),
                                 sync ? std::move(done) : WriteDone(), std::move(change)});
    }
  }
  admission_.ReleaseRoom(estimate);
  cache_.MaybeEvict();  // the write may have grown the cache past its budget
  if (!status.ok()) {
    if (done) done({status, 0});
  } else if (!sync && done) {
    done({absl::OkStatus(), seq});
  }
}

Status Database::Impl::ReserveSeqs() {
  const uint64_t reserved = next_seq_ - 1 + kSeqBlock;
  WriteBatch batch;
  std::vector<uint8_t> value(8);
  EncodeFixed64(value.data(), reserved);
  batch.Put(Table::kMeta, Bytes(kMetaSeqReserved), std::move(value));
  Status s = store_->Write(batch);
  if (s.ok()) s = store_->Sync();
  if (!s.ok()) {
    return Status(s.code(), absl::StrCat("cannot reserve sequence numbers (the write was not "
                                         "applied): ",
                                         s.message()));
  }
  seq_reserved_ = reserved;
  return absl::OkStatus();
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplySetVoxels(
    uint64_t seq, const std::vector<ChunkEdits>& edits) {
  std::vector<Entry*> entries(edits.size());
  for (size_t i = 0; i < edits.size(); ++i) {
    if (Status s = cache_.PinForWrite(edits[i].code, &entries[i]); !s.ok()) {
      for (size_t j = 0; j < i; ++j) cache_.Unpin(edits[j].code, entries[j]);
      return s;
    }
  }
  Changes changed;
  changed.reserve(edits.size());
  for (size_t i = 0; i < edits.size(); ++i) {
    changed.push_back(Change(edits[i].code, entries[i], seq, [&](Entry& e) {
      Chunk& chunk = cache_.MutableChunk(edits[i].code, &e);
      for (uint32_t p : edits[i].packed) {
        const uint32_t idx = EditIndex(p);
        chunk.Set(idx & 127, (idx >> 7) & 127, idx >> 14, EditMaterial(p));
      }
    }));
  }
  return changed;
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyWriteBox(uint64_t seq, const VoxelBox& box,
                                                                std::span<const uint8_t> voxels) {
  const ChunkBox cb = ChunksOf(frame(), box);
  std::vector<std::pair<uint64_t, Entry*>> pinned;
  for (uint32_t cz = cb.lo.z; cz <= cb.hi.z; ++cz)
    for (uint32_t cy = cb.lo.y; cy <= cb.hi.y; ++cy)
      for (uint32_t cx = cb.lo.x; cx <= cb.hi.x; ++cx) {
        const uint64_t code = MortonEncode(cx, cy, cz);
        Entry* e;
        if (Status s = cache_.PinForWrite(code, &e); !s.ok()) {
          for (auto& [c, pe] : pinned) cache_.Unpin(c, pe);
          return s;
        }
        pinned.push_back({code, e});
      }
  const uint64_t sx = box.hi.x - box.lo.x, sy = box.hi.y - box.lo.y;
  std::vector<uint8_t> part;
  Changes changed;
  changed.reserve(pinned.size());
  for (auto& pin : pinned) {
    // (Not a structured binding: the lambda below captures it.)
    const uint64_t code = pin.first;
    Entry* e = pin.second;
    const ChunkCoord c = MortonDecode(code);
    const VoxelBox pbox = Intersect(box, frame().ChunkBox(c));
    const LocalBox local = ToLocal(pbox, frame().ChunkOrigin(c));
    part.resize(local.volume());
    const uint64_t px = pbox.hi.x - pbox.lo.x, py = pbox.hi.y - pbox.lo.y;
    for (uint64_t z = pbox.lo.z; z < pbox.hi.z; ++z)
      for (uint64_t y = pbox.lo.y; y < pbox.hi.y; ++y)
        std::memcpy(
            part.data() + px * ((y - pbox.lo.y) + py * (z - pbox.lo.z)),
            voxels.data() + (pbox.lo.x - box.lo.x) + sx * ((y - box.lo.y) + sy * (z - box.lo.z)),
            px);
    changed.push_back(Change(code, e, seq, [&](Entry& entry) {
      if (local.volume() == kChunkVoxels) {
        entry.chunk = std::make_shared<Chunk>(Chunk::FromDense(part));
        entry.readers_may_hold = false;
      } else {
        cache_.MutableChunk(code, &entry).WriteBox(local, part.data());
      }
    }));
  }
  return changed;
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyFillBox(uint64_t seq, const VoxelBox& box,
                                                               uint8_t material) {
  // The stored and dirty chunks it touches, in Morton order.
  const ChunkBox cb = ChunksOf(frame(), box);
  std::set<uint64_t> touched;
  flusher_.AssertEditLockHeld();
  flusher_.ForEachDirty([&](uint64_t code) {
    if (cb.ContainsCode(code)) touched.insert(code);
  });
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
    VOXDB_RETURN_IF_ERROR(snap->ScanChunksInBox(cb, 0, [&](ChunkKey key, std::span<const uint8_t>) {
      touched.insert(key.code());
      return true;
    }));
  }
  // Then the fill itself (after the reads that may fail, so that a failed
  // FILL_BOX leaves no fill behind): every chunk that is not stored now
  // reads through it.
  std::shared_ptr<const FillSet> fills;
  {
    auto next = std::make_shared<FillSet>(*fills_.Get());
    next->Add(Fill{seq, box, material});
    fills = next;
    fills_.Set(fills);
  }
  flusher_.AddFill(Fill{seq, box, material});
  Changes changed;
  for (uint64_t code : touched) {
    const ChunkCoord c = MortonDecode(code);
    const VoxelBox chunk_box = frame().ChunkBox(c);
    const VoxelBox pbox = Intersect(box, chunk_box);
    const bool whole = BoxContains(box, chunk_box);
    Entry* e;
    // A chunk the fill covers wholly is replaced, even a corrupt one. One
    // it covers in part and that fails to load (corrupt) is left as it is;
    // the fill still covers everything else.
    if (!cache_.PinForWrite(code, &e, whole ? Need::kNothing : Need::kContent).ok()) continue;
    changed.push_back(Change(code, e, seq, [&](Entry& entry) {
      if (whole || !entry.chunk) {
        entry.chunk = nullptr;  // reads as the fills, this one on top
        entry.fills = fills;
      } else {
        cache_.MutableChunk(code, &entry).FillBox(ToLocal(pbox, frame().ChunkOrigin(c)), material);
      }
    }));
  }
  return changed;
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyPutChunk(uint64_t seq, uint64_t code,
                                                                std::span<const uint8_t> record,
                                                                std::optional<uint64_t> expected) {
  VOXDB_ASSIGN_OR_RETURN(ChunkRecordView view, ParseChunkRecord(record));
  std::shared_ptr<Chunk> chunk;
  if (view.header.encoding != ChunkEncoding::kFills) {
    VOXDB_ASSIGN_OR_RETURN(Chunk decoded, DecodeChunk(record));
    ClearPastEdge(frame(), MortonDecode(code), &decoded);
    decoded.Compact();
    chunk = std::make_shared<Chunk>(std::move(decoded));
  }
  Entry* e;
  VOXDB_RETURN_IF_ERROR(cache_.PinForWrite(code, &e, expected ? Need::kVersion : Need::kNothing));
  if (expected && *expected != e->version) {
    const uint64_t current = e->version;
    cache_.Unpin(code, e);
    return ConflictError(absl::StrFormat("chunk %s is at version %u, not the expected %u",
                                         ChunkKey::FromCode(code).ToString(), current, *expected));
  }
  return Changes{Change(code, e, seq, [&](Entry& entry) {
    entry.chunk = std::move(chunk);
    entry.readers_may_hold = false;
    if (!entry.chunk) entry.fills = fills_.Get();
  })};
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyDeleteChunk(uint64_t seq, uint64_t code) {
  Entry* e;
  VOXDB_RETURN_IF_ERROR(cache_.PinForWrite(code, &e, Need::kNothing));
  return Changes{Change(code, e, seq, [&](Entry& entry) {
    entry.chunk = nullptr;
    entry.fills = fills_.Get();
  })};
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyRecord(uint64_t seq,
                                                              const JournalRecord& rec) {
  if (seq >= next_seq_) {
    next_seq_ = seq + 1;
    last_seq_ = seq;
  }
  switch (rec.op) {
    case JournalOp::kSetVoxels:
      return ApplySetVoxels(seq, rec.edits);
    case JournalOp::kWriteBox:
      return ApplyWriteBox(seq, rec.box, rec.voxels);
    case JournalOp::kFillBox:
      return ApplyFillBox(seq, rec.box, rec.material);
    case JournalOp::kPutChunk:
      return ApplyPutChunk(seq, rec.code, rec.record, std::nullopt);
    case JournalOp::kDeleteChunk:
      return ApplyDeleteChunk(seq, rec.code);
  }
  return CorruptError("unknown journal op");
}

void Database::Impl::SetVoxels(std::span<const VoxelEdit> edits, WriteDone done) {
  // Validate everything, group by chunk (keeping order within a chunk).
  // Batches usually touch a handful of chunks: a short list searched
  // linearly beats a hash map until it grows.
  std::vector<ChunkEdits> groups;
  std::vector<uint64_t> group_codes;
  std::unordered_map<uint64_t, size_t> index;  // once there are many groups
  uint64_t last_code = UINT64_MAX;
  size_t last_group = 0;
  for (const VoxelEdit& e : edits) {
    if (!frame().Contains(e.at)) {
      if (done) done({frame().CheckVoxel(e.at), 0});
      return;
    }
    const ChunkCoord c = frame().ChunkOf(e.at);
    const uint64_t code = MortonEncode(c.x, c.y, c.z);
    if (code != last_code) {
      size_t g = 0;
      if (index.empty()) {
        while (g < group_codes.size() && group_codes[g] != code) ++g;
      } else {
        auto it = index.find(code);
        g = it == index.end() ? groups.size() : it->second;
      }
      if (g == groups.size()) {
        groups.push_back(ChunkEdits{code, {}});
        group_codes.push_back(code);
        if (!index.empty() || groups.size() > 32) {
          if (index.empty()) {
            for (size_t i = 0; i < group_codes.size(); ++i) index[group_codes[i]] = i;
          }
          index[code] = g;
        }
      }
      last_code = code;
      last_group = g;
    }
    const ChunkCoord o = frame().OffsetInChunk(e.at);
    groups[last_group].packed.push_back(PackEdit(o.x | (o.y << 7) | (o.z << 14), e.material));
  }
  if (groups.empty()) {
    if (done) done({absl::InvalidArgumentError("no voxel edits"), 0});
    return;
  }
  std::vector<uint8_t> record = EncodeSetVoxels(groups);
  // A chunk not yet dirty may need its brick grid (a uniform chunk has
  // none); each edit may add or widen a brick (about 1 KiB on average).
  std::unique_ptr<ChunkStore::Snapshot> snap;
  size_t estimate = 0;
  for (const ChunkEdits& g : groups) {
    const size_t cost = cache_.DirtyCost(g.code, &snap);
    if (cost > 0) estimate += cost + sizeof(Brick) * kBricksPerChunk;
    estimate += std::min(g.packed.size() * 1024, kChunkVoxels);
    if (estimate > MaxWriteBytes()) break;  // refused whole: no need to look further
  }
  snap.reset();
  Submit(
      std::move(record), std::move(done), estimate,
      [&](uint64_t seq)
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) { return ApplySetVoxels(seq, groups); },
      [&](ChangeRecord* change) {
        // ApplySetVoxels commits the groups in order, one chunk each.
        for (size_t i = 0; i < groups.size() && i < change->chunks.size(); ++i) {
          change->chunks[i].edits = std::move(groups[i].packed);
        }
      });
}

void Database::Impl::WriteBox(const VoxelBox& box, std::span<const uint8_t> voxels,
                              WriteDone done) {
  Status s = CheckReadBox(box);
  if (s.ok() && voxels.size() != box.volume()) {
    s = absl::InvalidArgumentError(absl::StrFormat("box holds %u voxels but %u bytes were given",
                                                   box.volume(), voxels.size()));
  }
  if (!s.ok()) {
    if (done) done({s, 0});
    return;
  }
  // At most the box's voxels as raw bricks, plus each chunk's brick table.
  std::unique_ptr<ChunkStore::Snapshot> snap;
  size_t estimate = box.volume();
  const ChunkBox cb = ChunksOf(frame(), box);
  for (uint32_t cz = cb.lo.z; cz <= cb.hi.z; ++cz)
    for (uint32_t cy = cb.lo.y; cy <= cb.hi.y; ++cy)
      for (uint32_t cx = cb.lo.x; cx <= cb.hi.x; ++cx)
        estimate +=
            cache_.DirtyCost(MortonEncode(cx, cy, cz), &snap) + sizeof(Brick) * kBricksPerChunk;
  snap.reset();
  Submit(
      EncodeWriteBox(box, voxels), std::move(done), estimate,
      [&](uint64_t seq)
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) { return ApplyWriteBox(seq, box, voxels); },
      [&](ChangeRecord* change) { change->box = box; });
}

void Database::Impl::FillBox(const VoxelBox& box, uint8_t material, WriteDone done) {
  if (Status s = frame().CheckBox(box); !s.ok()) {
    if (done) done({s, 0});
    return;
  }
  // Fills make bricks uniform: they shrink chunks more often than not.
  Submit(
      EncodeFillBox(box, material), std::move(done), 0,
      [&](uint64_t seq)
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) { return ApplyFillBox(seq, box, material); },
      [&](ChangeRecord* change) {
        change->box = box;
        change->material = material;
      });
}

void Database::Impl::PutChunk(ChunkKey key, std::span<const uint8_t> record,
                              std::optional<uint64_t> expected_version, WriteDone done) {
  size_t memory = sizeof(Chunk);
  Status s = frame().CheckChunk(key.coord());
  if (s.ok()) {
    auto view = ParseChunkRecord(record);
    s = view.status();
    if (s.ok() && view->header.encoding == ChunkEncoding::kFills) {
      s = absl::InvalidArgumentError("PUT_CHUNK takes chunk data; use DELETE_CHUNK to revert");
    } else if (s.ok() && view->header.encoding == ChunkEncoding::kBricks) {
      // A payload that does not decode is refused up front.
      auto decoded = DecodeChunk(record);
      s = decoded.status();
      if (s.ok()) memory = decoded->MemoryUsage();
    }
  }
  if (!s.ok()) {
    if (done) done({s, 0});
    return;
  }
  Submit(EncodePutChunk(key, record), std::move(done), memory + kVirtualEntryBytes,
         [&](uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) {
           return ApplyPutChunk(seq, key.code(), record, expected_version);
         });
}

void Database::Impl::DeleteChunk(ChunkKey key, WriteDone done) {
  if (Status s = frame().CheckChunk(key.coord()); !s.ok()) {
    if (done) done({s, 0});
    return;
  }
  Submit(EncodeDeleteChunk(key), std::move(done), kVirtualEntryBytes,
         [&](uint64_t seq)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) { return ApplyDeleteChunk(seq, key.code()); });
}

void Database::Impl::Fail(const Status& cause, std::vector<Pending> batch, bool written) {
  // The error the writers get: what failed, and that nothing was applied.
  const Status error(
      cause.code(),
      absl::StrCat("the journal commit failed, so the write was not applied: ", cause.message()));
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
    std::map<uint64_t, std::pair<std::shared_ptr<const Chunk>, uint64_t>> dirty;
    uint64_t epoch = 0;
    VOXDB_RETURN_IF_ERROR(
        impl_->CaptureSnapshotState(&snap->store_, &dirty, &snap->fills_, &snap->seq_, &epoch));
    for (auto& [code, d] : dirty) {
      snap->dirty_.emplace(code, DatabaseSnapshot::Dirty{std::move(d.first), d.second});
    }
    if (!snapshots_->Add(snap.get())) return absl::CancelledError("the database is closing");
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
