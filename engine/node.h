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
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/database.h"
#include "engine/node_manifest.h"
#include "engine/partition_range.h"

namespace voxdb::engine {

struct NodeOptions {
  // Options of every partition's Database. Their cache_bytes, dirty_bytes
  // and flush_high_water are the node's, shared by all partitions, which
  // also share pools of commit and flush threads when the node opens with
  // several (engine/node_resources.h): the node makes those resources
  // unless database.node is set already.
  DatabaseOptions database;
  // Partition ranges are multiples of 8^align_levels (for a new node; an
  // existing one keeps its manifest's). DEFAULT: 4.
  int align_levels = kDefaultAlignLevels;
  // Called by Open with each file or directory it removes as a leftover of
  // a split or move that a crash interrupted (engine/node_manifest.h,
  // RemoveLeftovers), for the log. DEFAULT: none.
  std::function<void(const std::string& path)> on_removed;
  // Address space the partitions' LMDB maps may take together. Each
  // partition's map may grow to MaxMapSizePerPartition of
  // database.store.max_map_size: that, capped at this budget shared by the
  // partitions, and never below database.store.initial_map_size. LMDB maps
  // a whole environment into the process, so without a cap a node of many
  // partitions could grow past the address space and fail mmap at any
  // write. DEFAULT: 64 TiB, half of x86-64's 128 TiB user space: up to 64
  // partitions keep the default 1 TiB each.
  uint64_t map_budget_bytes = kDefaultMapBudgetBytes;
  static constexpr uint64_t kDefaultMapBudgetBytes = uint64_t{64} << 40;
};

// The largest map each of `partitions` partitions may grow to with these
// options: min(configured, max(initial_map_size, map_budget_bytes /
// partitions)), configured being database.store.max_map_size unless given.
size_t MaxMapSizePerPartition(const NodeOptions& options, size_t partitions,
                              std::optional<size_t> configured = std::nullopt);

// One partition to open: its id, range and directory.
struct PartitionSpec {
  uint64_t id = 0;
  MortonRange range = MortonRange::All();
  std::string dir;
};

// What a split or move copied (engine/partition_copy.h) and how long the
// partition's writes waited.
struct LayoutChangeReport {
  uint64_t chunks = 0, bytes = 0;  // copied, both passes
  uint64_t caught_up_chunks = 0;   // copied again or deleted in the second pass
  double copy_seconds = 0;         // the first pass, writes going on
  double pause_seconds = 0;        // writes to the partition waited this long
  std::vector<uint64_t> new_ids;   // the partitions made
  // Removing the replaced environment, after the switch (which happened
  // whatever this says; a failure leaves it for the next start).
  Status cleanup;
};

class Node {
 public:
  // Opens the node in `data_dir` (engine/node_manifest.h): its manifest, or
  // the root partition alone for a directory without one (every directory
  // of a single database), after removing what a crashed split or move
  // left behind. Each partition's Database is opened with options.database.
  static StatusOr<std::unique_ptr<Node>> Open(const std::string& data_dir,
                                              const NodeOptions& options);
  // Opens the given partitions, without a manifest (tests and tools). The
  // ranges must tile the key space, each aligned to 8^align_levels:
  // INVALID otherwise. Split and Move are refused (no manifest to commit).
  static StatusOr<std::unique_ptr<Node>> Open(std::vector<PartitionSpec> parts,
                                              const NodeOptions& options);
  // Closes every partition (each flushes and closes, Database::~Database).
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const WorldFrame& frame() const { return frame_; }
  // The data directory; empty for a node opened without a manifest.
  const std::string& data_dir() const { return data_dir_; }

  // MaxMapSizePerPartition for the partitions there are now: what
  // max-map-size `configured` becomes for each (SIGHUP, daemon/config.cc).
  size_t MaxMapSizePerPartition(size_t configured) const;

  // The partitions as they are now: a split or move replaces them. The
  // Databases stay valid while the returned layout is held.
  class Gate;  // engine/node.cc
  struct Part {
    PartitionSpec spec;
    std::shared_ptr<Database> db;
    // Writes enter it while they are submitted; a split or move closes it
    // to pause them, then retires it.
    std::shared_ptr<Gate> gate;
  };
  struct Layout {
    PartitionRanges ranges;
    std::vector<Part> parts;
  };
  std::shared_ptr<const Layout> layout() const;
  size_t partition_count() const { return layout()->parts.size(); }

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

  // Runs fn() while no write is being submitted to the partitions `parts`
  // of `layout` (indices, increasing): writes to them wait meanwhile; those
  // already submitted are in their partition (Database::Snapshot then
  // covers them). For a consistent cut across partitions: a write spanning
  // several is submitted to all of them or to none. Returns false (fn not
  // run) when one of them was replaced by a split or move: take the new
  // layout and try again. Keep fn short: it holds up those writes.
  bool WithWritesPaused(const Layout& layout, const std::vector<size_t>& parts,
                        const std::function<void()>& fn);
  // True when a write submitted now would likely wait: a partition's
  // back-pressure (Database::WritesWouldWait) or a pause for a split or
  // move. A hint for event loops, as Database's.
  bool WritesWouldWait() const;

  // --- Layout changes (online; one at a time) ------------------------------
  // Splits partition `id` at code `at` (a multiple of 8^align_levels
  // strictly inside its range) into two new partitions in
  // DATA/partitions/<new id>/. Writes go on while the chunks are copied;
  // the partition's writes then wait while what changed meanwhile is copied
  // again (LayoutChangeReport::pause_seconds), the manifest switches, and
  // they go on in the new partitions. Reads go on throughout and never go
  // backwards. A crash at any step leaves the old layout or the new one
  // (engine/node_manifest.h). INVALID for a bad id or code; the copy's
  // errors (STORAGE_FULL, IO_ERROR) with the old layout kept.
  StatusOr<LayoutChangeReport> Split(uint64_t id, uint64_t at);
  // Moves partition `id`'s environment to `dir` (absolute; must not exist
  // or be empty), the same way. A crash before the switch leaves a partial
  // copy in `dir` that nothing references: remove it before trying again.
  StatusOr<LayoutChangeReport> Move(uint64_t id, const std::string& dir);

  // Copies the node online into `dest` (absolute, must not exist), a data
  // directory voxdbd can be started on: DEST/node.manifest and each
  // partition's environment in DEST/partitions/<id>/ (Database::Backup),
  // built in DEST.partial and renamed to DEST once whole. Each partition is
  // copied as of its own moment, in range order: a write across partitions
  // made during the backup may be in one partition's copy and not another's
  // (as such a write is atomic within each partition only). Splits and moves
  // wait meanwhile. *bytes: the environments' bytes. INVALID for a bad or
  // existing destination (DEST.partial included: nothing this call did not
  // create is deleted); the copy's errors otherwise, with DEST.partial
  // removed.
  Status Backup(const std::string& dest, uint64_t* bytes);

  // The voxel boxes of `box` inside `range`, disjoint, in code order of
  // their chunks (empty when the box does not meet it).
  // REQUIRES: box inside the world frame and not empty.
  std::vector<VoxelBox> ClipToRange(const VoxelBox& box, const MortonRange& range) const;

 private:
  Node(std::string data_dir, std::optional<DirectoryLock> lock, const NodeOptions& options);

  // Runs submit(layout, partitions) with the write gates of the partitions
  // that pick(layout) names held (waiting while a split or move pauses
  // them), again on the new layout when one of them was replaced meanwhile.
  // `done` gets the error (and submit is not run) when a partition can take
  // no write (a layout change that could not open its new partitions).
  void Route(const std::function<std::vector<size_t>(const Layout&)>& pick,
             const std::function<void(const Layout&, const std::vector<size_t>&)>& submit,
             WriteDone& done);
  // The pieces of `box` in the partitions `parts` of `layout`, in order:
  // (partition index, voxel box).
  std::vector<std::pair<size_t, VoxelBox>> BoxPieces(const Layout& layout,
                                                     const std::vector<size_t>& parts,
                                                     const VoxelBox& box) const;
  // A split or move of partition `id` into `next` (built by a copy, then
  // committed by writing `manifest`).
  StatusOr<LayoutChangeReport> Replace(uint64_t id, const std::vector<PartitionSpec>& next,
                                       const NodeManifest& manifest);
  // The options of one of `partitions` partitions: its identity, and its
  // map capped (MaxMapSizePerPartition).
  DatabaseOptions PartitionOptions(const PartitionSpec& spec, uint64_t parent,
                                   size_t partitions) const;

  const std::string data_dir_;  // empty: opened without a manifest
  std::optional<DirectoryLock> lock_;
  NodeOptions options_;
  WorldFrame frame_ = WorldFrame::Earth();  // the partitions'
  mutable std::mutex layout_mu_;
  std::shared_ptr<const Layout> layout_;  // GUARDED_BY(layout_mu_)
  NodeManifest manifest_;                 // GUARDED_BY(change_mu_)
  // Held while a fill is submitted to each partition it meets, so that
  // fills enter every partition's journal in one node-wide order (a
  // Database orders its writes as they are submitted).
  std::mutex fill_mu_;
  // One layout change at a time; the manifest is written under it.
  std::mutex change_mu_;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_NODE_H_
