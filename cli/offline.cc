#include "cli/offline.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/output.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "engine/fills.h"
#include "engine/journal.h"
#include "engine/morton.h"
#include "engine/status.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"
#include "protocol/client.h"

namespace voxdb::cli {
namespace {

using engine::ChunkKey;
using engine::ChunkStore;
using engine::Table;

// Lines of problems (and of warnings) printed in human form.
constexpr size_t kPrintedProblems = 20;
using index::kIndexFormat;

constexpr std::string_view kMetaFormatVersion = "format_version";
constexpr std::string_view kMetaWorldFrame = "world_frame";
constexpr std::string_view kMetaCreated = "created_us";
constexpr std::string_view kMetaLastSeq = "last_seq";
constexpr std::string_view kMetaSeqReserved = "seq_reserved";
constexpr std::string_view kMetaIndexFormat = "s2index_format";

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

uint64_t LoadBigEndian64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

std::string Hex(std::span<const uint8_t> bytes) {
  std::string out;
  for (uint8_t b : bytes) absl::StrAppendFormat(&out, "%02x", b);
  return out;
}

// "chunk 1000000,400000,312500 (key 277415739110342912)".
std::string ChunkName(ChunkKey key) {
  const engine::ChunkCoord c = key.coord();
  return absl::StrFormat("chunk %u,%u,%u (key %u)", c.x, c.y, c.z, key.code());
}

// "CORRUPT: message".
std::string Describe(const absl::Status& status) {
  return absl::StrFormat("%s: %s", StatusNameOf(status), status.message());
}

// An error of the database itself (cannot open it, in use, ...): exit 1
// with its status name, as for a server's answer. (A plain BUSY, absl's
// UNAVAILABLE, would read as "server unreachable", exit 3.)
absl::Status DatabaseError(const absl::Status& status, std::string_view prefix = "") {
  return protocol::ServerError(protocol::ToWireStatus(status),
                               std::string(prefix) + std::string(status.message()));
}

absl::StatusOr<std::string> DataDir(const CommandLine& cl) {
  if (!cl.data.has_value() || cl.data->empty()) {
    return UsageError("needs --data DIR, the database directory (with voxdbd stopped)");
  }
  std::string dir = *cl.data;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

// NOT_FOUND unless `dir` holds a data.mdb: checked before anything is
// created in it.
absl::Status CheckIsDatabase(const std::string& dir) {
  struct stat st;
  if (::stat((dir + "/data.mdb").c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return DatabaseError(absl::NotFoundError(absl::StrFormat(
        "no voxdb database in %s (no data.mdb there; --data names the directory voxdbd "
        "was started with)",
        dir)));
  }
  return absl::OkStatus();
}

// The BUSY of ChunkStore::Open, told for this CLI.
absl::Status OpenError(const absl::Status& status, const std::string& dir) {
  if (IsBusy(status)) {
    return DatabaseError(BusyError(absl::StrFormat(
        "database %s is in use by another process (voxdbd?): stop it first, the offline "
        "commands need the database to themselves",
        dir)));
  }
  return DatabaseError(status, absl::StrFormat("cannot open database %s: ", dir));
}

// A store opened by a tool: the existing database only, as it is.
engine::StoreOptions ToolStoreOptions(bool exclusive) {
  engine::StoreOptions options;
  options.create_if_missing = false;
  options.exclusive = exclusive;
  return options;
}

// --- verify ------------------------------------------------------------------

class Verifier {
 public:
  Verifier(const ChunkStore::Snapshot& snap, const engine::WorldFrame& frame, VerifyReport* r)
      : snap_(snap), frame_(frame), r_(*r) {}

  void Run() {
    CheckMeta();
    CheckFills();
    CheckJournal();
    CheckChunks();
    CheckIndex();
    CheckCounts();
    auto lod = snap_.Count(Table::kLod);
    if (lod.ok()) r_.lod_entries = *lod;
  }

 private:
  // Scans a table; a failure of LMDB itself (a damaged B-tree) is a problem.
  void ScanTable(Table table,
                 const std::function<void(std::span<const uint8_t>, std::span<const uint8_t>)>& fn,
                 uint64_t* scanned) {
    const absl::Status s = snap_.Scan(table, {}, {}, [&](auto k, auto v) {
      ++*scanned;
      fn(k, v);
      return true;
    });
    if (!s.ok()) {
      r_.Problem(
          absl::StrFormat("table %s cannot be read to the end: %s", TableName(table), Describe(s)));
      return;
    }
    scanned_[static_cast<int>(table)] = *scanned;  // complete: CheckCounts compares it
  }

  void CheckMeta() {
    auto get = [&](std::string_view name) { return snap_.Get(Table::kMeta, Bytes(name)); };
    auto meta_problem = [&](std::string text) {
      r_.meta_ok = false;
      r_.Problem("meta: " + std::move(text));
    };
    // Present, or a problem (missing) unless optional; then the exact size.
    auto fixed = [&](std::string_view name, size_t size,
                     bool optional) -> std::optional<std::span<const uint8_t>> {
      auto v = get(name);
      if (!v.ok()) {
        if (!absl::IsNotFound(v.status())) {
          meta_problem(absl::StrFormat("%s cannot be read: %s", name, Describe(v.status())));
        } else if (!optional) {
          meta_problem(absl::StrFormat("%s is missing", name));
        }
        return std::nullopt;
      }
      if (size != 0 && v->size() != size) {
        meta_problem(absl::StrFormat("%s has %u bytes, not %u", name, v->size(), size));
        return std::nullopt;
      }
      return *v;
    };
    if (auto v = fixed(kMetaFormatVersion, 4, false)) {
      r_.format_version = engine::DecodeFixed32(v->data());
      if (r_.format_version != engine::kStoreFormatVersion) {
        meta_problem(absl::StrFormat("format_version is %u; this build reads %u", r_.format_version,
                                     engine::kStoreFormatVersion));
      }
    }
    if (auto v = fixed(kMetaWorldFrame, 0, false)) {
      auto stored = engine::WorldFrame::Decode(*v);
      if (!stored.ok()) {
        meta_problem("world_frame does not decode: " + Describe(stored.status()));
      } else if (!(*stored == frame_)) {
        meta_problem("world_frame differs from the frame the store opened with");
      }
    }
    if (auto v = fixed(kMetaCreated, 8, false)) {
      r_.created_us = static_cast<int64_t>(engine::DecodeFixed64(v->data()));
    }
    if (auto v = fixed(kMetaLastSeq, 8, true)) {
      r_.has_last_seq = true;
      r_.last_seq = engine::DecodeFixed64(v->data());
    }
    if (auto v = fixed(kMetaSeqReserved, 8, true)) {
      seq_reserved_ = engine::DecodeFixed64(v->data());
    }
    if (auto v = fixed(kMetaIndexFormat, 4, true)) {
      const uint32_t format = engine::DecodeFixed32(v->data());
      if (format == kIndexFormat) {
        r_.index_built = true;
      } else if (format < kIndexFormat) {
        r_.index_outdated = true;
        r_.Warning(absl::StrFormat(
            "index: s2index_format %u is older than this build's %u: voxdbd rebuilds the index "
            "when it starts",
            format, kIndexFormat));
      } else {
        meta_problem(absl::StrFormat(
            "s2index_format is %u, not %u: voxdbd refuses to start (rebuild with voxdb reindex)",
            format, kIndexFormat));
      }
    }
    uint64_t scanned = 0;
    ScanTable(
        Table::kMeta,
        [&](std::span<const uint8_t> k, std::span<const uint8_t>) {
          const std::string_view name(reinterpret_cast<const char*>(k.data()), k.size());
          for (std::string_view known : {kMetaFormatVersion, kMetaWorldFrame, kMetaCreated,
                                         kMetaLastSeq, kMetaSeqReserved, kMetaIndexFormat}) {
            if (name == known) return;
          }
          r_.Warning(absl::StrFormat("meta: unknown key %s (hex %s)", JsonQuote(name), Hex(k)));
        },
        &scanned);
  }

  void CheckFills() {
    ScanTable(
        Table::kFills,
        [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
          if (k.size() != 8) {
            ++r_.fills_corrupt;
            r_.Problem(absl::StrFormat("fills: key %s is not an 8-byte sequence number", Hex(k)));
            return;
          }
          const uint64_t seq = LoadBigEndian64(k.data());
          auto fill = engine::Fill::Decode(seq, v);
          absl::Status s = fill.ok() ? frame_.CheckBox(fill->box) : fill.status();
          if (s.ok() && seq == 0) s = CorruptError("sequence number 0 is never handed out");
          if (!s.ok()) {
            ++r_.fills_corrupt;
            r_.Problem(absl::StrFormat("fill %u: %s", seq, Describe(s)));
            return;
          }
          ++r_.fills_ok;
          max_fill_seq_ = std::max(max_fill_seq_, seq);
        },
        &r_.fills);
  }

  void CheckJournal() {
    uint64_t previous = 0;
    ScanTable(
        Table::kJournal,
        [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
          if (k.size() != 8) {
            ++r_.journal_corrupt;
            r_.Problem(absl::StrFormat("journal: key %s is not an 8-byte sequence number", Hex(k)));
            return;
          }
          const uint64_t seq = LoadBigEndian64(k.data());
          if (r_.journal_first_seq == 0) r_.journal_first_seq = seq;
          r_.journal_last_seq = seq;
          if (previous != 0 && seq != previous + 1) {
            ++r_.journal_gaps;
            r_.Warning(absl::StrFormat(
                "journal: sequence numbers jump from %u to %u (a journal commit that failed, "
                "reported to its writer, leaves such a gap)",
                previous, seq));
          }
          previous = seq;
          absl::Status s = engine::DecodeJournalRecord(v).status();
          if (s.ok() && seq == 0) s = CorruptError("sequence number 0 is never handed out");
          if (!s.ok()) {
            ++r_.journal_corrupt;
            r_.Problem(absl::StrFormat("journal record %u: %s", seq, Describe(s)));
            return;
          }
          ++r_.journal_ok;
        },
        &r_.journal_records);
  }

  void CheckChunks() {
    // On open, the next sequence number is one past the largest of these;
    // a stored version above it would let new writes get lower versions.
    const uint64_t counter =
        std::max({r_.last_seq, r_.journal_last_seq, max_fill_seq_, seq_reserved_});
    uint64_t ahead = 0;
    std::optional<std::pair<ChunkKey, uint64_t>> newest_ahead;
    ScanTable(
        Table::kChunks,
        [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
          const std::optional<ChunkKey> key = ChunkKey::Decode(k);
          if (!key) {
            ++r_.chunk_bad_keys;
            r_.Problem(absl::StrFormat("chunks: key %s is not an 8-byte Morton code", Hex(k)));
            return;
          }
          if (!frame_.ContainsChunk(key->coord())) {
            ++r_.chunk_bad_keys;
            r_.Problem(absl::StrFormat("%s: outside the world's %u x %u x %u chunks",
                                       ChunkName(*key), frame_.chunks_x(), frame_.chunks_y(),
                                       frame_.chunks_z()));
            return;
          }
          auto view = engine::ParseChunkRecord(v);
          if (!view.ok()) {
            ++r_.chunks_corrupt;
            r_.Problem(absl::StrFormat("%s: %s", ChunkName(*key), Describe(view.status())));
            return;
          }
          const uint64_t version = view->header.version;
          if (version > counter) {
            ++ahead;
            if (!newest_ahead || version > newest_ahead->second) newest_ahead = {*key, version};
          }
          if (view->header.encoding == engine::ChunkEncoding::kFills) {
            ++r_.fills_markers;
            ++r_.chunks_ok;
            return;
          }
          // The index is checked against the header, whatever the payload.
          if (r_.index_built) CheckIndexEntryOf(*key, version);
          const absl::Status s = engine::DecodeChunk(v).status();
          if (!s.ok()) {
            ++r_.chunks_corrupt;
            r_.Problem(absl::StrFormat("%s: %s", ChunkName(*key), Describe(s)));
            return;
          }
          ++r_.chunks_ok;
          if (view->header.encoding == engine::ChunkEncoding::kUniform) {
            ++r_.uniform;
          } else {
            ++r_.bricks;
          }
        },
        &r_.chunks);
    if (ahead > 0) {
      r_.Warning(absl::StrFormat(
          "chunks: %u record%s newer than the sequence counter %u (the newest: %s version %u): "
          "writes after the next open would not get newer versions (not written by "
          "engine::Database?)",
          ahead, ahead == 1 ? " is" : "s are", counter, ChunkName(newest_ahead->first),
          newest_ahead->second));
    }
  }

  // Looks up the item a stored chunk must have in its column's entry.
  void CheckIndexEntryOf(ChunkKey key, uint64_t version) {
    const engine::ChunkCoord c = key.coord();
    const auto index_key = index::IndexKey(index::ChunkCell(frame_, key), index::ColumnId(c));
    auto entry = snap_.Get(Table::kS2Index, index_key);
    std::vector<index::IndexItem> items;
    // A damaged entry (counted by CheckIndex) still serves what can be read.
    if (entry.ok()) index::DecodeIndexValue(*entry, &items);
    if (!entry.ok() && !absl::IsNotFound(entry.status())) {
      r_.Problem(absl::StrFormat("index: the entry of %s cannot be read: %s", ChunkName(key),
                                 Describe(entry.status())));
      return;
    }
    auto item = std::find_if(items.begin(), items.end(),
                             [&](const index::IndexItem& i) { return i.z == c.z; });
    if (item == items.end()) {
      ++r_.index_missing;
      r_.Problem(absl::StrFormat("index: no entry for %s version %u (voxdb reindex rebuilds it)",
                                 ChunkName(key), version));
    } else if (item->version != version) {
      ++r_.index_wrong_version;
      r_.Problem(absl::StrFormat("index: %s has version %u but its entry says %u", ChunkName(key),
                                 version, item->version));
    } else {
      ++r_.index_ok;
    }
  }

  // Every item must belong to a stored chunk that is not a fills marker,
  // under that chunk's cell. (Missing items and versions: CheckChunks.)
  void CheckIndex() {
    if (!r_.index_built) {
      auto n = snap_.Count(Table::kS2Index);
      if (n.ok()) r_.index_columns = *n;
      if (r_.index_columns > 0 && !r_.index_outdated) {
        r_.Warning(absl::StrFormat(
            "index: %u entries, but meta has no s2index_format: voxdbd rebuilds the index when "
            "it starts",
            r_.index_columns));
      }
      return;
    }
    std::vector<index::IndexItem> items;
    ScanTable(
        Table::kS2Index,
        [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
          const uint64_t column =
              k.size() == index::kIndexKeySize ? LoadBigEndian64(k.data() + 8) : ~uint64_t{0};
          if (column >> (2 * engine::kMortonAxisBits) != 0 || !index::DecodeIndexValue(v, &items)) {
            ++r_.index_malformed;
            r_.Problem(absl::StrFormat("index: malformed entry %s (a %u-byte key, a %u-byte value)",
                                       Hex(k), k.size(), v.size()));
            return;
          }
          const S2CellId cell(LoadBigEndian64(k.data()));
          std::optional<S2CellId> expected;
          for (const index::IndexItem& item : items) {
            ++r_.index_entries;
            const engine::ChunkCoord c{static_cast<uint32_t>(column >> engine::kMortonAxisBits),
                                       static_cast<uint32_t>(column & engine::kMaxChunkAxis),
                                       item.z};
            const ChunkKey key = ChunkKey::FromCoord(c);
            auto extra = [&](std::string_view why) {
              ++r_.index_extra;
              r_.Problem(absl::StrFormat("index: extra entry for %s under cell %s: %s",
                                         ChunkName(key), cell.ToToken(), why));
            };
            if (!frame_.ContainsChunk(c)) {
              extra("the chunk is outside the world");
              continue;
            }
            if (!expected) expected = index::ChunkCell(frame_, key);
            if (*expected != cell) {
              extra(absl::StrFormat("its centre is in cell %s", expected->ToToken()));
              continue;
            }
            auto record = snap_.GetChunk(key);
            if (absl::IsNotFound(record.status())) {
              extra("the chunk is not stored");
              continue;
            }
            if (!record.ok()) continue;  // reported with the chunks
            auto view = engine::ParseChunkRecord(*record);
            if (!view.ok()) continue;  // reported with the chunks
            if (view->header.encoding == engine::ChunkEncoding::kFills) {
              extra("the chunk is deleted (a fills marker)");
            }
          }
        },
        &r_.index_columns);
  }

  // LMDB's own entry counts against the scans.
  void CheckCounts() {
    for (Table t :
         {Table::kMeta, Table::kChunks, Table::kFills, Table::kJournal, Table::kS2Index}) {
      const auto scanned = scanned_[static_cast<int>(t)];
      if (!scanned.has_value()) continue;
      auto n = snap_.Count(t);
      if (!n.ok()) {
        r_.Problem(absl::StrFormat("table %s: %s", TableName(t), Describe(n.status())));
      } else if (*n != *scanned) {
        r_.Problem(absl::StrFormat("table %s: LMDB counts %u entries, a scan found %u",
                                   TableName(t), *n, *scanned));
      }
    }
  }

  const ChunkStore::Snapshot& snap_;
  const engine::WorldFrame& frame_;
  VerifyReport& r_;
  uint64_t max_fill_seq_ = 0;
  uint64_t seq_reserved_ = 0;  // meta.seq_reserved: no number above it was handed out
  std::array<std::optional<uint64_t>, engine::kTableCount> scanned_;
};

std::string FormatMicros(int64_t us) {
  const time_t t = static_cast<time_t>(us / 1'000'000);
  tm utc{};
  if (us < 0 || gmtime_r(&t, &utc) == nullptr) return std::to_string(us) + " us";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

// "N problem(s)".
std::string Count(uint64_t n, std::string_view noun) {
  return absl::StrFormat("%u %s%s", n, noun, n == 1 ? "" : "s");
}

std::string VerifyText(const std::string& dir, const VerifyReport& r) {
  std::string t = absl::StrFormat("data %s\n", dir);
  absl::StrAppendFormat(&t, "meta %s (format %u, created %s, last_seq %s)\n",
                        r.meta_ok ? "ok" : "DAMAGED", r.format_version, FormatMicros(r.created_us),
                        r.has_last_seq ? std::to_string(r.last_seq) : "none yet");
  absl::StrAppendFormat(
      &t, "chunks %u (%u ok, %u corrupt, %u bad keys; %u bricks, %u uniform, %u fills markers)\n",
      r.chunks, r.chunks_ok, r.chunks_corrupt, r.chunk_bad_keys, r.bricks, r.uniform,
      r.fills_markers);
  if (r.index_built) {
    absl::StrAppendFormat(
        &t,
        "index %u entries in %u columns (%u ok, %u missing, %u extra, %u wrong version, %u "
        "malformed)\n",
        r.index_entries, r.index_columns, r.index_ok, r.index_missing, r.index_extra,
        r.index_wrong_version, r.index_malformed);
  } else if (r.index_outdated) {
    absl::StrAppendFormat(&t, "index of an older format (voxdbd rebuilds it when it starts)\n");
  } else {
    absl::StrAppendFormat(&t, "index not built (voxdbd builds it when it starts)\n");
  }
  absl::StrAppendFormat(&t, "fills %u (%u ok, %u corrupt)\n", r.fills, r.fills_ok, r.fills_corrupt);
  absl::StrAppendFormat(&t, "journal %u records (%u ok, %u corrupt, %u gaps", r.journal_records,
                        r.journal_ok, r.journal_corrupt, r.journal_gaps);
  if (r.journal_records > 0) {
    absl::StrAppendFormat(&t, "; seq %u..%u", r.journal_first_seq, r.journal_last_seq);
  }
  t += ")\n";
  auto lines = [&](const char* label, const std::vector<std::string>& items, uint64_t total) {
    const size_t shown = std::min(items.size(), kPrintedProblems);
    for (size_t i = 0; i < shown; ++i) absl::StrAppendFormat(&t, "%s %s\n", label, items[i]);
    if (total > shown) absl::StrAppendFormat(&t, "... %u more\n", total - shown);
  };
  lines("PROBLEM", r.problems, r.problem_count);
  lines("warning", r.warnings, r.warning_count);
  if (r.ok()) {
    absl::StrAppendFormat(&t, "ok: no problems (%s)\n", Count(r.warning_count, "warning"));
  } else {
    absl::StrAppendFormat(&t, "DAMAGED: %s, %s\n", Count(r.problem_count, "problem"),
                          Count(r.warning_count, "warning"));
  }
  return t;
}

std::string JsonStrings(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  quoted.reserve(items.size());
  for (const std::string& s : items) quoted.push_back(JsonQuote(s));
  return absl::StrCat("[", absl::StrJoin(quoted, ","), "]");
}

JsonObject VerifyJson(const std::string& dir, const VerifyReport& r) {
  JsonObject o;
  o.Str("command", "verify").Str("data", dir).Bool("ok", r.ok());
  JsonObject meta;
  meta.Bool("ok", r.meta_ok).Num("format_version", r.format_version);
  meta.Raw("created_us", std::to_string(r.created_us));
  meta.Raw("last_seq", r.has_last_seq ? std::to_string(r.last_seq) : "null");
  o.Object("meta", meta);
  JsonObject chunks;
  chunks.Num("total", r.chunks)
      .Num("ok", r.chunks_ok)
      .Num("corrupt", r.chunks_corrupt)
      .Num("bad_keys", r.chunk_bad_keys)
      .Num("bricks", r.bricks)
      .Num("uniform", r.uniform)
      .Num("fills_markers", r.fills_markers);
  o.Object("chunks", chunks);
  JsonObject index;
  index.Bool("built", r.index_built)
      .Bool("outdated", r.index_outdated)
      .Num("entries", r.index_entries)
      .Num("columns", r.index_columns)
      .Num("ok", r.index_ok)
      .Num("missing", r.index_missing)
      .Num("extra", r.index_extra)
      .Num("wrong_version", r.index_wrong_version)
      .Num("malformed", r.index_malformed);
  o.Object("index", index);
  JsonObject fills;
  fills.Num("total", r.fills).Num("ok", r.fills_ok).Num("corrupt", r.fills_corrupt);
  o.Object("fills", fills);
  JsonObject journal;
  journal.Num("records", r.journal_records)
      .Num("ok", r.journal_ok)
      .Num("corrupt", r.journal_corrupt)
      .Num("gaps", r.journal_gaps)
      .Num("first_seq", r.journal_first_seq)
      .Num("last_seq", r.journal_last_seq);
  o.Object("journal", journal);
  o.Num("lod_entries", r.lod_entries);
  o.Num("problem_count", r.problem_count).Raw("problems", JsonStrings(r.problems));
  o.Num("warning_count", r.warning_count).Raw("warnings", JsonStrings(r.warnings));
  return o;
}

// --- compact -----------------------------------------------------------------

// An exclusive flock on DIR/LOCK: the lock ChunkStore::Open takes (and
// voxdbd with it), held here across steps that open and close the store.
class DirLock {
 public:
  static absl::StatusOr<DirLock> Take(const std::string& dir) {
    const std::string path = dir + "/LOCK";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
      return DatabaseError(engine::LmdbStatus(errno, "open " + path));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      return OpenError(BusyError("locked"), dir);
    }
    return DirLock(fd);
  }
  DirLock(DirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  DirLock& operator=(DirLock&&) = delete;
  ~DirLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
  }

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  int fd_;
};

absl::Status Errno(int err, std::string_view what) {
  return DatabaseError(engine::LmdbStatus(err, what));
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno(errno, "open " + path);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : Errno(err, "fsync " + path);
}

absl::StatusOr<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Errno(errno, "stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

// Gives `path` the mode and owner of `like`: a copy made by compact, run
// as root say, must stay readable by voxdbd's user. A different group that
// cannot be set is left as it is; a different owner is an error.
absl::Status MatchFile(const std::string& path, const struct stat& like) {
  if (::chmod(path.c_str(), like.st_mode & 07777) != 0) return Errno(errno, "chmod " + path);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Errno(errno, "stat " + path);
  if ((st.st_uid != like.st_uid || st.st_gid != like.st_gid) &&
      ::chown(path.c_str(), like.st_uid, like.st_gid) != 0 && st.st_uid != like.st_uid) {
    return Errno(errno, absl::StrFormat("give %s the owner of data.mdb", path));
  }
  return absl::OkStatus();
}

// LOCK and lock.mdb, which opening the store creates when they are missing,
// for the owner of data.mdb (best effort: only root may, and needs to).
void GiveLockFilesToTheOwner(const std::string& dir) {
  struct stat data;
  if (::stat((dir + "/data.mdb").c_str(), &data) != 0) return;
  for (const char* name : {"/LOCK", "/lock.mdb"}) {
    const std::string path = dir + name;
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && (st.st_uid != data.st_uid || st.st_gid != data.st_gid)) {
      (void)!::chown(path.c_str(), data.st_uid, data.st_gid);
    }
  }
}

std::string HumanBytes(uint64_t n) {
  if (n < 1024) return absl::StrFormat("%u B", n);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(n) / 1024;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
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
absl::Status RemoveTempDir(const std::string& tmp) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(tmp, ec)) return absl::OkStatus();
  if (!fs::is_directory(tmp, ec)) {
    return DatabaseError(absl::FailedPreconditionError(absl::StrFormat(
        "%s is in the way of compact's temporary directory and is not a directory: remove it",
        tmp)));
  }
  // increment(ec): a range-for's ++ would throw on a read error.
  for (auto it = fs::directory_iterator(tmp, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name != "data.mdb" && name != "lock.mdb" && name != "LOCK") {
      return DatabaseError(absl::FailedPreconditionError(
          absl::StrFormat("%s holds %s, which voxdb compact did not put there: remove the "
                          "directory or move it away",
                          tmp, name)));
    }
  }
  if (ec) return Errno(ec.value(), "list " + tmp);
  for (const char* name : {"data.mdb", "lock.mdb", "LOCK"}) {
    const std::string path = tmp + "/" + name;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Errno(errno, "remove " + path);
  }
  if (::rmdir(tmp.c_str()) != 0) return Errno(errno, "remove " + tmp);
  return absl::OkStatus();
}

using TableCounts = std::array<uint64_t, engine::kTableCount>;

absl::StatusOr<TableCounts> CountTables(const ChunkStore& store) {
  VOXDB_ASSIGN_OR_RETURN(auto snap, store.BeginRead());
  TableCounts counts{};
  for (int t = 0; t < engine::kTableCount; ++t) {
    VOXDB_ASSIGN_OR_RETURN(counts[t], snap->Count(static_cast<Table>(t)));
  }
  return counts;
}

struct CompactResult {
  uint64_t bytes_before = 0, bytes_after = 0;
  uint64_t chunks = 0;
  std::string temp_dir;
};

// Compacts DIR/data.mdb, holding DIR/LOCK throughout so that no voxdbd can
// open the database meanwhile.
//
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
absl::StatusOr<CompactResult> CompactDir(const std::string& dir) {
  VOXDB_RETURN_IF_ERROR(CheckIsDatabase(dir));
  VOXDB_ASSIGN_OR_RETURN(DirLock lock, DirLock::Take(dir));
  const std::string data = dir + "/data.mdb";
  const std::string old = dir + "/data.mdb.compact-old";
  CompactResult result;
  result.temp_dir = CompactTempDir(dir);
  const std::string& tmp = result.temp_dir;
  const std::string fresh = tmp + "/data.mdb";

  // Leftovers of an interrupted run (see above).
  VOXDB_RETURN_IF_ERROR(RemoveTempDir(tmp));
  if (::unlink(old.c_str()) != 0 && errno != ENOENT) return Errno(errno, "remove " + old);
  struct stat before;
  if (::stat(data.c_str(), &before) != 0) return Errno(errno, "stat " + data);
  result.bytes_before = static_cast<uint64_t>(before.st_size);

  TableCounts counts;
  engine::WorldFrame frame = engine::WorldFrame::Earth();
  {
    // exclusive = false: the flock is already ours (DirLock).
    auto store = ChunkStore::Open(dir, ToolStoreOptions(/*exclusive=*/false));
    if (!store.ok()) return OpenError(store.status(), dir);
    frame = (*store)->frame();
    auto c = CountTables(**store);
    if (!c.ok()) return DatabaseError(c.status());
    counts = *c;
    if (::mkdir(tmp.c_str(), 0750) != 0) return Errno(errno, "create " + tmp);
    // The copy fsyncs data.mdb; its directory entry below.
    const absl::Status s = (*store)->CopyTo(tmp, /*compact=*/true);
    if (!s.ok()) {
      (void)RemoveTempDir(tmp);
      return DatabaseError(s, absl::StrFormat("compacting copy into %s: ", tmp));
    }
  }  // the environment of DIR is closed from here on
  absl::Status s = MatchFile(fresh, before);
  if (s.ok()) s = FsyncPath(tmp, /*directory=*/true);
  if (s.ok()) {
    // The copy must open as a voxdb database with every entry.
    auto copy = ChunkStore::Open(tmp, ToolStoreOptions(/*exclusive=*/false));
    if (!copy.ok()) {
      s = DatabaseError(copy.status(), "the compacted copy does not open: ");
    } else if (!((*copy)->frame() == frame)) {
      s = DatabaseError(CorruptError("the compacted copy has another world frame"));
    } else {
      auto c = CountTables(**copy);
      if (!c.ok()) {
        s = DatabaseError(c.status(), "the compacted copy cannot be read: ");
      } else {
        for (int t = 0; t < engine::kTableCount && s.ok(); ++t) {
          if ((*c)[t] != counts[t]) {
            s = DatabaseError(CorruptError(absl::StrFormat(
                "the compacted copy has %u entries in table %s, the database %u: nothing changed",
                (*c)[t], TableName(static_cast<Table>(t)), counts[t])));
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
    s = Errno(errno, absl::StrFormat("rename %s to %s", fresh, data));
    if (kept_old) ::unlink(old.c_str());
    (void)RemoveTempDir(tmp);
    return s;
  }
  VOXDB_RETURN_IF_ERROR(FsyncPath(dir, /*directory=*/true));
  VOXDB_RETURN_IF_ERROR(FsyncPath(tmp, /*directory=*/true));
  if (kept_old) {
    if (::unlink(old.c_str()) != 0) return Errno(errno, "remove " + old);
    VOXDB_RETURN_IF_ERROR(FsyncPath(dir, /*directory=*/true));
  }
  VOXDB_RETURN_IF_ERROR(RemoveTempDir(tmp));
  GiveLockFilesToTheOwner(dir);
  VOXDB_ASSIGN_OR_RETURN(result.bytes_after, FileSize(data));
  return result;
}

}  // namespace

void VerifyReport::Problem(std::string text) {
  ++problem_count;
  if (problems.size() < kMaxKeptProblems) problems.push_back(std::move(text));
}

void VerifyReport::Warning(std::string text) {
  ++warning_count;
  if (warnings.size() < kMaxKeptProblems) warnings.push_back(std::move(text));
}

bool TakesDataOption(std::string_view command) {
  return command == "verify" || command == "compact" || command == "recover";
}

absl::StatusOr<VerifyReport> VerifyStore(const ChunkStore& store) {
  VerifyReport report;
  VOXDB_ASSIGN_OR_RETURN(auto snap, store.BeginRead());
  Verifier(*snap, store.frame(), &report).Run();
  return report;
}

absl::Status Verify(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(std::string dir, DataDir(cl));
  VOXDB_RETURN_IF_ERROR(CheckIsDatabase(dir));
  // Exclusive: voxdbd cannot start while this runs, and this refuses to run
  // next to it.
  auto store = ChunkStore::Open(dir, ToolStoreOptions(/*exclusive=*/true));
  if (!store.ok()) return OpenError(store.status(), dir);
  auto report = VerifyStore(**store);
  GiveLockFilesToTheOwner(dir);
  if (!report.ok()) return DatabaseError(report.status(), "verify: ");
  if (cl.json) {
    PrintJson(VerifyJson(dir, *report));
  } else {
    const std::string text = VerifyText(dir, *report);
    std::fwrite(text.data(), 1, text.size(), stdout);
  }
  if (report->ok()) return absl::OkStatus();
  absl::Status damaged = DatabaseError(CorruptError(
      absl::StrFormat("verify found %s in %s", Count(report->problem_count, "problem"), dir)));
  return cl.json ? WithJsonPrinted(std::move(damaged)) : damaged;
}

absl::Status Compact(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(std::string dir, DataDir(cl));
  VOXDB_ASSIGN_OR_RETURN(CompactResult r, CompactDir(dir));
  JsonObject o;
  o.Str("command", "compact")
      .Str("data", dir)
      .Num("bytes_before", r.bytes_before)
      .Num("bytes_after", r.bytes_after)
      .Num("chunks", r.chunks);
  if (cl.json) {
    PrintJson(o);
  } else {
    const double saved =
        r.bytes_before == 0
            ? 0
            : 100.0 * (static_cast<double>(r.bytes_before) - static_cast<double>(r.bytes_after)) /
                  static_cast<double>(r.bytes_before);
    std::printf("compacted %s: data.mdb %s -> %s (%.1f%% smaller), %s\n", dir.c_str(),
                HumanBytes(r.bytes_before).c_str(), HumanBytes(r.bytes_after).c_str(), saved,
                Count(r.chunks, "chunk").c_str());
  }
  return absl::OkStatus();
}

}  // namespace voxdb::cli
