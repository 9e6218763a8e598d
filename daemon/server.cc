#include "daemon/server.h"

#include <algorithm>
#include <deque>
#include <list>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "absl/strings/str_format.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "engine/chunk_codec.h"
#include "index/s2_index.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "protocol/version.h"

namespace voxdb::daemon {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::Opcode;
using protocol::Role;
using protocol::WireStatus;

engine::VoxelCoord ToVoxel(const protocol::Voxel3& v) { return {v.x, v.y, v.z}; }
engine::VoxelBox ToBox(const protocol::Box& b) { return {ToVoxel(b.lo), ToVoxel(b.hi)}; }

// A frame buffer whose payload is appended after room for the header;
// SealFrame() writes the header once the payload is complete. Replies are
// built in place this way so that a chunk record is copied once, from the
// LMDB map (or the cache) into the socket's buffer.
std::vector<uint8_t> NewFrame(size_t payload_hint) {
  std::vector<uint8_t> bytes;
  bytes.reserve(protocol::kHeaderSize + payload_hint);
  bytes.resize(protocol::kHeaderSize);
  return bytes;
}

void SealFrame(uint8_t op, uint64_t id, WireStatus status, std::vector<uint8_t>* bytes) {
  protocol::FrameHeader h;
  h.opcode = op;
  h.flags = protocol::kFlagReply;
  h.request_id = id;
  h.status = static_cast<uint16_t>(status);
  protocol::EncodeHeader(h, static_cast<uint32_t>(bytes->size() - protocol::kHeaderSize),
                         bytes->data());
}

void Append(std::vector<uint8_t>* out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out->insert(out->end(), b, b + n);
}
template <typename T>
void AppendLE(std::vector<uint8_t>* out, T v) {
  uint8_t b[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  Append(out, b, sizeof b);
}

// Whether a whole frame in a buffer was pushed (EVENTS, STREAM_DATA).
bool IsPush(const std::vector<uint8_t>& frame) { return frame[6] & protocol::kFlagPush; }

protocol::Voxel3 FromVoxel(const engine::VoxelCoord& v) { return {v.x, v.y, v.z}; }
protocol::Box FromBox(const engine::VoxelBox& b) { return {FromVoxel(b.lo), FromVoxel(b.hi)}; }

// A QUERY_* request as the index's region. The index builds S2 regions only
// from values s2geometry takes (its constructors CHECK their angles).
StatusOr<index::Region> ToRegion(const protocol::QueryRequest& q) {
  switch (q.kind) {
    case protocol::QueryKind::kRadius:
      return index::MakeRadiusRegion(q.lat, q.lon, q.radius);
    case protocol::QueryKind::kCell:
      return index::MakeCellRegion(q.cell);
    case protocol::QueryKind::kRect:
      return index::MakeRectRegion(q.rect.lat_lo, q.rect.lon_lo, q.rect.lat_hi, q.rect.lon_hi);
    case protocol::QueryKind::kBox:
      return index::BoxRegion{ToBox(q.box)};
  }
  return absl::InvalidArgumentError("unknown kind of query");
}

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

// Failed HELLOs by peer address (ThrottleKey). The n-th failure in a row
// from an address (a failure more than kQuietPeriod after the last starts
// again at 1) has its reply delayed by 0 for the first, then kFirstDelay
// doubling up to kMaxDelay. While kMaxPending delayed failure replies to an
// address are pending, its HELLOs are refused (BUSY) without their token
// being checked: guessing on many connections at once gains nothing, and a
// client that got its reply at once learns nothing from its timing. A good
// HELLO is never delayed, and does not reset the count (a holder of a read
// token could otherwise reset it between guesses of the admin token). At
// most kMaxAddresses addresses are kept, the least recently failed
// forgotten first.
//
// Thread-safety: any thread.
class Server::HelloThrottle {
 public:
  static constexpr auto kFirstDelay = std::chrono::milliseconds(100);
  static constexpr auto kMaxDelay = std::chrono::milliseconds(1000);
  static constexpr auto kQuietPeriod = std::chrono::seconds(60);
  static constexpr int kMaxPending = 4;
  static constexpr size_t kMaxAddresses = 4096;

  // Whether `address` has kMaxPending delayed failure replies pending.
  bool Busy(const std::string& address) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = index_.find(address);
    return it != index_.end() && it->second->pending >= kMaxPending;
  }

  // A HELLO from `address` failed: the delay before its reply. A nonzero
  // delay is pending until Answered().
  std::chrono::milliseconds Failed(const std::string& address) {
    const Clock::time_point now = Clock::now();
    std::lock_guard<std::mutex> l(mu_);
    auto it = index_.find(address);
    if (it == index_.end()) {
      if (index_.size() >= kMaxAddresses) {
        index_.erase(lru_.back().address);
        lru_.pop_back();
      }
      lru_.push_front(Entry{address, 0, now, 0});
      it = index_.emplace(address, lru_.begin()).first;
    } else {
      lru_.splice(lru_.begin(), lru_, it->second);  // the most recent first
    }
    Entry& e = *it->second;
    if (now - e.last > kQuietPeriod) e.failures = 0;
    e.last = now;
    ++e.failures;
    if (e.failures == 1) return std::chrono::milliseconds(0);
    const int doublings = std::min(e.failures - 2, 16);
    const auto delay =
        std::min<std::chrono::milliseconds>(kMaxDelay, kFirstDelay * (1 << doublings));
    ++e.pending;
    return delay;
  }

  // A delayed failure reply to `address` was queued (or its connection
  // closed).
  void Answered(const std::string& address) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = index_.find(address);
    if (it != index_.end() && it->second->pending > 0) --it->second->pending;
  }

 private:
  struct Entry {
    std::string address;
    int failures;
    Clock::time_point last;  // of the last failure
    int pending;             // delayed failure replies not sent yet
  };
  std::mutex mu_;
  std::list<Entry> lru_;                                               // GUARDED_BY(mu_)
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;  // GUARDED_BY(mu_)
};

bool RequiresTokens(const std::string& address) {
  boost::system::error_code ec;
  const auto a = asio::ip::make_address(address, ec);
  return ec || !a.is_loopback();
}

// One client connection. All its state lives on its strand.
class Server::Connection : public std::enable_shared_from_this<Connection>, public PushTarget {
 public:
  Connection(Server* server, tcp::socket socket)
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

  // Called from the acceptor: the connection's work runs on its strand.
  void Start() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->StartOnStrand(); });
  }

  void StartOnStrand() {
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

  // The server is stopping (from any thread): answer what was read, answer
  // UNAVAILABLE what is still readable, then close after the replies.
  void NotifyStop() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->OnStop(); });
  }

  // --- PushTarget: called by the subscription dispatcher's thread ---

  void Push(std::vector<uint8_t> frame) override {
    const size_t size = frame.size();
    push_posted_ += size;
    auto self = shared_from_this();
    asio::post(socket_.get_executor(), [self, frame = std::move(frame), size]() mutable {
      self->push_posted_ -= size;
      uint64_t id = 0;
      for (int i = 7; i >= 0; --i) id = id << 8 | frame[8 + i];
      // Not after UNSUBSCRIBE's reply, even if the dispatcher built it before;
      // nothing new while shutting down (it would keep the drain waiting).
      if (self->subscriptions_.count(id) == 0 || self->server_->stopping_) {
        self->Drained();  // what waited on these bytes may go on
        return;
      }
      self->Enqueue(std::move(frame));
    });
  }
  uint64_t PushBacklog() const override { return push_posted_ + outbox_bytes_; }
  void WakeWhenDrained() override { wake_hub_on_drain_ = true; }
  void CutOff(const std::string& why) override {
    auto self = shared_from_this();
    asio::post(socket_.get_executor(), [self, why] {
      if (self->closed_) return;
      Log(LogLevel::kInfo, "closing %s: %s", self->peer_, why);
      self->Close();
    });
  }

 private:
  // Reads what the socket has, without blocking, and handles it; then waits
  // for more. Data stays in the kernel until it is read here, so while
  // stopping, "nothing readable" (socket_.available()) is exact.
  void Read() {
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
  bool WantInput() const { return !paused_ && !budget_paused_ && !close_after_write_; }

  void Consume(std::span<const uint8_t> in) {
    const bool outer = !handling_input_;
    handling_input_ = true;  // no nested Read() or MaybeFinish() meanwhile
    OnBytes(in);
    UpdateHeld();
    if (outer) handling_input_ = false;
    if (outer) MaybeFinish();
  }

  // --- The server-wide budget for partly received requests ---

  // Accounts this connection's bytes of requests read and not dispatched
  // yet (a partial frame in the decoder, input kept while paused).
  void UpdateHeld() {
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
  bool OverBudget() {
    if (held_ < kBudgetExempt || server_->request_bytes_ <= options_.max_request_buffer_bytes) {
      return false;
    }
    if (server_->MayBuffer(shared_from_this())) return false;
    budget_paused_ = true;
    return true;
  }

 public:
  // Posted by the server when the total fell or the right to go on is free.
  void ResumeFromBudget() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      if (!self->budget_paused_ || self->closed_) return;
      self->budget_paused_ = false;
      self->Read();
      self->MaybeFinish();
    });
  }

 private:
  void OnStop() {
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
  void DropPushes() {
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
  void MaybeFinish() {
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
  void Linger() {
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
  void OnBytes(std::span<const uint8_t> in) {
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
  void MaybeResume() {
    if (!paused_ || outbox_bytes_ > options_.max_buffered_bytes) return;
    paused_ = false;
    std::vector<uint8_t> in = std::move(pending_input_);
    pending_input_.clear();
    Consume(in);
    if (!paused_) Read();
  }

  // Runs one request; logs it when slow (its reply may come later: see
  // BeginAsync).
  void Dispatch(protocol::Frame frame) {
    dispatch_start_ = Clock::now();
    reply_start_ = dispatch_start_;  // a reply queued now answers this request
    DispatchRequest(std::move(frame));
    reply_start_.reset();  // answered later: its completion sets it again
  }

  // A request's reply is being queued (before any byte of it can reach the
  // client, so a client that saw the reply sees it counted): metrics and the
  // slow-request log.
  void Finished(uint8_t op, uint64_t id, Clock::time_point start, WireStatus status) {
    const auto took = Clock::now() - start;
    if (options_.metrics != nullptr) options_.metrics->OnRequest(op, status, took);
    if (options_.slow_request.count() > 0 && took >= options_.slow_request) {
      Log(LogLevel::kWarn, "slow request: %s id %u from %s took %.3f ms (%s)",
          protocol::OpcodeName(static_cast<Opcode>(op)), id, peer_,
          std::chrono::duration<double, std::milli>(took).count(),
          protocol::WireStatusName(status));
    }
  }

  void DispatchRequest(protocol::Frame frame) {
    const uint8_t op = frame.header.opcode;
    const uint64_t id = frame.header.request_id;
    engine::Database* db = server_->db_;
    auto fail = [&](const absl::Status& s) { Reply(op, id, s); };
    if (absl::Status s = protocol::CheckRequestHeader(frame.header); !s.ok()) return fail(s);
    if (server_->stopping_) {
      // Read after the stop: not run (PROTOCOL.md, "Errors and connection
      // state"); the connection closes once nothing more is readable.
      return fail(absl::CancelledError("voxdbd is shutting down: this request was not run"));
    }
    const Role need = protocol::RequiredRole(static_cast<Opcode>(op));
    if (role_ < need) {
      const char* name = protocol::OpcodeName(static_cast<Opcode>(op));
      if (role_ == Role::kNone) {
        ++server_->auth_failures_;
        LogLimited(LogLevel::kWarn, "unauthenticated requests", peer_address_,
                   "auth: %s sent %s before authenticating", peer_, name);
        return fail(absl::UnauthenticatedError(
            absl::StrFormat("%s needs authentication: send HELLO with a token first", name)));
      }
      ++server_->permission_denied_;
      LogLimited(LogLevel::kWarn, "requests denied by role", peer_address_,
                 "auth: %s (role %s) may not %s", peer_, protocol::RoleName(role_), name);
      return fail(absl::PermissionDeniedError(
          absl::StrFormat("this token's role '%s' may not %s (needs '%s')",
                          protocol::RoleName(role_), name, protocol::RoleName(need))));
    }
    const std::span<const uint8_t> p = frame.payload;
    if (absl::Status s = protocol::CheckEmptyPayload(static_cast<Opcode>(op), p); !s.ok()) {
      return fail(s);
    }
    switch (static_cast<Opcode>(op)) {
      case Opcode::kHello: {
        auto req = protocol::HelloRequest::Decode(p);
        if (!req.ok()) return fail(req.status());
        if (req->min_version > protocol::kProtocolVersion ||
            req->max_version < protocol::kProtocolVersion) {
          return fail(absl::UnimplementedError(absl::StrFormat(
              "this server speaks protocol version %u only", protocol::kProtocolVersion)));
        }
        if (!options_.tokens.empty()) {
          HelloThrottle& throttle = *server_->hello_throttle_;
          if (throttle.Busy(peer_address_)) {
            // Refused before its token is checked (see HelloThrottle).
            ++server_->auth_failures_;
            LogLimited(LogLevel::kWarn, "failed HELLOs", peer_address_,
                       "auth: HELLO from %s refused unchecked, closing: %d failed HELLOs from its "
                       "address are still to be answered",
                       peer_, HelloThrottle::kMaxPending);
            close_after_write_ = true;
            return fail(absl::UnavailableError(absl::StrFormat(
                "%d failed HELLOs from this address are still to be answered (each failure "
                "slows the next, up to %d ms); retry later",
                HelloThrottle::kMaxPending, static_cast<int>(HelloThrottle::kMaxDelay.count()))));
          }
          const Role granted = server_->Authenticate(req->token);
          if (granted == Role::kNone) {
            ++server_->auth_failures_;
            const std::chrono::milliseconds delay = throttle.Failed(peer_address_);
            LogLimited(LogLevel::kWarn, "failed HELLOs", peer_address_,
                       "auth: %s token from %s, closing (reply delayed %d ms)",
                       req->token.empty() ? "no" : "wrong", peer_, static_cast<int>(delay.count()));
            close_after_write_ = true;
            const absl::Status refused = absl::UnauthenticatedError(
                req->token.empty() ? "this server needs a token" : "wrong token");
            if (delay.count() == 0) return fail(refused);
            return DelayHelloFailure(op, id, delay, refused);
          }
          role_ = granted;
          decoder_.set_max_payload(options_.max_frame_payload);
        }
        protocol::HelloReply reply;
        reply.version = protocol::kProtocolVersion;
        reply.world_frame = db->frame().Encode();
        reply.server_version = kServerVersion;
        reply.max_payload = options_.max_frame_payload;
        reply.max_batch = options_.max_batch;
        reply.max_box_voxels = uint64_t{1} << 28;
        reply.role = static_cast<uint8_t>(role_);
        return Reply(op, id, WireStatus::kOk, reply.Encode());
      }
      case Opcode::kPing:
        return Reply(op, id, WireStatus::kOk, std::move(frame.payload));
      case Opcode::kGetChunks:
        return GetChunks(op, id, p);
      case Opcode::kGetVoxels: {
        auto req = protocol::GetVoxelsRequest::Decode(p);
        if (!req.ok()) return fail(req.status());
        if (req->at.size() > options_.max_batch) {
          return fail(absl::InvalidArgumentError("too many voxels in one GET_VOXELS"));
        }
        std::vector<engine::VoxelCoord> at;
        at.reserve(req->at.size());
        for (const auto& v : req->at) at.push_back(ToVoxel(v));
        std::vector<uint8_t> out(at.size());
        if (absl::Status s = db->GetVoxels(at, out.data()); !s.ok()) return fail(s);
        return Reply(op, id, WireStatus::kOk, std::move(out));
      }
      case Opcode::kReadBox: {
        auto req = protocol::BoxRequest::DecodeReadBox(p);
        if (!req.ok()) return fail(req.status());
        const engine::VoxelBox box = ToBox(req->box);
        // Every limit before the reply's buffer is allocated.
        if (absl::Status s = db->CheckBoxLimits(box); !s.ok()) return fail(s);
        if (box.volume() > options_.max_frame_payload) {
          return fail(TooLargeError(
              absl::StrFormat("the box holds %u voxels, more than the largest frame (%u bytes)",
                              box.volume(), options_.max_frame_payload)));
        }
        const engine::ChunkCoord first = db->frame().ChunkOf(box.lo);
        const engine::ChunkCoord last =
            db->frame().ChunkOf({box.hi.x - 1, box.hi.y - 1, box.hi.z - 1});
        const uint64_t chunks =
            uint64_t{last.x - first.x + 1} * (last.y - first.y + 1) * (last.z - first.z + 1);
        if (chunks > kInlineReadChunks) return ReadBoxOnPool(op, id, box);
        std::vector<uint8_t> out = NewFrame(box.volume());
        out.resize(protocol::kHeaderSize + box.volume());
        if (absl::Status s = db->ReadBox(box, out.data() + protocol::kHeaderSize); !s.ok()) {
          return fail(s);
        }
        SealFrame(op, id, WireStatus::kOk, &out);
        return Enqueue(std::move(out));
      }
      case Opcode::kSetVoxels: {
        auto req = protocol::SetVoxelsRequest::Decode(p);
        if (!req.ok()) return fail(req.status());
        if (req->edits.size() > options_.max_batch) {
          return fail(absl::InvalidArgumentError("too many edits in one SET_VOXELS"));
        }
        auto edits = std::make_shared<std::vector<engine::VoxelEdit>>();
        edits->reserve(req->edits.size());
        for (const auto& e : req->edits) edits->push_back({ToVoxel(e.at), e.material});
        return SubmitWrite([db, edits, done = WriteDone(op, id)] { db->SetVoxels(*edits, done); });
      }
      case Opcode::kWriteBox: {
        auto req = protocol::BoxRequest::DecodeWriteBox(p);
        if (!req.ok()) return fail(req.status());
        auto r = std::make_shared<protocol::BoxRequest>(std::move(*req));
        return SubmitWrite(
            [db, r, done = WriteDone(op, id)] { db->WriteBox(ToBox(r->box), r->voxels, done); });
      }
      case Opcode::kFillBox: {
        auto req = protocol::BoxRequest::DecodeFillBox(p);
        if (!req.ok()) return fail(req.status());
        const engine::VoxelBox box = ToBox(req->box);
        const uint8_t material = req->material;
        return SubmitWrite(
            [db, box, material, done = WriteDone(op, id)] { db->FillBox(box, material, done); });
      }
      case Opcode::kPutChunk: {
        auto req = protocol::PutChunkRequest::Decode(p);
        if (!req.ok()) return fail(req.status());
        if (req->code > engine::ChunkKey::kMaxCode) {
          return fail(absl::InvalidArgumentError("bad chunk key"));
        }
        auto r = std::make_shared<protocol::PutChunkRequest>(std::move(*req));
        return SubmitWrite([db, r, done = WriteDone(op, id)] {
          db->PutChunk(engine::ChunkKey::FromCode(r->code), r->record, r->expected_version, done);
        });
      }
      case Opcode::kDeleteChunk: {
        auto code = protocol::DecodeU64(p);
        if (!code.ok()) return fail(code.status());
        if (*code > engine::ChunkKey::kMaxCode) {
          return fail(absl::InvalidArgumentError("bad chunk key"));
        }
        const engine::ChunkKey key = engine::ChunkKey::FromCode(*code);
        return SubmitWrite([db, key, done = WriteDone(op, id)] { db->DeleteChunk(key, done); });
      }
      case Opcode::kFlush:
        // Flush waits on the disk: off the I/O threads.
        return OnWorker(op, id, [db]() -> absl::StatusOr<std::vector<uint8_t>> {
          const absl::Status s = db->Flush();
          if (!s.ok()) {
            Log(LogLevel::kError, "flush failed: %s", s.ToString());
            return s;
          }
          return std::vector<uint8_t>();
        });
      case Opcode::kStats:
        return Reply(op, id, WireStatus::kOk, StatsText());
      case Opcode::kQueryRadius:
      case Opcode::kQueryCell:
      case Opcode::kQueryRect:
      case Opcode::kQueryBox:
        // A read of the index and the cache: on this I/O thread.
        return Query(op, id, p);
      case Opcode::kBackup: {
        // Copies the whole environment: off the I/O threads.
        const std::string dest(p.begin(), p.end());
        return OnWorker(op, id, [db, dest]() -> absl::StatusOr<std::vector<uint8_t>> {
          uint64_t bytes = 0;
          const absl::Status s = db->Backup(dest, &bytes);
          Log(s.ok() ? LogLevel::kInfo : LogLevel::kError, "backup to %s: %s, %u bytes", dest,
              s.ToString(), bytes);
          if (!s.ok()) return s;
          return protocol::EncodeU64(bytes);
        });
      }
      case Opcode::kSubscribe:
        return Subscribe(op, id, p);
      case Opcode::kUnsubscribe: {
        auto sub = protocol::DecodeU64(p);
        if (!sub.ok()) return fail(sub.status());
        if (subscriptions_.erase(*sub) == 0 || !server_->hub_->Remove(this, *sub)) {
          return fail(
              absl::NotFoundError(absl::StrFormat("no subscription %u on this connection", *sub)));
        }
        return Reply(op, id, WireStatus::kOk, {});
      }
      case Opcode::kStreamUpdate:
        return StreamUpdate(op, id, p);
      case Opcode::kStreamClose:
        if (!stream_) return fail(absl::NotFoundError("no stream is open on this connection"));
        stream_->Stop();
        stream_.reset();
        return Reply(op, id, WireStatus::kOk, {});
      case Opcode::kEvents:
      case Opcode::kStreamData:
        return fail(absl::InvalidArgumentError(absl::StrFormat(
            "%s is pushed by the server, not a request", protocol::OpcodeName(Opcode(op)))));
      case Opcode::kSnapshotOpen:
        return SnapshotOpen(op, id);
      case Opcode::kSnapshotScan:
        return SnapshotScan(op, id, p);
      case Opcode::kSnapshotGet:
        return SnapshotGet(op, id, p);
      case Opcode::kSnapshotClose:
        return SnapshotClose(op, id, p);
      case Opcode::kLodRebuild: {
        if (absl::Status s = CheckLodLevel(1); !s.ok()) return fail(s);
        // Reads every chunk: off the I/O threads.
        return LodRebuild(op, id);
      }
      case Opcode::kLodSync:
        if (absl::Status s = CheckLodLevel(1); !s.ok()) return fail(s);
        return LodSync(op, id);
      case Opcode::kReindex:
        // One write transaction over every chunk: off the I/O threads.
        return OnWorker(op, id, [db]() -> absl::StatusOr<std::vector<uint8_t>> {
          uint64_t entries = 0;
          const absl::Status s = index::Rebuild(db, &entries);
          Log(s.ok() ? LogLevel::kInfo : LogLevel::kError, "reindex: %s, %u entries", s.ToString(),
              entries);
          if (!s.ok()) return s;
          return protocol::EncodeU64(entries);
        });
    }
    fail(absl::UnimplementedError(absl::StrFormat("unknown opcode %u", op)));
  }

  // Answers a failed HELLO after `delay` (HelloThrottle), from a timer on
  // this strand: no thread waits. The request counts as in flight meanwhile;
  // when the server stops or the connection closes, the timer is cancelled
  // and the reply goes at once.
  void DelayHelloFailure(uint8_t op, uint64_t id, std::chrono::milliseconds delay,
                         absl::Status refused) {
    BeginAsync();
    hello_timer_.expires_after(delay);
    hello_timer_.async_wait(
        [self = shared_from_this(), op, id, refused](boost::system::error_code) {
          self->EndAsync();
          self->server_->hello_throttle_->Answered(self->peer_address_);
          // The deliberate delay is no latency of the server's (metrics, the
          // slow-request log).
          self->reply_start_ = Clock::now();
          self->Reply(op, id, refused);
        });
  }

  // GET_CHUNKS: the reply is built in place. A reply that would pass the
  // frame limit carries TOO_LARGE for the chunks that did not fit, so one
  // request cannot make the server buffer more than a frame.
  void GetChunks(uint8_t op, uint64_t id, std::span<const uint8_t> p) {
    auto req = protocol::GetChunksRequest::Decode(p);
    if (!req.ok()) return Reply(op, id, req.status());
    if (req->codes.size() > options_.max_batch) {
      return Reply(op, id, absl::InvalidArgumentError("too many chunks in one GET_CHUNKS"));
    }
    if (req->level != 0) return GetLodChunks(op, id, *req);
    std::vector<engine::ChunkKey> keys;
    keys.reserve(req->codes.size());
    for (uint64_t c : req->codes) {
      if (c > engine::ChunkKey::kMaxCode) {
        return Reply(op, id, absl::InvalidArgumentError("bad chunk key"));
      }
      keys.push_back(engine::ChunkKey::FromCode(c));
    }
    ReplyChunks(op, id, keys,
                [&](std::span<const engine::ChunkKey> k,
                    const std::function<void(size_t, const engine::ChunkRead&)>& fn) {
                  return server_->db_->GetChunks(k, fn);
                });
  }

  // Builds a GET_CHUNKS reply in place from `read(keys, fn)` (the database's
  // GetChunks, or a snapshot's): records past the frame limit go out as
  // TOO_LARGE, with no message.
  void ReplyChunks(
      uint8_t op, uint64_t id, std::span<const engine::ChunkKey> keys,
      const std::function<absl::Status(
          std::span<const engine::ChunkKey>,
          const std::function<void(size_t, const engine::ChunkRead&)>&)>& read_chunks) {
    std::vector<uint8_t> out =
        NewFrame(std::min<size_t>(4 + keys.size() * (48 << 10), options_.max_frame_payload));
    AppendLE<uint32_t>(&out, static_cast<uint32_t>(keys.size()));
    const size_t limit = protocol::kHeaderSize + options_.max_frame_payload;
    absl::Status s = read_chunks(keys, [&](size_t, const engine::ChunkRead& read) {
      WireStatus wire = protocol::ToWireStatus(read.status);
      if (wire != WireStatus::kOk && options_.metrics != nullptr) options_.metrics->OnError(wire);
      std::span<const uint8_t> bytes = read.record;
      if (!read.status.ok()) {
        const absl::string_view m = read.status.message();
        bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(m.data()), m.size());
      } else if (out.size() + 14 + bytes.size() > limit) {
        wire = WireStatus::kTooLarge;  // no message: 14 bytes per chunk left out
        bytes = {};
      }
      AppendLE<uint16_t>(&out, static_cast<uint16_t>(wire));
      AppendLE<uint64_t>(&out, read.version);
      AppendLE<uint32_t>(&out, static_cast<uint32_t>(bytes.size()));
      Append(&out, bytes.data(), bytes.size());
    });
    if (!s.ok()) return Reply(op, id, s);
    SealFrame(op, id, WireStatus::kOk, &out);
    Enqueue(std::move(out));
  }

  // --- Subscriptions (PROTOCOL.md, "Subscriptions") ---

  void Subscribe(uint8_t op, uint64_t id, std::span<const uint8_t> p) {
    auto req = protocol::SubscribeRequest::Decode(p);
    if (!req.ok()) return Reply(op, id, req.status());
    auto region = ToRegion(req->region);
    if (!region.ok()) return Reply(op, id, region.status());
    std::optional<index::AltitudeBand> band;
    if (req->region.band)
      band = index::AltitudeBand{req->region.band->min_m, req->region.band->max_m};
    if (absl::Status s = index::CheckRegionAndBand(server_->db_->frame(), *region, band); !s.ok()) {
      return Reply(op, id, s);
    }
    const uint64_t sub = next_subscription_++;
    auto seq =
        server_->hub_->Add(shared_from_this(), sub, *region, band, req->detail, req->from_seq);
    if (!seq.ok()) {
      if (absl::IsOutOfRange(seq.status())) {
        return ReplyError(op, id, WireStatus::kResync, seq.status().message());
      }
      return Reply(op, id, seq.status());
    }
    subscriptions_.insert(sub);
    Reply(op, id, WireStatus::kOk, protocol::SubscribeReply{sub, *seq}.Encode());
  }

  // --- Streaming (PROTOCOL.md, "Streaming") ---

  void StreamUpdate(uint8_t op, uint64_t id, std::span<const uint8_t> p) {
    auto req = protocol::StreamUpdateRequest::Decode(p);
    if (!req.ok()) return Reply(op, id, req.status());
    if (!stream_) {
      // Both callbacks run on this strand, from the stream's Pump().
      stream_ = std::make_shared<Stream>(
          socket_.get_executor(), server_->io_.get_executor(), server_->db_, options_.lod,
          options_.streams, &server_->stream_counters_, &server_->frame_buffers_,
          [this](std::vector<uint8_t> frame) {
            if (!server_->stopping_) Enqueue(std::move(frame));  // see Push()
          },
          [this] { return PushBacklog(); });
    }
    const absl::Status s = stream_->Update(*req);
    Reply(op, id, s);  // before the data it starts
    if (s.ok()) stream_->Pump();
  }

  // --- Snapshots (PROTOCOL.md, "Snapshots") ---

  // SNAPSHOT_OPEN: taking one waits for a flush commit in progress, so it
  // runs on the worker.
  // Each snapshot holds an LMDB reader slot: at most
  // kMaxSnapshotsPerConnection per connection (counting those being opened,
  // so that pipelined requests cannot pass the check together) and
  // options_.max_snapshots in all.
  void SnapshotOpen(uint8_t op, uint64_t id) {
    if (snapshots_.size() + opening_snapshots_ >= kMaxSnapshotsPerConnection) {
      return Reply(op, id,
                   absl::UnavailableError(absl::StrFormat(
                       "this connection holds %u snapshots already: close one (SNAPSHOT_CLOSE)",
                       kMaxSnapshotsPerConnection)));
    }
    if (++server_->snapshots_open_ > static_cast<int64_t>(options_.max_snapshots)) {
      --server_->snapshots_open_;
      return Reply(
          op, id,
          absl::UnavailableError(absl::StrFormat(
              "the server holds %u snapshots, its most: try again later", options_.max_snapshots)));
    }
    ++opening_snapshots_;
    auto self = shared_from_this();
    const Clock::time_point start = BeginAsync();
    server_->RunBackground(this, [self, op, id, start] {
      auto snap = self->server_->db_->Snapshot();
      std::shared_ptr<const engine::DatabaseSnapshot> shared;
      absl::Status s = snap.status();
      if (snap.ok()) shared = std::move(*snap);
      asio::post(self->socket_.get_executor(), [self, s, shared, op, id, start] {
        self->EndAsync();
        self->reply_start_ = start;
        --self->opening_snapshots_;
        if (!s.ok() || self->closed_) {
          --self->server_->snapshots_open_;  // not kept: its reader slot goes now
          self->Reply(op, id, s.ok() ? absl::CancelledError("the connection closed") : s);
          return;
        }
        const uint64_t handle = self->next_snapshot_++;
        self->snapshots_.emplace(handle, shared);
        protocol::SnapshotOpenReply reply{handle, shared->seq()};
        self->Reply(op, id, WireStatus::kOk, reply.Encode());
      });
    });
  }

  absl::StatusOr<const engine::DatabaseSnapshot*> FindSnapshot(uint64_t handle) const {
    auto it = snapshots_.find(handle);
    if (it == snapshots_.end()) {
      return absl::NotFoundError(
          absl::StrFormat("no snapshot %u on this connection (closed, or never opened)", handle));
    }
    return it->second.get();
  }

  void SnapshotScan(uint8_t op, uint64_t id, std::span<const uint8_t> p) {
    auto req = protocol::SnapshotScanRequest::Decode(p);
    if (!req.ok()) return Reply(op, id, req.status());
    auto snap = FindSnapshot(req->snapshot);
    if (!snap.ok()) return Reply(op, id, snap.status());
    const engine::WorldFrame& frame = server_->db_->frame();
    const engine::VoxelBox box = ToBox(req->box);
    if (absl::Status s = frame.CheckBox(box); !s.ok()) return Reply(op, id, s);
    if (req->limit == 0 || req->limit > protocol::kMaxQueryLimit) {
      return Reply(op, id,
                   absl::InvalidArgumentError(absl::StrFormat(
                       "limit %u is not in 1..%u", req->limit, protocol::kMaxQueryLimit)));
    }
    uint64_t from = 0;
    if (!req->cursor.empty()) {
      if (req->cursor.size() != 8) {
        return Reply(op, id, absl::InvalidArgumentError("bad SNAPSHOT_SCAN cursor"));
      }
      for (uint8_t b : req->cursor) from = from << 8 | b;
    }
    const engine::ChunkBox chunks{
        frame.ChunkOf(box.lo),
        frame.ChunkOf(engine::VoxelCoord{box.hi.x - 1, box.hi.y - 1, box.hi.z - 1})};
    protocol::QueryReply reply;
    absl::Status s = (*snap)->ScanChunks(chunks, from, [&](engine::ChunkKey key, uint64_t version) {
      if (reply.chunks.size() == req->limit) {
        reply.next_cursor.resize(8);
        for (int i = 0; i < 8; ++i) reply.next_cursor[i] = key.code() >> (56 - 8 * i) & 0xff;
        return false;
      }
      reply.chunks.push_back({key.code(), version});
      return true;
    });
    if (!s.ok()) return Reply(op, id, s);
    if (req->cursor.empty()) {
      for (const engine::Fill& f : (*snap)->fills().fills()) {
        if (!engine::Intersect(f.box, box).empty()) {
          reply.fills.push_back({f.seq, FromBox(f.box), f.material});
        }
      }
    }
    Reply(op, id, WireStatus::kOk, reply.Encode());
  }

  void SnapshotGet(uint8_t op, uint64_t id, std::span<const uint8_t> p) {
    auto req = protocol::SnapshotGetRequest::Decode(p);
    if (!req.ok()) return Reply(op, id, req.status());
    auto snap = FindSnapshot(req->snapshot);
    if (!snap.ok()) return Reply(op, id, snap.status());
    if (req->codes.size() > options_.max_batch) {
      return Reply(op, id, absl::InvalidArgumentError("too many chunks in one SNAPSHOT_GET"));
    }
    std::vector<engine::ChunkKey> keys;
    keys.reserve(req->codes.size());
    for (uint64_t c : req->codes) {
      if (c > engine::ChunkKey::kMaxCode) {
        return Reply(op, id, absl::InvalidArgumentError("bad chunk key"));
      }
      keys.push_back(engine::ChunkKey::FromCode(c));
    }
    const engine::DatabaseSnapshot* view = *snap;
    ReplyChunks(op, id, keys,
                [view](std::span<const engine::ChunkKey> k,
                       const std::function<void(size_t, const engine::ChunkRead&)>& fn) {
                  return view->GetChunks(k, fn);
                });
  }

  void SnapshotClose(uint8_t op, uint64_t id, std::span<const uint8_t> p) {
    auto handle = protocol::DecodeU64(p);
    if (!handle.ok()) return Reply(op, id, handle.status());
    if (absl::Status s = FindSnapshot(*handle).status(); !s.ok()) return Reply(op, id, s);
    snapshots_.erase(*handle);
    --server_->snapshots_open_;
    Reply(op, id, absl::OkStatus());
  }

  // GET_CHUNKS at LOD level >= 1: the last built record of each node, its
  // version the newest of the chunks under it when built. A node never
  // built reads as air, version 0, like a chunk never written.
  void GetLodChunks(uint8_t op, uint64_t id, const protocol::GetChunksRequest& req) {
    engine::LodPyramid* lod = options_.lod;
    if (absl::Status s = CheckLodLevel(req.level); !s.ok()) return Reply(op, id, s);
    const uint64_t max_node = engine::ChunkKey::kMaxCode >> (3 * req.level);
    for (uint64_t c : req.codes) {
      if (c > max_node) {
        return Reply(op, id,
                     absl::InvalidArgumentError(
                         absl::StrFormat("node %u does not exist at LOD level %u", c, req.level)));
      }
    }
    std::vector<uint8_t> out =
        NewFrame(std::min<size_t>(4 + req.codes.size() * (48 << 10), options_.max_frame_payload));
    AppendLE<uint32_t>(&out, static_cast<uint32_t>(req.codes.size()));
    const size_t limit = protocol::kHeaderSize + options_.max_frame_payload;
    for (uint64_t c : req.codes) {
      auto read = lod->GetLod(req.level, c);
      WireStatus wire = WireStatus::kOk;
      uint64_t version = 0;
      std::vector<uint8_t> bytes;
      if (read.ok()) {
        version = read->version;
        bytes = std::move(read->record);
      } else if (absl::IsNotFound(read.status())) {
        bytes = AirRecord();
      } else {
        wire = protocol::ToWireStatus(read.status());
        const absl::string_view m = read.status().message();
        bytes.assign(m.begin(), m.end());
        if (options_.metrics != nullptr) options_.metrics->OnError(wire);
      }
      if (wire == WireStatus::kOk && out.size() + 14 + bytes.size() > limit) {
        wire = WireStatus::kTooLarge;  // as at level 0: ask for it again
        bytes.clear();
      }
      AppendLE<uint16_t>(&out, static_cast<uint16_t>(wire));
      AppendLE<uint64_t>(&out, version);
      AppendLE<uint32_t>(&out, static_cast<uint32_t>(bytes.size()));
      Append(&out, bytes.data(), bytes.size());
    }
    SealFrame(op, id, WireStatus::kOk, &out);
    Enqueue(std::move(out));
  }

  // LOD_REBUILD: the worker drops the records and marks the nodes (one
  // scan of the stored chunks' keys); the LOD builder thread builds them in
  // passes that yield to shutdown, and the reply goes out when it is done,
  // so the shared worker is not held. On shutdown the reply is UNAVAILABLE
  // and what is left stays marked, built after the restart.
  void LodRebuild(uint8_t op, uint64_t id) {
    engine::LodPyramid* lod = options_.lod;
    auto self = shared_from_this();
    const Clock::time_point start = BeginAsync();
    const auto t0 = Clock::now();
    auto answer = [self, op, id, start, t0](const absl::Status& s) {
      Log(s.ok() ? LogLevel::kInfo : LogLevel::kError, "LOD rebuild: %s in %.1f s", s.ToString(),
          std::chrono::duration<double>(Clock::now() - t0).count());
      asio::post(self->socket_.get_executor(), [self, op, id, start, s] {
        self->EndAsync();
        self->reply_start_ = start;
        self->Reply(op, id, s);
      });
    };
    server_->RunBackground(this, [self, lod, answer] {
      if (self->server_->stopping_) {
        return answer(absl::UnavailableError("voxdbd is stopping: LOD_REBUILD was not run"));
      }
      const absl::Status s = lod->MarkAllForRebuild();
      if (!s.ok()) return answer(s);
      lod->WhenBuilt(answer);
      // A stop that came meanwhile may have missed this waiter.
      if (self->server_->stopping_) {
        lod->CancelWaiters(absl::UnavailableError(
            "voxdbd is stopping: the LOD rebuild goes on after the restart"));
      }
    });
  }

  // LOD_SYNC: the reply goes out when the LOD builder has built every node
  // marked before the request; the builder's thread calls back, so no
  // worker is held meanwhile. On shutdown the waiter is cancelled (the
  // server's stop cancels every LOD waiter) and the reply is BUSY.
  void LodSync(uint8_t op, uint64_t id) {
    auto self = shared_from_this();
    const Clock::time_point start = BeginAsync();
    options_.lod->WhenSynced([self, op, id, start](const absl::Status& s) {
      asio::post(self->socket_.get_executor(), [self, op, id, start, s] {
        self->EndAsync();
        self->reply_start_ = start;
        self->Reply(op, id, s);
      });
    });
    // A stop that came meanwhile may have missed this waiter.
    if (server_->stopping_) {
      options_.lod->CancelWaiters(absl::UnavailableError("voxdbd is stopping"));
    }
  }

  absl::Status CheckLodLevel(int level) const {
    if (options_.lod == nullptr) {
      return absl::UnimplementedError("this server keeps no LOD pyramid (lod-levels = 0)");
    }
    if (level < 1 || level > options_.lod->levels()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("LOD level %d is not kept (this server keeps levels 1..%d)", level,
                          options_.lod->levels()));
    }
    return absl::OkStatus();
  }

  static const std::vector<uint8_t>& AirRecord() {
    static const std::vector<uint8_t> air = engine::EncodeChunk(engine::Chunk(0), 0, 0);
    return air;
  }

  // QUERY_RADIUS, QUERY_CELL, QUERY_RECT, QUERY_BOX: one page of the index.
  void Query(uint8_t op, uint64_t id, std::span<const uint8_t> p) {
    auto req = protocol::QueryRequest::Decode(static_cast<Opcode>(op), p);
    if (!req.ok()) return Reply(op, id, req.status());
    auto region = ToRegion(*req);
    if (!region.ok()) return Reply(op, id, region.status());
    index::QueryOptions options;
    if (req->band) options.band = index::AltitudeBand{req->band->min_m, req->band->max_m};
    options.limit = req->limit;
    options.cursor = std::move(req->cursor);
    if (req->level != 0) {
      // Evaluates the whole level-0 answer: off the I/O threads.
      if (absl::Status s = CheckLodLevel(req->level); !s.ok()) return Reply(op, id, s);
      engine::Database* db = server_->db_;
      engine::LodPyramid* lod = options_.lod;
      return OnWorker(op, id,
                      [db, lod, level = req->level, region = *region,
                       options = std::move(options)]() -> absl::StatusOr<std::vector<uint8_t>> {
                        return EncodeQuery(index::QueryLod(*db, *lod, level, region, options));
                      });
    }
    auto reply = EncodeQuery(index::Query(*server_->db_, *region, options));
    if (!reply.ok()) return Reply(op, id, reply.status());
    Reply(op, id, WireStatus::kOk, std::move(*reply));
  }

  static absl::StatusOr<std::vector<uint8_t>> EncodeQuery(
      absl::StatusOr<index::QueryResult> result) {
    if (!result.ok()) return result.status();
    protocol::QueryReply reply;
    reply.chunks.reserve(result->chunks.size());
    for (const index::ChunkHit& c : result->chunks) {
      reply.chunks.push_back({c.key.code(), c.version});
    }
    reply.fills.reserve(result->fills.size());
    for (const engine::Fill& f : result->fills) {
      reply.fills.push_back({f.seq, FromBox(f.box), f.material});
    }
    reply.next_cursor = std::move(result->next_cursor);
    return reply.Encode();
  }

  // Runs `work` on the background worker (it may wait on the disk or run
  // long), then answers the request on this strand with its payload or
  // error.
  void OnWorker(uint8_t op, uint64_t id,
                std::function<absl::StatusOr<std::vector<uint8_t>>()> work) {
    auto self = shared_from_this();
    const Clock::time_point start = BeginAsync();
    ++worker_jobs_;  // past kMaxWorkerJobs its requests wait (OnBytes)
    server_->RunBackground(this, [self, op, id, start, work = std::move(work)] {
      auto result = work();
      asio::post(self->socket_.get_executor(),
                 [self, op, id, start, result = std::move(result)]() mutable {
                   if (self->worker_jobs_-- == kMaxWorkerJobs) self->MaybeResume();
                   self->EndAsync();
                   self->reply_start_ = start;
                   if (!result.ok()) return self->Reply(op, id, result.status());
                   self->Reply(op, id, WireStatus::kOk, std::move(*result));
                 });
    });
  }

  // A READ_BOX across more than this many chunks runs on the read pool, not
  // on the I/O thread (up to max_box_chunks chunks to load and decode).
  static constexpr uint64_t kInlineReadChunks = 16;

  // Runs a long READ_BOX on the server's read pool; it stops early (its
  // reply then goes nowhere) once this connection has closed. Counted like
  // a worker job (kMaxWorkerJobs) and in flight, so SIGTERM answers it.
  void ReadBoxOnPool(uint8_t op, uint64_t id, const engine::VoxelBox& box) {
    auto self = shared_from_this();
    const Clock::time_point start = BeginAsync();
    ++worker_jobs_;
    std::vector<uint8_t> out = NewFrame(box.volume());
    out.resize(protocol::kHeaderSize + box.volume());
    server_->RunRead([self, op, id, start, box, out = std::move(out)]() mutable {
      absl::Status s =
          self->server_->db_->ReadBox(box, out.data() + protocol::kHeaderSize, self->gone_.get());
      asio::post(self->socket_.get_executor(),
                 [self, op, id, start, s = std::move(s), out = std::move(out)]() mutable {
                   if (self->worker_jobs_-- == kMaxWorkerJobs) self->MaybeResume();
                   self->EndAsync();
                   self->reply_start_ = start;
                   if (!s.ok()) return self->Reply(op, id, s);
                   SealFrame(op, id, WireStatus::kOk, &out);
                   self->Enqueue(std::move(out));
                 });
    });
  }

  std::vector<uint8_t> StatsText() const {
    const engine::DatabaseStats st = server_->db_->Stats();
    const ServerStats ss = server_->stats();
    std::ostringstream out;
    out << "cache_hits " << st.cache_hits << "\ncache_misses " << st.cache_misses
        << "\ncache_evictions " << st.cache_evictions << "\ncache_bytes " << st.cache_bytes
        << "\ncache_chunks " << st.cache_chunks << "\ndirty_bytes " << st.dirty_bytes
        << "\ndirty_chunks " << st.dirty_chunks << "\noldest_dirty_age_seconds "
        << st.oldest_dirty_age_s << "\njournal_records " << st.journal_records
        << "\njournal_commits " << st.journal_commits << "\nlast_seq " << st.last_seq
        << "\ncommitted_seq " << st.committed_seq << "\ndurable_seq " << st.durable_seq
        << "\nrollbacks " << st.rollbacks << "\njournal_waits " << st.journal_waits
        << "\nreplayed_records " << st.replayed_records << "\nflushes " << st.flushes
        << "\nflushed_chunks " << st.flushed_chunks << "\nfills " << st.fills << "\nconnections "
        << ss.connections_open << "\nconnections_accepted " << ss.connections_accepted
        << "\nconnections_rejected " << ss.connections_rejected << "\nauth_failures "
        << ss.auth_failures << "\npermission_denied " << ss.permission_denied << "\nidle_closed "
        << ss.idle_closed << "\nslow_closed " << ss.slow_closed << "\nprotocol_errors "
        << ss.protocol_errors << "\nrequests " << ss.requests << "\ndeferred_writes "
        << ss.deferred_writes << "\nbytes_in " << ss.bytes_in << "\nbytes_out " << ss.bytes_out
        << "\nin_flight " << ss.in_flight << "\nrequest_buffer_bytes " << ss.request_buffer_bytes
        << "\nrequest_buffer_waits " << ss.request_buffer_waits << "\nsnapshots_open "
        << ss.snapshots_open << "\nunsent_bytes " << server_->unsent_.load() << "\nsubscribers "
        << ss.subscriptions.subscribers << "\nsubscription_events "
        << ss.subscriptions.events_pushed << "\nsubscription_frames "
        << ss.subscriptions.frames_pushed << "\nsubscribers_cut_off " << ss.subscriptions.cut_off
        << "\nsubscription_lag " << ss.subscriptions.lag << "\nchange_feed_records "
        << server_->db_->changes().records() << "\nchange_feed_floor "
        << server_->db_->changes().resume_floor() << "\nstreams_open " << ss.streams_open
        << "\nstream_chunks " << ss.stream_chunks << "\nstream_bytes " << ss.stream_bytes
        << "\nstream_unloads " << ss.stream_unloads << "\n";
    if (auto store = server_->db_->store().Stats(); store.ok()) {
      out << "map_size_bytes " << store->map_size << "\nmax_map_size_bytes " << store->max_map_size
          << "\nused_bytes " << store->used_bytes << "\nchunks_stored " << store->chunk_count
          << "\nchunk_bytes " << store->chunk_bytes << "\nreaders_in_use " << store->readers_in_use
          << "\n";
    }
    if (auto snap = server_->db_->store().BeginRead(); snap.ok()) {
      if (auto n = (*snap)->Count(engine::Table::kS2Index); n.ok()) {
        out << "index_columns " << *n << "\n";  // s2index entries: one per column
      }
    }
    out << "lod_levels " << ss.lod_levels << "\n";
    if (ss.lod_levels > 0) out << "lod_dirty " << ss.lod_dirty << "\n";
    out << "uptime_seconds "
        << std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - server_->started_)
               .count()
        << "\n";
    const std::string text = out.str();
    return std::vector<uint8_t>(text.begin(), text.end());
  }

  // The current request is answered later; returns when it began.
  Clock::time_point BeginAsync() {
    ++in_flight_;
    ++server_->in_flight_;
    return dispatch_start_;
  }
  void EndAsync() {
    --in_flight_;
    --server_->in_flight_;
  }

  // Runs a write now, on this I/O thread, unless the database says it would
  // wait on back-pressure: then (and for this connection's later writes,
  // while any are queued, to keep their order) on the background worker, so
  // that no I/O thread waits for the flusher.
  void SubmitWrite(std::function<void()> submit) {
    if (deferred_writes_ == 0 && !server_->db_->WritesWouldWait()) return submit();
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

  // A completion for an engine write: posts the reply back to this strand.
  engine::WriteDone WriteDone(uint8_t op, uint64_t id) {
    const Clock::time_point start = BeginAsync();
    auto self = shared_from_this();
    return [self, op, id, start](const engine::WriteResult& r) {
      asio::post(self->socket_.get_executor(), [self, r, op, id, start] {
        self->EndAsync();
        self->reply_start_ = start;
        if (r.status.ok()) {
          self->Reply(op, id, WireStatus::kOk, protocol::EncodeU64(r.version));
        } else {
          self->Reply(op, id, r.status);
        }
      });
    };
  }

  void Reply(uint8_t op, uint64_t id, const absl::Status& s) {
    if (s.ok()) return Reply(op, id, WireStatus::kOk, {});
    ReplyError(op, id, protocol::ToWireStatus(s), s.message());
  }
  void ReplyError(uint8_t op, uint64_t id, WireStatus status, absl::string_view message) {
    Reply(op, id, status, std::vector<uint8_t>(message.begin(), message.end()));
  }
  void Reply(uint8_t op, uint64_t id, WireStatus status, std::vector<uint8_t> payload) {
    if (status == WireStatus::kOk && payload.size() > options_.max_frame_payload) {
      // No reply passes the frame limit (a query page with many fills).
      return ReplyError(
          op, id, WireStatus::kTooLarge,
          absl::StrFormat("the reply would hold %u bytes, more than the frame limit of %u: ask "
                          "for less (a smaller limit or region)",
                          payload.size(), options_.max_frame_payload));
    }
    std::vector<uint8_t> bytes = NewFrame(payload.size());
    Append(&bytes, payload.data(), payload.size());
    SealFrame(op, id, status, &bytes);
    Enqueue(std::move(bytes));
  }

  void Enqueue(std::vector<uint8_t> frame) {
    if (reply_start_) {
      uint64_t id = 0;
      for (int i = 7; i >= 0; --i) id = id << 8 | frame[8 + i];
      Finished(frame[5], id, *reply_start_, static_cast<WireStatus>(frame[16] | frame[17] << 8));
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
  void Write() {
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

  void OnWritten(size_t n) {
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
  void Drained() {
    if (wake_hub_on_drain_ && PushBacklog() < options_.subscriptions.push_window_bytes / 2 &&
        wake_hub_on_drain_.exchange(false)) {
      server_->hub_->Wake();
    }
    if (stream_ && stream_->waiting_drain() && PushBacklog() < stream_->window()) stream_->Pump();
  }

  // The idle and send timeouts, checked on one periodic timer.
  void ArmTimer() {
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

  void CheckTimeouts() {
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
        subscriptions_.empty() && !stream_ && now - last_request_ > options_.idle_timeout) {
      // No whole request for that long (an idle or a trickling client).
      ++server_->idle_closed_;
      Log(LogLevel::kInfo, "closing %s: idle for %d ms", peer_,
          static_cast<int>(options_.idle_timeout.count()));
      return Close();
    }
    ArmTimer();
  }

  void Close() {
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
    server_->snapshots_open_ -= snapshots_.size();
    snapshots_.clear();  // their LMDB reader slots
    server_->hub_->RemoveAll(this);
    subscriptions_.clear();
    if (stream_) stream_->Stop();
    if (!writing_) ReleaseOutbox();  // else when the write completes
    server_->Unregister(this);
    --server_->connections_;
  }

  void ReleaseOutbox() {
    server_->unsent_ -= outbox_bytes_;
    for (size_t i = 0; i < outbox_.size(); ++i) {
      if (!IsPush(outbox_[i]))
        server_->unsent_replies_ -= outbox_[i].size() - (i == 0 ? front_offset_ : 0);
    }
    outbox_bytes_ = 0;
    outbox_.clear();
    front_offset_ = 0;
  }

  Server* server_;
  const ServerOptions& options_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  asio::steady_timer linger_timer_;
  asio::steady_timer hello_timer_;  // a delayed HELLO failure (DelayHelloFailure)
  Role role_;
  protocol::FrameDecoder decoder_;
  std::array<uint8_t, 64 * 1024> buffer_{};
  std::vector<uint8_t> pending_input_;  // read but not decoded while paused_
  bool paused_ = false;                 // not reading: too many reply bytes owed
  std::deque<std::vector<uint8_t>> outbox_;
  size_t front_offset_ = 0;  // bytes of outbox_.front() already sent
  // Written on the strand; read by the subscription dispatcher too.
  std::atomic<uint64_t> outbox_bytes_{0};
  std::atomic<uint64_t> push_posted_{0};  // pushed frames posted, not in the outbox yet
  std::atomic<bool> wake_hub_on_drain_{false};
  std::set<uint64_t> subscriptions_;  // ids this connection subscribed
  std::shared_ptr<Stream> stream_;    // STREAM_UPDATE opened it
  uint64_t next_subscription_ = 1;
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
  // Open snapshots, by the handle SNAPSHOT_OPEN gave.
  static constexpr size_t kMaxSnapshotsPerConnection = 4;
  // Bytes one Write() turn writes before the strand's other handlers run.
  static constexpr size_t kWriteTurnBytes = 4u << 20;
  std::map<uint64_t, std::shared_ptr<const engine::DatabaseSnapshot>> snapshots_;
  size_t opening_snapshots_ = 0;  // SNAPSHOT_OPENs on the worker
  uint64_t next_snapshot_ = 1;
  int deferred_writes_ = 0;  // writes queued on the background worker
  // Jobs of this connection queued on or running on the shared worker
  // (OnWorker): at kMaxWorkerJobs its next requests wait, so one connection
  // cannot queue unbounded work there.
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

Server::Server(const ServerOptions& options, engine::Database* db)
    : options_(options),
      db_(db),
      acceptor_(io_),
      hub_(std::make_unique<SubscriptionHub>(db, options.subscriptions, options.metrics)),
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
    return absl::UnavailableError(absl::StrFormat(
        "cannot listen on %s:%u: %s", options_.listen_address, options_.listen_port, ec.message()));
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
  std::vector<uint8_t> bytes = NewFrame(message.size());
  Append(&bytes, message.data(), message.size());
  SealFrame(0, 0, WireStatus::kBusy, &bytes);
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
  if (options_.lod != nullptr) {
    s.lod_levels = options_.lod->levels();
    s.lod_dirty = options_.lod->DirtyCount();
  }
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
    if (options_.lod != nullptr) {
      options_.lod->CancelWaiters(
          absl::UnavailableError("voxdbd is stopping: the LOD rebuild goes on after the restart"));
    }
    Drain(Clock::now() + options_.shutdown_timeout);
  });
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
