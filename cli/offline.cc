#include "cli/offline.h"

#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/output.h"
#include "engine/compact.h"
#include "engine/format.h"
#include "engine/lod.h"
#include "engine/node.h"
#include "engine/node_manifest.h"
#include "engine/status.h"
#include "engine/verify.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"
#include "index/s2_index_verify.h"
#include "protocol/client.h"

namespace voxdb::cli {
namespace {

using engine::ChunkStore;
using engine::VerifyReport;

// Lines of problems (and of warnings) printed in human form.
constexpr size_t kPrintedProblems = 20;

// "CORRUPT: message".
std::string Describe(const absl::Status& status) {
  return absl::StrFormat("%s: %s", StatusNameOf(status), status.message());
}

// An error of the database itself (cannot open it, in use, ...): exit 1
// with its status name, as for a server's answer, and a message prefix.
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
  if (::stat((dir + "/" + engine::kDataFile).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
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

// --- compact ---------------------------------------------------------------

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

}  // namespace

absl::StatusOr<std::vector<Target>> TargetsOf(const std::string& data) {
  struct stat st;
  if (::stat((data + "/" + engine::kNodeManifestFile).c_str(), &st) != 0) {
    return std::vector<Target>{{std::nullopt, data}};
  }
  absl::StatusOr<engine::NodeManifest> m = engine::ReadNodeManifest(data);
  if (!m.ok()) return DatabaseError(m.status());
  std::vector<Target> targets;
  for (const engine::PartitionEntry& p : m->partitions) {
    targets.push_back({p, engine::PartitionDir(data, p)});
  }
  return targets;
}

std::string PartitionLine(const Target& t) {
  return absl::StrFormat("partition %u [%u, %u) in %s", t.partition->id, t.partition->range.begin,
                         t.partition->range.end, t.dir);
}

std::string JsonArray(const std::vector<Target>& targets, std::vector<JsonObject> objects) {
  std::vector<std::string> items;
  for (size_t i = 0; i < objects.size(); ++i) {
    JsonObject o;
    o.Num("partition", targets[i].partition->id)
        .Num("begin", targets[i].partition->range.begin)
        .Num("end", targets[i].partition->range.end)
        .Raw("result", objects[i].ToString());
    items.push_back(o.ToString());
  }
  return absl::StrCat("[", absl::StrJoin(items, ","), "]");
}

bool TakesDataOption(std::string_view command) {
  return command == "verify" || command == "compact" || command == "recover" ||
         command == "partition";
}

namespace {

// Verifies the database in `dir` (exclusively: voxdbd cannot start while
// this runs, and this refuses to run next to it).
StatusOr<VerifyReport> VerifyOne(const std::string& dir) {
  VOXDB_RETURN_IF_ERROR(CheckIsDatabase(dir));
  auto store = ChunkStore::Open(dir, ToolStoreOptions(/*exclusive=*/true));
  if (!store.ok()) return OpenError(store.status(), dir);
  index::S2IndexVerifyHook index_hook;
  engine::VerifyOptions options;
  options.hook = &index_hook;
  options.describe = Describe;
  options.quote = JsonQuote;
  auto report = engine::VerifyStore(**store, options);
  engine::GiveLockFilesToTheOwner(dir);
  if (!report.ok()) return DatabaseError(report.status(), "verify: ");
  return report;
}

}  // namespace

absl::Status Verify(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(std::string dir, DataDir(cl));
  VOXDB_ASSIGN_OR_RETURN(const std::vector<Target> targets, TargetsOf(dir));
  uint64_t problems = 0;
  if (!targets[0].partition.has_value()) {
    VOXDB_ASSIGN_OR_RETURN(const VerifyReport report, VerifyOne(dir));
    if (cl.json) {
      PrintJson(VerifyJson(dir, report));
    } else {
      const std::string text = VerifyText(dir, report);
      std::fwrite(text.data(), 1, text.size(), stdout);
    }
    problems = report.problem_count;
  } else {
    // A node of several partitions (or one moved or split before): each
    // partition's environment in turn, every one of them checked.
    std::vector<JsonObject> objects;
    for (const Target& t : targets) {
      VOXDB_ASSIGN_OR_RETURN(const VerifyReport report, VerifyOne(t.dir));
      problems += report.problem_count;
      if (cl.json) {
        objects.push_back(VerifyJson(t.dir, report));
      } else {
        const std::string text = PartitionLine(t) + ":\n" + VerifyText(t.dir, report);
        std::fwrite(text.data(), 1, text.size(), stdout);
      }
    }
    if (cl.json) {
      JsonObject o;
      o.Str("command", "verify")
          .Str("data", dir)
          .Bool("ok", problems == 0)
          .Raw("partitions", JsonArray(targets, std::move(objects)));
      PrintJson(o);
    } else {
      std::printf("%s: %s in %s\n", problems == 0 ? "ok" : "DAMAGED",
                  Count(problems, "problem").c_str(), Count(targets.size(), "partition").c_str());
    }
  }
  if (problems == 0) return absl::OkStatus();
  absl::Status damaged = DatabaseError(
      CorruptError(absl::StrFormat("verify found %s in %s", Count(problems, "problem"), dir)));
  return cl.json ? WithJsonPrinted(std::move(damaged)) : damaged;
}

absl::Status Compact(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(std::string dir, DataDir(cl));
  VOXDB_ASSIGN_OR_RETURN(const std::vector<Target> targets, TargetsOf(dir));
  std::vector<JsonObject> objects;
  for (const Target& t : targets) {
    VOXDB_RETURN_IF_ERROR(CheckIsDatabase(t.dir));
    auto compacted = engine::CompactDir(t.dir);
    if (!compacted.ok()) {
      // BUSY: another process holds the directory.
      return IsBusy(compacted.status()) ? OpenError(compacted.status(), t.dir)
                                        : DatabaseError(compacted.status());
    }
    const engine::CompactResult& r = *compacted;
    JsonObject o;
    o.Str("command", "compact")
        .Str("data", t.dir)
        .Num("bytes_before", r.bytes_before)
        .Num("bytes_after", r.bytes_after)
        .Num("chunks", r.chunks);
    if (cl.json) {
      objects.push_back(std::move(o));
      continue;
    }
    const double saved =
        r.bytes_before == 0
            ? 0
            : 100.0 * (static_cast<double>(r.bytes_before) - static_cast<double>(r.bytes_after)) /
                  static_cast<double>(r.bytes_before);
    std::printf("compacted %s: data.mdb %s -> %s (%.1f%% smaller), %s\n",
                t.partition ? PartitionLine(t).c_str() : t.dir.c_str(),
                HumanBytes(r.bytes_before).c_str(), HumanBytes(r.bytes_after).c_str(), saved,
                Count(r.chunks, "chunk").c_str());
  }
  if (cl.json) {
    if (!targets[0].partition.has_value()) {
      PrintJson(objects[0]);
    } else {
      JsonObject o;
      o.Str("command", "compact").Str("data", dir).Raw("partitions", JsonArray(targets, objects));
      PrintJson(o);
    }
  }
  return absl::OkStatus();
}

// --- partition -----------------------------------------------------------------

namespace {

StatusOr<uint64_t> ParseU64(const std::string& text, const char* what) {
  uint64_t v = 0;
  if (text.empty() || !absl::SimpleAtoi(text, &v)) {
    return UsageError(absl::StrFormat("%s '%s' is not a whole number", what, text));
  }
  return v;
}

void PrintReport(const CommandLine& cl, const char* verb, uint64_t id,
                 const engine::LayoutChangeReport& r) {
  if (cl.json) {
    JsonObject o;
    o.Str("command", "partition").Str("action", verb).Num("id", id);
    std::string ids;
    for (uint64_t n : r.new_ids) absl::StrAppend(&ids, ids.empty() ? "" : ",", n);
    o.Raw("new_ids", absl::StrCat("[", ids, "]"))
        .Num("chunks", r.chunks)
        .Num("bytes", r.bytes)
        .Num("caught_up_chunks", r.caught_up_chunks)
        .Double("copy_seconds", r.copy_seconds)
        .Double("pause_seconds", r.pause_seconds);
    PrintJson(o);
    return;
  }
  std::printf("%s partition %llu into %s: %s, %s copied in %.3f s, writes paused %.3f s\n", verb,
              static_cast<unsigned long long>(id), absl::StrJoin(r.new_ids, ", ").c_str(),
              Count(r.chunks, "chunk").c_str(), HumanBytes(r.bytes).c_str(), r.copy_seconds,
              r.pause_seconds);
  if (!r.cleanup.ok()) std::printf("note: %s\n", std::string(r.cleanup.message()).c_str());
}

}  // namespace

absl::Status Partition(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(std::string dir, DataDir(cl));
  const std::string action = cl.args.empty() ? "" : cl.args[0];
  const size_t want = action == "list" ? 1 : action == "split" || action == "move" ? 3 : 0;
  if (want == 0 || cl.args.size() != want) {
    return UsageError("partition takes list, split ID AT or move ID DIR");
  }
  struct stat st;
  if (::stat((dir + "/" + engine::kDataFile).c_str(), &st) != 0 &&
      ::stat((dir + "/" + engine::kNodeManifestFile).c_str(), &st) != 0) {
    return DatabaseError(absl::NotFoundError(absl::StrFormat(
        "no voxdb data directory at %s (neither data.mdb nor node.manifest there)", dir)));
  }
  // Opened as voxdbd opens it, so that what the partitions flush when they
  // close keeps the index (and the LOD marks) as voxdbd would.
  engine::NodeOptions options;
  options.database.store.frame = engine::WorldFrame::Earth();
  options.database.store.create_if_missing = false;
  index::S2Index s2(engine::WorldFrame::Earth());
  engine::LodObserver lod;
  options.database.observers = {&s2, &lod};
  options.on_removed = [](const std::string& path) {
    std::fprintf(stderr, "voxdb: removed %s, left by a split or move a crash interrupted\n",
                 path.c_str());
  };
  auto node = engine::Node::Open(dir, options);
  if (!node.ok()) return OpenError(node.status(), dir);
  if (action == "split" || action == "move") {
    VOXDB_ASSIGN_OR_RETURN(const uint64_t id, ParseU64(cl.args[1], "the partition id"));
    StatusOr<engine::LayoutChangeReport> r;
    if (action == "split") {
      VOXDB_ASSIGN_OR_RETURN(const uint64_t at, ParseU64(cl.args[2], "the chunk code AT"));
      r = (*node)->Split(id, at);
    } else {
      r = (*node)->Move(id, cl.args[2]);
    }
    if (!r.ok()) return DatabaseError(r.status(), absl::StrCat(action, ": "));
    PrintReport(cl, action == "split" ? "split" : "moved", id, *r);
    return absl::OkStatus();
  }
  // list
  const std::shared_ptr<const engine::Node::Layout> layout = (*node)->layout();
  for (const engine::Node::Part& p : layout->parts) {
    StatusOr<engine::StoreStats> s = p.db->store().Stats();
    const uint64_t chunks = s.ok() ? s->chunk_count : 0;
    const uint64_t bytes = s.ok() ? s->used_bytes : 0;
    PrintPartition(cl, p.spec.id, p.spec.range.begin, p.spec.range.end, p.spec.dir, chunks, bytes,
                   p.db->epoch());
  }
  return absl::OkStatus();
}

void PrintPartition(const CommandLine& cl, uint64_t id, uint64_t begin, uint64_t end,
                    const std::string& dir, uint64_t chunks, uint64_t used_bytes, uint64_t epoch) {
  if (cl.json) {
    JsonObject o;
    o.Num("id", id)
        .Num("begin", begin)
        .Num("end", end)
        .Str("dir", dir)
        .Num("chunks", chunks)
        .Num("used_bytes", used_bytes)
        .Num("epoch", epoch);
    PrintJson(o);
  } else {
    std::printf("%s\n",
                absl::StrFormat("partition %u [%u, %u) %s: %s, %s, epoch %u", id, begin, end, dir,
                                Count(chunks, "chunk"), HumanBytes(used_bytes), epoch)
                    .c_str());
  }
}

}  // namespace voxdb::cli
