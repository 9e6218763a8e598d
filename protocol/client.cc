#include "protocol/client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <unordered_map>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/status.h"

namespace voxdb::protocol {
namespace {

// The payload that marks an error as the server's, holding its wire status.
constexpr char kWireStatusUrl[] = "type.voxdb.dev/voxdb.WireStatus";
// Payloads up to this size are copied behind their header and sent in one
// write; larger ones are sent from where they are.
constexpr size_t kCopyPayloadBelow = 64 * 1024;
// Bytes asked of the socket per recv().
constexpr size_t kReadChunk = 256 * 1024;

// payload_length is a u32.
constexpr size_t kMaxPayload = UINT32_MAX;

absl::Status TooLargeForAFrame(size_t bytes) {
  return absl::InvalidArgumentError(
      absl::StrFormat("a payload of %u bytes does not fit a frame", bytes));
}

int TimeoutMs(std::chrono::milliseconds t) {
  if (t.count() <= 0) return -1;
  return static_cast<int>(std::min<int64_t>(t.count(), INT32_MAX));
}

absl::StatusOr<std::vector<uint8_t>> ReplyResult(Frame frame) {
  if (frame.header.status != 0) {
    return ServerError(static_cast<WireStatus>(frame.header.status),
                       std::string_view(reinterpret_cast<const char*>(frame.payload.data()),
                                        frame.payload.size()));
  }
  return std::move(frame.payload);
}

// Connects fd to addr, waiting at most timeout_ms (-1: the system's limit).
// Returns 0 or an errno value.
int ConnectWithin(int fd, const addrinfo* addr, int timeout_ms) {
  if (timeout_ms < 0) {
    return ::connect(fd, addr->ai_addr, addr->ai_addrlen) == 0 ? 0 : errno;
  }
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno;
  int err = 0;
  if (::connect(fd, addr->ai_addr, addr->ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int rc;
      do {
        rc = ::poll(&p, 1, timeout_ms);
      } while (rc < 0 && errno == EINTR);
      if (rc == 0) {
        err = ETIMEDOUT;
      } else if (rc < 0) {
        err = errno;
      } else {
        socklen_t len = sizeof err;
        if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      }
    }
  }
  if (::fcntl(fd, F_SETFL, flags) < 0 && err == 0) err = errno;
  return err;
}

}  // namespace

absl::Status ServerError(WireStatus code, std::string_view message) {
  absl::Status status = FromWireStatus(code, message);
  if (!status.ok()) {
    status.SetPayload(kWireStatusUrl, absl::Cord(std::to_string(static_cast<unsigned>(code))));
  }
  return status;
}

std::optional<WireStatus> ServerStatusOf(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  const auto payload = status.GetPayload(kWireStatusUrl);
  if (!payload.has_value()) return std::nullopt;
  const std::string text(*payload);
  uint16_t code = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), code);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return static_cast<WireStatus>(code);
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& host, uint16_t port,
                                                        const ClientOptions& options) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
    return UnreachableError(absl::StrFormat("cannot resolve %s: %s", host, gai_strerror(rc)));
  }
  const int timeout_ms = TimeoutMs(options.connect_timeout);
  int fd = -1;
  int err = 0;
  for (addrinfo* a = res; a; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    err = ConnectWithin(fd, a, timeout_ms);
    if (err == 0) break;
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    const std::string message =
        absl::StrFormat("cannot connect to %s:%u: %s", host, port, std::strerror(err));
    if (err == ETIMEDOUT && timeout_ms >= 0) return absl::DeadlineExceededError(message);
    return UnreachableError(message);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return std::unique_ptr<Client>(new Client(fd, options));
}

Client::Client(int fd, const ClientOptions& options)
    : fd_(fd),
      io_timeout_ms_(TimeoutMs(options.io_timeout)),
      max_in_flight_(std::max<size_t>(options.max_in_flight, 1)),
      decoder_(uint32_t{0xffffffff}) {}

Client::~Client() { ::close(fd_); }

absl::Status Client::Wait(bool write, std::optional<int> timeout_ms) {
  pollfd p{fd_, static_cast<short>(write ? POLLOUT : 0), 0};
  // While writing, replies are read too (see WriteAll); once the stream has
  // ended there is nothing more to read and POLLIN would fire forever.
  if (read_error_.ok()) p.events |= POLLIN;
  const int timeout = timeout_ms.value_or(io_timeout_ms_);
  for (;;) {
    const int rc = ::poll(&p, 1, timeout);
    if (rc > 0) break;
    if (rc == 0) {
      return absl::DeadlineExceededError(
          absl::StrFormat("the server made no progress for %d ms while %s", timeout,
                          write ? "we were sending a request" : "we were waiting for a reply"));
    }
    if (errno != EINTR) {
      return UnreachableError(absl::StrFormat("poll: %s", std::strerror(errno)));
    }
  }
  if (p.revents & (POLLIN | POLLHUP | POLLERR)) ReadAvailable();
  return absl::OkStatus();
}

void Client::ReadAvailable() {
  if (!read_error_.ok()) return;
  if (pending_at_ > 0 && pending_at_ >= pending_.size() / 2) {  // keep the buffer compact
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(pending_at_));
    pending_at_ = 0;
  }
  if (!recv_buffer_) recv_buffer_ = std::make_unique<uint8_t[]>(kReadChunk);  // not zeroed again
  for (;;) {
    const ssize_t n = ::recv(fd_, recv_buffer_.get(), kReadChunk, MSG_DONTWAIT);
    if (n > 0) {
      pending_.insert(pending_.end(), recv_buffer_.get(), recv_buffer_.get() + n);
      if (static_cast<size_t>(n) < kReadChunk) return;  // drained for now
      continue;
    }
    if (n == 0) {
      read_error_ = UnreachableError("the server closed the connection");
      return;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      read_error_ = UnreachableError(absl::StrFormat("connection lost: %s", std::strerror(errno)));
    }
    return;
  }
}

absl::StatusOr<std::optional<Frame>> Client::NextBufferedFrame() {
  if (!decoder_.error().ok()) return decoder_.error();
  while (pending_at_ < pending_.size()) {
    size_t used = 0;
    Frame frame;
    const auto r =
        decoder_.Feed(std::span<const uint8_t>(pending_).subspan(pending_at_), &used, &frame);
    pending_at_ += used;
    if (r == FrameDecoder::Result::kError) return decoder_.error();
    if (r == FrameDecoder::Result::kFrame) {
      if (frame.header.is_push()) {
        pushes_.push_back(std::move(frame));  // for ReceivePush(), never a reply
        continue;
      }
      return std::optional<Frame>(std::move(frame));
    }
    if (used == 0) break;
  }
  if (pending_at_ == pending_.size()) {  // every byte is inside the decoder
    pending_.clear();
    pending_at_ = 0;
  }
  return std::optional<Frame>();
}

absl::Status Client::WriteAll(std::span<const uint8_t> bytes) {
  if (!write_error_.ok()) return write_error_;
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n =
        ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // The socket is full. Read replies while waiting for room: a server
      // may stop reading requests until its replies are taken.
      if (absl::Status s = Wait(/*write=*/true); !s.ok()) {
        write_error_ = s;
        return s;
      }
      continue;
    }
    write_error_ = UnreachableError(absl::StrFormat("connection lost while sending: %s",
                                                    n < 0 ? std::strerror(errno) : "no progress"));
    return write_error_;
  }
  return absl::OkStatus();
}

absl::Status Client::SendFrame(Opcode op, uint64_t id, std::span<const uint8_t> payload) {
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(op);
  h.request_id = id;
  if (payload.size() < kCopyPayloadBelow) {
    std::vector<uint8_t> bytes;
    EncodeFrame(h, payload, &bytes);
    return WriteAll(bytes);
  }
  if (payload.size() > kMaxPayload) return TooLargeForAFrame(payload.size());
  // The header of an empty frame, then the real length (PROTOCOL.md,
  // "Framing": payload_length, u32 little-endian at offset 20).
  std::vector<uint8_t> header;
  EncodeFrame(h, {}, &header);
  engine::EncodeFixed32(header.data() + 20, static_cast<uint32_t>(payload.size()));
  if (absl::Status s = WriteAll(header); !s.ok()) return s;
  return WriteAll(payload);
}

absl::StatusOr<uint64_t> Client::Send(Opcode op, std::span<const uint8_t> payload) {
  const uint64_t id = next_id_++;
  if (absl::Status s = SendFrame(op, id, payload); !s.ok()) return s;
  return id;
}

absl::StatusOr<Frame> Client::Receive() {
  if (!early_replies_.empty()) {
    Frame f = std::move(early_replies_.front());
    early_replies_.pop_front();
    return f;
  }
  for (;;) {
    auto frame = NextBufferedFrame();
    if (!frame.ok()) return frame.status();
    if (frame->has_value()) return std::move(**frame);
    if (!read_error_.ok()) return read_error_;
    if (absl::Status s = Wait(/*write=*/false); !s.ok()) return s;
  }
}

absl::StatusOr<Frame> Client::ReceivePush(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool last_look = false;
  for (;;) {
    if (!pushes_.empty()) {
      Frame f = std::move(pushes_.front());
      pushes_.pop_front();
      return f;
    }
    auto frame = NextBufferedFrame();
    if (!frame.ok()) return frame.status();
    if (frame->has_value()) {
      early_replies_.push_back(std::move(**frame));  // for Receive()
      continue;
    }
    if (!pushes_.empty()) continue;
    if (!read_error_.ok()) return read_error_;
    // Rounded up: a wait of less than a millisecond still polls once.
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      if (!last_look) {  // one read without waiting, even for a zero timeout
        last_look = true;
        ReadAvailable();
        continue;
      }
      return absl::DeadlineExceededError(
          absl::StrFormat("no pushed frame within %d ms", static_cast<int>(timeout.count())));
    }
    if (absl::Status s = Wait(/*write=*/false, static_cast<int>(left.count())); !s.ok()) {
      if (absl::IsDeadlineExceeded(s)) continue;
      return s;
    }
  }
}

absl::StatusOr<SubscribeReply> Client::Subscribe(const SubscribeRequest& request) {
  auto reply = Call(Opcode::kSubscribe, request.Encode());
  if (!reply.ok()) return reply.status();
  return SubscribeReply::Decode(*reply);
}

absl::Status Client::Unsubscribe(uint64_t subscription) {
  return Call(Opcode::kUnsubscribe, EncodeU64(subscription)).status();
}

absl::Status Client::StreamUpdate(const StreamUpdateRequest& request) {
  return Call(Opcode::kStreamUpdate, request.Encode()).status();
}

absl::Status Client::StreamClose() { return Call(Opcode::kStreamClose, {}).status(); }

absl::StatusOr<std::vector<uint8_t>> Client::Call(Opcode op, std::span<const uint8_t> payload) {
  const uint64_t id = next_id_++;
  const absl::Status sent = SendFrame(op, id, payload);
  if (!sent.ok()) {
    // The server may have refused the request (e.g. TOO_LARGE) and closed
    // the connection: its answer says more than the failed send.
    ReadAvailable();
    for (;;) {
      auto frame = NextBufferedFrame();
      if (!frame.ok() || !frame->has_value()) return sent;
      if ((*frame)->header.request_id == id) return ReplyResult(std::move(**frame));
    }
  }
  for (;;) {
    auto frame = Receive();
    if (!frame.ok()) return frame.status();
    if (frame->header.request_id != id) continue;  // a reply to an earlier pipelined request
    return ReplyResult(std::move(*frame));
  }
}

std::vector<absl::StatusOr<std::vector<uint8_t>>> Client::CallBatch(
    std::span<const Request> requests) {
  std::vector<absl::StatusOr<std::vector<uint8_t>>> results(requests.size());
  std::unordered_map<uint64_t, size_t> waiting;  // request id -> index
  size_t next = 0;                               // the first request not sent
  absl::Status transport;                        // the connection failed
  while (next < requests.size() || !waiting.empty()) {
    if (transport.ok() && next < requests.size() && waiting.size() < max_in_flight_) {
      if (requests[next].payload.size() > kMaxPayload) {  // fails alone, nothing is sent
        results[next] = TooLargeForAFrame(requests[next].payload.size());
        ++next;
        continue;
      }
      const uint64_t id = next_id_++;
      transport = SendFrame(requests[next].op, id, requests[next].payload);
      waiting.emplace(id, next++);
      continue;
    }
    absl::StatusOr<Frame> frame;
    if (transport.ok()) {
      frame = Receive();
      if (!frame.ok()) {
        transport = frame.status();
        break;
      }
    } else {
      // Collect the answers that arrived before the connection failed.
      ReadAvailable();
      auto buffered = NextBufferedFrame();
      if (!buffered.ok() || !buffered->has_value()) break;
      frame = std::move(**buffered);
    }
    auto it = waiting.find(frame->header.request_id);
    if (it == waiting.end()) continue;  // a reply to an earlier Send()
    results[it->second] = ReplyResult(std::move(*frame));
    waiting.erase(it);
  }
  for (const auto& [id, index] : waiting) results[index] = transport;
  for (size_t i = next; i < requests.size(); ++i) results[i] = transport;
  return results;
}

absl::StatusOr<HelloReply> Client::Hello(const std::string& token, const std::string& client_name) {
  HelloRequest req;
  req.token = token;
  req.client = client_name;
  auto reply = Call(Opcode::kHello, req.Encode());
  if (!reply.ok()) return reply.status();
  return HelloReply::Decode(*reply);
}

absl::Status Client::Ping(std::span<const uint8_t> bytes) {
  auto reply = Call(Opcode::kPing, bytes);
  if (!reply.ok()) return reply.status();
  if (!std::equal(reply->begin(), reply->end(), bytes.begin(), bytes.end())) {
    return absl::InternalError("PING was answered with other bytes");
  }
  return absl::OkStatus();
}

absl::StatusOr<GetChunksReply> Client::GetChunks(std::span<const uint64_t> codes, uint8_t level) {
  GetChunksRequest req;
  req.codes.assign(codes.begin(), codes.end());
  req.level = level;
  auto reply = Call(Opcode::kGetChunks, req.Encode());
  if (!reply.ok()) return reply.status();
  auto decoded = GetChunksReply::Decode(*reply);
  if (decoded.ok() && decoded->results.size() != codes.size()) {
    return absl::InternalError(absl::StrFormat("GET_CHUNKS of %u chunks was answered for %u",
                                               codes.size(), decoded->results.size()));
  }
  return decoded;
}

absl::StatusOr<std::vector<uint8_t>> Client::GetVoxels(const GetVoxelsRequest& request) {
  return Call(Opcode::kGetVoxels, request.Encode());
}

absl::StatusOr<std::vector<uint8_t>> Client::ReadBox(const Box& box) {
  BoxRequest req;
  req.box = box;
  return Call(Opcode::kReadBox, req.EncodeReadBox());
}

absl::StatusOr<uint64_t> Client::SetVoxels(const SetVoxelsRequest& request) {
  auto reply = Call(Opcode::kSetVoxels, request.Encode());
  if (!reply.ok()) return reply.status();
  return DecodeU64(*reply);
}

absl::StatusOr<uint64_t> Client::PutChunk(const PutChunkRequest& request) {
  auto reply = Call(Opcode::kPutChunk, request.Encode());
  if (!reply.ok()) return reply.status();
  return DecodeU64(*reply);
}

absl::StatusOr<uint64_t> Client::DeleteChunk(uint64_t code) {
  auto reply = Call(Opcode::kDeleteChunk, EncodeU64(code));
  if (!reply.ok()) return reply.status();
  return DecodeU64(*reply);
}

absl::StatusOr<uint64_t> Client::WriteBox(const Box& box, std::span<const uint8_t> voxels) {
  // WRITE_BOX is READ_BOX's payload (the box) followed by the voxels.
  BoxRequest req;
  req.box = box;
  std::vector<uint8_t> payload = req.EncodeReadBox();
  payload.insert(payload.end(), voxels.begin(), voxels.end());
  auto reply = Call(Opcode::kWriteBox, payload);
  if (!reply.ok()) return reply.status();
  return DecodeU64(*reply);
}

absl::StatusOr<uint64_t> Client::FillBox(const Box& box, uint8_t material) {
  BoxRequest req;
  req.box = box;
  req.material = material;
  auto reply = Call(Opcode::kFillBox, req.EncodeFillBox());
  if (!reply.ok()) return reply.status();
  return DecodeU64(*reply);
}

absl::StatusOr<QueryReply> Client::Query(const QueryRequest& request) {
  auto reply = Call(QueryOpcode(request.kind), request.Encode());
  if (!reply.ok()) return reply.status();
  return QueryReply::Decode(*reply);
}

absl::StatusOr<uint64_t> Client::Reindex() {
  auto reply = Call(Opcode::kReindex, {});
  if (!reply.ok()) return reply.status();
  return DecodeU64(*reply);
}

absl::StatusOr<uint64_t> Client::Backup(const std::string& dest_dir) {
  const std::span<const uint8_t> path(reinterpret_cast<const uint8_t*>(dest_dir.data()),
                                      dest_dir.size());
  auto reply = Call(Opcode::kBackup, path);
  if (!reply.ok()) return reply.status();
  return DecodeU64(*reply);
}

absl::StatusOr<SnapshotOpenReply> Client::SnapshotOpen() {
  auto reply = Call(Opcode::kSnapshotOpen, {});
  if (!reply.ok()) return reply.status();
  return SnapshotOpenReply::Decode(*reply);
}

absl::StatusOr<QueryReply> Client::SnapshotScan(const SnapshotScanRequest& request) {
  auto reply = Call(Opcode::kSnapshotScan, request.Encode());
  if (!reply.ok()) return reply.status();
  return QueryReply::Decode(*reply);
}

absl::StatusOr<GetChunksReply> Client::SnapshotGet(uint64_t snapshot,
                                                   std::span<const uint64_t> codes) {
  SnapshotGetRequest req;
  req.snapshot = snapshot;
  req.codes.assign(codes.begin(), codes.end());
  auto reply = Call(Opcode::kSnapshotGet, req.Encode());
  if (!reply.ok()) return reply.status();
  auto decoded = GetChunksReply::Decode(*reply);
  if (decoded.ok() && decoded->results.size() != codes.size()) {
    return absl::InternalError(absl::StrFormat("SNAPSHOT_GET of %u chunks was answered for %u",
                                               codes.size(), decoded->results.size()));
  }
  return decoded;
}

absl::Status Client::SnapshotClose(uint64_t snapshot) {
  return Call(Opcode::kSnapshotClose, EncodeU64(snapshot)).status();
}

absl::Status Client::LodRebuild() { return Call(Opcode::kLodRebuild, {}).status(); }

absl::Status Client::LodSync() { return Call(Opcode::kLodSync, {}).status(); }

absl::Status Client::Flush() { return Call(Opcode::kFlush, {}).status(); }

absl::StatusOr<std::string> Client::Stats() {
  auto reply = Call(Opcode::kStats, {});
  if (!reply.ok()) return reply.status();
  return std::string(reply->begin(), reply->end());
}

absl::StatusOr<PartitionsReply> Client::Partitions() {
  auto reply = Call(Opcode::kPartitions, {});
  if (!reply.ok()) return reply.status();
  return PartitionsReply::Decode(*reply);
}

}  // namespace voxdb::protocol
