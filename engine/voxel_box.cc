#include "engine/voxel_box.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/status.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

std::string VoxelCoord::ToString() const { return absl::StrFormat("(%u, %u, %u)", x, y, z); }

VoxelBox Intersect(const VoxelBox& a, const VoxelBox& b) {
  return VoxelBox{{std::max(a.lo.x, b.lo.x), std::max(a.lo.y, b.lo.y), std::max(a.lo.z, b.lo.z)},
                  {std::min(a.hi.x, b.hi.x), std::min(a.hi.y, b.hi.y), std::min(a.hi.z, b.hi.z)}};
}

bool BoxContains(const VoxelBox& outer, const VoxelBox& inner) {
  return inner.lo.x >= outer.lo.x && inner.lo.y >= outer.lo.y && inner.lo.z >= outer.lo.z &&
         inner.hi.x <= outer.hi.x && inner.hi.y <= outer.hi.y && inner.hi.z <= outer.hi.z;
}

ChunkBox ChunksCovering(const WorldFrame& frame, const VoxelBox& box) {
  return ChunkBox{frame.ChunkOf(box.lo), frame.ChunkOf({box.hi.x - 1, box.hi.y - 1, box.hi.z - 1})};
}

void CopySubBox(const VoxelBox& part, const VoxelBox& src_box, std::span<const uint8_t> src,
                const VoxelBox& dst_box, std::span<uint8_t> dst) {
  // Checked once per call, not per row: a wrong box here would write out of
  // bounds.
  VOXDB_CHECK(!part.empty() && BoxContains(src_box, part) && BoxContains(dst_box, part));
  VOXDB_CHECK(src.size() >= src_box.volume() && dst.size() >= dst_box.volume());
  const uint64_t px = part.hi.x - part.lo.x;
  const uint64_t sx = src_box.hi.x - src_box.lo.x, sy = src_box.hi.y - src_box.lo.y;
  const uint64_t dx = dst_box.hi.x - dst_box.lo.x, dy = dst_box.hi.y - dst_box.lo.y;
  for (uint64_t z = part.lo.z; z < part.hi.z; ++z) {
    for (uint64_t y = part.lo.y; y < part.hi.y; ++y) {
      const uint64_t s =
          (part.lo.x - src_box.lo.x) + sx * ((y - src_box.lo.y) + sy * (z - src_box.lo.z));
      const uint64_t d =
          (part.lo.x - dst_box.lo.x) + dx * ((y - dst_box.lo.y) + dy * (z - dst_box.lo.z));
      std::memcpy(dst.data() + d, src.data() + s, px);
    }
  }
}

Status CheckBoxLimits(const WorldFrame& frame, const VoxelBox& box, uint64_t max_voxels,
                      uint64_t max_chunks) {
  VOXDB_RETURN_IF_ERROR(frame.CheckBox(box));
  if (box.volume() > max_voxels) {
    return TooLargeError(absl::StrFormat(
        "the box holds %s voxels, more than the limit of %u for reading or writing voxels",
        box.volume() == UINT64_MAX ? std::string("over 2^64") : absl::StrCat(box.volume()),
        max_voxels));
  }
  const ChunkBox chunks = ChunksCovering(frame, box);
  const uint64_t touched = uint64_t{chunks.hi.x - chunks.lo.x + 1} *
                           (chunks.hi.y - chunks.lo.y + 1) * (chunks.hi.z - chunks.lo.z + 1);
  if (touched > max_chunks) {
    return TooLargeError(absl::StrFormat(
        "the box touches %u chunks, more than the limit of %u for reading or writing voxels "
        "(a thin box crossing many chunks costs a chunk each): split it",
        touched, max_chunks));
  }
  return absl::OkStatus();
}

}  // namespace voxdb::engine
