// The figures voxdbd reports about itself: one table from which the STATS
// reply (protocol/PROTOCOL.md, STATS: one "name value" line each), the
// Prometheus page (daemon/metrics.cc) and `voxdb info`'s sections
// (cli/info.h) all come, so the three cannot drift apart. The daemon reads
// each row's value in daemon/stats_table.cc.
//
// A row: its STATS name; the `voxdb info` section it is printed in; its
// Prometheus family (empty when another family already carries it, e.g.
// `requests` is voxdb_requests_total{op,status} summed) with an optional
// `label=value` (rows sharing a family differ by it); counter or gauge; the
// family's help text.
//
// Example:
//   for (const protocol::StatInfo& s : protocol::kStats) std::puts(s.name.data());
//   const protocol::StatInfo* info = protocol::FindStat("cache_hits");  // section "cache"
//
// Thread-safety: constant data and pure functions.
#ifndef VOXDB_PROTOCOL_STATS_H_
#define VOXDB_PROTOCOL_STATS_H_

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/status.h"

namespace voxdb::protocol {

enum class StatKind : uint8_t { kCounter, kGauge };

// X(id, name, section, metric, label, kind, help), in the order STATS
// prints them: by section, in kStatSections' order.
#define VOXDB_STATS(X)                                                                             \
  X(kUptime, "uptime_seconds", "server", "", "", kGauge, "")                                       \
  X(kFills, "fills", "storage", "voxdb_fills", "", kGauge, "Fills recorded")                       \
  X(kPartitions, "partitions", "storage", "voxdb_partitions", "", kGauge,                          \
    "Partitions (Morton ranges, one LMDB environment each) this node holds")                       \
  X(kMapSize, "map_size_bytes", "storage", "voxdb_lmdb_map_size_bytes", "", kGauge,                \
    "Size of the LMDB map now")                                                                    \
  X(kMaxMapSize, "max_map_size_bytes", "storage", "voxdb_lmdb_max_map_size_bytes", "", kGauge,     \
    "Largest the LMDB map may grow")                                                               \
  X(kUsedBytes, "used_bytes", "storage", "voxdb_lmdb_used_bytes", "", kGauge,                      \
    "Pages of the LMDB map in use")                                                                \
  X(kMapGrows, "map_grows", "storage", "voxdb_lmdb_map_grows_total", "", kCounter,                 \
    "Times the LMDB map grew")                                                                     \
  X(kChunksStored, "chunks_stored", "storage", "voxdb_stored_chunks", "", kGauge,                  \
    "Chunk records in the store")                                                                  \
  X(kChunkBytes, "chunk_bytes", "storage", "voxdb_stored_chunk_bytes", "", kGauge,                 \
    "Pages of the chunks table")                                                                   \
  X(kReadersInUse, "readers_in_use", "storage", "voxdb_lmdb_readers", "", kGauge,                  \
    "LMDB reader slots taken (a high-water mark)")                                                 \
  X(kMaxReaders, "max_readers", "storage", "voxdb_lmdb_max_readers", "", kGauge,                   \
    "LMDB reader slots")                                                                           \
  X(kCacheHits, "cache_hits", "cache", "voxdb_cache_hits_total", "", kCounter,                     \
    "Chunk lookups the cache answered")                                                            \
  X(kCacheMisses, "cache_misses", "cache", "voxdb_cache_misses_total", "", kCounter,               \
    "Chunk lookups that went to the store")                                                        \
  X(kCacheEvictions, "cache_evictions", "cache", "voxdb_cache_evictions_total", "", kCounter,      \
    "Clean chunks evicted from the cache")                                                         \
  X(kCacheBytes, "cache_bytes", "cache", "voxdb_cache_bytes", "", kGauge,                          \
    "Memory of cached chunks, clean and dirty")                                                    \
  X(kCacheChunks, "cache_chunks", "cache", "voxdb_cache_chunks", "", kGauge, "Cached chunks")      \
  X(kDirtyBytes, "dirty_bytes", "cache", "voxdb_cache_dirty_bytes", "", kGauge,                    \
    "Memory of dirty (unflushed) chunks")                                                          \
  X(kDirtyChunks, "dirty_chunks", "cache", "voxdb_cache_dirty_chunks", "", kGauge,                 \
    "Dirty (unflushed) chunks")                                                                    \
  X(kOldestDirtyAge, "oldest_dirty_age_seconds", "cache", "voxdb_cache_oldest_dirty_age_seconds",  \
    "", kGauge, "Age of the oldest unflushed change")                                              \
  X(kFlushes, "flushes", "cache", "voxdb_flusher_runs_total", "", kCounter,                        \
    "Flush transactions written")                                                                  \
  X(kFlushedChunks, "flushed_chunks", "cache", "voxdb_flusher_chunks_total", "", kCounter,         \
    "Chunks written back by the flusher")                                                          \
  X(kFlushedBytes, "flushed_bytes", "cache", "voxdb_flusher_bytes_total", "", kCounter,            \
    "Encoded chunk bytes written back by the flusher")                                             \
  X(kWriteWaits, "write_waits", "cache", "voxdb_write_waits_total", "", kCounter,                  \
    "Writes that waited for the flusher")                                                          \
  X(kBusyRejections, "busy_rejections", "cache", "voxdb_busy_rejections_total", "", kCounter,      \
    "Writes failed BUSY after waiting busy_timeout")                                               \
  X(kJournalRecords, "journal_records", "journal", "voxdb_journal_records_total", "", kCounter,    \
    "Journal records committed")                                                                   \
  X(kJournalBytes, "journal_bytes", "journal", "voxdb_journal_bytes_total", "", kCounter,          \
    "Journal record bytes committed")                                                              \
  X(kJournalCommits, "journal_commits", "journal", "voxdb_journal_commits_total", "", kCounter,    \
    "Journal commits (group commits)")                                                             \
  X(kLastSeq, "last_seq", "journal", "voxdb_journal_last_sequence", "", kGauge,                    \
    "Sequence number of the newest write")                                                         \
  X(kCommittedSeq, "committed_seq", "journal", "voxdb_journal_committed_sequence", "", kGauge,     \
    "Sequence number of the newest committed write")                                               \
  X(kDurableSeq, "durable_seq", "journal", "voxdb_journal_durable_sequence", "", kGauge,           \
    "Sequence number of the newest durable write (sync reads see none newer)")                     \
  X(kRollbacks, "rollbacks", "journal", "voxdb_journal_rollbacks_total", "", kCounter,             \
    "Failed journal commits, each rolling the database back to its durable state")                 \
  X(kJournalWaits, "journal_waits", "journal", "voxdb_journal_waits_total", "", kCounter,          \
    "Async writes that waited for the journal to catch up")                                        \
  X(kReplayedRecords, "replayed_records", "journal", "voxdb_journal_replayed_records", "", kGauge, \
    "Journal records replayed at open")                                                            \
  X(kIndexColumns, "index_columns", "index", "voxdb_index_columns", "", kGauge,                    \
    "S2 index entries, one per column of a stored chunk")                                          \
  X(kLodLevels, "lod_levels", "lod", "voxdb_lod_levels", "", kGauge,                               \
    "Levels of the LOD pyramid (0: none)")                                                         \
  X(kLodDirty, "lod_dirty", "lod", "voxdb_lod_dirty_nodes", "", kGauge,                            \
    "LOD pyramid nodes waiting to be rebuilt")                                                     \
  X(kConnections, "connections", "clients", "voxdb_connections", "", kGauge, "Connections open")   \
  X(kConnectionsAccepted, "connections_accepted", "clients", "voxdb_connections_accepted_total",   \
    "", kCounter, "Connections accepted")                                                          \
  X(kConnectionsRejected, "connections_rejected", "clients", "voxdb_connections_rejected_total",   \
    "", kCounter, "Connections refused BUSY over max-connections")                                 \
  X(kAuthFailures, "auth_failures", "clients", "voxdb_auth_failures_total", "", kCounter,          \
    "Requests refused for a missing or wrong token")                                               \
  X(kPermissionDenied, "permission_denied", "clients", "voxdb_permission_denied_total", "",        \
    kCounter, "Requests refused for the role of their token")                                      \
  X(kIdleClosed, "idle_closed", "clients", "voxdb_connections_timed_out_total", "timeout=idle",    \
    kCounter, "Connections closed by idle-timeout or send-timeout")                                \
  X(kSlowClosed, "slow_closed", "clients", "voxdb_connections_timed_out_total", "timeout=send",    \
    kCounter, "Connections closed by idle-timeout or send-timeout")                                \
  X(kProtocolErrors, "protocol_errors", "clients", "voxdb_protocol_errors_total", "", kCounter,    \
    "Malformed frames (their connection is closed)")                                               \
  X(kRequests, "requests", "clients", "", "", kCounter, "")                                        \
  X(kDeferredWrites, "deferred_writes", "clients", "voxdb_deferred_writes_total", "", kCounter,    \
    "Writes handed to the worker thread under back-pressure")                                      \
  X(kBytesIn, "bytes_in", "clients", "voxdb_network_receive_bytes_total", "", kCounter,            \
    "Bytes read from clients")                                                                     \
  X(kBytesOut, "bytes_out", "clients", "voxdb_network_transmit_bytes_total", "", kCounter,         \
    "Bytes written to clients")                                                                    \
  X(kInFlight, "in_flight", "clients", "voxdb_requests_in_flight", "", kGauge,                     \
    "Requests answered later (writes, FLUSH) not answered yet")                                    \
  X(kRequestBufferBytes, "request_buffer_bytes", "clients", "voxdb_request_buffer_bytes", "",      \
    kGauge, "Bytes of partly received requests held, over all connections")                        \
  X(kRequestBufferWaits, "request_buffer_waits", "clients", "voxdb_request_buffer_waits_total",    \
    "", kCounter, "Times a connection stopped being read for max-request-buffer-bytes")            \
  X(kSnapshotsOpen, "snapshots_open", "clients", "voxdb_snapshots_open", "", kGauge,               \
    "Snapshots (SNAPSHOT_OPEN) open, each holding an LMDB reader")                                 \
  X(kUnsentBytes, "unsent_bytes", "clients", "voxdb_unsent_bytes", "", kGauge,                     \
    "Reply and push bytes queued for clients and not written yet")                                 \
  X(kSubscribers, "subscribers", "push", "voxdb_subscribers", "", kGauge,                          \
    "Subscriptions open (SUBSCRIBE)")                                                              \
  X(kSubscriptionEvents, "subscription_events", "push", "voxdb_subscription_events_total", "",     \
    kCounter, "Change events pushed to subscribers")                                               \
  X(kSubscriptionFrames, "subscription_frames", "push", "voxdb_subscription_frames_total", "",     \
    kCounter, "EVENTS frames pushed to subscribers")                                               \
  X(kSubscribersCutOff, "subscribers_cut_off", "push", "voxdb_subscribers_cut_off_total", "",      \
    kCounter, "Subscribers disconnected for falling behind the change window")                     \
  X(kSubscriptionLag, "subscription_lag", "push", "voxdb_subscription_lag_writes", "", kGauge,     \
    "Writes the furthest-behind subscription has not been sent yet")                               \
  X(kChangeFeedRecords, "change_feed_records", "push", "voxdb_change_feed_records", "", kGauge,    \
    "Changes retained for subscriptions to resume from")                                           \
  X(kChangeFeedFloor, "change_feed_floor", "push", "voxdb_change_feed_floor_sequence", "", kGauge, \
    "The oldest sequence number a subscription may resume after")                                  \
  X(kStreamsOpen, "streams_open", "push", "voxdb_streams_open", "", kGauge,                        \
    "Streaming sessions open (STREAM_UPDATE)")                                                     \
  X(kStreamChunks, "stream_chunks", "push", "voxdb_stream_chunks_total", "", kCounter,             \
    "Chunks and LOD nodes streamed")                                                               \
  X(kStreamBytes, "stream_bytes", "push", "voxdb_stream_bytes_total", "", kCounter,                \
    "STREAM_DATA bytes queued")                                                                    \
  X(kStreamUnloads, "stream_unloads", "push", "voxdb_stream_unloads_total", "", kCounter,          \
    "Chunks and LOD nodes streams told their viewers to unload")

enum class Stat : uint8_t {
#define VOXDB_STAT_ENUM_(id, name, section, metric, label, kind, help) id,
  VOXDB_STATS(VOXDB_STAT_ENUM_)
#undef VOXDB_STAT_ENUM_
};

struct StatInfo {
  Stat id;
  std::string_view name;     // in STATS
  std::string_view section;  // in `voxdb info`
  std::string_view metric;   // the Prometheus family; empty: not exported by itself
  std::string_view label;    // "key=value" within the family, or empty
  StatKind kind;
  std::string_view help;  // the family's
};

inline constexpr StatInfo kStats[] = {
#define VOXDB_STAT_ROW_(id, name, section, metric, label, kind, help) \
  {Stat::id, name, section, metric, label, StatKind::kind, help},
    VOXDB_STATS(VOXDB_STAT_ROW_)
#undef VOXDB_STAT_ROW_
};
inline constexpr size_t kStatCount = std::size(kStats);

// `voxdb info`'s sections, in print order ("other" follows for names a
// newer server reports that this table does not know).
inline constexpr std::string_view kStatSections[] = {"server", "storage", "cache",   "journal",
                                                     "index",  "lod",     "clients", "push"};

// The row of a STATS name; nullptr when this table does not know it.
const StatInfo* FindStat(std::string_view name);

// The "name value" lines of a STATS reply, in order. INVALID for a line
// without a space or with an empty name or value. Empty lines are skipped.
StatusOr<std::vector<std::pair<std::string, std::string>>> ParseStatsText(std::string_view text);

}  // namespace voxdb::protocol

#endif  // VOXDB_PROTOCOL_STATS_H_
