#include "daemon/server.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_format.h"
#include "daemon/connection.h"
#include "daemon/hello_throttle.h"
#include "daemon/log.h"
#include "daemon/session.h"
#include "engine/status.h"
#include "index/s2_index.h"
#include "protocol/frame.h"

namespace voxdb::daemon {

using protocol::Role;
using protocol::WireStatus;

bool RequiresTokens(const std::string& address) {
  boost::system::error_code ec;
  const auto a = asio::ip::make_address(address, ec);
  return ec || !a.is_loopback();
}

Server::Server(const ServerOptions& options, engine::Node* node)
    : options_(options),
      node_(node),
      db_(node->partition_count() == 1 ? node->layout()->parts[0].db.get() : nullptr),
      lod_(options.lod),
      acceptor_(io_),
      hub_(std::make_unique<SubscriptionHub>(node_, options.subscriptions, options.metrics)),
      hello_throttle_(std::make_unique<HelloThrottle>()),
      read_pool_(std::make_unique<asio::thread_pool>(2)) {
  background_ = std::thread([this] {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> l(background_mu_);
        background_cv_.wait(l, [&] { return background_stop_ || !background_turns_.empty(); });
        if (background_turns_.empty()) return;  // stopping, all done
        const void* owner = background_turns_.front();
        background_turns_.pop_front();
        auto it = background_tasks_.find(owner);
        task = std::move(it->second.front());
        it->second.pop_front();
        if (it->second.empty()) {
          background_tasks_.erase(it);
        } else {
          background_turns_.push_back(owner);  // its next task after the others'
        }
      }
      task();
    }
  });
}

Server::~Server() { JoinBackground(); }

StatusOr<uint16_t> Server::Listen() {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(options_.listen_address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrFormat("listen address '%s' is not an IP address", options_.listen_address));
  }
  const tcp::endpoint endpoint(address, options_.listen_port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return IoError(absl::StrFormat("cannot listen on %s:%u: %s", options_.listen_address,
                                   options_.listen_port, ec.message()));
  }
  Accept();
  log_timer_ = std::make_unique<asio::steady_timer>(io_);
  TickLogs();
  return acceptor_.local_endpoint().port();
}

void Server::TickLogs() {
  FlushLimitedLogs();
  if (stopping_) return;
  log_timer_->expires_after(std::chrono::seconds(1));
  log_timer_->async_wait([this](boost::system::error_code ec) {
    if (!ec) TickLogs();
  });
}

Role Server::Authenticate(const std::string& token) const {
  Role granted = Role::kNone;
  for (const Token& t : options_.tokens) {
    uint8_t diff = t.secret.size() == token.size() ? 0 : 1;
    for (size_t i = 0; i < t.secret.size(); ++i) {
      diff |= static_cast<uint8_t>(t.secret[i] ^ (i < token.size() ? token[i] : 0));
    }
    if (diff == 0 && t.role > granted) granted = t.role;
  }
  return granted;
}

void Server::Accept() {
  acceptor_.async_accept(
      asio::make_strand(io_), [this](boost::system::error_code ec, tcp::socket socket) {
        if (ec) {
          if (!stopping_) Accept();
          return;
        }
        if (connections_.load() >= static_cast<uint64_t>(options_.max_connections)) {
          Reject(std::move(socket));
        } else {
          ++connections_;
          ++accepted_;
          boost::system::error_code ignored;
          socket.set_option(tcp::no_delay(true), ignored);
          std::make_shared<Connection>(this, std::move(socket))->Start();
        }
        Accept();
      });
}

// Over the connection limit: one BUSY frame (request id 0), if the socket
// takes it at once, then close.
void Server::Reject(tcp::socket socket) {
  ++rejected_;
  Log(LogLevel::kWarn, "refusing a connection: %d connections is the limit",
      options_.max_connections);
  const std::string message = absl::StrFormat("too many connections (the limit is %d); retry later",
                                              options_.max_connections);
  protocol::FrameWriter frame(message.size());
  frame.Append(message.data(), message.size());
  const std::vector<uint8_t> bytes = frame.Seal(0, 0, protocol::kFlagReply, WireStatus::kBusy);
  boost::system::error_code ignored;
  socket.non_blocking(true, ignored);
  socket.write_some(asio::buffer(bytes), ignored);
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
}

void Server::Run() {
  const int threads = options_.io_threads > 0
                          ? options_.io_threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  auto guard = asio::make_work_guard(io_);
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([this] { io_.run(); });
  // Drain() stops the context once what was in flight at Stop() is answered.
  io_.run();
  for (auto& t : pool) t.join();
}

void Server::RunBackground(const void* owner, std::function<void()> task) {
  {
    std::lock_guard<std::mutex> l(background_mu_);
    auto& queue = background_tasks_[owner];
    if (queue.empty()) background_turns_.push_back(owner);
    queue.push_back(std::move(task));
  }
  background_cv_.notify_one();
}

void Server::RunRead(std::function<void()> task) { asio::post(*read_pool_, std::move(task)); }

void Server::JoinBackground() {
  hub_->Stop();  // the dispatcher reads the database too
  {
    std::lock_guard<std::mutex> l(background_mu_);
    if (background_stop_) return;
    background_stop_ = true;
  }
  read_pool_->join();  // the reads still running finish (they are bounded)
  background_cv_.notify_all();
  background_.join();
}

ServerStats Server::stats() const {
  ServerStats s;
  s.connections_open = connections_;
  s.connections_accepted = accepted_;
  s.connections_rejected = rejected_;
  s.auth_failures = auth_failures_;
  s.permission_denied = permission_denied_;
  s.idle_closed = idle_closed_;
  s.slow_closed = slow_closed_;
  s.protocol_errors = protocol_errors_;
  s.requests = requests_;
  s.bytes_in = bytes_in_;
  s.bytes_out = bytes_out_;
  s.in_flight = in_flight_;
  s.request_buffer_bytes = request_bytes_;
  s.request_buffer_waits = budget_waits_;
  s.deferred_writes = deferred_writes_;
  s.snapshots_open = static_cast<uint64_t>(std::max<int64_t>(0, snapshots_open_.load()));
  s.subscriptions = hub_->stats();
  s.streams_open = stream_counters_.open;
  s.stream_chunks = stream_counters_.chunks;
  s.stream_bytes = stream_counters_.bytes;
  s.stream_unloads = stream_counters_.unloads;
  {
    std::lock_guard<std::mutex> l(lod_mu_);
    if (engine::LodPyramid* lod = lod_.load(); lod != nullptr) {
      s.lod_levels = lod->levels();
      s.lod_dirty = lod->DirtyCount();
    }
  }
  s.unsent_bytes = unsent_;
  s.uptime_seconds = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_).count());
  return s;
}

void Server::Stop() {
  if (stopping_.exchange(true)) return;
  asio::post(io_, [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    drain_timer_ = std::make_unique<asio::steady_timer>(io_);
    std::vector<std::shared_ptr<Connection>> open;
    {
      std::lock_guard<std::mutex> l(live_mu_);
      for (auto& [_, weak] : live_) {
        if (auto c = weak.lock()) open.push_back(std::move(c));
      }
    }
    for (auto& c : open) c->NotifyStop();
    // A LOD_REBUILD waiting for the builder is answered now (its nodes stay
    // marked: the builder resumes them after a restart).
    if (engine::LodPyramid* lod = lod_.load(); lod != nullptr) {
      lod->CancelWaiters(
          ClosingError("voxdbd is stopping: the LOD rebuild goes on after the restart"));
    }
    Drain(Clock::now() + options_.shutdown_timeout);
  });
}

absl::Status Server::RelayoutBusy() {
  return BusyError("a partition split or move is under way: retry in a moment");
}

namespace {

// Waits until pred() or `limit` passes; pred()'s last value.
bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace

bool Server::CutOffSessions(const std::string& why) {
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard<std::mutex> l(live_mu_);
    for (auto& [_, weak] : live_) {
      if (auto c = weak.lock()) open.push_back(std::move(c));
    }
  }
  // What the closed connections' sessions held: once none is left, no
  // stream job or snapshot read uses the partition any more.
  struct Held {
    std::mutex mu;
    std::vector<std::weak_ptr<const void>> held;  // GUARDED_BY(mu)
    std::atomic<size_t> visited{0};
  };
  auto held = std::make_shared<Held>();
  for (auto& c : open) {
    asio::post(c->executor(), [c, held, why] {
      Session& s = c->session();
      {
        // A connection closed already may still have a stream job running.
        std::lock_guard<std::mutex> l(held->mu);
        for (const auto& [_, snap] : s.snapshots) held->held.push_back(snap);
        if (s.stream) held->held.push_back(s.stream);
      }
      if (!c->closed() &&
          (!s.snapshots.empty() || s.stream || !s.subscriptions.empty() || s.opening_snapshots)) {
        c->CutOff(why);
      }
      ++held->visited;
    });
  }
  // A closed connection's session (its stream) goes with the connection:
  // hold none of them while waiting.
  const size_t visits = open.size();
  open.clear();
  // Each visit is a short task on its connection's strand.
  if (!WaitUntil([&] { return held->visited == visits; }, std::chrono::seconds(10))) {
    return false;
  }
  std::vector<std::weak_ptr<const void>> all;
  {
    std::lock_guard<std::mutex> l(held->mu);
    all.swap(held->held);
  }
  return WaitUntil(
      [&] {
        for (const auto& w : all) {
          if (!w.expired()) return false;
        }
        return true;
      },
      std::chrono::seconds(10));
}

StatusOr<engine::LayoutChangeReport> Server::ChangeLayout(
    const std::function<StatusOr<engine::LayoutChangeReport>()>& change) {
  engine::Database* before = db_.load();
  auto rebind = [&](engine::Database* db) {
    hub_->Wake();  // it follows the node's layout itself
    engine::LodPyramid* lod = nullptr;
    if (db != nullptr && options_.rebind_lod) lod = options_.rebind_lod(db, db != before);
    {
      std::lock_guard<std::mutex> l(lod_mu_);
      lod_ = lod;
    }
    db_ = db;
    relayout_ = false;
  };
  if (before != nullptr) {
    relayout_ = true;
    // Requests that read db_ or lod_ before the flag was set finish their
    // synchronous part; those on the worker run after this task and check
    // again there.
    WaitUntil([&] { return one_users_.load() == 0; }, std::chrono::hours(1));
    {
      std::lock_guard<std::mutex> l(lod_mu_);
      lod_ = nullptr;
    }
    if (options_.rebind_lod) {
      options_.rebind_lod(nullptr, false);  // stops the builder
    } else if (options_.lod != nullptr) {
      options_.lod->Stop();
    }
    if (!CutOffSessions("a partition split or move detaches snapshots, streams and "
                        "subscriptions: reconnect (subscriptions resume with from_seq)")) {
      rebind(before);
      return BusyError(
          "a closed connection's stream or snapshot did not let go of the partition within "
          "10 s: nothing changed, try again");
    }
    db_ = nullptr;
  }
  StatusOr<engine::LayoutChangeReport> result = change();
  const std::shared_ptr<const engine::Node::Layout> now = node_->layout();
  // The S2 index is not copied (engine/partition_copy.h): each new
  // partition's is built from its chunks before the reply says OK (the
  // flusher indexes what is written meanwhile).
  if (result.ok()) {
    for (const engine::Node::Part& part : now->parts) {
      if (std::find(result->new_ids.begin(), result->new_ids.end(), part.spec.id) ==
          result->new_ids.end()) {
        continue;
      }
      uint64_t entries = 0;
      if (absl::Status s = index::Rebuild(part.db.get(), &entries); !s.ok()) {
        Log(LogLevel::kError, "the S2 index of partition %u was not built: %s", part.spec.id,
            s.ToString());
        result = absl::Status(s.code(), absl::StrFormat("the layout changed, but the S2 index of "
                                                        "new partition %u was not built (REINDEX "
                                                        "or a restart builds it): %s",
                                                        part.spec.id, s.message()));
        break;
      }
    }
  }
  // The layout's Database stays open while the node serves it: a later
  // change of it comes through here again.
  rebind(now->parts.size() == 1 ? now->parts[0].db.get() : nullptr);
  return result;
}

void Server::Register(const std::shared_ptr<Connection>& c) {
  std::lock_guard<std::mutex> l(live_mu_);
  live_[c.get()] = c;
}

// Under budget_mu_: the total is over the budget, so `c` may go on only with
// the one right to (so that some large request can always complete), else
// it waits (registered before the total is read again: see
// RequestBytesFreed).
bool Server::MayBuffer(const std::shared_ptr<Connection>& c) {
  std::lock_guard<std::mutex> l(budget_mu_);
  ++budget_waiting_;
  if (request_bytes_ <= options_.max_request_buffer_bytes) {
    --budget_waiting_;
    return true;
  }
  if (budget_lease_ == nullptr || budget_lease_ == c.get()) {
    budget_lease_ = c.get();
    --budget_waiting_;
    return true;
  }
  budget_waiters_.push_back(c);
  ++budget_waits_;
  return false;
}

// `c` released bytes (`done`: it holds less than the exempt amount now, so
// gives back the right to go on past the budget): wakes the waiters once
// the total is under the budget or the right is free.
void Server::RequestBytesFreed(const Connection* c, bool done) {
  if (budget_waiting_ == 0 && budget_lease_ != c) return;
  std::vector<std::weak_ptr<Connection>> wake;
  {
    std::lock_guard<std::mutex> l(budget_mu_);
    if (done && budget_lease_ == c) budget_lease_ = nullptr;
    if (budget_waiters_.empty()) return;
    if (request_bytes_ > options_.max_request_buffer_bytes && budget_lease_ != nullptr) return;
    wake.swap(budget_waiters_);
    budget_waiting_ -= wake.size();
  }
  for (auto& weak : wake) {
    if (auto w = weak.lock()) w->ResumeFromBudget();
  }
}

void Server::Unregister(const Connection* c) {
  std::lock_guard<std::mutex> l(live_mu_);
  live_.erase(c);
}

// Polls until every connection has answered what it read, written its
// replies and closed (each counts its requests from decoding to the reply
// written, whether they run on its I/O thread or not), and nothing runs on
// the worker for a connection gone; or until the deadline. Then stops the
// loop.
void Server::Drain(Clock::time_point deadline) {
  if ((connections_ == 0 && in_flight_ == 0) || Clock::now() >= deadline) {
    FlushLimitedLogs(/*all=*/true);
    io_.stop();
    return;
  }
  drain_timer_->expires_after(std::chrono::milliseconds(5));
  drain_timer_->async_wait([this, deadline](boost::system::error_code) { Drain(deadline); });
}

}  // namespace voxdb::daemon
