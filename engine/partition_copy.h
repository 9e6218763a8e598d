// Copies a partition's chunks and fills inside some Morton ranges into new
// LMDB environments: the data path of an online split (one new environment
// per half) and of a move (one, over the whole range).
//
// Two passes, so that writes go on during the first:
//   1. Copy(first): everything in a snapshot of the source, while the
//      source keeps taking writes;
//   2. CatchUp(last): with the source's writes stopped, what changed since
//      the first snapshot (by chunk version: a chunk whose version differs
//      is copied again, one that no longer has a record is deleted, and new
//      fills are added). Its cost is a scan of the keys plus the changed
//      chunks, not a second copy.
// Records keep their versions, fills their sequence numbers, each new
// environment records its partition identity and inherited epochs, and its
// last_seq is the last snapshot's, so a chunk's version keeps
// growing across the split or move (engine/FORMAT.md, "Node layout").
//
// The new environments are not a Database yet: the caller opens them once
// the node's manifest names them (engine/node.h). What observers derive
// from chunks (the S2 index, LOD records) is not copied: their owners
// rebuild it in the new environment.
//
// Thread-safety: one thread at a time.
#ifndef VOXDB_ENGINE_PARTITION_COPY_H_
#define VOXDB_ENGINE_PARTITION_COPY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/chunk_store.h"
#include "engine/database.h"
#include "engine/morton.h"
#include "engine/partition.h"

namespace voxdb::engine {

struct CopyTarget {
  MortonRange range;
  std::string dir;  // created; must not hold a database yet
  // Recorded in the new environment's meta (engine/partition.h): the
  // partition it will be, and the epochs it inherits.
  PartitionIdentity identity;
  EpochHistory epochs;
};

struct CopyProgress {
  uint64_t chunks = 0;  // records written (both passes)
  uint64_t bytes = 0;   // their encoded bytes
  uint64_t deleted = 0;
  uint64_t fills = 0;
};

class PartitionCopy {
 public:
  // Creates the targets' environments (store options: the source's frame,
  // no create over an existing database: INVALID if a target holds one).
  static StatusOr<std::unique_ptr<PartitionCopy>> Create(std::vector<CopyTarget> targets,
                                                         const WorldFrame& frame,
                                                         const StoreOptions& store);
  ~PartitionCopy();

  // Pass 1. REQUIRES: called once, before CatchUp.
  Status Copy(const DatabaseSnapshot& first);
  // Pass 2: brings the targets to `last`, a later snapshot of the same
  // source, then syncs them. REQUIRES: no write reaches the source after
  // `last` was taken (else the targets miss it).
  Status CatchUp(const DatabaseSnapshot& last);

  const CopyProgress& progress() const { return progress_; }

 private:
  struct Target {
    CopyTarget spec;
    std::unique_ptr<ChunkStore> store;
    std::vector<std::pair<uint64_t, uint64_t>> copied;  // (code, version), by code
    uint64_t fill_seq = 0;                              // newest fill copied
  };
  explicit PartitionCopy(std::vector<Target> targets, const WorldFrame& frame);

  // Writes the records of `keys` (read from `snap`) into `t`, batch by batch.
  Status CopyChunks(const DatabaseSnapshot& snap, Target& t, const std::vector<uint64_t>& keys);
  // The fills of `snap` newer than t.fill_seq that touch t's range;
  // last_seq; the identity and epochs.
  Status CopyFillsAndSeq(const DatabaseSnapshot& snap, Target& t);

  std::vector<Target> targets_;
  WorldFrame frame_;
  CopyProgress progress_;
  uint64_t first_seq_ = 0;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_PARTITION_COPY_H_
