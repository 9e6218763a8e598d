// A blocking voxdb client over TCP, for the CLI, tools and tests.
//
//   auto client = Client::Connect("127.0.0.1", 7390);
//   auto hello = (*client)->Hello("");             // negotiate, learn limits
//   auto reply = (*client)->Call(Opcode::kPing, bytes);
//
// Pipelining: Send() several requests, then Receive() their replies (in any
// order; each names its request id).
//
// Thread-safety: one thread at a time per Client.
#ifndef VOXDB_PROTOCOL_CLIENT_H_
#define VOXDB_PROTOCOL_CLIENT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "protocol/frame.h"
#include "protocol/messages.h"

namespace voxdb::protocol {

class Client {
 public:
  // UNAVAILABLE when the server cannot be reached.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& host, uint16_t port);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends a request; returns its request id.
  absl::StatusOr<uint64_t> Send(Opcode op, std::span<const uint8_t> payload);
  // The next reply frame from the server.
  absl::StatusOr<Frame> Receive();
  // Send + Receive of its reply. A non-OK reply status becomes the error
  // (with the server's message); the OK reply's payload is returned.
  absl::StatusOr<std::vector<uint8_t>> Call(Opcode op, std::span<const uint8_t> payload);

  absl::StatusOr<HelloReply> Hello(const std::string& token);
  // Writes: the new version.
  absl::StatusOr<uint64_t> SetVoxels(const SetVoxelsRequest& request);
  absl::StatusOr<std::vector<uint8_t>> GetVoxels(const GetVoxelsRequest& request);

  // The raw socket, for tests that misbehave on purpose.
  int fd() const { return fd_; }

 private:
  explicit Client(int fd) : fd_(fd), decoder_(uint32_t{0xffffffff}) {}
  int fd_;
  uint64_t next_id_ = 1;
  FrameDecoder decoder_;
  std::vector<uint8_t> pending_;  // received bytes not yet decoded
};

}  // namespace voxdb::protocol

#endif  // VOXDB_PROTOCOL_CLIENT_H_
