// Frames of the voxdb wire protocol (protocol/PROTOCOL.md, "Framing").
//
//   header (24 bytes, little-endian) + payload (payload_length bytes)
//
//   offset size field
//   0      4    magic           "VXDB" (56 58 44 42)
//   4      1    version         protocol version, 1
//   5      1    opcode
//   6      2    flags           bit 0: reply; bit 1: pushed by the server
//   8      8    request_id      chosen by the client, echoed by the reply
//   16     2    status          replies: WireStatus; requests: 0
//   18     2    reserved        0
//   20     4    payload_length
//
// FrameDecoder is incremental: feed it bytes as they arrive and take whole
// frames out. It never allocates more than one header plus max_payload
// bytes, whatever it is fed; a frame that cannot be trusted (bad magic,
// unsupported version, oversized length, non-zero reserved bits) puts it in
// a sticky error state, after which the connection must be closed.
//
// Thread-safety: value types; a FrameDecoder belongs to one connection.
#ifndef VOXDB_PROTOCOL_FRAME_H_
#define VOXDB_PROTOCOL_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace voxdb::protocol {

inline constexpr uint32_t kMagic = 0x42445856;  // "VXDB" as little-endian bytes
inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr size_t kHeaderSize = 24;
inline constexpr uint16_t kFlagReply = 1;
// A frame the server sends unasked (EVENTS, STREAM_DATA); never a reply.
inline constexpr uint16_t kFlagPush = 2;

// Status codes on the wire (PROTOCOL.md, "Status codes").
enum class WireStatus : uint16_t {
  kOk = 0,
  kInvalid = 1,      // malformed request or argument
  kOutOfBounds = 2,  // a coordinate outside the world
  kNotFound = 3,
  kConflict = 4,  // expected version did not match
  kCorrupt = 5,   // stored data failed its checksum
  kStorageFull = 6,
  kBusy = 7,         // back-pressure: retry later
  kUnavailable = 8,  // shutting down
  kUnauthenticated = 9,
  kPermissionDenied = 10,
  kUnsupported = 11,  // unknown opcode or version
  kMismatch = 12,     // world frame / format mismatch
  kTooLarge = 13,     // a request over a limit
  kInternal = 14,
  kResync = 15,          // a subscription's resume point is older than the retained changes
  kWrongPartition = 16,  // the key is not in a partition this node serves
};

// "OK", "INVALID", ... as in PROTOCOL.md; "UNKNOWN_STATUS" otherwise.
const char* WireStatusName(WireStatus code);

// One status per absl code, both ways.
WireStatus ToWireStatus(const absl::Status& status);
absl::Status FromWireStatus(WireStatus code, std::string_view message);

struct FrameHeader {
  uint8_t version = kProtocolVersion;
  uint8_t opcode = 0;
  uint16_t flags = 0;
  uint64_t request_id = 0;
  uint16_t status = 0;
  uint32_t payload_length = 0;

  bool is_reply() const { return flags & kFlagReply; }
  bool is_push() const { return flags & kFlagPush; }
};

struct Frame {
  FrameHeader header;
  std::vector<uint8_t> payload;
};

// Writes the 24-byte header of a frame with `payload_length` bytes of
// payload to out[0..24) (header.payload_length is ignored).
void EncodeHeader(const FrameHeader& header, uint32_t payload_length, uint8_t* out);

// Appends header + payload to out.
void EncodeFrame(const FrameHeader& header, std::span<const uint8_t> payload,
                 std::vector<uint8_t>* out);

// The header fields of `frame` (at least kHeaderSize bytes), read without
// checks (the magic, version and length are the caller's to check): the
// decoder's first step, and a sender's look at what it queued (a reply's
// request id and status, whether a frame was pushed).
FrameHeader PeekHeader(std::span<const uint8_t> frame);

// Builds one frame in place: room for the header first, then the payload,
// optionally starting with a u32 count that Seal() fills in; Seal() writes
// the header once the payload is complete. Replies and pushes are built
// this way so that a chunk record is copied once, into the buffer the
// socket sends.
//
// Example:
//   FrameWriter w(/*payload_hint=*/n * 22, /*count_prefix=*/true);
//   for (...) { w.AppendLE<uint64_t>(code); ++count; }
//   w.set_count(count);
//   std::vector<uint8_t> frame = w.Seal(op, id, kFlagReply, WireStatus::kOk);
class FrameWriter {
 public:
  // `payload_hint`: payload bytes to reserve room for.
  explicit FrameWriter(size_t payload_hint = 0, bool count_prefix = false)
      : FrameWriter(std::vector<uint8_t>(), payload_hint, count_prefix) {}
  // Builds in `buffer` (its bytes are dropped, its capacity kept).
  FrameWriter(std::vector<uint8_t> buffer, size_t payload_hint, bool count_prefix);

  void Append(const void* data, size_t n);
  void Append(std::span<const uint8_t> bytes) { Append(bytes.data(), bytes.size()); }
  template <typename T>
  void AppendLE(T v) {
    uint8_t b[sizeof(T)];
    for (size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    Append(b, sizeof b);
  }
  // Appends `n` payload bytes for the caller to fill; returns the first.
  uint8_t* Extend(size_t n);
  // The buffer, for encoders that append to a vector (ChangeEvent::EncodeTo).
  std::vector<uint8_t>* buffer() { return &bytes_; }

  // Bytes of the frame so far, its header (and count) included.
  size_t size() const { return bytes_.size(); }
  // The count Seal() writes first in the payload (count_prefix only).
  void set_count(uint32_t n) { count_ = n; }

  // Writes the count and the header; returns the whole frame. The writer is
  // empty afterwards.
  std::vector<uint8_t> Seal(uint8_t opcode, uint64_t request_id, uint16_t flags, WireStatus status);

 private:
  std::vector<uint8_t> bytes_;
  bool count_prefix_;
  uint32_t count_ = 0;
};

class FrameDecoder {
 public:
  // REQUIRES: max_payload <= 2^32 - 1.
  explicit FrameDecoder(size_t max_payload) : max_payload_(max_payload) {}

  // Lowers or raises the payload limit (e.g. after authentication).
  void set_max_payload(size_t max_payload) { max_payload_ = max_payload; }

  enum class Result { kFrame, kNeedMore, kError };
  // Consumes bytes from `in` (sets *consumed) and, when a whole frame is
  // buffered, moves it to *frame. Call again with the rest of `in` until it
  // returns kNeedMore. kError is sticky; error() says why.
  Result Feed(std::span<const uint8_t> in, size_t* consumed, Frame* frame);

  const absl::Status& error() const { return error_; }
  // The wire status for error(): TOO_LARGE for an oversized length,
  // UNSUPPORTED for a protocol version, INVALID otherwise.
  WireStatus error_wire_status() const { return error_wire_status_; }
  // The request id of the frame being decoded when the error occurred, if
  // its header was read (so the error reply can name it), else 0.
  uint64_t error_request_id() const { return error_request_id_; }
  // Bytes buffered but not yet returned as a frame.
  size_t buffered() const { return header_fill_ + payload_.size(); }

 private:
  size_t max_payload_;
  uint8_t header_bytes_[kHeaderSize] = {};
  size_t header_fill_ = 0;
  bool have_header_ = false;
  FrameHeader header_;
  std::vector<uint8_t> payload_;
  absl::Status error_;
  WireStatus error_wire_status_ = WireStatus::kOk;
  uint64_t error_request_id_ = 0;
};

}  // namespace voxdb::protocol

#endif  // VOXDB_PROTOCOL_FRAME_H_
