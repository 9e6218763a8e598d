// Corner cases of the wire protocol against the real voxdbd binary: what
// protocol/PROTOCOL.md says the server answers to frames and payloads a
// careful client would never send, and the order of one connection's
// requests.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <map>
#include <set>
#include <sstream>

#include "engine/chunk_codec.h"
#include "engine/morton.h"
#include "engine/world_frame.h"
#include "protocol/client.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using protocol::Client;
using protocol::Frame;
using protocol::FrameHeader;
using protocol::Opcode;
using protocol::WireStatus;
using testing::Connect;
using testing::DaemonProcess;
using testing::kX;
using testing::kY;
using testing::kZ;
using testing::TempDir;

// A frame's bytes with any header fields a test wants.
std::vector<uint8_t> RawFrame(uint8_t opcode, uint64_t id, std::span<const uint8_t> payload,
                              uint16_t flags = 0, uint16_t status = 0) {
  FrameHeader h;
  h.opcode = opcode;
  h.flags = flags;
  h.request_id = id;
  h.status = status;
  std::vector<uint8_t> out;
  protocol::EncodeFrame(h, payload, &out);
  return out;
}
std::vector<uint8_t> RawFrame(Opcode op, uint64_t id, std::span<const uint8_t> payload) {
  return RawFrame(static_cast<uint8_t>(op), id, payload);
}

void SendRaw(Client* c, std::span<const uint8_t> bytes) {
  size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n = ::send(c->fd(), bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << "send failed";
    at += static_cast<size_t>(n);
  }
}

std::string Text(const Frame& f) { return std::string(f.payload.begin(), f.payload.end()); }

// Sends one raw request and returns the reply frame.
Frame RoundTrip(Client* c, std::span<const uint8_t> bytes) {
  SendRaw(c, bytes);
  auto f = c->Receive();
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? std::move(*f) : Frame{};
}

// The connection still serves requests.
void ExpectAlive(Client* c) { EXPECT_OK(c->Ping(std::vector<uint8_t>{1, 2})); }

class DaemonProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"));
  }
  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(DaemonProtocolTest, BadMagicIsAnsweredWithOpcodeZeroIdZeroThenClosed) {
  auto c = Connect(daemon_->port(), std::chrono::seconds(30));
  // A request before it, so that the id of the last good frame is not
  // reused for the bad one.
  const Frame pong = RoundTrip(c.get(), RawFrame(Opcode::kPing, 77, std::vector<uint8_t>{9}));
  EXPECT_EQ(pong.header.request_id, 77u);
  std::vector<uint8_t> bad = RawFrame(Opcode::kPing, 78, {});
  bad[0] = 'H';  // "HXDB": e.g. an HTTP client
  const Frame f = RoundTrip(c.get(), bad);
  EXPECT_EQ(f.header.opcode, 0);
  EXPECT_EQ(f.header.request_id, 0u);
  EXPECT_TRUE(f.header.is_reply());
  EXPECT_EQ(f.header.status, static_cast<uint16_t>(WireStatus::kInvalid));
  EXPECT_NE(Text(f).find("bad magic"), std::string::npos) << Text(f);
  EXPECT_FALSE(c->Receive().ok());  // closed
}

TEST_F(DaemonProtocolTest, UntrustedHeadersNameTheRequestIdWithOpcodeZeroThenClose) {
  {
    auto c = Connect(daemon_->port(), std::chrono::seconds(30));
    std::vector<uint8_t> v2 = RawFrame(Opcode::kPing, 5, {});
    v2[4] = 2;  // framing version 2
    const Frame f = RoundTrip(c.get(), v2);
    EXPECT_EQ(f.header.opcode, 0);
    EXPECT_EQ(f.header.request_id, 5u);
    EXPECT_EQ(f.header.status, static_cast<uint16_t>(WireStatus::kUnsupported));
    EXPECT_FALSE(c->Receive().ok());
  }
  {
    auto c = Connect(daemon_->port(), std::chrono::seconds(30));
    const Frame f = RoundTrip(c.get(), RawFrame(2, 6, {}, /*flags=*/4));
    EXPECT_EQ(f.header.opcode, 0);
    EXPECT_EQ(f.header.request_id, 6u);
    EXPECT_EQ(f.header.status, static_cast<uint16_t>(WireStatus::kInvalid));
    EXPECT_FALSE(c->Receive().ok());
  }
}

TEST_F(DaemonProtocolTest, RequestsWithTheReplyOrPushFlagAreInvalidAndTheConnectionStays) {
  auto c = Connect(daemon_->port(), std::chrono::seconds(30));
  for (uint16_t flags : {protocol::kFlagReply, protocol::kFlagPush}) {
    const Frame f =
        RoundTrip(c.get(), RawFrame(static_cast<uint8_t>(Opcode::kPing), 40 + flags, {}, flags));
    EXPECT_EQ(f.header.opcode, static_cast<uint8_t>(Opcode::kPing));
    EXPECT_EQ(f.header.request_id, 40u + flags);
    EXPECT_EQ(f.header.status, static_cast<uint16_t>(WireStatus::kInvalid)) << Text(f);
    EXPECT_EQ(f.header.flags, protocol::kFlagReply);
    ExpectAlive(c.get());
  }
}

TEST_F(DaemonProtocolTest, ARequestWithANonZeroStatusIsInvalidAndNotRun) {
  auto c = Connect(daemon_->port(), std::chrono::seconds(30));
  protocol::SetVoxelsRequest set{{{{kX, kY, kZ}, 7}}};
  const Frame f =
      RoundTrip(c.get(), RawFrame(static_cast<uint8_t>(Opcode::kSetVoxels), 9, set.Encode(), 0, 1));
  EXPECT_EQ(f.header.request_id, 9u);
  EXPECT_EQ(f.header.status, static_cast<uint16_t>(WireStatus::kInvalid)) << Text(f);
  EXPECT_NE(Text(f).find("status 1"), std::string::npos) << Text(f);
  ASSERT_OK_AND_ASSIGN(auto got, c->GetVoxels({{{kX, kY, kZ}}}));
  EXPECT_EQ(got, std::vector<uint8_t>{0});  // not written
}

TEST_F(DaemonProtocolTest, HelloVersionRanges) {
  auto c = Connect(daemon_->port(), std::chrono::seconds(30));
  auto hello = [&](uint8_t lo, uint8_t hi) {
    protocol::HelloRequest h{lo, hi, "", "t"};
    return RoundTrip(c.get(), RawFrame(Opcode::kHello, 3, h.Encode())).header.status;
  };
  EXPECT_EQ(hello(1, 0), static_cast<uint16_t>(WireStatus::kInvalid));  // min > max
  EXPECT_EQ(hello(3, 2), static_cast<uint16_t>(WireStatus::kInvalid));
  EXPECT_EQ(hello(2, 9), static_cast<uint16_t>(WireStatus::kUnsupported));  // no version 1
  ExpectAlive(c.get());
  const Frame ok = RoundTrip(
      c.get(), RawFrame(Opcode::kHello, 4, protocol::HelloRequest{0, 200, "", "t"}.Encode()));
  ASSERT_EQ(ok.header.status, 0);
  ASSERT_OK_AND_ASSIGN(auto reply, protocol::HelloReply::Decode(ok.payload));
  EXPECT_EQ(reply.version, 1);
  EXPECT_EQ(reply.world_frame.size(), 56u);  // frame_len
}

TEST_F(DaemonProtocolTest, ABytePastTheLastFieldIsInvalid) {
  auto c = Connect(daemon_->port(), std::chrono::seconds(30));
  const uint64_t code = engine::ChunkKey::FromCoord({1'000'000, 400'000, 312'500}).code();
  auto status_of = [&](Opcode op, std::vector<uint8_t> payload) {
    payload.push_back(0);
    const Frame f = RoundTrip(c.get(), RawFrame(op, 1, payload));
    EXPECT_NE(Text(f).find("malformed"), std::string::npos)
        << protocol::OpcodeName(op) << ": " << Text(f);
    return f.header.status;
  };
  const auto kInvalid = static_cast<uint16_t>(WireStatus::kInvalid);
  for (Opcode op : {Opcode::kFlush, Opcode::kStats, Opcode::kSnapshotOpen, Opcode::kStreamClose,
                    Opcode::kReindex, Opcode::kLodSync}) {
    EXPECT_EQ(status_of(op, {}), kInvalid) << protocol::OpcodeName(op);
  }
  EXPECT_EQ(status_of(Opcode::kDeleteChunk, protocol::EncodeU64(code)), kInvalid);
  EXPECT_EQ(status_of(Opcode::kUnsubscribe, protocol::EncodeU64(1)), kInvalid);
  EXPECT_EQ(status_of(Opcode::kSnapshotClose, protocol::EncodeU64(1)), kInvalid);
  protocol::BoxRequest box;
  box.box = {{kX, kY, kZ}, {kX + 1, kY + 1, kZ + 1}};
  box.material = 3;
  EXPECT_EQ(status_of(Opcode::kReadBox, box.EncodeReadBox()), kInvalid);
  EXPECT_EQ(status_of(Opcode::kFillBox, box.EncodeFillBox()), kInvalid);
  protocol::GetChunksRequest get{{code}, 0};
  std::vector<uint8_t> two = get.Encode();
  two.push_back(1);  // a level byte, then one more
  EXPECT_EQ(status_of(Opcode::kGetChunks, two), kInvalid);
  EXPECT_EQ(status_of(Opcode::kSetVoxels, protocol::SetVoxelsRequest{{{{kX, kY, kZ}, 1}}}.Encode()),
            kInvalid);
  // WRITE_BOX's voxels and PUT_CHUNK's record are the rest of the payload:
  // one voxel too many does not match the box; a record one byte longer
  // than its payload_size is a bad record.
  box.voxels = {1};
  const Frame wb = RoundTrip(c.get(), [&] {
    std::vector<uint8_t> p = box.EncodeWriteBox();
    p.push_back(2);
    return RawFrame(Opcode::kWriteBox, 2, p);
  }());
  EXPECT_EQ(wb.header.status, kInvalid) << Text(wb);
  std::vector<uint8_t> put =
      protocol::PutChunkRequest{code, std::nullopt, engine::EncodeChunk(engine::Chunk(1), 0, 0)}
          .Encode();
  put.push_back(0);
  const Frame pf = RoundTrip(c.get(), RawFrame(Opcode::kPutChunk, 2, put));
  EXPECT_EQ(pf.header.status, static_cast<uint16_t>(WireStatus::kCorrupt)) << Text(pf);
  ExpectAlive(c.get());
  // Nothing was written by any of them.
  ASSERT_OK_AND_ASSIGN(auto chunks, c->GetChunks(std::vector<uint64_t>{code}));
  EXPECT_EQ(chunks.results[0].version, 0u);
}

TEST_F(DaemonProtocolTest, ChunkCodesWithBit63OrOutsideTheGrid) {
  auto c = Connect(daemon_->port(), std::chrono::seconds(30));
  const uint64_t good = engine::ChunkKey::FromCoord({1'000'000, 400'000, 312'500}).code();
  const uint64_t bit63 = good | uint64_t{1} << 63;
  // x = 1,252,345 is one chunk past the grid's last (1,252,344).
  const uint64_t outside = engine::MortonEncode(1'252'345, 0, 0);
  auto status_of = [&](Opcode op, const std::vector<uint8_t>& payload) {
    const Frame f = RoundTrip(c.get(), RawFrame(op, 8, payload));
    return std::make_pair(f.header.status, f);
  };
  const auto kInvalid = static_cast<uint16_t>(WireStatus::kInvalid);
  const auto kOutOfBounds = static_cast<uint16_t>(WireStatus::kOutOfBounds);
  // Bit 63: INVALID, for the whole GET_CHUNKS.
  EXPECT_EQ(status_of(Opcode::kGetChunks, protocol::GetChunksRequest{{good, bit63}}.Encode()).first,
            kInvalid);
  EXPECT_EQ(status_of(Opcode::kDeleteChunk, protocol::EncodeU64(bit63)).first, kInvalid);
  const std::vector<uint8_t> air = engine::EncodeChunk(engine::Chunk(0), 0, 0);
  EXPECT_EQ(
      status_of(Opcode::kPutChunk, protocol::PutChunkRequest{bit63, std::nullopt, air}.Encode())
          .first,
      kInvalid);
  // Outside the grid, bit 63 clear: OUT_OF_BOUNDS, per chunk in GET_CHUNKS.
  EXPECT_EQ(status_of(Opcode::kDeleteChunk, protocol::EncodeU64(outside)).first, kOutOfBounds);
  EXPECT_EQ(
      status_of(Opcode::kPutChunk, protocol::PutChunkRequest{outside, std::nullopt, air}.Encode())
          .first,
      kOutOfBounds);
  ASSERT_OK_AND_ASSIGN(auto got, c->GetChunks(std::vector<uint64_t>{good, outside}));
  ASSERT_EQ(got.results.size(), 2u);
  EXPECT_EQ(got.results[0].status, 0);
  EXPECT_EQ(got.results[1].status, kOutOfBounds);
  ExpectAlive(c.get());
}

TEST_F(DaemonProtocolTest, EmptyAndInvertedBoxesAreInvalid) {
  auto c = Connect(daemon_->port(), std::chrono::seconds(30));
  const protocol::Voxel3 lo{kX, kY, kZ};
  const std::vector<protocol::Box> bad = {
      {lo, lo},                                     // empty
      {lo, {kX + 4, kY + 4, kZ}},                   // empty in z
      {{kX + 4, kY, kZ}, {kX, kY + 4, kZ + 4}},     // inverted in x
      {{kX, kY, kZ}, {kX + 4, kY + 4, UINT64_MAX}}  // fine but past the world: OUT_OF_BOUNDS
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    const auto want =
        static_cast<uint16_t>(i + 1 < bad.size() ? WireStatus::kInvalid : WireStatus::kOutOfBounds);
    protocol::BoxRequest b;
    b.box = bad[i];
    b.material = 1;
    EXPECT_EQ(RoundTrip(c.get(), RawFrame(Opcode::kReadBox, 1, b.EncodeReadBox())).header.status,
              want)
        << i;
    EXPECT_EQ(RoundTrip(c.get(), RawFrame(Opcode::kWriteBox, 1, b.EncodeWriteBox())).header.status,
              want)
        << i;
    EXPECT_EQ(RoundTrip(c.get(), RawFrame(Opcode::kFillBox, 1, b.EncodeFillBox())).header.status,
              want)
        << i;
    protocol::QueryRequest q;
    q.kind = protocol::QueryKind::kBox;
    q.box = bad[i];
    EXPECT_EQ(RoundTrip(c.get(), RawFrame(Opcode::kQueryBox, 1, q.Encode())).header.status, want)
        << i;
  }
  ExpectAlive(c.get());
}

TEST_F(DaemonProtocolTest, TwoRequestsInFlightWithOneIdAreBothRunAndAnswered) {
  auto c = Connect(daemon_->port(), std::chrono::seconds(30));
  std::vector<uint8_t> bytes = RawFrame(Opcode::kPing, 5, std::vector<uint8_t>{'a'});
  const std::vector<uint8_t> second = RawFrame(Opcode::kPing, 5, std::vector<uint8_t>{'b'});
  bytes.insert(bytes.end(), second.begin(), second.end());
  SendRaw(c.get(), bytes);
  std::multiset<std::string> got;
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(Frame f, c->Receive());
    EXPECT_EQ(f.header.request_id, 5u);
    got.insert(Text(f));
  }
  EXPECT_EQ(got, (std::multiset<std::string>{"a", "b"}));
}

// Requests of one connection run in the order sent: a read pipelined right
// after a write (sent in the same packet, before the write's reply) sees
// it, whatever kind of read.
void ExpectPipelinedReadsSeeWrites(Client* c, uint64_t rounds) {
  for (uint64_t i = 0; i < rounds; ++i) {
    const uint8_t m = static_cast<uint8_t>(1 + i % 250);
    const protocol::Voxel3 v{kX + i % 128, kY, kZ};
    protocol::BoxRequest box;
    box.box = {v, {v.x + 1, v.y + 1, v.z + 1}};
    std::vector<uint8_t> bytes =
        RawFrame(Opcode::kSetVoxels, 1000 + 3 * i, protocol::SetVoxelsRequest{{{v, m}}}.Encode());
    for (const auto& f :
         {RawFrame(Opcode::kGetVoxels, 1001 + 3 * i, protocol::GetVoxelsRequest{{v}}.Encode()),
          RawFrame(Opcode::kReadBox, 1002 + 3 * i, box.EncodeReadBox())}) {
      bytes.insert(bytes.end(), f.begin(), f.end());
    }
    SendRaw(c, bytes);
    std::map<uint64_t, Frame> replies;  // (other requests' replies are skipped)
    while (replies.size() < 3) {
      auto f = c->Receive();
      ASSERT_TRUE(f.ok()) << f.status();
      const uint64_t id = f->header.request_id;
      if (id >= 1000 + 3 * i && id < 1003 + 3 * i) replies[id] = std::move(*f);
    }
    ASSERT_EQ(replies[1000 + 3 * i].header.status, 0) << Text(replies[1000 + 3 * i]);
    EXPECT_EQ(replies[1001 + 3 * i].payload, std::vector<uint8_t>{m}) << "round " << i;
    EXPECT_EQ(replies[1002 + 3 * i].payload, std::vector<uint8_t>{m}) << "round " << i;
  }
}

TEST_F(DaemonProtocolTest, APipelinedReadSeesTheWriteSentBeforeIt) {
  auto c = Connect(daemon_->port(), std::chrono::seconds(30));
  ExpectPipelinedReadsSeeWrites(c.get(), 200);
}

}  // namespace
}  // namespace voxdb
