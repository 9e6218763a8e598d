// voxdbd's network server: Boost.Asio, a pool of I/O threads, one strand per
// connection, pipelined requests answered by request id. Writes complete
// through the engine's callbacks (posted back to the connection's strand),
// so no I/O thread waits on a journal commit.
//
// Thread-safety: Run() blocks the calling thread until Stop(); Stop() may be
// called from any thread (e.g. a signal handler's strand).
#ifndef VOXDB_DAEMON_SERVER_H_
#define VOXDB_DAEMON_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/asio.h"
#include "engine/database.h"

namespace voxdb::daemon {

struct ServerOptions {
  std::string listen_address = "127.0.0.1";  // DEFAULT: loopback only
  uint16_t listen_port = 7390;               // 0: an ephemeral port
  int io_threads = 0;                        // 0: the core count
  uint32_t max_frame_payload = 64u << 20;    // bytes
  uint32_t max_batch = 65536;                // items per GET_CHUNKS / GET_VOXELS / SET_VOXELS
  int max_connections = 1024;
};

class Server {
 public:
  Server(const ServerOptions& options, engine::Database* db);
  ~Server();

  // Binds and listens. Returns the bound port (useful with port 0).
  StatusOr<uint16_t> Listen();
  // Serves until Stop(): stops accepting, lets in-flight requests finish
  // (up to 30 s), and returns.
  void Run();
  void Stop();
  // Waits for requests that run off the I/O threads (FLUSH). Call after
  // Run() returns and before the database goes away.
  void JoinBackground();

  class Connection;

 private:
  void Accept();

  ServerOptions options_;
  engine::Database* db_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::atomic<int> connections_{0};
  std::atomic<bool> stopping_{false};
  // One worker for requests that wait on the disk (FLUSH), so that no I/O
  // thread does and a client spamming FLUSH cannot spawn threads.
  void RunBackground(std::function<void()> task);
  std::mutex background_mu_;
  std::condition_variable background_cv_;
  std::deque<std::function<void()>> background_tasks_;  // GUARDED_BY(background_mu_)
  bool background_stop_ = false;                        // GUARDED_BY(background_mu_)
  std::thread background_;
};

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_SERVER_H_
