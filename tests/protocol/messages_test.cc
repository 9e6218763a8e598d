#include "protocol/messages.h"

#include <gtest/gtest.h>

#include <random>

#include "protocol/frame.h"

namespace voxdb::protocol {
namespace {

// Every strict prefix of a valid payload, and the payload plus one byte, is
// refused with INVALID (never a crash, never a huge allocation).
template <typename Decode>
void ExpectPrefixesRefused(const std::vector<uint8_t>& good, Decode decode, bool rest_is_blob) {
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<ptrdiff_t>(n));
    auto r = decode(cut);
    if (!rest_is_blob) {
      EXPECT_FALSE(r.ok()) << "prefix " << n;
    }
    if (!r.ok()) {
      EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
    }
  }
  if (!rest_is_blob) {
    std::vector<uint8_t> longer = good;
    longer.push_back(0);
    EXPECT_FALSE(decode(longer).ok());
  }
}

TEST(MessagesTest, HelloRoundTrip) {
  HelloRequest h{1, 1, "secret-token", "shard-7"};
  auto back = HelloRequest::Decode(h.Encode());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->token, "secret-token");
  EXPECT_EQ(back->client, "shard-7");
  ExpectPrefixesRefused(h.Encode(), HelloRequest::Decode, false);
  HelloReply r;
  r.world_frame = std::vector<uint8_t>(56, 7);
  r.server_version = "voxdb 0.1.0";
  r.max_payload = 64 << 20;
  r.max_batch = 65536;
  r.max_box_voxels = uint64_t{1} << 28;
  r.role = 2;
  auto rb = HelloReply::Decode(r.Encode());
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->role, 2);
  EXPECT_EQ(rb->world_frame, r.world_frame);
  EXPECT_EQ(rb->max_box_voxels, r.max_box_voxels);
  ExpectPrefixesRefused(r.Encode(), HelloReply::Decode, false);
}

TEST(MessagesTest, ChunkMessagesRoundTrip) {
  GetChunksRequest g{{1, 2, 0x7fffffffffffffffull}};
  auto gb = GetChunksRequest::Decode(g.Encode());
  ASSERT_TRUE(gb.ok());
  EXPECT_EQ(gb->codes, g.codes);
  ExpectPrefixesRefused(g.Encode(), GetChunksRequest::Decode, false);

  GetChunksReply reply;
  reply.results = {{0, 42, {1, 2, 3}}, {5, 0, {'b', 'a', 'd'}}};
  auto rb = GetChunksReply::Decode(reply.Encode());
  ASSERT_TRUE(rb.ok());
  ASSERT_EQ(rb->results.size(), 2u);
  EXPECT_EQ(rb->results[0].version, 42u);
  EXPECT_EQ(rb->results[1].status, 5);
  EXPECT_EQ(rb->results[1].bytes, reply.results[1].bytes);
  ExpectPrefixesRefused(reply.Encode(), GetChunksReply::Decode, false);

  PutChunkRequest put{9, 17, {4, 5, 6}};
  auto pb = PutChunkRequest::Decode(put.Encode());
  ASSERT_TRUE(pb.ok());
  EXPECT_EQ(pb->expected_version, 17u);
  EXPECT_EQ(pb->record, put.record);
  put.expected_version.reset();
  pb = PutChunkRequest::Decode(put.Encode());
  ASSERT_TRUE(pb.ok());
  EXPECT_FALSE(pb->expected_version.has_value());
  ExpectPrefixesRefused(put.Encode(), PutChunkRequest::Decode, true);

  auto v = DecodeU64(EncodeU64(123456789));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 123456789u);
  ExpectPrefixesRefused(EncodeU64(5), DecodeU64, false);
}

TEST(MessagesTest, VoxelAndBoxMessagesRoundTrip) {
  GetVoxelsRequest g{{{1, 2, 3}, {4, 5, 6}}};
  auto gb = GetVoxelsRequest::Decode(g.Encode());
  ASSERT_TRUE(gb.ok());
  EXPECT_EQ(gb->at, g.at);
  ExpectPrefixesRefused(g.Encode(), GetVoxelsRequest::Decode, false);

  SetVoxelsRequest s{{{{1, 2, 3}, 9}, {{7, 8, 9}, 0}}};
  auto sb = SetVoxelsRequest::Decode(s.Encode());
  ASSERT_TRUE(sb.ok());
  EXPECT_EQ(sb->edits, s.edits);
  ExpectPrefixesRefused(s.Encode(), SetVoxelsRequest::Decode, false);

  BoxRequest b;
  b.box = {{1, 2, 3}, {4, 5, 6}};
  b.voxels = std::vector<uint8_t>(27, 3);
  b.material = 8;
  auto rb = BoxRequest::DecodeReadBox(b.EncodeReadBox());
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->box, b.box);
  auto wb = BoxRequest::DecodeWriteBox(b.EncodeWriteBox());
  ASSERT_TRUE(wb.ok());
  EXPECT_EQ(wb->voxels, b.voxels);
  auto fb = BoxRequest::DecodeFillBox(b.EncodeFillBox());
  ASSERT_TRUE(fb.ok());
  EXPECT_EQ(fb->material, 8);
  ExpectPrefixesRefused(b.EncodeReadBox(), BoxRequest::DecodeReadBox, false);
  ExpectPrefixesRefused(b.EncodeFillBox(), BoxRequest::DecodeFillBox, false);
}

TEST(MessagesTest, CountsThatLieAreRefusedBeforeAllocating) {
  // A count of 4 billion items in a 4-byte payload.
  const std::vector<uint8_t> lie = {0xff, 0xff, 0xff, 0xff};
  EXPECT_FALSE(GetChunksRequest::Decode(lie).ok());
  EXPECT_FALSE(GetVoxelsRequest::Decode(lie).ok());
  EXPECT_FALSE(SetVoxelsRequest::Decode(lie).ok());
  EXPECT_FALSE(GetChunksReply::Decode(lie).ok());
  std::mt19937 rng(3);
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> junk(rng() % 64);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    (void)GetChunksRequest::Decode(junk);
    (void)GetChunksReply::Decode(junk);
    (void)SetVoxelsRequest::Decode(junk);
    (void)HelloRequest::Decode(junk);
    (void)PutChunkRequest::Decode(junk);
  }
}

}  // namespace
}  // namespace voxdb::protocol

namespace voxdb::protocol {
namespace {

// PROTOCOL.md, "Authentication": the HELLO example frame, byte for byte.
TEST(MessagesTest, HelloExampleOfProtocolMdIsPinned) {
  HelloRequest hello;
  hello.token = "abc";
  hello.client = "x";
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kHello);
  h.request_id = 1;
  std::vector<uint8_t> bytes;
  EncodeFrame(h, hello.Encode(), &bytes);
  const std::vector<uint8_t> expected = {0x56, 0x58, 0x44, 0x42, 0x01, 0x01, 0x00, 0x00, 0x01,
                                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                         0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x01, 0x03,
                                         0x00, 0x61, 0x62, 0x63, 0x01, 0x00, 0x78};
  EXPECT_EQ(bytes, expected);
}

TEST(MessagesTest, RolesAreOrderedAndEveryOpcodeHasOne) {
  EXPECT_EQ(RequiredRole(Opcode::kHello), Role::kNone);
  EXPECT_EQ(RequiredRole(Opcode::kPing), Role::kNone);
  EXPECT_EQ(RequiredRole(Opcode::kGetChunks), Role::kRead);
  EXPECT_EQ(RequiredRole(Opcode::kStats), Role::kRead);
  EXPECT_EQ(RequiredRole(Opcode::kSetVoxels), Role::kWrite);
  EXPECT_EQ(RequiredRole(Opcode::kDeleteChunk), Role::kWrite);
  EXPECT_EQ(RequiredRole(Opcode::kFlush), Role::kAdmin);
  EXPECT_LT(Role::kRead, Role::kWrite);
  EXPECT_LT(Role::kWrite, Role::kAdmin);
  EXPECT_STREQ(RoleName(Role::kAdmin), "admin");
}

}  // namespace
}  // namespace voxdb::protocol
