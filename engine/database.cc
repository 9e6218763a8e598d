#include "engine/database.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/fills.h"
#include "engine/journal.h"
#include "engine/morton_box.h"

namespace voxdb::engine {
namespace {

// Memory charged for a cache entry that holds no chunk (reads as fills).
constexpr size_t kVirtualEntryBytes = 64;
constexpr std::string_view kMetaLastSeq = "last_seq";
// No sequence number above this value has ever been handed out: numbers
// are reserved in blocks, durably, before they are used, so that a crash
// (which may lose writes that async mode acknowledged) never leads to a
// number being issued twice.
constexpr std::string_view kMetaSeqReserved = "seq_reserved";
constexpr uint64_t kSeqBlock = uint64_t{1} << 16;

int64_t SteadyMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

size_t EntryBytes(const std::shared_ptr<Chunk>& chunk) {
  return chunk ? chunk->MemoryUsage() + kVirtualEntryBytes : kVirtualEntryBytes;
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

// The record of a dirty chunk (null: it reads as the fills), encoded now.
std::vector<uint8_t> EncodeDirty(const Chunk* chunk, uint64_t version, const FillSet& fills,
                                 const WorldFrame& frame, ChunkCoord c, const CodecOptions& codec) {
  if (chunk) return EncodeChunk(*chunk, version, NowMicros(), codec);
  return EncodeChunk(fills.Rasterise(frame, c, nullptr), version, NowMicros(), codec);
}

// A chunk that is not dirty, as `store` and `fills` have it: its stored
// record, zero-copy; else (not stored, or a fills marker) rasterised from
// the fills into *owned. Fills in read->status, version, record, source.
void ReadClean(const ChunkStore::Snapshot& store, const FillSet& fills, const WorldFrame& frame,
               const CodecOptions& codec, ChunkRead* read, std::vector<uint8_t>* owned) {
  auto got = store.GetChunk(read->key);
  uint64_t marker_version = 0;
  if (got.ok()) {
    auto view = ParseChunkRecord(*got);
    if (!view.ok()) {
      read->status = view.status();
      return;
    }
    if (view->header.encoding != ChunkEncoding::kFills) {
      read->version = view->header.version;
      read->record = *got;
      read->source = ChunkRead::Source::kStore;
      return;
    }
    marker_version = view->header.version;
  } else if (!absl::IsNotFound(got.status())) {
    read->status = got.status();
    return;
  }
  uint64_t fill_version = 0;
  Chunk raster = fills.Rasterise(frame, read->key.coord(), &fill_version);
  read->version = std::max(marker_version, fill_version);
  *owned = EncodeChunk(raster, read->version, NowMicros(), codec);
  read->record = *owned;
  read->source = ChunkRead::Source::kFills;
}

}  // namespace

class Database::Impl {
 public:
  explicit Impl(const DatabaseOptions& options) : options_(options) {
    shards_ = std::vector<Shard>(static_cast<size_t>(std::max(1, options.cache_shards)));
  }
  ~Impl() { Close(); }

  Status Open(const std::string& dir);
  void Close();
  const WorldFrame& frame() const { return store_->frame(); }
  ChunkStore& store() { return *store_; }
  ChangeFeed* feed() { return feed_.get(); }
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
  Status Flush();
  DatabaseStats Stats() const;

  std::shared_ptr<const FillSet> Fills() const { return FillsSnapshot(); }

  // Waits until every write submitted so far is durable. The error of the
  // failed commit that rolled some of them back, if one did.
  Status WaitForSubmitted() {
    uint64_t target, epoch;
    {
      std::lock_guard<std::mutex> lock(edit_mu_);
      target = next_seq_ - 1;
      epoch = reset_epoch_.load();
    }
    if (WaitDurable(target, epoch, /*any_mode=*/true)) return absl::OkStatus();
    std::lock_guard<std::mutex> lock(edit_mu_);
    return last_failure_;
  }

  std::vector<Database::DirtyChunk> DirtyChunks() {
    for (;;) {
      std::vector<Database::DirtyChunk> out;
      uint64_t epoch, newest = 0;
      {
        std::lock_guard<std::mutex> lock(edit_mu_);
        epoch = reset_epoch_.load();
        out.reserve(dirty_.size());
        for (const auto& [code, info] : dirty_) {
          const Shard& shard = ShardOf(code);
          std::lock_guard<std::mutex> l(shard.mu);
          auto it = shard.map.find(code);
          if (it == shard.map.end()) continue;
          out.push_back(
              {ChunkKey::FromCode(code), it->second.version, it->second.chunk != nullptr});
          newest = std::max(newest, it->second.version);
        }
      }
      // kSync: only once all of it is durable (else list again).
      if (WaitDurable(newest, epoch)) return out;
    }
  }

  Status RebuildFromStore(
      const std::function<Status(const ChunkStore::Snapshot&, WriteBatch*)>& build) {
    std::lock_guard<std::mutex> l(store_write_mu_);
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
  // moment. Dirty chunks are marked shared: their writers copy them.
  Status FillSnapshot(std::unique_ptr<ChunkStore::Snapshot>* store,
                      std::map<uint64_t, std::pair<std::shared_ptr<const Chunk>, uint64_t>>* dirty,
                      std::shared_ptr<const FillSet>* fills, uint64_t* seq, uint64_t* epoch) {
    std::lock_guard<std::mutex> w(store_write_mu_);
    std::lock_guard<std::mutex> lock(edit_mu_);
    *epoch = reset_epoch_.load();
    VOXDB_ASSIGN_OR_RETURN(*store, store_->BeginLongRead());
    for (const auto& [code, info] : dirty_) {
      Shard& shard = ShardOf(code);
      std::lock_guard<std::mutex> l(shard.mu);
      auto it = shard.map.find(code);
      if (it == shard.map.end()) continue;
      it->second.shared = true;
      dirty->emplace(code, std::make_pair(it->second.chunk, it->second.version));
    }
    *fills = FillsSnapshot();
    *seq = next_seq_ - 1;
    return absl::OkStatus();
  }

  // Returns once every write up to `seq` is durable (true), or false when a
  // failed commit rolled writes back since `epoch` (reset_epoch_ read
  // before what is to be checked was read): read again. Only in kSync
  // unless any_mode.
  // The caller must hold no store read transaction (a commit growing the
  // map waits for them all).
  bool WaitDurable(uint64_t seq, uint64_t epoch, bool any_mode = false);
  bool IsDurable(uint64_t seq, uint64_t epoch) const;
  // OUT_OF_BOUNDS / INVALID / TOO_LARGE for a box ReadBox or WriteBox refuses.
  Status CheckReadBox(const VoxelBox& box) const;

  bool WritesWouldWait() const {
    return waiting_writers_.load() > 0 ||
           dirty_bytes_.load() >= static_cast<int64_t>(options_.dirty_bytes);
  }

 private:
  struct Entry {
    std::shared_ptr<Chunk> chunk;  // null: the chunk reads as the fills
    // With chunk null: the fills it reads as (those of the moment it took
    // `version`), so that its voxels and version always go together.
    std::shared_ptr<const FillSet> fills;
    uint64_t version = 0;
    size_t bytes = kVirtualEntryBytes;
    bool dirty = false;
    bool pinned = false;  // held by a writer between load and apply
    bool in_lru = false;
    // A reader or the flusher took a reference to `chunk` (under the shard
    // lock): the next writer copies it instead of mutating in place.
    bool shared = false;
    std::list<uint64_t>::iterator lru;
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, Entry> map;  // node-based: Entry* stay valid
    std::list<uint64_t> lru;                  // clean, unpinned entries; front = newest
    uint64_t epoch = 0;                       // bumps when an entry leaves or turns clean
  };
  struct DirtyInfo {
    uint64_t first_seq = 0;  // oldest edit not yet flushed
    uint64_t last_seq = 0;   // newest edit
    int64_t since_us = 0;    // when first_seq was applied
    bool in_flight = false;  // a flush holds a snapshot
    uint64_t snapshot_seq = 0;
    uint64_t pending_first = 0;  // first edit after the snapshot
  };
  struct Pending {
    uint64_t seq;
    int64_t enqueued_us;  // SteadyMicros() when queued (async lag)
    std::vector<uint8_t> record;
    WriteDone done;                        // null in async mode (already acknowledged)
    std::shared_ptr<ChangeRecord> change;  // for the change feed
  };
  // A chunk as read: the cached/stored chunk, or null for "reads as fills".
  struct ChunkRef {
    std::shared_ptr<const Chunk> chunk;
    std::shared_ptr<const FillSet> fills;  // virtual: the fills it reads as
    uint64_t version = 0;
    bool virtual_chunk = false;
    // The chunk's voxels: `chunk`, or the fills rasterised.
    std::shared_ptr<const Chunk> Materialise(const WorldFrame& frame, uint64_t code) const {
      if (chunk) return chunk;
      return std::make_shared<Chunk>(fills->Rasterise(frame, MortonDecode(code), nullptr));
    }
  };

  Shard& ShardOf(uint64_t code) {
    return shards_[(code * 0x9E3779B97F4A7C15ull >> 32) % shards_.size()];
  }
  const Shard& ShardOf(uint64_t code) const {
    return shards_[(code * 0x9E3779B97F4A7C15ull >> 32) % shards_.size()];
  }
  std::shared_ptr<const FillSet> FillsSnapshot() const {
    std::lock_guard<std::mutex> l(fills_mu_);
    return fills_;
  }

  // What a writer needs of the chunk it is about to change.
  enum class Need { kContent, kVersion, kNothing };
  // Reads the chunk from the store (not the cache). Virtual for a chunk that
  // is not stored or is a kFills marker. With kVersion only the header is
  // read; with kNothing a corrupt record is read as a virtual version 0.
  Status LoadFromStore(uint64_t code, ChunkRef* out, Need need = Need::kContent);
  // Cache first, then the store; caches what it decoded.
  Status ReadChunk(uint64_t code, ChunkRef* out);
  void InsertClean(Shard& shard, uint64_t code, ChunkRef ref, uint64_t epoch);
  void TouchLocked(Shard& shard, Entry& e);
  // Evicts clean chunks until the cache, plus `headroom` bytes about to be
  // added, fits cache_bytes (or nothing clean is left).
  void MaybeEvict(size_t headroom = 0);

  // --- Writes: all under edit_mu_ ---
  // Loads and pins the entry for `code`.
  Status PinForWrite(uint64_t code, Entry** out, Need need = Need::kContent)
      /* REQUIRES edit_mu_ */;
  void Unpin(uint64_t code, Entry* e) /* REQUIRES edit_mu_ */;
  // Gives the entry a private, materialised chunk to mutate. Shard lock held.
  Chunk& MutableChunk(uint64_t code, Entry* e);
  // Changes a pinned entry: mutate(*e) runs under its shard's lock, and the
  // entry takes its new version, byte count and dirty state under the same
  // lock, so that readers see voxels and version of one moment. Then the
  // entry is unpinned and listed dirty.
  template <typename F>
  void Change(uint64_t code, Entry* e, uint64_t seq, F&& mutate) /* REQUIRES edit_mu_ */;

  // Applies a validated write: waits for room for `estimate` more dirty
  // bytes, takes a sequence number, runs apply(seq) under edit_mu_ and queues
  // the journal record.
  // `describe`, when set, adds what the change feed keeps of the write
  // (the changed voxels) to its record once applied.
  template <typename Fn>
  void Submit(std::vector<uint8_t> record, WriteDone done, size_t estimate, Fn&& apply,
              const std::function<void(ChangeRecord*)>& describe = {});
  // Back-pressure: reserves `estimate` bytes of the dirty budget, waiting for
  // the flusher when they do not fit. BUSY after busy_timeout.
  Status ReserveRoom(size_t estimate);
  void ReleaseRoom(size_t estimate);
  // What making `code` dirty costs in memory on top of today: 0 if it is
  // dirty, its size if cached clean, else an estimate from its stored record.
  size_t DirtyCost(uint64_t code, std::unique_ptr<ChunkStore::Snapshot>* snap);

  Status ApplySetVoxels(uint64_t seq, const std::vector<ChunkEdits>& edits);
  Status ApplyWriteBox(uint64_t seq, const VoxelBox& box, std::span<const uint8_t> voxels);
  Status ApplyFillBox(uint64_t seq, const VoxelBox& box, uint8_t material);
  Status ApplyPutChunk(uint64_t seq, uint64_t code, std::span<const uint8_t> record,
                       std::optional<uint64_t> expected);
  Status ApplyDeleteChunk(uint64_t seq, uint64_t code);
  Status ApplyRecord(uint64_t seq, const JournalRecord& rec);
  // Reads the fills table into fills_.
  Status LoadFills();
  // Applies every journal record in the store.
  Status ReplayLocked() /* REQUIRES edit_mu_ */;
  // Persists (synced) a new reservation of sequence numbers from next_seq_.
  Status ReserveSeqs() /* REQUIRES edit_mu_ */;
  // kAsync back-pressure: waits while the oldest write not yet committed is
  // older than AsyncLagBoundMicros(). BUSY after busy_timeout.
  Status WaitForJournal();
  int64_t AsyncLagBoundMicros() const {
    return 2 * std::chrono::duration_cast<std::chrono::microseconds>(options_.commit_interval)
                   .count() +
           20'000;
  }
  // The most dirty memory one write may ask for: half the dirty budget, but
  // always enough for a 2 x 2 x 2 block of whole chunks (which then goes
  // alone if it must).
  size_t MaxWriteBytes() const {
    constexpr size_t kOneChunk = kChunkVoxels + 2 * sizeof(Brick) * kBricksPerChunk + 4096;
    return std::max(options_.dirty_bytes / 2, 8 * kOneChunk);
  }

  // --- Committer and flusher ---
  void CommitterLoop();
  // A batch is durable: publishes it, moves durable_seq_, queues its
  // acknowledgements.
  void Acknowledge(std::vector<Pending> batch);
  // A batch failed (`written`: its transaction committed but its sync
  // failed): removes its records from the journal, rolls the database back
  // to its durable state (failing every write queued behind it too) and
  // answers them all with the error.
  void Fail(const Status& cause, std::vector<Pending> batch, bool written);
  // Empties the cache and reloads fills and journal: the durable state.
  Status ReloadLocked() /* REQUIRES store_write_mu_, edit_mu_ */;
  void FlusherLoop();
  // Flushes up to one batch of dirty chunks whose first_seq <= max_first_seq
  // and that became dirty before `dirty_before_us`; sets *more when more such
  // chunks remain.
  Status FlushBatch(uint64_t max_first_seq, int64_t dirty_before_us, size_t max_bytes, bool* more);

  const DatabaseOptions options_;
  std::unique_ptr<ChunkStore> store_;
  std::vector<Shard> shards_;
  std::atomic<int64_t> cache_bytes_{0};
  std::atomic<int64_t> dirty_bytes_{0};
  std::atomic<uint64_t> hits_{0}, misses_{0}, evictions_{0};
  std::atomic<size_t> evict_cursor_{0};

  // Fills: an immutable snapshot replaced on every FILL_BOX.
  mutable std::mutex fills_mu_;
  std::shared_ptr<const FillSet> fills_ = std::make_shared<FillSet>();

  // Writes.
  mutable std::mutex edit_mu_;
  uint64_t next_seq_ = 1;                                // GUARDED_BY(edit_mu_)
  std::map<uint64_t, DirtyInfo> dirty_;                  // GUARDED_BY(edit_mu_)
  std::set<std::pair<uint64_t, uint64_t>> dirty_order_;  // (first_seq, code)
  std::vector<Fill> unpersisted_fills_;                  // GUARDED_BY(edit_mu_)
  bool closing_ = false;                                 // GUARDED_BY(edit_mu_)
  // No sequence number above it has been handed out (kMetaSeqReserved).
  uint64_t seq_reserved_ = 0;  // GUARDED_BY(edit_mu_)
  // Set when the disk failed a sync and the undo: every write fails with it.
  Status poisoned_;      // GUARDED_BY(edit_mu_)
  Status last_failure_;  // GUARDED_BY(edit_mu_): of the last failed commit
  // Bumped (under store_write_mu_ and edit_mu_) each time a failed commit
  // rolled the database back: what was read before may be gone.
  std::atomic<uint64_t> reset_epoch_{0};
  std::atomic<uint64_t> rollbacks_{0};
  uint64_t journal_floor_ = 0;  // GUARDED_BY(edit_mu_): journal keys below are gone
  std::atomic<uint64_t> last_seq_{0};
  std::atomic<uint64_t> dirty_chunks_{0};
  // The chunks the write being applied changed, as Commit() saw them.
  std::vector<ChangedChunk> changed_;  // GUARDED_BY(edit_mu_)
  // Committed writes, published once durable (created at open).
  std::unique_ptr<ChangeFeed> feed_;
  void Publish(const std::vector<Pending>& batch);

  // Group committer.
  std::mutex commit_mu_;
  std::condition_variable commit_cv_;     // work for the committer
  std::condition_variable committed_cv_;  // committed_seq_ moved
  std::vector<Pending> pending_;          // GUARDED_BY(commit_mu_)
  bool commit_now_ = false;               // GUARDED_BY(commit_mu_)
  bool stop_committer_ = false;           // GUARDED_BY(commit_mu_)
  std::atomic<uint64_t> committed_seq_{0};
  int64_t inflight_oldest_us_ = 0;  // GUARDED_BY(commit_mu_): the batch committing
  std::atomic<uint64_t> journal_waits_{0};
  // Every write up to durable_seq_ is durable (or failed and rolled back).
  std::mutex durable_mu_;
  std::condition_variable durable_cv_;
  std::atomic<uint64_t> durable_seq_{0};
  bool committer_stopped_ = false;  // GUARDED_BY(durable_mu_)
  std::atomic<uint64_t> journal_records_{0}, journal_bytes_{0}, journal_commits_{0};
  std::thread committer_;

  // Acknowledgements run on their own thread, so that waking the writers of
  // one commit overlaps the next commit's fsync.
  std::mutex ack_mu_;
  std::condition_variable ack_cv_;
  std::vector<std::pair<Status, std::vector<Pending>>> acks_;  // GUARDED_BY(ack_mu_)
  bool stop_acker_ = false;                                    // GUARDED_BY(ack_mu_)
  std::thread acker_;
  void AckerLoop();

  // Flusher.
  std::mutex flush_mu_;
  // Held around the flusher's store writes and RebuildFromStore.
  std::mutex store_write_mu_;
  std::condition_variable flush_cv_;    // work for the flusher
  std::condition_variable flushed_cv_;  // a requested flush finished
  // Flush() requests: generation numbers, and the seq they must cover.
  uint64_t flush_requested_ = 0;  // GUARDED_BY(flush_mu_)
  uint64_t flush_served_ = 0;     // GUARDED_BY(flush_mu_)
  uint64_t flush_target_ = 0;     // GUARDED_BY(flush_mu_): flush all with first_seq <= this
  Status flush_status_;           // GUARDED_BY(flush_mu_): of the last requested flush
  bool stop_flusher_ = false;     // GUARDED_BY(flush_mu_)
  std::atomic<uint64_t> flushes_{0}, flushed_chunks_{0}, flushed_bytes_{0};
  // Bumped after each flush commits, before its chunks turn clean.
  std::atomic<uint64_t> flush_generation_{0};
  std::thread flusher_;

  // Back-pressure.
  std::mutex room_mu_;
  std::condition_variable room_cv_;
  int64_t reserved_ = 0;                 // GUARDED_BY(room_mu_): admitted, not yet applied
  std::atomic<int> waiting_writers_{0};  // writers blocked on back-pressure
  std::atomic<uint64_t> write_waits_{0}, busy_rejections_{0};

  uint64_t replayed_ = 0;
  bool open_ = false;
};

// --- Open, replay, close ------------------------------------------------------

Status Database::Impl::Open(const std::string& dir) {
  if (options_.dirty_bytes == 0 || options_.dirty_bytes > options_.cache_bytes) {
    return absl::InvalidArgumentError("dirty_bytes must be in (0, cache_bytes]");
  }
  if (!(options_.flush_high_water > 0 && options_.flush_high_water <= 1)) {
    return absl::InvalidArgumentError("flush_high_water must be in (0, 1]");
  }
  VOXDB_ASSIGN_OR_RETURN(store_, ChunkStore::Open(dir, options_.store));
  VOXDB_RETURN_IF_ERROR(LoadFills());
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
    uint64_t last = 0;
    auto meta = snap->Get(Table::kMeta, Bytes(kMetaLastSeq));
    if (meta.ok() && meta->size() == 8) last = DecodeFixed64(meta->data());
    // Numbers up to the reservation may have been handed out to writes a
    // crash lost: never again.
    auto reserved = snap->Get(Table::kMeta, Bytes(kMetaSeqReserved));
    if (reserved.ok() && reserved->size() == 8)
      last = std::max(last, DecodeFixed64(reserved->data()));
    auto journal_last = snap->LastKey(Table::kJournal);
    if (journal_last.ok()) last = std::max(last, DecodeJournalKey(*journal_last));
    for (const Fill& f : fills_->fills()) last = std::max(last, f.seq);
    next_seq_ = last + 1;
    last_seq_ = last;
    seq_reserved_ = last;
  }
  {
    std::lock_guard<std::mutex> lock(edit_mu_);
    VOXDB_RETURN_IF_ERROR(ReplayLocked());
  }
  changed_.clear();  // what replay committed is before the feed
  changed_.shrink_to_fit();
  committed_seq_ = next_seq_ - 1;
  durable_seq_ = next_seq_ - 1;
  feed_ = std::make_unique<ChangeFeed>(options_.changes, next_seq_ - 1);
  committer_ = std::thread([this] { CommitterLoop(); });
  acker_ = std::thread([this] { AckerLoop(); });
  flusher_ = std::thread([this] { FlusherLoop(); });
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
  std::lock_guard<std::mutex> l(fills_mu_);
  fills_ = std::move(fills);
  return absl::OkStatus();
}

Status Database::Impl::ReplayLocked() {
  VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
  Status inner;
  VOXDB_RETURN_IF_ERROR(snap->Scan(
      Table::kJournal, {}, {}, [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
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
    std::lock_guard<std::mutex> lock(edit_mu_);
    closing_ = true;
  }
  room_cv_.notify_all();
  (void)Flush();
  {
    std::lock_guard<std::mutex> l(flush_mu_);
    stop_flusher_ = true;
  }
  flush_cv_.notify_all();
  flusher_.join();
  {
    std::lock_guard<std::mutex> l(commit_mu_);
    stop_committer_ = true;
  }
  commit_cv_.notify_all();
  committer_.join();
  {
    std::lock_guard<std::mutex> l(durable_mu_);
    committer_stopped_ = true;
  }
  durable_cv_.notify_all();
  {
    std::lock_guard<std::mutex> l(ack_mu_);
    stop_acker_ = true;
  }
  ack_cv_.notify_all();
  acker_.join();
  {
    // A clean close hands out nothing past last_seq: the next open need
    // not skip the rest of the reserved block.
    std::lock_guard<std::mutex> lock(edit_mu_);
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

// --- Cache ---------------------------------------------------------------------

Status Database::Impl::LoadFromStore(uint64_t code, ChunkRef* out, Need need) {
  const ChunkCoord c = MortonDecode(code);
  // The fills first: a fill applied after this reads as newer (its writer
  // updates the cached entry under the shard lock, or the chunk is loaded
  // again).
  out->fills = FillsSnapshot();
  VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
  auto got = snap->GetChunk(ChunkKey::FromCode(code));
  if (absl::IsNotFound(got.status())) {
    out->chunk = nullptr;
    out->virtual_chunk = true;
    out->version = out->fills->VersionOf(frame(), c);
    return absl::OkStatus();
  }
  VOXDB_RETURN_IF_ERROR(got.status());
  auto parsed = ParseChunkRecord(*got);
  if (!parsed.ok() && need == Need::kNothing) {
    // Being replaced whole: a corrupt record does not stand in the way.
    out->chunk = nullptr;
    out->virtual_chunk = true;
    out->version = 0;
    return absl::OkStatus();
  }
  VOXDB_RETURN_IF_ERROR(parsed.status());
  const ChunkRecordView view = *parsed;
  if (view.header.encoding == ChunkEncoding::kFills) {
    out->chunk = nullptr;
    out->virtual_chunk = true;
    out->version = std::max(view.header.version, out->fills->VersionOf(frame(), c));
    return absl::OkStatus();
  }
  if (need != Need::kContent) {  // about to be replaced whole: the version is enough
    out->chunk = nullptr;
    out->virtual_chunk = true;
    out->version = view.header.version;
    return absl::OkStatus();
  }
  VOXDB_ASSIGN_OR_RETURN(Chunk chunk, DecodeChunk(*got));
  out->chunk = std::make_shared<Chunk>(std::move(chunk));
  out->virtual_chunk = false;
  out->version = view.header.version;
  return absl::OkStatus();
}

void Database::Impl::TouchLocked(Shard& shard, Entry& e) {
  if (e.in_lru) shard.lru.splice(shard.lru.begin(), shard.lru, e.lru);
}

void Database::Impl::InsertClean(Shard& shard, uint64_t code, ChunkRef ref, uint64_t epoch) {
  if (ref.virtual_chunk) return;  // fills change; virtual entries are not cached clean
  {
    std::lock_guard<std::mutex> l(shard.mu);
    if (shard.epoch != epoch || shard.map.count(code)) return;
    Entry& e = shard.map[code];
    e.chunk = std::const_pointer_cast<Chunk>(ref.chunk);
    e.version = ref.version;
    e.bytes = EntryBytes(e.chunk);
    e.shared = true;  // the reader keeps its reference
    shard.lru.push_front(code);
    e.lru = shard.lru.begin();
    e.in_lru = true;
    cache_bytes_ += static_cast<int64_t>(e.bytes);
  }
  MaybeEvict();
}

void Database::Impl::MaybeEvict(size_t headroom) {
  const int64_t budget =
      static_cast<int64_t>(options_.cache_bytes) - static_cast<int64_t>(headroom);
  for (size_t tries = 0; cache_bytes_.load() > budget && tries < shards_.size(); ++tries) {
    Shard& shard = shards_[evict_cursor_++ % shards_.size()];
    std::lock_guard<std::mutex> l(shard.mu);
    while (cache_bytes_.load() > budget && !shard.lru.empty()) {
      const uint64_t code = shard.lru.back();
      shard.lru.pop_back();
      auto it = shard.map.find(code);
      VOXDB_CHECK(it != shard.map.end() && !it->second.dirty && !it->second.pinned);
      cache_bytes_ -= static_cast<int64_t>(it->second.bytes);
      shard.map.erase(it);
      ++shard.epoch;
      ++evictions_;
    }
  }
}

Status Database::Impl::ReadChunk(uint64_t code, ChunkRef* out) {
  Shard& shard = ShardOf(code);
  uint64_t epoch;
  {
    std::lock_guard<std::mutex> l(shard.mu);
    auto it = shard.map.find(code);
    if (it != shard.map.end()) {
      ++hits_;
      out->chunk = it->second.chunk;
      out->fills = it->second.fills;
      it->second.shared = true;
      out->version = it->second.version;
      out->virtual_chunk = it->second.chunk == nullptr;
      if (out->virtual_chunk && !out->fills) out->fills = FillsSnapshot();
      TouchLocked(shard, it->second);
      return absl::OkStatus();
    }
    epoch = shard.epoch;
  }
  ++misses_;
  ChunkRef ref;
  VOXDB_RETURN_IF_ERROR(LoadFromStore(code, &ref));
  InsertClean(shard, code, ref, epoch);
  *out = std::move(ref);
  return absl::OkStatus();
}

bool Database::Impl::IsDurable(uint64_t seq, uint64_t epoch) const {
  // durable_seq_ before reset_epoch_: a rollback bumps the epoch first.
  return durable_seq_.load(std::memory_order_acquire) >= seq &&
         reset_epoch_.load(std::memory_order_acquire) == epoch;
}

bool Database::Impl::WaitDurable(uint64_t seq, uint64_t epoch, bool any_mode) {
  if (!any_mode && options_.durability != Durability::kSync) return true;
  if (durable_seq_.load(std::memory_order_acquire) >= seq) {
    return reset_epoch_.load(std::memory_order_acquire) == epoch;
  }
  {
    // The committer syncs as soon as it has nothing else to do; ask it to
    // commit now in case it is gathering.
    std::lock_guard<std::mutex> l(commit_mu_);
    commit_now_ = true;
  }
  commit_cv_.notify_all();
  std::unique_lock<std::mutex> l(durable_mu_);
  durable_cv_.wait(l, [&] {
    return durable_seq_.load() >= seq || reset_epoch_.load() != epoch || committer_stopped_;
  });
  // (Once the committer has stopped nothing more becomes durable: reading
  // again would find the same.)
  return (durable_seq_.load() >= seq || committer_stopped_) && reset_epoch_.load() == epoch;
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
    const uint64_t epoch = reset_epoch_.load(std::memory_order_acquire);
    fills = FillsSnapshot();
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
      const uint64_t epoch = reset_epoch_.load(std::memory_order_acquire);
      is_dirty = false;
      {
        Shard& shard = ShardOf(code);
        std::lock_guard<std::mutex> l(shard.mu);
        auto it = shard.map.find(code);
        if (it != shard.map.end() && it->second.dirty) {
          is_dirty = true;
          dirty.chunk = it->second.chunk;
          // (A chunk with voxels does not use its fills: the call's will do.)
          dirty.fills = it->second.fills ? it->second.fills : fills;
          it->second.shared = true;
          dirty.version = it->second.version;
          ++hits_;
        }
      }
      if (!is_dirty) break;
      // No read transaction may stay open while waiting: a commit that must
      // grow the map waits for every one to end.
      if (!IsDurable(dirty.version, epoch)) snap.reset();
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
    const uint64_t generation = flush_generation_.load(std::memory_order_acquire);
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
    const uint64_t epoch = reset_epoch_.load(std::memory_order_acquire);
    uint64_t newest = 0;
    std::unordered_map<uint64_t, std::shared_ptr<const Chunk>> chunks;
    for (size_t i = 0; i < at.size(); ++i) {
      const ChunkCoord c = frame().ChunkOf(at[i]);
      const uint64_t code = MortonEncode(c.x, c.y, c.z);
      auto it = chunks.find(code);
      if (it == chunks.end()) {
        // A cached chunk is read in place under its shard's lock (writers
        // change chunks only under it), without marking it shared: taking a
        // reference would make the next write copy the whole chunk.
        Shard& shard = ShardOf(code);
        {
          std::lock_guard<std::mutex> l(shard.mu);
          auto e = shard.map.find(code);
          if (e != shard.map.end() && e->second.chunk) {
            ++hits_;
            TouchLocked(shard, e->second);
            const ChunkCoord o = frame().OffsetInChunk(at[i]);
            out[i] = e->second.chunk->Get(o.x, o.y, o.z);
            newest = std::max(newest, e->second.version);
            continue;
          }
        }
        ChunkRef ref;
        VOXDB_RETURN_IF_ERROR(ReadChunk(code, &ref));
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
    const uint64_t epoch = reset_epoch_.load(std::memory_order_acquire);
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
          VOXDB_RETURN_IF_ERROR(ReadChunk(code, &ref));
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

Status Database::Impl::PinForWrite(uint64_t code, Entry** out, Need need) {
  Shard& shard = ShardOf(code);
  {
    std::lock_guard<std::mutex> l(shard.mu);
    auto it = shard.map.find(code);
    if (it != shard.map.end()) {
      Entry& e = it->second;
      if (e.in_lru) {
        shard.lru.erase(e.lru);
        e.in_lru = false;
      }
      e.pinned = true;
      if (!e.dirty) ++hits_;
      *out = &e;
      return absl::OkStatus();
    }
  }
  ++misses_;
  ChunkRef ref;
  VOXDB_RETURN_IF_ERROR(LoadFromStore(code, &ref, need));
  std::lock_guard<std::mutex> l(shard.mu);
  auto [it, inserted] = shard.map.try_emplace(code);
  Entry& e = it->second;
  if (inserted) {
    e.chunk = std::const_pointer_cast<Chunk>(ref.chunk);
    if (!e.chunk) e.fills = ref.fills;
    e.version = ref.version;
    e.bytes = EntryBytes(e.chunk);
    cache_bytes_ += static_cast<int64_t>(e.bytes);
  } else if (e.in_lru) {  // a reader cached it meanwhile: the same stored state
    shard.lru.erase(e.lru);
    e.in_lru = false;
  }
  e.pinned = true;
  *out = &e;
  return absl::OkStatus();
}

void Database::Impl::Unpin(uint64_t code, Entry* e) {
  Shard& shard = ShardOf(code);
  std::lock_guard<std::mutex> l(shard.mu);
  e->pinned = false;
  if (!e->dirty) {
    if (!e->chunk) {  // virtual and clean: not cached
      cache_bytes_ -= static_cast<int64_t>(e->bytes);
      shard.map.erase(code);
      ++shard.epoch;
      return;
    }
    shard.lru.push_front(code);
    e->lru = shard.lru.begin();
    e->in_lru = true;
  }
}

Chunk& Database::Impl::MutableChunk(uint64_t code, Entry* e) {
  if (!e->chunk) {
    const std::shared_ptr<const FillSet> fills = e->fills ? e->fills : FillsSnapshot();
    e->chunk = std::make_shared<Chunk>(fills->Rasterise(frame(), MortonDecode(code), nullptr));
  } else if (e->shared) {
    // A reader or the flusher may hold this state: copy on write. (The flag,
    // not use_count(), orders their reads before our writes.)
    e->chunk = std::make_shared<Chunk>(*e->chunk);
  }
  e->shared = false;
  return *e->chunk;
}

template <typename F>
void Database::Impl::Change(uint64_t code, Entry* e, uint64_t seq, F&& mutate) {
  Shard& shard = ShardOf(code);
  {
    std::lock_guard<std::mutex> l(shard.mu);
    mutate(*e);
    if (e->chunk) e->fills.reset();
    const size_t bytes = EntryBytes(e->chunk);
    const int64_t delta = static_cast<int64_t>(bytes) - static_cast<int64_t>(e->bytes);
    cache_bytes_ += delta;
    if (e->dirty) {
      dirty_bytes_ += delta;
    } else {
      dirty_bytes_ += static_cast<int64_t>(bytes);
      e->dirty = true;
    }
    e->bytes = bytes;
    e->version = seq;
    e->pinned = false;
    changed_.push_back(ChangedChunk{code, e->chunk != nullptr, {}});
  }
  auto [it, inserted] = dirty_.try_emplace(code);
  DirtyInfo& d = it->second;
  if (inserted) {
    d.first_seq = d.last_seq = seq;
    d.since_us = SteadyMicros();
    dirty_order_.insert({seq, code});
    ++dirty_chunks_;
  } else {
    d.last_seq = seq;
    if (d.in_flight && d.pending_first == 0) d.pending_first = seq;
  }
}

size_t Database::Impl::DirtyCost(uint64_t code, std::unique_ptr<ChunkStore::Snapshot>* snap) {
  {
    Shard& shard = ShardOf(code);
    std::lock_guard<std::mutex> l(shard.mu);
    auto it = shard.map.find(code);
    if (it != shard.map.end()) return it->second.dirty ? 0 : it->second.bytes;
  }
  if (!*snap) {
    auto opened = store_->BeginRead();
    if (!opened.ok()) return kVirtualEntryBytes;
    *snap = std::move(*opened);
  }
  auto got = (*snap)->GetChunk(ChunkKey::FromCode(code));
  if (!got.ok() || got->size() < kChunkHeaderSize + 4 ||
      (*got)[1] != static_cast<uint8_t>(ChunkEncoding::kBricks)) {
    return kVirtualEntryBytes + sizeof(Chunk);
  }
  // The brick stream's size is about the bricks' memory.
  return DecodeFixed32(got->data() + kChunkHeaderSize) + sizeof(Brick) * kBricksPerChunk +
         kVirtualEntryBytes;
}

Status Database::Impl::ReserveRoom(size_t estimate) {
  const int64_t budget = static_cast<int64_t>(options_.dirty_bytes);
  const int64_t want = static_cast<int64_t>(estimate);
  std::unique_lock<std::mutex> l(room_mu_);
  auto fits = [&] {
    const int64_t used = dirty_bytes_.load() + reserved_;
    // A write larger than the whole budget goes alone.
    return used + want <= budget || (used <= 0 && reserved_ == 0);
  };
  if (!fits()) {
    ++write_waits_;
    ++waiting_writers_;
    const auto deadline = std::chrono::steady_clock::now() + options_.busy_timeout;
    while (!fits()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        --waiting_writers_;
        ++busy_rejections_;
        return BusyError(absl::StrFormat(
            "dirty data is at its budget of %u bytes and the flusher did not make room within "
            "%d ms",
            options_.dirty_bytes, static_cast<int>(options_.busy_timeout.count())));
      }
      flush_cv_.notify_all();
      room_cv_.wait_for(l, std::chrono::milliseconds(5));
    }
    --waiting_writers_;
  }
  reserved_ += want;
  return absl::OkStatus();
}

void Database::Impl::ReleaseRoom(size_t estimate) {
  {
    std::lock_guard<std::mutex> l(room_mu_);
    reserved_ -= static_cast<int64_t>(estimate);
  }
  room_cv_.notify_all();
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
    if (Status s = WaitForJournal(); !s.ok()) {
      if (done) done({s, 0});
      return;
    }
  }
  if (Status s = ReserveRoom(estimate); !s.ok()) {
    if (done) done({s, 0});
    return;
  }
  uint64_t seq = 0;
  Status status;
  {
    std::lock_guard<std::mutex> lock(edit_mu_);
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
      MaybeEvict(estimate);
      changed_.clear();
      status = apply(seq);
      if (!status.ok()) {
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
      change->chunks = std::move(changed_);
      changed_.clear();
      if (describe) describe(change.get());
      {
        std::lock_guard<std::mutex> l(commit_mu_);
        pending_.push_back(Pending{seq, SteadyMicros(), std::move(record),
                                   sync ? std::move(done) : WriteDone(), std::move(change)});
      }
      commit_cv_.notify_one();
    }
  }
  ReleaseRoom(estimate);
  MaybeEvict();  // the write may have grown the cache past its budget
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

Status Database::Impl::WaitForJournal() {
  // kAsync acknowledges before the commit; the journal may fall behind by
  // at most this much before writers wait for it.
  const int64_t bound_us = AsyncLagBoundMicros();
  std::unique_lock<std::mutex> l(commit_mu_);
  auto oldest = [&] {
    int64_t t = inflight_oldest_us_;
    if (!pending_.empty() && (t == 0 || pending_.front().enqueued_us < t)) {
      t = pending_.front().enqueued_us;
    }
    return t;
  };
  const auto deadline = std::chrono::steady_clock::now() + options_.busy_timeout;
  for (bool counted = false;; counted = true) {
    const int64_t t = oldest();
    if (t == 0 || SteadyMicros() - t <= bound_us || stop_committer_) return absl::OkStatus();
    if (!counted) ++journal_waits_;
    if (std::chrono::steady_clock::now() >= deadline) {
      ++busy_rejections_;
      return BusyError(absl::StrFormat(
          "the journal is more than %d ms behind the acknowledged writes and did not catch up "
          "within %d ms",
          static_cast<int>(bound_us / 1000), static_cast<int>(options_.busy_timeout.count())));
    }
    commit_now_ = true;
    commit_cv_.notify_all();
    committed_cv_.wait_for(l, std::chrono::milliseconds(2));
  }
}

Status Database::Impl::ApplySetVoxels(uint64_t seq, const std::vector<ChunkEdits>& edits) {
  std::vector<Entry*> entries(edits.size());
  for (size_t i = 0; i < edits.size(); ++i) {
    if (Status s = PinForWrite(edits[i].code, &entries[i]); !s.ok()) {
      for (size_t j = 0; j < i; ++j) Unpin(edits[j].code, entries[j]);
      return s;
    }
  }
  for (size_t i = 0; i < edits.size(); ++i) {
    Change(edits[i].code, entries[i], seq, [&](Entry& e) {
      Chunk& chunk = MutableChunk(edits[i].code, &e);
      for (uint32_t p : edits[i].packed) {
        const uint32_t idx = EditIndex(p);
        chunk.Set(idx & 127, (idx >> 7) & 127, idx >> 14, EditMaterial(p));
      }
    });
  }
  return absl::OkStatus();
}

Status Database::Impl::ApplyWriteBox(uint64_t seq, const VoxelBox& box,
                                     std::span<const uint8_t> voxels) {
  const ChunkBox cb = ChunksOf(frame(), box);
  std::vector<std::pair<uint64_t, Entry*>> pinned;
  for (uint32_t cz = cb.lo.z; cz <= cb.hi.z; ++cz)
    for (uint32_t cy = cb.lo.y; cy <= cb.hi.y; ++cy)
      for (uint32_t cx = cb.lo.x; cx <= cb.hi.x; ++cx) {
        const uint64_t code = MortonEncode(cx, cy, cz);
        Entry* e;
        if (Status s = PinForWrite(code, &e); !s.ok()) {
          for (auto& [c, pe] : pinned) Unpin(c, pe);
          return s;
        }
        pinned.push_back({code, e});
      }
  const uint64_t sx = box.hi.x - box.lo.x, sy = box.hi.y - box.lo.y;
  std::vector<uint8_t> part;
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
    Change(code, e, seq, [&](Entry& entry) {
      if (local.volume() == kChunkVoxels) {
        entry.chunk = std::make_shared<Chunk>(Chunk::FromDense(part));
        entry.shared = false;
      } else {
        MutableChunk(code, &entry).WriteBox(local, part.data());
      }
    });
  }
  return absl::OkStatus();
}

Status Database::Impl::ApplyFillBox(uint64_t seq, const VoxelBox& box, uint8_t material) {
  // The stored and dirty chunks it touches, in Morton order.
  const ChunkBox cb = ChunksOf(frame(), box);
  std::set<uint64_t> touched;
  for (const auto& [code, info] : dirty_) {
    if (cb.ContainsCode(code)) touched.insert(code);
  }
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
    auto next = std::make_shared<FillSet>(*FillsSnapshot());
    next->Add(Fill{seq, box, material});
    fills = next;
    std::lock_guard<std::mutex> l(fills_mu_);
    fills_ = fills;
  }
  unpersisted_fills_.push_back(Fill{seq, box, material});
  for (uint64_t code : touched) {
    const ChunkCoord c = MortonDecode(code);
    const VoxelBox chunk_box = frame().ChunkBox(c);
    const VoxelBox pbox = Intersect(box, chunk_box);
    const bool whole = BoxContains(box, chunk_box);
    Entry* e;
    // A chunk the fill covers wholly is replaced, even a corrupt one. One
    // it covers in part and that fails to load (corrupt) is left as it is;
    // the fill still covers everything else.
    if (!PinForWrite(code, &e, whole ? Need::kNothing : Need::kContent).ok()) continue;
    Change(code, e, seq, [&](Entry& entry) {
      if (whole || !entry.chunk) {
        entry.chunk = nullptr;  // reads as the fills, this one on top
        entry.fills = fills;
      } else {
        MutableChunk(code, &entry).FillBox(ToLocal(pbox, frame().ChunkOrigin(c)), material);
      }
    });
  }
  return absl::OkStatus();
}

Status Database::Impl::ApplyPutChunk(uint64_t seq, uint64_t code, std::span<const uint8_t> record,
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
  VOXDB_RETURN_IF_ERROR(PinForWrite(code, &e, expected ? Need::kVersion : Need::kNothing));
  if (expected && *expected != e->version) {
    const uint64_t current = e->version;
    Unpin(code, e);
    return ConflictError(absl::StrFormat("chunk %s is at version %u, not the expected %u",
                                         ChunkKey::FromCode(code).ToString(), current, *expected));
  }
  Change(code, e, seq, [&](Entry& entry) {
    entry.chunk = std::move(chunk);
    entry.shared = false;
    if (!entry.chunk) entry.fills = FillsSnapshot();
  });
  return absl::OkStatus();
}

Status Database::Impl::ApplyDeleteChunk(uint64_t seq, uint64_t code) {
  Entry* e;
  VOXDB_RETURN_IF_ERROR(PinForWrite(code, &e, Need::kNothing));
  Change(code, e, seq, [&](Entry& entry) {
    entry.chunk = nullptr;
    entry.fills = FillsSnapshot();
  });
  return absl::OkStatus();
}

Status Database::Impl::ApplyRecord(uint64_t seq, const JournalRecord& rec) {
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
    const size_t cost = DirtyCost(g.code, &snap);
    if (cost > 0) estimate += cost + sizeof(Brick) * kBricksPerChunk;
    estimate += std::min(g.packed.size() * 1024, kChunkVoxels);
    if (estimate > MaxWriteBytes()) break;  // refused whole: no need to look further
  }
  snap.reset();
  Submit(
      std::move(record), std::move(done), estimate,
      [&](uint64_t seq) { return ApplySetVoxels(seq, groups); },
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
        estimate += DirtyCost(MortonEncode(cx, cy, cz), &snap) + sizeof(Brick) * kBricksPerChunk;
  snap.reset();
  Submit(
      EncodeWriteBox(box, voxels), std::move(done), estimate,
      [&](uint64_t seq) { return ApplyWriteBox(seq, box, voxels); },
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
      [&](uint64_t seq) { return ApplyFillBox(seq, box, material); },
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
         [&](uint64_t seq) { return ApplyPutChunk(seq, key.code(), record, expected_version); });
}

void Database::Impl::DeleteChunk(ChunkKey key, WriteDone done) {
  if (Status s = frame().CheckChunk(key.coord()); !s.ok()) {
    if (done) done({s, 0});
    return;
  }
  Submit(EncodeDeleteChunk(key), std::move(done), kVirtualEntryBytes,
         [&](uint64_t seq) { return ApplyDeleteChunk(seq, key.code()); });
}

// --- Group committer ------------------------------------------------------------

void Database::Impl::CommitterLoop() {
  const bool async = options_.durability == Durability::kAsync;
  // With lazy meta sync, a commit is durable once the next commit (or a
  // Sync) returns: its acknowledgements wait in `unacked` until then.
  std::vector<Pending> unacked;
  for (;;) {
    std::vector<Pending> batch;
    {
      std::unique_lock<std::mutex> l(commit_mu_);
      if (unacked.empty()) {
        commit_cv_.wait(l, [&] { return stop_committer_ || commit_now_ || !pending_.empty(); });
      }
      if (pending_.empty()) {
        if (!unacked.empty()) {
          // Idle: make the last commit durable now rather than wait.
          l.unlock();
          if (Status s = store_->Sync(); s.ok()) {
            Acknowledge(std::move(unacked));
          } else {
            Fail(s, std::move(unacked), /*written=*/true);
          }
          unacked.clear();
          continue;
        }
        commit_now_ = false;
        committed_cv_.notify_all();
        if (stop_committer_) return;
        continue;
      }
      if (async && !stop_committer_ && !commit_now_) {
        // Gather for one interval: in async mode nobody waits for the commit.
        commit_cv_.wait_for(l, options_.commit_interval,
                            [&] { return stop_committer_ || commit_now_; });
      }
      commit_now_ = false;
      batch.swap(pending_);
      inflight_oldest_us_ = batch.front().enqueued_us;
    }
    WriteBatch wb;
    uint64_t bytes = 0;
    for (Pending& p : batch) {
      bytes += p.record.size();
      wb.Put(Table::kJournal, JournalKey(p.seq), std::move(p.record));
    }
    const auto commit_start = std::chrono::steady_clock::now();
    Status s = store_->Write(wb);
    const bool written = s.ok();
    if (s.ok() && async) s = store_->Sync();  // durable within the interval
    journal_records_ += batch.size();
    journal_bytes_ += bytes;
    ++journal_commits_;
    if (options_.on_commit) {
      options_.on_commit(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - commit_start).count(),
          batch.size());
    }
    const uint64_t last = batch.back().seq;
    if (!s.ok()) {
      // The batch failed: its writes (and every one queued behind it, which
      // were applied on top of it) are rolled back and answered with the
      // error. An earlier commit still waiting for its meta sync is synced
      // first: it succeeded.
      // (unacked is empty in kAsync, so here the batch's write failed.)
      if (!unacked.empty()) {
        if (Status u = store_->Sync(); u.ok()) {
          Acknowledge(std::move(unacked));
        } else {
          Fail(u, std::move(unacked), /*written=*/true);
        }
        unacked.clear();
      }
      Fail(s, std::move(batch), written);
      std::lock_guard<std::mutex> l(commit_mu_);
      inflight_oldest_us_ = 0;
      continue;
    }
    // This commit's data sync also flushed the previous commit's meta page.
    if (!unacked.empty()) Acknowledge(std::move(unacked));
    unacked.clear();
    if (!options_.store.lazy_meta_sync || async) {
      // Published before committed_seq_ moves: whoever waits for the commit
      // (Flush) then finds the change in the feed.
      Acknowledge(std::move(batch));
    } else {
      unacked = std::move(batch);
    }
    {
      std::lock_guard<std::mutex> l(commit_mu_);
      committed_seq_ = std::max(committed_seq_.load(), last);
      inflight_oldest_us_ = 0;
    }
    committed_cv_.notify_all();
  }
}

void Database::Impl::Acknowledge(std::vector<Pending> batch) {
  if (batch.empty()) return;
  // Durable now: published, then visible to kSync readers, then answered.
  Publish(batch);
  {
    std::lock_guard<std::mutex> l(durable_mu_);
    durable_seq_.store(std::max(durable_seq_.load(), batch.back().seq), std::memory_order_release);
  }
  durable_cv_.notify_all();
  if (std::none_of(batch.begin(), batch.end(), [](const Pending& p) { return bool(p.done); })) {
    return;
  }
  {
    std::lock_guard<std::mutex> l(ack_mu_);
    acks_.emplace_back(absl::OkStatus(), std::move(batch));
  }
  ack_cv_.notify_one();
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
    std::lock_guard<std::mutex> w(store_write_mu_);
    std::lock_guard<std::mutex> lock(edit_mu_);
    {
      std::lock_guard<std::mutex> l(commit_mu_);
      queued.swap(pending_);
    }
    last_failure_ = error;
    if (!poison.ok()) {
      poisoned_ = poison;
    } else if (Status s = ReloadLocked(); !s.ok()) {
      poisoned_ = IoError(
          absl::StrCat("after a failed journal commit the database could not be read back (",
                       s.message(), "); no write is accepted until voxdbd restarts"));
    }
    ++rollbacks_;
    // Every number handed out is now durable or failed.
    const uint64_t resolved = next_seq_ - 1;
    reset_epoch_.fetch_add(1, std::memory_order_acq_rel);
    {
      std::lock_guard<std::mutex> l(durable_mu_);
      durable_seq_.store(std::max(durable_seq_.load(), resolved), std::memory_order_release);
    }
    {
      std::lock_guard<std::mutex> l(commit_mu_);
      committed_seq_ = std::max(committed_seq_.load(), resolved);
    }
  }
  durable_cv_.notify_all();
  committed_cv_.notify_all();
  room_cv_.notify_all();
  std::move(queued.begin(), queued.end(), std::back_inserter(batch));
  {
    std::lock_guard<std::mutex> l(ack_mu_);
    acks_.emplace_back(error, std::move(batch));
  }
  ack_cv_.notify_one();
}

Status Database::Impl::ReloadLocked() {
  // Forget every cached chunk, dirty or not, and every fill not yet
  // persisted; read the fills back and replay the journal: the state of
  // the last durable commit. (Snapshots keep their own copies.)
  for (Shard& shard : shards_) {
    std::lock_guard<std::mutex> l(shard.mu);
    shard.map.clear();
    shard.lru.clear();
    ++shard.epoch;
  }
  cache_bytes_ = 0;
  dirty_bytes_ = 0;
  dirty_.clear();
  dirty_order_.clear();
  dirty_chunks_ = 0;
  unpersisted_fills_.clear();
  VOXDB_RETURN_IF_ERROR(LoadFills());
  const uint64_t keep_next = next_seq_;
  Status s = ReplayLocked();
  next_seq_ = std::max(next_seq_, keep_next);  // failed numbers are never reused
  last_seq_ = next_seq_ - 1;
  changed_.clear();
  return s;
}

void Database::Impl::Publish(const std::vector<Pending>& batch) {
  std::vector<std::shared_ptr<const ChangeRecord>> records;
  records.reserve(batch.size());
  const auto now = std::chrono::steady_clock::now();
  for (const Pending& p : batch) {
    if (!p.change) continue;
    p.change->durable = now;  // not shared before this
    records.push_back(p.change);
  }
  feed_->Publish(std::move(records));
}

void Database::Impl::AckerLoop() {
  for (;;) {
    std::vector<std::pair<Status, std::vector<Pending>>> work;
    {
      std::unique_lock<std::mutex> l(ack_mu_);
      ack_cv_.wait(l, [&] { return stop_acker_ || !acks_.empty(); });
      if (acks_.empty()) return;  // stopping, nothing left
      work.swap(acks_);
    }
    for (auto& [status, batch] : work) {
      for (Pending& p : batch) {
        if (p.done) p.done({status, status.ok() ? p.seq : 0});
      }
    }
  }
}

// --- Flusher --------------------------------------------------------------------

Status Database::Impl::FlushBatch(uint64_t max_first_seq, int64_t dirty_before_us, size_t max_bytes,
                                  bool* more) {
  const auto start = std::chrono::steady_clock::now();
  struct Item {
    uint64_t code;
    std::shared_ptr<const Chunk> chunk;
    uint64_t version;
  };
  std::vector<Item> items;
  std::vector<Fill> fills_to_persist;
  std::shared_ptr<const FillSet> fills;
  uint64_t low_water, last_seq, journal_floor, epoch;
  *more = false;
  {
    std::lock_guard<std::mutex> lock(edit_mu_);
    epoch = reset_epoch_.load();
    size_t bytes = 0;
    low_water = std::min(committed_seq_.load() + 1, next_seq_);
    for (const auto& [first_seq, code] : dirty_order_) {
      DirtyInfo& d = dirty_[code];
      const bool eligible = first_seq <= max_first_seq && d.since_us <= dirty_before_us;
      if (!eligible || bytes >= max_bytes) {
        // dirty_order_ is by first_seq: everything from here stays dirty.
        low_water = std::min(low_water, first_seq);
        *more = eligible;
        break;
      }
      Shard& shard = ShardOf(code);
      std::lock_guard<std::mutex> l(shard.mu);
      Entry& e = shard.map.at(code);
      items.push_back(Item{code, e.chunk, e.version});
      e.shared = true;
      bytes += e.bytes;
      d.in_flight = true;
      d.snapshot_seq = d.last_seq;
      d.pending_first = 0;
    }
    fills = FillsSnapshot();
    last_seq = next_seq_ - 1;
    journal_floor = journal_floor_;
  }
  // The snapshots may include edits whose journal records are not durable
  // yet. Write nothing before they are: a flushed state must never be ahead
  // of the journal (a fill's chunk deletes without the fill, a write box
  // half on disk), nor hold a write whose commit could still fail. Then
  // every fill up to there is durable too. If a failed commit rolled writes
  // back meanwhile, the snapshots may hold them: start again.
  uint64_t included = 0;
  for (const Item& it : items) included = std::max(included, it.version);
  included = std::max(included, fills->last_seq());
  if (!WaitDurable(included, epoch, /*any_mode=*/true)) {
    *more = true;
    return absl::OkStatus();
  }
  {
    std::lock_guard<std::mutex> lock(edit_mu_);
    if (reset_epoch_.load() != epoch) {
      *more = true;
      return absl::OkStatus();
    }
    for (const Fill& f : unpersisted_fills_) {
      if (f.seq <= included) fills_to_persist.push_back(f);
    }
  }
  if (items.empty() && fills_to_persist.empty() && low_water <= journal_floor) {
    return absl::OkStatus();
  }

  // Encode outside every lock: the snapshots are immutable (copy on write).
  WriteBatch batch;
  std::vector<FlushedChunk> flushed;  // for the observers
  // The chunks, then at most one operation per chunk and observer, the
  // fills, last_seq and the journal range.
  batch.Reserve(items.size() * (1 + options_.observers.size()) + fills_to_persist.size() + 2);
  if (!options_.observers.empty()) flushed.reserve(items.size());
  const CodecOptions codec{options_.zstd_level};
  const int64_t now = NowMicros();
  uint64_t bytes = 0;
  for (const Item& it : items) {
    const ChunkKey key = ChunkKey::FromCode(it.code);
    if (!it.chunk) {
      // A deleted chunk: a marker keeps its version when that is newer than
      // the fills it reads as; otherwise nothing needs storing.
      if (it.version > fills->VersionOf(frame(), key.coord())) {
        batch.PutChunk(key, EncodeFillsMarker(it.version, now));
      } else {
        batch.DeleteChunk(key);
      }
      if (!options_.observers.empty()) flushed.push_back({key, it.version, false});
      continue;
    }
    Chunk compact = *it.chunk;
    compact.Compact();
    std::vector<uint8_t> rec = EncodeChunk(compact, it.version, now, codec);
    bytes += rec.size();
    batch.PutChunk(key, std::move(rec));
    if (!options_.observers.empty()) flushed.push_back({key, it.version, true});
  }
  if (!flushed.empty()) {
    for (ChunkObserver* o : options_.observers) {
      WriteBatch observed;  // applied in key order
      o->OnFlush(flushed, &observed);
      batch.AppendSorted(std::move(observed));
    }
  }
  for (const Fill& f : fills_to_persist) {
    batch.Put(Table::kFills, JournalKey(f.seq), f.Encode());
  }
  std::vector<uint8_t> last(8);
  EncodeFixed64(last.data(), last_seq);
  batch.Put(Table::kMeta, Bytes(kMetaLastSeq), std::move(last));
  // The journal records every flushed state covers, in the same transaction.
  batch.DeleteRange(Table::kJournal, JournalKey(0), JournalKey(low_water));
  Status s;
  // Held until the chunks are marked clean: no rollback in between.
  std::unique_lock<std::mutex> write_lock(store_write_mu_);
  if (reset_epoch_.load() != epoch) {
    *more = true;
    return absl::OkStatus();
  }
  s = store_->Write(batch);
  if (s.ok()) flush_generation_.fetch_add(1, std::memory_order_release);

  {
    std::lock_guard<std::mutex> lock(edit_mu_);
    if (s.ok()) {
      for (const Fill& f : fills_to_persist) {
        std::erase_if(unpersisted_fills_, [&](const Fill& u) { return u.seq == f.seq; });
      }
    }
    for (const Item& it : items) {
      auto dit = dirty_.find(it.code);
      DirtyInfo& d = dit->second;
      d.in_flight = false;
      if (!s.ok()) continue;  // stays dirty; the next flush retries
      dirty_order_.erase({d.first_seq, it.code});
      if (d.last_seq == d.snapshot_seq) {
        dirty_.erase(dit);
        --dirty_chunks_;
        Shard& shard = ShardOf(it.code);
        std::lock_guard<std::mutex> l(shard.mu);
        Entry& e = shard.map.at(it.code);
        e.dirty = false;
        dirty_bytes_ -= static_cast<int64_t>(e.bytes);
        ++shard.epoch;
        if (!e.pinned) {
          if (!e.chunk) {
            cache_bytes_ -= static_cast<int64_t>(e.bytes);
            shard.map.erase(it.code);
          } else {
            shard.lru.push_front(it.code);
            e.lru = shard.lru.begin();
            e.in_lru = true;
          }
        }
      } else {
        d.first_seq = d.pending_first;
        d.since_us = SteadyMicros();
        d.pending_first = 0;
        dirty_order_.insert({d.first_seq, it.code});
      }
    }
    if (s.ok()) journal_floor_ = low_water;
  }
  write_lock.unlock();
  if (s.ok()) {
    ++flushes_;
    flushed_chunks_ += items.size();
    flushed_bytes_ += bytes;
    if (options_.on_flush) {
      options_.on_flush(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
          items.size(), bytes);
    }
  }
  room_cv_.notify_all();
  MaybeEvict();
  return s;
}

void Database::Impl::FlusherLoop() {
  const auto tick =
      std::chrono::milliseconds(std::clamp<int64_t>(options_.max_dirty_age.count() / 4, 10, 1000));
  const int64_t high_water =
      static_cast<int64_t>(options_.flush_high_water * static_cast<double>(options_.dirty_bytes));
  for (;;) {
    uint64_t target = 0, generation = 0;
    bool requested = false;
    {
      std::unique_lock<std::mutex> l(flush_mu_);
      flush_cv_.wait_for(l, tick, [&] {
        return stop_flusher_ || flush_requested_ > flush_served_ ||
               dirty_bytes_.load() > high_water ||
               (waiting_writers_.load() > 0 && dirty_bytes_.load() > 0);
      });
      if (stop_flusher_ && flush_requested_ <= flush_served_) return;
      if (flush_requested_ > flush_served_) {
        requested = true;
        generation = flush_requested_;
        target = flush_target_;
      }
    }
    Status status;
    bool more = true;
    if (requested) {
      // Everything dirty at the time of the request.
      while (more && status.ok()) {
        status = FlushBatch(target, INT64_MAX, options_.flush_batch_bytes, &more);
      }
      std::lock_guard<std::mutex> l(flush_mu_);
      flush_served_ = generation;
      flush_status_ = status;
      flushed_cv_.notify_all();
      continue;
    }
    // Oldest first, until below the high-water mark, or further while
    // writers wait for room.
    while (more && status.ok() &&
           (dirty_bytes_.load() > high_water ||
            (waiting_writers_.load() > 0 && dirty_bytes_.load() > 0))) {
      status = FlushBatch(UINT64_MAX, INT64_MAX, options_.flush_batch_bytes, &more);
    }
    // Then anything older than the maximum age.
    const int64_t cutoff = SteadyMicros() - options_.max_dirty_age.count() * 1000;
    more = true;
    while (more && status.ok()) {
      status = FlushBatch(UINT64_MAX, cutoff, options_.flush_batch_bytes, &more);
    }
    if (!status.ok()) {
      // Storage full or an I/O error: back off; writers meet back-pressure.
      std::unique_lock<std::mutex> l(flush_mu_);
      flush_cv_.wait_for(l, tick,
                         [&] { return stop_flusher_ || flush_requested_ > flush_served_; });
    }
  }
}

Status Database::Impl::Flush() {
  uint64_t target, epoch;
  {
    std::lock_guard<std::mutex> lock(edit_mu_);
    target = next_seq_ - 1;
    epoch = reset_epoch_.load();
  }
  if (!WaitDurable(target, epoch, /*any_mode=*/true)) {
    // A write submitted before the call failed its commit and was rolled
    // back: what this flush was to make durable did not all happen.
    std::lock_guard<std::mutex> lock(edit_mu_);
    if (!last_failure_.ok()) return last_failure_;
  }
  std::unique_lock<std::mutex> l(flush_mu_);
  const uint64_t generation = ++flush_requested_;
  flush_target_ = std::max(flush_target_, target);
  flush_cv_.notify_all();
  flushed_cv_.wait(l, [&] { return flush_served_ >= generation; });
  return flush_status_;
}

DatabaseStats Database::Impl::Stats() const {
  DatabaseStats s;
  s.cache_hits = hits_;
  s.cache_misses = misses_;
  s.cache_evictions = evictions_;
  s.cache_bytes = static_cast<uint64_t>(std::max<int64_t>(0, cache_bytes_.load()));
  s.dirty_bytes = static_cast<uint64_t>(std::max<int64_t>(0, dirty_bytes_.load()));
  s.dirty_chunks = dirty_chunks_;
  for (const Shard& shard : shards_) {
    std::lock_guard<std::mutex> l(shard.mu);
    s.cache_chunks += shard.map.size();
  }
  {
    std::lock_guard<std::mutex> lock(edit_mu_);
    if (!dirty_order_.empty()) {
      int64_t oldest = INT64_MAX;
      for (const auto& [code, d] : dirty_) oldest = std::min(oldest, d.since_us);
      s.oldest_dirty_age_s = static_cast<double>(SteadyMicros() - oldest) / 1e6;
    }
    s.fills = FillsSnapshot()->size();
  }
  s.journal_records = journal_records_;
  s.journal_bytes = journal_bytes_;
  s.journal_commits = journal_commits_;
  s.last_seq = last_seq_;
  s.committed_seq = committed_seq_;
  s.durable_seq = durable_seq_;
  s.rollbacks = rollbacks_;
  s.journal_waits = journal_waits_;
  s.replayed_records = replayed_;
  s.flushes = flushes_;
  s.flushed_chunks = flushed_chunks_;
  s.flushed_bytes = flushed_bytes_;
  s.write_waits = write_waits_;
  s.busy_rejections = busy_rejections_;
  return s;
}

// --- Database -----------------------------------------------------------------

struct SnapshotRegistry {
  std::mutex mu;
  std::set<DatabaseSnapshot*> live;  // GUARDED_BY(mu)
  bool closed = false;               // GUARDED_BY(mu)
  // Ends every live snapshot's read transaction (before the environment
  // closes); later snapshots are refused.
  void CloseAll() {
    std::lock_guard<std::mutex> l(mu);
    for (DatabaseSnapshot* s : live) s->store_.reset();
    live.clear();
    closed = true;
  }
};

Database::Database(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)), snapshots_(std::make_shared<SnapshotRegistry>()) {}
// Snapshots still alive lose their read transactions first: LMDB must have
// none open when its environment closes.
Database::~Database() { snapshots_->CloseAll(); }

void Database::EndSnapshots() { snapshots_->CloseAll(); }

StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& dir,
                                                   const DatabaseOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  VOXDB_RETURN_IF_ERROR(impl->Open(dir));
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
        impl_->FillSnapshot(&snap->store_, &dirty, &snap->fills_, &snap->seq_, &epoch));
    for (auto& [code, d] : dirty) {
      snap->dirty_.emplace(code, DatabaseSnapshot::Dirty{std::move(d.first), d.second});
    }
    {
      std::lock_guard<std::mutex> l(snapshots_->mu);
      if (snapshots_->closed) return absl::CancelledError("the database is closing");
      snapshots_->live.insert(snap.get());
    }
    // Only what is durable: a write in the view is not one that could still
    // fail (or be lost in a crash). If one failed, the view held it: again.
    if (impl_->WaitDurable(snap->seq_, epoch, /*any_mode=*/true)) return snap;
  }
}

DatabaseSnapshot::~DatabaseSnapshot() {
  if (!registry_) return;
  std::lock_guard<std::mutex> l(registry_->mu);
  registry_->live.erase(this);
  store_.reset();  // while the environment is open (else CloseAll did it)
}

Status DatabaseSnapshot::CheckOpen() const {
  if (!store_) return absl::UnavailableError("the snapshot's database has closed");
  return absl::OkStatus();
}

Status DatabaseSnapshot::GetChunks(std::span<const ChunkKey> keys,
                                   const std::function<void(size_t, const ChunkRead&)>& fn) const {
  VOXDB_RETURN_IF_ERROR(CheckOpen());
  const CodecOptions codec{zstd_level_};
  for (size_t i = 0; i < keys.size(); ++i) {
    ChunkRead read;
    read.key = keys[i];
    const ChunkCoord c = keys[i].coord();
    if (Status s = frame_.CheckChunk(c); !s.ok()) {
      read.status = s;
      fn(i, read);
      continue;
    }
    std::vector<uint8_t> owned;
    if (auto it = dirty_.find(keys[i].code()); it != dirty_.end()) {
      read.source = ChunkRead::Source::kCache;
      read.version = it->second.version;
      owned = EncodeDirty(it->second.chunk.get(), read.version, *fills_, frame_, c, codec);
      read.record = owned;
      fn(i, read);
      continue;
    }
    ReadClean(*store_, *fills_, frame_, codec, &read, &owned);
    fn(i, read);
  }
  return absl::OkStatus();
}

Status DatabaseSnapshot::ScanChunks(const ChunkBox& box, uint64_t from,
                                    const std::function<bool(ChunkKey, uint64_t)>& fn) const {
  VOXDB_RETURN_IF_ERROR(CheckOpen());
  if (from > box.MaxCode()) return absl::OkStatus();  // past the box: nothing left
  // The stored chunks in the box (BIGMIN jumps over the gaps), merged in
  // Morton order with the dirty ones, which win.
  auto dirty = dirty_.lower_bound(std::max(from, box.MinCode()));
  const auto dirty_end = dirty_.upper_bound(box.MaxCode());
  bool stopped = false;
  // Emits the dirty chunks before `code` (all of them when nullopt); false
  // when fn asked to stop.
  auto emit_dirty_before = [&](std::optional<uint64_t> code) {
    for (; dirty != dirty_end && (!code || dirty->first < *code); ++dirty) {
      if (!dirty->second.chunk || !box.ContainsCode(dirty->first)) continue;
      if (!fn(ChunkKey::FromCode(dirty->first), dirty->second.version)) return false;
    }
    return true;
  };
  Status inner;
  VOXDB_RETURN_IF_ERROR(
      store_->ScanChunksInBox(box, from, [&](ChunkKey key, std::span<const uint8_t> record) {
        if (!emit_dirty_before(key.code())) {
          stopped = true;
          return false;
        }
        if (dirty != dirty_end && dirty->first == key.code()) return true;  // dirty wins
        auto view = ParseChunkRecord(record);
        if (!view.ok()) {
          inner = view.status();
          return false;
        }
        if (view->header.encoding == ChunkEncoding::kFills) return true;
        if (!fn(key, view->header.version)) {
          stopped = true;
          return false;
        }
        return true;
      }));
  VOXDB_RETURN_IF_ERROR(inner);
  if (!stopped) emit_dirty_before(std::nullopt);
  return absl::OkStatus();
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
