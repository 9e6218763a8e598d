#include "daemon/metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <limits>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "daemon/asio.h"
#include "daemon/server.h"
#include "daemon/stats_table.h"
#include "protocol/messages.h"
#include "protocol/opcodes.h"
#include "protocol/stats.h"
#include "protocol/version.h"

namespace voxdb::daemon {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using protocol::WireStatus;

// Seconds, 100 us to 10 s: requests and journal commits.
std::vector<double> LatencyBounds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

// One sample: `value` as a counter or a gauge, as the family's type says.
void AddSample(MetricFamily* f, double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f->type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f->metric.push_back(std::move(m));
}

// Adds one histogram sample (skipped while empty when skip_empty).
void AddHistogram(MetricFamily* f, const AtomicHistogram& h,
                  std::vector<ClientMetric::Label> labels, bool skip_empty) {
  const std::vector<uint64_t> counts = h.BucketCounts();
  ClientMetric m;
  m.label = std::move(labels);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    ClientMetric::Bucket b;
    b.cumulative_count = cumulative;
    b.upper_bound =
        i < h.upper_bounds().size() ? h.upper_bounds()[i] : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back(b);
  }
  if (skip_empty && cumulative == 0) return;
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = h.sum();
  f->metric.push_back(std::move(m));
}

// "STORAGE_FULL" -> "storage_full".
std::string Lower(const char* name) {
  std::string s(name);
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

// --- AtomicHistogram ----------------------------------------------------------

AtomicHistogram::AtomicHistogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void AtomicHistogram::Observe(double value) {
  // Prometheus buckets count the samples <= their upper bound.
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

std::vector<uint64_t> AtomicHistogram::BucketCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

// --- Collector ------------------------------------------------------------------

// Builds every family at scrape time (on a civetweb thread).
class Metrics::Collector : public prometheus::Collectable {
 public:
  explicit Collector(const Metrics* metrics) : metrics_(metrics) {}

  void Attach(engine::Node* db, const Server* server) {
    db_ = db;
    server_ = server;
  }

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> out;
    MetricFamily info =
        Family("voxdb_build_info", "voxdbd's version, as a label", MetricType::Gauge);
    AddSample(&info, 1, {{"version", kVersion}});
    out.push_back(std::move(info));
    CollectRequests(&out);
    if (server_ != nullptr && db_ != nullptr) CollectTable(&out);
    if (db_ != nullptr) CollectPartitions(&out);
    CollectHistograms(&out);
    return out;
  }

 private:
  void CollectRequests(std::vector<MetricFamily>* out) const {
    const Metrics& m = *metrics_;
    MetricFamily requests =
        Family("voxdb_requests_total", "Requests answered, by opcode and reply status",
               MetricType::Counter);
    MetricFamily latency =
        Family("voxdb_request_duration_seconds",
               "Time from a request's frame decoded to its reply queued", MetricType::Histogram);
    for (size_t row = 0; row < m.opcode_of_row_.size(); ++row) {
      const std::string op =
          protocol::OpcodeName(static_cast<protocol::Opcode>(m.opcode_of_row_[row]));
      for (int s = 0; s < kStatuses; ++s) {
        const uint64_t n = m.requests_[row * kStatuses + s].load(std::memory_order_relaxed);
        if (n == 0) continue;
        const char* status =
            s < kStatuses - 1 ? protocol::WireStatusName(static_cast<WireStatus>(s)) : "UNKNOWN";
        AddSample(&requests, static_cast<double>(n), {{"op", op}, {"status", status}});
      }
      AddHistogram(&latency, *m.latency_[row], {{"op", op}}, /*skip_empty=*/true);
    }
    if (!requests.metric.empty()) out->push_back(std::move(requests));
    if (!latency.metric.empty()) out->push_back(std::move(latency));

    MetricFamily errors = Family("voxdb_errors_total",
                                 "Error statuses sent, by kind: replies' and GET_CHUNKS entries'",
                                 MetricType::Counter);
    for (int s = 1; s < kStatuses; ++s) {
      const char* name =
          s < kStatuses - 1 ? protocol::WireStatusName(static_cast<WireStatus>(s)) : "UNKNOWN";
      AddSample(&errors, static_cast<double>(m.errors_[s].load(std::memory_order_relaxed)),
                {{"kind", Lower(name)}});
    }
    out->push_back(std::move(errors));
  }

  // Every row of protocol/stats.h with a family, read by daemon/stats_table;
  // rows sharing a family (a label apart) become one family. A value that
  // cannot be read now (the LMDB figures while every reader slot is taken)
  // is left out of this scrape.
  void CollectTable(std::vector<MetricFamily>* out) const {
    const StatsReading reading = ReadStats(server_->stats(), *db_);
    std::vector<MetricFamily> families;
    for (size_t i = 0; i < protocol::kStatCount; ++i) {
      const protocol::StatInfo& row = protocol::kStats[i];
      if (row.metric.empty() || !reading[i]) continue;
      auto family = std::find_if(families.begin(), families.end(),
                                 [&](const MetricFamily& f) { return f.name == row.metric; });
      if (family == families.end()) {
        families.push_back(Family(
            std::string(row.metric), std::string(row.help),
            row.kind == protocol::StatKind::kCounter ? MetricType::Counter : MetricType::Gauge));
        family = families.end() - 1;
      }
      std::vector<ClientMetric::Label> labels;
      if (const size_t eq = row.label.find('='); eq != std::string_view::npos) {
        labels.push_back(
            {std::string(row.label.substr(0, eq)), std::string(row.label.substr(eq + 1))});
      }
      AddSample(&*family, reading[i]->AsDouble(), std::move(labels));
    }
    for (MetricFamily& f : families) out->push_back(std::move(f));
  }

  // The per-partition gauges, while the node holds at most
  // kMaxPartitionSeries partitions. A store figure that cannot be read now
  // (every reader slot taken) leaves that partition's sample out.
  void CollectPartitions(std::vector<MetricFamily>* out) const {
    if (db_->partition_count() > kMaxPartitionSeries) return;
    const std::vector<PartitionFigures> parts = ReadPartitions(*db_);
    if (parts.size() > kMaxPartitionSeries) return;  // split meanwhile
    using Store = engine::StoreStats;
    struct StoreGauge {
      const char* name;
      const char* help;
      uint64_t Store::*field;
    };
    static constexpr StoreGauge kStoreGauges[] = {
        {"voxdb_partition_stored_chunks", "Chunk records in the partition's store",
         &Store::chunk_count},
        {"voxdb_partition_stored_chunk_bytes", "Pages of the partition's chunks table",
         &Store::chunk_bytes},
        {"voxdb_partition_lmdb_used_bytes", "Pages of the partition's LMDB map in use",
         &Store::used_bytes},
        {"voxdb_partition_lmdb_map_size_bytes", "Size of the partition's LMDB map now",
         &Store::map_size},
        {"voxdb_partition_lmdb_max_map_size_bytes",
         "Largest the partition's LMDB map may grow (max-map-size, capped to its share of the "
         "node's address-space budget)",
         &Store::max_map_size},
    };
    for (const StoreGauge& g : kStoreGauges) {
      MetricFamily f = Family(g.name, g.help, MetricType::Gauge);
      for (const PartitionFigures& p : parts) {
        if (!p.store) continue;
        AddSample(&f, static_cast<double>((*p.store).*g.field),
                  {{"partition", std::to_string(p.id)}});
      }
      if (!f.metric.empty()) out->push_back(std::move(f));
    }
    MetricFamily seq =
        Family("voxdb_partition_last_sequence", "Last sequence number the partition's journal gave",
               MetricType::Gauge);
    MetricFamily epoch =
        Family("voxdb_partition_epoch", "The partition's current epoch", MetricType::Gauge);
    for (const PartitionFigures& p : parts) {
      AddSample(&seq, static_cast<double>(p.last_seq), {{"partition", std::to_string(p.id)}});
      AddSample(&epoch, static_cast<double>(p.epoch), {{"partition", std::to_string(p.id)}});
    }
    out->push_back(std::move(seq));
    out->push_back(std::move(epoch));
  }

  void CollectHistograms(std::vector<MetricFamily>* out) const {
    const Metrics& m = *metrics_;
    auto add = [&](const char* name, const char* help, const AtomicHistogram& h) {
      MetricFamily f = Family(name, help, MetricType::Histogram);
      AddHistogram(&f, h, {}, /*skip_empty=*/false);
      out->push_back(std::move(f));
    };
    add("voxdb_event_delay_seconds",
        "Time from a change becoming durable to its event being queued", m.event_delay_seconds_);
    add("voxdb_journal_commit_duration_seconds", "Duration of a journal commit's LMDB transaction",
        m.commit_seconds_);
    add("voxdb_journal_commit_writes", "Writes per journal commit (group size)", m.commit_writes_);
    add("voxdb_flusher_duration_seconds", "Duration of a flush transaction, encoding included",
        m.flush_seconds_);
  }

  const Metrics* metrics_;
  engine::Node* db_ = nullptr;
  const Server* server_ = nullptr;
};

// --- Metrics --------------------------------------------------------------------

Metrics::Metrics()
    : commit_seconds_(LatencyBounds()),
      commit_writes_({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384}),
      flush_seconds_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      event_delay_seconds_(LatencyBounds()),
      collector_(std::make_shared<Collector>(this)) {
  opcode_of_row_.push_back(0);  // row 0: "UNKNOWN"
  for (const protocol::OpcodeInfo& info : protocol::kOpcodes) {
    const auto op = static_cast<uint8_t>(info.op);
    row_of_[op] = static_cast<uint8_t>(opcode_of_row_.size());
    opcode_of_row_.push_back(op);
  }
  requests_ = std::make_unique<std::atomic<uint64_t>[]>(opcode_of_row_.size() * kStatuses);
  for (size_t i = 0; i < opcode_of_row_.size(); ++i) {
    latency_.push_back(std::make_unique<AtomicHistogram>(LatencyBounds()));
  }
}

Metrics::~Metrics() { StopServing(); }

void Metrics::HookEngine(engine::DatabaseOptions* options) {
  options->on_commit = [this](double seconds, size_t writes) {
    commit_seconds_.Observe(seconds);
    commit_writes_.Observe(static_cast<double>(writes));
  };
  options->on_flush = [this](double seconds, size_t, size_t) { flush_seconds_.Observe(seconds); };
}

int Metrics::StatusIndex(WireStatus status) {
  const int s = static_cast<int>(status);
  return s < kStatuses - 1 ? s : kStatuses - 1;
}

void Metrics::OnRequest(uint8_t opcode, WireStatus status,
                        std::chrono::steady_clock::duration elapsed) {
  const size_t row = row_of_[opcode];
  requests_[row * kStatuses + StatusIndex(status)].fetch_add(1, std::memory_order_relaxed);
  latency_[row]->Observe(std::chrono::duration<double>(elapsed).count());
  if (status != WireStatus::kOk) OnError(status);
}

void Metrics::OnEventDelay(std::chrono::steady_clock::duration delay) {
  event_delay_seconds_.Observe(std::chrono::duration<double>(delay).count());
}

void Metrics::OnError(WireStatus status) {
  errors_[StatusIndex(status)].fetch_add(1, std::memory_order_relaxed);
}

StatusOr<uint16_t> Metrics::Serve(const std::string& address, uint16_t port, engine::Node* db,
                                  const Server* server) {
  StopServing();
  collector_->Attach(db, server);
  // civetweb's syntax: IPv6 addresses in brackets.
  const std::string host = address.find(':') != std::string::npos ? "[" + address + "]" : address;
  try {
    // civetweb serves a connection per thread: a client that sends half a
    // request holds its thread until request_timeout_ms (30 s by default)
    // has passed since the request began, so a few of them, unauthenticated,
    // would block every scrape. Time them out sooner, with threads to spare.
    exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", absl::StrFormat("%s:%u", host, port), "num_threads",
        std::to_string(kHttpThreads), "request_timeout_ms", std::to_string(kHttpTimeoutMs)});
  } catch (const std::exception& e) {
    // Debian's civetweb is built without IPv6.
    return IoError(absl::StrFormat(
        "cannot serve metrics on %s:%u (in use, not an address of this host%s): %s", host, port,
        host == address ? "" : ", or IPv6 unsupported by civetweb", e.what()));
  }
  exposer_->RegisterCollectable(collector_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  if (ports.empty()) {
    exposer_.reset();
    return IoError(absl::StrFormat("cannot serve metrics on %s:%u: no listening port", host, port));
  }
  boost::system::error_code ec;
  wake_address_ = asio::ip::make_address(address, ec);
  if (ec || wake_address_.is_unspecified()) {
    wake_address_ =
        asio::ip::make_address(address.find(':') != std::string::npos ? "::1" : "127.0.0.1");
  }
  wake_port_ = static_cast<uint16_t>(ports.front());
  return wake_port_;
}

void Metrics::StopServing() {
  if (exposer_ == nullptr) return;
  // civetweb's listener polls with a 2 s timeout before it sees the stop;
  // a connection wakes it, so stopping takes milliseconds instead.
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    exposer_.reset();
    stopped = true;
  });
  asio::io_context io;
  while (!stopped) {
    tcp::socket socket(io);
    boost::system::error_code ignored;
    socket.connect(tcp::endpoint(wake_address_, wake_port_), ignored);
    socket.close(ignored);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stopper.join();
}

}  // namespace voxdb::daemon
