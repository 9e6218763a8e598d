// The offline commands of the voxdb CLI: they open the database directory
// (--data DIR) themselves instead of talking to voxdbd, and refuse to run
// while any process (voxdbd) holds the directory (ChunkStore's locks on
// DIR/LOCK and on data.mdb).
//
//   voxdb verify --data DIR   checks every record and the index; exit 1 on
//                             any problem
//   voxdb compact --data DIR  rewrites data.mdb without its free pages
//   voxdb partition list|split|move --data DIR
//                             lists, splits or moves the node's partitions
//
// The checks and the compaction are the engine's (engine/verify.h with the
// index's hook, index/s2_index_verify.h; engine/compact.h): this file
// presents them, as text or JSON, and maps their errors to exit codes.
//
// Thread-safety: run from main's thread only.
#ifndef VOXDB_CLI_OFFLINE_H_
#define VOXDB_CLI_OFFLINE_H_

#include <string_view>

#include "absl/status/status.h"
#include "cli/args.h"

namespace voxdb::cli {

// Whether `command` takes --data DIR (the offline commands).
bool TakesDataOption(std::string_view command);

// The commands (CommandSpec::run).
absl::Status Verify(const CommandLine& cl);
absl::Status Compact(const CommandLine& cl);
// voxdb partition list|split ID AT|move ID DIR --data DIR (engine/node.h).
absl::Status Partition(const CommandLine& cl);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_OFFLINE_H_
