#include "engine/journal_check.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/format.h"
#include "engine/journal.h"

namespace voxdb::engine {
namespace {

Status WriteAll(int fd, const std::vector<uint8_t>& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return LmdbStatus(errno, "write " + path);
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

Status FsyncDir(const std::string& file) {
  std::filesystem::path parent = std::filesystem::path(file).parent_path();
  if (parent.empty()) parent = std::filesystem::path(".");
  const std::string dir = parent.string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return LmdbStatus(errno, "open " + dir);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : LmdbStatus(err, "fsync " + dir);
}

}  // namespace

StatusOr<JournalCheck> CheckJournal(const ChunkStore::Snapshot& snap) {
  JournalCheck c;
  VOXDB_RETURN_IF_ERROR(snap.Scan(
      Table::kJournal, {}, {}, [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
        const uint64_t seq = DecodeJournalKey(k);
        if (c.records == 0) c.first_seq = seq;
        c.last_seq = seq;
        ++c.records;
        if (!c.bad_seq) {
          if (k.size() != 8) {
            c.bad_seq = seq;
            c.bad_error = absl::StrFormat("its key is %u bytes, not 8", k.size());
          } else if (auto rec = DecodeJournalRecord(v); !rec.ok()) {
            c.bad_seq = seq;
            c.bad_error = std::string(rec.status().message());
          } else {
            ++c.kept_records;
          }
        }
        if (c.bad_seq) {
          ++c.drop_records;
          c.drop_bytes += v.size();
          c.drop_last_seq = seq;
        }
        return true;
      }));
  return c;
}

Status TruncateJournal(ChunkStore& store, const JournalCheck& check, const std::string& copy_path) {
  if (!check.bad_seq) return absl::InvalidArgumentError("the journal has no damaged record");
  // The copy first, durable, before anything is deleted.
  std::vector<uint8_t> copy(kDroppedJournalMagic, kDroppedJournalMagic + 8);
  const auto from = JournalKey(*check.bad_seq);
  uint64_t copied = 0;
  WriteBatch batch;
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, store.BeginRead());
    VOXDB_RETURN_IF_ERROR(snap->Scan(Table::kJournal, from, {},
                                     [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                                       copy.insert(copy.end(), k.begin(), k.end());
                                       PutFixed32(copy, static_cast<uint32_t>(v.size()));
                                       copy.insert(copy.end(), v.begin(), v.end());
                                       batch.Delete(Table::kJournal, k);
                                       ++copied;
                                       return true;
                                     }));
  }
  if (copied != check.drop_records) {
    return ConflictError("the journal changed since it was checked: check it again");
  }
  const int fd = ::open(copy_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s already exists: move it away first (it may hold records dropped before)", copy_path));
    }
    return LmdbStatus(errno, "create " + copy_path);
  }
  Status s = WriteAll(fd, copy, copy_path);
  if (s.ok() && ::fsync(fd) != 0) s = LmdbStatus(errno, "fsync " + copy_path);
  ::close(fd);
  if (s.ok()) s = FsyncDir(copy_path);
  if (!s.ok()) {
    ::unlink(copy_path.c_str());
    return s;
  }
  // Then the records, and last_seq, in one transaction.
  uint64_t last = check.drop_last_seq;
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, store.BeginRead());
    auto meta = snap->Get(Table::kMeta, AsBytes(kMetaLastSeq));
    if (meta.ok() && meta->size() == 8) last = std::max(last, DecodeFixed64(meta->data()));
  }
  std::vector<uint8_t> last_bytes;
  PutFixed64(last_bytes, last);
  batch.Put(Table::kMeta, AsBytes(kMetaLastSeq), std::move(last_bytes));
  VOXDB_RETURN_IF_ERROR(store.Write(batch));
  return store.Sync();
}

}  // namespace voxdb::engine
