#include "engine/morton_box.h"

namespace voxdb::engine {
namespace {

constexpr uint64_t kAxisMask = 0x1249249249249249ull;  // bits of x; << 1 for y, << 2 for z

// In `code`, sets bit p and clears the lower bits of p's axis ("1000...").
uint64_t LoadOneZeros(uint64_t code, int p) {
  const uint64_t axis = kAxisMask << (p % 3);
  const uint64_t below = axis & ((uint64_t{1} << p) - 1);
  return (code & ~below) | (uint64_t{1} << p);
}

// In `code`, clears bit p and sets the lower bits of p's axis ("0111...").
uint64_t LoadZeroOnes(uint64_t code, int p) {
  const uint64_t axis = kAxisMask << (p % 3);
  const uint64_t below = axis & ((uint64_t{1} << p) - 1);
  return (code | below) & ~(uint64_t{1} << p);
}

}  // namespace

std::optional<uint64_t> ChunkBox::NextInBox(uint64_t code) const {
  uint64_t zmin = MinCode();
  uint64_t zmax = MaxCode();
  if (code <= zmin) return zmin;
  if (code > zmax) return std::nullopt;
  if (ContainsCode(code)) return code;
  // BIGMIN: walk the bits from the top, narrowing [zmin, zmax] to the half
  // that can still hold a code >= `code`.
  uint64_t bigmin = 0;
  bool found = false;
  for (int p = 3 * kMortonAxisBits - 1; p >= 0; --p) {
    const uint64_t bit = uint64_t{1} << p;
    const int b = (code & bit) ? 4 : 0, mn = (zmin & bit) ? 2 : 0, mx = (zmax & bit) ? 1 : 0;
    switch (b | mn | mx) {
      case 0b000:
      case 0b111:
        break;
      case 0b001:  // code 0, min 0, max 1: the upper half's start is a candidate
        bigmin = LoadOneZeros(zmin, p);
        found = true;
        zmax = LoadZeroOnes(zmax, p);
        break;
      case 0b011:  // code 0, min 1: the whole remaining range is above code
        return zmin;
      case 0b100:  // code 1, max 0: nothing in range is >= code
        return found ? std::optional<uint64_t>(bigmin) : std::nullopt;
      case 0b101:  // code 1, min 0, max 1: continue in the upper half
        zmin = LoadOneZeros(zmin, p);
        break;
      default:  // 0b010 and 0b110 cannot happen: zmin <= zmax on every prefix
        return std::nullopt;
    }
  }
  // code itself was inside [zmin, zmax] on every bit: it is in the box, which
  // ContainsCode ruled out above; keep the last candidate.
  return found ? std::optional<uint64_t>(bigmin) : std::nullopt;
}

}  // namespace voxdb::engine
