// Morton ranges as partitions of the key space (the shared SCALE-OUT design,
// §4.1): a partition covers [begin, end) of Morton codes, both ends
// multiples of 8^A, so that every octree node up to level A (LOD levels,
// the cubes a box scan walks) lies inside one partition.
//
// A range is a union of aligned octree cubes, at most 7 per level on each
// side; boxes of chunks are routed by clipping them to those cubes, and
// codes by a binary search over the range starts (PartitionRanges).
//
// Example:
//   PartitionRanges ranges = PartitionRanges::Whole();     // one partition
//   ranges = *ranges.Split(0, uint64_t{1} << 60, /*align_levels=*/4);  // two
//   size_t p = ranges.Find(code);                           // which one
//   for (const ChunkBox& part : ClipBoxToRange(box, ranges.range(p))) ...
//
// Thread-safety: value types and pure functions.
#ifndef VOXDB_ENGINE_PARTITION_RANGE_H_
#define VOXDB_ENGINE_PARTITION_RANGE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/morton.h"
#include "engine/morton_box.h"
#include "engine/status.h"

namespace voxdb::engine {

// The default alignment: 8^4 chunks, a 16^3-chunk cube (LOD levels 1..4
// stay inside a partition).
inline constexpr int kDefaultAlignLevels = 4;

// True when `code` is a multiple of 8^levels. REQUIRES: 0 <= levels <= 21.
constexpr bool IsAlignedCode(uint64_t code, int levels) {
  return (code & ((uint64_t{1} << (3 * levels)) - 1)) == 0;
}
// True when r is non-empty, inside the key space and both its ends are
// multiples of 8^levels (the end may be the end of the key space).
bool IsAlignedRange(const MortonRange& r, int levels);

// An octree node: the chunks with code >> 3*level == node.
struct OctreeCube {
  uint64_t node = 0;
  int level = 0;
  MortonRange Range() const { return MortonRange::OctreeNode(node, level); }
  ChunkBox Box() const;
  friend bool operator==(const OctreeCube&, const OctreeCube&) = default;
};

// The octree cubes whose union is exactly `r`, in code order, each the
// largest aligned one that fits: at most 7 per level on each side.
// REQUIRES: r inside the key space (end <= kMaxCode + 1).
std::vector<OctreeCube> CubesOfRange(const MortonRange& r);

// Whether some chunk of `box` has a code in `r`.
bool BoxMeetsRange(const ChunkBox& box, const MortonRange& r);

// The chunks of `box` whose code is in `r`, as disjoint boxes in code order
// (the box clipped to each cube of r it meets). Empty when they do not meet.
std::vector<ChunkBox> ClipBoxToRange(const ChunkBox& box, const MortonRange& r);

// Contiguous ranges that tile the key space [0, kMaxCode + 1), sorted: the
// partitions of a node (or of a cluster) and the routing of codes to them.
class PartitionRanges {
 public:
  // One range: the whole key space.
  static PartitionRanges Whole();
  // From range starts: the first must be 0; each later one greater than the
  // one before and a multiple of 8^align_levels. INVALID otherwise.
  static StatusOr<PartitionRanges> FromStarts(std::vector<uint64_t> starts, int align_levels);

  size_t size() const { return starts_.size(); }
  MortonRange range(size_t i) const;
  const std::vector<uint64_t>& starts() const { return starts_; }

  // The index of the range holding `code`. REQUIRES: code <= kMaxCode.
  size_t Find(uint64_t code) const;
  // The indices of the ranges `box` meets, in order.
  std::vector<size_t> Meeting(const ChunkBox& box) const;

  // Splits range i at `at` (a multiple of 8^align_levels strictly inside
  // it) into [begin, at) and [at, end): the ranges after i move up by one.
  // INVALID otherwise.
  StatusOr<PartitionRanges> Split(size_t i, uint64_t at, int align_levels) const;

 private:
  explicit PartitionRanges(std::vector<uint64_t> starts) : starts_(std::move(starts)) {}
  std::vector<uint64_t> starts_;  // starts_[0] == 0, increasing
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_PARTITION_RANGE_H_
