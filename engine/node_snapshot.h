// engine::NodeSnapshot: a consistent, point-in-time view of the partitions
// of a Node (engine/node.h), what DatabaseSnapshot is for one Database.
//
// SnapshotOf takes every involved partition's Database::Snapshot while
// writes to those partitions are paused (Node::WithWritesPaused), so the
// view is one cut across them: every write acknowledged before the call is
// in it, none submitted after it is, and of a write that spans partitions
// either every part is in it or none (a part that later fails its commit
// is not, like any failed write; Node's file comment says why such a write
// can be half applied). The partitions keep numbering their own writes, so
// the view has one sequence number per partition (seqs()), where a change
// feed of that partition resumes.
//
// A snapshot may cover only the partitions a region of chunks meets: its
// reads answer for the chunks of those partitions (which may lie outside
// the region), and say so for the others (GetChunks).
//
// Fills: a fill that spans partitions was recorded in each as its own
// pieces (clipped to the partition's chunks, numbered by the partition),
// and a partition made by a split holds the fills of its parent that meet
// its range, unclipped (with their sequence numbers, below every number
// the child gives). FillsMeeting gives them as a client rasterises them:
// every fill once (an inherited one is in each child), in sequence order.
// A voxel is then covered by exactly the fills of the partition holding
// its chunk, in that partition's order: a partition's own pieces stay in
// its chunks, and a fill of another partition that covers the voxel was
// inherited from an ancestor of both, so the voxel's partition holds it
// too. Sequence numbers are only comparable within a partition (two
// partitions may each have a fill numbered n, in different chunks).
// partition(i).fills() is one partition's own FillSet.
//
// Example:
//   VOXDB_ASSIGN_OR_RETURN(auto snap, SnapshotOf(node, std::nullopt));
//   snap->ScanChunks(box, 0, [&](ChunkKey key, uint64_t version) { ...; return true; });
//   for (const NodeSnapshot::PartitionSeq& p : snap->seqs()) resume[p.id] = p.seq;
//
// A snapshot holds its partitions' Databases: a split or move that
// replaces one of them while the snapshot lives goes on, and the snapshot
// keeps reading the replaced Database; the split's removal of the old
// environment waits for it (up to a minute, else its files go at the next
// start, LayoutChangeReport::cleanup). End snapshots before their Node is
// destroyed: one held past it would close its Databases after the node
// released its directory lock.
//
// Thread-safety: one thread at a time, like DatabaseSnapshot (it is a set
// of them); SnapshotOf is thread-safe.
#ifndef VOXDB_ENGINE_NODE_SNAPSHOT_H_
#define VOXDB_ENGINE_NODE_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "engine/database.h"
#include "engine/fills.h"
#include "engine/morton.h"
#include "engine/morton_box.h"
#include "engine/node.h"
#include "engine/status.h"
#include "engine/voxel_box.h"

namespace voxdb::engine {

class NodeSnapshot;

// Takes a NodeSnapshot of `node`'s partitions that meet `region` (all of
// them when nullopt), in one pause of their writes; again on the new
// layout when a split or move replaced one of them meanwhile, a few times
// (BUSY when the layout kept changing). INVALID for a region with lo above
// hi, OUT_OF_BOUNDS for one outside the world; the Databases' errors
// (BUSY when LMDB reader slots run out, UNAVAILABLE while closing).
StatusOr<std::unique_ptr<NodeSnapshot>> SnapshotOf(Node& node, std::optional<ChunkBox> region);

class NodeSnapshot {
 public:
  // One partition of the view: its identity and its view's sequence
  // number (every write of the partition up to it is in the view).
  struct PartitionSeq {
    uint64_t id = 0;
    MortonRange range;
    uint64_t seq = 0;
    friend bool operator==(const PartitionSeq&, const PartitionSeq&) = default;
  };

  ~NodeSnapshot();
  NodeSnapshot(const NodeSnapshot&) = delete;
  NodeSnapshot& operator=(const NodeSnapshot&) = delete;

  // The region it was taken for (nullopt: every partition).
  const std::optional<ChunkBox>& region() const { return region_; }
  // Its partitions, in range order.
  size_t partition_count() const { return parts_.size(); }
  const DatabaseSnapshot& partition(size_t i) const { return *parts_[i].snapshot; }
  // The partitions' ids, ranges and sequence numbers, in range order.
  std::vector<PartitionSeq> seqs() const;
  // The highest of the partitions' sequence numbers: with one partition,
  // exactly DatabaseSnapshot::seq(); with several, a number that only says
  // the view is newer than another of the same layout (resume per
  // partition with seqs()).
  uint64_t seq() const;
  // Whether the view holds the chunk (its partition is in the view).
  bool Covers(ChunkKey key) const;

  // Like DatabaseSnapshot::GetChunks over the partitions, keys in order.
  // A key outside the world is OUT_OF_BOUNDS; a key whose partition is not
  // in the view (outside the region's partitions) is NOT_FOUND in
  // read.status: the view cannot say what it held, so a stream reads it
  // live or from a wider snapshot (a key of the world is never
  // WRONG_PARTITION here: this node serves it).
  Status GetChunks(std::span<const ChunkKey> keys,
                   const std::function<void(size_t, const ChunkRead&)>& fn) const;
  // Like DatabaseSnapshot::ScanChunks: the chunks with a record in `box`
  // from code `from` on, in Morton order across the partitions, until fn
  // returns false; only those of the view's partitions. Versions are the
  // partitions' own.
  Status ScanChunks(const ChunkBox& box, uint64_t from,
                    const std::function<bool(ChunkKey, uint64_t)>& fn) const;
  // Like DatabaseSnapshot::ScanRecords over the view's partitions, in
  // Morton order.
  Status ScanRecords(
      const MortonRange& range,
      const std::function<bool(ChunkKey, uint64_t, const DatabaseSnapshot::RecordFn&)>& fn) const;
  // The fills (and fill pieces) of the view's partitions that meet `box`,
  // each once, in sequence order (see the file comment): what a client
  // rasterises the chunks of the box that read as the fills with.
  std::vector<Fill> FillsMeeting(const VoxelBox& box) const;

 private:
  friend StatusOr<std::unique_ptr<NodeSnapshot>> SnapshotOf(Node& node,
                                                            std::optional<ChunkBox> region);
  struct Part {
    PartitionSpec spec;
    // Held so that the snapshot keeps reading it after a split or move
    // replaced it; declared first, so that the snapshot goes before it.
    std::shared_ptr<Database> db;
    std::unique_ptr<DatabaseSnapshot> snapshot;
  };
  NodeSnapshot(const WorldFrame& frame, std::optional<ChunkBox> region)
      : frame_(frame), region_(region) {}
  // The index of the part holding `code`, or parts_.size() if none.
  size_t Find(uint64_t code) const;

  WorldFrame frame_;
  std::optional<ChunkBox> region_;
  std::vector<Part> parts_;  // in range order
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_NODE_SNAPSHOT_H_
