#include "protocol/frame.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/status.h"

namespace voxdb::protocol {

using engine::DecodeFixed16;
using engine::DecodeFixed32;
using engine::DecodeFixed64;
using engine::EncodeFixed16;
using engine::EncodeFixed32;
using engine::EncodeFixed64;

const char* WireStatusName(WireStatus code) {
  switch (code) {
    case WireStatus::kOk:
      return "OK";
    case WireStatus::kInvalid:
      return "INVALID";
    case WireStatus::kOutOfBounds:
      return "OUT_OF_BOUNDS";
    case WireStatus::kNotFound:
      return "NOT_FOUND";
    case WireStatus::kConflict:
      return "CONFLICT";
    case WireStatus::kCorrupt:
      return "CORRUPT";
    case WireStatus::kStorageFull:
      return "STORAGE_FULL";
    case WireStatus::kBusy:
      return "BUSY";
    case WireStatus::kUnavailable:
      return "UNAVAILABLE";
    case WireStatus::kUnauthenticated:
      return "UNAUTHENTICATED";
    case WireStatus::kPermissionDenied:
      return "PERMISSION_DENIED";
    case WireStatus::kUnsupported:
      return "UNSUPPORTED";
    case WireStatus::kMismatch:
      return "MISMATCH";
    case WireStatus::kTooLarge:
      return "TOO_LARGE";
    case WireStatus::kInternal:
      return "INTERNAL";
    case WireStatus::kResync:
      return "RESYNC";
    case WireStatus::kWrongPartition:
      return "WRONG_PARTITION";
  }
  return "UNKNOWN_STATUS";
}

WireStatus ToWireStatus(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return WireStatus::kOk;
    case absl::StatusCode::kInvalidArgument:
      return IsTooLarge(s) ? WireStatus::kTooLarge : WireStatus::kInvalid;
    case absl::StatusCode::kOutOfRange:
      return IsResync(s) ? WireStatus::kResync : WireStatus::kOutOfBounds;
    case absl::StatusCode::kNotFound:
      return WireStatus::kNotFound;
    case absl::StatusCode::kAborted:
      return WireStatus::kConflict;
    case absl::StatusCode::kDataLoss:
      return WireStatus::kCorrupt;
    case absl::StatusCode::kResourceExhausted:
      return WireStatus::kStorageFull;
    case absl::StatusCode::kUnavailable:
      return WireStatus::kBusy;
    case absl::StatusCode::kCancelled:
      return WireStatus::kUnavailable;
    case absl::StatusCode::kUnauthenticated:
      return WireStatus::kUnauthenticated;
    case absl::StatusCode::kPermissionDenied:
      return WireStatus::kPermissionDenied;
    case absl::StatusCode::kUnimplemented:
      return WireStatus::kUnsupported;
    case absl::StatusCode::kFailedPrecondition:
      return IsWrongPartition(s) ? WireStatus::kWrongPartition : WireStatus::kMismatch;
    default:
      return WireStatus::kInternal;
  }
}

absl::Status FromWireStatus(WireStatus code, std::string_view message) {
  const absl::string_view m(message.data(), message.size());
  switch (code) {
    case WireStatus::kOk:
      return absl::OkStatus();
    case WireStatus::kInvalid:
      return absl::InvalidArgumentError(m);
    case WireStatus::kTooLarge:
      return TooLargeError(m);
    case WireStatus::kOutOfBounds:
      return OutOfBoundsError(m);
    case WireStatus::kNotFound:
      return absl::NotFoundError(m);
    case WireStatus::kConflict:
      return ConflictError(m);
    case WireStatus::kCorrupt:
      return CorruptError(m);
    case WireStatus::kStorageFull:
      return StorageFullError(m);
    case WireStatus::kBusy:
      return BusyError(m);
    case WireStatus::kUnavailable:
      return ClosingError(m);
    case WireStatus::kUnauthenticated:
      return absl::UnauthenticatedError(m);
    case WireStatus::kPermissionDenied:
      return absl::PermissionDeniedError(m);
    case WireStatus::kUnsupported:
      return UnsupportedError(m);
    case WireStatus::kMismatch:
      return MismatchError(m);
    case WireStatus::kResync:
      return ResyncError(m);
    case WireStatus::kWrongPartition:
      return WrongPartitionError(m);
    case WireStatus::kInternal:
      break;
  }
  return absl::InternalError(m);
}

void EncodeHeader(const FrameHeader& h, uint32_t payload_length, uint8_t* p) {
  EncodeFixed32(p, kMagic);
  p[4] = h.version;
  p[5] = h.opcode;
  EncodeFixed16(p + 6, h.flags);
  EncodeFixed64(p + 8, h.request_id);
  EncodeFixed16(p + 16, h.status);
  EncodeFixed16(p + 18, 0);
  EncodeFixed32(p + 20, payload_length);
}

void EncodeFrame(const FrameHeader& h, std::span<const uint8_t> payload,
                 std::vector<uint8_t>* out) {
  const size_t at = out->size();
  out->resize(at + kHeaderSize + payload.size());
  uint8_t* p = out->data() + at;
  EncodeHeader(h, static_cast<uint32_t>(payload.size()), p);
  if (!payload.empty()) std::memcpy(p + kHeaderSize, payload.data(), payload.size());
}

FrameHeader PeekHeader(std::span<const uint8_t> frame) {
  const uint8_t* p = frame.data();
  FrameHeader h;
  h.version = p[4];
  h.opcode = p[5];
  h.flags = DecodeFixed16(p + 6);
  h.request_id = DecodeFixed64(p + 8);
  h.status = DecodeFixed16(p + 16);
  h.payload_length = DecodeFixed32(p + 20);
  return h;
}

FrameWriter::FrameWriter(std::vector<uint8_t> buffer, size_t payload_hint, bool count_prefix)
    : bytes_(std::move(buffer)), count_prefix_(count_prefix) {
  const size_t start = kHeaderSize + (count_prefix ? 4 : 0);
  bytes_.assign(start, 0);
  bytes_.reserve(start + payload_hint);
}

void FrameWriter::Append(const void* data, size_t n) {
  const auto* b = static_cast<const uint8_t*>(data);
  bytes_.insert(bytes_.end(), b, b + n);
}

uint8_t* FrameWriter::Extend(size_t n) {
  const size_t at = bytes_.size();
  bytes_.resize(at + n);
  return bytes_.data() + at;
}

std::vector<uint8_t> FrameWriter::Seal(uint8_t opcode, uint64_t request_id, uint16_t flags,
                                       WireStatus status) {
  if (count_prefix_) EncodeFixed32(bytes_.data() + kHeaderSize, count_);
  FrameHeader h;
  h.opcode = opcode;
  h.flags = flags;
  h.request_id = request_id;
  h.status = static_cast<uint16_t>(status);
  EncodeHeader(h, static_cast<uint32_t>(bytes_.size() - kHeaderSize), bytes_.data());
  return std::move(bytes_);
}

FrameDecoder::Result FrameDecoder::Feed(std::span<const uint8_t> in, size_t* consumed,
                                        Frame* frame) {
  *consumed = 0;
  if (!error_.ok()) return Result::kError;
  size_t pos = 0;
  if (!have_header_) {
    const size_t take = std::min(kHeaderSize - header_fill_, in.size());
    std::memcpy(header_bytes_ + header_fill_, in.data(), take);
    header_fill_ += take;
    pos += take;
    *consumed = pos;
    if (header_fill_ < kHeaderSize) return Result::kNeedMore;
    const uint8_t* p = header_bytes_;
    error_request_id_ = 0;  // not the previous frame's: this header is not trusted yet
    if (DecodeFixed32(p) != kMagic) {
      error_ = absl::InvalidArgumentError("bad magic: this is not a voxdb protocol stream");
      error_wire_status_ = WireStatus::kInvalid;
      return Result::kError;
    }
    header_ = PeekHeader({p, kHeaderSize});
    error_request_id_ = header_.request_id;
    if (header_.version != kProtocolVersion) {
      error_ = UnsupportedError(
          absl::StrFormat("protocol version %u is not supported (this server speaks %u)",
                          header_.version, kProtocolVersion));
      error_wire_status_ = WireStatus::kUnsupported;
      return Result::kError;
    }
    if (DecodeFixed16(p + 18) != 0 || (header_.flags & ~(kFlagReply | kFlagPush)) != 0) {
      error_ = absl::InvalidArgumentError("reserved header bits are set");
      error_wire_status_ = WireStatus::kInvalid;
      return Result::kError;
    }
    if (header_.payload_length > max_payload_) {
      error_ = absl::InvalidArgumentError(
          absl::StrFormat("frame payload of %u bytes is over the limit of %u",
                          header_.payload_length, max_payload_));
      error_wire_status_ = WireStatus::kTooLarge;
      return Result::kError;
    }
    have_header_ = true;
    payload_.clear();
    payload_.reserve(header_.payload_length);  // bounded by max_payload_
  }
  const size_t want = header_.payload_length - payload_.size();
  const size_t take = std::min(want, in.size() - pos);
  payload_.insert(payload_.end(), in.begin() + static_cast<ptrdiff_t>(pos),
                  in.begin() + static_cast<ptrdiff_t>(pos + take));
  pos += take;
  *consumed = pos;
  if (payload_.size() < header_.payload_length) return Result::kNeedMore;
  frame->header = header_;
  frame->payload = std::move(payload_);
  payload_ = {};
  have_header_ = false;
  header_fill_ = 0;
  return Result::kFrame;
}

}  // namespace voxdb::protocol
