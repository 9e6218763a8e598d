// One client connection of voxdbd's server: the transport. It reads frames
// without blocking and hands each request to the gate (daemon/dispatch.h),
// stops reading while its client owes it too many reply bytes or the server
// holds too many partly received requests, queues replies and pushed frames
// in an outbox written straight from its strand, enforces the idle and send
// timeouts, and closes gracefully (FIN after the last reply, then linger).
//
// The handlers (daemon/dispatch.h) answer through Reply() and Enqueue(),
// mark a request answered later with BeginAsync()/EndAsync(), and run long
// work with RunOnWorker(), RunOnReadPool() and SubmitWrite(). What a
// connection holds beyond the transport is its Session (daemon/session.h).
//
// Thread-safety: every method runs on the connection's strand, except
// Start(), NotifyStop() and ResumeFromBudget() (any thread; they post to the
// strand) and the PushTarget methods (the subscription dispatcher's thread).
#ifndef VOXDB_DAEMON_CONNECTION_H_
#define VOXDB_DAEMON_CONNECTION_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/asio.h"
#include "daemon/server.h"
#include "daemon/session.h"
#include "daemon/subscriptions.h"
#include "protocol/frame.h"
#include "protocol/opcodes.h"

namespace voxdb::daemon {

using Clock = std::chrono::steady_clock;

class Server::Connection : public std::enable_shared_from_this<Connection>, public PushTarget {
 public:
  Connection(Server* server, tcp::socket socket);

  // Called from the acceptor: the connection's work runs on its strand.
  void Start();
  // The server is stopping (from any thread): answer what was read, answer
  // UNAVAILABLE what is still readable, then close after the replies.
  void NotifyStop();
  // Posted by the server when the request buffer total fell or the right to
  // go on past it is free.
  void ResumeFromBudget();

  // --- PushTarget: called by the subscription dispatcher's thread ---

  void Push(std::vector<uint8_t> frame) override;
  uint64_t PushBacklog() const override { return push_posted_ + outbox_bytes_; }
  void WakeWhenDrained() override { wake_hub_on_drain_ = true; }
  void CutOff(const std::string& why) override;

  // --- For the gate and the handlers, on the strand ---

  Server& server() const { return *server_; }
  Session& session() { return session_; }
  tcp::socket::executor_type executor() { return socket_.get_executor(); }
  protocol::Role role() const { return role_; }
  // A good HELLO: the connection gets `role` and the full frame limit.
  void GrantRole(protocol::Role role);
  const std::string& peer() const { return peer_; }                  // "address:port"
  const std::string& peer_address() const { return peer_address_; }  // HelloThrottle's key
  bool closed() const { return closed_; }
  // Set when the connection closes: long reads of it stop.
  const std::shared_ptr<std::atomic<bool>>& gone() const { return gone_; }
  // Closes once every request read is answered and its reply written (a
  // failed HELLO).
  void CloseAfterReplies() { close_after_write_ = true; }

  // Queue the reply to request `id` (opcode `op`): a status (OK with an
  // empty payload), an error with its message, or OK with `payload`. A
  // reply longer than the frame limit goes out as TOO_LARGE.
  void Reply(uint8_t op, uint64_t id, const absl::Status& s);
  void ReplyError(uint8_t op, uint64_t id, protocol::WireStatus status, absl::string_view message);
  void Reply(uint8_t op, uint64_t id, protocol::WireStatus status, std::vector<uint8_t> payload);
  // Queues a whole frame (a reply built in place, or a pushed frame).
  void Enqueue(std::vector<uint8_t> frame);
  // Answers `refused` after `delay` (a failed HELLO), from a timer on this
  // strand: no thread waits. The request counts as in flight meanwhile;
  // when the server stops or the connection closes, the timer is cancelled
  // and the reply goes at once. `answered` runs as the reply is queued.
  void ReplyAfter(uint8_t op, uint64_t id, std::chrono::milliseconds delay, absl::Status refused,
                  std::function<void()> answered);

  // The current request is answered later (its reply queued from another
  // handler of this strand); returns when it began. EndAsync(start) is
  // called on the strand just before that reply is queued.
  Clock::time_point BeginAsync();
  void EndAsync(Clock::time_point start);

  // Runs `work` on the server's worker (it may wait on the disk or run
  // long), then answers the request on this strand with its payload or
  // error.
  void RunOnWorker(uint8_t op, uint64_t id,
                   std::function<absl::StatusOr<std::vector<uint8_t>>()> work);
  // Runs `work` on the server's read pool, then answers the request on this
  // strand: on success `work`'s value is the whole reply frame, sealed
  // (protocol::FrameWriter). Counted like a worker job and in flight, so
  // SIGTERM answers it.
  void RunOnReadPool(uint8_t op, uint64_t id,
                     std::function<absl::StatusOr<std::vector<uint8_t>>()> work);
  // Queues `task` on the server's worker, in this connection's turn.
  void RunInBackground(std::function<void()> task);
  // Runs a write now, on this I/O thread, unless the database says it would
  // wait on back-pressure: then (and for this connection's later writes,
  // while any are queued, to keep their order) on the background worker, so
  // that no I/O thread waits for the flusher.
  void SubmitWrite(std::function<void()> submit);
  // A completion for an engine write: posts the reply back to this strand.
  engine::WriteDone WriteDone(uint8_t op, uint64_t id);

 private:
  void StartOnStrand();
  void Read();
  bool WantInput() const;
  void Consume(std::span<const uint8_t> in);
  void UpdateHeld();
  bool OverBudget();
  void OnStop();
  void DropPushes();
  void MaybeFinish();
  void Linger();
  void OnBytes(std::span<const uint8_t> in);
  void MaybeResume();
  void Dispatch(protocol::Frame frame);
  void Finished(uint8_t op, uint64_t id, Clock::time_point start, protocol::WireStatus status);
  void Write();
  void OnWritten(size_t n);
  void Drained();
  void ArmTimer();
  void CheckTimeouts();
  void Close();
  void ReleaseOutbox();

  Server* server_;
  const ServerOptions& options_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  asio::steady_timer linger_timer_;
  asio::steady_timer hello_timer_;  // a delayed HELLO failure (ReplyAfter)
  protocol::Role role_;
  protocol::FrameDecoder decoder_;
  Session session_;
  std::array<uint8_t, 64 * 1024> buffer_{};
  std::vector<uint8_t> pending_input_;  // read but not decoded while paused_
  bool paused_ = false;                 // not reading: too many reply bytes owed
  std::deque<std::vector<uint8_t>> outbox_;
  size_t front_offset_ = 0;  // bytes of outbox_.front() already sent
  // Written on the strand; read by the subscription dispatcher too.
  std::atomic<uint64_t> outbox_bytes_{0};
  std::atomic<uint64_t> push_posted_{0};  // pushed frames posted, not in the outbox yet
  std::atomic<bool> wake_hub_on_drain_{false};
  bool writing_ = false;
  // Closing once every request read is answered and its reply written (a
  // protocol error, a failed HELLO, the client's EOF).
  bool close_after_write_ = false;
  bool draining_ = false;        // the server is stopping (OnStop)
  bool lingering_ = false;       // FIN sent; reading only to discard
  bool reading_ = false;         // a wait for input (or a read turn) is pending
  bool handling_input_ = false;  // inside Consume()
  bool budget_paused_ = false;   // not reading: over max_request_buffer_bytes
  uint64_t held_ = 0;            // counted in server_->request_bytes_
  // A connection holding less of a partial request reads on past the budget
  // (small requests, and the first 64 KiB of large ones, are never held up).
  static constexpr uint64_t kBudgetExempt = 64 << 10;
  bool closed_ = false;
  int in_flight_ = 0;
  int unanswered_ = 0;  // requests decoded whose reply is not queued yet
  // Bytes one Read() turn reads before the strand's other handlers run.
  static constexpr size_t kReadTurnBytes = 4u << 20;
  // How long a closing connection discards what the client still sends
  // (requests it sent before it saw the FIN) before closing the socket.
  static constexpr auto kLinger = std::chrono::milliseconds(500);
  // Bytes one Write() turn writes before the strand's other handlers run.
  static constexpr size_t kWriteTurnBytes = 4u << 20;
  int deferred_writes_ = 0;  // writes queued on the background worker
  // Jobs of this connection queued on or running on the shared worker
  // (RunOnWorker) or the read pool: at kMaxWorkerJobs its next requests
  // wait, so one connection cannot queue unbounded work there.
  static constexpr int kMaxWorkerJobs = 8;
  int worker_jobs_ = 0;
  // Set when the connection closes: its reads on the read pool stop.
  std::shared_ptr<std::atomic<bool>> gone_ = std::make_shared<std::atomic<bool>>(false);
  std::string peer_;          // "address:port", for the log
  std::string peer_address_;  // ThrottleKey(): failed HELLOs and log summaries count by it
  Clock::time_point dispatch_start_;
  // When the request a reply answers began; set while that reply is queued.
  std::optional<Clock::time_point> reply_start_;
  Clock::time_point last_request_;
  Clock::time_point last_send_progress_;
};

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_CONNECTION_H_
