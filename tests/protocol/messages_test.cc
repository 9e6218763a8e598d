#include "protocol/messages.h"

#include <gtest/gtest.h>

#include <bit>
#include <limits>
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

// One request of each kind of query, with and without the optional parts.
std::vector<QueryRequest> SampleQueries() {
  std::vector<QueryRequest> out;
  QueryRequest q;
  q.kind = QueryKind::kRadius;
  q.lat = 45.8;
  q.lon = -6.9;
  q.radius = 1234.5;
  out.push_back(q);
  q.band = AltitudeBand{-100.25, 4000};
  q.limit = 65536;
  q.cursor = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  out.push_back(q);
  q = QueryRequest();
  q.kind = QueryKind::kCell;
  q.cell = 0x47a1cbd595522b39ull;
  q.limit = 1;
  out.push_back(q);
  q.band = AltitudeBand{-0.0, 0.0};
  out.push_back(q);
  q = QueryRequest();
  q.kind = QueryKind::kRect;
  q.rect = {-10.5, 170, 20.25, -170};  // across the antimeridian
  out.push_back(q);
  q.cursor = {0xff};
  out.push_back(q);
  q = QueryRequest();
  q.kind = QueryKind::kBox;
  q.box = {{1, 2, 3}, {0xffffffffffffffffull, 5, 6}};
  q.band = AltitudeBand{-1e300, 1e300};
  q.limit = 0;  // the server refuses it; the format does not care
  q.cursor = {0, 0, 0, 0, 0, 0, 0, 7};
  out.push_back(q);
  return out;
}

TEST(MessagesTest, QueryRequestsRoundTrip) {
  for (const QueryRequest& q : SampleQueries()) {
    const Opcode op = QueryOpcode(q.kind);
    EXPECT_EQ(QueryKindOf(op), q.kind);
    const std::vector<uint8_t> bytes = q.Encode();
    auto back = QueryRequest::Decode(op, bytes);
    ASSERT_TRUE(back.ok()) << OpcodeName(op) << ": " << back.status();
    EXPECT_EQ(*back, q) << OpcodeName(op);
    ExpectPrefixesRefused(
        bytes, [op](std::span<const uint8_t> p) { return QueryRequest::Decode(op, p); }, false);
  }
  // Sizes of PROTOCOL.md: the region, then 23 bytes of trailer and the cursor.
  QueryRequest q;
  EXPECT_EQ(q.Encode().size(), 24u + 23u);
  q.kind = QueryKind::kCell;
  EXPECT_EQ(q.Encode().size(), 8u + 23u);
  q.kind = QueryKind::kRect;
  EXPECT_EQ(q.Encode().size(), 32u + 23u);
  q.kind = QueryKind::kBox;
  q.cursor = {1, 2};
  EXPECT_EQ(q.Encode().size(), 48u + 23u + 2u);
  // Another opcode is not a query.
  EXPECT_FALSE(QueryKindOf(Opcode::kReadBox).has_value());
  EXPECT_TRUE(absl::IsInvalidArgument(QueryRequest::Decode(Opcode::kReadBox, q.Encode()).status()));
}

TEST(MessagesTest, QueryRequestsRefuseNonFiniteFloatsAndBadFlags) {
  constexpr double kBad[] = {std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity()};
  for (double bad : kBad) {
    for (int field = 0; field < 5; ++field) {
      QueryRequest q;
      q.band = AltitudeBand{0, 10};
      double* fields[] = {&q.lat, &q.lon, &q.radius, &q.band->min_m, &q.band->max_m};
      *fields[field] = bad;
      auto r = QueryRequest::Decode(Opcode::kQueryRadius, q.Encode());
      EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << field << " " << bad;
    }
    for (int field = 0; field < 4; ++field) {
      QueryRequest q;
      q.kind = QueryKind::kRect;
      double* fields[] = {&q.rect.lat_lo, &q.rect.lon_lo, &q.rect.lat_hi, &q.rect.lon_hi};
      *fields[field] = bad;
      auto r = QueryRequest::Decode(Opcode::kQueryRect, q.Encode());
      EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << field << " " << bad;
    }
    // Even when has_band is 0, the band's bytes must be finite.
    QueryRequest q;
    q.kind = QueryKind::kCell;
    std::vector<uint8_t> bytes = q.Encode();
    const uint64_t bits = std::bit_cast<uint64_t>(bad);
    for (int i = 0; i < 8; ++i) bytes[8 + 1 + i] = static_cast<uint8_t>(bits >> (8 * i));
    EXPECT_TRUE(absl::IsInvalidArgument(QueryRequest::Decode(Opcode::kQueryCell, bytes).status()));
  }
  // has_band is 0 or 1.
  QueryRequest q;
  q.kind = QueryKind::kCell;
  std::vector<uint8_t> bytes = q.Encode();
  bytes[8] = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(QueryRequest::Decode(Opcode::kQueryCell, bytes).status()));
  bytes[8] = 1;
  ASSERT_TRUE(QueryRequest::Decode(Opcode::kQueryCell, bytes).ok());
  EXPECT_TRUE(QueryRequest::Decode(Opcode::kQueryCell, bytes)->band.has_value());
  // A cursor length past the payload.
  bytes = q.Encode();
  bytes[bytes.size() - 2] = 0xff;
  EXPECT_TRUE(absl::IsInvalidArgument(QueryRequest::Decode(Opcode::kQueryCell, bytes).status()));
}

TEST(MessagesTest, QueryReplyRoundTrips) {
  QueryReply reply;
  reply.chunks = {{1, 2}, {0x7fffffffffffffffull, 99}};
  reply.fills = {{7, {{0, 0, 0}, {128, 128, 40000000}}, 3}, {9, {{1, 2, 3}, {4, 5, 6}}, 255}};
  reply.next_cursor = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  EXPECT_EQ(reply.Encode().size(), 4u + 2 * 16 + 4 + 2 * 57 + 2 + 16);
  auto back = QueryReply::Decode(reply.Encode());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, reply);
  ExpectPrefixesRefused(reply.Encode(), QueryReply::Decode, false);
  // The last page of nothing.
  back = QueryReply::Decode(QueryReply().Encode());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, QueryReply());
  EXPECT_EQ(QueryReply().Encode().size(), 10u);
}

// PROTOCOL.md, "PARTITIONS": the example reply's layout and size.
TEST(MessagesTest, PartitionsReplyRoundTrips) {
  PartitionsReply reply;
  PartitionInfo a;
  a.id = 1;
  a.begin = 0;
  a.end = uint64_t{1} << 60;
  a.dir = "partitions/1";
  a.has_store = true;
  a.chunks = 12;
  a.chunk_bytes = 49152;
  a.used_bytes = 131072;
  a.map_size = 67108864;
  a.max_map_size = uint64_t{1} << 40;
  a.last_seq = 40;
  PartitionInfo b;
  b.id = 2;
  b.begin = uint64_t{1} << 60;
  b.end = uint64_t{1} << 63;
  b.dir = "/mnt/b/p2";
  b.last_seq = 7;
  b.epoch = 3;  // store figures unread: has_store false, the five are 0
  reply.partitions = {a, b};
  const std::vector<uint8_t> bytes = reply.Encode();
  EXPECT_EQ(bytes.size(), 191u);
  EXPECT_EQ(bytes[0], 2);        // n u32, little-endian
  EXPECT_EQ(bytes[4], 1);        // the first id
  EXPECT_EQ(bytes[4 + 80], 1);   // its flags: the store's figures read
  EXPECT_EQ(bytes[4 + 81], 12);  // dir_len
  EXPECT_EQ(std::string(bytes.begin() + 4 + 83, bytes.begin() + 4 + 83 + 12), "partitions/1");
  auto back = PartitionsReply::Decode(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->partitions, reply.partitions);
  ExpectPrefixesRefused(bytes, PartitionsReply::Decode, false);
  // None, and a flags byte with an unknown bit.
  back = PartitionsReply::Decode(PartitionsReply().Encode());
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->partitions.empty());
  std::vector<uint8_t> bad = bytes;
  bad[4 + 80] = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionsReply::Decode(bad).status()));
  // A count that lies.
  EXPECT_FALSE(PartitionsReply::Decode(std::vector<uint8_t>{0xff, 0xff, 0xff, 0xff}).ok());
  // The request takes no payload.
  EXPECT_TRUE(CheckEmptyPayload(Opcode::kPartitions, {}).ok());
  const std::vector<uint8_t> one = {0};
  EXPECT_TRUE(absl::IsInvalidArgument(CheckEmptyPayload(Opcode::kPartitions, one)));
}

TEST(MessagesTest, CountsThatLieAreRefusedBeforeAllocating) {
  // A count of 4 billion items in a 4-byte payload.
  const std::vector<uint8_t> lie = {0xff, 0xff, 0xff, 0xff};
  EXPECT_FALSE(GetChunksRequest::Decode(lie).ok());
  EXPECT_FALSE(GetVoxelsRequest::Decode(lie).ok());
  EXPECT_FALSE(SetVoxelsRequest::Decode(lie).ok());
  EXPECT_FALSE(GetChunksReply::Decode(lie).ok());
  EXPECT_FALSE(QueryReply::Decode(lie).ok());
  // n = 0 chunks, then 4 billion fills.
  EXPECT_FALSE(QueryReply::Decode(std::vector<uint8_t>{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}).ok());
  std::mt19937 rng(3);
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> junk(rng() % 64);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    (void)GetChunksRequest::Decode(junk);
    (void)GetChunksReply::Decode(junk);
    (void)SetVoxelsRequest::Decode(junk);
    (void)HelloRequest::Decode(junk);
    (void)PutChunkRequest::Decode(junk);
    (void)QueryReply::Decode(junk);
    for (Opcode op :
         {Opcode::kQueryRadius, Opcode::kQueryCell, Opcode::kQueryRect, Opcode::kQueryBox}) {
      (void)QueryRequest::Decode(op, junk);
    }
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

// PROTOCOL.md, "Queries": the QUERY_RADIUS example frame, byte for byte.
TEST(MessagesTest, QueryRadiusExampleOfProtocolMdIsPinned) {
  QueryRequest q;
  q.kind = QueryKind::kRadius;
  q.lat = 45.8;
  q.lon = 6.9;
  q.radius = 1000;
  q.band = AltitudeBand{-100, 4000};
  q.limit = 100;
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kQueryRadius);
  h.request_id = 2;
  std::vector<uint8_t> bytes;
  EncodeFrame(h, q.Encode(), &bytes);
  const std::vector<uint8_t> expected = {
      0x56, 0x58, 0x44, 0x42, 0x01, 0x0d, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x00,  // header
      0x66, 0x66, 0x66, 0x66, 0x66, 0xe6, 0x46, 0x40,                          // lat_deg 45.8
      0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0x1b, 0x40,                          // lon_deg 6.9
      0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x8f, 0x40,                          // radius_m 1000
      0x01,                                                                    // has_band
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x59, 0xc0,                          // band_min_m -100
      0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0xaf, 0x40,                          // band_max_m 4000
      0x64, 0x00, 0x00, 0x00,                                                  // limit 100
      0x00, 0x00};                                                             // cursor_len 0
  EXPECT_EQ(bytes, expected);
}

// PROTOCOL.md, "LOD": the GET_CHUNKS example frame at level 1, byte for byte.
TEST(MessagesTest, LodGetChunksExampleOfProtocolMdIsPinned) {
  GetChunksRequest g;
  g.codes = {34676967388792864};
  g.level = 1;
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kGetChunks);
  h.request_id = 3;
  std::vector<uint8_t> bytes;
  EncodeFrame(h, g.Encode(), &bytes);
  const std::vector<uint8_t> expected = {0x56, 0x58, 0x44, 0x42, 0x01, 0x03, 0x00, 0x00,
                                         0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                         0x00, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x00, 0x00,  // header
                                         0x01, 0x00, 0x00, 0x00,                          // n 1
                                         0x20, 0xc8, 0x18, 0xa3, 0x84, 0x32, 0x7b, 0x00,  // node
                                         0x01};                                           // level 1
  EXPECT_EQ(bytes, expected);
}

// The LOD level is an optional last byte: absent is level 0, a present 0
// is malformed (one encoding per request), and it round-trips.
TEST(MessagesTest, LodLevelIsAnOptionalLastByte) {
  GetChunksRequest g;
  g.codes = {1, 2};
  EXPECT_EQ(g.Encode().size(), 4u + 16u);
  g.level = 3;
  auto back = GetChunksRequest::Decode(g.Encode());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->level, 3);
  EXPECT_EQ(back->codes, g.codes);
  std::vector<uint8_t> zero = GetChunksRequest{{1}}.Encode();
  zero.push_back(0);
  EXPECT_TRUE(absl::IsInvalidArgument(GetChunksRequest::Decode(zero).status()));
  std::vector<uint8_t> two = GetChunksRequest{{1}}.Encode();
  two.push_back(1);
  two.push_back(1);
  EXPECT_TRUE(absl::IsInvalidArgument(GetChunksRequest::Decode(two).status()));

  QueryRequest q;
  q.kind = QueryKind::kCell;
  q.cell = 0x47a1cbd4ull << 32;
  const size_t level0 = q.Encode().size();
  q.level = 2;
  EXPECT_EQ(q.Encode().size(), level0 + 1);
  auto qb = QueryRequest::Decode(Opcode::kQueryCell, q.Encode());
  ASSERT_TRUE(qb.ok()) << qb.status();
  EXPECT_EQ(*qb, q);
  std::vector<uint8_t> qzero = q.Encode();
  qzero.back() = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(QueryRequest::Decode(Opcode::kQueryCell, qzero).status()));
}

// The snapshot messages round-trip, and their sizes are PROTOCOL.md's.
TEST(MessagesTest, SnapshotMessagesRoundTrip) {
  SnapshotOpenReply open{7, 1234};
  EXPECT_EQ(open.Encode().size(), 16u);
  auto o = SnapshotOpenReply::Decode(open.Encode());
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->snapshot, 7u);
  EXPECT_EQ(o->seq, 1234u);

  SnapshotScanRequest scan;
  scan.snapshot = 7;
  scan.box = {{1, 2, 3}, {4, 5, 6}};
  scan.limit = 10;
  scan.cursor = {0, 0, 0, 0, 0, 0, 0, 9};
  EXPECT_EQ(scan.Encode().size(), 8u + 48u + 4u + 2u + 8u);
  auto sc = SnapshotScanRequest::Decode(scan.Encode());
  ASSERT_TRUE(sc.ok()) << sc.status();
  EXPECT_EQ(*sc, scan);
  std::vector<uint8_t> cut = scan.Encode();
  cut.pop_back();
  EXPECT_TRUE(absl::IsInvalidArgument(SnapshotScanRequest::Decode(cut).status()));

  SnapshotGetRequest get{7, {1, 2, 3}};
  EXPECT_EQ(get.Encode().size(), 8u + 4u + 24u);
  auto g = SnapshotGetRequest::Decode(get.Encode());
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(*g, get);
  std::vector<uint8_t> lying = get.Encode();
  lying[8] = 200;  // claims 200 codes
  EXPECT_TRUE(absl::IsInvalidArgument(SnapshotGetRequest::Decode(lying).status()));
}

TEST(MessagesTest, SubscriptionMessagesRoundTrip) {
  SubscribeRequest sub;
  sub.region.kind = QueryKind::kRadius;
  sub.region.lat = 45.8;
  sub.region.lon = 6.9;
  sub.region.radius = 1000;
  sub.region.band = AltitudeBand{-100, 4000};
  sub.detail = EventDetail::kVoxels;
  sub.from_seq = 77;
  // kind, lat/lon/radius, band, detail, has_from + from
  EXPECT_EQ(sub.Encode().size(), 1u + 24u + 17u + 1u + 9u);
  auto s = SubscribeRequest::Decode(sub.Encode());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, sub);
  SubscribeRequest box;
  box.region.kind = QueryKind::kBox;
  box.region.box = {{1, 2, 3}, {4, 5, 6}};
  auto b = SubscribeRequest::Decode(box.Encode());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*b, box);
  for (size_t at : {size_t{0}, sub.Encode().size() - 10, sub.Encode().size() - 9}) {
    std::vector<uint8_t> bad = sub.Encode();
    bad[at] = 9;  // kind, detail, has_from out of range
    EXPECT_TRUE(absl::IsInvalidArgument(SubscribeRequest::Decode(bad).status())) << at;
  }
  auto reply = SubscribeReply::Decode(SubscribeReply{3, 99}.Encode());
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->subscription, 3u);
  EXPECT_EQ(reply->seq, 99u);

  EventsPush push;
  ChangeEvent edits;
  edits.seq = 5;
  edits.chunk = 42;
  edits.present = true;
  edits.detail = EventDetailKind::kEdits;
  edits.edits = {1, 0x1fffff | 255u << 21};
  ChangeEvent fill;
  fill.seq = 6;
  fill.kind = EventKind::kFill;
  fill.box = {{1, 2, 3}, {4, 5, 6}};
  fill.material = 9;
  ChangeEvent record;
  record.seq = 7;
  record.chunk = 43;
  record.present = true;
  record.detail = EventDetailKind::kRecord;
  record.record = {1, 2, 3};
  ChangeEvent written;
  written.seq = 8;
  written.chunk = 44;
  written.detail = EventDetailKind::kBox;
  written.box = {{7, 8, 9}, {10, 11, 12}};
  push.events = {edits, fill, record, written, ChangeEvent{}};
  auto p = EventsPush::Decode(push.Encode());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->events, push.events);
  std::vector<uint8_t> lying = push.Encode();
  lying[0] = 200;
  EXPECT_TRUE(absl::IsInvalidArgument(EventsPush::Decode(lying).status()));
  std::vector<uint8_t> cut = push.Encode();
  cut.pop_back();
  EXPECT_TRUE(absl::IsInvalidArgument(EventsPush::Decode(cut).status()));
}

// The SUBSCRIBE example of PROTOCOL.md, "Subscriptions", byte for byte.
TEST(MessagesTest, TheSubscribeExampleOfTheProtocolIsExact) {
  SubscribeRequest sub;
  sub.region.kind = QueryKind::kBox;
  const uint64_t x = 1'000'000 * 128, y = 400'000 * 128, z = 312'500 * 128;
  sub.region.box = {{x, y, z}, {x + 128, y + 128, z + 128}};
  std::vector<uint8_t> frame;
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kSubscribe);
  h.request_id = 4;
  EncodeFrame(h, sub.Encode(), &frame);
  const std::vector<uint8_t> doc = {
      0x56, 0x58, 0x44, 0x42, 0x01, 0x18, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x4c, 0x00, 0x00, 0x00, 0x03, 0x00, 0x20, 0xa1, 0x07, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x40, 0x0d, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5a, 0x62, 0x02,
      0x00, 0x00, 0x00, 0x00, 0x80, 0x20, 0xa1, 0x07, 0x00, 0x00, 0x00, 0x00, 0x80, 0x40, 0x0d,
      0x03, 0x00, 0x00, 0x00, 0x00, 0x80, 0x5a, 0x62, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(frame, doc);
}

TEST(MessagesTest, StreamMessagesRoundTrip) {
  StreamUpdateRequest update;
  update.budget_bytes_per_s = 1 << 20;
  update.window_bytes = 1 << 16;
  update.lod_distance_m = 128;
  update.viewers = {{1, 10, 20, 30, 1, 2, 3, 1000}, {2, 1, 2, 3, 0, 0, 0, 50}};
  EXPECT_EQ(update.Encode().size(), 8u + 4u + 8u + 2u + 2 * 60u);
  auto u = StreamUpdateRequest::Decode(update.Encode());
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(*u, update);
  std::vector<uint8_t> nan = update.Encode();
  for (int i = 0; i < 8; ++i) nan[22 + 4 + i] = 0xff;  // the first viewer's x
  EXPECT_TRUE(absl::IsInvalidArgument(StreamUpdateRequest::Decode(nan).status()));

  StreamDataPush data;
  data.items = {{StreamItem::Kind::kChunk, 0, 42, 7, {1, 2, 3}},
                {StreamItem::Kind::kUnload, 2, 5, 0, {}}};
  auto d = StreamDataPush::Decode(data.Encode());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->items, data.items);
  std::vector<uint8_t> bad = data.Encode();
  bad[4] = 3;  // no such kind
  EXPECT_TRUE(absl::IsInvalidArgument(StreamDataPush::Decode(bad).status()));
}

TEST(MessagesTest, RolesAreOrderedAndEveryOpcodeHasOne) {
  EXPECT_EQ(RequiredRole(Opcode::kHello), Role::kNone);
  EXPECT_EQ(RequiredRole(Opcode::kPing), Role::kNone);
  EXPECT_EQ(RequiredRole(Opcode::kGetChunks), Role::kRead);
  EXPECT_EQ(RequiredRole(Opcode::kStats), Role::kRead);
  EXPECT_EQ(RequiredRole(Opcode::kSetVoxels), Role::kWrite);
  EXPECT_EQ(RequiredRole(Opcode::kDeleteChunk), Role::kWrite);
  EXPECT_EQ(RequiredRole(Opcode::kFlush), Role::kAdmin);
  for (Opcode op :
       {Opcode::kQueryRadius, Opcode::kQueryCell, Opcode::kQueryRect, Opcode::kQueryBox}) {
    EXPECT_EQ(RequiredRole(op), Role::kRead) << OpcodeName(op);
  }
  EXPECT_EQ(RequiredRole(Opcode::kReindex), Role::kAdmin);
  EXPECT_EQ(RequiredRole(Opcode::kBackup), Role::kAdmin);
  EXPECT_STREQ(OpcodeName(Opcode::kQueryRadius), "QUERY_RADIUS");
  EXPECT_STREQ(OpcodeName(Opcode::kQueryCell), "QUERY_CELL");
  EXPECT_STREQ(OpcodeName(Opcode::kQueryRect), "QUERY_RECT");
  EXPECT_STREQ(OpcodeName(Opcode::kQueryBox), "QUERY_BOX");
  EXPECT_STREQ(OpcodeName(Opcode::kReindex), "REINDEX");
  EXPECT_STREQ(OpcodeName(Opcode::kBackup), "BACKUP");
  EXPECT_EQ(RequiredRole(Opcode::kLodRebuild), Role::kAdmin);
  EXPECT_STREQ(OpcodeName(Opcode::kLodRebuild), "LOD_REBUILD");
  for (Opcode op : {Opcode::kSnapshotOpen, Opcode::kSnapshotScan, Opcode::kSnapshotGet,
                    Opcode::kSnapshotClose}) {
    EXPECT_EQ(RequiredRole(op), Role::kRead) << OpcodeName(op);
  }
  EXPECT_STREQ(OpcodeName(Opcode::kSnapshotOpen), "SNAPSHOT_OPEN");
  EXPECT_STREQ(OpcodeName(Opcode::kSnapshotScan), "SNAPSHOT_SCAN");
  EXPECT_STREQ(OpcodeName(Opcode::kSnapshotGet), "SNAPSHOT_GET");
  EXPECT_STREQ(OpcodeName(Opcode::kSnapshotClose), "SNAPSHOT_CLOSE");
  for (Opcode op :
       {Opcode::kSubscribe, Opcode::kUnsubscribe, Opcode::kStreamUpdate, Opcode::kStreamClose}) {
    EXPECT_EQ(RequiredRole(op), Role::kRead) << OpcodeName(op);
  }
  EXPECT_STREQ(OpcodeName(Opcode::kSubscribe), "SUBSCRIBE");
  EXPECT_STREQ(OpcodeName(Opcode::kEvents), "EVENTS");
  EXPECT_STREQ(OpcodeName(Opcode::kStreamData), "STREAM_DATA");
  EXPECT_STREQ(OpcodeName(Opcode::kLodSync), "LOD_SYNC");
  EXPECT_EQ(RequiredRole(Opcode::kLodSync), Role::kWrite);
  EXPECT_STREQ(OpcodeName(Opcode::kPartitions), "PARTITIONS");
  EXPECT_EQ(RequiredRole(Opcode::kPartitions), Role::kRead);
  EXPECT_STREQ(OpcodeName(static_cast<Opcode>(200)), "UNKNOWN");
  EXPECT_LT(Role::kRead, Role::kWrite);
  EXPECT_LT(Role::kWrite, Role::kAdmin);
  EXPECT_STREQ(RoleName(Role::kAdmin), "admin");
}

}  // namespace
}  // namespace voxdb::protocol

namespace voxdb::protocol {
namespace {

// PROTOCOL.md, "Versioning": an empty version range is malformed, not a
// range the server cannot serve.
TEST(MessagesTest, HelloWithAnEmptyVersionRangeIsInvalid) {
  auto r = HelloRequest::Decode(HelloRequest{2, 1, "", ""}.Encode());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("2..1"), std::string::npos) << r.status();
  // A range that holds no version this server speaks is well formed: the
  // server answers it UNSUPPORTED.
  EXPECT_TRUE(HelloRequest::Decode(HelloRequest{2, 5, "", ""}.Encode()).ok());
  EXPECT_TRUE(HelloRequest::Decode(HelloRequest{0, 1, "", ""}.Encode()).ok());
}

// PROTOCOL.md, "Framing": a request has flags 0 and status 0.
TEST(MessagesTest, RequestHeadersHaveNoReplyOrPushFlagAndStatusZero) {
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kPing);
  EXPECT_TRUE(CheckRequestHeader(h).ok());
  for (uint16_t flags : {kFlagReply, kFlagPush, uint16_t(kFlagReply | kFlagPush)}) {
    h.flags = flags;
    EXPECT_TRUE(absl::IsInvalidArgument(CheckRequestHeader(h))) << flags;
  }
  h.flags = 0;
  h.status = static_cast<uint16_t>(WireStatus::kBusy);
  const absl::Status s = CheckRequestHeader(h);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("status 7"), std::string::npos) << s;
}

// PROTOCOL.md, "Requests": a byte past the last field is INVALID, for the
// requests with an empty payload too.
TEST(MessagesTest, EmptyPayloadRequestsRefuseAnyByte) {
  const std::vector<uint8_t> one = {0};
  for (Opcode op : {Opcode::kFlush, Opcode::kStats, Opcode::kReindex, Opcode::kLodRebuild,
                    Opcode::kSnapshotOpen, Opcode::kStreamClose}) {
    EXPECT_TRUE(CheckEmptyPayload(op, {}).ok()) << OpcodeName(op);
    const absl::Status s = CheckEmptyPayload(op, one);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << OpcodeName(op);
    EXPECT_NE(s.message().find(OpcodeName(op)), std::string::npos) << s;
  }
  // PING echoes any bytes; BACKUP's payload is a path; the others decode
  // their own payload.
  for (Opcode op : {Opcode::kPing, Opcode::kBackup, Opcode::kGetChunks, Opcode::kDeleteChunk}) {
    EXPECT_TRUE(CheckEmptyPayload(op, one).ok()) << OpcodeName(op);
  }
  // Every fixed-layout request refuses one byte more than its fields.
  EXPECT_FALSE(DecodeU64(std::vector<uint8_t>(9)).ok());
  EXPECT_FALSE(BoxRequest::DecodeReadBox(std::vector<uint8_t>(49)).ok());
  EXPECT_FALSE(BoxRequest::DecodeFillBox(std::vector<uint8_t>(50)).ok());
  std::vector<uint8_t> get = GetChunksRequest{{1}, 2}.Encode();
  get.push_back(0);  // a level byte is optional; a second byte is not
  EXPECT_FALSE(GetChunksRequest::Decode(get).ok());
}

TEST(MessagesTest, PartitionMessagesRoundTripAndBoundTheirFields) {
  const PartitionSplitRequest split{7, 4096 * 3};
  auto split_back = PartitionSplitRequest::Decode(split.Encode());
  ASSERT_TRUE(split_back.ok()) << split_back.status();
  EXPECT_EQ(split_back->id, 7u);
  EXPECT_EQ(split_back->at, 4096u * 3);
  std::vector<uint8_t> longer = split.Encode();
  longer.push_back(0);
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionSplitRequest::Decode(longer).status()));

  PartitionMoveRequest move;
  move.id = 2;
  move.dir = "/srv/disk2/p2";
  auto move_back = PartitionMoveRequest::Decode(move.Encode());
  ASSERT_TRUE(move_back.ok()) << move_back.status();
  EXPECT_EQ(move_back->id, 2u);
  EXPECT_EQ(move_back->dir, move.dir);
  move.dir = "/" + std::string(PartitionMoveRequest::kMaxDirBytes, 'a');
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionMoveRequest::Decode(move.Encode()).status()));
  std::vector<uint8_t> cut = PartitionMoveRequest{2, "/x"}.Encode();
  cut.pop_back();
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionMoveRequest::Decode(cut).status()));

  const PartitionChangeReply reply{10, 2048, 30'000, {3, 4}};
  auto reply_back = PartitionChangeReply::Decode(reply.Encode());
  ASSERT_TRUE(reply_back.ok()) << reply_back.status();
  EXPECT_EQ(reply_back->chunks, 10u);
  EXPECT_EQ(reply_back->bytes, 2048u);
  EXPECT_EQ(reply_back->pause_us, 30'000u);
  EXPECT_EQ(reply_back->new_ids, (std::vector<uint64_t>{3, 4}));
}

}  // namespace
}  // namespace voxdb::protocol
