// Journal records: one per write operation, keyed by sequence number in the
// `journal` table (engine/FORMAT.md, "Journal").
//
//   value = crc32c u32 (of the rest) | op u8 | body
//
// A record holds the edit as applied, so replaying a suffix of the journal
// over a flushed state gives the same chunks (every op overwrites; none reads
// the chunk it changes).
//
// Thread-safety: value types and pure functions.
#ifndef VOXDB_ENGINE_JOURNAL_H_
#define VOXDB_ENGINE_JOURNAL_H_

#include <cstdint>
#include <span>
#include <vector>

#include "engine/morton.h"
#include "engine/status.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

enum class JournalOp : uint8_t {
  kSetVoxels = 1,    // groups of (chunk, [(local index, material)])
  kWriteBox = 2,     // box + dense voxels (zstd)
  kFillBox = 3,      // box + material (also the fill's id = seq)
  kPutChunk = 4,     // chunk + chunk record
  kDeleteChunk = 5,  // chunk
};

// One chunk's share of a kSetVoxels record: packed edits, each
// (local index in [0, 2^21)) | (material << 21), in application order.
struct ChunkEdits {
  uint64_t code = 0;
  std::vector<uint32_t> packed;
};
inline uint32_t PackEdit(uint32_t local_index, uint8_t material) {
  return local_index | (uint32_t{material} << 21);
}
inline uint32_t EditIndex(uint32_t packed) { return packed & 0x1fffff; }
inline uint8_t EditMaterial(uint32_t packed) { return static_cast<uint8_t>(packed >> 21); }

// A decoded record (the variant in use depends on op).
struct JournalRecord {
  JournalOp op = JournalOp::kSetVoxels;
  std::vector<ChunkEdits> edits;  // kSetVoxels
  VoxelBox box;                   // kWriteBox, kFillBox
  std::vector<uint8_t> voxels;    // kWriteBox: box.volume() bytes, x fastest
  uint8_t material = 0;           // kFillBox
  uint64_t code = 0;              // kPutChunk, kDeleteChunk
  std::vector<uint8_t> record;    // kPutChunk: the chunk record
};

std::vector<uint8_t> EncodeSetVoxels(const std::vector<ChunkEdits>& edits);
std::vector<uint8_t> EncodeWriteBox(const VoxelBox& box, std::span<const uint8_t> voxels);
std::vector<uint8_t> EncodeFillBox(const VoxelBox& box, uint8_t material);
std::vector<uint8_t> EncodePutChunk(ChunkKey key, std::span<const uint8_t> record);
std::vector<uint8_t> EncodeDeleteChunk(ChunkKey key);

// The op of an encoded record (REQUIRES: one of the Encode* above).
inline JournalOp EncodedJournalOp(std::span<const uint8_t> value) {
  return static_cast<JournalOp>(value[4]);
}

// CORRUPT on a checksum mismatch or malformed body; bounded allocations.
StatusOr<JournalRecord> DecodeJournalRecord(std::span<const uint8_t> value);

// Journal keys: the sequence number, 8 bytes big-endian.
std::array<uint8_t, 8> JournalKey(uint64_t seq);
uint64_t DecodeJournalKey(std::span<const uint8_t> key);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_JOURNAL_H_
