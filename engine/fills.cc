#include "engine/fills.h"

#include <algorithm>

#include "engine/coding.h"

namespace voxdb::engine {

VoxelBox Intersect(const VoxelBox& a, const VoxelBox& b) {
  return VoxelBox{{std::max(a.lo.x, b.lo.x), std::max(a.lo.y, b.lo.y), std::max(a.lo.z, b.lo.z)},
                  {std::min(a.hi.x, b.hi.x), std::min(a.hi.y, b.hi.y), std::min(a.hi.z, b.hi.z)}};
}

bool BoxContains(const VoxelBox& outer, const VoxelBox& inner) {
  return inner.lo.x >= outer.lo.x && inner.lo.y >= outer.lo.y && inner.lo.z >= outer.lo.z &&
         inner.hi.x <= outer.hi.x && inner.hi.y <= outer.hi.y && inner.hi.z <= outer.hi.z;
}

std::vector<uint8_t> Fill::Encode() const {
  std::vector<uint8_t> out;
  out.reserve(kEncodedSize);
  for (uint64_t v : {box.lo.x, box.lo.y, box.lo.z, box.hi.x, box.hi.y, box.hi.z}) {
    PutFixed64(out, v);
  }
  out.push_back(material);
  return out;
}

StatusOr<Fill> Fill::Decode(uint64_t seq, std::span<const uint8_t> value) {
  if (value.size() != kEncodedSize) return CorruptError("fill record has the wrong size");
  Fill f;
  f.seq = seq;
  const uint8_t* p = value.data();
  f.box.lo = {DecodeFixed64(p), DecodeFixed64(p + 8), DecodeFixed64(p + 16)};
  f.box.hi = {DecodeFixed64(p + 24), DecodeFixed64(p + 32), DecodeFixed64(p + 40)};
  f.material = p[48];
  if (f.box.empty()) return CorruptError("fill record has an empty box");
  return f;
}

void FillSet::Add(const Fill& fill) {
  auto it = std::lower_bound(fills_.begin(), fills_.end(), fill.seq,
                             [](const Fill& f, uint64_t seq) { return f.seq < seq; });
  if (it != fills_.end() && it->seq == fill.seq) {
    *it = fill;
  } else {
    fills_.insert(it, fill);
  }
}

Chunk FillSet::Rasterise(const WorldFrame& frame, const ChunkCoord& c, uint64_t* version) const {
  const VoxelBox chunk_box = frame.ChunkBox(c);
  const VoxelCoord origin = frame.ChunkOrigin(c);
  Chunk chunk(0);
  uint64_t newest = 0;
  for (const Fill& f : fills_) {
    const VoxelBox part = Intersect(f.box, chunk_box);
    if (part.empty()) continue;
    newest = f.seq;
    LocalBox local{
        {static_cast<uint32_t>(part.lo.x - origin.x), static_cast<uint32_t>(part.lo.y - origin.y),
         static_cast<uint32_t>(part.lo.z - origin.z)},
        {static_cast<uint32_t>(part.hi.x - origin.x), static_cast<uint32_t>(part.hi.y - origin.y),
         static_cast<uint32_t>(part.hi.z - origin.z)}};
    // A fill covering the whole in-world part of an edge chunk covers it all.
    if (BoxContains(f.box, chunk_box)) local = LocalBox::Whole();
    chunk.FillBox(local, f.material);
  }
  chunk.Compact();
  if (version) *version = newest;
  return chunk;
}

uint64_t FillSet::VersionOf(const WorldFrame& frame, const ChunkCoord& c) const {
  const VoxelBox chunk_box = frame.ChunkBox(c);
  for (auto it = fills_.rbegin(); it != fills_.rend(); ++it) {
    if (!Intersect(it->box, chunk_box).empty()) return it->seq;
  }
  return 0;
}

}  // namespace voxdb::engine
