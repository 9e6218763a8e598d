// The LOD arrays of a Zarr export (cli/zarr.h): levels 1..N built from the
// exported level-0 chunks by the pyramid's rule (engine::LodMode8: the most
// common of each 2x2x2 block, ties to non-air, then to the smaller id).
//
// Example:
//   PyramidBuilder pyramid(levels);
//   for (each level-0 chunk, in Morton order)
//     pyramid.AddLevel0(code, DownsampleToOctant(dense));
//   pyramid.Finish();
//   // pyramid.ready(): the nodes to write, each 128^3 dense.
//
// Thread-safety: DownsampleToOctant and AllZero may be called from any
// thread; a PyramidBuilder belongs to one thread.
#ifndef VOXDB_CLI_ZARR_PYRAMID_H_
#define VOXDB_CLI_ZARR_PYRAMID_H_

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

namespace voxdb::cli {

// Whether every byte is 0 (air).
bool AllZero(std::span<const uint8_t> bytes);

// A chunk's dense bytes (128^3, x fastest) downsampled by engine::LodMode8
// into 64^3, x fastest: its octant of the node one level up.
std::vector<uint8_t> DownsampleToOctant(const uint8_t* dense);

// Builds levels 1..levels from the level-0 chunks, given in Morton order:
// the 8 children of a node are consecutive in it, so one node per level is
// open at a time. A node is finished when a chunk of another node arrives
// (or at Finish): if not all 0 it is queued in ready() for writing, and it
// is downsampled into its octant of its parent. Chunks that never arrive
// are air.
class PyramidBuilder {
 public:
  struct Node {
    int level;
    uint64_t code;               // the node's Morton code at its level
    std::vector<uint8_t> dense;  // 128^3, x fastest
  };
  // levels 0 builds nothing (then AddLevel0 is not called).
  explicit PyramidBuilder(int levels) : levels_(levels), open_(levels + 1) {}

  // The level-0 chunk `code`, downsampled to 64^3 (DownsampleToOctant).
  // REQUIRES: codes in increasing order.
  void AddLevel0(uint64_t code, const std::vector<uint8_t>& octant);
  // Finishes every open node (the end of the chunks).
  void Finish();
  // The finished nodes that are not all air, for the caller to take.
  std::deque<Node>& ready() { return ready_; }

 private:
  struct Open {
    bool open = false;
    uint64_t code = 0;
    std::vector<uint8_t> dense;
  };
  // The open node of `level`, which becomes `code` (finishing another one).
  Open& OpenNode(int level, uint64_t code);
  void FinishLevel(int level);

  const int levels_;
  std::vector<Open> open_;  // by level; [0] unused
  std::deque<Node> ready_;
};

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_ZARR_PYRAMID_H_
