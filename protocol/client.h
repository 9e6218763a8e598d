// A blocking voxdb client over TCP, for the CLI, tools and tests.
//
//   auto client = Client::Connect("127.0.0.1", 7390);
//   auto hello = (*client)->Hello("");             // negotiate, learn limits
//   auto reply = (*client)->Call(Opcode::kPing, bytes);
//   auto version = (*client)->FillBox({{0, 0, 0}, {128, 128, 1}}, 3);
//   auto page = (*client)->Query({.kind = QueryKind::kRadius, .lat = 45.8,
//                                 .lon = 6.9, .radius = 500});
//
// Pipelining: CallBatch() sends many requests without waiting and returns
// their results in request order; or Send() several requests, then
// Receive() their replies (in any order; each names its request id).
//
// Errors: a request the server refused comes back as the absl::Status of
// its wire status (protocol/frame.h, FromWireStatus) with the server's
// message, and ServerStatusOf() tells its exact wire status. A transport
// failure (cannot connect, connection lost) is UNAVAILABLE and a timeout
// DEADLINE_EXCEEDED, both without a wire status, so that a caller can tell
// "the server is unreachable" from "the server said BUSY".
//
// Sending never deadlocks against a server that stops reading while its
// replies are not read: while a request is being written the client also
// reads (and buffers) the replies that arrive.
//
// Thread-safety: one thread at a time per Client.
#ifndef VOXDB_PROTOCOL_CLIENT_H_
#define VOXDB_PROTOCOL_CLIENT_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "protocol/frame.h"
#include "protocol/messages.h"

namespace voxdb::protocol {

struct ClientOptions {
  // How long Connect waits for the TCP handshake; 0: the system's limit.
  std::chrono::milliseconds connect_timeout{0};
  // How long a send or a wait for a reply may make no progress before it
  // fails with DEADLINE_EXCEEDED; 0: forever.
  std::chrono::milliseconds io_timeout{0};
  // CallBatch: requests sent but not yet answered, at most. REQUIRES: >= 1.
  size_t max_in_flight = 128;
};

// One request of a CallBatch.
struct Request {
  Opcode op = Opcode::kPing;
  std::vector<uint8_t> payload;
};

// The error status the server sent: FromWireStatus(code, message), tagged
// so that ServerStatusOf() returns `code`. OK for kOk.
absl::Status ServerError(WireStatus code, std::string_view message);
// The wire status of an error that came from the server (ServerError);
// nullopt for OK and for errors of the client or the transport.
std::optional<WireStatus> ServerStatusOf(const absl::Status& status);

class Client {
 public:
  // UNAVAILABLE when the host does not resolve or nothing accepts the
  // connection; DEADLINE_EXCEEDED after options.connect_timeout.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& host, uint16_t port,
                                                         const ClientOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends a request; returns its request id. UNAVAILABLE when the
  // connection is lost, DEADLINE_EXCEEDED on a timeout (after either, the
  // connection is unusable).
  absl::StatusOr<uint64_t> Send(Opcode op, std::span<const uint8_t> payload);
  // The next reply frame from the server (never a pushed one). UNAVAILABLE once the server has
  // closed the connection (after the frames it sent before), INVALID for a
  // stream that is not the voxdb protocol, DEADLINE_EXCEEDED on a timeout.
  absl::StatusOr<Frame> Receive();
  // Send + Receive of its reply. A non-OK reply status becomes the error
  // (ServerError, with the server's message); the OK reply's payload is
  // returned. Replies to earlier Send()s that arrive first are dropped.
  absl::StatusOr<std::vector<uint8_t>> Call(Opcode op, std::span<const uint8_t> payload);

  // Sends every request without waiting for the replies (at most
  // options.max_in_flight unanswered at a time) and returns one result per
  // request, in request order, each as Call() would. After a transport
  // error, the requests it left unanswered all fail with it.
  std::vector<absl::StatusOr<std::vector<uint8_t>>> CallBatch(std::span<const Request> requests);

  // HELLO: negotiates protocol version 1 and authenticates with `token`
  // (empty: none). UNAUTHENTICATED for a wrong token.
  absl::StatusOr<HelloReply> Hello(const std::string& token,
                                   const std::string& client_name = "voxdb client");
  // PING with `bytes`; INTERNAL when the echo differs.
  absl::Status Ping(std::span<const uint8_t> bytes = {});

  // Reads. GetChunks succeeds as a whole while each chunk has its own status.
  // level >= 1: the LOD nodes `codes` of that level (their last built
  // records).
  absl::StatusOr<GetChunksReply> GetChunks(std::span<const uint64_t> codes, uint8_t level = 0);
  absl::StatusOr<std::vector<uint8_t>> GetVoxels(const GetVoxelsRequest& request);
  // The box's voxels, x fastest, then y, then z.
  absl::StatusOr<std::vector<uint8_t>> ReadBox(const Box& box);

  // Writes: each returns the write's version.
  absl::StatusOr<uint64_t> SetVoxels(const SetVoxelsRequest& request);
  // CONFLICT when request.expected_version is set and differs.
  absl::StatusOr<uint64_t> PutChunk(const PutChunkRequest& request);
  absl::StatusOr<uint64_t> DeleteChunk(uint64_t code);
  // voxels: box volume bytes, x fastest.
  absl::StatusOr<uint64_t> WriteBox(const Box& box, std::span<const uint8_t> voxels);
  absl::StatusOr<uint64_t> FillBox(const Box& box, uint8_t material);

  // QUERY_RADIUS / QUERY_CELL / QUERY_RECT / QUERY_BOX (by request.kind):
  // one page of the chunks in the region (PROTOCOL.md, "Queries").
  absl::StatusOr<QueryReply> Query(const QueryRequest& request);
  // REINDEX: rebuilds the spatial index; returns its number of entries.
  absl::StatusOr<uint64_t> Reindex();
  // BACKUP into `dest_dir` on the server's file system; the copy's size.
  absl::StatusOr<uint64_t> Backup(const std::string& dest_dir);
  // Snapshots (PROTOCOL.md, "Snapshots"): a point-in-time view of the
  // database, read in many requests, until closed or the connection ends.
  absl::StatusOr<SnapshotOpenReply> SnapshotOpen();
  absl::StatusOr<QueryReply> SnapshotScan(const SnapshotScanRequest& request);
  absl::StatusOr<GetChunksReply> SnapshotGet(uint64_t snapshot, std::span<const uint64_t> codes);
  absl::Status SnapshotClose(uint64_t snapshot);
  // SUBSCRIBE (PROTOCOL.md, "Subscriptions"): the server then pushes
  // EVENTS frames for the subscription (take them with ReceivePush). With
  // request.from_seq older than the server retains, fails with the wire
  // status RESYNC (ServerStatusOf).
  absl::StatusOr<SubscribeReply> Subscribe(const SubscribeRequest& request);
  absl::Status Unsubscribe(uint64_t subscription);
  // STREAM_UPDATE / STREAM_CLOSE (PROTOCOL.md, "Streaming"): the server
  // pushes STREAM_DATA frames for the stream.
  absl::Status StreamUpdate(const StreamUpdateRequest& request);
  absl::Status StreamClose();
  // The next frame the server pushed (kFlagPush: EVENTS, STREAM_DATA),
  // oldest first, waiting up to `timeout` (DEADLINE_EXCEEDED after).
  // Pushed frames that arrive while a call waits for its reply are kept
  // for this; replies that arrive while this waits are kept for the calls.
  absl::StatusOr<Frame> ReceivePush(std::chrono::milliseconds timeout);

  // LOD_REBUILD: rebuilds the whole LOD pyramid; returns when done.
  absl::Status LodRebuild();
  // LOD_SYNC: returns once the LOD pyramid has built every node marked
  // before the request (FLUSH first to include the writes not flushed yet).
  absl::Status LodSync();

  // Flushes every dirty chunk to the store; returns when done.
  absl::Status Flush();
  // The STATS text, one "name value" per line.
  absl::StatusOr<std::string> Stats();
  // The partitions the node holds (PARTITIONS); UNSUPPORTED from a server
  // older than the opcode.
  absl::StatusOr<PartitionsReply> Partitions();

  // The raw socket, for tests that misbehave on purpose.
  int fd() const { return fd_; }

 private:
  Client(int fd, const ClientOptions& options);

  // Writes a whole frame, reading replies into pending_ meanwhile.
  absl::Status SendFrame(Opcode op, uint64_t id, std::span<const uint8_t> payload);
  absl::Status WriteAll(std::span<const uint8_t> bytes);
  // Appends what the socket has to pending_; sets read_error_ at the end
  // of the stream.
  void ReadAvailable();
  // The next frame buffered in pending_, if a whole one is there.
  absl::StatusOr<std::optional<Frame>> NextBufferedFrame();
  // Waits until the socket is readable (or writable, with `write`).
  // `timeout_ms`: instead of the io_timeout.
  absl::Status Wait(bool write, std::optional<int> timeout_ms = std::nullopt);

  int fd_;
  int io_timeout_ms_;  // -1: forever
  size_t max_in_flight_;
  uint64_t next_id_ = 1;
  FrameDecoder decoder_;
  std::unique_ptr<uint8_t[]> recv_buffer_;  // what recv() fills
  std::deque<Frame> pushes_;                // pushed frames not taken yet
  std::deque<Frame> early_replies_;         // replies read by ReceivePush
  std::vector<uint8_t> pending_;            // received bytes [pending_at_, end) not yet decoded
  size_t pending_at_ = 0;
  absl::Status read_error_;   // sticky: the stream ended or failed
  absl::Status write_error_;  // sticky: a frame may have been cut short
};

}  // namespace voxdb::protocol

#endif  // VOXDB_PROTOCOL_CLIENT_H_
