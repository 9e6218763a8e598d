#include "cli/recover.h"

#include <cstdio>
#include <string>

#include "absl/strings/str_format.h"
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

absl::Status Recover(const CommandLine& cl) {
  if (!cl.data.has_value() || cl.data->empty()) {
    return UsageError("needs --data DIR, the database directory (with voxdbd stopped)");
  }
  std::string dir = *cl.data;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
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
  if (cl.json) {
    JsonObject o;
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
    PrintJson(o);
  } else if (!check.bad_seq) {
    std::printf("journal of %s: %llu records, none damaged: nothing to drop\n", dir.c_str(),
                static_cast<unsigned long long>(check.records));
  } else {
    std::printf(
        "journal of %s: %llu records (seq %llu..%llu)\n"
        "damaged: record %llu: %s\n"
        "%s %llu records (seq %llu..%llu, %llu bytes): the damaged one and every later one;\n"
        "the %llu records before it are kept and replay when voxdbd opens the database\n",
        dir.c_str(), static_cast<unsigned long long>(check.records),
        static_cast<unsigned long long>(check.first_seq),
        static_cast<unsigned long long>(check.last_seq),
        static_cast<unsigned long long>(*check.bad_seq), check.bad_error.c_str(),
        truncate ? "dropped" : "would drop", static_cast<unsigned long long>(check.drop_records),
        static_cast<unsigned long long>(*check.bad_seq),
        static_cast<unsigned long long>(check.drop_last_seq),
        static_cast<unsigned long long>(check.drop_bytes),
        static_cast<unsigned long long>(check.kept_records));
    if (truncate) {
      std::printf("a copy of the dropped records is in %s (engine/FORMAT.md)\n", copy.c_str());
    } else {
      std::printf(
          "to drop them (a copy is kept in %s/%s): voxdb recover --data %s "
          "--truncate-journal\n",
          dir.c_str(), DroppedJournalFile(*check.bad_seq, check.drop_last_seq).c_str(),
          dir.c_str());
    }
  }
  if (!check.bad_seq || truncate) return absl::OkStatus();
  absl::Status damaged = ToolError(CorruptError(absl::StrFormat(
      "journal record %u of %s is damaged; nothing was dropped (--truncate-journal drops it)",
      *check.bad_seq, dir)));
  return cl.json ? WithJsonPrinted(std::move(damaged)) : damaged;
}

}  // namespace voxdb::cli
