// The shared parts of Database's reads and of DatabaseSnapshot
// (engine/database.h): the registry of live snapshots, and the two helpers
// that turn a chunk into a ChunkRead (a dirty chunk encoded now, a clean one
// zero-copy from the store or rasterised from the fills).
//
// A Database and its snapshots share one SnapshotRegistry, so that either
// may be destroyed first: closing the Database ends every live snapshot's
// read transaction through it (LMDB must have none open when its
// environment closes), and a snapshot destroyed first takes itself out.
//
// Thread-safety: SnapshotRegistry is thread-safe (its own lock, `mu`, a
// leaf: nothing else is taken under it). The helpers are pure functions of
// their arguments.
#ifndef VOXDB_ENGINE_DATABASE_SNAPSHOT_H_
#define VOXDB_ENGINE_DATABASE_SNAPSHOT_H_

#include <cstdint>
#include <set>
#include <vector>

#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/chunk_store.h"
#include "engine/database.h"
#include "engine/fills.h"
#include "engine/mutex.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

struct SnapshotRegistry {
  Mutex mu;
  std::set<DatabaseSnapshot*> live ABSL_GUARDED_BY(mu);
  bool closed ABSL_GUARDED_BY(mu) = false;

  // Lists `snapshot` as live. False when the registry is closed (the
  // Database is closing): the snapshot must not be handed out.
  bool Add(DatabaseSnapshot* snapshot) ABSL_LOCKS_EXCLUDED(mu);
  // Ends every live snapshot's read transaction (before the environment
  // closes); later snapshots are refused.
  void CloseAll() ABSL_LOCKS_EXCLUDED(mu);
};

// The record of a dirty chunk (null: it reads as the fills), encoded now.
std::vector<uint8_t> EncodeDirty(const Chunk* chunk, uint64_t version, const FillSet& fills,
                                 const WorldFrame& frame, ChunkCoord c, const CodecOptions& codec);

// A chunk that is not dirty, as `store` and `fills` have it: its stored
// record, zero-copy; else (not stored, or a fills marker) rasterised from
// the fills into *owned. Fills in read->status, version, record, source.
void ReadClean(const ChunkStore::Snapshot& store, const FillSet& fills, const WorldFrame& frame,
               const CodecOptions& codec, ChunkRead* read, std::vector<uint8_t>* owned);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_DATABASE_SNAPSHOT_H_
