// The stored form of a chunk: a checksummed record (engine/FORMAT.md).
//
//   record  = header (28 bytes, little-endian) + payload
//   header  = format_version u8 | encoding u8 | reserved u16 (0) | crc32c u32 |
//             version u64 | mtime_us i64 | payload_size u32
//   crc32c  covers bytes [0, 4) and [8, end): everything but itself.
//
// Encodings: kUniform (payload: the material, 1 byte; a 29-byte record),
// kBricks (16^3 bricks, uniform or palette + bit-packed, then zstd) and
// kFills (no payload: a deleted chunk that reads as the fills and keeps its
// version; never handed to a client).
//
// Every decode verifies the checksum first, so a flipped byte anywhere gives
// CORRUPT, never wrong voxels; the parsers are bounds-checked throughout, so
// no input crashes them or makes them allocate more than one chunk.
//
// Example:
//   std::vector<uint8_t> rec = EncodeChunk(chunk, /*version=*/7, NowMicros());
//   StatusOr<Chunk> back = DecodeChunk(rec);
//
// Thread-safety: all functions are thread-safe (zstd contexts are per thread).
#ifndef VOXDB_ENGINE_CHUNK_CODEC_H_
#define VOXDB_ENGINE_CHUNK_CODEC_H_

#include <cstdint>
#include <span>
#include <vector>

#include "engine/chunk.h"
#include "engine/status.h"

namespace voxdb::engine {

inline constexpr uint8_t kChunkFormatVersion = 1;
inline constexpr size_t kChunkHeaderSize = 28;

enum class ChunkEncoding : uint8_t {
  kUniform = 0,  // payload: 1 byte, the material
  kBricks = 1,   // payload: u32 stream size + zstd frame of the brick stream
  kFills = 2,    // payload: none; the chunk reads as the fills (a deleted chunk)
};

struct ChunkRecordHeader {
  uint8_t format_version = kChunkFormatVersion;
  ChunkEncoding encoding = ChunkEncoding::kUniform;
  uint64_t version = 0;  // grows with every change of the chunk
  int64_t mtime_us = 0;  // modification time, microseconds since the Unix epoch
  uint32_t payload_size = 0;
};

// A checked view of a record's bytes; it points into the caller's buffer.
struct ChunkRecordView {
  ChunkRecordHeader header;
  std::span<const uint8_t> payload;
};

struct CodecOptions {
  // zstd level of the brick stream. DEFAULT: kDefaultZstdLevel.
  int zstd_level = 0;
  static constexpr int kDefaultZstdLevel = 3;
};

// Encodes the chunk as it is (call Chunk::Compact() first for the smallest
// record): kUniform when the chunk has no brick grid or every brick is
// uniform with one material, kBricks otherwise.
std::vector<uint8_t> EncodeChunk(const Chunk& chunk, uint64_t version, int64_t mtime_us,
                                 const CodecOptions& options = {});

// A kFills record: the chunk reads as the fills intersecting it. Written
// for a deleted chunk so that its version keeps growing.
std::vector<uint8_t> EncodeFillsMarker(uint64_t version, int64_t mtime_us);

// Verifies size and checksum and parses the header.
// Returns CORRUPT (kDataLoss) for a short record, a checksum mismatch or an
// inconsistent header; UNSUPPORTED (kUnimplemented) for a record whose
// checksum holds but whose format version or encoding this build does not
// know (written by a newer voxdb).
StatusOr<ChunkRecordView> ParseChunkRecord(std::span<const uint8_t> record);

// Parse + decode. Same errors as ParseChunkRecord, plus CORRUPT for a
// payload that does not decode and MISMATCH for a kFills record (which only
// the Database, knowing the fills, can rasterise).
StatusOr<Chunk> DecodeChunk(std::span<const uint8_t> record);
// Decodes straight into a dense array of kChunkVoxels bytes (x fastest).
Status DecodeChunkToDense(std::span<const uint8_t> record, uint8_t* dense);

// Microseconds since the Unix epoch, for mtime_us.
int64_t NowMicros();

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_CHUNK_CODEC_H_
