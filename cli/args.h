// The command line of the voxdb CLI: options, numbers, addresses, chunks
// and boxes, parsed strictly.
//
// Every error here is a usage error (UsageError(): INVALID tagged so that
// IsUsageError() is true; the CLI exits 2) whose message names the argument
// and what is wrong with it.
//
// Thread-safety: pure functions.
#ifndef VOXDB_CLI_ARGS_H_
#define VOXDB_CLI_ARGS_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/morton.h"
#include "engine/voxel_box.h"
#include "protocol/messages.h"

namespace voxdb::cli {

inline constexpr char kDefaultAddress[] = "127.0.0.1:7390";

absl::Status UsageError(std::string_view message);
bool IsUsageError(const absl::Status& status);

// A decimal uint64: digits only (no sign, space, prefix, fraction), at most
// 2^64 - 1. `what` names the argument in the error ("X", "--timeout").
absl::StatusOr<uint64_t> ParseU64(std::string_view text, std::string_view what);
// A material id, 0..255.
absl::StatusOr<uint8_t> ParseMaterial(std::string_view text);
// A finite decimal number ("45.8", "-6.9", "1e3"): the whole text, no
// leading "+" or space, no hex, inf or nan.
absl::StatusOr<double> ParseDouble(std::string_view text, std::string_view what);
// Bytes as hex digits, two per byte, either case; not empty.
absl::StatusOr<std::vector<uint8_t>> ParseHex(std::string_view text, std::string_view what);
// A duration: a decimal number of seconds ("30"), or of a unit, "500ms",
// "30s", "5m", "2h", at most `max`.
absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text,
                                                        std::string_view what,
                                                        std::chrono::milliseconds max);

struct Address {
  std::string host;
  uint16_t port = 0;
};
// HOST:PORT or [IPV6]:PORT, port 1..65535. `source` names where the text
// came from ("--address", "VOXDB_ADDRESS").
absl::StatusOr<Address> ParseAddress(std::string_view text, std::string_view source);

// A chunk: its Morton code in decimal ("2199023255552") or its chunk
// coordinates "CX,CY,CZ" (each at most engine::kMaxChunkAxis).
absl::StatusOr<engine::ChunkKey> ParseChunk(std::string_view text);

// X0 Y0 Z0 X1 Y1 Z1 (exactly six strings): a box with hi exclusive, not
// empty on any axis, whose volume fits 64 bits.
absl::StatusOr<protocol::Box> ParseBox(std::span<const std::string> six);
// (hi - lo) per axis multiplied. REQUIRES: a box ParseBox accepted.
uint64_t BoxVolume(const protocol::Box& box);
// The same box as the engine's geometry type (engine/voxel_box.h), and back.
inline engine::VoxelBox ToVoxelBox(const protocol::Box& b) {
  return {{b.lo.x, b.lo.y, b.lo.z}, {b.hi.x, b.hi.y, b.hi.z}};
}
inline protocol::Box ToWireBox(const engine::VoxelBox& b) {
  return {{b.lo.x, b.lo.y, b.lo.z}, {b.hi.x, b.hi.y, b.hi.z}};
}

// The command line; options may come before or after the command.
struct CommandLine {
  std::string address = kDefaultAddress;  // --address, else $VOXDB_ADDRESS
  std::string address_source = "the default address";
  std::string token;                       // --token, else $VOXDB_TOKEN; empty: none
  bool json = false;                       // --json
  bool help = false;                       // --help, -h
  bool version = false;                    // --version
  std::chrono::milliseconds timeout{0};    // --timeout; 0: none
  std::optional<uint64_t> expect_version;  // --expect-version (put-chunk only)
  // --data DIR: the database directory of the offline commands (verify,
  // compact), which open it themselves instead of connecting.
  std::optional<std::string> data;
  bool truncate_journal = false;  // --truncate-journal (recover only)
  // The options of `voxdb export` / `voxdb import` (cli/zarr.h).
  std::optional<std::string> out;         // --out DIR
  std::optional<protocol::Box> box;       // --box X0 Y0 Z0 X1 Y1 Z1
  std::optional<std::string> compressor;  // --compressor zstd|blosc
  // The options of `voxdb query` (checked there: both or neither of
  // --alt-min and --alt-max, --limit's range).
  std::optional<double> alt_min, alt_max;      // --alt-min M, --alt-max M (metres)
  std::optional<uint64_t> limit;               // --limit N: chunks per page
  bool all = false;                            // --all: every page
  std::optional<std::vector<uint8_t>> cursor;  // --cursor HEX
  // --lod L: the LOD level of get-chunk and query (0: the chunks
  // themselves; 1..16: the pyramid's levels).
  std::optional<uint64_t> lod;
  // The options of `voxdb watch` (checked there: --count's range).
  std::optional<uint64_t> from_seq;             // --from SEQ: resume after SEQ
  // --from BEGIN-END:SEQ,...: resume per range of chunk codes (a server of
  // several partitions), as watch prints it.
  std::optional<std::vector<protocol::RangeSeq>> from_ranges;
  std::optional<protocol::EventDetail> detail;  // --detail none|voxels|records
  std::optional<uint64_t> count;                // --count N: stop after N events
  // The first option given of each group ("--limit"), or nullptr when none
  // is: the altitude band (query, watch), query's pages, watch's own.
  const char* FirstBandOption() const;
  const char* FirstPageOption() const;
  const char* FirstWatchOption() const;
  std::string command;            // empty: none given
  std::vector<std::string> args;  // the command's arguments
};

// Parses argv[1..argc). env_address and env_token are $VOXDB_ADDRESS and
// $VOXDB_TOKEN (nullptr: unset); options win over them. "--" ends the
// options; an argument that looks like a negative number ("-5") is taken as
// an argument, so that the command reports it. The address is not parsed
// here (see ParseAddress) so that --help works whatever it is.
absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv,
                                             const char* env_address, const char* env_token);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_ARGS_H_
