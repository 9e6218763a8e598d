// A node: the partitions one voxdbd hosts, and the routing of requests to
// them (the shared SCALE-OUT design, §4.1 and §4.2).
//
// A partition is one Database (its own LMDB environment, journal, versions,
// fills and change feed) serving a range of Morton codes aligned to
// 8^align_levels (engine/partition_range.h). The node routes each request by
// its keys: a chunk by a binary search over the range starts, a box by
// clipping it to the ranges it meets. A request that spans partitions is
// split and its replies merged:
//
//   - reads (GetChunks, GetVoxels, ReadBox) answer exactly as one Database
//     holding every partition's chunks would;
//   - a write that spans partitions is applied in each partition as its own
//     write: it is atomic within a partition but not across them. It is
//     checked whole (bounds, box limits, sizes) before any part is applied,
//     so a malformed request changes nothing; when a part fails later
//     (BUSY, STORAGE_FULL, a fenced epoch), the parts in other partitions
//     may have been applied. Every write is idempotent (it sets voxels to
//     given values), so retrying it converges. The reply's version is the
//     highest of its parts' (each partition numbers its own writes);
//   - fills are applied in every partition they meet in one node-wide
//     order, so that two overlapping fills end the same way everywhere.
//
// Example:
//   auto node = Node::Open(parts, options);    // or one partition: {Whole}
//   WriteResult r = (*node)->SetVoxelsAndWait(edits);
//   (*node)->ReadBox(box, out.data());
//
// Thread-safety: thread-safe, like Database.
#ifndef VOXDB_ENGINE_NODE_H_
#define VOXDB_ENGINE_NODE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/database.h"
#include "engine/partition_range.h"

namespace voxdb::engine {

struct NodeOptions {
  // Options of every partition's Database.
  DatabaseOptions database;
  // Partition ranges are multiples of 8^align_levels. DEFAULT: 4.
  int align_levels = kDefaultAlignLevels;
};

// One partition to open: its id, range and directory.
struct PartitionSpec {
  uint64_t id = 0;
  MortonRange range = MortonRange::All();
  std::string dir;
};

class Node {
 public:
  // Opens (creating where allowed) one Database per partition. The ranges
  // must tile the key space, sorted, each aligned to 8^align_levels:
  // INVALID otherwise. Returns the first partition's open error, after
  // closing those already open.
  static StatusOr<std::unique_ptr<Node>> Open(std::vector<PartitionSpec> parts,
                                              const NodeOptions& options);
  // Closes every partition (each flushes and closes, Database::~Database).
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const WorldFrame& frame() const;
  size_t partition_count() const { return parts_.size(); }
  const PartitionRanges& ranges() const { return ranges_; }
  const PartitionSpec& spec(size_t i) const { return parts_[i].spec; }
  Database& partition(size_t i) const { return *parts_[i].db; }
  // The partition holding chunk `code`. REQUIRES: code <= kMaxCode.
  Database& PartitionOf(uint64_t code) const { return partition(ranges_.Find(code)); }

  // --- Reads: as Database's, over every partition --------------------------
  Status GetChunks(std::span<const ChunkKey> keys,
                   const std::function<void(size_t, const ChunkRead&)>& fn);
  Status GetVoxels(std::span<const VoxelCoord> at, uint8_t* out);
  Status ReadBox(const VoxelBox& box, uint8_t* out, const std::atomic<bool>* cancel = nullptr);
  Status CheckBoxLimits(const VoxelBox& box) const;
  uint64_t max_box_voxels() const;

  // --- Writes: as Database's, split by partition (see the file comment) ---
  void SetVoxels(std::span<const VoxelEdit> edits, WriteDone done);
  void WriteBox(const VoxelBox& box, std::span<const uint8_t> voxels, WriteDone done);
  void FillBox(const VoxelBox& box, uint8_t material, WriteDone done);
  void PutChunk(ChunkKey key, std::span<const uint8_t> record,
                std::optional<uint64_t> expected_version, WriteDone done);
  void DeleteChunk(ChunkKey key, WriteDone done);

  WriteResult SetVoxelsAndWait(std::span<const VoxelEdit> edits);
  WriteResult WriteBoxAndWait(const VoxelBox& box, std::span<const uint8_t> voxels);
  WriteResult FillBoxAndWait(const VoxelBox& box, uint8_t material);
  WriteResult PutChunkAndWait(ChunkKey key, std::span<const uint8_t> record,
                              std::optional<uint64_t> expected_version);
  WriteResult DeleteChunkAndWait(ChunkKey key);

  // Flushes every partition; the first error.
  Status Flush();
  // The partitions' figures summed (last_seq, committed_seq and durable_seq:
  // their maximum, as each partition numbers its own writes).
  DatabaseStats Stats() const;

  // The voxel boxes of `box` inside partition i's range, disjoint, in code
  // order of their chunks (empty when the box does not meet it).
  // REQUIRES: box inside the world frame and not empty.
  std::vector<VoxelBox> ClipToPartition(const VoxelBox& box, size_t i) const;

 private:
  struct Part {
    PartitionSpec spec;
    std::unique_ptr<Database> db;
  };
  Node(PartitionRanges ranges, std::vector<Part> parts, int align_levels);

  PartitionRanges ranges_;
  std::vector<Part> parts_;
  int align_levels_;
  // Held while a fill is submitted to each partition it meets, so that
  // fills enter every partition's journal in one node-wide order (a
  // Database orders its writes as they are submitted).
  std::mutex fill_mu_;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_NODE_H_
