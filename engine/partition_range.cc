#include "engine/partition_range.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"

namespace voxdb::engine {
namespace {

constexpr uint64_t kKeySpaceEnd = ChunkKey::kMaxCode + 1;

// The largest level l <= kMaxOctreeLevel with `code` a multiple of 8^l and
// code + 8^l <= end. REQUIRES: code < end <= kKeySpaceEnd.
int LargestCubeLevel(uint64_t code, uint64_t end) {
  int level = kMaxOctreeLevel;
  while (level > 0 && (!IsAlignedCode(code, level) || end - code < (uint64_t{1} << (3 * level)))) {
    --level;
  }
  return level;
}

}  // namespace

bool IsAlignedRange(const MortonRange& r, int levels) {
  if (r.empty() || r.end > kKeySpaceEnd) return false;
  return IsAlignedCode(r.begin, levels) && (r.end == kKeySpaceEnd || IsAlignedCode(r.end, levels));
}

ChunkBox OctreeCube::Box() const {
  const ChunkCoord n = MortonDecode(node);  // node < 8^(21 - level): fits
  const uint32_t side = uint32_t{1} << level;
  return ChunkBox{{n.x * side, n.y * side, n.z * side},
                  {n.x * side + (side - 1), n.y * side + (side - 1), n.z * side + (side - 1)}};
}

std::vector<OctreeCube> CubesOfRange(const MortonRange& r) {
  std::vector<OctreeCube> cubes;
  for (uint64_t code = r.begin; code < r.end;) {
    const int level = LargestCubeLevel(code, r.end);
    cubes.push_back(OctreeCube{code >> (3 * level), level});
    code += uint64_t{1} << (3 * level);
  }
  return cubes;
}

bool BoxMeetsRange(const ChunkBox& box, const MortonRange& r) {
  if (r.empty()) return false;
  const std::optional<uint64_t> first = box.NextInBox(r.begin);
  return first.has_value() && *first < r.end;
}

std::vector<ChunkBox> ClipBoxToRange(const ChunkBox& box, const MortonRange& r) {
  std::vector<ChunkBox> parts;
  if (!BoxMeetsRange(box, r)) return parts;
  for (const OctreeCube& cube : CubesOfRange(r)) {
    const ChunkBox c = cube.Box();
    const ChunkBox part{
        {std::max(c.lo.x, box.lo.x), std::max(c.lo.y, box.lo.y), std::max(c.lo.z, box.lo.z)},
        {std::min(c.hi.x, box.hi.x), std::min(c.hi.y, box.hi.y), std::min(c.hi.z, box.hi.z)}};
    if (part.lo.x <= part.hi.x && part.lo.y <= part.hi.y && part.lo.z <= part.hi.z) {
      parts.push_back(part);
    }
  }
  return parts;
}

PartitionRanges PartitionRanges::Whole() { return PartitionRanges({0}); }

StatusOr<PartitionRanges> PartitionRanges::FromStarts(std::vector<uint64_t> starts,
                                                      int align_levels) {
  if (align_levels < 0 || align_levels > kMaxOctreeLevel) {
    return absl::InvalidArgumentError(absl::StrFormat("an alignment of %d levels is outside 0..%d",
                                                      align_levels, kMaxOctreeLevel));
  }
  if (starts.empty() || starts.front() != 0) {
    return absl::InvalidArgumentError("the first partition must start at code 0");
  }
  for (size_t i = 1; i < starts.size(); ++i) {
    if (starts[i] <= starts[i - 1] || starts[i] > ChunkKey::kMaxCode) {
      return absl::InvalidArgumentError(
          absl::StrFormat("partition starts must increase inside the key space: %u after %u",
                          starts[i], starts[i - 1]));
    }
    if (!IsAlignedCode(starts[i], align_levels)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("partition start %u is not a multiple of 8^%d", starts[i], align_levels));
    }
  }
  return PartitionRanges(std::move(starts));
}

MortonRange PartitionRanges::range(size_t i) const {
  return MortonRange{starts_[i], i + 1 < starts_.size() ? starts_[i + 1] : kKeySpaceEnd};
}

size_t PartitionRanges::Find(uint64_t code) const {
  // The last start <= code (starts_[0] == 0, so there is one).
  return static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), code) -
                             starts_.begin()) -
         1;
}

std::vector<size_t> PartitionRanges::Meeting(const ChunkBox& box) const {
  std::vector<size_t> out;
  // Jump from range to range through the box's codes: each step lands on
  // the box's first chunk at or after the end of the range before.
  std::optional<uint64_t> code = box.MinCode();
  while (code.has_value()) {
    const size_t i = Find(*code);
    out.push_back(i);
    const MortonRange r = range(i);
    if (r.end >= kKeySpaceEnd) break;
    code = box.NextInBox(r.end);
  }
  return out;
}

StatusOr<PartitionRanges> PartitionRanges::Split(size_t i, uint64_t at, int align_levels) const {
  if (i >= starts_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat("no partition %u", i));
  }
  const MortonRange r = range(i);
  if (at <= r.begin || at >= r.end) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%u is not strictly inside the partition [%u, %u)", at, r.begin, r.end));
  }
  std::vector<uint64_t> starts = starts_;
  starts.insert(starts.begin() + static_cast<ptrdiff_t>(i) + 1, at);
  return FromStarts(std::move(starts), align_levels);
}

}  // namespace voxdb::engine
