// voxdbd's Prometheus metrics: a real load through the client against the
// real binary, then GET /metrics over a plain socket, its counters checked
// against the load, and the page checked by `promtool check metrics`.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/morton.h"
#include "protocol/client.h"
#include "protocol/stats.h"
#include "protocol/version.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/metrics_page.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using protocol::Client;
using protocol::Opcode;
using testing::Connect;
using testing::DaemonProcess;
using testing::HttpGet;
using testing::HttpReply;
using testing::kX;
using testing::kY;
using testing::kZ;
using testing::ParseSamples;
using testing::RunWithInput;
using testing::Secret;
using testing::TempDir;

constexpr char kAdminToken[] = "admin:metrics-admin-secret-0123";
constexpr char kReadToken[] = "read:metrics-read-secret-456789";

// One series' value; fails the test (and returns -1) when it is missing.
double Value(const std::map<std::string, double>& samples, const std::string& series) {
  auto it = samples.find(series);
  EXPECT_NE(it, samples.end()) << series << " is not on the page";
  return it == samples.end() ? -1 : it->second;
}

std::string Requests(const std::string& op, const std::string& status) {
  return "voxdb_requests_total{op=\"" + op + "\",status=\"" + status + "\"}";
}

TEST(DaemonMetricsTest, CountersFollowALoadAndThePagePassesPromtool) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"),
                       {"--token", kAdminToken, "--token", kReadToken});
  ASSERT_NE(daemon.metrics_port(), 0);
  constexpr int kPings = 5, kSets = 7, kGets = 3;

  auto admin = Connect(daemon.port());
  ASSERT_NE(admin, nullptr);
  ASSERT_OK(admin->Hello(Secret(kAdminToken)).status());
  for (int i = 0; i < kPings; ++i) ASSERT_OK(admin->Call(Opcode::kPing, {}).status());
  // A subscription over every write below (its events are left unread).
  protocol::SubscribeRequest sub;
  sub.region.kind = protocol::QueryKind::kBox;
  sub.region.box = {{kX, kY, kZ}, {kX + kSets * 200, kY + 1, kZ + 1}};
  ASSERT_OK(admin->Subscribe(sub).status());
  for (int i = 0; i < kSets; ++i) {
    const uint64_t x = kX + static_cast<uint64_t>(i) * 200;  // a few chunks
    protocol::SetVoxelsRequest set{{{{x, kY, kZ}, static_cast<uint8_t>(1 + i)}}};
    ASSERT_OK(admin->SetVoxels(set).status());
  }
  const uint64_t code = engine::ChunkKey::FromCoord({kX / 128, kY / 128, kZ / 128}).code();
  for (int i = 0; i < kGets; ++i) {
    ASSERT_OK(admin->Call(Opcode::kGetChunks, protocol::GetChunksRequest{{code}}.Encode()));
  }
  ASSERT_OK(admin->Call(Opcode::kFlush, {}).status());

  // A read token may not write: PERMISSION_DENIED, the connection stays.
  auto reader = Connect(daemon.port());
  ASSERT_NE(reader, nullptr);
  ASSERT_OK(reader->Hello(Secret(kReadToken)).status());
  protocol::SetVoxelsRequest denied{{{{kX, kY, kZ}, 9}}};
  EXPECT_TRUE(absl::IsPermissionDenied(reader->SetVoxels(denied).status()));
  // A wrong token: UNAUTHENTICATED, then closed.
  auto stranger = Connect(daemon.port());
  ASSERT_NE(stranger, nullptr);
  EXPECT_TRUE(absl::IsUnauthenticated(stranger->Hello("not-the-right-secret-at-all").status()));

  const HttpReply reply = HttpGet(daemon.metrics_port(), "/metrics");
  ASSERT_NE(reply.status_line.find(" 200"), std::string::npos) << reply.status_line;
  const std::string& page = reply.body;
  const auto m = ParseSamples(page);

  EXPECT_EQ(Value(m, absl::StrCat("voxdb_build_info{version=\"", kVersion, "\"}")), 1);
  // Requests, exactly as sent.
  EXPECT_EQ(Value(m, Requests("PING", "OK")), kPings);
  EXPECT_EQ(Value(m, Requests("SET_VOXELS", "OK")), kSets);
  EXPECT_EQ(Value(m, Requests("GET_CHUNKS", "OK")), kGets);
  EXPECT_EQ(Value(m, Requests("FLUSH", "OK")), 1);
  EXPECT_EQ(Value(m, Requests("HELLO", "OK")), 2);
  EXPECT_EQ(Value(m, Requests("HELLO", "UNAUTHENTICATED")), 1);
  EXPECT_EQ(Value(m, Requests("SET_VOXELS", "PERMISSION_DENIED")), 1);
  EXPECT_EQ(m.count(Requests("GET_CHUNKS", "CORRUPT")), 0u);  // only what happened
  EXPECT_EQ(Value(m, "voxdb_request_duration_seconds_count{op=\"SET_VOXELS\"}"), kSets + 1);
  EXPECT_EQ(Value(m, "voxdb_request_duration_seconds_bucket{op=\"PING\",le=\"+Inf\"}"), kPings);
  EXPECT_GT(Value(m, "voxdb_request_duration_seconds_sum{op=\"FLUSH\"}"), 0);
  EXPECT_EQ(Value(m, "voxdb_errors_total{kind=\"permission_denied\"}"), 1);
  EXPECT_EQ(Value(m, "voxdb_errors_total{kind=\"unauthenticated\"}"), 1);
  EXPECT_EQ(Value(m, "voxdb_errors_total{kind=\"corrupt\"}"), 0);
  EXPECT_EQ(Value(m, "voxdb_errors_total{kind=\"storage_full\"}"), 0);
  // Connections and bytes.
  EXPECT_EQ(Value(m, "voxdb_connections_accepted_total"), 3);
  EXPECT_EQ(Value(m, "voxdb_connections_rejected_total"), 0);
  EXPECT_EQ(Value(m, "voxdb_auth_failures_total"), 1);
  EXPECT_EQ(Value(m, "voxdb_permission_denied_total"), 1);
  EXPECT_GE(Value(m, "voxdb_connections"), 2);
  EXPECT_LE(Value(m, "voxdb_connections"), 3);
  EXPECT_EQ(Value(m, "voxdb_connections_timed_out_total{timeout=\"idle\"}"), 0);
  EXPECT_GT(Value(m, "voxdb_network_receive_bytes_total"), 0);
  EXPECT_GT(Value(m, "voxdb_network_transmit_bytes_total"), 0);
  EXPECT_EQ(Value(m, "voxdb_snapshots_open"), 0);
  EXPECT_EQ(Value(m, Requests("SUBSCRIBE", "OK")), 1);
  EXPECT_EQ(Value(m, "voxdb_subscribers"), 1);
  EXPECT_EQ(Value(m, "voxdb_subscription_events_total"), kSets);
  EXPECT_EQ(Value(m, "voxdb_subscribers_cut_off_total"), 0);
  EXPECT_EQ(Value(m, "voxdb_subscription_lag_writes"), 0);
  EXPECT_GE(Value(m, "voxdb_event_delay_seconds_count"), 1);
  EXPECT_LE(Value(m, "voxdb_event_delay_seconds_count"), kSets);
  EXPECT_EQ(Value(m, "voxdb_streams_open"), 0);
  EXPECT_GE(Value(m, "voxdb_lod_dirty_nodes"), 0);
  // The journal: one record per acknowledged write, in commits of some size.
  EXPECT_GE(Value(m, "voxdb_journal_records_total"), kSets);
  EXPECT_GT(Value(m, "voxdb_journal_bytes_total"), 0);
  const double commits = Value(m, "voxdb_journal_commits_total");
  EXPECT_GE(commits, 1);
  EXPECT_EQ(Value(m, "voxdb_journal_commit_duration_seconds_count"), commits);
  EXPECT_EQ(Value(m, "voxdb_journal_commit_writes_count"), commits);
  EXPECT_EQ(Value(m, "voxdb_journal_commit_writes_sum"), Value(m, "voxdb_journal_records_total"));
  // The flusher ran (FLUSH) and stored what was written.
  const double flushes = Value(m, "voxdb_flusher_runs_total");
  EXPECT_GE(flushes, 1);
  EXPECT_GE(Value(m, "voxdb_flusher_chunks_total"), 1);
  EXPECT_GT(Value(m, "voxdb_flusher_bytes_total"), 0);
  EXPECT_EQ(Value(m, "voxdb_flusher_duration_seconds_count"), flushes);
  EXPECT_EQ(Value(m, "voxdb_cache_dirty_chunks"), 0);
  EXPECT_GE(Value(m, "voxdb_cache_hits_total") + Value(m, "voxdb_cache_misses_total"), 1);
  // LMDB.
  EXPECT_GE(Value(m, "voxdb_stored_chunks"), 1);
  EXPECT_GT(Value(m, "voxdb_stored_chunk_bytes"), 0);
  EXPECT_GT(Value(m, "voxdb_lmdb_map_size_bytes"), 0);
  EXPECT_GT(Value(m, "voxdb_lmdb_used_bytes"), 0);
  EXPECT_GT(Value(m, "voxdb_lmdb_max_readers"), 0);

  // promtool (Debian package prometheus) lints the page: no findings.
  const auto [status, findings] = RunWithInput("promtool check metrics", page, dir);
  ASSERT_TRUE(WIFEXITED(status)) << findings;
  ASSERT_NE(WEXITSTATUS(status), 127) << "promtool is missing: apt-get install prometheus";
  EXPECT_EQ(WEXITSTATUS(status), 0) << findings;
  EXPECT_EQ(findings, "");

  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

// protocol/stats.h is the one table of the figures: STATS prints every row,
// in table order, and /metrics has every row that names a family, with the
// same value (on a quiet server, for the rows no read moves: the clients'
// byte and request counters and the uptime change with the reads).
TEST(DaemonMetricsTest, StatsAndMetricsComeFromOneTable) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  auto c = Connect(daemon.port());
  ASSERT_NE(c, nullptr);
  ASSERT_OK(c->Hello("").status());
  ASSERT_OK(c->SetVoxels(protocol::SetVoxelsRequest{{{{kX, kY, kZ}, 5}}}).status());
  ASSERT_OK(c->Call(Opcode::kFlush, {}).status());

  ASSERT_OK_AND_ASSIGN(const std::string text, c->Stats());
  ASSERT_OK_AND_ASSIGN(const auto lines, protocol::ParseStatsText(text));
  std::vector<std::string> names, rows;
  for (const auto& [name, value] : lines) names.push_back(name);
  for (const protocol::StatInfo& row : protocol::kStats) rows.emplace_back(row.name);
  EXPECT_EQ(names, rows) << text;  // a LOD pyramid (the default) and free reader slots: all

  const HttpReply reply = HttpGet(daemon.metrics_port(), "/metrics");
  ASSERT_NE(reply.status_line.find(" 200"), std::string::npos) << reply.status_line;
  const auto m = ParseSamples(reply.body);
  for (const auto& [name, value] : lines) {
    const protocol::StatInfo* row = protocol::FindStat(name);
    ASSERT_NE(row, nullptr) << name;
    if (row->metric.empty()) continue;
    std::string series(row->metric);
    if (const size_t eq = row->label.find('='); eq != std::string_view::npos) {
      series += "{" + std::string(row->label.substr(0, eq)) + "=\"" +
                std::string(row->label.substr(eq + 1)) + "\"}";
    }
    const double scraped = Value(m, series);
    if (row->section == "clients" || row->section == "server" ||
        name == "oldest_dirty_age_seconds") {
      continue;
    }
    if (name == "readers_in_use") {
      // LMDB's count of reader slots ever taken: a background reader (the
      // LOD pyramid, the flusher) may take one more between the two reads.
      EXPECT_GE(scraped, std::stod(value)) << name << " / " << series;
      continue;
    }
    EXPECT_EQ(scraped, std::stod(value)) << name << " / " << series;
  }
  EXPECT_EQ(Value(m, "voxdb_journal_durable_sequence"), 1);
  EXPECT_EQ(Value(m, "voxdb_lod_levels"), 4);
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

TEST(DaemonMetricsTest, OffServesNoMetrics) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--metrics-listen", "off"});
  EXPECT_EQ(daemon.metrics_port(), 0);
  auto c = Connect(daemon.port());
  ASSERT_NE(c, nullptr);
  EXPECT_OK(c->Call(Opcode::kPing, {}).status());
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

TEST(DaemonMetricsTest, BadAddressExitsTwoNamingTheOption) {
  TempDir dir;
  for (const char* bad : {"nowhere", ":9464", "127.0.0.1:99999"}) {
    const std::string cmd = std::string(VOXDBD_PATH) + " --data " + dir.Sub("data") +
                            " --metrics-listen " + bad + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[512];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int status = pclose(p);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << bad << ": " << out;
    EXPECT_NE(out.find("--metrics-listen"), std::string::npos) << out;
  }
}

// Clients that send half an HTTP request and wait hold a civetweb thread
// each until its request timeout: a scrape after four of them (more than
// the threads) is still answered, well before they would give up.
TEST(MetricsTest, HalfSentRequestsDoNotBlockScrapes) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  std::vector<int> stalled;
  for (int i = 0; i < 4; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(daemon.metrics_port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string half = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    ASSERT_EQ(write(fd, half.data(), half.size()), static_cast<ssize_t>(half.size()));
    stalled.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // they hold the threads
  const auto start = std::chrono::steady_clock::now();
  const HttpReply reply = HttpGet(daemon.metrics_port(), "/metrics");
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(reply.status_line.rfind("HTTP/1.", 0), 0u) << reply.status_line;
  EXPECT_NE(reply.body.find("voxdb_build_info"), std::string::npos);
  // civetweb's default waits 30 s per stalled request, two threads: 60 s.
  EXPECT_LT(took, std::chrono::seconds(20)) << std::chrono::duration<double>(took).count() << " s";
  for (int fd : stalled) close(fd);
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

}  // namespace
}  // namespace voxdb
