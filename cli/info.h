// `voxdb info`: what the server says about itself, in sections like Redis
// INFO, built from the HELLO reply and the STATS text.
//
//   # server    address, server_version, protocol_version, role (HELLO), uptime
//   # storage   the world frame (HELLO), the LMDB map and store, fills
//   # cache     the cache, dirty chunks, the flusher, back-pressure
//   # journal   journal records and commits, sequence numbers, rollbacks
//   # index     the S2 index
//   # lod       the LOD pyramid
//   # clients   the request limits (HELLO), connections, requests, bytes
//   # push      subscriptions, the change feed, streams
//   # partitions one line per partition (PARTITIONS): id, range of chunk
//               codes, directory, chunks, chunk bytes, last seq, epoch;
//               left out against a server older than PARTITIONS
//   # other     STATS names this CLI does not know (a newer server's)
//
// A STATS name's section is its row's in protocol/stats.h, the table STATS
// and /metrics come from too. Every section but `other` is always printed,
// empty or not, so that scripts can rely on the layout.
//
// Thread-safety: pure functions.
#ifndef VOXDB_CLI_INFO_H_
#define VOXDB_CLI_INFO_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cli/output.h"
#include "engine/status.h"
#include "protocol/messages.h"

namespace voxdb::cli {

struct InfoSection {
  std::string name;                                         // "server"
  std::vector<std::pair<std::string, std::string>> fields;  // name, value
};

// The section of a STATS name (protocol/stats.h), "other" when unknown.
std::string_view InfoSectionOf(std::string_view stat_name);

// The sections, in the order above. `address` is the one connected to;
// `stats` the STATS text ("name value" lines; INVALID when malformed).
StatusOr<std::vector<InfoSection>> BuildInfo(std::string_view address,
                                             const protocol::HelloReply& hello,
                                             std::string_view stats);

// One partition's line: "0 range=[0,4096) dir=. chunks=12 bytes=49152
// last_seq=7 epoch=0" (figures the server could not read: "?").
std::string PartitionLine(const protocol::PartitionInfo& p);

// "# server\naddress 127.0.0.1:7390\n...".
// With `partitions`, a "# partitions" section last.
std::string InfoText(const std::vector<InfoSection>& sections,
                     const std::vector<protocol::PartitionInfo>* partitions = nullptr);
// {"command":"info","server":{...},"storage":{...},...}: numbers stay numbers.
// With `partitions`, "partitions": [{"id":0,"begin":0,"end":..,"dir":".",
// "chunks":..,"bytes":..,"used_bytes":..,"map_size_bytes":..,
// "max_map_size_bytes":..,"last_seq":..,"epoch":..}, ...] (the store's
// figures null when the server could not read them).
JsonObject InfoJson(const std::vector<InfoSection>& sections,
                    const std::vector<protocol::PartitionInfo>* partitions = nullptr);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_INFO_H_
