#include "engine/chunk_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "engine/format.h"

namespace voxdb::engine {
namespace {

constexpr const char* kTableNames[kTableCount] = {"meta",    "chunks", "fills",
                                                  "journal", "lod",    "s2index"};

MDB_val Val(std::span<const uint8_t> s) {
  return MDB_val{s.size(), const_cast<uint8_t*>(s.data())};
}
std::span<const uint8_t> Span(const MDB_val& v) {
  return {static_cast<const uint8_t*>(v.mv_data), v.mv_size};
}
int CompareBytes(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  const size_t n = std::min(a.size(), b.size());
  const int c = n ? std::memcmp(a.data(), b.data(), n) : 0;
  if (c != 0) return c;
  return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
}

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  double v = static_cast<double>(n);
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.4g %s", v, units[u]);
}

// Whether the file system holding dir has at least `bytes` (plus a margin
// for LMDB's page overhead) available.
bool HasRoomFor(const std::string& dir, size_t bytes) {
  struct statvfs st;
  if (statvfs(dir.c_str(), &st) != 0) return true;  // unknown: do not guess "full"
  const uint64_t avail = uint64_t{st.f_bavail} * st.f_frsize;
  return avail >= bytes + (uint64_t{1} << 20);
}

// Deletes keys in [begin, end) with a cursor; returns an LMDB code.
int DeleteRangeInTxn(MDB_txn* txn, MDB_dbi dbi, std::span<const uint8_t> begin,
                     std::span<const uint8_t> end) {
  MDB_cursor* cursor = nullptr;
  int rc = mdb_cursor_open(txn, dbi, &cursor);
  if (rc != MDB_SUCCESS) return rc;
  MDB_val k = Val(begin), v;
  rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
  while (rc == MDB_SUCCESS && CompareBytes(Span(k), end) < 0) {
    rc = mdb_cursor_del(cursor, 0);
    if (rc != MDB_SUCCESS) break;
    // After a delete LMDB leaves the cursor on the following entry, and
    // MDB_NEXT returns that entry rather than skipping it.
    rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cursor);
  return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

// Applies one WriteBatch::Update through the table's write cursor. The
// key is usually new (a flush's index entries), so the value for an absent
// key is tried first: one descent instead of two.
int UpdateInTxn(MDB_cursor* cursor, MDB_val* key, const WriteBatch::Updater& update) {
  MDB_val v{};
  int rc;
  if (std::optional<std::vector<uint8_t>> fresh = update(std::nullopt)) {
    v = Val(*fresh);
    rc = mdb_cursor_put(cursor, key, &v, MDB_NOOVERWRITE);
    if (rc != MDB_KEYEXIST) return rc;  // stored, or an error
    // LMDB sets v to the current value (documented for mdb_put, which is
    // this call); read it if a future version does not.
    if (v.mv_data == fresh->data()) rc = mdb_cursor_get(cursor, key, &v, MDB_SET);
    if (rc != MDB_KEYEXIST && rc != MDB_SUCCESS) return rc;
  } else {
    rc = mdb_cursor_get(cursor, key, &v, MDB_SET);
    if (rc == MDB_NOTFOUND) return MDB_SUCCESS;
    if (rc != MDB_SUCCESS) return rc;
  }
  std::optional<std::vector<uint8_t>> next = update(Span(v));
  if (!next) return mdb_cursor_del(cursor, 0);
  MDB_val nv = Val(*next);
  return mdb_cursor_put(cursor, key, &nv, 0);
}

// Aborts a write transaction unless committed.
struct TxnGuard {
  MDB_txn* txn = nullptr;
  ~TxnGuard() {
    if (txn) mdb_txn_abort(txn);
  }
};

// The locks on data.mdb (engine/FORMAT.md, "The database directory"). The
// exclusion is an open-file-description lock on [0, kPidLockStart): it
// belongs to this ChunkStore's descriptor, whatever else the process opens
// or closes. A classic (per-process) lock on the byte at kPidLockStart is
// there only to tell another process who holds the database (F_GETLK gives
// a classic lock's pid; an OFD lock's is -1). Both lie past any LMDB map
// (at most 2^62 bytes) in the address space of locks, not of the file.
constexpr off_t kPidLockStart = off_t{1} << 62;

struct flock LockRange(short type, off_t start, off_t len) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return fl;
}

// "process 1234 (voxdbd)", from the pid lock on DIR/data.mdb, else the pid
// DIR/LOCK records; "another process" when neither tells.
std::string DescribeHolder(const std::string& dir) {
  long pid = 0;
  const int fd = ::open((dir + "/" + kDataFile).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct flock fl = LockRange(F_WRLCK, kPidLockStart, 1);
    if (::fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK && fl.l_pid > 0) pid = fl.l_pid;
    ::close(fd);
  }
  if (pid == 0) {
    // Information only: a LOCK file may be stale or gone.
    char buf[32] = {};
    const int lfd = ::open((dir + "/" + kLockFile).c_str(), O_RDONLY | O_CLOEXEC);
    if (lfd >= 0) {
      const ssize_t n = ::read(lfd, buf, sizeof buf - 1);
      ::close(lfd);
      if (n > 0) pid = std::strtol(buf, nullptr, 10);
    }
  }
  if (pid <= 0) return "another process";
  std::string comm;
  if (std::FILE* f = std::fopen(absl::StrFormat("/proc/%d/comm", pid).c_str(), "re")) {
    char name[64] = {};
    if (std::fgets(name, sizeof name, f) != nullptr) comm = name;
    std::fclose(f);
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  }
  return comm.empty() ? absl::StrFormat("process %d", pid)
                      : absl::StrFormat("process %d (%s)", pid, comm);
}

Status InUse(const std::string& dir) {
  return BusyError(absl::StrFormat("database %s is in use by %s", dir, DescribeHolder(dir)));
}

// DIR/LOCK, opened (created when missing) and flocked: the first lock an
// exclusive owner takes. Returns its descriptor; BUSY when another process
// holds it.
StatusOr<int> TakeLockFile(const std::string& dir) {
  const std::string path = dir + "/" + kLockFile;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return LmdbStatus(errno, "open " + path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return InUse(dir);
  }
  return fd;
}
}  // namespace

const char* TableName(Table table) { return kTableNames[static_cast<int>(table)]; }

Status LmdbStatus(int rc, std::string_view context) {
  if (rc == MDB_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrFormat("%s: %s", context, mdb_strerror(rc));
  switch (rc) {
    case MDB_NOTFOUND:
      return absl::NotFoundError(msg);
    case MDB_MAP_FULL:
      return StorageFullError(msg);
    case ENOSPC:
    case EDQUOT:
      return StorageFullError(absl::StrFormat("%s: the disk is full", context));
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
      return CorruptError(msg);
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
      return MismatchError(msg);
    case MDB_READERS_FULL:
      return BusyError(
          absl::StrFormat("%s: every LMDB reader slot is in use (raise max_readers)", context));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ENOENT:
      return absl::NotFoundError(msg);
    case MDB_MAP_RESIZED:
    case MDB_PANIC:
    default:
      return IoError(msg);
  }
}

// --- WriteBatch ------------------------------------------------------------

void WriteBatch::Put(Table table, std::span<const uint8_t> key, std::span<const uint8_t> value) {
  Put(table, key, std::vector<uint8_t>(value.begin(), value.end()));
}

void WriteBatch::Put(Table table, std::span<const uint8_t> key, std::vector<uint8_t>&& value) {
  bytes_ += key.size() + value.size();
  ops_.push_back(
      Op{table, Kind::kPut, std::vector<uint8_t>(key.begin(), key.end()), std::move(value), {}});
}

void WriteBatch::Delete(Table table, std::span<const uint8_t> key) {
  bytes_ += key.size();
  ops_.push_back(Op{table, Kind::kDelete, std::vector<uint8_t>(key.begin(), key.end()), {}, {}});
}

void WriteBatch::DeleteRange(Table table, std::span<const uint8_t> begin,
                             std::span<const uint8_t> end) {
  bytes_ += begin.size() + end.size();
  ops_.push_back(Op{table,
                    Kind::kDeleteRange,
                    std::vector<uint8_t>(begin.begin(), begin.end()),
                    std::vector<uint8_t>(end.begin(), end.end()),
                    {}});
}

void WriteBatch::Update(Table table, std::span<const uint8_t> key, Updater update,
                        size_t value_bytes) {
  bytes_ += key.size() + value_bytes;
  ops_.push_back(Op{
      table, Kind::kUpdate, std::vector<uint8_t>(key.begin(), key.end()), {}, std::move(update)});
}

void WriteBatch::PutChunk(ChunkKey key, std::vector<uint8_t>&& record) {
  Put(Table::kChunks, key.Encode(), std::move(record));
}
void WriteBatch::PutChunk(ChunkKey key, std::span<const uint8_t> record) {
  Put(Table::kChunks, key.Encode(), record);
}
void WriteBatch::DeleteChunk(ChunkKey key) { Delete(Table::kChunks, key.Encode()); }

void WriteBatch::AppendSorted(WriteBatch&& other) {
  auto less = [](const Op& a, const Op& b) {
    if (a.table != b.table) return a.table < b.table;
    return a.key < b.key;
  };
  if (!std::is_sorted(other.ops_.begin(), other.ops_.end(), less)) {
    std::sort(other.ops_.begin(), other.ops_.end(), less);
  }
  if (ops_.capacity() < ops_.size() + other.ops_.size()) {
    ops_.reserve(std::max(ops_.size() + other.ops_.size(), 2 * ops_.capacity()));
  }
  for (Op& op : other.ops_) ops_.push_back(std::move(op));
  for (auto& data : other.kept_) kept_.push_back(std::move(data));
  bytes_ += other.bytes_;
  other.Clear();
}

// --- Snapshot ----------------------------------------------------------------

ChunkStore::Snapshot::~Snapshot() {
  mdb_txn_abort(txn_);
  if (long_read_) {
    MutexLock l(&store_->long_mu_);
    --store_->long_readers_;
    store_->long_cv_.SignalAll();
  }
}

StatusOr<std::span<const uint8_t>> ChunkStore::Snapshot::Get(Table table,
                                                             std::span<const uint8_t> key) const {
  MDB_val k = Val(key), v;
  const int rc = mdb_get(txn_, store_->dbi(table), &k, &v);
  if (rc == MDB_NOTFOUND) {
    return absl::NotFoundError(absl::StrFormat("no such key in table %s", TableName(table)));
  }
  VOXDB_RETURN_IF_ERROR(LmdbStatus(rc, "get"));
  return Span(v);
}

StatusOr<std::span<const uint8_t>> ChunkStore::Snapshot::GetChunk(ChunkKey key) const {
  const auto bytes = key.Encode();
  auto got = Get(Table::kChunks, bytes);
  if (absl::IsNotFound(got.status())) {
    return absl::NotFoundError(absl::StrFormat("chunk %s is not stored", key.ToString()));
  }
  return got;
}

Status ChunkStore::Snapshot::Scan(
    Table table, std::span<const uint8_t> begin, std::span<const uint8_t> end,
    const std::function<bool(std::span<const uint8_t>, std::span<const uint8_t>)>& fn) const {
  MDB_cursor* cursor = nullptr;
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_cursor_open(txn_, store_->dbi(table), &cursor), "scan"));
  MDB_val k = Val(begin), v;
  int rc = begin.empty() ? mdb_cursor_get(cursor, &k, &v, MDB_FIRST)
                         : mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
  while (rc == MDB_SUCCESS) {
    if (!end.empty() && CompareBytes(Span(k), end) >= 0) break;
    if (!fn(Span(k), Span(v))) break;
    rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cursor);
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  return LmdbStatus(rc, "scan");
}

Status ChunkStore::Snapshot::ScanChunks(
    const MortonRange& range,
    const std::function<bool(ChunkKey, std::span<const uint8_t>)>& fn) const {
  if (range.empty()) return absl::OkStatus();
  const auto begin = ChunkKey::FromCode(range.begin).Encode();
  std::array<uint8_t, 8> end{};
  const bool to_end = range.end > ChunkKey::kMaxCode;
  if (!to_end) end = ChunkKey::FromCode(range.end).Encode();
  Status inner;
  Status s = Scan(Table::kChunks, begin, to_end ? std::span<const uint8_t>() : end,
                  [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                    std::optional<ChunkKey> key = ChunkKey::Decode(k);
                    if (!key) {
                      inner = CorruptError("a key in table chunks is not an 8-byte Morton code");
                      return false;
                    }
                    return fn(*key, v);
                  });
  VOXDB_RETURN_IF_ERROR(s);
  return inner;
}

Status ChunkStore::Snapshot::ScanChunksInBox(
    const ChunkBox& box, uint64_t from,
    const std::function<bool(ChunkKey, std::span<const uint8_t>)>& fn) const {
  std::optional<uint64_t> next = box.NextInBox(std::max(from, box.MinCode()));
  while (next) {
    const uint64_t start = *next;
    next.reset();
    VOXDB_RETURN_IF_ERROR(ScanChunks(MortonRange{start, box.MaxCode() + 1},
                                     [&](ChunkKey key, std::span<const uint8_t> record) {
                                       if (!box.Contains(key.coord())) {
                                         next = box.NextInBox(key.code());
                                         return false;
                                       }
                                       return fn(key, record);
                                     }));
  }
  return absl::OkStatus();
}

StatusOr<std::vector<uint8_t>> ChunkStore::Snapshot::LastKey(Table table) const {
  MDB_cursor* cursor = nullptr;
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_cursor_open(txn_, store_->dbi(table), &cursor), "last"));
  MDB_val k, v;
  const int rc = mdb_cursor_get(cursor, &k, &v, MDB_LAST);
  std::vector<uint8_t> key;
  if (rc == MDB_SUCCESS) key.assign(Span(k).begin(), Span(k).end());
  mdb_cursor_close(cursor);
  if (rc == MDB_NOTFOUND) {
    return absl::NotFoundError(absl::StrFormat("table %s is empty", TableName(table)));
  }
  VOXDB_RETURN_IF_ERROR(LmdbStatus(rc, "last key"));
  return key;
}

StatusOr<uint64_t> ChunkStore::Snapshot::Count(Table table) const {
  MDB_stat st;
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_stat(txn_, store_->dbi(table), &st), "stat"));
  return uint64_t{st.ms_entries};
}

// --- ChunkStore ------------------------------------------------------------

StatusOr<std::unique_ptr<ChunkStore>> ChunkStore::Open(const std::string& dir,
                                                       const StoreOptions& options) {
  if (options.initial_map_size == 0 || options.max_map_size < options.initial_map_size) {
    return absl::InvalidArgumentError(
        "max_map_size must be at least initial_map_size, and both non-zero");
  }
  std::error_code ec;
  const bool exists = std::filesystem::exists(std::filesystem::path(dir) / kDataFile, ec);
  if (!exists) {
    if (!options.create_if_missing) {
      return absl::NotFoundError(absl::StrFormat("no voxdb database in %s", dir));
    }
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return IoError(absl::StrFormat("cannot create directory %s: %s", dir, ec.message()));
    }
  }
  std::unique_ptr<ChunkStore> store(new ChunkStore());
  store->dir_ = dir;
  store->options_ = options;
  store->max_map_size_ = options.max_map_size;
  VOXDB_RETURN_IF_ERROR(store->Lock(options.exclusive));
  VOXDB_RETURN_IF_ERROR(store->OpenEnv(options));
  VOXDB_RETURN_IF_ERROR(store->InitMeta(options));
  return store;
}

Status ChunkStore::Lock(bool exclusive) {
  const std::string data_path = dir_ + "/" + kDataFile;
  if (exclusive) {
    // DIR/LOCK first, as before (voxdb compact holds it, LockDirectory,
    // while it replaces data.mdb); it is information only: deleting it
    // unlocks nothing.
    VOXDB_ASSIGN_OR_RETURN(lock_fd_, TakeLockFile(dir_));
  }
  // Our own descriptor of data.mdb, created here when new (LMDB opens the
  // same file): the lock lives on it, and it tells when the file is
  // deleted under us (CheckDataFile).
  data_fd_ = ::open(data_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (data_fd_ < 0) return LmdbStatus(errno, "open " + data_path);
  if (!exclusive) return absl::OkStatus();
  struct flock ofd = LockRange(F_WRLCK, 0, kPidLockStart);
  if (::fcntl(data_fd_, F_OFD_SETLK, &ofd) != 0) {
    if (errno == EAGAIN || errno == EACCES) return InUse(dir_);
    return LmdbStatus(errno, "lock " + data_path);
  }
  struct flock pid_lock = LockRange(F_WRLCK, kPidLockStart, 1);
  (void)::fcntl(data_fd_, F_SETLK, &pid_lock);  // information only
  const std::string pid = absl::StrFormat("%d\n", ::getpid());
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0) {
    // Information only: the lock on data.mdb is held.
  }
  return absl::OkStatus();
}

StatusOr<DirectoryLock> ChunkStore::LockDirectory(const std::string& dir) {
  VOXDB_ASSIGN_OR_RETURN(const int fd, TakeLockFile(dir));
  return DirectoryLock(fd);
}

DirectoryLock::DirectoryLock(DirectoryLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

Status ChunkStore::OpenEnv(const StoreOptions& options) {
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_env_create(&env_), "create environment"));
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_env_set_maxdbs(env_, kTableCount), "set max dbs"));
  VOXDB_RETURN_IF_ERROR(
      LmdbStatus(mdb_env_set_maxreaders(env_, options.max_readers), "set max readers"));
  VOXDB_RETURN_IF_ERROR(
      LmdbStatus(mdb_env_set_mapsize(env_, options.initial_map_size), "set map size"));
  // No MDB_WRITEMAP, ever (see the header). MDB_NOTLS: snapshots are not
  // tied to threads. MDB_NORDAHEAD: chunk access is random.
  unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
  if (!options.sync) flags |= MDB_NOSYNC;
  if (options.sync && options.lazy_meta_sync) flags |= MDB_NOMETASYNC;
  VOXDB_RETURN_IF_ERROR(
      LmdbStatus(mdb_env_open(env_, dir_.c_str(), flags, 0640), "open environment in " + dir_));
  int dead = 0;
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_reader_check(env_, &dead), "check stale readers"));
  stale_readers_cleared_ = static_cast<uint32_t>(dead);
  MDB_envinfo info;
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_env_info(env_, &info), "env info"));
  map_size_ = info.me_mapsize;

  MDB_txn* txn = nullptr;
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_txn_begin(env_, nullptr, 0, &txn), "begin open txn"));
  TxnGuard guard{txn};
  for (int t = 0; t < kTableCount; ++t) {
    VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_dbi_open(txn, kTableNames[t], MDB_CREATE, &dbis_[t]),
                                     absl::StrFormat("open table %s", kTableNames[t])));
  }
  guard.txn = nullptr;
  return LmdbStatus(mdb_txn_commit(txn), "commit open txn");
}

Status ChunkStore::InitMeta(const StoreOptions& options) {
  std::optional<uint32_t> version;
  std::optional<WorldFrame> stored_frame;
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, BeginRead());
    auto v = snap->Get(Table::kMeta, AsBytes(kMetaFormatVersion));
    if (v.ok()) {
      if (v->size() != 4) return CorruptError("meta format_version is not 4 bytes");
      version = DecodeFixed32(v->data());
    } else if (!absl::IsNotFound(v.status())) {
      return v.status();
    }
    auto f = snap->Get(Table::kMeta, AsBytes(kMetaWorldFrame));
    if (f.ok()) {
      VOXDB_ASSIGN_OR_RETURN(WorldFrame frame, WorldFrame::Decode(*f));
      stored_frame = frame;
    }
    if (!version) {
      // A database whose creation was cut short has tables but no meta yet;
      // anything with data in it and no format version is not ours.
      VOXDB_ASSIGN_OR_RETURN(uint64_t chunks, snap->Count(Table::kChunks));
      VOXDB_ASSIGN_OR_RETURN(uint64_t metas, snap->Count(Table::kMeta));
      if (chunks != 0 || metas != 0) {
        return MismatchError(absl::StrFormat(
            "%s holds an LMDB environment that is not a voxdb database (no format version)", dir_));
      }
    }
  }
  if (version) {
    if (*version > kStoreFormatVersion) {
      return UnsupportedError(absl::StrFormat(
          "database %s has store format %u; this build reads format %u: upgrade voxdb", dir_,
          *version, kStoreFormatVersion));
    }
    if (*version != kStoreFormatVersion) {
      return MismatchError(
          absl::StrFormat("database %s has store format %u; this build reads format %u", dir_,
                          *version, kStoreFormatVersion));
    }
    if (!stored_frame) return CorruptError("meta has a format version but no world frame");
    if (options.frame && !(*options.frame == *stored_frame)) {
      return MismatchError(absl::StrFormat(
          "database %s was created with world frame [%s]; refusing to open it with [%s]", dir_,
          stored_frame->ToString(), options.frame->ToString()));
    }
    frame_ = *stored_frame;
    return absl::OkStatus();
  }
  // A new database: record the format and the frame.
  frame_ = options.frame ? *options.frame : WorldFrame::Earth();
  WriteBatch batch;
  std::vector<uint8_t> version_bytes, created_bytes;
  PutFixed32(version_bytes, kStoreFormatVersion);
  batch.Put(Table::kMeta, AsBytes(kMetaFormatVersion), std::move(version_bytes));
  batch.Put(Table::kMeta, AsBytes(kMetaWorldFrame), frame_.Encode());
  PutFixed64(created_bytes, static_cast<uint64_t>(NowMicros()));
  batch.Put(Table::kMeta, AsBytes(kMetaCreated), std::move(created_bytes));
  return Write(batch);
}

ChunkStore::~ChunkStore() {
  if (env_) mdb_env_close(env_);
  // Closing the descriptors releases the locks (after LMDB is done).
  if (data_fd_ >= 0) ::close(data_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

StatusOr<std::unique_ptr<ChunkStore::Snapshot>> ChunkStore::BeginRead() const {
  std::shared_lock<std::shared_timed_mutex> lock(resize_mu_);
  MDB_txn* txn = nullptr;
  VOXDB_RETURN_IF_ERROR(
      LmdbStatus(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), "begin read transaction"));
  return std::unique_ptr<Snapshot>(new Snapshot(this, txn, std::move(lock)));
}

StatusOr<std::unique_ptr<ChunkStore::Snapshot>> ChunkStore::BeginLongRead() const {
  std::shared_lock<std::shared_timed_mutex> lock(resize_mu_);  // no growth while it begins
  MDB_txn* txn = nullptr;
  VOXDB_RETURN_IF_ERROR(
      LmdbStatus(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), "begin read transaction"));
  {
    MutexLock l(&long_mu_);
    ++long_readers_;
  }
  return std::unique_ptr<Snapshot>(
      new Snapshot(this, txn, std::shared_lock<std::shared_timed_mutex>(), /*long_read=*/true));
}

Status ChunkStore::GrowMap(size_t needed) {
  const size_t current = map_size_;
  const size_t max_size = max_map_size_;
  if (current >= max_size) {
    const Status full = StorageFullError(absl::StrFormat(
        "the database map is at its maximum of %s (max_map_size): writes and flushes fail until "
        "it is raised, reads go on; for voxdbd, raise max-map-size in its config file and send "
        "it SIGHUP (no restart needed)",
        HumanBytes(max_size)));
    if (!map_full_alerted_.exchange(true) && options_.on_alert) options_.on_alert(full);
    return full;
  }
  size_t target = std::max(current * 2, current + 2 * needed);
  target = (target + (size_t{1} << 20) - 1) & ~((size_t{1} << 20) - 1);  // whole MiB
  target = std::min(target, max_size);
  const auto deadline = std::chrono::steady_clock::now() + options_.grow_wait;
  std::unique_lock<std::shared_timed_mutex> lock(resize_mu_, std::defer_lock);
  if (!lock.try_lock_until(deadline)) {
    return BusyError("growing the database map waited too long for open read transactions");
  }
  {
    // No new read begins now; the long ones must end too.
    MutexLock l(&long_mu_);
    while (long_readers_ != 0) {
      if (!long_cv_.WaitUntil(deadline) && long_readers_ != 0) {
        return BusyError(absl::StrFormat(
            "growing the database map waited too long for %d open snapshots", long_readers_));
      }
    }
  }
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_env_set_mapsize(env_, target), "grow map"));
  MDB_envinfo info;
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_env_info(env_, &info), "env info"));
  map_size_ = info.me_mapsize;
  ++map_grows_;
  return absl::OkStatus();
}

Status ChunkStore::Write(const WriteBatch& batch) {
  MutexLock write_lock(&write_mu_);
  for (;;) {
    int rc = MDB_SUCCESS;
    {
      std::shared_lock<std::shared_timed_mutex> lock(resize_mu_);
      MDB_txn* txn = nullptr;
      VOXDB_RETURN_IF_ERROR(
          LmdbStatus(mdb_txn_begin(env_, nullptr, 0, &txn), "begin write transaction"));
      TxnGuard guard{txn};
      // One cursor per table for the puts: a key that falls on the page the
      // cursor is on (batches are mostly in key order) skips the descent
      // from the root. Write transactions close their cursors themselves.
      MDB_cursor* cursors[kTableCount] = {};
      for (const WriteBatch::Op& op : batch.ops_) {
        MDB_val k = Val(op.key);
        if (op.kind == WriteBatch::Kind::kDelete) {
          rc = mdb_del(txn, dbi(op.table), &k, nullptr);
          if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
        } else if (op.kind == WriteBatch::Kind::kDeleteRange) {
          rc = DeleteRangeInTxn(txn, dbi(op.table), op.key, op.value);
        } else {
          MDB_cursor*& cursor = cursors[static_cast<int>(op.table)];
          if (!cursor) rc = mdb_cursor_open(txn, dbi(op.table), &cursor);
          if (rc == MDB_SUCCESS && op.kind == WriteBatch::Kind::kUpdate) {
            rc = UpdateInTxn(cursor, &k, op.update);
          } else if (rc == MDB_SUCCESS) {
            MDB_val v = Val(op.value);
            rc = mdb_cursor_put(cursor, &k, &v, 0);
          }
        }
        if (rc != MDB_SUCCESS) break;
      }
      if (rc == MDB_SUCCESS) {
        // Not into a deleted file (the guard aborts the transaction).
        VOXDB_RETURN_IF_ERROR(CheckDataFile());
        guard.txn = nullptr;
        rc = mdb_txn_commit(txn);  // aborts the transaction itself on failure
      }
    }
    if (rc == MDB_MAP_FULL) {
      VOXDB_RETURN_IF_ERROR(GrowMap(batch.ByteSize()));
      continue;
    }
    // LMDB reports a short write as EIO; when the file system has no room
    // for the batch, that short write was the disk filling up.
    if (rc == EIO && !HasRoomFor(dir_, batch.ByteSize())) rc = ENOSPC;
    return LmdbStatus(rc, absl::StrFormat("write batch of %u operations", batch.size()));
  }
}

Status ChunkStore::Sync() {
  VOXDB_RETURN_IF_ERROR(CheckDataFile());
  if (!options_.sync) return absl::OkStatus();
  return LmdbStatus(mdb_env_sync(env_, 1), "sync");
}

Status ChunkStore::CheckDataFile() {
  if (!data_gone_.load(std::memory_order_relaxed)) {
    struct stat st;
    if (::fstat(data_fd_, &st) != 0 || st.st_nlink != 0) return absl::OkStatus();
  }
  const Status gone = IoError(absl::StrFormat(
      "%s/data.mdb was deleted while the database is open: writes are refused, since they "
      "would go to the deleted file and a restart would find no database. What it held is "
      "still readable at /proc/%d/fd/%d while this process runs: copy it out now, stop the "
      "process, and put the copy in place as data.mdb (or restore a backup)",
      dir_, ::getpid(), data_fd_));
  if (!data_gone_.exchange(true) && options_.on_alert) options_.on_alert(gone);
  return gone;
}

Status ChunkStore::CopyTo(const std::string& dest_dir, bool compact) const {
  // Our own descriptor, so that the copy has the live file's mode (LMDB
  // would create it 0666 less the umask) and is synced through it.
  const std::string file = dest_dir + "/" + kDataFile;
  struct stat live;
  const mode_t mode = ::fstat(data_fd_, &live) == 0 ? (live.st_mode & 0660) | 0600 : 0600;
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return LmdbStatus(errno, "create " + file);
  Status s;
  {
    std::shared_lock<std::shared_timed_mutex> lock(resize_mu_);
    s = LmdbStatus(mdb_env_copyfd2(env_, fd, compact ? MDB_CP_COMPACT : 0), "copy environment");
  }
  if (s.ok() && ::fchmod(fd, mode) != 0) s = LmdbStatus(errno, "chmod " + file);  // the umask
  if (s.ok() && ::fsync(fd) != 0) s = LmdbStatus(errno, "sync the copy");
  ::close(fd);
  return s;
}

Status ChunkStore::CheckBackupDestination(const std::string& dest_dir) {
  // The destination often comes from a client as bytes: the C calls below
  // would stop at a NUL, and a relative path would resolve against this
  // process's working directory, not the caller's.
  if (dest_dir.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("backup destination contains a NUL byte");
  }
  if (dest_dir.empty() || dest_dir.front() != '/') {
    return absl::InvalidArgumentError(absl::StrFormat(
        "backup destination '%s' is not an absolute path (it would resolve against the "
        "server's working directory): give the whole path on the server",
        dest_dir));
  }
  struct stat st;
  if (::lstat(dest_dir.c_str(), &st) == 0 || errno != ENOENT) {
    return absl::InvalidArgumentError(
        absl::StrFormat("backup destination %s already exists", dest_dir));
  }
  return absl::OkStatus();
}

Status ChunkStore::Backup(const std::string& dest_dir, uint64_t* bytes) const {
  *bytes = 0;
  VOXDB_RETURN_IF_ERROR(CheckBackupDestination(dest_dir));
  // Built in DEST.partial, which must not exist: what is there was not made
  // by this call, and is never deleted. Modes like the live data: a group
  // that may read data.mdb may enter the directory, nobody else.
  const std::string tmp = dest_dir + ".partial";
  struct stat st;
  mode_t dir_mode = 0700;
  if (::fstat(data_fd_, &st) == 0 && (st.st_mode & 0040) != 0) dir_mode = 0750;
  if (::mkdir(tmp.c_str(), dir_mode) != 0) {
    if (errno == EEXIST) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s exists (left by an interrupted backup, or not a backup at all): BACKUP deletes "
          "nothing it did not create; remove it, or choose another destination",
          tmp));
    }
    return LmdbStatus(errno, "create backup directory " + tmp);
  }
  // Exactly what this call created, when it fails.
  auto discard = [&] {
    ::unlink((tmp + "/" + kDataFile).c_str());
    ::rmdir(tmp.c_str());
  };
  if (::chmod(tmp.c_str(), dir_mode) != 0) {  // mkdir's mode went through the umask
    const int err = errno;
    discard();
    return LmdbStatus(err, "chmod " + tmp);
  }
  if (Status s = CopyTo(tmp, /*compact=*/true); !s.ok()) {
    discard();
    return s;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest_dir.c_str(), RENAME_NOREPLACE) != 0) {
    const int err = errno;
    discard();
    if (err == EEXIST || err == ENOTEMPTY) {
      return absl::InvalidArgumentError(
          absl::StrFormat("backup destination %s appeared during the backup", dest_dir));
    }
    return LmdbStatus(err, absl::StrFormat("rename %s to %s", tmp, dest_dir));
  }
  // The rename durable too.
  const std::string parent = std::filesystem::path(dest_dir).parent_path().string();
  if (const int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
  if (::stat((dest_dir + "/" + kDataFile).c_str(), &st) != 0) {
    return LmdbStatus(errno, "stat the backup's data.mdb");
  }
  *bytes = static_cast<uint64_t>(st.st_size);
  return absl::OkStatus();
}

Status ChunkStore::SetMaxMapSize(size_t max_map_size) {
  MutexLock write_lock(&write_mu_);  // no growth meanwhile
  if (max_map_size < map_size_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_map_size %s is below the current map of %s, which does not shrink while open",
        HumanBytes(max_map_size), HumanBytes(map_size_)));
  }
  max_map_size_ = max_map_size;
  map_full_alerted_ = false;
  return absl::OkStatus();
}

StatusOr<StoreStats> ChunkStore::Stats() const {
  StoreStats s;
  MDB_envinfo info;
  MDB_stat st;
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_env_info(env_, &info), "env info"));
  VOXDB_RETURN_IF_ERROR(LmdbStatus(mdb_env_stat(env_, &st), "env stat"));
  s.map_size = info.me_mapsize;
  s.max_map_size = max_map_size_;
  s.used_bytes = uint64_t{info.me_last_pgno + 1} * st.ms_psize;
  s.max_readers = info.me_maxreaders;
  s.readers_in_use = info.me_numreaders;
  s.stale_readers_cleared = stale_readers_cleared_;
  s.map_grows = map_grows_;
  VOXDB_ASSIGN_OR_RETURN(auto snap, BeginRead());
  MDB_stat chunks;
  VOXDB_RETURN_IF_ERROR(
      LmdbStatus(mdb_stat(snap->txn_, dbi(Table::kChunks), &chunks), "stat chunks"));
  s.chunk_count = chunks.ms_entries;
  s.chunk_bytes =
      uint64_t{chunks.ms_branch_pages + chunks.ms_leaf_pages + chunks.ms_overflow_pages} *
      chunks.ms_psize;
  return s;
}

}  // namespace voxdb::engine
