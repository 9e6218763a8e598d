#include "engine/node_manifest.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/chunk_store.h"
#include "engine/crc32c.h"
#include "engine/format.h"

namespace voxdb::engine {
namespace {

constexpr uint64_t kKeySpaceEnd = ChunkKey::kMaxCode + 1;
constexpr absl::string_view kHeaderWord = "voxdb-node-manifest";
constexpr absl::string_view kActive = "active";
// A manifest of 8k partitions is under 1 MiB; anything far larger is not one.
constexpr size_t kMaxManifestBytes = size_t{64} << 20;
// The files a partition's directory may hold (FORMAT.md, "The database
// directory"): anything else makes RemoveLeftovers refuse.
const std::array<absl::string_view, 3> kPartitionFiles = {kDataFile, kLmdbLockFile, kLockFile};

std::string Join(const std::string& dir, absl::string_view name) {
  return absl::StrCat(dir, "/", name);
}

// A decimal u64 as the manifest spells it: digits only, no leading zero
// (except "0" itself), no sign, no overflow.
bool ParseDecimal(absl::string_view s, uint64_t* v) {
  if (s.empty() || s.size() > 20 || (s.size() > 1 && s[0] == '0')) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(s, v);
}

// True when `dir` is absolute and normalised: no empty, "." or ".."
// component and no trailing slash.
bool IsNormalAbsolute(absl::string_view dir) {
  if (dir.size() < 2 || dir[0] != '/' || dir.back() == '/') return false;
  for (absl::string_view part : absl::StrSplit(dir.substr(1), '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

// OK when `dir` may be the dir of the partition with `id` (see
// PartitionEntry::dir).
Status CheckDir(uint64_t id, absl::string_view dir) {
  if (dir.empty())
    return absl::InvalidArgumentError(absl::StrFormat("partition %d has no dir", id));
  for (char c : dir) {
    if (c <= ' ' || c > '~' || c == '=') {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the dir of partition %d holds a character the manifest cannot carry (only printable "
          "ASCII without spaces or '='): %s",
          id, absl::CHexEscape(dir)));
    }
  }
  if (dir == kRootPartitionDir) {
    if (id == kRootPartitionId) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrFormat("partition %d cannot live in the data directory itself: only the root "
                        "partition (id 0) does",
                        id));
  }
  if (dir[0] == '/') {
    if (IsNormalAbsolute(dir)) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrFormat("the dir of partition %d is not a normalised absolute path: %s", id, dir));
  }
  if (dir == absl::StrCat(kPartitionsDir, "/", id)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "the dir of partition %d must be \".\" (the root partition), \"%s/%d\" or an absolute path, "
      "not %s",
      id, kPartitionsDir, id, dir));
}

Status Corrupt(const std::string& path, absl::string_view what) {
  return CorruptError(absl::StrFormat("node manifest %s: %s", path, what));
}

Status WriteAll(int fd, absl::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return LmdbStatus(errno, "write " + path);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// The whole file at `path` (NOT_FOUND when absent).
StatusOr<std::string> ReadWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return LmdbStatus(errno, "open " + path);
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return LmdbStatus(err, "read " + path);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxManifestBytes) {
      ::close(fd);
      return Corrupt(path, absl::StrFormat("larger than %d bytes", kMaxManifestBytes));
    }
  }
  ::close(fd);
  return text;
}

// lstat(2): never follows a symbolic link. false with errno when it fails.
bool LStat(const std::string& path, struct stat* st) { return ::lstat(path.c_str(), st) == 0; }

// The names in directory `dir`, without "." and "..".
StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return LmdbStatus(errno, "list " + dir);
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* e = ::readdir(d)) {
    const absl::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return LmdbStatus(err, "list " + dir);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

const PartitionEntry* NodeManifest::Find(uint64_t id) const {
  for (const PartitionEntry& p : partitions) {
    if (p.id == id) return &p;
  }
  return nullptr;
}

PartitionRanges NodeManifest::Ranges() const {
  std::vector<uint64_t> starts;
  starts.reserve(partitions.size());
  for (const PartitionEntry& p : partitions) starts.push_back(p.range.begin);
  auto ranges = PartitionRanges::FromStarts(std::move(starts), align_levels);
  VOXDB_CHECK(ranges.ok());
  return *std::move(ranges);
}

NodeManifest NodeManifest::OnePartition() {
  NodeManifest m;
  m.align_levels = kDefaultAlignLevels;
  m.next_id = kRootPartitionId + 1;
  m.partitions.push_back(PartitionEntry{kRootPartitionId, MortonRange::All(), kRootPartitionDir,
                                        PartitionState::kActive});
  return m;
}

Status ValidateNodeManifest(const NodeManifest& m) {
  if (m.align_levels < 0 || m.align_levels > kMaxOctreeLevel) {
    return absl::InvalidArgumentError(
        absl::StrFormat("align_levels %d is outside 0..%d", m.align_levels, kMaxOctreeLevel));
  }
  if (m.partitions.empty()) {
    return absl::InvalidArgumentError("a node manifest lists at least one partition");
  }
  std::vector<uint64_t> starts;
  std::set<uint64_t> ids;
  std::set<std::string> dirs;
  for (size_t i = 0; i < m.partitions.size(); ++i) {
    const PartitionEntry& p = m.partitions[i];
    const uint64_t expected_end =
        i + 1 < m.partitions.size() ? m.partitions[i + 1].range.begin : kKeySpaceEnd;
    if (p.range.end != expected_end || p.range.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the partitions' ranges do not tile the key space: partition %d is [%d, %d), the next "
          "range starts at %d",
          p.id, p.range.begin, p.range.end, expected_end));
    }
    starts.push_back(p.range.begin);
    if (p.id >= m.next_id) {
      return absl::InvalidArgumentError(
          absl::StrFormat("partition id %d is not below next_id %d", p.id, m.next_id));
    }
    if (!ids.insert(p.id).second) {
      return absl::InvalidArgumentError(absl::StrFormat("partition id %d is listed twice", p.id));
    }
    VOXDB_RETURN_IF_ERROR(CheckDir(p.id, p.dir));
    if (!dirs.insert(p.dir).second) {
      return absl::InvalidArgumentError(absl::StrFormat("dir %s is used by two partitions", p.dir));
    }
    if (p.state != PartitionState::kActive) {
      return absl::InvalidArgumentError(absl::StrFormat("partition %d has an unknown state", p.id));
    }
  }
  // The first start is 0, the starts increase and are aligned.
  const auto ranges = PartitionRanges::FromStarts(std::move(starts), m.align_levels);
  if (!ranges.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the partitions' ranges do not tile the key space: ", ranges.status().message()));
  }
  return absl::OkStatus();
}

std::string EncodeNodeManifest(const NodeManifest& m) {
  std::string text = absl::StrFormat("%s %d\nalign_levels=%d\nnext_id=%d\n", kHeaderWord,
                                     kNodeManifestVersion, m.align_levels, m.next_id);
  for (const PartitionEntry& p : m.partitions) {
    absl::StrAppendFormat(&text, "partition id=%d begin=%d end=%d dir=%s state=%s\n", p.id,
                          p.range.begin, p.range.end, p.dir, kActive);
  }
  const uint32_t crc = Crc32cExtend(0, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  absl::StrAppendFormat(&text, "crc32c=%08x\n", crc);
  return text;
}

StatusOr<NodeManifest> DecodeNodeManifest(absl::string_view text, const std::string& path) {
  // The version first: a newer build may frame its file differently.
  const size_t header_end = text.find('\n');
  const absl::string_view header = text.substr(0, header_end);
  const std::string prefix = absl::StrCat(kHeaderWord, " ");
  uint64_t version = 0;
  if (header_end == absl::string_view::npos || !absl::StartsWith(header, prefix) ||
      !ParseDecimal(header.substr(prefix.size()), &version) || version == 0) {
    return Corrupt(path, absl::StrFormat("the first line is not \"%s %d\"", kHeaderWord,
                                         kNodeManifestVersion));
  }
  if (version > kNodeManifestVersion) {
    return UnsupportedError(absl::StrFormat(
        "node manifest %s has format version %d; this build reads version %d: upgrade voxdb", path,
        version, kNodeManifestVersion));
  }

  // The last line is the crc of every byte before it.
  if (!absl::EndsWith(text, "\n")) return Corrupt(path, "it does not end with a newline (torn?)");
  const size_t crc_line = text.rfind('\n', text.size() - 2);
  if (crc_line == absl::string_view::npos) return Corrupt(path, "it has no crc32c line");
  const absl::string_view body = text.substr(0, crc_line + 1);
  const absl::string_view crc_text = text.substr(crc_line + 1, text.size() - crc_line - 2);
  const uint32_t crc = Crc32cExtend(0, reinterpret_cast<const uint8_t*>(body.data()), body.size());
  if (crc_text != absl::StrFormat("crc32c=%08x", crc)) {
    return Corrupt(path, absl::StrFormat("the last line is not crc32c=%08x, the checksum of the "
                                         "lines before it (torn or damaged)",
                                         crc));
  }

  NodeManifest m;
  std::vector<absl::string_view> lines = absl::StrSplit(body.substr(header_end + 1), '\n');
  lines.pop_back();  // the empty piece after the last newline
  if (lines.size() < 2) return Corrupt(path, "it lacks the align_levels and next_id lines");
  uint64_t align = 0;
  if (!absl::StartsWith(lines[0], "align_levels=") ||
      !ParseDecimal(lines[0].substr(sizeof("align_levels=") - 1), &align) ||
      align > static_cast<uint64_t>(kMaxOctreeLevel)) {
    return Corrupt(path, absl::StrFormat("line 2 is not align_levels=<0..%d>", kMaxOctreeLevel));
  }
  m.align_levels = static_cast<int>(align);
  if (!absl::StartsWith(lines[1], "next_id=") ||
      !ParseDecimal(lines[1].substr(sizeof("next_id=") - 1), &m.next_id)) {
    return Corrupt(path, "line 3 is not next_id=<decimal>");
  }
  for (size_t i = 2; i < lines.size(); ++i) {
    const std::vector<absl::string_view> f = absl::StrSplit(lines[i], ' ');
    PartitionEntry p;
    const auto value = [&](size_t k, absl::string_view key) -> std::optional<absl::string_view> {
      if (k >= f.size() || !absl::StartsWith(f[k], key) || f[k].size() <= key.size() + 1 ||
          f[k][key.size()] != '=') {
        return std::nullopt;
      }
      return f[k].substr(key.size() + 1);
    };
    const auto id = value(1, "id");
    const auto begin = value(2, "begin");
    const auto end = value(3, "end");
    const auto dir = value(4, "dir");
    const auto state = value(5, "state");
    if (f.size() != 6 || f[0] != "partition" || !id || !ParseDecimal(*id, &p.id) || !begin ||
        !ParseDecimal(*begin, &p.range.begin) || !end || !ParseDecimal(*end, &p.range.end) ||
        !dir || !state) {
      return Corrupt(path, absl::StrFormat("line %d is not \"partition id=<n> begin=<n> end=<n> "
                                           "dir=<dir> state=<state>\"",
                                           i + 2));
    }
    if (*state != kActive) {
      return UnsupportedError(absl::StrFormat(
          "node manifest %s: partition %d has state %s, unknown to this build: upgrade voxdb", path,
          p.id, *state));
    }
    p.dir = std::string(*dir);
    m.partitions.push_back(std::move(p));
  }
  const Status valid = ValidateNodeManifest(m);
  if (!valid.ok()) return Corrupt(path, valid.message());
  return m;
}

Status WriteNodeManifest(const std::string& data_dir, const NodeManifest& m) {
  VOXDB_RETURN_IF_ERROR(ValidateNodeManifest(m));
  const std::string text = EncodeNodeManifest(m);
  const std::string tmp = Join(data_dir, kNodeManifestTempFile);
  const std::string path = Join(data_dir, kNodeManifestFile);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return LmdbStatus(errno, "create " + tmp);
  Status s = WriteAll(fd, text, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = LmdbStatus(errno, "fsync " + tmp);
  if (::close(fd) != 0 && s.ok()) s = LmdbStatus(errno, "close " + tmp);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  // The commit point: rename(2) replaces node.manifest atomically.
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    s = LmdbStatus(errno, absl::StrFormat("rename %s to %s", tmp, path));
    ::unlink(tmp.c_str());
    return s;
  }
  // Durable once DATA's entry is: until then a power cut may bring back the
  // old manifest, which is still a whole one.
  return FsyncDirectory(data_dir);
}

StatusOr<NodeManifest> ReadNodeManifest(const std::string& data_dir) {
  const std::string path = Join(data_dir, kNodeManifestFile);
  StatusOr<std::string> text = ReadWholeFile(path);
  if (text.ok()) return DecodeNodeManifest(*text, path);
  if (!absl::IsNotFound(text.status())) return text.status();
  // No manifest: the layout never changed, unless it was lost.
  struct stat st;
  const bool has_partitions = LStat(Join(data_dir, kPartitionsDir), &st);
  const bool has_data = LStat(Join(data_dir, kDataFile), &st);
  if (has_partitions && !has_data) {
    return CorruptError(absl::StrFormat(
        "%s holds %s/ but neither %s nor %s: the node manifest is missing (restore it from a "
        "backup)",
        data_dir, kPartitionsDir, kNodeManifestFile, kDataFile));
  }
  return NodeManifest::OnePartition();
}

Status RemoveLeftovers(const std::string& data_dir, const NodeManifest& m,
                       std::vector<std::string>* removed) {
  VOXDB_RETURN_IF_ERROR(ValidateNodeManifest(m));
  struct stat st;
  // The directories in use, by name under partitions/ and by inode (an
  // absolute dir may name DATA or a directory under partitions/ too).
  std::set<std::string> used_names;
  std::set<std::pair<dev_t, ino_t>> used_inodes;
  for (const PartitionEntry& p : m.partitions) {
    const std::string prefix = absl::StrCat(kPartitionsDir, "/");
    if (absl::StartsWith(p.dir, prefix)) used_names.insert(p.dir.substr(prefix.size()));
    if (::stat(PartitionDir(data_dir, p).c_str(), &st) == 0) {
      used_inodes.insert({st.st_dev, st.st_ino});
    }
  }
  const auto in_use = [&](const struct stat& s) {
    return used_inodes.count({s.st_dev, s.st_ino}) != 0;
  };

  // First everything is checked, then deleted: a refusal deletes nothing.
  std::vector<std::string> files;  // to unlink, in order
  std::vector<std::string> dirs;   // to rmdir after their files
  const std::string tmp = Join(data_dir, kNodeManifestTempFile);
  if (LStat(tmp, &st)) {
    if (S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s is a directory, not a manifest voxdb wrote: move it away", tmp));
    }
    files.push_back(tmp);
  }
  const std::string parts = Join(data_dir, kPartitionsDir);
  if (LStat(parts, &st)) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s is not a directory (a symbolic link?): voxdb does not clean up through it", parts));
    }
    VOXDB_ASSIGN_OR_RETURN(const std::vector<std::string> names, ListDir(parts));
    for (const std::string& name : names) {
      const std::string dir = Join(parts, name);
      uint64_t id = 0;
      if (!LStat(dir, &st)) return LmdbStatus(errno, "stat " + dir);
      if (used_names.count(name) != 0 || (S_ISDIR(st.st_mode) && in_use(st))) continue;
      if (!ParseDecimal(name, &id) || !S_ISDIR(st.st_mode)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s is not a partition directory voxdb made (not a directory named by a decimal id): "
            "move it away",
            dir));
      }
      VOXDB_ASSIGN_OR_RETURN(const std::vector<std::string> inside, ListDir(dir));
      for (const std::string& file : inside) {
        const std::string path = Join(dir, file);
        if (!LStat(path, &st)) return LmdbStatus(errno, "stat " + path);
        if (std::find(kPartitionFiles.begin(), kPartitionFiles.end(), file) ==
                kPartitionFiles.end() ||
            !S_ISREG(st.st_mode)) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s is not referenced by the node manifest but holds %s, which is not a file of a "
              "partition (%s, %s, %s): voxdb deletes nothing it did not make; move it away",
              dir, file, kDataFile, kLmdbLockFile, kLockFile));
        }
        files.push_back(path);
      }
      dirs.push_back(dir);
    }
  }
  bool root_used =
      m.Find(kRootPartitionId) != nullptr && m.Find(kRootPartitionId)->dir == kRootPartitionDir;
  if (::stat(data_dir.c_str(), &st) == 0 && in_use(st)) root_used = true;
  if (!root_used) {
    for (const char* name : {kDataFile, kLmdbLockFile}) {
      const std::string path = Join(data_dir, name);
      if (!LStat(path, &st)) continue;
      if (!S_ISREG(st.st_mode)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s is left from the root partition but is not a regular file: move it away", path));
      }
      files.push_back(path);
    }
  }

  for (const std::string& file : files) {
    if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
      return LmdbStatus(errno, "remove " + file);
    }
    if (absl::StartsWith(file, parts + "/")) continue;  // reported with its directory
    removed->push_back(file);
  }
  for (const std::string& dir : dirs) {
    if (::rmdir(dir.c_str()) != 0) return LmdbStatus(errno, "remove " + dir);
    removed->push_back(dir);
  }
  if (!dirs.empty()) VOXDB_RETURN_IF_ERROR(FsyncDirectory(parts));
  if (!files.empty()) VOXDB_RETURN_IF_ERROR(FsyncDirectory(data_dir));
  return absl::OkStatus();
}

Status FsyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return LmdbStatus(errno, "open " + dir);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : LmdbStatus(err, "fsync " + dir);
}

std::string PartitionDir(const std::string& data_dir, const PartitionEntry& p) {
  if (p.dir == kRootPartitionDir) return data_dir;
  if (!p.dir.empty() && p.dir[0] == '/') return p.dir;
  return Join(data_dir, p.dir);
}

StatusOr<NodeManifest> ManifestAfterSplit(const NodeManifest& m, uint64_t id, uint64_t at) {
  VOXDB_RETURN_IF_ERROR(ValidateNodeManifest(m));
  const auto it = std::find_if(m.partitions.begin(), m.partitions.end(),
                               [&](const PartitionEntry& p) { return p.id == id; });
  if (it == m.partitions.end()) {
    return absl::InvalidArgumentError(absl::StrFormat("no partition %d to split", id));
  }
  if (m.next_id > UINT64_MAX - 2) {
    return absl::InvalidArgumentError("the node has used every partition id");
  }
  const size_t i = static_cast<size_t>(it - m.partitions.begin());
  VOXDB_ASSIGN_OR_RETURN(const PartitionRanges ranges, m.Ranges().Split(i, at, m.align_levels));
  NodeManifest next = m;
  const uint64_t low = m.next_id;
  const uint64_t high = m.next_id + 1;
  next.next_id = m.next_id + 2;
  const auto child = [&](uint64_t child_id, size_t r) {
    return PartitionEntry{child_id, ranges.range(r), absl::StrCat(kPartitionsDir, "/", child_id),
                          PartitionState::kActive};
  };
  next.partitions[i] = child(low, i);
  next.partitions.insert(next.partitions.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                         child(high, i + 1));
  VOXDB_RETURN_IF_ERROR(ValidateNodeManifest(next));
  return next;
}

StatusOr<NodeManifest> ManifestAfterMove(const NodeManifest& m, uint64_t id,
                                         const std::string& dir) {
  VOXDB_RETURN_IF_ERROR(ValidateNodeManifest(m));
  NodeManifest next = m;
  const auto it = std::find_if(next.partitions.begin(), next.partitions.end(),
                               [&](const PartitionEntry& p) { return p.id == id; });
  if (it == next.partitions.end()) {
    return absl::InvalidArgumentError(absl::StrFormat("no partition %d to move", id));
  }
  if (it->dir == dir) {
    return absl::InvalidArgumentError(absl::StrFormat("partition %d already lives in %s", id, dir));
  }
  VOXDB_RETURN_IF_ERROR(CheckDir(id, dir));
  it->dir = dir;
  VOXDB_RETURN_IF_ERROR(ValidateNodeManifest(next));  // another entry's dir
  return next;
}

}  // namespace voxdb::engine
