// ChunkStore: one database directory, one LMDB environment with named
// sub-databases ("tables"), and the chunk records keyed by Morton code.
//
// Tables (engine/FORMAT.md describes each key and value):
//   meta    format version, world frame, creation time
//   chunks  8-byte big-endian Morton key -> chunk record (engine/chunk_codec.h)
//   fills, journal, lod, s2index   reserved for the layers above
//
// Reads go through a Snapshot (an LMDB read transaction): Get returns a
// zero-copy view of the stored bytes inside LMDB's memory map, valid until the
// Snapshot ends. Writes go through WriteBatch, applied atomically in one write
// transaction. When a write hits MDB_MAP_FULL the store aborts it, grows the
// map (doubling, up to StoreOptions::max_map_size) and retries; at the maximum
// the write fails with STORAGE_FULL while reads go on. MDB_WRITEMAP is never
// used: with it a full disk kills the process with SIGBUS; without it a full
// disk is an ENOSPC from write(), reported as STORAGE_FULL.
//
// Example:
//   StoreOptions options;
//   VOXDB_ASSIGN_OR_RETURN(auto store, ChunkStore::Open("data", options));
//   WriteBatch batch;
//   batch.PutChunk(key, EncodeChunk(chunk, 1, NowMicros()));
//   VOXDB_RETURN_IF_ERROR(store->Write(batch));
//   VOXDB_ASSIGN_OR_RETURN(auto snap, store->BeginRead());
//   VOXDB_ASSIGN_OR_RETURN(std::span<const uint8_t> rec, snap->GetChunk(key));
//
// Thread-safety: ChunkStore is thread-safe. Writes are serialised inside.
// A Snapshot may move between threads but is used by one at a time.
// Growing the map waits for open Snapshots to end (up to
// StoreOptions::grow_wait), so keep snapshots short, and never hold one
// while calling Write on the same thread (that write would wait, then fail
// with BUSY if it needs to grow the map).
#ifndef VOXDB_ENGINE_CHUNK_STORE_H_
#define VOXDB_ENGINE_CHUNK_STORE_H_

#include <lmdb.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/morton.h"
#include "engine/morton_box.h"
#include "engine/mutex.h"
#include "engine/status.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

inline constexpr uint32_t kStoreFormatVersion = 1;

enum class Table : int { kMeta = 0, kChunks, kFills, kJournal, kLod, kS2Index };
inline constexpr int kTableCount = 6;
const char* TableName(Table table);

struct StoreOptions {
  // The frame for a new database; when set, an existing database must have
  // been created with an equal frame (else MISMATCH). DEFAULT: unset: new
  // databases get WorldFrame::Earth(), existing ones keep theirs.
  std::optional<WorldFrame> frame;
  // Create the directory and database when missing. DEFAULT: true.
  bool create_if_missing = true;
  // Map size of a new environment, in bytes. DEFAULT: 64 MiB.
  size_t initial_map_size = size_t{64} << 20;
  // The map never grows past this; writes then fail with STORAGE_FULL
  // (and on_alert is told, once) until SetMaxMapSize raises it.
  // DEFAULT: 1 TiB (address space, not disk: the file grows with the data).
  size_t max_map_size = size_t{1} << 40;
  // LMDB reader slots: at least the number of threads that read at once.
  // DEFAULT: 126 (LMDB's own default).
  unsigned max_readers = 126;
  // fsync on every commit. false (MDB_NOSYNC) survives a process crash but
  // not power loss. DEFAULT: true.
  bool sync = true;
  // With sync: flush the data pages on every commit but leave the meta page
  // to the next commit or Sync() (MDB_NOMETASYNC): one fsync per commit
  // instead of two. A commit is then durable once a later commit or a Sync()
  // has returned; until then a power loss may undo it (never corrupt).
  // DEFAULT: false.
  bool lazy_meta_sync = false;
  // Take an exclusive lock on the database (one process at a time): an
  // open-file-description lock on data.mdb itself, which cannot be deleted
  // without the data (DIR/LOCK is flocked too, and records the holder's
  // pid, for information). DEFAULT: true.
  bool exclusive = true;
  // How long a write that must grow the map waits for open snapshots.
  // DEFAULT: 10 s, then BUSY.
  std::chrono::milliseconds grow_wait{10'000};
  // Told once when the store starts refusing every write until an operator
  // acts (data.mdb deleted under it; the map at max_map_size, again after
  // each SetMaxMapSize), with the error those writes get: for a log. Called on the writing thread;
  // must not call into the store. DEFAULT: none.
  std::function<void(const Status&)> on_alert;
};

struct StoreStats {
  uint64_t map_size = 0;      // bytes currently mapped
  uint64_t max_map_size = 0;  // StoreOptions::max_map_size
  uint64_t used_bytes = 0;    // pages in use * page size
  uint64_t chunk_count = 0;   // records in `chunks`
  uint64_t chunk_bytes = 0;   // pages of `chunks` (branch, leaf, overflow) * page size
  uint32_t max_readers = 0;
  uint32_t readers_in_use = 0;
  uint32_t stale_readers_cleared = 0;  // by mdb_reader_check at open
  uint64_t map_grows = 0;              // since open
};

// Ordered puts and deletes, applied atomically by ChunkStore::Write.
class WriteBatch {
 public:
  void Put(Table table, std::span<const uint8_t> key, std::span<const uint8_t> value);
  void Put(Table table, std::span<const uint8_t> key, std::vector<uint8_t>&& value);
  void Delete(Table table, std::span<const uint8_t> key);
  // Deletes every key in [begin, end) of the table.
  void DeleteRange(Table table, std::span<const uint8_t> begin, std::span<const uint8_t> end);
  void PutChunk(ChunkKey key, std::vector<uint8_t>&& record);
  void PutChunk(ChunkKey key, std::span<const uint8_t> record);
  void DeleteChunk(ChunkKey key);
  // Read-modify-write of one key, in the transaction: `update` gets the
  // key's current value (nullopt: absent; the span is valid only during
  // the call) and returns its new value (nullopt: delete the key). It must
  // depend on its argument only: it may be called more than once, first as
  // if the key were absent (most updated keys are new), and again when
  // ChunkStore::Write retries the batch after growing the map.
  using Updater = std::function<std::optional<std::vector<uint8_t>>(
      std::optional<std::span<const uint8_t>> current)>;
  // `value_bytes` estimates the new value's size (map growth, disk-full
  // checks).
  void Update(Table table, std::span<const uint8_t> key, Updater update, size_t value_bytes);
  // Keeps `data` alive as long as the batch (for what updaters point to).
  void Keep(std::shared_ptr<const void> data) { kept_.push_back(std::move(data)); }

  // Moves other's operations to the end of this batch, sorted by table and
  // key (LMDB inserts in key order touch far fewer pages). REQUIRES: other
  // holds no two operations on the same key.
  void AppendSorted(WriteBatch&& other);

  // Room for `n` more operations.
  void Reserve(size_t n) { ops_.reserve(ops_.size() + n); }
  size_t size() const { return ops_.size(); }
  bool empty() const { return ops_.empty(); }
  // Sum of key and value bytes.
  size_t ByteSize() const { return bytes_; }
  void Clear() {
    ops_.clear();
    kept_.clear();
    bytes_ = 0;
  }

 private:
  friend class ChunkStore;
  enum class Kind : uint8_t { kPut, kDelete, kDeleteRange, kUpdate };
  struct Op {
    Table table;
    Kind kind;
    std::vector<uint8_t> key;
    std::vector<uint8_t> value;  // kDeleteRange: the end key
    Updater update;              // kUpdate
  };
  std::vector<Op> ops_;
  std::vector<std::shared_ptr<const void>> kept_;
  size_t bytes_ = 0;
};

// An exclusive flock on DIR/LOCK: the lock an exclusive ChunkStore::Open
// (voxdbd's) takes first, so none opens the directory while this is held.
// For a tool that opens and closes the store several times and must keep
// every owner out in between (engine/compact.h). Released when destroyed.
// Made by ChunkStore::LockDirectory.
class DirectoryLock {
 public:
  DirectoryLock(DirectoryLock&& other) noexcept;
  DirectoryLock& operator=(DirectoryLock&&) = delete;
  ~DirectoryLock();

 private:
  friend class ChunkStore;
  explicit DirectoryLock(int fd) : fd_(fd) {}
  int fd_;
};

class ChunkStore {
 public:
  // A consistent read-only view (one LMDB read transaction).
  class Snapshot {
   public:
    ~Snapshot();
    Snapshot(const Snapshot&) = delete;
    Snapshot& operator=(const Snapshot&) = delete;

    // The stored value, zero-copy; valid until this Snapshot ends.
    // Returns NOT_FOUND when the key is absent.
    StatusOr<std::span<const uint8_t>> Get(Table table, std::span<const uint8_t> key) const;
    StatusOr<std::span<const uint8_t>> GetChunk(ChunkKey key) const;

    // Calls fn(key, value) for each entry with begin <= key < end in key
    // order (end empty: to the end of the table) until fn returns false.
    Status Scan(
        Table table, std::span<const uint8_t> begin, std::span<const uint8_t> end,
        const std::function<bool(std::span<const uint8_t>, std::span<const uint8_t>)>& fn) const;
    // The chunks with keys in range, in Morton order.
    Status ScanChunks(const MortonRange& range,
                      const std::function<bool(ChunkKey, std::span<const uint8_t>)>& fn) const;
    // The chunks inside `box` with codes >= `from`, in Morton order, until
    // fn returns false: one seek per stretch of the curve inside the box
    // (ChunkBox::NextInBox), so the gaps between stretches cost nothing.
    Status ScanChunksInBox(const ChunkBox& box, uint64_t from,
                           const std::function<bool(ChunkKey, std::span<const uint8_t>)>& fn) const;
    // The last (largest) key of a table, copied; NOT_FOUND when empty.
    StatusOr<std::vector<uint8_t>> LastKey(Table table) const;
    // Number of entries in a table.
    StatusOr<uint64_t> Count(Table table) const;

   private:
    friend class ChunkStore;
    Snapshot(const ChunkStore* store, MDB_txn* txn, std::shared_lock<std::shared_timed_mutex> lock,
             bool long_read = false)
        : store_(store), txn_(txn), lock_(std::move(lock)), long_read_(long_read) {}
    const ChunkStore* store_;
    MDB_txn* txn_;
    std::shared_lock<std::shared_timed_mutex> lock_;  // empty for a long read
    bool long_read_;                                  // counted in long_readers_
  };

  // Opens (or creates, see StoreOptions) the database in directory `dir`.
  // Returns NOT_FOUND when missing and !create_if_missing; MISMATCH when the
  // directory holds a database of another world frame or store format, or is
  // not a voxdb database; UNSUPPORTED when its format is newer than this
  // build; BUSY when another process holds it (exclusive; the message names
  // that process's pid when it can be known); IO_ERROR or
  // PERMISSION_DENIED from the file system.
  static StatusOr<std::unique_ptr<ChunkStore>> Open(const std::string& dir,
                                                    const StoreOptions& options);
  // Takes the directory lock of `dir` (see DirectoryLock), creating DIR/LOCK
  // when missing. BUSY, naming the holder when it can be known, while
  // another process holds it; IO_ERROR or PERMISSION_DENIED from the file
  // system. A store opened while it is held must be opened with
  // StoreOptions::exclusive = false (the lock is already this process's).
  static StatusOr<DirectoryLock> LockDirectory(const std::string& dir);

  ~ChunkStore();
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  const WorldFrame& frame() const { return frame_; }
  const std::string& dir() const { return dir_; }

  // Starts a read transaction. BUSY when every reader slot is taken.
  StatusOr<std::unique_ptr<Snapshot>> BeginRead() const;
  // A read transaction for a snapshot that lives long and may end on
  // another thread (engine::DatabaseSnapshot): it holds no lock on the map
  // size while it lives; a map growth waits for it instead (grow_wait, then
  // BUSY), as for any other.
  StatusOr<std::unique_ptr<Snapshot>> BeginLongRead() const;

  // Applies the batch atomically. Returns STORAGE_FULL when the map is at its
  // maximum or the disk is full (nothing of the batch is applied); BUSY when
  // growing the map waited too long for readers; IO_ERROR when data.mdb has
  // been deleted while open (see CheckDataFile) or otherwise.
  Status Write(const WriteBatch& batch) ABSL_LOCKS_EXCLUDED(write_mu_);

  StatusOr<StoreStats> Stats() const;

  // Changes the largest size the map may grow to, at once (the map itself
  // grows on the next write that needs it). INVALID below the current map
  // size (a map does not shrink while open).
  Status SetMaxMapSize(size_t max_map_size) ABSL_LOCKS_EXCLUDED(write_mu_);
  size_t max_map_size() const { return max_map_size_; }

  // Writes a consistent copy of the environment as it is now (one read
  // transaction: every commit so far, none after) to `dest_dir`/data.mdb
  // while writes go on; compact leaves free pages out (MDB_CP_COMPACT).
  // `dest_dir` must exist without a data.mdb. The copy has the live
  // data.mdb's mode (owner and group bits only) and is fsynced. Map growth
  // waits until the copy is done.
  Status CopyTo(const std::string& dest_dir, bool compact) const;

  // A backup: a compacted CopyTo into the new directory `dest_dir`, built
  // in `dest_dir`.partial (created 0750, or 0700 when the live data.mdb is
  // not group-readable) and renamed into place without replacing anything,
  // then the rename synced. INVALID when dest_dir has a NUL byte, is not
  // absolute, or exists, or when `dest_dir`.partial exists: nothing that
  // this call did not create is ever deleted. *bytes: the copy's size.
  Status Backup(const std::string& dest_dir, uint64_t* bytes) const;
  // The argument checks of Backup, alone (before a caller waits for
  // anything).
  static Status CheckBackupDestination(const std::string& dest_dir);

  // Makes every commit so far durable (mdb_env_sync). A no-op without
  // StoreOptions::sync. IO_ERROR / STORAGE_FULL on failure, IO_ERROR when
  // data.mdb has been deleted.
  Status Sync();

  // IO_ERROR once data.mdb has been deleted (its link count is 0) while the
  // store is open: LMDB would go on writing to the deleted file, and a
  // restart would find no database, so every write and sync is refused from
  // then on (reads go on). The message tells how to save what the deleted
  // file holds while this process runs. Checked before every commit (one
  // fstat).
  Status CheckDataFile();

 private:
  ChunkStore() = default;
  // Opens data_fd_ and, when exclusive, takes the locks (BUSY naming the
  // holder's pid when another process has them).
  Status Lock(bool exclusive);
  Status OpenEnv(const StoreOptions& options);
  Status InitMeta(const StoreOptions& options);
  Status GrowMap(size_t needed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  MDB_dbi dbi(Table t) const { return dbis_[static_cast<int>(t)]; }

  std::string dir_;
  StoreOptions options_;
  WorldFrame frame_ = WorldFrame::Earth();
  MDB_env* env_ = nullptr;
  MDB_dbi dbis_[kTableCount] = {};
  int lock_fd_ = -1;                    // DIR/LOCK (exclusive)
  int data_fd_ = -1;                    // DIR/data.mdb: the exclusive lock (exclusive)
  std::atomic<bool> data_gone_{false};  // data.mdb was deleted (sticky)
  uint32_t stale_readers_cleared_ = 0;

  // Lock order: write_mu_, then resize_mu_, then long_mu_.
  Mutex write_mu_;  // serialises write transactions
  // Shared by every transaction; exclusive while the map is resized. A
  // std::shared_timed_mutex, unannotated: it guards LMDB's map rather than
  // members, a Snapshot holds it beyond any one scope, and GrowMap takes it
  // with a deadline (try_lock_until), which voxdb::Mutex does not offer.
  mutable std::shared_timed_mutex resize_mu_;
  // Long reads (BeginLongRead) open: GrowMap waits for none to be left.
  mutable Mutex long_mu_;
  mutable CondVar long_cv_{&long_mu_};
  mutable int long_readers_ ABSL_GUARDED_BY(long_mu_) = 0;
  std::atomic<size_t> map_size_{0};  // written under write_mu_ + exclusive resize_mu_
  std::atomic<size_t> max_map_size_{0};
  std::atomic<bool> map_full_alerted_{false};  // on_alert told; reset by SetMaxMapSize
  std::atomic<uint64_t> map_grows_{0};
};

// Translates an LMDB (or errno) return code to a status: the one place that
// does. `context` names the operation, e.g. "put chunk".
Status LmdbStatus(int rc, std::string_view context);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_CHUNK_STORE_H_
