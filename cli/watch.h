// `voxdb watch`: subscribes to the changes in a region (SUBSCRIBE,
// protocol/PROTOCOL.md, "Subscriptions") and prints each pushed event as it
// arrives, one line each, flushed at once:
//
//   seq 42 chunk 1000000,400000,312500 key 2199023255552 changed, 3 voxels
//   seq 43 fill box X0 Y0 Z0 X1 Y1 Z1 material 6
//   seq 44 chunk 1000000,400000,312500 key 2199023255552 deleted
//
// or, with --json, one object per line:
//
//   {"seq":42,"kind":"chunk","key":2199023255552,"cx":1000000,"cy":400000,
//    "cz":312500,"present":true,"detail":"edits","edits":[{"x":..,"y":..,
//    "z":..,"material":7}]}
//   {"seq":43,"kind":"fill","lo":[X0,Y0,Z0],"hi":[X1,Y1,Z1],"material":6}
//
// Before the first event it says on stderr what it watches and after which
// sequence number ("watching box ... after seq 17"), the resume point of a
// later `voxdb watch ... --from 17`.
//
// Thread-safety: run from main's thread only; installs handlers for SIGINT
// and SIGTERM.
#ifndef VOXDB_CLI_WATCH_H_
#define VOXDB_CLI_WATCH_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "protocol/client.h"
#include "protocol/messages.h"

namespace voxdb::cli {

struct WatchOptions {
  protocol::SubscribeRequest request;         // the region, detail and resume point
  std::string region;                         // the region as given, "box 0 0 0 128 128 128"
  bool json = false;                          // JSON lines instead of text
  std::optional<uint64_t> count;              // stop after this many events; nullopt: never
  std::chrono::milliseconds idle_timeout{0};  // stop after this long without one; 0: never
};

// Subscribes on `client` (which has said HELLO) and prints the events until
// options.count events were printed, options.idle_timeout passed without
// one, or SIGINT or SIGTERM came: then OK. Errors:
//   - the server's refusal of SUBSCRIBE (ServerError): RESYNC, with a
//     message that says to read the region again and watch without --from;
//     INVALID for a resume point past the newest change; ...
//   - UNAVAILABLE when the connection is lost (the server cut off a
//     subscriber that fell behind, or stopped), saying the sequence number
//     to resume from;
//   - INTERNAL for a push this client cannot read, or when stdout cannot be
//     written.
absl::Status Watch(protocol::Client& client, const WatchOptions& options);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_WATCH_H_
