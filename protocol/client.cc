#include "protocol/client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace voxdb::protocol {

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(absl::StrFormat("cannot resolve %s: %s", host, gai_strerror(rc)));
  }
  int fd = -1;
  int err = 0;
  for (addrinfo* a = res; a; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    err = errno;
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrFormat("cannot connect to %s:%u: %s", host, port, std::strerror(err)));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return std::unique_ptr<Client>(new Client(fd));
}

Client::~Client() { ::close(fd_); }

absl::StatusOr<uint64_t> Client::Send(Opcode op, std::span<const uint8_t> payload) {
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(op);
  h.request_id = next_id_++;
  std::vector<uint8_t> bytes;
  EncodeFrame(h, payload, &bytes);
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrFormat("connection lost while sending: %s", std::strerror(errno)));
    }
    sent += static_cast<size_t>(n);
  }
  return h.request_id;
}

absl::StatusOr<Frame> Client::Receive() {
  uint8_t buf[64 * 1024];
  for (;;) {
    while (!pending_.empty()) {
      size_t used = 0;
      Frame frame;
      const auto r = decoder_.Feed(pending_, &used, &frame);
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(used));
      if (r == FrameDecoder::Result::kError) return decoder_.error();
      if (r == FrameDecoder::Result::kFrame) return frame;
      if (used == 0) break;
    }
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError("the server closed the connection");
    pending_.insert(pending_.end(), buf, buf + n);
  }
}

absl::StatusOr<std::vector<uint8_t>> Client::Call(Opcode op, std::span<const uint8_t> payload) {
  auto id = Send(op, payload);
  if (!id.ok()) return id.status();
  for (;;) {
    auto frame = Receive();
    if (!frame.ok()) return frame.status();
    if (frame->header.request_id != *id) continue;  // a reply to an earlier pipelined request
    if (frame->header.status != 0) {
      return FromWireStatus(static_cast<WireStatus>(frame->header.status),
                            std::string_view(reinterpret_cast<const char*>(frame->payload.data()),
                                             frame->payload.size()));
    }
    return std::move(frame->payload);
  }
}

absl::StatusOr<HelloReply> Client::Hello(const std::string& token) {
  HelloRequest req;
  req.token = token;
  req.client = "voxdb client";
  auto reply = Call(Opcode::kHello, req.Encode());
  if (!reply.ok()) return reply.status();
  return HelloReply::Decode(*reply);
}

absl::StatusOr<uint64_t> Client::SetVoxels(const SetVoxelsRequest& request) {
  auto reply = Call(Opcode::kSetVoxels, request.Encode());
  if (!reply.ok()) return reply.status();
  return DecodeU64(*reply);
}

absl::StatusOr<std::vector<uint8_t>> Client::GetVoxels(const GetVoxelsRequest& request) {
  return Call(Opcode::kGetVoxels, request.Encode());
}

}  // namespace voxdb::protocol
