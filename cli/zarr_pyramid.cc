#include "cli/zarr_pyramid.h"

#include <algorithm>
#include <utility>

#include "engine/chunk.h"
#include "engine/lod.h"
#include "engine/voxel_box.h"

namespace voxdb::cli {
namespace {

using engine::kChunkEdge;
using engine::kChunkVoxels;
using engine::VoxelBox;

constexpr uint64_t kHalf = kChunkEdge / 2;
constexpr VoxelBox kChunk{{0, 0, 0}, {kChunkEdge, kChunkEdge, kChunkEdge}};
constexpr VoxelBox kOctant{{0, 0, 0}, {kHalf, kHalf, kHalf}};

}  // namespace

bool AllZero(std::span<const uint8_t> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

std::vector<uint8_t> DownsampleToOctant(const uint8_t* dense) {
  thread_local std::vector<uint8_t> parent(kChunkVoxels);
  engine::LodDownsampleOctant(dense, 0, parent.data());  // writes [0, 64)^3 of parent
  std::vector<uint8_t> octant(kHalf * kHalf * kHalf);
  engine::CopySubBox(kOctant, kChunk, parent, kOctant, octant);
  return octant;
}

void PyramidBuilder::AddLevel0(uint64_t code, const std::vector<uint8_t>& octant) {
  Open& node = OpenNode(1, code >> 3);
  const uint64_t o = code & 7;
  const uint64_t ox = (o & 1) * kHalf, oy = (o >> 1 & 1) * kHalf, oz = (o >> 2) * kHalf;
  const VoxelBox part{{ox, oy, oz}, {ox + kHalf, oy + kHalf, oz + kHalf}};
  engine::CopySubBox(part, part, octant, kChunk, node.dense);
}

void PyramidBuilder::Finish() {
  for (int level = 1; level <= levels_; ++level) FinishLevel(level);
}

PyramidBuilder::Open& PyramidBuilder::OpenNode(int level, uint64_t code) {
  Open& node = open_[static_cast<size_t>(level)];
  if (node.open && node.code != code) FinishLevel(level);
  if (!node.open) {
    node.open = true;
    node.code = code;
    node.dense.assign(kChunkVoxels, 0);
  }
  return node;
}

void PyramidBuilder::FinishLevel(int level) {
  Open& node = open_[static_cast<size_t>(level)];
  if (!node.open) return;
  node.open = false;
  if (AllZero(node.dense)) return;  // air: nothing to write or pass up
  if (level < levels_) {
    Open& parent = OpenNode(level + 1, node.code >> 3);
    engine::LodDownsampleOctant(node.dense.data(), static_cast<int>(node.code & 7),
                                parent.dense.data());
  }
  ready_.push_back({level, node.code, std::move(node.dense)});
}

}  // namespace voxdb::cli
