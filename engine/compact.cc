#include "engine/compact.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"
#include "engine/chunk_store.h"
#include "engine/format.h"
#include "engine/world_frame.h"

namespace voxdb::engine {
namespace {

// The status with `prefix` before its message.
Status Prefixed(const Status& status, std::string_view prefix) {
  return Status(status.code(), std::string(prefix) + std::string(status.message()));
}

Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return LmdbStatus(errno, "open " + path);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : LmdbStatus(err, "fsync " + path);
}

StatusOr<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return LmdbStatus(errno, "stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

// Gives `path` the mode and owner of `like`: a copy made by compact, run
// as root say, must stay readable by voxdbd's user. A different group that
// cannot be set is left as it is; a different owner is an error.
Status MatchFile(const std::string& path, const struct stat& like) {
  if (::chmod(path.c_str(), like.st_mode & 07777) != 0) return LmdbStatus(errno, "chmod " + path);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return LmdbStatus(errno, "stat " + path);
  if ((st.st_uid != like.st_uid || st.st_gid != like.st_gid) &&
      ::chown(path.c_str(), like.st_uid, like.st_gid) != 0 && st.st_uid != like.st_uid) {
    return LmdbStatus(errno, absl::StrFormat("give %s the owner of %s", path, kDataFile));
  }
  return absl::OkStatus();
}

// Where the compacted copy is built: DIR.compact-tmp next to DIR when that
// is on DIR's file system and its parent is writable (the rename into DIR
// then works and DIR never holds a half copy), else DIR/compact.tmp (DIR is
// a mount point, or only DIR is ours, as /var/lib/voxdb under systemd).
std::string CompactTempDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path abs = fs::absolute(dir, ec).lexically_normal();
  fs::path clean = abs;
  if (clean.filename().empty()) clean = clean.parent_path();
  const fs::path parent = clean.parent_path();
  struct stat d, p;
  if (!ec && !clean.filename().empty() && clean != parent && ::stat(clean.c_str(), &d) == 0 &&
      ::stat(parent.c_str(), &p) == 0 && d.st_dev == p.st_dev &&
      ::access(parent.c_str(), W_OK) == 0) {
    return (parent / (clean.filename().string() + ".compact-tmp")).string();
  }
  return dir + "/compact.tmp";
}

// Removes a temporary directory of compact: only the files compact leaves
// there (a leftover of an interrupted run included); anything else is
// refused rather than deleted.
Status RemoveTempDir(const std::string& tmp) {
  namespace fs = std::filesystem;
  constexpr std::array<std::string_view, 3> kOurs = {kDataFile, kLmdbLockFile, kLockFile};
  std::error_code ec;
  if (!fs::exists(tmp, ec)) return absl::OkStatus();
  if (!fs::is_directory(tmp, ec)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is in the way of compact's temporary directory and is not a directory: remove it",
        tmp));
  }
  // increment(ec): a range-for's ++ would throw on a read error.
  for (auto it = fs::directory_iterator(tmp, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (std::find(kOurs.begin(), kOurs.end(), name) == kOurs.end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s holds %s, which voxdb compact did not put there: remove the "
                          "directory or move it away",
                          tmp, name));
    }
  }
  if (ec) return LmdbStatus(ec.value(), "list " + tmp);
  for (std::string_view name : kOurs) {
    const std::string path = tmp + "/" + std::string(name);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return LmdbStatus(errno, "remove " + path);
    }
  }
  if (::rmdir(tmp.c_str()) != 0) return LmdbStatus(errno, "remove " + tmp);
  return absl::OkStatus();
}

using TableCounts = std::array<uint64_t, kTableCount>;

StatusOr<TableCounts> CountTables(const ChunkStore& store) {
  VOXDB_ASSIGN_OR_RETURN(auto snap, store.BeginRead());
  TableCounts counts{};
  for (int t = 0; t < kTableCount; ++t) {
    VOXDB_ASSIGN_OR_RETURN(counts[t], snap->Count(static_cast<Table>(t)));
  }
  return counts;
}

// The existing database as it is; not exclusive: the directory lock is
// already this process's (LockDirectory).
StoreOptions LockedStoreOptions() {
  StoreOptions options;
  options.create_if_missing = false;
  options.exclusive = false;
  return options;
}

}  // namespace

void GiveLockFilesToTheOwner(const std::string& dir) {
  struct stat data;
  if (::stat((dir + "/" + kDataFile).c_str(), &data) != 0) return;
  for (const char* name : {kLockFile, kLmdbLockFile}) {
    const std::string path = dir + "/" + name;
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && (st.st_uid != data.st_uid || st.st_gid != data.st_gid)) {
      (void)!::chown(path.c_str(), data.st_uid, data.st_gid);
    }
  }
}

// Crash safety: data.mdb is never modified, only replaced by rename(2),
// which is atomic, after the new file is complete and fsynced. At any crash
// point DIR/data.mdb is either the whole old file or the whole new one:
//   1. the copy is built and fsynced in the temporary directory: a crash
//      leaves DIR untouched and a leftover temporary directory, which the
//      next compact removes;
//   2. link DIR/data.mdb.compact-old to the old file (the old file "renamed
//      aside" while data.mdb still names it), fsync DIR;
//   3. rename the copy over DIR/data.mdb, fsync DIR (and the temporary
//      directory): before the rename is durable data.mdb names the old
//      file, after it the new one; both are complete;
//   4. unlink data.mdb.compact-old, fsync DIR, remove the temporary
//      directory. A crash before that leaves data.mdb.compact-old behind,
//      which costs disk space only; the next compact removes it.
// LMDB's lock.mdb holds no data: the first process to open the environment
// afterwards resets it.
StatusOr<CompactResult> CompactDir(const std::string& dir) {
  const std::string data = dir + "/" + kDataFile;
  struct stat before;
  if (::stat(data.c_str(), &before) != 0 || !S_ISREG(before.st_mode)) {
    return absl::NotFoundError(absl::StrFormat("no voxdb database in %s (no %s)", dir, kDataFile));
  }
  VOXDB_ASSIGN_OR_RETURN(DirectoryLock lock, ChunkStore::LockDirectory(dir));
  const std::string old = data + ".compact-old";
  CompactResult result;
  result.temp_dir = CompactTempDir(dir);
  const std::string& tmp = result.temp_dir;
  const std::string fresh = tmp + "/" + kDataFile;

  // Leftovers of an interrupted run (see above).
  VOXDB_RETURN_IF_ERROR(RemoveTempDir(tmp));
  if (::unlink(old.c_str()) != 0 && errno != ENOENT) return LmdbStatus(errno, "remove " + old);
  if (::stat(data.c_str(), &before) != 0) return LmdbStatus(errno, "stat " + data);
  result.bytes_before = static_cast<uint64_t>(before.st_size);

  TableCounts counts;
  WorldFrame frame = WorldFrame::Earth();
  {
    auto store = ChunkStore::Open(dir, LockedStoreOptions());
    if (!store.ok()) {
      if (IsBusy(store.status())) return store.status();
      return Prefixed(store.status(), absl::StrFormat("cannot open database %s: ", dir));
    }
    frame = (*store)->frame();
    VOXDB_ASSIGN_OR_RETURN(counts, CountTables(**store));
    if (::mkdir(tmp.c_str(), 0750) != 0) return LmdbStatus(errno, "create " + tmp);
    // The copy fsyncs data.mdb; its directory entry below.
    const Status s = (*store)->CopyTo(tmp, /*compact=*/true);
    if (!s.ok()) {
      (void)RemoveTempDir(tmp);
      return Prefixed(s, absl::StrFormat("compacting copy into %s: ", tmp));
    }
  }  // the environment of DIR is closed from here on
  Status s = MatchFile(fresh, before);
  if (s.ok()) s = FsyncPath(tmp, /*directory=*/true);
  if (s.ok()) {
    // The copy must open as a voxdb database with every entry.
    auto copy = ChunkStore::Open(tmp, LockedStoreOptions());
    if (!copy.ok()) {
      s = Prefixed(copy.status(), "the compacted copy does not open: ");
    } else if (!((*copy)->frame() == frame)) {
      s = CorruptError("the compacted copy has another world frame");
    } else {
      auto c = CountTables(**copy);
      if (!c.ok()) {
        s = Prefixed(c.status(), "the compacted copy cannot be read: ");
      } else {
        for (int t = 0; t < kTableCount && s.ok(); ++t) {
          if ((*c)[t] != counts[t]) {
            s = CorruptError(absl::StrFormat(
                "the compacted copy has %u entries in table %s, the database %u: nothing changed",
                (*c)[t], TableName(static_cast<Table>(t)), counts[t]));
          }
        }
      }
    }
  }
  if (!s.ok()) {
    (void)RemoveTempDir(tmp);
    return s;
  }
  result.chunks = counts[static_cast<int>(Table::kChunks)];

  // The swap (steps 2-4 above).
  const bool kept_old = ::link(data.c_str(), old.c_str()) == 0;  // not every FS has links
  if (kept_old) VOXDB_RETURN_IF_ERROR(FsyncPath(dir, /*directory=*/true));
  if (::rename(fresh.c_str(), data.c_str()) != 0) {
    s = LmdbStatus(errno, absl::StrFormat("rename %s to %s", fresh, data));
    if (kept_old) ::unlink(old.c_str());
    (void)RemoveTempDir(tmp);
    return s;
  }
  VOXDB_RETURN_IF_ERROR(FsyncPath(dir, /*directory=*/true));
  VOXDB_RETURN_IF_ERROR(FsyncPath(tmp, /*directory=*/true));
  if (kept_old) {
    if (::unlink(old.c_str()) != 0) return LmdbStatus(errno, "remove " + old);
    VOXDB_RETURN_IF_ERROR(FsyncPath(dir, /*directory=*/true));
  }
  VOXDB_RETURN_IF_ERROR(RemoveTempDir(tmp));
  GiveLockFilesToTheOwner(dir);
  VOXDB_ASSIGN_OR_RETURN(result.bytes_after, FileSize(data));
  return result;
}

}  // namespace voxdb::engine
