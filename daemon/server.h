// voxdbd's network server: Boost.Asio, a pool of I/O threads, one strand per
// connection, pipelined requests answered by request id. Writes complete
// through the engine's callbacks (posted back to the connection's strand),
// so no I/O thread waits on a journal commit.
//
// Limits (protocol/PROTOCOL.md, "Limits"): frame size (smaller before a
// connection has authenticated), connections, reply bytes buffered per
// connection (past it the server stops reading that connection's requests;
// a client whose replies make no progress for send_timeout is cut off), and
// an idle timeout (no complete request and nothing owed for that long).
//
// Thread-safety: Run() blocks the calling thread until Stop(); Stop() may be
// called from any thread; stats() from any thread.
#ifndef VOXDB_DAEMON_SERVER_H_
#define VOXDB_DAEMON_SERVER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/asio.h"
#include "daemon/stream.h"
#include "daemon/subscriptions.h"
#include "engine/database.h"
#include "engine/lod.h"
#include "engine/node.h"
#include "protocol/messages.h"

namespace voxdb::daemon {

class HelloThrottle;
class Metrics;

struct Token {
  std::string secret;
  protocol::Role role = protocol::Role::kRead;
};

struct ServerOptions {
  std::string listen_address = "127.0.0.1";  // DEFAULT: loopback only
  // The node's data directory: PARTITION_SPLIT and PARTITION_MOVE read its
  // manifest and refuse to move a partition inside it.
  std::string data_dir;
  uint16_t listen_port = 7390;                  // 0: an ephemeral port
  int io_threads = 0;                           // 0: the core count
  uint32_t max_frame_payload = 64u << 20;       // bytes
  uint32_t unauthenticated_max_payload = 4096;  // bytes, before a good HELLO
  uint32_t max_batch = 65536;                   // items per GET_CHUNKS / GET_VOXELS / SET_VOXELS
  int max_connections = 1024;
  uint64_t max_buffered_bytes = 64u << 20;  // reply bytes queued per connection
  // Bytes of partly received requests over all connections; past it the
  // connections holding 64 KiB or more of one stop being read (but one).
  uint64_t max_request_buffer_bytes = 256u << 20;
  std::chrono::milliseconds idle_timeout{300'000};     // 0: never
  std::chrono::milliseconds send_timeout{30'000};      // 0: never
  std::chrono::milliseconds shutdown_timeout{30'000};  // for in-flight requests
  std::chrono::milliseconds slow_request{100};         // logged at WARN; 0: never
  // Snapshots open at once, over every connection (each holds one of
  // LMDB's reader slots, 126 by default).
  uint32_t max_snapshots = 32;
  // Empty: no authentication, every connection may do everything (allowed
  // only on loopback; see RequiresTokens).
  std::vector<Token> tokens;
  // Counts every request's op, status and latency (daemon/metrics.h). Not
  // owned; must outlive the Server. nullptr: nothing is counted.
  Metrics* metrics = nullptr;
  // The LOD pyramid GET_CHUNKS and the queries read at levels >= 1, and
  // LOD_REBUILD rebuilds. Not owned; must outlive the Server. nullptr: LOD
  // is off (those requests fail UNSUPPORTED).
  engine::LodPyramid* lod = nullptr;
  // Called on the worker around a partition split or move
  // (PARTITION_SPLIT, PARTITION_MOVE): stops the LOD pyramid it returned
  // before, if any, and returns one started over `db` (nullptr: none, as
  // for a node of several partitions). The pyramids it returned must stay
  // valid (stopped) until the Server is destroyed. Empty: the LOD pyramid
  // (`lod`) is not kept across a layout change.
  // `rebuild`: `db` is a new environment, which holds no LOD records yet.
  std::function<engine::LodPyramid*(engine::Database* db, bool rebuild)> rebind_lod;
  // Subscriptions: per connection, pushed bytes buffered (PROTOCOL.md,
  // "Subscriptions").
  SubscriptionOptions subscriptions;
  // Streaming sessions (PROTOCOL.md, "Streaming").
  StreamOptions streams;
};

// True when `address` is not a loopback address (127.0.0.0/8, ::1), i.e.
// when voxdbd refuses to listen on it without tokens.
bool RequiresTokens(const std::string& address);

// Counters since start, for STATS and the metrics.
struct ServerStats {
  uint64_t connections_open = 0, connections_accepted = 0, connections_rejected = 0;
  uint64_t auth_failures = 0, permission_denied = 0;
  uint64_t idle_closed = 0, slow_closed = 0, protocol_errors = 0;
  uint64_t requests = 0, bytes_in = 0, bytes_out = 0;
  uint64_t in_flight = 0;
  uint64_t request_buffer_bytes = 0;  // of partly received requests, all connections
  uint64_t request_buffer_waits = 0;  // times a connection stopped being read for it
  uint64_t deferred_writes = 0;       // writes handed to the worker under back-pressure
  uint64_t snapshots_open = 0;        // SNAPSHOT_OPEN handles not closed yet
  SubscriptionStats subscriptions;
  uint64_t streams_open = 0, stream_chunks = 0, stream_bytes = 0, stream_unloads = 0;
  int lod_levels = 0;         // 0: no LOD pyramid
  uint64_t lod_dirty = 0;     // LOD nodes waiting to be rebuilt
  uint64_t unsent_bytes = 0;  // queued on all connections, pushed ones too
  uint64_t uptime_seconds = 0;
};

class Server {
 public:
  // Serves `node`. Its layout changes only through PARTITION_SPLIT and
  // PARTITION_MOVE (ChangeLayout), which re-bind what is served from the
  // one partition of a node of one.
  Server(const ServerOptions& options, engine::Node* node);
  ~Server();

  // Binds and listens. Returns the bound port (useful with port 0).
  StatusOr<uint16_t> Listen();
  // Serves until Stop() has drained: returns once every connection has
  // answered the requests it read and closed (or after shutdown_timeout).
  void Run();
  // Stops accepting. Each connection answers the requests it has read
  // (from any thread), answers UNAVAILABLE the requests still readable,
  // writes its replies, then half-closes (FIN) and closes after the
  // client's EOF or a short linger.
  void Stop();
  // Waits for requests that run off the I/O threads (FLUSH). Call after
  // Run() returns and before the database goes away.
  void JoinBackground();

  ServerStats stats() const;

  // One client connection: the transport (daemon/connection.h).
  class Connection;
  // The gate and the request handlers (daemon/dispatch.h).
  struct Handlers;

 private:
  void Accept();
  void Reject(tcp::socket socket);
  void Drain(std::chrono::steady_clock::time_point deadline);
  // The connections open, for Stop() to reach them all.
  void Register(const std::shared_ptr<Connection>& c);
  void Unregister(const Connection* c);
  // The request buffer budget (max_request_buffer_bytes).
  bool MayBuffer(const std::shared_ptr<Connection>& c);
  void RequestBytesFreed(const Connection* c, bool done);
  // The role a HELLO token grants (kNone if none matches). Compares every
  // token in full so timing does not reveal a matching prefix.
  protocol::Role Authenticate(const std::string& token) const;
  // Writes the rate-limited log lines' summaries (daemon/log.h) every second.
  void TickLogs();

  ServerOptions options_;
  engine::Node* node_;
  // Runs `change` (a Node::Split or Node::Move) on the worker: first
  // detaches what is bound to the one partition of a node of one (new
  // requests bound to it answer BUSY, those in their synchronous part are
  // waited for, the LOD pyramid stops, connections holding a snapshot, a
  // stream or a subscription are closed and their sessions waited for),
  // then, whatever `change` returned, binds them again to the one
  // partition of the layout that serves now (none on a node of several).
  // BUSY (nothing changed) if a closed connection's stream or snapshot does
  // not let go within 10 s.
  StatusOr<engine::LayoutChangeReport> ChangeLayout(
      const std::function<StatusOr<engine::LayoutChangeReport>()>& change);
  // Closes every connection holding a snapshot, a stream or a
  // subscription; true once their sessions have let go of them.
  bool CutOffSessions(const std::string& why);
  // The LOD pyramid, or nullptr.
  engine::LodPyramid* lod() const { return lod_.load(); }

  // Held while a request uses db_ or lod_ in its synchronous part (the
  // gate's kOnePartition rows, LOD reads): false, and not held, while a
  // layout change detaches them (the request answers BUSY then).
  class OnePartitionUse {
   public:
    explicit OnePartitionUse(Server& s) : s_(s) {
      ++s_.one_users_;
      ok_ = !s_.relayout_.load();
    }
    ~OnePartitionUse() { --s_.one_users_; }
    bool ok() const { return ok_; }

   private:
    Server& s_;
    bool ok_ = false;
  };
  static absl::Status RelayoutBusy();

  // The node's one partition, for what is not yet served across partitions
  // (Spans::kOnePartition in daemon/dispatch.h): null on a node of several.
  // Swapped by ChangeLayout on the worker while no request uses it.
  std::atomic<engine::Database*> db_;
  // The LOD pyramid (options_.lod, then what rebind_lod returned). stats()
  // reads it under lod_mu_ (the metrics thread passes no gate).
  std::atomic<engine::LodPyramid*> lod_;
  mutable std::mutex lod_mu_;
  std::atomic<bool> relayout_{false};  // a layout change is detaching db_
  std::atomic<int> one_users_{0};      // OnePartitionUse held
  // Declared before io_, so destroyed after it: the streams that the I/O
  // context still holds count into these and take buffers from them.
  StreamCounters stream_counters_;
  FrameBuffers frame_buffers_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  // After io_: destroyed (its dispatcher stopped) before the I/O context.
  std::unique_ptr<SubscriptionHub> hub_;
  std::atomic<bool> stopping_{false};
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::unique_ptr<asio::steady_timer> drain_timer_;  // used on io_ only
  std::unique_ptr<asio::steady_timer> log_timer_;    // used on io_ only
  // Failed HELLOs per peer address, which slow down its next failures
  // (PROTOCOL.md, "Authentication").
  std::unique_ptr<HelloThrottle> hello_throttle_;
  std::mutex live_mu_;
  std::map<const Connection*, std::weak_ptr<Connection>> live_;  // GUARDED_BY(live_mu_)

  std::atomic<uint64_t> connections_{0}, accepted_{0}, rejected_{0};
  std::atomic<uint64_t> auth_failures_{0}, permission_denied_{0};
  std::atomic<uint64_t> idle_closed_{0}, slow_closed_{0}, protocol_errors_{0};
  std::atomic<uint64_t> requests_{0}, bytes_in_{0}, bytes_out_{0};
  std::atomic<uint64_t> in_flight_{0};       // requests answered later (writes, FLUSH)
  std::atomic<uint64_t> unanswered_{0};      // requests decoded, reply not queued yet
  std::atomic<uint64_t> unsent_{0};          // bytes queued on all connections, pushed ones too
  std::atomic<uint64_t> unsent_replies_{0};  // of which replies: what a drain waits for
  std::atomic<uint64_t> deferred_writes_{0};
  std::atomic<uint64_t> request_bytes_{0};  // partly received requests, all connections
  std::atomic<uint64_t> budget_waits_{0};
  std::atomic<uint64_t> budget_waiting_{0};               // waiters, and those about to be
  std::atomic<const Connection*> budget_lease_{nullptr};  // may go on past the budget
  std::mutex budget_mu_;
  std::vector<std::weak_ptr<Connection>> budget_waiters_;  // GUARDED_BY(budget_mu_)
  std::atomic<int64_t> snapshots_open_{0};

  // One worker for requests that wait on the disk or run long (FLUSH,
  // BACKUP, REINDEX, SNAPSHOT_OPEN, LOD queries and the marking of
  // LOD_REBUILD, writes under back-pressure), so that no I/O
  // thread does and a client spamming them cannot spawn threads. Each
  // connection (`owner`) has its own queue, run in order; the worker takes
  // one task from each owner with tasks in turn, so a connection with many
  // queued delays another's by one task at most.
  void RunBackground(const void* owner, std::function<void()> task);
  // Runs `task` on the read pool (two threads): reads too long for an I/O
  // thread (ReadBoxOnPool).
  void RunRead(std::function<void()> task);
  std::unique_ptr<asio::thread_pool> read_pool_;
  std::mutex background_mu_;
  std::condition_variable background_cv_;
  // GUARDED_BY(background_mu_): the queues, and the owners with tasks in turn order.
  std::map<const void*, std::deque<std::function<void()>>> background_tasks_;
  std::deque<const void*> background_turns_;
  bool background_stop_ = false;  // GUARDED_BY(background_mu_)
  std::thread background_;
};

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_SERVER_H_
