// The values of protocol/stats.h's rows, read from the server, the database
// and its store: what STATS prints and /metrics exports (daemon/metrics.cc).
//
// Example:
//   const StatsReading r = ReadStats(server.stats(), *db);
//   std::string text = StatsText(r);  // "uptime_seconds 12\nfills 0\n..."
//
// Thread-safety: ReadStats from any thread (it reads counters and opens an
// LMDB read transaction); the rest are pure.
#ifndef VOXDB_DAEMON_STATS_TABLE_H_
#define VOXDB_DAEMON_STATS_TABLE_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/server.h"
#include "engine/database.h"
#include "engine/node.h"
#include "protocol/stats.h"

namespace voxdb::daemon {

// A count, or seconds with a fraction.
struct StatValue {
  uint64_t count = 0;
  double seconds = 0;
  bool is_seconds = false;

  double AsDouble() const { return is_seconds ? seconds : static_cast<double>(count); }
  // "12", or "0.25" for seconds (%g, as STATS always printed them).
  std::string Text() const;
};

// One value per row of protocol::kStats, by index; absent when it cannot be
// read now: the LMDB figures and index_columns while every reader slot is
// taken, lod_dirty without a LOD pyramid.
using StatsReading = std::array<std::optional<StatValue>, protocol::kStatCount>;

StatsReading ReadStats(const ServerStats& server, engine::Database& db);
// The same for a node: its one partition's, or the partitions' summed (an
// index column split over partitions counts once in each).
StatsReading ReadStats(const ServerStats& server, engine::Node& node);

// One partition of a node as it is now: what /metrics labels by partition
// and PARTITIONS lists.
struct PartitionFigures {
  uint64_t id = 0;
  engine::MortonRange range;
  // Its environment's directory: relative to the data directory ("." for
  // the root, "partitions/3"), or absolute when it lives outside it (moved).
  std::string dir;
  // Its store's figures; absent while every LMDB reader slot is taken.
  std::optional<engine::StoreStats> store;
  uint64_t last_seq = 0;  // the last sequence number its journal gave
  uint64_t epoch = 0;     // its current epoch (engine/database.h)
};

// The node's partitions, in range order.
std::vector<PartitionFigures> ReadPartitions(const engine::Node& node);

// The STATS reply: "name value\n" for each value present, in table order.
std::string StatsText(const StatsReading& reading);

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_STATS_TABLE_H_
