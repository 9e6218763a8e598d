// Boxes of chunks in Morton order.
//
// A box of chunk coordinates is not one Morton key range, but a scan can
// walk it with cursor seeks: at a key outside the box, NextInBox gives the
// smallest Morton code >= that key that lies inside the box (Tropf and
// Herzog's BIGMIN), so the scan skips every gap in one seek.
//
// Example:
//   ChunkBox box{{10, 10, 0}, {20, 12, 3}};
//   for (auto code = box.NextInBox(0); code; code = box.NextInBox(*code + 1)) ...
//
// Thread-safety: a value type.
#ifndef VOXDB_ENGINE_MORTON_BOX_H_
#define VOXDB_ENGINE_MORTON_BOX_H_

#include <cstdint>
#include <optional>

#include "engine/morton.h"

namespace voxdb::engine {

// Chunks [lo, hi] per axis, inclusive. REQUIRES: lo <= hi on every axis.
struct ChunkBox {
  ChunkCoord lo;
  ChunkCoord hi;

  bool Contains(const ChunkCoord& c) const {
    return c.x >= lo.x && c.x <= hi.x && c.y >= lo.y && c.y <= hi.y && c.z >= lo.z && c.z <= hi.z;
  }
  bool ContainsCode(uint64_t code) const { return Contains(MortonDecode(code)); }
  uint64_t MinCode() const { return MortonEncode(lo.x, lo.y, lo.z); }
  uint64_t MaxCode() const { return MortonEncode(hi.x, hi.y, hi.z); }
  // The smallest code >= `code` inside the box, or nullopt past its end.
  std::optional<uint64_t> NextInBox(uint64_t code) const;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_MORTON_BOX_H_
