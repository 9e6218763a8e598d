// engine::Database: the engine's front door. A write-back cache of chunks
// over the ChunkStore, a durable journal with a group committer, a
// background flusher, fills, recovery and back-pressure (docs/DESIGN.md §4–§6).
//
// Writes are validated, applied to the cached chunk (loaded on a miss), and
// their edit appended to the journal (table `journal`, keyed by a sequence
// number). The group committer commits every pending journal record in one
// LMDB transaction. In Durability::kSync (the default) a write completes
// only after its journal commit is on disk; in kAsync it completes once
// applied, and is on disk within `commit_interval`. The flusher writes dirty
// chunks back in large transactions (high-water mark of dirty bytes, maximum
// age, Flush(), close), and deletes the journal records it covers in the same
// transaction. On open, the journal left by a crash is replayed.
//
// Versions: every write gets the next sequence number, and every chunk it
// changes takes that number as its version, so versions grow with each change
// and across deletes. A chunk that is not stored reads as the fills that
// intersect it (else air), with the newest such fill's number as version.
//
// Partitions: a database holds one partition of the key space
// (DatabaseOptions::partition, engine/partition.h; by default all of it).
// Reads and writes of chunks outside its range answer WRONG_PARTITION. The
// owner of a partition fences it by epochs: AdoptEpoch makes a newer epoch
// current, Fence makes older ones stale, and the group committer refuses
// every journal commit that holds a write of a stale epoch, or that
// DatabaseOptions::fence refuses, rolling it back as a failed commit.
//
// Example:
//   DatabaseOptions options;
//   VOXDB_ASSIGN_OR_RETURN(auto db, Database::Open("data", options));
//   db->SetVoxels(edits, [](const WriteResult& r) { /* r.status, r.version */ });
//   Status s = db->SetVoxelsAndWait(edits).status;   // blocking form
//
// Thread-safety: every method is thread-safe. Completion callbacks run on the
// engine's acknowledging thread (kSync, once the journal commit is durable,
// and for every write a failed commit rolled back) or inline on the caller's
// thread (kAsync, and errors decided before the write was queued); they
// must not block and must not call back into the Database's write methods
// synchronously with waits.
#ifndef VOXDB_ENGINE_DATABASE_H_
#define VOXDB_ENGINE_DATABASE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/change_feed.h"
#include "engine/chunk_codec.h"
#include "engine/chunk_store.h"
#include "engine/fills.h"
#include "engine/morton.h"
#include "engine/morton_box.h"
#include "engine/partition.h"
#include "engine/status.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

class NodeResources;

enum class Durability {
  kSync,   // acknowledged after the journal commit is on disk
  kAsync,  // acknowledged when applied; on disk within commit_interval
};

// One chunk of a flush, as its observers see it.
struct FlushedChunk {
  ChunkKey key;
  uint64_t version = 0;  // stored: the record's version
  bool stored = false;   // false: removed (deleted, or a fills marker: it reads as the fills)
};

// A secondary structure kept in step with the stored chunks (the S2 index,
// the LOD pyramid): the flusher calls it once per flush transaction with
// every chunk the transaction stores or removes, and what it adds to
// `batch` commits in the same LMDB transaction as the chunks. Called on the
// flusher thread only; must not block.
class ChunkObserver {
 public:
  virtual ~ChunkObserver() = default;
  // `chunks` holds each key once, in no particular order. A removed key
  // may have held no chunk.
  virtual void OnFlush(std::span<const FlushedChunk> chunks, WriteBatch* batch) = 0;
};

struct DatabaseOptions {
  DatabaseOptions() { store.lazy_meta_sync = true; }
  // The LMDB store (frame, map sizes, readers). The database turns on
  // lazy_meta_sync: a journal commit is acknowledged once the following
  // commit (or an explicit sync when the committer goes idle) has flushed
  // its meta page, which halves the fsyncs per commit under load.
  StoreOptions store;
  // DEFAULT: kSync.
  Durability durability = Durability::kSync;
  // Memory for cached chunks, clean and dirty, in bytes. DEFAULT: 1 GiB.
  size_t cache_bytes = size_t{1} << 30;
  // Dirty chunks may hold at most this much; writers then wait for the
  // flusher (back-pressure). REQUIRES: <= cache_bytes. DEFAULT: 256 MiB.
  size_t dirty_bytes = size_t{256} << 20;
  // The flusher starts when dirty bytes pass this fraction of dirty_bytes.
  // DEFAULT: 0.5.
  double flush_high_water = 0.5;
  // A chunk dirty for longer than this is flushed. DEFAULT: 30 s.
  std::chrono::milliseconds max_dirty_age{30'000};
  // kAsync: the journal is committed at least this often. kSync commits as
  // soon as the previous commit finishes. DEFAULT: 5 ms.
  std::chrono::milliseconds commit_interval{5};
  // How long a write waits on back-pressure before failing with BUSY.
  // DEFAULT: 10 s.
  std::chrono::milliseconds busy_timeout{10'000};
  // Encoded bytes per flush transaction. DEFAULT: 16 MiB.
  size_t flush_batch_bytes = size_t{16} << 20;
  // Cache shards (locks). DEFAULT: 16.
  int cache_shards = 16;
  // zstd level of chunk records. DEFAULT: 3.
  int zstd_level = CodecOptions::kDefaultZstdLevel;
  // Largest box ReadBox / WriteBox / a GET accepts, in voxels. DEFAULT: 2^28.
  uint64_t max_box_voxels = uint64_t{1} << 28;
  // Most chunks a box of ReadBox / WriteBox may touch (a thin box crossing
  // many chunks costs a chunk's work each). DEFAULT: 1024 (a cube of max_box_voxels touches at most
  // 343).
  uint64_t max_box_chunks = 1024;
  // Told about every chunk the flusher stores or removes. Not owned; must
  // outlive the Database. DEFAULT: none.
  std::vector<ChunkObserver*> observers;
  // For metrics: called by the group committer after each journal commit
  // with the commit's duration (its LMDB write, and in kAsync its sync) and
  // the writes it holds (its group size); and by the flusher after each
  // flush transaction that succeeded with its duration, chunks and encoded
  // bytes. On those engine threads: must be thread-safe, must not block and
  // must not call into the Database. DEFAULT: none.
  std::function<void(double seconds, size_t writes)> on_commit;
  std::function<void(double seconds, size_t chunks, size_t bytes)> on_flush;
  // How many committed writes the change feed retains (changes()).
  ChangeFeedOptions changes;
  // The partition this database holds (engine/partition.h): chunks outside
  // its range are WRONG_PARTITION to every read and write. Stored in meta at
  // the first open that finds no identity there; an open whose id or range
  // differs from the stored one fails with MISMATCH (the stored parent is
  // kept). DEFAULT: id 0, the whole key space, no parent.
  PartitionIdentity partition;
  // Self-fencing: called by the group committer before each journal commit
  // with the epoch of the oldest write in it (EpochOfSeq); an error fails
  // the commit (its writes are not applied, as for a failed commit) with
  // that status. On the committer thread: must be cheap, thread-safe, must
  // not block long and must not call into the Database. DEFAULT: none.
  std::function<Status(uint64_t epoch)> fence;
  // The node's shared budgets (engine/node_resources.h), when the node hosts
  // several Databases. With one, its cache and dirty budgets and its
  // high-water mark replace cache_bytes, dirty_bytes and flush_high_water
  // (dirty_bytes still bounds one write, which may dirty at most half of it:
  // TOO_LARGE). Null: this Database's own budgets. DEFAULT: null.
  std::shared_ptr<NodeResources> node;
};

struct WriteResult {
  Status status;
  uint64_t version = 0;  // the write's sequence number: the new version of what it changed
};
using WriteDone = std::function<void(const WriteResult&)>;

struct VoxelEdit {
  VoxelCoord at;
  uint8_t material = 0;
};

// One chunk of a GetChunks call; `record` is valid only inside the callback.
struct ChunkRead {
  ChunkKey key;
  Status status;                    // OK, OUT_OF_BOUNDS, CORRUPT, ...
  uint64_t version = 0;             // 0: never written and no fill
  std::span<const uint8_t> record;  // a chunk record (engine/FORMAT.md), never kFills
  enum class Source { kStore, kCache, kFills } source = Source::kStore;
};

struct DatabaseStats {
  // Cache.
  uint64_t cache_hits = 0, cache_misses = 0, cache_evictions = 0;
  uint64_t cache_bytes = 0, cache_chunks = 0;
  uint64_t dirty_bytes = 0, dirty_chunks = 0;
  double oldest_dirty_age_s = 0;
  // Journal and group commit.
  uint64_t journal_records = 0, journal_bytes = 0, journal_commits = 0;
  uint64_t last_seq = 0, committed_seq = 0;
  // Every write up to durable_seq is on disk (kSync readers see no newer).
  uint64_t durable_seq = 0;
  // Failed journal commits, each rolling the database back to its durable
  // state; kAsync writers that waited for the journal to catch up.
  uint64_t rollbacks = 0, journal_waits = 0;
  uint64_t replayed_records = 0;  // at open
  // Flusher.
  uint64_t flushes = 0, flushed_chunks = 0, flushed_bytes = 0;
  // Back-pressure.
  uint64_t write_waits = 0, busy_rejections = 0;
  uint64_t fills = 0;
};

class DatabaseSnapshot;
// A Database's live snapshots (engine/database_snapshot.h), shared with
// them so that either may be destroyed first.
struct SnapshotRegistry;

class Database {
 public:
  // Opens (creating if allowed) the database in `dir` and replays its
  // journal. Returns the store's errors (ChunkStore::Open), INVALID for bad
  // options, CORRUPT for an unreadable journal record.
  static StatusOr<std::unique_ptr<Database>> Open(const std::string& dir,
                                                  const DatabaseOptions& options);
  // Flushes everything and closes. Writes still running complete first.
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const WorldFrame& frame() const;

  // --- Reads (blocking) ----------------------------------------------------
  // In kSync a read returns only what is durable: when it touched a chunk
  // whose newest change is not yet committed it waits for that commit
  // (about one commit interval) and, if the commit failed and rolled back,
  // reads again.

  // Calls fn(i, read) for each key in order. A dirty chunk comes from the
  // cache (encoded), a clean stored one zero-copy from LMDB, an unstored one
  // rasterised from the fills. Per-chunk problems are in read.status
  // (WRONG_PARTITION for a chunk outside the partition's range); the
  // return value is for failures of the whole call.
  Status GetChunks(std::span<const ChunkKey> keys,
                   const std::function<void(size_t, const ChunkRead&)>& fn);
  // Voxel values, out[i] for at[i]. OUT_OF_BOUNDS (nothing read) if any
  // coordinate is outside the world, WRONG_PARTITION if any is in a chunk
  // outside the partition's range; CORRUPT if a chunk does not decode.
  Status GetVoxels(std::span<const VoxelCoord> at, uint8_t* out);
  // A dense copy of the box (x fastest, then y, then z) into out
  // (box.volume() bytes). OUT_OF_BOUNDS / INVALID for a bad box or one over
  // max_box_voxels.
  // `cancel`, when set, is checked between chunks: once true the read stops
  // with CLOSING (kCancelled).
  Status ReadBox(const VoxelBox& box, uint8_t* out, const std::atomic<bool>* cancel = nullptr);
  // What ReadBox and WriteBox check of a box before they touch anything:
  // OUT_OF_BOUNDS / INVALID for a bad box, TOO_LARGE over max_box_voxels
  // or max_box_chunks, WRONG_PARTITION when it touches a chunk outside the
  // partition's range. For callers that allocate box.volume() bytes first.
  Status CheckBoxLimits(const VoxelBox& box) const;
  // DatabaseOptions::max_box_voxels: the largest box ReadBox and WriteBox
  // take (HELLO advertises it).
  uint64_t max_box_voxels() const;

  // --- Writes (asynchronous) -----------------------------------------------
  // `done` is called exactly once. Validation errors (OUT_OF_BOUNDS,
  // INVALID, CONFLICT, and WRONG_PARTITION for a write touching a chunk
  // outside the partition's range or while fenced, see Fence) complete
  // inline before anything is applied; BUSY when
  // back-pressure waited longer than busy_timeout; CLOSING (kCancelled) after close
  // began; STORAGE_FULL / IO_ERROR when the journal commit failed, and
  // WRONG_PARTITION (or the fence callback's error) when the epoch check
  // before it refused it (DatabaseOptions::fence, Fence): the write is then
  // not applied (the database rolls back to its durable state, and
  // every write queued behind it gets the error too), never visible to a
  // reader or subscriber and never made durable later.

  void SetVoxels(std::span<const VoxelEdit> edits, WriteDone done);
  // voxels: box.volume() bytes, x fastest.
  void WriteBox(const VoxelBox& box, std::span<const uint8_t> voxels, WriteDone done);
  // Records a fill and rewrites the stored chunks it touches (docs/DESIGN.md
  // §6).
  void FillBox(const VoxelBox& box, uint8_t material, WriteDone done);
  // Replaces a whole chunk with a chunk record (its version and mtime
  // fields are ignored). CONFLICT when expected_version is set and differs
  // from the chunk's current version; CORRUPT for a record that does not
  // decode.
  void PutChunk(ChunkKey key, std::span<const uint8_t> record,
                std::optional<uint64_t> expected_version, WriteDone done);
  // The chunk reverts to the fills (else air); its version still grows.
  void DeleteChunk(ChunkKey key, WriteDone done);

  // Blocking forms of the writes, for tools and tests.
  WriteResult SetVoxelsAndWait(std::span<const VoxelEdit> edits);
  WriteResult WriteBoxAndWait(const VoxelBox& box, std::span<const uint8_t> voxels);
  WriteResult FillBoxAndWait(const VoxelBox& box, uint8_t material);
  WriteResult PutChunkAndWait(ChunkKey key, std::span<const uint8_t> record,
                              std::optional<uint64_t> expected_version);
  WriteResult DeleteChunkAndWait(ChunkKey key);

  // Commits the journal and writes every chunk dirty at the time of the call
  // back to the store. Returns the first error of those writes.
  Status Flush();

  DatabaseStats Stats() const;

  // --- Partition and epochs ------------------------------------------------
  // The identity stored in meta (DatabaseOptions::partition).
  const PartitionIdentity& partition() const;
  // The current epoch: the last of epoch_history(); 0 when it is empty.
  uint64_t epoch() const;
  EpochHistory epoch_history() const;
  // Makes `epoch` current, recording (epoch, next sequence number) in the
  // epoch history, durably, before it returns. CONFLICT unless epoch is
  // greater than the current one; the store's errors (nothing recorded).
  Status AdoptEpoch(uint64_t epoch);
  // Epochs below `min_epoch` are stale (it only rises): every write is
  // refused with WRONG_PARTITION, and every journal commit that begins
  // after the call and holds a write of a stale epoch fails with it (those
  // writes, and those queued behind them, are rolled back, never visible),
  // until AdoptEpoch makes an epoch of at least min_epoch current. Not
  // persisted: a reopened database is not fenced.
  void Fence(uint64_t min_epoch);

  // An online backup: waits until every write submitted before the call is
  // in a journal commit, then copies the environment compacted (see
  // ChunkStore::CopyTo) into `dest_dir`, an absolute path without NUL bytes
  // that must not exist (else INVALID, before waiting); the copy is built in
  // `dest_dir`.partial (which must not exist either) and renamed into place,
  // so a crash leaves no half backup under that name (ChunkStore::Backup).
  // Restoring is opening the copy (the journal in it replays). *bytes gets
  // the copy's size.
  Status Backup(const std::string& dest_dir, uint64_t* bytes);

  // A consistent, point-in-time view of the whole database: every write
  // applied before the call and none after (see DatabaseSnapshot); returns
  // once those writes are in a journal commit. Cheap to take (it copies the
  // list of dirty chunks, not their contents, while writes and flush
  // commits wait). BUSY when every LMDB reader slot is taken.
  StatusOr<std::unique_ptr<DatabaseSnapshot>> Snapshot();
  // Ends every live snapshot's read transaction now (their reads fail
  // UNAVAILABLE after) and refuses new ones: before a final flush, which a
  // snapshot would keep from growing the map.
  void EndSnapshots();

  // Chunks edited since their last flush, in Morton order: `present` false
  // for a deleted chunk (it reads as the fills). With a store snapshot taken
  // after this call, the newest state of every chunk (for queries that must
  // see writes not yet flushed).
  struct DirtyChunk {
    ChunkKey key;
    uint64_t version = 0;
    bool present = false;
  };
  // In kSync it returns once every listed state is durable.
  std::vector<DirtyChunk> DirtyChunks() const;
  // The fills, in sequence order.
  std::shared_ptr<const FillSet> Fills() const;

  // Runs build(snapshot, batch) and writes the batch, with no flush between
  // the snapshot and the write (flushes wait): for rebuilding a structure an
  // observer keeps, e.g. the S2 index, from the chunks.
  Status RebuildFromStore(
      const std::function<Status(const ChunkStore::Snapshot&, WriteBatch*)>& build);
  // True when a write submitted now would likely wait on back-pressure
  // (dirty data at its budget, or writers already waiting). A hint for
  // callers that must not block, e.g. an event loop handing such writes to
  // a worker thread; a write can still wait briefly when this said false.
  bool WritesWouldWait() const;
  // Every write since open, in commit order, once durable (see
  // engine/change_feed.h): what subscriptions follow.
  ChangeFeed& changes();
  // The underlying store (for stats, tools and tests).
  ChunkStore& store();

  class Impl;

 private:
  explicit Database(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::shared_ptr<SnapshotRegistry> snapshots_;
};

// A point-in-time view of a Database (Database::Snapshot): one LMDB read
// transaction, plus the chunks that were dirty at that moment (their
// immutable copy-on-write versions: later writes copy instead of changing
// them) and the fills then. Writes and flushes go on meanwhile; the view
// never changes. While it lives it holds an LMDB reader slot, keeps the
// pages of that transaction from reuse, delays any growth of the map, and
// keeps the dirty chunks it saw in memory: end it when done.
//
// Thread-safety: one thread at a time (one LMDB read transaction), which
// need not be the one that took it (MDB_NOTLS). It may outlive its Database: closing the Database
// ends the snapshot's read transaction, after which its reads fail UNAVAILABLE (reads must not run
// while the Database is being destroyed).
class DatabaseSnapshot {
 public:
  ~DatabaseSnapshot();
  DatabaseSnapshot(const DatabaseSnapshot&) = delete;
  DatabaseSnapshot& operator=(const DatabaseSnapshot&) = delete;

  // Every write with a sequence number up to this is in the view.
  uint64_t seq() const { return seq_; }
  // The fills of the view.
  const FillSet& fills() const { return *fills_; }

  // Like Database::GetChunks, in the view.
  Status GetChunks(std::span<const ChunkKey> keys,
                   const std::function<void(size_t, const ChunkRead&)>& fn) const;
  // The chunks that have a record in the view (stored or written, not those
  // that only read as the fills) inside `box`, in Morton order, from code
  // `from` on: fn(key, version) until it returns false.
  Status ScanChunks(const ChunkBox& box, uint64_t from,
                    const std::function<bool(ChunkKey, uint64_t)>& fn) const;
  // Every chunk record of the view with a code in `range`, as a copy of the
  // database would store it: those written or stored, and the markers of
  // deleted chunks (kFills records, which keep their version), in Morton
  // order: fn(key, version, record) until it returns false. record() encodes
  // the record (or points at the stored one) only when called; its span is
  // valid until fn returns.
  using RecordFn = std::function<std::span<const uint8_t>()>;
  Status ScanRecords(const MortonRange& range,
                     const std::function<bool(ChunkKey, uint64_t, const RecordFn&)>& fn) const;

 private:
  friend class Database;
  friend struct SnapshotRegistry;
  struct Dirty {
    std::shared_ptr<const Chunk> chunk;  // null: reads as the fills
    uint64_t version = 0;
  };
  explicit DatabaseSnapshot(const WorldFrame& frame) : frame_(frame) {}

  // The read transaction, if the Database is still open; null after.
  // Returns UNAVAILABLE when it is gone.
  Status CheckOpen() const;

  std::shared_ptr<SnapshotRegistry> registry_;
  WorldFrame frame_;
  int zstd_level_ = CodecOptions::kDefaultZstdLevel;
  // Reset under registry_->mu (by the destructor, or by CloseAll when the
  // Database closes); read without it, since reads must not run while the
  // Database is being destroyed (so not annotated ABSL_GUARDED_BY).
  std::unique_ptr<ChunkStore::Snapshot> store_;
  // The database's partition: GetChunks answers WRONG_PARTITION outside it.
  PartitionIdentity partition_;
  std::map<uint64_t, Dirty> dirty_;  // by Morton code
  std::shared_ptr<const FillSet> fills_;
  uint64_t seq_ = 0;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_DATABASE_H_
