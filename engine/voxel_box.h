// Voxel geometry: voxel coordinates, half-open voxel boxes, and the few
// operations every layer needs on them (intersection, containment, the
// chunks a box covers, copying a sub-box between dense arrays).
//
// Dense voxel arrays are laid out x fastest, then y, then z, the layout of a
// chunk's dense bytes (engine/chunk.h) and of READ_BOX / WRITE_BOX payloads
// (protocol/PROTOCOL.md): voxel (x, y, z) of box b is at index
//   (x - b.lo.x) + sx * ((y - b.lo.y) + sy * (z - b.lo.z)),  s = b.hi - b.lo.
//
// Example:
//   const VoxelBox part = Intersect(box, frame.VoxelsOfChunk(c));
//   if (!part.empty()) CopySubBox(part, part, chunk_part, box, out);
//
// Thread-safety: value types and pure functions.
#ifndef VOXDB_ENGINE_VOXEL_BOX_H_
#define VOXDB_ENGINE_VOXEL_BOX_H_

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "engine/morton_box.h"
#include "engine/status.h"

namespace voxdb::engine {

class WorldFrame;  // engine/world_frame.h

// Integer voxel coordinates in the world.
struct VoxelCoord {
  uint64_t x = 0;
  uint64_t y = 0;
  uint64_t z = 0;
  friend bool operator==(const VoxelCoord&, const VoxelCoord&) = default;
  std::string ToString() const;
};

// A half-open box of voxels [lo, hi) per axis.
struct VoxelBox {
  VoxelCoord lo;
  VoxelCoord hi;
  bool empty() const { return lo.x >= hi.x || lo.y >= hi.y || lo.z >= hi.z; }
  // Voxels in the box; UINT64_MAX when that does not fit 64 bits (a box
  // inside the world can hold about 10^24), so that every "volume > limit"
  // check holds for it.
  uint64_t volume() const {
    if (empty()) return 0;
    uint64_t xy, xyz;
    if (__builtin_mul_overflow(hi.x - lo.x, hi.y - lo.y, &xy) ||
        __builtin_mul_overflow(xy, hi.z - lo.z, &xyz)) {
      return UINT64_MAX;
    }
    return xyz;
  }
  friend bool operator==(const VoxelBox&, const VoxelBox&) = default;
};

// Intersection of two boxes (possibly empty: then only empty() is meaningful).
VoxelBox Intersect(const VoxelBox& a, const VoxelBox& b);
// Whether `inner` lies wholly inside `outer`.
bool BoxContains(const VoxelBox& outer, const VoxelBox& inner);
// Whether the boxes share a voxel: !Intersect(a, b).empty(). An empty box
// meets nothing.
inline bool Meets(const VoxelBox& a, const VoxelBox& b) {
  return std::max(a.lo.x, b.lo.x) < std::min(a.hi.x, b.hi.x) &&
         std::max(a.lo.y, b.lo.y) < std::min(a.hi.y, b.hi.y) &&
         std::max(a.lo.z, b.lo.z) < std::min(a.hi.z, b.hi.z);
}

// The chunks that hold a voxel of `box`: from the chunk of box.lo to the
// chunk of box.hi - 1, inclusive. The box is not clipped to the world.
// REQUIRES: !box.empty(), and box.hi - 1 within the 21-bit chunk grid.
ChunkBox ChunksCovering(const WorldFrame& frame, const VoxelBox& box);

// What a read or write of a box checks before it touches anything: INVALID
// or OUT_OF_BOUNDS for an empty box or one outside the frame, TOO_LARGE for
// more than max_voxels voxels or more than max_chunks chunks touched.
Status CheckBoxLimits(const WorldFrame& frame, const VoxelBox& box, uint64_t max_voxels,
                      uint64_t max_chunks);

// Copies the voxels of `part` from `src`, the dense array of `src_box`, into
// `dst`, the dense array of `dst_box` (see the file comment for the layout).
// One call serves both directions: gathering a sub-box out of a larger array
// (src_box = the larger box, dst_box = part) and scattering it back
// (src_box = part, dst_box = the larger box).
// REQUIRES: part is not empty and lies inside src_box and dst_box; src and
// dst hold at least their box's volume.
void CopySubBox(const VoxelBox& part, const VoxelBox& src_box, std::span<const uint8_t> src,
                const VoxelBox& dst_box, std::span<uint8_t> dst);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_VOXEL_BOX_H_
