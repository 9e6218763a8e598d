#include "protocol/frame.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "engine/status.h"

namespace voxdb::protocol {
namespace {

std::vector<uint8_t> Encoded(uint8_t opcode, uint64_t id, std::vector<uint8_t> payload) {
  std::vector<uint8_t> out;
  FrameHeader h;
  h.opcode = opcode;
  h.request_id = id;
  EncodeFrame(h, payload, &out);
  return out;
}

// Feeds `bytes` in chunks of `step` and collects the frames.
std::vector<Frame> FeedAll(FrameDecoder& d, const std::vector<uint8_t>& bytes, size_t step,
                           FrameDecoder::Result* last) {
  std::vector<Frame> frames;
  *last = FrameDecoder::Result::kNeedMore;
  for (size_t at = 0; at < bytes.size();) {
    const size_t n = std::min(step, bytes.size() - at);
    std::span<const uint8_t> in(bytes.data() + at, n);
    while (!in.empty()) {
      size_t used = 0;
      Frame f;
      *last = d.Feed(in, &used, &f);
      if (*last == FrameDecoder::Result::kError) return frames;
      if (*last == FrameDecoder::Result::kFrame) frames.push_back(std::move(f));
      in = in.subspan(used);
      if (used == 0 && *last == FrameDecoder::Result::kNeedMore) break;
    }
    at += n;
  }
  return frames;
}

TEST(FrameTest, HeaderLayoutIsExact) {
  const std::vector<uint8_t> bytes = Encoded(2, 0x0102030405060708ull, {0xAA, 0xBB});
  const std::vector<uint8_t> expected = {0x56, 0x58, 0x44, 0x42,  // "VXDB"
                                         0x01, 0x02, 0x00, 0x00,  // version, opcode, flags
                                         0x08, 0x07, 0x06, 0x05,
                                         0x04, 0x03, 0x02, 0x01,  // request id
                                         0x00, 0x00, 0x00, 0x00,  // status, reserved
                                         0x02, 0x00, 0x00, 0x00,  // payload length
                                         0xAA, 0xBB};
  EXPECT_EQ(bytes, expected);
}

TEST(FrameTest, PipelinedFramesSurviveAnySplit) {
  std::vector<uint8_t> stream;
  std::mt19937 rng(1);
  std::vector<std::vector<uint8_t>> payloads;
  for (int i = 0; i < 50; ++i) {
    std::vector<uint8_t> p(rng() % 300);
    for (auto& b : p) b = static_cast<uint8_t>(rng());
    payloads.push_back(p);
    const auto f = Encoded(static_cast<uint8_t>(i % 12 + 1), static_cast<uint64_t>(i), p);
    stream.insert(stream.end(), f.begin(), f.end());
  }
  for (size_t step : {size_t{1}, size_t{7}, size_t{24}, size_t{4096}}) {
    FrameDecoder d(1 << 20);
    FrameDecoder::Result last;
    const auto frames = FeedAll(d, stream, step, &last);
    ASSERT_EQ(frames.size(), payloads.size()) << step;
    for (size_t i = 0; i < frames.size(); ++i) {
      EXPECT_EQ(frames[i].header.request_id, i);
      EXPECT_EQ(frames[i].payload, payloads[i]);
    }
    EXPECT_EQ(d.buffered(), 0u);
  }
}

TEST(FrameTest, UntrustworthyFramesAreStickyErrors) {
  {
    FrameDecoder d(100);
    auto bytes = Encoded(1, 7, {});
    bytes[0] = 'X';
    FrameDecoder::Result last;
    FeedAll(d, bytes, 5, &last);
    EXPECT_EQ(last, FrameDecoder::Result::kError);
    EXPECT_TRUE(absl::IsInvalidArgument(d.error()));
    size_t used;
    Frame f;
    EXPECT_EQ(d.Feed(Encoded(1, 8, {}), &used, &f), FrameDecoder::Result::kError);
  }
  {
    FrameDecoder d(100);
    auto bytes = Encoded(1, 7, {});
    bytes[4] = 2;  // a future protocol version
    FrameDecoder::Result last;
    FeedAll(d, bytes, 100, &last);
    EXPECT_EQ(last, FrameDecoder::Result::kError);
    EXPECT_TRUE(IsUnsupported(d.error()));
    EXPECT_EQ(d.error_wire_status(), WireStatus::kUnsupported);
    EXPECT_EQ(d.error_request_id(), 7u);
  }
  {
    FrameDecoder d(100);  // a length over the limit: refused before any allocation
    FrameDecoder::Result last;
    FeedAll(d, Encoded(1, 9, std::vector<uint8_t>(101)), 24, &last);
    EXPECT_EQ(last, FrameDecoder::Result::kError);
    EXPECT_LE(d.buffered(), kHeaderSize);
    EXPECT_EQ(d.error_wire_status(), WireStatus::kTooLarge);
  }
  {
    FrameDecoder d(100);  // the push flag is known; the next bit is reserved
    auto bytes = Encoded(1, 7, {});
    bytes[6] = kFlagPush;
    FrameDecoder::Result last;
    std::vector<Frame> frames = FeedAll(d, bytes, 100, &last);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_TRUE(frames[0].header.is_push());
    bytes[6] = 4;
    FeedAll(d, bytes, 100, &last);
    EXPECT_EQ(last, FrameDecoder::Result::kError);
  }
}

TEST(FrameTest, RandomGarbageNeverCrashesOrGrowsUnbounded) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<uint8_t> bytes(rng() % 200);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    if (trial % 2 && bytes.size() >= 6) {  // often a valid-looking prefix
      const auto h = Encoded(3, 1, {});
      std::copy(h.begin(), h.begin() + 6, bytes.begin());
    }
    FrameDecoder d(64);
    FrameDecoder::Result last;
    FeedAll(d, bytes, 1 + rng() % 30, &last);
    EXPECT_LE(d.buffered(), kHeaderSize + 64);
  }
}

TEST(FrameTest, StatusCodesRoundTrip) {
  for (const absl::Status& s :
       {absl::OkStatus(), absl::InvalidArgumentError("a"), OutOfBoundsError("b"),
        absl::NotFoundError("c"), ConflictError("d"), CorruptError("e"), StorageFullError("f"),
        BusyError("g"), ClosingError("m"), absl::UnauthenticatedError("h"),
        absl::PermissionDeniedError("i"), UnsupportedError("j"), MismatchError("k"), IoError("l"),
        TooLargeError("n"), ResyncError("o"), WrongPartitionError("p")}) {
    const absl::Status back =
        FromWireStatus(ToWireStatus(s), std::string_view(s.message().data(), s.message().size()));
    EXPECT_EQ(back, s) << s;  // code, message and payload
  }
  for (uint16_t code = 0; code <= static_cast<uint16_t>(WireStatus::kWrongPartition); ++code) {
    const auto wire = static_cast<WireStatus>(code);
    EXPECT_EQ(ToWireStatus(FromWireStatus(wire, "x")), wire) << WireStatusName(wire);
  }
}

// engine/status.h's table: each helper has one wire status, and each name one
// meaning (absl's UNAVAILABLE is BUSY; voxdb's UNAVAILABLE is the server or
// database closing; a client that cannot reach the server is neither).
TEST(FrameTest, EachStatusHelperHasItsWireStatus) {
  const std::pair<absl::Status, const char*> table[] = {
      {absl::InvalidArgumentError("x"), "INVALID"},
      {OutOfBoundsError("x"), "OUT_OF_BOUNDS"},
      {absl::NotFoundError("x"), "NOT_FOUND"},
      {ConflictError("x"), "CONFLICT"},
      {CorruptError("x"), "CORRUPT"},
      {StorageFullError("x"), "STORAGE_FULL"},
      {BusyError("x"), "BUSY"},
      {ClosingError("x"), "UNAVAILABLE"},
      {absl::UnauthenticatedError("x"), "UNAUTHENTICATED"},
      {absl::PermissionDeniedError("x"), "PERMISSION_DENIED"},
      {UnsupportedError("x"), "UNSUPPORTED"},
      {MismatchError("x"), "MISMATCH"},
      {TooLargeError("x"), "TOO_LARGE"},
      {IoError("x"), "INTERNAL"},
      {ResyncError("x"), "RESYNC"},
      {WrongPartitionError("x"), "WRONG_PARTITION"},
  };
  for (const auto& [status, name] : table) {
    EXPECT_STREQ(WireStatusName(ToWireStatus(status)), name) << status;
  }
  EXPECT_TRUE(IsBusy(BusyError("x")));
  EXPECT_FALSE(IsBusy(UnreachableError("x")));
  EXPECT_TRUE(IsUnreachable(UnreachableError("x")));
  EXPECT_FALSE(IsUnreachable(BusyError("x")));
  EXPECT_FALSE(IsUnreachable(FromWireStatus(WireStatus::kBusy, "x")));
  EXPECT_TRUE(IsClosing(FromWireStatus(WireStatus::kUnavailable, "x")));
  EXPECT_FALSE(IsBusy(FromWireStatus(WireStatus::kUnavailable, "x")));
  EXPECT_TRUE(IsResync(FromWireStatus(WireStatus::kResync, "x")));
  EXPECT_FALSE(IsOutOfBounds(ResyncError("x")));
  EXPECT_FALSE(IsResync(OutOfBoundsError("x")));
  EXPECT_TRUE(IsTooLarge(FromWireStatus(WireStatus::kTooLarge, "x")));
  EXPECT_TRUE(IsWrongPartition(FromWireStatus(WireStatus::kWrongPartition, "x")));
  EXPECT_FALSE(IsMismatch(WrongPartitionError("x")));
  EXPECT_FALSE(IsWrongPartition(MismatchError("x")));
}

TEST(FrameWriterTest, BuildsTheFrameEncodeFrameBuilds) {
  FrameWriter w(3);
  w.Append(std::vector<uint8_t>{1, 2});
  *w.Extend(1) = 3;
  EXPECT_EQ(w.size(), kHeaderSize + 3);
  const std::vector<uint8_t> frame = w.Seal(9, 0x0102030405060708, kFlagReply, WireStatus::kOk);
  std::vector<uint8_t> expected;
  FrameHeader h;
  h.opcode = 9;
  h.flags = kFlagReply;
  h.request_id = 0x0102030405060708;
  EncodeFrame(h, std::vector<uint8_t>{1, 2, 3}, &expected);
  EXPECT_EQ(frame, expected);
}

TEST(FrameWriterTest, CountPrefixIsWrittenAtSeal) {
  std::vector<uint8_t> recycled(100, 0xee);  // its bytes go, its capacity stays
  FrameWriter w(std::move(recycled), 16, /*count_prefix=*/true);
  EXPECT_EQ(w.size(), kHeaderSize + 4);
  w.AppendLE<uint16_t>(0xbeef);
  w.set_count(2);
  const std::vector<uint8_t> frame = w.Seal(26, 7, kFlagPush, WireStatus::kOk);
  ASSERT_EQ(frame.size(), kHeaderSize + 6);
  EXPECT_EQ(std::vector<uint8_t>(frame.begin() + kHeaderSize, frame.end()),
            (std::vector<uint8_t>{2, 0, 0, 0, 0xef, 0xbe}));
  const FrameHeader h = PeekHeader(frame);
  EXPECT_EQ(h.opcode, 26);
  EXPECT_EQ(h.request_id, 7u);
  EXPECT_TRUE(h.is_push());
  EXPECT_FALSE(h.is_reply());
  EXPECT_EQ(h.status, 0);
  EXPECT_EQ(h.payload_length, 6u);
}

TEST(FrameWriterTest, PeekHeaderReadsWhatEncodeHeaderWrote) {
  FrameWriter w;
  const std::vector<uint8_t> frame = w.Seal(3, ~uint64_t{0} - 1, kFlagReply, WireStatus::kTooLarge);
  const FrameHeader h = PeekHeader(frame);
  EXPECT_EQ(h.version, kProtocolVersion);
  EXPECT_EQ(h.opcode, 3);
  EXPECT_EQ(h.request_id, ~uint64_t{0} - 1);
  EXPECT_EQ(static_cast<WireStatus>(h.status), WireStatus::kTooLarge);
  EXPECT_TRUE(h.is_reply());
  EXPECT_EQ(h.payload_length, 0u);
}

}  // namespace
}  // namespace voxdb::protocol
