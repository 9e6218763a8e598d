// The offline commands of the voxdb CLI: they open the database directory
// (--data DIR) themselves instead of talking to voxdbd, and refuse to run
// while any process (voxdbd) holds the directory (ChunkStore's locks on
// DIR/LOCK and on data.mdb).
//
//   voxdb verify --data DIR   checks every record and the index; exit 1 on
//                             any problem
//   voxdb compact --data DIR  rewrites data.mdb without its free pages
//   (both, on a node split or moved before, for each partition in turn)
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

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/args.h"
#include "cli/json.h"
#include "engine/node_manifest.h"

namespace voxdb::cli {

// Whether `command` takes --data DIR (the offline commands).
bool TakesDataOption(std::string_view command);

// One database an offline command works on.
struct Target {
  std::optional<engine::PartitionEntry> partition;  // none: DATA itself
  std::string dir;                                  // its environment's directory
};

// The databases under DATA: DATA itself when it was never split or moved
// (no node.manifest), else each partition the manifest lists, in range
// order. The manifest's errors otherwise.
absl::StatusOr<std::vector<Target>> TargetsOf(const std::string& data);

// "partition 2 [4096, 8192) in DIR". REQUIRES: t.partition.
std::string PartitionLine(const Target& t);

// The JSON objects of the partitions' results, one per target, as one
// array of {"partition", "begin", "end", "result"}.
std::string JsonArray(const std::vector<Target>& targets, std::vector<JsonObject> objects);

// One line of `voxdb partition list` (one JSON object with --json), offline
// or from the server's PARTITIONS.
void PrintPartition(const CommandLine& cl, uint64_t id, uint64_t begin, uint64_t end,
                    const std::string& dir, uint64_t chunks, uint64_t used_bytes, uint64_t epoch);

// The commands (CommandSpec::run).
absl::Status Verify(const CommandLine& cl);
absl::Status Compact(const CommandLine& cl);
// voxdb partition list|split ID AT|move ID DIR --data DIR (engine/node.h).
absl::Status Partition(const CommandLine& cl);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_OFFLINE_H_
