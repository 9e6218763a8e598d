// libFuzzer target: everything that parses bytes from a file or the network:
// chunk and journal records, world frame and fill records, protocol frames and
// request/reply payloads.
//
//   CXX=clang++ cmake -S . -B build-fuzz -DVOXDB_FUZZ=ON && cmake --build build-fuzz
//   build-fuzz/tests/decode_fuzzer -max_total_time=60
//
// The first input byte picks the parser (7: the spatial query payloads).
// Chunk and journal records are resealed (payload size and CRC fixed up)
// before decoding, so the fuzzer reaches the payload parsers instead of
// stopping at the checksum.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "engine/crc32c.h"
#include "engine/fills.h"
#include "engine/journal.h"
#include "engine/world_frame.h"
#include "protocol/frame.h"
#include "protocol/messages.h"

namespace {

using namespace voxdb;

void FuzzChunkRecord(const uint8_t* data, size_t size, bool reseal) {
  std::vector<uint8_t> rec(data, data + size);
  if (reseal) {
    if (rec.size() < engine::kChunkHeaderSize) rec.resize(engine::kChunkHeaderSize);
    rec[0] = engine::kChunkFormatVersion;
    rec[1] %= 3;
    rec[2] = rec[3] = 0;
    engine::EncodeFixed32(rec.data() + 24,
                          static_cast<uint32_t>(rec.size() - engine::kChunkHeaderSize));
    const uint32_t crc = engine::Crc32cExtend(engine::Crc32cExtend(0, rec.data(), 4),
                                              rec.data() + 8, rec.size() - 8);
    engine::EncodeFixed32(rec.data() + 4, crc);
  }
  auto chunk = engine::DecodeChunk(rec);
  if (chunk.ok()) {
    // Whatever decodes must re-encode and decode to the same voxels.
    std::vector<uint8_t> a(engine::kChunkVoxels), b(engine::kChunkVoxels);
    chunk->ToDense(a.data());
    const auto again = engine::EncodeChunk(*chunk, 1, 1);
    if (!engine::DecodeChunkToDense(again, b.data()).ok() || a != b) __builtin_trap();
  }
  std::vector<uint8_t> dense(engine::kChunkVoxels);
  (void)engine::DecodeChunkToDense(rec, dense.data());
}

void FuzzJournalRecord(const uint8_t* data, size_t size) {
  std::vector<uint8_t> rec(4);
  rec.insert(rec.end(), data, data + size);
  engine::EncodeFixed32(rec.data(), engine::Crc32cExtend(0, rec.data() + 4, rec.size() - 4));
  (void)engine::DecodeJournalRecord(rec);
}

void FuzzFrames(const uint8_t* data, size_t size) {
  protocol::FrameDecoder decoder(4096);
  std::span<const uint8_t> in(data, size);
  size_t step = 1 + (size % 17);
  while (!in.empty()) {
    std::span<const uint8_t> piece = in.first(std::min(step, in.size()));
    while (!piece.empty()) {
      size_t used = 0;
      protocol::Frame frame;
      const auto r = decoder.Feed(piece, &used, &frame);
      if (r == protocol::FrameDecoder::Result::kError) return;
      if (decoder.buffered() > protocol::kHeaderSize + 4096) __builtin_trap();
      piece = piece.subspan(used);
      if (used == 0) break;
    }
    in = in.subspan(std::min(step, in.size()));
  }
}

// The spatial query payloads: the first byte picks the opcode. Whatever
// decodes must encode and decode to the same message; a reply's encoding is
// canonical, so it must give back the very bytes.
void FuzzQueries(const uint8_t* data, size_t size) {
  if (size == 0) return;
  static constexpr protocol::Opcode kOps[] = {
      protocol::Opcode::kQueryRadius, protocol::Opcode::kQueryCell, protocol::Opcode::kQueryRect,
      protocol::Opcode::kQueryBox};
  const protocol::Opcode op = kOps[data[0] % 4];
  const std::span<const uint8_t> p(data + 1, size - 1);
  auto request = protocol::QueryRequest::Decode(op, p);
  if (request.ok()) {
    auto again = protocol::QueryRequest::Decode(op, request->Encode());
    if (!again.ok() || !(*again == *request)) __builtin_trap();
  }
  auto reply = protocol::QueryReply::Decode(p);
  if (reply.ok()) {
    const std::vector<uint8_t> bytes = reply->Encode();
    if (!std::equal(bytes.begin(), bytes.end(), p.begin(), p.end())) __builtin_trap();
  }
}

// Subscriptions and streams: requests round-trip to equal values; pushed
// payloads have one encoding, so they give back the very bytes.
void FuzzPushes(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> p(data, size);
  if (auto s = protocol::SubscribeRequest::Decode(p); s.ok()) {
    auto again = protocol::SubscribeRequest::Decode(s->Encode());
    if (!again.ok() || !(*again == *s)) __builtin_trap();
  }
  if (auto u = protocol::StreamUpdateRequest::Decode(p); u.ok()) {
    auto again = protocol::StreamUpdateRequest::Decode(u->Encode());
    if (!again.ok() || !(*again == *u)) __builtin_trap();
  }
  if (auto e = protocol::EventsPush::Decode(p); e.ok()) {
    const std::vector<uint8_t> bytes = e->Encode();
    if (!std::equal(bytes.begin(), bytes.end(), p.begin(), p.end())) __builtin_trap();
  }
  if (auto d = protocol::StreamDataPush::Decode(p); d.ok()) {
    const std::vector<uint8_t> bytes = d->Encode();
    if (!std::equal(bytes.begin(), bytes.end(), p.begin(), p.end())) __builtin_trap();
  }
  (void)protocol::SubscribeReply::Decode(p);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t which = data[0] % 9;
  ++data;
  --size;
  switch (which) {
    case 0:
      FuzzChunkRecord(data, size, /*reseal=*/false);
      break;
    case 1:
    case 2:
      FuzzChunkRecord(data, size, /*reseal=*/true);
      break;
    case 3:
      FuzzJournalRecord(data, size);
      break;
    case 4:
      FuzzFrames(data, size);
      break;
    case 5:
      (void)engine::WorldFrame::Decode({data, size});
      (void)engine::Fill::Decode(1, {data, size});
      break;
    case 6: {
      const std::span<const uint8_t> p(data, size);
      (void)protocol::HelloRequest::Decode(p);
      (void)protocol::HelloReply::Decode(p);
      (void)protocol::GetChunksRequest::Decode(p);
      (void)protocol::GetChunksReply::Decode(p);
      (void)protocol::PutChunkRequest::Decode(p);
      (void)protocol::GetVoxelsRequest::Decode(p);
      (void)protocol::SetVoxelsRequest::Decode(p);
      (void)protocol::BoxRequest::DecodeReadBox(p);
      (void)protocol::BoxRequest::DecodeWriteBox(p);
      (void)protocol::BoxRequest::DecodeFillBox(p);
      (void)protocol::DecodeU64(p);
      (void)protocol::SnapshotOpenReply::Decode(p);
      (void)protocol::SnapshotScanRequest::Decode(p);
      (void)protocol::SnapshotGetRequest::Decode(p);
      // Requests that decode encode back to the same bytes (one encoding).
      if (auto g = protocol::GetChunksRequest::Decode(p); g.ok()) {
        const std::vector<uint8_t> again = g->Encode();
        if (!std::equal(again.begin(), again.end(), p.begin(), p.end())) __builtin_trap();
      }
      break;
    }
    case 7:
      FuzzQueries(data, size);
      break;
    case 8:
      FuzzPushes(data, size);
      break;
  }
  return 0;
}
