// What the voxdb CLI prints: JSON objects (--json, built with cli/json.h),
// status names, and the exit code of an error.
//
// Exit codes: 0 success; 1 the server refused the request (or answered
// something this client cannot use), or a local failure (a file that cannot
// be written: INTERNAL); 2 a usage error (cli/args.h); 3 the server cannot
// be reached or the connection was lost or timed out (UNREACHABLE,
// engine/status.h).
//
// Thread-safety: value types and functions of one thread.
#ifndef VOXDB_CLI_OUTPUT_H_
#define VOXDB_CLI_OUTPUT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "cli/json.h"
#include "protocol/frame.h"

namespace voxdb::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitServerError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

// The exit code for `status` (see the file comment) and the status name
// printed with it: the server's wire status name; USAGE; UNREACHABLE; or,
// for an error of this client, the name of its nearest wire status.
int ExitCodeOf(const absl::Status& status);
std::string StatusNameOf(const absl::Status& status);

// Prints an error: "voxdb: NAME: message" on stderr (a usage error:
// "voxdb: message" and `usage_hint` on the next line); with `json` also
// {"command":...,"error":...,"status":...} on stdout, unless the status is
// marked WithJsonPrinted. Returns the exit code.
int ReportError(const absl::Status& status, std::string_view command, bool json,
                std::string_view usage_hint);

// `status`, marked for a command that has already printed its JSON object
// (e.g. `voxdb verify --json` reporting damage): ReportError then prints
// only the stderr line, so that stdout keeps exactly one object.
absl::Status WithJsonPrinted(absl::Status status);

// Prints `object` and a newline on stdout.
void PrintJson(const JsonObject& object);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_OUTPUT_H_
