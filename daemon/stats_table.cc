#include "daemon/stats_table.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "index/s2_index.h"

namespace voxdb::daemon {
namespace {

using protocol::Stat;

StatValue Count(uint64_t v) { return StatValue{v, 0, false}; }

// Every source a row may read, gathered once per reading.
struct Sources {
  const ServerStats& server;
  engine::DatabaseStats db;
  StatusOr<engine::StoreStats> store;
  StatusOr<uint64_t> index_columns;
  uint64_t change_feed_records = 0, change_feed_floor = 0;
  uint64_t partitions = 1;
};

// The value of one row. A switch over every Stat: a row added to the table
// without a source here does not compile (-Wswitch, warnings are errors).
std::optional<StatValue> ValueOf(Stat id, const Sources& src) {
  const ServerStats& s = src.server;
  const engine::DatabaseStats& d = src.db;
  const engine::StoreStats* store = src.store.ok() ? &*src.store : nullptr;
  auto stored = [&](auto field) -> std::optional<StatValue> {  // a StoreStats member
    if (store == nullptr) return std::nullopt;
    return Count(static_cast<uint64_t>(store->*field));
  };
  switch (id) {
    case Stat::kUptime:
      return Count(s.uptime_seconds);
    case Stat::kFills:
      return Count(d.fills);
    case Stat::kPartitions:
      return Count(src.partitions);
    case Stat::kMapSize:
      return stored(&engine::StoreStats::map_size);
    case Stat::kMaxMapSize:
      return stored(&engine::StoreStats::max_map_size);
    case Stat::kUsedBytes:
      return stored(&engine::StoreStats::used_bytes);
    case Stat::kMapGrows:
      return stored(&engine::StoreStats::map_grows);
    case Stat::kChunksStored:
      return stored(&engine::StoreStats::chunk_count);
    case Stat::kChunkBytes:
      return stored(&engine::StoreStats::chunk_bytes);
    case Stat::kReadersInUse:
      return stored(&engine::StoreStats::readers_in_use);
    case Stat::kMaxReaders:
      return stored(&engine::StoreStats::max_readers);
    case Stat::kCacheHits:
      return Count(d.cache_hits);
    case Stat::kCacheMisses:
      return Count(d.cache_misses);
    case Stat::kCacheEvictions:
      return Count(d.cache_evictions);
    case Stat::kCacheBytes:
      return Count(d.cache_bytes);
    case Stat::kCacheChunks:
      return Count(d.cache_chunks);
    case Stat::kDirtyBytes:
      return Count(d.dirty_bytes);
    case Stat::kDirtyChunks:
      return Count(d.dirty_chunks);
    case Stat::kOldestDirtyAge:
      return StatValue{0, d.oldest_dirty_age_s, true};
    case Stat::kFlushes:
      return Count(d.flushes);
    case Stat::kFlushedChunks:
      return Count(d.flushed_chunks);
    case Stat::kFlushedBytes:
      return Count(d.flushed_bytes);
    case Stat::kWriteWaits:
      return Count(d.write_waits);
    case Stat::kBusyRejections:
      return Count(d.busy_rejections);
    case Stat::kJournalRecords:
      return Count(d.journal_records);
    case Stat::kJournalBytes:
      return Count(d.journal_bytes);
    case Stat::kJournalCommits:
      return Count(d.journal_commits);
    case Stat::kLastSeq:
      return Count(d.last_seq);
    case Stat::kCommittedSeq:
      return Count(d.committed_seq);
    case Stat::kDurableSeq:
      return Count(d.durable_seq);
    case Stat::kRollbacks:
      return Count(d.rollbacks);
    case Stat::kJournalWaits:
      return Count(d.journal_waits);
    case Stat::kReplayedRecords:
      return Count(d.replayed_records);
    case Stat::kIndexColumns:
      if (!src.index_columns.ok()) return std::nullopt;
      return Count(*src.index_columns);
    case Stat::kLodLevels:
      return Count(static_cast<uint64_t>(s.lod_levels));
    case Stat::kLodDirty:
      if (s.lod_levels == 0) return std::nullopt;
      return Count(s.lod_dirty);
    case Stat::kConnections:
      return Count(s.connections_open);
    case Stat::kConnectionsAccepted:
      return Count(s.connections_accepted);
    case Stat::kConnectionsRejected:
      return Count(s.connections_rejected);
    case Stat::kAuthFailures:
      return Count(s.auth_failures);
    case Stat::kPermissionDenied:
      return Count(s.permission_denied);
    case Stat::kIdleClosed:
      return Count(s.idle_closed);
    case Stat::kSlowClosed:
      return Count(s.slow_closed);
    case Stat::kProtocolErrors:
      return Count(s.protocol_errors);
    case Stat::kRequests:
      return Count(s.requests);
    case Stat::kDeferredWrites:
      return Count(s.deferred_writes);
    case Stat::kBytesIn:
      return Count(s.bytes_in);
    case Stat::kBytesOut:
      return Count(s.bytes_out);
    case Stat::kInFlight:
      return Count(s.in_flight);
    case Stat::kRequestBufferBytes:
      return Count(s.request_buffer_bytes);
    case Stat::kRequestBufferWaits:
      return Count(s.request_buffer_waits);
    case Stat::kSnapshotsOpen:
      return Count(s.snapshots_open);
    case Stat::kUnsentBytes:
      return Count(s.unsent_bytes);
    case Stat::kSubscribers:
      return Count(s.subscriptions.subscribers);
    case Stat::kSubscriptionEvents:
      return Count(s.subscriptions.events_pushed);
    case Stat::kSubscriptionFrames:
      return Count(s.subscriptions.frames_pushed);
    case Stat::kSubscribersCutOff:
      return Count(s.subscriptions.cut_off);
    case Stat::kSubscriptionLag:
      return Count(s.subscriptions.lag);
    case Stat::kChangeFeedRecords:
      return Count(src.change_feed_records);
    case Stat::kChangeFeedFloor:
      return Count(src.change_feed_floor);
    case Stat::kStreamsOpen:
      return Count(s.streams_open);
    case Stat::kStreamChunks:
      return Count(s.stream_chunks);
    case Stat::kStreamBytes:
      return Count(s.stream_bytes);
    case Stat::kStreamUnloads:
      return Count(s.stream_unloads);
  }
  return std::nullopt;
}

}  // namespace

std::string StatValue::Text() const {
  return is_seconds ? absl::StrFormat("%g", seconds) : absl::StrCat(count);
}

StatsReading ReadStats(const ServerStats& server, engine::Database& db) {
  Sources src{server, db.Stats(), db.store().Stats(), index::ColumnCount(db)};
  src.change_feed_records = db.changes().records();
  src.change_feed_floor = db.changes().resume_floor();
  StatsReading out;
  for (size_t i = 0; i < protocol::kStatCount; ++i) out[i] = ValueOf(protocol::kStats[i].id, src);
  return out;
}

StatsReading ReadStats(const ServerStats& server, engine::Node& node) {
  const std::shared_ptr<const engine::Node::Layout> layout = node.layout();
  if (layout->parts.size() == 1) return ReadStats(server, *layout->parts[0].db);
  // The partitions' figures summed (engine::Node::Stats; the store's and
  // the index's here), so that one page describes the node.
  engine::StoreStats store;
  uint64_t columns = 0;
  Status failed;
  Sources src{server, node.Stats(), store, 0};
  for (const engine::Node::Part& part : layout->parts) {
    StatusOr<engine::StoreStats> s = part.db->store().Stats();
    if (!s.ok()) {
      failed = s.status();
      continue;
    }
    store.map_size += s->map_size;
    store.max_map_size += s->max_map_size;
    store.used_bytes += s->used_bytes;
    store.chunk_count += s->chunk_count;
    store.chunk_bytes += s->chunk_bytes;
    store.max_readers += s->max_readers;
    store.readers_in_use += s->readers_in_use;
    store.stale_readers_cleared += s->stale_readers_cleared;
    store.map_grows += s->map_grows;
    StatusOr<uint64_t> c = index::ColumnCount(*part.db);
    if (c.ok()) columns += *c;
    if (!c.ok()) failed = c.status();
    src.change_feed_records += part.db->changes().records();
  }
  src.store = failed.ok() ? StatusOr<engine::StoreStats>(store) : failed;
  src.index_columns = failed.ok() ? StatusOr<uint64_t>(columns) : failed;
  src.partitions = layout->parts.size();
  StatsReading out;
  for (size_t i = 0; i < protocol::kStatCount; ++i) out[i] = ValueOf(protocol::kStats[i].id, src);
  return out;
}

std::vector<PartitionFigures> ReadPartitions(const engine::Node& node) {
  const std::shared_ptr<const engine::Node::Layout> layout = node.layout();
  std::vector<PartitionFigures> out;
  out.reserve(layout->parts.size());
  for (const engine::Node::Part& part : layout->parts) {
    PartitionFigures f;
    f.id = part.spec.id;
    f.range = part.spec.range;
    f.dir = part.spec.dir;
    if (!node.data_dir().empty()) {
      const std::filesystem::path rel =
          std::filesystem::path(part.spec.dir)
              .lexically_normal()
              .lexically_relative(std::filesystem::path(node.data_dir()).lexically_normal());
      // Outside the data directory (moved there): the path as it is.
      if (!rel.empty() && *rel.begin() != "..") f.dir = rel.string();
    }
    if (StatusOr<engine::StoreStats> s = part.db->store().Stats(); s.ok()) f.store = *s;
    f.last_seq = part.db->Stats().last_seq;
    f.epoch = part.db->epoch();
    out.push_back(std::move(f));
  }
  return out;
}

std::string StatsText(const StatsReading& reading) {
  std::string text;
  for (size_t i = 0; i < protocol::kStatCount; ++i) {
    if (!reading[i]) continue;
    text.append(protocol::kStats[i].name);
    absl::StrAppend(&text, " ", reading[i]->Text(), "\n");
  }
  return text;
}

}  // namespace voxdb::daemon
