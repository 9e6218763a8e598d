// Fills: the procedural base layer (DESIGN.md section 2a).
//
// A fill is an axis-aligned voxel box of one material; newer fills (higher
// sequence numbers) win where fills overlap. A chunk that is not stored reads
// as the fills that intersect it, rasterised, else air; its version is the
// newest intersecting fill's sequence number (0: never written).
//
// Stored form (table `fills`, engine/FORMAT.md): key = sequence number as 8
// bytes big-endian; value = 49 bytes: box lo x, y, z, hi x, y, z (u64 LE
// each, hi exclusive) and the material.
//
// Thread-safety: FillSet is a value type; Database shares immutable
// snapshots of it between threads.
#ifndef VOXDB_ENGINE_FILLS_H_
#define VOXDB_ENGINE_FILLS_H_

#include <cstdint>
#include <span>
#include <vector>

#include "engine/chunk.h"
#include "engine/status.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

struct Fill {
  uint64_t seq = 0;  // the journal sequence number of the FILL_BOX; its id
  VoxelBox box;
  uint8_t material = 0;

  static constexpr size_t kEncodedSize = 49;
  std::vector<uint8_t> Encode() const;
  // CORRUPT unless the value has the right size.
  static StatusOr<Fill> Decode(uint64_t seq, std::span<const uint8_t> value);
};

// Fills ordered by sequence number.
class FillSet {
 public:
  // Adds a fill; a fill with the same seq is replaced (idempotent replay).
  void Add(const Fill& fill);
  const std::vector<Fill>& fills() const { return fills_; }
  size_t size() const { return fills_.size(); }
  // The newest fill's seq (0 if none).
  uint64_t last_seq() const { return fills_.empty() ? 0 : fills_.back().seq; }

  // The chunk as the fills make it: air, then every intersecting fill in seq
  // order. *version gets the newest intersecting fill's seq (0 if none).
  Chunk Rasterise(const WorldFrame& frame, const ChunkCoord& c, uint64_t* version) const;
  // The newest seq of a fill intersecting chunk c (0 if none).
  uint64_t VersionOf(const WorldFrame& frame, const ChunkCoord& c) const;

 private:
  std::vector<Fill> fills_;
};

// Intersection of two boxes (possibly empty).
VoxelBox Intersect(const VoxelBox& a, const VoxelBox& b);
// Whether `inner` lies wholly inside `outer`.
bool BoxContains(const VoxelBox& outer, const VoxelBox& inner);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_FILLS_H_
