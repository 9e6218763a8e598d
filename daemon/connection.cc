#include "daemon/connection.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "daemon/dispatch.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "protocol/messages.h"

namespace voxdb::daemon {
namespace {

using protocol::Opcode;
using protocol::Role;
using protocol::WireStatus;

// Whether a whole frame in a buffer was pushed (EVENTS, STREAM_DATA).
bool IsPush(const std::vector<uint8_t>& frame) { return protocol::PeekHeader(frame).is_push(); }

// The address whose failed HELLOs count together: an IPv4 address (an
// IPv4-mapped IPv6 one too), or an IPv6 address's /64 (one host commonly
// holds a whole /64).
std::string ThrottleKey(const asio::ip::address& a) {
  if (!a.is_v6()) return a.to_string();
  const asio::ip::address_v6 v6 = a.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
  asio::ip::address_v6::bytes_type b = v6.to_bytes();
  std::fill(b.begin() + 8, b.end(), 0);
  return asio::ip::address_v6(b).to_string() + "/64";
}

}  // namespace

Server::Connection::Connection(Server* server, tcp::socket socket)
    : server_(server),
      options_(server->options_),
      socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      linger_timer_(socket_.get_executor()),
      hello_timer_(socket_.get_executor()),
      role_(options_.tokens.empty() ? Role::kAdmin : Role::kNone),
      decoder_(role_ == Role::kNone
                   ? std::min(options_.unauthenticated_max_payload, options_.max_frame_payload)
                   : options_.max_frame_payload),
      last_request_(Clock::now()) {}

void Server::Connection::Start() {
  asio::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->StartOnStrand(); });
}

void Server::Connection::NotifyStop() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->OnStop(); });
}

void Server::Connection::GrantRole(Role role) {
  role_ = role;
  decoder_.set_max_payload(options_.max_frame_payload);
}

void Server::Connection::StartOnStrand() {
  boost::system::error_code ec;
  if (socket_.non_blocking(true, ec); ec) {  // Write() writes directly, never blocking
    Log(LogLevel::kWarn, "closing a connection: %s", ec.message());
    return Close();
  }
  const tcp::endpoint remote = socket_.remote_endpoint(ec);
  peer_ = ec ? "unknown" : absl::StrFormat("%s:%u", remote.address().to_string(), remote.port());
  peer_address_ = ec ? "unknown" : ThrottleKey(remote.address());
  Log(LogLevel::kDebug, "connection from %s", peer_);
  server_->Register(shared_from_this());
  ArmTimer();
  Read();
  if (server_->stopping_) OnStop();  // accepted as the server stopped
}

void Server::Connection::Push(std::vector<uint8_t> frame) {
  const size_t size = frame.size();
  push_posted_ += size;
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self, frame = std::move(frame), size]() mutable {
    self->push_posted_ -= size;
    const uint64_t id = protocol::PeekHeader(frame).request_id;
    // Not after UNSUBSCRIBE's reply, even if the dispatcher built it before;
    // nothing new while shutting down (it would keep the drain waiting).
    if (self->session_.subscriptions.count(id) == 0 || self->server_->stopping_) {
      self->Drained();  // what waited on these bytes may go on
      return;
    }
    self->Enqueue(std::move(frame));
  });
}

void Server::Connection::CutOff(const std::string& why) {
  auto self = shared_from_this();
  asio::post(socket_.get_executor(), [self, why] {
    if (self->closed_) return;
    Log(LogLevel::kInfo, "closing %s: %s", self->peer_, why);
    self->Close();
  });
}

// Posted by the server when the total fell or the right to go on is free.
void Server::Connection::ResumeFromBudget() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    if (!self->budget_paused_ || self->closed_) return;
    self->budget_paused_ = false;
    self->Read();
    self->MaybeFinish();
  });
}

// Reads what the socket has, without blocking, and handles it; then waits
// for more. Data stays in the kernel until it is read here, so while
// stopping, "nothing readable" (socket_.available()) is exact.
void Server::Connection::Read() {
  if (closed_ || reading_ || handling_input_) return;
  if (!lingering_ && !WantInput()) return;
  size_t turn = 0;
  for (;;) {
    if (closed_ || (!lingering_ && !WantInput())) return;
    if (turn >= kReadTurnBytes) {  // let the strand's other handlers run
      reading_ = true;
      asio::post(socket_.get_executor(), [self = shared_from_this()] {
        self->reading_ = false;
        self->Read();
      });
      return;
    }
    if (!lingering_ && OverBudget()) return;  // ResumeFromBudget() reads on
    boost::system::error_code ec;
    const size_t n = socket_.read_some(asio::buffer(buffer_), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      reading_ = true;
      socket_.async_wait(tcp::socket::wait_read,
                         [self = shared_from_this()](boost::system::error_code wait_ec) {
                           self->reading_ = false;
                           if (self->closed_) return;
                           if (wait_ec) return self->Close();
                           self->Read();
                         });
      return;
    }
    if (ec == asio::error::eof && !lingering_) {
      // The client sent all it will: answer what it asked, then close.
      close_after_write_ = true;
      return MaybeFinish();
    }
    if (ec) return Close();  // lingering: EOF, the client saw the FIN
    turn += n;
    if (lingering_) continue;  // discarded: it came after the last reply
    server_->bytes_in_ += n;
    Consume(std::span<const uint8_t>(buffer_.data(), n));
  }
}

// Whether requests are being read (not while paused, nor once the
// connection is closing after its replies).
bool Server::Connection::WantInput() const {
  return !paused_ && !budget_paused_ && !close_after_write_;
}

void Server::Connection::Consume(std::span<const uint8_t> in) {
  const bool outer = !handling_input_;
  handling_input_ = true;  // no nested Read() or MaybeFinish() meanwhile
  OnBytes(in);
  UpdateHeld();
  if (outer) handling_input_ = false;
  if (outer) MaybeFinish();
}

// Accounts this connection's bytes of requests read and not dispatched
// yet (a partial frame in the decoder, input kept while paused).
void Server::Connection::UpdateHeld() {
  const uint64_t now = closed_ ? 0 : decoder_.buffered() + pending_input_.size();
  if (now == held_) return;
  const uint64_t before = held_;
  held_ = now;
  if (now > before) {
    server_->request_bytes_ += now - before;
  } else {
    server_->request_bytes_ -= before - now;
    server_->RequestBytesFreed(this, now < kBudgetExempt);
  }
}

// Whether to stop reading for now: this connection holds kBudgetExempt
// bytes or more of a partial request while the server's total is over
// max_request_buffer_bytes, and another such connection holds the one
// right to go on past it.
bool Server::Connection::OverBudget() {
  if (held_ < kBudgetExempt || server_->request_bytes_ <= options_.max_request_buffer_bytes) {
    return false;
  }
  if (server_->MayBuffer(shared_from_this())) return false;
  budget_paused_ = true;
  return true;
}

void Server::Connection::OnStop() {
  if (closed_ || draining_) return;
  draining_ = true;
  hello_timer_.cancel();  // a delayed HELLO failure is answered now
  DropPushes();           // only replies are waited for
  bool replies = false;
  for (const auto& f : outbox_) replies = replies || !IsPush(f);
  if (!replies) ReleaseOutbox();  // a pushed frame half sent: its client is not reading
  MaybeFinish();
}

// Drops the pushed frames queued and not begun (events, stream data).
void Server::Connection::DropPushes() {
  std::deque<std::vector<uint8_t>> kept;
  for (size_t i = 0; i < outbox_.size(); ++i) {
    if (IsPush(outbox_[i]) && !(i == 0 && front_offset_ > 0)) {
      outbox_bytes_ -= outbox_[i].size();
      server_->unsent_ -= outbox_[i].size();
      continue;
    }
    kept.push_back(std::move(outbox_[i]));
  }
  outbox_ = std::move(kept);
}

// Closes gracefully once the connection is closing (close_after_write_,
// or the server stopping) and owes nothing: every request read answered,
// every reply written, and, while stopping, nothing left to read (what
// is readable still gets its UNAVAILABLE reply first).
void Server::Connection::MaybeFinish() {
  if (closed_ || lingering_ || handling_input_) return;
  if (!close_after_write_ && !draining_) return;
  if (unanswered_ > 0 || !outbox_.empty()) return;
  if (!close_after_write_) {
    if (!pending_input_.empty()) return;  // MaybeResume() decodes it
    boost::system::error_code ec;
    if (!paused_ && !budget_paused_ && socket_.available(ec) > 0 && !ec) return Read();
  }
  Linger();
}

// FIN after the last reply, then read and discard what the client still
// sends until its EOF (or kLinger): closing a socket with unread input
// would send a reset, and a reset makes the client's kernel drop replies
// it has not read yet.
void Server::Connection::Linger() {
  lingering_ = true;
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  pending_input_.clear();
  UpdateHeld();
  linger_timer_.expires_after(kLinger);
  linger_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->Close();
  });
  Read();
}

// Decodes and dispatches the frames in `in`. Stops early (keeping the rest
// in pending_input_) when this connection owes too many reply bytes (the
// writer resumes it), or while a write of it waits on back-pressure on the
// worker: a later request, a read above all, must not run before it
// (PROTOCOL.md, "Order on one connection"); the write resumes it once
// submitted.
void Server::Connection::OnBytes(std::span<const uint8_t> in) {
  while (!in.empty() && !closed_ && !close_after_write_) {
    if (outbox_bytes_ > options_.max_buffered_bytes || deferred_writes_ > 0 ||
        worker_jobs_ >= kMaxWorkerJobs) {
      paused_ = true;
      pending_input_.assign(in.begin(), in.end());
      return;
    }
    size_t used = 0;
    protocol::Frame frame;
    const auto result = decoder_.Feed(in, &used, &frame);
    in = in.subspan(used);
    if (result == protocol::FrameDecoder::Result::kError) {
      // An untrusted frame: answer if we can, then close this connection.
      ++server_->protocol_errors_;
      std::string message(decoder_.error().message());
      LogLimited(LogLevel::kWarn, "protocol errors", peer_address_,
                 "protocol error from %s, closing: %s", peer_, message);
      if (role_ == Role::kNone && decoder_.error_wire_status() == WireStatus::kTooLarge) {
        message += absl::StrFormat(
            " (before authenticating, frames may carry at most %u bytes: send HELLO with a "
            "token first)",
            options_.unauthenticated_max_payload);
      }
      close_after_write_ = true;  // before the reply, which may be written at once
      ReplyError(0, decoder_.error_request_id(), decoder_.error_wire_status(), message);
      return;
    }
    if (result == protocol::FrameDecoder::Result::kFrame) {
      last_request_ = Clock::now();
      ++server_->requests_;
      ++unanswered_;  // until its reply is queued (Enqueue)
      ++server_->unanswered_;
      Dispatch(std::move(frame));
    }
  }
}

// Called by the writer when the outbox shrank.
void Server::Connection::MaybeResume() {
  if (!paused_ || outbox_bytes_ > options_.max_buffered_bytes) return;
  paused_ = false;
  std::vector<uint8_t> in = std::move(pending_input_);
  pending_input_.clear();
  Consume(in);
  if (!paused_) Read();
}

// Runs one request; logs it when slow (its reply may come later: see
// BeginAsync).
void Server::Connection::Dispatch(protocol::Frame frame) {
  dispatch_start_ = Clock::now();
  reply_start_ = dispatch_start_;  // a reply queued now answers this request
  Server::Handlers::Dispatch(*this, std::move(frame));
  reply_start_.reset();  // answered later: its completion sets it again
}

// A request's reply is being queued (before any byte of it can reach the
// client, so a client that saw the reply sees it counted): metrics and the
// slow-request log.
void Server::Connection::Finished(uint8_t op, uint64_t id, Clock::time_point start,
                                  WireStatus status) {
  const auto took = Clock::now() - start;
  if (options_.metrics != nullptr) options_.metrics->OnRequest(op, status, took);
  if (options_.slow_request.count() > 0 && took >= options_.slow_request) {
    Log(LogLevel::kWarn, "slow request: %s id %u from %s took %.3f ms (%s)",
        protocol::OpcodeName(static_cast<Opcode>(op)), id, peer_,
        std::chrono::duration<double, std::milli>(took).count(), protocol::WireStatusName(status));
  }
}

void Server::Connection::ReplyError(uint8_t op, uint64_t id, WireStatus status,
                                    absl::string_view message) {
  Reply(op, id, status, std::vector<uint8_t>(message.begin(), message.end()));
}

void Server::Connection::Enqueue(std::vector<uint8_t> frame) {
  if (reply_start_) {
    const protocol::FrameHeader h = protocol::PeekHeader(frame);
    Finished(h.opcode, h.request_id, *reply_start_, static_cast<WireStatus>(h.status));
    reply_start_.reset();
    --unanswered_;
    --server_->unanswered_;
  }
  if (closed_) return;
  if (outbox_.empty()) last_send_progress_ = Clock::now();
  outbox_bytes_ += frame.size();
  server_->unsent_ += frame.size();
  if (!IsPush(frame)) server_->unsent_replies_ += frame.size();
  outbox_.push_back(std::move(frame));
  if (!writing_) Write();
}

// Writes as much of the outbox as the socket takes, many frames per
// system call, straight from the strand (the socket is non-blocking);
// when the socket is full, waits for room and goes on. After
// kWriteTurnBytes it lets the strand's other handlers run first. (One
// async_write_some per batch cost a trip through the scheduler per system
// call: a 100 MB stream spent 40% of its time waiting for completions.)
void Server::Connection::Write() {
  writing_ = true;  // what Drained() below enqueues waits for this loop
  size_t turn = 0;
  for (;;) {
    if (closed_) {
      writing_ = false;
      return ReleaseOutbox();
    }
    if (outbox_.empty()) {
      writing_ = false;
      return MaybeFinish();
    }
    if (turn >= kWriteTurnBytes) {
      asio::post(socket_.get_executor(), [self = shared_from_this()] { self->Write(); });
      return;
    }
    std::vector<asio::const_buffer> buffers;
    size_t offset = front_offset_;
    for (const auto& f : outbox_) {
      buffers.emplace_back(f.data() + offset, f.size() - offset);
      offset = 0;
      if (buffers.size() == 64) break;
    }
    boost::system::error_code ec;
    const size_t n = socket_.write_some(buffers, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      socket_.async_wait(tcp::socket::wait_write,
                         [self = shared_from_this()](boost::system::error_code wait_ec) {
                           if (wait_ec) self->Close();  // then Write() lets the outbox go
                           self->Write();
                         });
      return;
    }
    if (ec) {
      Close();
      continue;
    }
    turn += n;
    OnWritten(n);
  }
}

void Server::Connection::OnWritten(size_t n) {
  last_send_progress_ = Clock::now();
  server_->bytes_out_ += n;
  server_->unsent_ -= n;
  outbox_bytes_ -= n;
  // Replies' bytes among them, frame by frame.
  for (size_t i = 0, left = n, offset = front_offset_; left > 0 && i < outbox_.size(); ++i) {
    const size_t part = std::min(left, outbox_[i].size() - offset);
    if (!IsPush(outbox_[i])) server_->unsent_replies_ -= part;
    left -= part;
    offset = 0;
  }
  while (n > 0) {
    const size_t left = outbox_.front().size() - front_offset_;
    if (n < left) {
      front_offset_ += n;
      break;
    }
    n -= left;
    front_offset_ = 0;
    server_->frame_buffers_.Put(std::move(outbox_.front()));  // a big one serves again
    outbox_.pop_front();
  }
  Drained();
  MaybeResume();
}

// Queued bytes went (written, or dropped before queueing): subscriptions
// and the stream waiting for room go on.
void Server::Connection::Drained() {
  if (wake_hub_on_drain_ && PushBacklog() < options_.subscriptions.push_window_bytes / 2 &&
      wake_hub_on_drain_.exchange(false)) {
    server_->hub_->Wake();
  }
  Stream* stream = session_.stream.get();
  if (stream != nullptr && stream->waiting_drain() && PushBacklog() < stream->window()) {
    stream->Pump();
  }
}

// The idle and send timeouts, checked on one periodic timer.
void Server::Connection::ArmTimer() {
  auto period = std::chrono::milliseconds::max();
  for (auto t : {options_.idle_timeout, options_.send_timeout}) {
    if (t.count() > 0) period = std::min(period, t);
  }
  if (period == std::chrono::milliseconds::max()) return;
  period = std::max(period / 4, std::chrono::milliseconds(10));
  timer_.expires_after(period);
  auto self = shared_from_this();
  timer_.async_wait([self](boost::system::error_code ec) {
    if (ec || self->closed_) return;
    self->CheckTimeouts();
  });
}

void Server::Connection::CheckTimeouts() {
  const auto now = Clock::now();
  if (options_.send_timeout.count() > 0 && !outbox_.empty() &&
      now - last_send_progress_ > options_.send_timeout) {
    // The client stopped reading its replies.
    ++server_->slow_closed_;
    Log(LogLevel::kInfo, "closing %s: its replies made no progress for %d ms", peer_,
        static_cast<int>(options_.send_timeout.count()));
    return Close();
  }
  // A subscriber or a stream waits for the server, not the other way round.
  if (options_.idle_timeout.count() > 0 && outbox_.empty() && in_flight_ == 0 &&
      session_.subscriptions.empty() && !session_.stream &&
      now - last_request_ > options_.idle_timeout) {
    // No whole request for that long (an idle or a trickling client).
    ++server_->idle_closed_;
    Log(LogLevel::kInfo, "closing %s: idle for %d ms", peer_,
        static_cast<int>(options_.idle_timeout.count()));
    return Close();
  }
  ArmTimer();
}

void Server::Connection::Close() {
  if (closed_) return;
  closed_ = true;
  gone_->store(true);  // long reads of this connection stop
  Log(LogLevel::kDebug, "connection from %s closed", peer_);
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  timer_.cancel();
  linger_timer_.cancel();
  hello_timer_.cancel();
  pending_input_.clear();
  UpdateHeld();  // closed_: its bytes go back to the budget
  server_->snapshots_open_ -= session_.snapshots.size();
  session_.snapshots.clear();  // their LMDB reader slots
  server_->hub_->RemoveAll(this);
  session_.subscriptions.clear();
  if (session_.stream) session_.stream->Stop();
  if (!writing_) ReleaseOutbox();  // else when the write completes
  server_->Unregister(this);
  --server_->connections_;
}

void Server::Connection::ReleaseOutbox() {
  server_->unsent_ -= outbox_bytes_;
  for (size_t i = 0; i < outbox_.size(); ++i) {
    if (!IsPush(outbox_[i]))
      server_->unsent_replies_ -= outbox_[i].size() - (i == 0 ? front_offset_ : 0);
  }
  outbox_bytes_ = 0;
  outbox_.clear();
  front_offset_ = 0;
}

Clock::time_point Server::Connection::BeginAsync() {
  ++in_flight_;
  ++server_->in_flight_;
  return dispatch_start_;
}

void Server::Connection::EndAsync(Clock::time_point start) {
  --in_flight_;
  --server_->in_flight_;
  reply_start_ = start;  // the reply queued next answers that request
}

void Server::Connection::RunOnWorker(uint8_t op, uint64_t id,
                                     std::function<absl::StatusOr<std::vector<uint8_t>>()> work) {
  auto self = shared_from_this();
  const Clock::time_point start = BeginAsync();
  ++worker_jobs_;  // past kMaxWorkerJobs its requests wait (OnBytes)
  server_->RunBackground(this, [self, op, id, start, work = std::move(work)] {
    auto result = work();
    asio::post(self->socket_.get_executor(),
               [self, op, id, start, result = std::move(result)]() mutable {
                 if (self->worker_jobs_-- == kMaxWorkerJobs) self->MaybeResume();
                 self->EndAsync(start);
                 if (!result.ok()) return self->Reply(op, id, result.status());
                 self->Reply(op, id, WireStatus::kOk, std::move(*result));
               });
  });
}

void Server::Connection::RunOnReadPool(uint8_t op, uint64_t id,
                                       std::function<absl::StatusOr<std::vector<uint8_t>>()> work) {
  auto self = shared_from_this();
  const Clock::time_point start = BeginAsync();
  ++worker_jobs_;
  server_->RunRead([self, op, id, start, work = std::move(work)] {
    auto frame = work();
    asio::post(self->socket_.get_executor(),
               [self, op, id, start, frame = std::move(frame)]() mutable {
                 if (self->worker_jobs_-- == kMaxWorkerJobs) self->MaybeResume();
                 self->EndAsync(start);
                 if (!frame.ok()) return self->Reply(op, id, frame.status());
                 self->Enqueue(std::move(*frame));
               });
  });
}

void Server::Connection::ReplyAfter(uint8_t op, uint64_t id, std::chrono::milliseconds delay,
                                    absl::Status refused, std::function<void()> answered) {
  BeginAsync();
  hello_timer_.expires_after(delay);
  hello_timer_.async_wait([self = shared_from_this(), op, id, refused,
                           answered = std::move(answered)](boost::system::error_code) {
    answered();
    // The deliberate delay is no latency of the server's (metrics, the
    // slow-request log).
    self->EndAsync(Clock::now());
    self->Reply(op, id, refused);
  });
}

void Server::Connection::SubmitWrite(std::function<void()> submit) {
  if (deferred_writes_ == 0 && !server_->node_->WritesWouldWait()) return submit();
  ++deferred_writes_;
  ++server_->deferred_writes_;
  auto self = shared_from_this();
  server_->RunBackground(this, [self, submit = std::move(submit)] {
    submit();
    asio::post(self->socket_.get_executor(), [self] {
      if (--self->deferred_writes_ == 0) self->MaybeResume();  // the requests after it
    });
  });
}

engine::WriteDone Server::Connection::WriteDone(uint8_t op, uint64_t id) {
  const Clock::time_point start = BeginAsync();
  auto self = shared_from_this();
  return [self, op, id, start](const engine::WriteResult& r) {
    asio::post(self->socket_.get_executor(), [self, r, op, id, start] {
      self->EndAsync(start);
      if (r.status.ok()) {
        self->Reply(op, id, WireStatus::kOk, protocol::EncodeU64(r.version));
      } else {
        self->Reply(op, id, r.status);
      }
    });
  };
}

void Server::Connection::Reply(uint8_t op, uint64_t id, const absl::Status& s) {
  if (s.ok()) return Reply(op, id, WireStatus::kOk, {});
  ReplyError(op, id, protocol::ToWireStatus(s), s.message());
}

void Server::Connection::Reply(uint8_t op, uint64_t id, WireStatus status,
                               std::vector<uint8_t> payload) {
  if (status == WireStatus::kOk && payload.size() > options_.max_frame_payload) {
    // No reply passes the frame limit (a query page with many fills).
    return ReplyError(
        op, id, WireStatus::kTooLarge,
        absl::StrFormat("the reply would hold %u bytes, more than the frame limit of %u: ask "
                        "for less (a smaller limit or region)",
                        payload.size(), options_.max_frame_payload));
  }
  protocol::FrameWriter frame(payload.size());
  frame.Append(payload);
  Enqueue(frame.Seal(op, id, protocol::kFlagReply, status));
}

void Server::Connection::RunInBackground(std::function<void()> task) {
  server_->RunBackground(this, std::move(task));
}

}  // namespace voxdb::daemon
