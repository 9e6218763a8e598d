// The subcommands of the voxdb CLI. Each one checks its arguments and
// opens its files first (usage errors), then connects, sends HELLO with the
// token, does its work and prints its result (human text, or one JSON
// object with --json).
//
// Thread-safety: run from main's thread only.
#ifndef VOXDB_CLI_COMMANDS_H_
#define VOXDB_CLI_COMMANDS_H_

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "cli/args.h"
#include "protocol/messages.h"

namespace voxdb::cli {

// CommandSpec::arg_count of a command that checks its arguments itself.
inline constexpr size_t kVariableArgs = static_cast<size_t>(-1);

struct CommandSpec {
  const char* name;      // "set-voxel"
  const char* synopsis;  // its arguments: "X Y Z MATERIAL"
  const char* summary;   // one line for `voxdb --help`
  const char* help;      // the paragraphs of `voxdb NAME --help`
  size_t arg_count;      // positional arguments, exactly; or kVariableArgs
  bool takes_expect_version;
  // --limit, --all, --cursor, --alt-min, --alt-max (watch takes the last two
  // without this)
  bool takes_query_options;
  absl::Status (*run)(const CommandLine& cl);
};

// Every command, in the order of `voxdb --help`.
std::span<const CommandSpec> Commands();
// nullptr when there is no such command.
const CommandSpec* FindCommand(std::string_view name);
// spec.help and the meaning of its arguments, for `voxdb NAME --help`.
std::string CommandHelpDetails(const CommandSpec& spec);

// Splits `box` into boxes of at most `max_voxels` voxels each that touch at
// most `max_chunks` chunks each (the server refuses more with TOO_LARGE):
// blocks aligned to chunk borders, as many chunks a block as both limits
// allow; a block of one chunk still over max_voxels is cut into z slabs,
// rows or runs of a row. Blocks come in z, y, x order of their corners.
// REQUIRES: a non-empty box, max_voxels >= 1, max_chunks >= 1.
std::vector<protocol::Box> SplitBox(const protocol::Box& box, uint64_t max_voxels,
                                    uint64_t max_chunks = 1024);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_COMMANDS_H_
