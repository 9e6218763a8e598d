// voxdbd: the voxdb daemon.
//
//   voxdbd [--config FILE] [--data DIR] [--listen HOST:PORT] [...]; voxdbd --help
//
// Prints "voxdbd listening on HOST:PORT (data DIR, N journal records
// replayed)" once it serves (then "voxdbd metrics on HOST:PORT" unless
// --metrics-listen off). SIGTERM/SIGINT:
// stop accepting, answer what is in flight, flush, exit 0. SIGHUP: re-read
// the log level and max-map-size from --config.
//
// The options are a table in daemon/config.h; this file wires the engine,
// the index, LOD, metrics and the server together, handles the signals, and
// keeps the shutdown order.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/server.h"
#include "engine/database.h"
#include "engine/journal_check.h"
#include "engine/lod.h"
#include "engine/node.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"
#include "protocol/version.h"

using namespace voxdb;

namespace {

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

}  // namespace

int main(int argc, char** argv) {
  daemon::DaemonConfig config;
  const absl::StatusOr<daemon::ConfigAction> action =
      daemon::ParseDaemonConfig(argc, argv, &config);
  if (!action.ok()) {
    std::fprintf(stderr, "voxdbd: %s\n", std::string(action.status().message()).c_str());
    return 2;
  }
  if (*action == daemon::ConfigAction::kHelp) {
    std::cout << daemon::ConfigHelp() << "\n";
    return 0;
  }
  if (*action == daemon::ConfigAction::kVersion) {
    std::printf("%s\n", kServerVersion);
    return 0;
  }
  daemon::SetLogLevel(config.log_level);
  // A store that refuses every write until an operator acts says so in the
  // log, once (a FLUSH that fails is logged too; writes are not).
  config.db.store.on_alert = [](const absl::Status& s) {
    daemon::Log(daemon::LogLevel::kError, "%s", s.message());
  };

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
  config.db.store.frame = engine::WorldFrame::Earth();
  index::S2Index s2(*config.db.store.frame);
  config.db.observers.push_back(&s2);
  // The LOD pyramid: the flusher marks the parents of what it writes, a
  // builder thread rebuilds them (engine/lod.h).
  engine::LodObserver lod_observer;
  if (config.lod_levels > 0) config.db.observers.push_back(&lod_observer);
  // Prometheus metrics: declared before the database, whose hooks count into it.
  std::unique_ptr<daemon::Metrics> metrics;
  if (!config.metrics_address.empty()) {
    metrics = std::make_unique<daemon::Metrics>();
    metrics->HookEngine(&config.db);
    config.server.metrics = metrics.get();
  }
  // The node: the data directory's partitions (engine/node.h), one
  // database for a directory never split.
  engine::NodeOptions node_options;
  node_options.database = config.db;
  node_options.on_removed = [](const std::string& path) {
    daemon::Log(daemon::LogLevel::kWarn, "removed %s, left by a split or move a crash interrupted",
                path);
  };
  auto node = engine::Node::Open(config.data, node_options);
  if (!node.ok()) {
    std::fprintf(stderr, "voxdbd: cannot open %s: %s\n", config.data.c_str(),
                 std::string(node.status().message()).c_str());
    PrintJournalRecoveryHint(node.status(), config.data);
    return 1;
  }
  // Released before serving: a split or move closes the Database it
  // replaces once nothing holds it.
  std::shared_ptr<const engine::Node::Layout> layout = (*node)->layout();
  // A database from before the index, or with an older index format:
  // build it now (once).
  for (const engine::Node::Part& part : layout->parts) {
    if (absl::Status s = index::EnsureBuilt(part.db.get(),
                                            [](std::string_view why) {
                                              daemon::Log(daemon::LogLevel::kInfo,
                                                          "%s: building it from the stored "
                                                          "chunks (one transaction; a large "
                                                          "database takes a while)",
                                                          why);
                                            });
        !s.ok()) {
      std::fprintf(stderr, "voxdbd: cannot build the S2 index of %s: %s\n", part.spec.dir.c_str(),
                   std::string(s.message()).c_str());
      return 1;
    }
  }
  // The LOD pyramid of the node's one partition. A split or move
  // (PARTITION_SPLIT, PARTITION_MOVE) stops it and, when the node has one
  // partition after, starts one over it (rebuilt from its chunks when the
  // environment is new); the stopped ones are kept until the end.
  std::vector<std::unique_ptr<engine::LodPyramid>> lods;
  engine::LodPyramid* lod = nullptr;
  engine::LodOptions lod_options;
  lod_options.levels = config.lod_levels;
  auto start_lod = [&](engine::Database* db, bool rebuild) -> engine::LodPyramid* {
    if (lod != nullptr) lod->Stop();
    lod = nullptr;
    if (db == nullptr) return nullptr;
    lods.push_back(std::make_unique<engine::LodPyramid>(db, lod_options));
    lod = lods.back().get();
    if (rebuild) {
      if (absl::Status s = lod->MarkAllForRebuild(); !s.ok()) {
        daemon::Log(daemon::LogLevel::kError, "the LOD pyramid of the moved partition: %s",
                    s.message());
      }
    }
    lod->Start();
    return lod;
  };
  if (config.lod_levels > 0) config.server.rebind_lod = start_lod;
  config.server.data_dir = config.data;
  if (config.lod_levels > 0 && layout->parts.size() == 1) {
    config.server.lod = start_lod(layout->parts[0].db.get(), /*rebuild=*/false);
  } else if (config.lod_levels > 0) {
    daemon::Log(daemon::LogLevel::kWarn,
                "the LOD pyramid is not kept yet on a node of several partitions (%u): "
                "GET_CHUNKS at a level above 0 answers UNSUPPORTED",
                layout->parts.size());
  }
  layout.reset();
  auto server = std::make_unique<daemon::Server>(config.server, node->get());
  auto port = server->Listen();
  if (!port.ok()) {
    std::fprintf(stderr, "voxdbd: %s\n", std::string(port.status().message()).c_str());
    return 1;
  }
  if (metrics != nullptr) {
    auto bound =
        metrics->Serve(config.metrics_address, config.metrics_port, node->get(), server.get());
    if (!bound.ok()) {
      std::fprintf(stderr, "voxdbd: %s\n", std::string(bound.status().message()).c_str());
      return 1;
    }
    config.metrics_port = *bound;
  }
  std::printf("voxdbd listening on %s (data %s, %llu journal records replayed)\n",
              daemon::HostPort(config.server.listen_address, *port).c_str(), config.data.c_str(),
              static_cast<unsigned long long>((*node)->Stats().replayed_records));
  if (metrics != nullptr) {
    std::printf("voxdbd metrics on %s\n",
                daemon::HostPort(config.metrics_address, config.metrics_port).c_str());
  }
  std::fflush(stdout);
  daemon::Log(daemon::LogLevel::kInfo, "%s serving %s on %s, %s durability, log level %s",
              kServerVersion, config.data, daemon::HostPort(config.server.listen_address, *port),
              config.db.durability == engine::Durability::kSync ? "sync" : "async",
              absl::AsciiStrToLower(daemon::LogLevelName(config.log_level)));
  Notify("READY=1");
  std::thread signal_thread([&] {
    for (;;) {
      int sig = 0;
      sigwait(&signals, &sig);
      if (sig == SIGHUP) {
        daemon::ReloadConfig(config, **node);
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
  for (const engine::Node::Part& part : (*node)->layout()->parts) part.db->EndSnapshots();
  // Order matters: the database's last acknowledgements post to the
  // server's (stopped) loop, so the database goes first.
  const absl::Status flushed = (*node)->Flush();
  // Markers the builder has not reached stay in the store for the next start.
  if (lod != nullptr) lod->Stop();
  if (metrics != nullptr) metrics->StopServing();  // scrapes read the database
  lods.clear();
  node->reset();
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
