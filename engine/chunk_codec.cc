#include "engine/chunk_codec.h"

#include <zstd.h>

#include <chrono>
#include <cstring>
#include <memory>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/crc32c.h"
#include "engine/format.h"

namespace voxdb::engine {
namespace {

// Brick stream limits: 512 tags, at most 17 palette bytes and 4096 voxel
// bytes per brick.
constexpr size_t kMaxStreamSize = kBricksPerChunk * (1 + 1 + kMaxPalette + kBrickVoxels);

uint32_t RecordChecksum(std::span<const uint8_t> record) {
  uint32_t crc = Crc32cExtend(0, record.data(), 4);
  return Crc32cExtend(crc, record.data() + 8, record.size() - 8);
}

std::vector<uint8_t> FinishRecord(std::vector<uint8_t> rec, ChunkEncoding encoding,
                                  uint64_t version, int64_t mtime_us) {
  uint8_t* p = rec.data();
  p[0] = kChunkFormatVersion;
  p[1] = static_cast<uint8_t>(encoding);
  p[2] = p[3] = 0;
  EncodeFixed64(p + 8, version);
  EncodeFixed64(p + 16, static_cast<uint64_t>(mtime_us));
  EncodeFixed32(p + 24, static_cast<uint32_t>(rec.size() - kChunkHeaderSize));
  EncodeFixed32(p + 4, RecordChecksum(rec));
  return rec;
}

struct ZstdContexts {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx{ZSTD_createCCtx(), ZSTD_freeCCtx};
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx{ZSTD_createDCtx(), ZSTD_freeDCtx};
  std::vector<uint8_t> stream;  // scratch for the uncompressed brick stream
};

ZstdContexts& ThreadContexts() {
  thread_local ZstdContexts contexts;
  return contexts;
}

bool ValidWidth(uint8_t w) { return w == 0 || w == 1 || w == 2 || w == 4 || w == 8; }

// The parsed brick stream: pointers into the uncompressed stream.
struct BrickRefs {
  uint8_t width[kBricksPerChunk];
  uint8_t count[kBricksPerChunk];
  uint8_t palette[kBricksPerChunk][kMaxPalette];
  const uint8_t* bits[kBricksPerChunk];
};

Status Corrupt(std::string_view what) {
  return CorruptError(absl::StrFormat("chunk record payload is corrupt: %s", what));
}

// Decompresses and parses the kBricks payload into refs (pointing into the
// thread's scratch stream).
Status ParseBricks(std::span<const uint8_t> payload, BrickRefs* refs) {
  if (payload.size() < 4) return Corrupt("brick payload shorter than its size field");
  const uint32_t stream_size = DecodeFixed32(payload.data());
  if (stream_size < kBricksPerChunk || stream_size > kMaxStreamSize) {
    return Corrupt("brick stream size out of range");
  }
  const uint8_t* frame = payload.data() + 4;
  const size_t frame_size = payload.size() - 4;
  const unsigned long long content = ZSTD_getFrameContentSize(frame, frame_size);
  if (content != stream_size) return Corrupt("zstd frame size does not match the stream size");
  ZstdContexts& ctx = ThreadContexts();
  ctx.stream.resize(stream_size);
  const size_t got =
      ZSTD_decompressDCtx(ctx.dctx.get(), ctx.stream.data(), stream_size, frame, frame_size);
  if (ZSTD_isError(got) || got != stream_size) return Corrupt("zstd frame does not decompress");

  const uint8_t* p = ctx.stream.data();
  const uint8_t* end = p + stream_size;
  const uint8_t* tags = p;
  p += kBricksPerChunk;
  for (int i = 0; i < kBricksPerChunk; ++i) {
    const uint8_t w = tags[i];
    if (!ValidWidth(w)) return Corrupt("bad brick width");
    refs->width[i] = w;
    std::memset(refs->palette[i], 0, kMaxPalette);
    if (w == 8) {
      refs->count[i] = 0;
      continue;
    }
    if (w == 0) {
      if (p >= end) return Corrupt("truncated palette");
      refs->count[i] = 1;
      refs->palette[i][0] = *p++;
      continue;
    }
    if (p >= end) return Corrupt("truncated palette");
    const uint8_t n = *p++;
    if (n < 1 || n > (1 << w) || static_cast<size_t>(end - p) < n) {
      return Corrupt("bad palette size");
    }
    refs->count[i] = n;
    std::memcpy(refs->palette[i], p, n);
    p += n;
  }
  for (int i = 0; i < kBricksPerChunk; ++i) {
    const size_t bytes = size_t{512} * refs->width[i];
    if (static_cast<size_t>(end - p) < bytes) return Corrupt("truncated brick voxels");
    refs->bits[i] = bytes ? p : nullptr;
    p += bytes;
  }
  if (p != end) return Corrupt("trailing bytes after the brick stream");
  return absl::OkStatus();
}

}  // namespace

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<uint8_t> EncodeChunk(const Chunk& chunk, uint64_t version, int64_t mtime_us,
                                 const CodecOptions& options) {
  bool uniform = !chunk.HasGrid();
  uint8_t material = chunk.UniformValue();
  if (!uniform) {
    uniform = true;
    material = chunk.brick(0).palette[0];
    for (int i = 0; i < kBricksPerChunk && uniform; ++i) {
      const Brick& b = chunk.brick(i);
      uniform = b.width == 0 && b.palette[0] == material;
    }
  }
  if (uniform) {
    std::vector<uint8_t> rec(kChunkHeaderSize + 1);
    rec[kChunkHeaderSize] = material;
    return FinishRecord(std::move(rec), ChunkEncoding::kUniform, version, mtime_us);
  }

  // Brick stream: tags, then palettes, then packed voxels (FORMAT.md).
  ZstdContexts& ctx = ThreadContexts();
  std::vector<uint8_t>& stream = ctx.stream;
  stream.clear();
  stream.reserve(kMaxStreamSize);
  for (int i = 0; i < kBricksPerChunk; ++i) stream.push_back(chunk.brick(i).width);
  for (int i = 0; i < kBricksPerChunk; ++i) {
    const Brick& b = chunk.brick(i);
    if (b.width == 0) {
      stream.push_back(b.palette[0]);
    } else if (b.width != 8) {
      stream.push_back(b.count);
      stream.insert(stream.end(), b.palette, b.palette + b.count);
    }
  }
  for (int i = 0; i < kBricksPerChunk; ++i) {
    const Brick& b = chunk.brick(i);
    if (b.width) stream.insert(stream.end(), b.bits.get(), b.bits.get() + b.BitsBytes());
  }

  const int level = options.zstd_level ? options.zstd_level : CodecOptions::kDefaultZstdLevel;
  const size_t bound = ZSTD_compressBound(stream.size());
  std::vector<uint8_t> rec(kChunkHeaderSize + 4 + bound);
  EncodeFixed32(rec.data() + kChunkHeaderSize, static_cast<uint32_t>(stream.size()));
  const size_t n = ZSTD_compressCCtx(ctx.cctx.get(), rec.data() + kChunkHeaderSize + 4, bound,
                                     stream.data(), stream.size(), level);
  VOXDB_CHECK(!ZSTD_isError(n));
  rec.resize(kChunkHeaderSize + 4 + n);
  return FinishRecord(std::move(rec), ChunkEncoding::kBricks, version, mtime_us);
}

std::optional<ChunkRecordHeader> PeekChunkHeader(std::span<const uint8_t> record) {
  if (record.size() < kChunkHeaderSize) return std::nullopt;
  const uint8_t* p = record.data();
  ChunkRecordHeader h;
  h.format_version = p[0];
  h.encoding = static_cast<ChunkEncoding>(p[1]);
  h.version = DecodeFixed64(p + 8);
  h.mtime_us = static_cast<int64_t>(DecodeFixed64(p + 16));
  h.payload_size = DecodeFixed32(p + 24);
  return h;
}

StatusOr<ChunkRecordView> ParseChunkRecord(std::span<const uint8_t> record) {
  if (record.size() < kChunkHeaderSize) {
    return CorruptError(absl::StrFormat("chunk record is %u bytes, shorter than its %u-byte header",
                                        record.size(), kChunkHeaderSize));
  }
  const uint8_t* p = record.data();
  const uint32_t stored = DecodeFixed32(p + 4);
  const uint32_t actual = RecordChecksum(record);
  if (stored != actual) {
    return CorruptError(absl::StrFormat(
        "chunk record checksum mismatch (stored %08x, computed %08x)", stored, actual));
  }
  ChunkRecordView view;
  view.header = *PeekChunkHeader(record);
  if (view.header.format_version != kChunkFormatVersion) {
    return UnsupportedError(absl::StrFormat(
        "chunk record format version %u is not supported by this build (it reads version %u); "
        "upgrade voxdb",
        view.header.format_version, kChunkFormatVersion));
  }
  if (view.header.encoding > ChunkEncoding::kFills) {
    return UnsupportedError(
        absl::StrFormat("chunk record encoding %u is not supported by this build",
                        static_cast<uint8_t>(view.header.encoding)));
  }
  if (p[2] != 0 || p[3] != 0 || view.header.payload_size != record.size() - kChunkHeaderSize) {
    return CorruptError("chunk record header is inconsistent");
  }
  view.payload = record.subspan(kChunkHeaderSize);
  if (view.header.encoding == ChunkEncoding::kUniform && view.payload.size() != 1) {
    return CorruptError("uniform chunk record must have a 1-byte payload");
  }
  if (view.header.encoding == ChunkEncoding::kFills && !view.payload.empty()) {
    return CorruptError("fills marker record must have an empty payload");
  }
  return view;
}

std::vector<uint8_t> EncodeFillsMarker(uint64_t version, int64_t mtime_us) {
  return FinishRecord(std::vector<uint8_t>(kChunkHeaderSize), ChunkEncoding::kFills, version,
                      mtime_us);
}

namespace {
Status FillsMarkerError() {
  return MismatchError("chunk record reads as the fills; only the database can rasterise it");
}
}  // namespace

StatusOr<Chunk> DecodeChunk(std::span<const uint8_t> record) {
  VOXDB_ASSIGN_OR_RETURN(ChunkRecordView view, ParseChunkRecord(record));
  if (view.header.encoding == ChunkEncoding::kFills) return FillsMarkerError();
  if (view.header.encoding == ChunkEncoding::kUniform) return Chunk(view.payload[0]);
  auto refs = std::make_unique<BrickRefs>();
  VOXDB_RETURN_IF_ERROR(ParseBricks(view.payload, refs.get()));
  auto bricks = std::make_unique<Brick[]>(kBricksPerChunk);
  for (int i = 0; i < kBricksPerChunk; ++i) {
    Brick& b = bricks[i];
    b.width = refs->width[i];
    b.count = refs->count[i];
    std::memcpy(b.palette, refs->palette[i], kMaxPalette);
    if (b.width) {
      b.bits.reset(new uint8_t[b.BitsBytes()]);
      std::memcpy(b.bits.get(), refs->bits[i], b.BitsBytes());
    }
  }
  return Chunk::FromBricks(std::move(bricks));
}

Status DecodeChunkToDense(std::span<const uint8_t> record, uint8_t* dense) {
  VOXDB_ASSIGN_OR_RETURN(ChunkRecordView view, ParseChunkRecord(record));
  if (view.header.encoding == ChunkEncoding::kFills) return FillsMarkerError();
  if (view.header.encoding == ChunkEncoding::kUniform) {
    std::memset(dense, view.payload[0], kChunkVoxels);
    return absl::OkStatus();
  }
  auto refs = std::make_unique<BrickRefs>();
  VOXDB_RETURN_IF_ERROR(ParseBricks(view.payload, refs.get()));
  for (int bz = 0; bz < kBricksPerAxis; ++bz) {
    for (int by = 0; by < kBricksPerAxis; ++by) {
      for (int bx = 0; bx < kBricksPerAxis; ++bx) {
        const int i = bx + kBricksPerAxis * (by + kBricksPerAxis * bz);
        uint8_t* origin = dense + bx * kBrickEdge + size_t{kChunkEdge} * (by * kBrickEdge) +
                          size_t{kChunkEdge} * kChunkEdge * (bz * kBrickEdge);
        brick::Expand(refs->width[i], refs->palette[i], refs->bits[i], origin, kChunkEdge,
                      size_t{kChunkEdge} * kChunkEdge);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace voxdb::engine
