#include "cli/recover.h"

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "cli/offline.h"
#include "cli/output.h"
#include "engine/chunk_store.h"
#include "engine/journal_check.h"
#include "engine/status.h"
#include "protocol/client.h"

namespace voxdb::cli {
namespace {

absl::Status ToolError(const absl::Status& status, std::string_view prefix = "") {
  return protocol::ServerError(protocol::ToWireStatus(status),
                               std::string(prefix) + std::string(status.message()));
}

}  // namespace

std::string DroppedJournalFile(uint64_t first_seq, uint64_t last_seq) {
  return absl::StrFormat("journal-dropped-%u-%u", first_seq, last_seq);
}

namespace {

// Checks (and with --truncate-journal repairs) the journal of the database
// in `dir`: its JSON object in *json, its text in *text. The error of a
// damage not dropped comes back as `*damaged`; other errors as the status.
absl::Status RecoverOne(const CommandLine& cl, const std::string& dir, JsonObject* json,
                        std::string* text, absl::Status* damaged) {
  engine::StoreOptions options;
  options.create_if_missing = false;
  options.exclusive = true;  // refused while voxdbd runs; keeps it out meanwhile
  auto store = engine::ChunkStore::Open(dir, options);
  if (!store.ok()) {
    return ToolError(store.status(), absl::StrFormat("cannot open database %s: ", dir));
  }
  engine::JournalCheck check;
  {
    auto snap = (*store)->BeginRead();
    if (!snap.ok()) return ToolError(snap.status());
    auto c = engine::CheckJournal(**snap);
    if (!c.ok()) return ToolError(c.status(), "cannot read the journal: ");
    check = *c;
  }
  const bool truncate = cl.truncate_journal && check.bad_seq.has_value();
  std::string copy;
  if (truncate) {
    copy = dir + "/" + DroppedJournalFile(*check.bad_seq, check.drop_last_seq);
    if (absl::Status s = engine::TruncateJournal(**store, check, copy); !s.ok()) {
      return ToolError(s, "cannot truncate the journal: ");
    }
  }
  JsonObject& o = *json;
  o.Str("command", "recover")
      .Str("data", dir)
      .Num("journal_records", check.records)
      .Num("first_seq", check.first_seq)
      .Num("last_seq", check.last_seq)
      .Bool("damaged", check.bad_seq.has_value());
  if (check.bad_seq) {
    o.Num("bad_seq", *check.bad_seq)
        .Str("bad_error", check.bad_error)
        .Num("kept_records", check.kept_records)
        .Num("drop_records", check.drop_records)
        .Num("drop_bytes", check.drop_bytes)
        .Num("drop_last_seq", check.drop_last_seq)
        .Bool("truncated", truncate);
    if (truncate) o.Str("copy", copy);
  }
  if (!check.bad_seq) {
    absl::StrAppendFormat(text, "journal of %s: %u records, none damaged: nothing to drop\n", dir,
                          check.records);
  } else {
    absl::StrAppendFormat(
        text,
        "journal of %s: %u records (seq %u..%u)\n"
        "damaged: record %u: %s\n"
        "%s %u records (seq %u..%u, %u bytes): the damaged one and every later one;\n"
        "the %u records before it are kept and replay when voxdbd opens the database\n",
        dir, check.records, check.first_seq, check.last_seq, *check.bad_seq, check.bad_error,
        truncate ? "dropped" : "would drop", check.drop_records, *check.bad_seq,
        check.drop_last_seq, check.drop_bytes, check.kept_records);
    if (truncate) {
      absl::StrAppendFormat(text, "a copy of the dropped records is in %s (engine/FORMAT.md)\n",
                            copy);
    } else {
      absl::StrAppendFormat(text,
                            "to drop them (a copy is kept in %s/%s): voxdb recover --data %s "
                            "--truncate-journal\n",
                            dir, DroppedJournalFile(*check.bad_seq, check.drop_last_seq), *cl.data);
    }
  }
  if (check.bad_seq && !truncate) {
    *damaged = ToolError(CorruptError(absl::StrFormat(
        "journal record %u of %s is damaged; nothing was dropped (--truncate-journal drops it)",
        *check.bad_seq, dir)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Recover(const CommandLine& cl) {
  if (!cl.data.has_value() || cl.data->empty()) {
    return UsageError("needs --data DIR, the database directory (with voxdbd stopped)");
  }
  std::string dir = *cl.data;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  VOXDB_ASSIGN_OR_RETURN(const std::vector<Target> targets, TargetsOf(dir));
  // On a node split or moved before, each partition's journal in turn.
  absl::Status damaged;
  std::vector<JsonObject> objects;
  for (const Target& t : targets) {
    JsonObject o;
    std::string text;
    absl::Status one;
    VOXDB_RETURN_IF_ERROR(RecoverOne(cl, t.dir, &o, &text, &one));
    if (damaged.ok()) damaged = one;
    if (cl.json) {
      objects.push_back(std::move(o));
    } else {
      if (t.partition) text = PartitionLine(t) + ":\n" + text;
      std::fwrite(text.data(), 1, text.size(), stdout);
    }
  }
  if (cl.json) {
    if (!targets[0].partition.has_value()) {
      PrintJson(objects[0]);
    } else {
      JsonObject o;
      o.Str("command", "recover")
          .Str("data", dir)
          .Bool("damaged", !damaged.ok())
          .Raw("partitions", JsonArray(targets, std::move(objects)));
      PrintJson(o);
    }
  }
  if (damaged.ok()) return absl::OkStatus();
  return cl.json ? WithJsonPrinted(std::move(damaged)) : damaged;
}

}  // namespace voxdb::cli
