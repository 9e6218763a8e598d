// voxdbd: the voxdb daemon.
//
//   voxdbd [--config FILE] [--data DIR] [--listen HOST:PORT] [...]; voxdbd --help
//
// Prints "voxdbd listening on HOST:PORT" once it serves (then "voxdbd
// metrics on HOST:PORT" unless --metrics-listen off). SIGTERM/SIGINT:
// stop accepting, answer what is in flight, flush, exit 0.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/server.h"
#include "engine/database.h"
#include "engine/journal_check.h"
#include "engine/lod.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"
#include "protocol/version.h"

namespace po = boost::program_options;
using namespace voxdb;

namespace {


// "64GiB", "512MiB", "1000", "10k": bytes. Returns false on anything else.
bool ParseSize(const std::string& s, uint64_t* out) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 19) return false;
  uint64_t n = std::stoull(s.substr(0, i));
  const std::string unit = s.substr(i);
  uint64_t mul = 1;
  if (unit.empty() || unit == "B")
    mul = 1;
  else if (unit == "k" || unit == "KB")
    mul = 1000;
  else if (unit == "KiB")
    mul = uint64_t{1} << 10;
  else if (unit == "MB")
    mul = 1000 * 1000;
  else if (unit == "MiB")
    mul = uint64_t{1} << 20;
  else if (unit == "GB")
    mul = 1000ull * 1000 * 1000;
  else if (unit == "GiB")
    mul = uint64_t{1} << 30;
  else if (unit == "TiB")
    mul = uint64_t{1} << 40;
  else
    return false;
  if (n > UINT64_MAX / mul) return false;
  *out = n * mul;
  return true;
}

// "300s", "5m", "250ms", "1h", "0": a duration. Returns false on anything else.
bool ParseDuration(const std::string& s, std::chrono::milliseconds* out) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 9) return false;
  const int64_t n = std::stoll(s.substr(0, i));
  const std::string unit = s.substr(i);
  int64_t ms;
  if (unit == "ms")
    ms = n;
  else if (unit == "s" || (unit.empty() && n == 0))
    ms = n * 1000;
  else if (unit == "m" || unit == "min")
    ms = n * 60'000;
  else if (unit == "h")
    ms = n * 3'600'000;
  else
    return false;
  *out = std::chrono::milliseconds(ms);
  return true;
}

// "HOST:PORT" with a non-empty host and a port of 0..65535 in digits only;
// an IPv6 host goes in brackets, "[::1]:7390", and *host gets it without
// them.
bool ParseHostPort(const std::string& s, std::string* host, uint16_t* port) {
  size_t colon;
  std::string h;
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find(']');
    if (close == std::string::npos || close == 1 || close + 1 >= s.size() || s[close + 1] != ':') {
      return false;
    }
    h = s.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    h = s.substr(0, colon);
    if (h.find(':') != std::string::npos) return false;  // IPv6 without brackets
  }
  if (colon + 1 == s.size() || s.size() - colon > 6) return false;
  uint32_t p = 0;
  for (size_t i = colon + 1; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    p = p * 10 + static_cast<uint32_t>(s[i] - '0');
  }
  if (p > 65535) return false;
  *host = h;
  *port = static_cast<uint16_t>(p);
  return true;
}

// HOST:PORT as it is written, IPv6 in brackets.
std::string HostPort(const std::string& host, uint16_t port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

// systemd readiness (Type=notify): one datagram to $NOTIFY_SOCKET, a path
// or an abstract socket ("@name"). Nothing happens without systemd.
void Notify(const char* state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || (path[0] != '/' && path[0] != '@')) return;
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = std::min(std::strlen(path), sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  sendto(fd, state, std::strlen(state), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
         static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
  close(fd);
}

// SIGHUP: the log level from the config file, if it names one (else the
// level stays).
void ReloadLogLevel(const std::string& config, const po::options_description& desc) {
  if (config.empty()) {
    daemon::Log(daemon::LogLevel::kWarn, "SIGHUP: no --config file to re-read");
    return;
  }
  try {
    std::ifstream in(config);
    if (!in) throw std::runtime_error("cannot read " + config);
    po::variables_map fresh;
    po::store(po::parse_config_file(in, desc), fresh);
    if (!fresh.count("log-level")) return;
    const std::string name = fresh["log-level"].as<std::string>();
    if (auto level = daemon::ParseLogLevel(name)) {
      daemon::SetLogLevel(*level);
      daemon::Log(daemon::LogLevel::kWarn, "SIGHUP: log level is now %s", name);
    } else {
      daemon::Log(daemon::LogLevel::kError, "SIGHUP: '%s' is not a log level; unchanged", name);
    }
  } catch (const std::exception& e) {
    daemon::Log(daemon::LogLevel::kError, "SIGHUP: %s; log level unchanged", e.what());
  }
}

// SIGHUP: max-map-size from the config file, if it names one: the map may
// grow to it from now on (a database whose map was full takes writes again).
void ReloadMaxMapSize(const std::string& config, const po::options_description& desc,
                      engine::ChunkStore& store) {
  if (config.empty()) return;  // ReloadLogLevel has said so
  try {
    std::ifstream in(config);
    if (!in) throw std::runtime_error("cannot read " + config);
    po::variables_map fresh;
    po::store(po::parse_config_file(in, desc), fresh);
    if (!fresh.count("max-map-size") || fresh["max-map-size"].defaulted()) return;
    const std::string text = fresh["max-map-size"].as<std::string>();
    uint64_t n = 0;
    if (!ParseSize(text, &n)) {
      daemon::Log(daemon::LogLevel::kError, "SIGHUP: max-map-size '%s' is not a size; unchanged",
                  text);
      return;
    }
    if (n == store.max_map_size()) return;
    if (absl::Status s = store.SetMaxMapSize(n); !s.ok()) {
      daemon::Log(daemon::LogLevel::kError, "SIGHUP: max-map-size unchanged: %s", s.message());
      return;
    }
    daemon::Log(daemon::LogLevel::kWarn, "SIGHUP: max-map-size is now %s", text);
  } catch (const std::exception& e) {
    daemon::Log(daemon::LogLevel::kError, "SIGHUP: %s; max-map-size unchanged", e.what());
  }
}

// After an open refused for a damaged journal record: the way out.
void PrintJournalRecoveryHint(const absl::Status& open_error, const std::string& data) {
  if (!IsCorrupt(open_error)) return;
  engine::StoreOptions options;
  options.create_if_missing = false;
  auto store = engine::ChunkStore::Open(data, options);
  if (!store.ok()) return;
  auto snap = (*store)->BeginRead();
  if (!snap.ok()) return;
  auto check = engine::CheckJournal(**snap);
  if (!check.ok() || !check->bad_seq) return;
  std::fprintf(stderr,
               "voxdbd: journal record %llu is damaged; `voxdb recover --data %s` reports what "
               "dropping it would drop (it and the %llu records after it), and `voxdb recover "
               "--data %s --truncate-journal` drops them, keeping a copy, so that voxdbd opens "
               "the database with the records before it\n",
               static_cast<unsigned long long>(*check->bad_seq), data.c_str(),
               static_cast<unsigned long long>(check->drop_records - 1), data.c_str());
}

int Fail(const std::string& option, const std::string& why) {
  std::fprintf(stderr, "voxdbd: invalid value for --%s: %s\n", option.c_str(), why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config, data, listen, durability, cache, dirty, max_map;
  std::string metrics_listen;
  std::string max_frame, max_buffered, max_request_buffer, idle_timeout, send_timeout,
      shutdown_timeout;
  std::vector<std::string> tokens;
  std::string log_level, slow_request;
  std::string change_window_bytes, push_window, commit_interval;
  int threads = 0, max_connections = 0, lod_levels = 0;
  uint64_t change_window = 0;
  int max_subscriptions = 0;
  po::options_description desc("voxdbd options (also accepted in the config file as name = value)");
  desc.add_options()("help", "show this help and exit")("version", "print the version and exit")(
      "config", po::value(&config), "read options from this file (command line wins)")(
      "data", po::value(&data)->default_value("voxdb-data"), "database directory")(
      "listen", po::value(&listen)->default_value("127.0.0.1:7390"),
      "address:port to serve the protocol on (port 0: any free port)")(
      "metrics-listen", po::value(&metrics_listen)->default_value("127.0.0.1:9464"),
      "address:port of Prometheus metrics, GET /metrics (port 0: any free port; off: none)")(
      "threads", po::value(&threads)->default_value(0), "I/O threads (0: the core count)")(
      "durability", po::value(&durability)->default_value("sync"),
      "sync: acknowledge writes after the journal fsync; async: when applied")(
      "commit-interval", po::value(&commit_interval)->default_value("5ms"),
      "async: how often the journal is committed; an acknowledged write is on disk within "
      "about twice this (writers wait when the journal falls further behind)")(
      "cache-bytes", po::value(&cache)->default_value("1GiB"), "memory for cached chunks")(
      "dirty-bytes", po::value(&dirty)->default_value("256MiB"),
      "dirty chunks at most; writers wait beyond")(
      "max-map-size", po::value(&max_map)->default_value("1TiB"),
      "largest the LMDB map may grow; then writes fail with STORAGE_FULL; SIGHUP re-reads it "
      "from --config")(
      "token", po::value(&tokens)->composing(),
      "ROLE:SECRET, repeatable; ROLE is read, write or admin; with any token every client "
      "must authenticate (required unless --listen is loopback)")(
      "max-connections", po::value(&max_connections)->default_value(1024),
      "connections served at once; more are refused with BUSY")(
      "max-frame-bytes", po::value(&max_frame)->default_value("64MiB"),
      "largest request payload (4KiB before a client has authenticated)")(
      "max-buffered-bytes", po::value(&max_buffered)->default_value("64MiB"),
      "reply bytes queued per connection before its requests stop being read")(
      "max-request-buffer-bytes", po::value(&max_request_buffer)->default_value("256MiB"),
      "bytes of partly received requests over all connections; past it, those holding the most "
      "stop being read")("idle-timeout", po::value(&idle_timeout)->default_value("5m"),
                         "close a connection without a whole request for this long (0: never)")(
      "send-timeout", po::value(&send_timeout)->default_value("30s"),
      "close a connection whose replies make no progress for this long (0: never)")(
      "shutdown-timeout", po::value(&shutdown_timeout)->default_value("30s"),
      "on SIGTERM, wait this long at most for requests in flight")(
      "log-level", po::value(&log_level)->default_value("info"),
      "debug, info, warn or error; SIGHUP re-reads it from --config")(
      "slow-request", po::value(&slow_request)->default_value("100ms"),
      "log requests that take longer than this at warn (0: never)")(
      "lod-levels", po::value(&lod_levels)->default_value(engine::kDefaultLodLevels),
      "LOD pyramid levels kept, 1..16, built in the background as chunks change (0: none)")(
      "change-window", po::value(&change_window)->default_value(100000),
      "committed writes kept in memory for subscribers to resume from (at least 1)")(
      "change-window-bytes", po::value(&change_window_bytes)->default_value("64MiB"),
      "memory those writes may hold at most; the oldest go first")(
      "max-subscriptions", po::value(&max_subscriptions)->default_value(16),
      "subscriptions one connection may hold")(
      "push-window", po::value(&push_window)->default_value("8MiB"),
      "pushed bytes buffered per connection; past it a subscriber waits for the client to read");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("config")) {
      std::ifstream in(vm["config"].as<std::string>());
      if (!in) {
        std::fprintf(stderr, "voxdbd: cannot read config file %s\n",
                     vm["config"].as<std::string>().c_str());
        return 2;
      }
      po::store(po::parse_config_file(in, desc), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "voxdbd: %s (see voxdbd --help)\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("version")) {
    std::printf("%s\n", kServerVersion);
    return 0;
  }

  engine::DatabaseOptions db_options;
  uint64_t n;
  if (durability == "sync") {
    db_options.durability = engine::Durability::kSync;
  } else if (durability == "async") {
    db_options.durability = engine::Durability::kAsync;
  } else {
    return Fail("durability", "'" + durability + "' is not sync or async");
  }
  if (!ParseDuration(commit_interval, &db_options.commit_interval) ||
      db_options.commit_interval < std::chrono::milliseconds(1) ||
      db_options.commit_interval > std::chrono::minutes(1)) {
    return Fail("commit-interval", "'" + commit_interval + "' is not a duration in 1ms..60s");
  }
  if (!ParseSize(cache, &n) || n == 0) return Fail("cache-bytes", "'" + cache + "' is not a size");
  db_options.cache_bytes = n;
  if (!ParseSize(dirty, &n) || n == 0 || n > db_options.cache_bytes) {
    return Fail("dirty-bytes", "'" + dirty + "' is not a size up to --cache-bytes");
  }
  db_options.dirty_bytes = n;
  if (!ParseSize(max_map, &n) || n < db_options.store.initial_map_size) {
    return Fail("max-map-size", "'" + max_map + "' is not a size of at least 64MiB");
  }
  db_options.store.max_map_size = n;
  // A store that refuses every write until an operator acts says so in the
  // log, once (a FLUSH that fails is logged too; writes are not).
  db_options.store.on_alert = [](const absl::Status& s) {
    daemon::Log(daemon::LogLevel::kError, "%s", s.message());
  };
  if (threads < 0 || threads > 1024) return Fail("threads", "must be in 0..1024");

  daemon::ServerOptions server_options;
  if (!ParseHostPort(listen, &server_options.listen_address, &server_options.listen_port)) {
    return Fail("listen",
                "'" + listen + "' is not HOST:PORT (port 0..65535; IPv6 as [ADDRESS]:PORT)");
  }
  std::string metrics_address;
  uint16_t metrics_port = 0;
  if (metrics_listen != "off" && !ParseHostPort(metrics_listen, &metrics_address, &metrics_port)) {
    return Fail(
        "metrics-listen",
        "'" + metrics_listen + "' is not HOST:PORT (port 0..65535; IPv6 as [ADDRESS]:PORT) or off");
  }
  server_options.io_threads = threads;
  if (max_connections < 1) return Fail("max-connections", "must be at least 1");
  server_options.max_connections = max_connections;
  if (!ParseSize(max_frame, &n) || n < 4096 || n > (uint64_t{1} << 31)) {
    return Fail("max-frame-bytes", "'" + max_frame + "' is not a size in 4KiB..2GiB");
  }
  server_options.max_frame_payload = static_cast<uint32_t>(n);
  if (!ParseSize(max_buffered, &n) || n == 0) {
    return Fail("max-buffered-bytes", "'" + max_buffered + "' is not a size");
  }
  server_options.max_buffered_bytes = n;
  if (!ParseSize(max_request_buffer, &n) || n < (1u << 20)) {
    return Fail("max-request-buffer-bytes",
                "'" + max_request_buffer + "' is not a size of at least 1MiB");
  }
  server_options.max_request_buffer_bytes = n;
  if (!ParseDuration(idle_timeout, &server_options.idle_timeout)) {
    return Fail("idle-timeout", "'" + idle_timeout + "' is not a duration like 300s or 5m");
  }
  if (!ParseDuration(send_timeout, &server_options.send_timeout)) {
    return Fail("send-timeout", "'" + send_timeout + "' is not a duration like 30s");
  }
  if (!ParseDuration(shutdown_timeout, &server_options.shutdown_timeout)) {
    return Fail("shutdown-timeout", "'" + shutdown_timeout + "' is not a duration like 30s");
  }
  if (!ParseDuration(slow_request, &server_options.slow_request)) {
    return Fail("slow-request", "'" + slow_request + "' is not a duration like 100ms");
  }
  if (auto level = daemon::ParseLogLevel(log_level)) {
    daemon::SetLogLevel(*level);
  } else {
    return Fail("log-level", "'" + log_level + "' is not debug, info, warn or error");
  }
  for (const std::string& t : tokens) {
    const size_t c = t.find(':');
    const std::string role = t.substr(0, c == std::string::npos ? 0 : c);
    daemon::Token token;
    if (role == "read") {
      token.role = protocol::Role::kRead;
    } else if (role == "write") {
      token.role = protocol::Role::kWrite;
    } else if (role == "admin") {
      token.role = protocol::Role::kAdmin;
    } else {
      return Fail("token", "expected ROLE:SECRET with ROLE read, write or admin");
    }
    token.secret = t.substr(c + 1);
    if (token.secret.size() < 16) {
      return Fail("token", "a " + role + " token's secret has fewer than 16 characters");
    }
    for (const daemon::Token& other : server_options.tokens) {
      if (other.secret == token.secret) {
        return Fail("token", "one secret is configured twice (" +
                                 std::string(protocol::RoleName(other.role)) + " and " + role +
                                 "): give each token its own secret");
      }
    }
    server_options.tokens.push_back(std::move(token));
  }
  if (change_window < 1) return Fail("change-window", "must be at least 1");
  db_options.changes.max_records = change_window;
  if (!ParseSize(change_window_bytes, &n) || n == 0) {
    return Fail("change-window-bytes", "'" + change_window_bytes + "' is not a size");
  }
  db_options.changes.max_bytes = n;
  if (max_subscriptions < 1) return Fail("max-subscriptions", "must be at least 1");
  server_options.subscriptions.max_per_connection = static_cast<size_t>(max_subscriptions);
  if (!ParseSize(push_window, &n) || n < 4096) {
    return Fail("push-window", "'" + push_window + "' is not a size of at least 4KiB");
  }
  server_options.subscriptions.push_window_bytes = n;
  if (lod_levels < 0 || lod_levels > engine::kMaxLodLevels) {
    return Fail("lod-levels", std::to_string(lod_levels) + " is not in 0..16");
  }
  if (server_options.tokens.empty() && daemon::RequiresTokens(server_options.listen_address)) {
    return Fail("listen", server_options.listen_address +
                              " is beyond loopback: configure at least one --token ROLE:SECRET");
  }

  // A closed stdout or socket must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);
  // A file size limit reached (RLIMIT_FSIZE) is a write error (EFBIG) the
  // write path reports, as it reports a full disk, not a reason to die.
  signal(SIGXFSZ, SIG_IGN);
  // Signals are handled by a thread of our own, so block them everywhere.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // The S2 index, kept by the flusher in the chunks' transactions. voxdbd
  // serves Earth-frame databases only (a database of another frame is
  // refused with MISMATCH), so the index's frame is known before opening.
  // Declared before the database, which must not outlive it.
  db_options.store.frame = engine::WorldFrame::Earth();
  index::S2Index s2(*db_options.store.frame);
  db_options.observers.push_back(&s2);
  // The LOD pyramid: the flusher marks the parents of what it writes, a
  // builder thread rebuilds them (engine/lod.h).
  engine::LodObserver lod_observer;
  if (lod_levels > 0) db_options.observers.push_back(&lod_observer);
  // Prometheus metrics: declared before the database, whose hooks count into it.
  std::unique_ptr<daemon::Metrics> metrics;
  if (!metrics_address.empty()) {
    metrics = std::make_unique<daemon::Metrics>();
    metrics->HookEngine(&db_options);
    server_options.metrics = metrics.get();
  }
  auto db = engine::Database::Open(data, db_options);
  if (!db.ok()) {
    std::fprintf(stderr, "voxdbd: cannot open %s: %s\n", data.c_str(),
                 std::string(db.status().message()).c_str());
    PrintJournalRecoveryHint(db.status(), data);
    return 1;
  }
  // A database from before the index, or with an older index format:
  // build it now (once).
  if (absl::Status s = index::EnsureBuilt(db->get(),
                                          [](std::string_view why) {
                                            daemon::Log(daemon::LogLevel::kInfo,
                                                        "%s: building it from the stored chunks "
                                                        "(one transaction; a large database "
                                                        "takes a while)",
                                                        why);
                                          });
      !s.ok()) {
    std::fprintf(stderr, "voxdbd: cannot build the S2 index of %s: %s\n", data.c_str(),
                 std::string(s.message()).c_str());
    return 1;
  }
  std::unique_ptr<engine::LodPyramid> lod;
  if (lod_levels > 0) {
    engine::LodOptions lod_options;
    lod_options.levels = lod_levels;
    lod = std::make_unique<engine::LodPyramid>(db->get(), lod_options);
    lod->Start();
    server_options.lod = lod.get();
  }
  auto server = std::make_unique<daemon::Server>(server_options, db->get());
  auto port = server->Listen();
  if (!port.ok()) {
    std::fprintf(stderr, "voxdbd: %s\n", std::string(port.status().message()).c_str());
    return 1;
  }
  if (metrics != nullptr) {
    auto bound = metrics->Serve(metrics_address, metrics_port, db->get(), server.get());
    if (!bound.ok()) {
      std::fprintf(stderr, "voxdbd: %s\n", std::string(bound.status().message()).c_str());
      return 1;
    }
    metrics_port = *bound;
  }
  std::printf("voxdbd listening on %s (data %s, %llu journal records replayed)\n",
              HostPort(server_options.listen_address, *port).c_str(), data.c_str(),
              static_cast<unsigned long long>((*db)->Stats().replayed_records));
  if (metrics != nullptr) {
    std::printf("voxdbd metrics on %s\n", HostPort(metrics_address, metrics_port).c_str());
  }
  std::fflush(stdout);
  daemon::Log(daemon::LogLevel::kInfo, "%s serving %s on %s, %s durability, log level %s", kServerVersion,
              data, HostPort(server_options.listen_address, *port), durability, log_level);
  Notify("READY=1");
  std::thread signal_thread([&] {
    for (;;) {
      int sig = 0;
      sigwait(&signals, &sig);
      if (sig == SIGHUP) {
        ReloadLogLevel(vm.count("config") ? vm["config"].as<std::string>() : std::string(), desc);
        ReloadMaxMapSize(vm.count("config") ? vm["config"].as<std::string>() : std::string(), desc,
                         (*db)->store());
        continue;
      }
      daemon::Log(daemon::LogLevel::kInfo, "signal %d: stopping", sig);
      Notify("STOPPING=1");
      server->Stop();
      return;
    }
  });
  server->Run();  // returns after the signal thread's Stop()
  signal_thread.join();
  server->JoinBackground();
  // Snapshots still open (their connections go with the server, later) would
  // keep the final flush from growing the map.
  (*db)->EndSnapshots();
  // Order matters: the database's last acknowledgements post to the
  // server's (stopped) loop, so the database goes first.
  const absl::Status flushed = (*db)->Flush();
  // Markers the builder has not reached stay in the store for the next start.
  if (lod != nullptr) lod->Stop();
  if (metrics != nullptr) metrics->StopServing();  // scrapes read the database
  lod.reset();
  db->reset();
  server.reset();
  if (!flushed.ok()) {
    std::fprintf(stderr, "voxdbd: final flush failed: %s\n",
                 std::string(flushed.message()).c_str());
    return 1;
  }
  daemon::Log(daemon::LogLevel::kInfo, "flushed and stopped");
  std::printf("voxdbd: flushed and stopped\n");
  return 0;
}
