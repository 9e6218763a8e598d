// voxdb recover: the operator's way out of a database that voxdbd refuses
// to open because a journal record is damaged ("journal record 15: journal
// record checksum mismatch").
//
//   voxdb recover --data DIR                     reports what it would drop
//   voxdb recover --data DIR --truncate-journal  drops it, keeping a copy
//
// Offline, like verify and compact: it opens DIR itself and is refused
// while voxdbd runs on it.
//
// Thread-safety: run from main's thread only.
#ifndef VOXDB_CLI_RECOVER_H_
#define VOXDB_CLI_RECOVER_H_

#include "absl/status/status.h"
#include "cli/args.h"

namespace voxdb::cli {

// The command (CommandSpec::run). Exit 0 when the journal has no damaged
// record, or --truncate-journal dropped it; 1 when it reports damage it
// did not drop, or fails.
absl::Status Recover(const CommandLine& cl);

// The name of the copy of the records --truncate-journal drops, inside DIR:
// "journal-dropped-FIRST-LAST" (their sequence numbers).
std::string DroppedJournalFile(uint64_t first_seq, uint64_t last_seq);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_RECOVER_H_
