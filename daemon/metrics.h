// voxdbd's Prometheus metrics, served as text on GET /metrics (prometheus-cpp
// over civetweb).
//
// Two kinds of values:
//  - Counted here as they happen: requests by op and status and their
//    latency (OnRequest, from the server's strands), errors by kind, and the
//    journal commit and flush histograms (the engine's on_commit / on_flush
//    hooks, see HookEngine). Lock-free: relaxed atomics.
//  - Read at scrape time: every row of protocol/stats.h that names a family
//    (the figures STATS prints, read by daemon/stats_table.h), so /metrics,
//    STATS and `voxdb info` show the same figures.
//  - Read at scrape time too, per partition: a few gauges labelled
//    partition="<id>" (voxdb_partition_*; CollectPartitions), while the
//    node holds at most kMaxPartitionSeries partitions. Past that bound only
//    the node-wide totals and voxdb_partitions are served, so that a node
//    split into many partitions cannot flood the scraper with series. They
//    are built from the layout at each scrape: a partition split or moved
//    away leaves no series behind.
//
// Example (daemon/main.cc):
//   Metrics metrics;
//   metrics.HookEngine(&db_options);        // before Database::Open
//   server_options.metrics = &metrics;      // before the Server
//   auto port = metrics.Serve("127.0.0.1", 9464, node, server);  // once both exist
//   ...
//   metrics.StopServing();                  // before the database or server go
//
// The Metrics object must outlive the Database whose options it hooked.
//
// Thread-safety: OnRequest, OnError and the engine hooks from any thread;
// Serve and StopServing from one thread.
#ifndef VOXDB_DAEMON_METRICS_H_
#define VOXDB_DAEMON_METRICS_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/asio.h"
#include "engine/database.h"
#include "engine/node.h"
#include "engine/status.h"
#include "protocol/frame.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace voxdb::daemon {

class Server;

// A histogram with fixed upper bounds, updated without locks. The sum is
// kept apart from the buckets, so a scrape during an Observe may see the
// sum a sample ahead of or behind the count.
class AtomicHistogram {
 public:
  explicit AtomicHistogram(std::vector<double> upper_bounds);
  AtomicHistogram(const AtomicHistogram&) = delete;
  AtomicHistogram& operator=(const AtomicHistogram&) = delete;

  void Observe(double value);

  const std::vector<double>& upper_bounds() const { return bounds_; }
  // Per bucket (not cumulative), the last one for +Inf.
  std::vector<uint64_t> BucketCounts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

class Metrics {
 public:
  Metrics();
  // Stops serving.
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Sets options->on_commit and on_flush to feed the journal commit and
  // flush histograms.
  void HookEngine(engine::DatabaseOptions* options);

  // A request's reply is queued: its opcode, the reply's status and the
  // time since the request's frame was decoded. A status other than OK also
  // counts as an error of that kind.
  void OnRequest(uint8_t opcode, protocol::WireStatus status,
                 std::chrono::steady_clock::duration elapsed);
  // An error status sent inside an OK reply (a GET_CHUNKS entry's).
  void OnError(protocol::WireStatus status);
  // An EVENTS frame was queued: the time since its oldest change became
  // durable (the subscription dispatcher's thread).
  void OnEventDelay(std::chrono::steady_clock::duration delay);

  // Serves GET /metrics on address:port (port 0: any free port), reading
  // `node` and `server` at each scrape; they must stay valid until
  // StopServing(). Returns the bound port; INTERNAL (IoError) if it cannot bind.
  StatusOr<uint16_t> Serve(const std::string& address, uint16_t port, engine::Node* node,
                           const Server* server);
  // Stops the HTTP server; returns once no scrape runs.
  void StopServing();

  // The most partitions a node may hold and still have its per-partition
  // series served.
  static constexpr size_t kMaxPartitionSeries = 256;

  class Collector;

 private:
  friend class Collector;
  static constexpr int kStatuses = 18;  // WireStatus 0..16, then "unknown"

  static int StatusIndex(protocol::WireStatus status);

  // Opcode -> row: known opcodes have their own, every other one row 0
  // ("UNKNOWN").
  uint8_t row_of_[256] = {};
  std::vector<uint8_t> opcode_of_row_;                     // row -> an opcode with that name
  std::unique_ptr<std::atomic<uint64_t>[]> requests_;      // [row][status]
  std::vector<std::unique_ptr<AtomicHistogram>> latency_;  // per row
  std::atomic<uint64_t> errors_[kStatuses] = {};
  AtomicHistogram commit_seconds_;
  AtomicHistogram commit_writes_;
  AtomicHistogram flush_seconds_;
  AtomicHistogram event_delay_seconds_;

  // The HTTP server's threads, and how long one request (its reading and
  // its reply's writing) may take before civetweb drops its connection.
  static constexpr int kHttpThreads = 4;
  static constexpr int kHttpTimeoutMs = 5000;

  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  asio::ip::address wake_address_;  // where StopServing connects to
  uint16_t wake_port_ = 0;
};

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_METRICS_H_
