// The S2 index's part of `voxdb verify`: a VerifyHook (engine/verify.h)
// that checks meta.s2index_format and the s2index table against the stored
// chunks, so that the engine's verifier need not know the index's format
// (index/s2_index.h describes it).
//
//   meta     s2index_format, when present, is this build's (kIndexFormat)
//            or an older one (a warning: voxdbd rebuilds it); a newer one
//            is a problem;
//   s2index  (once built) every stored chunk that is not a fills marker has
//            exactly one item, holding its version, in the entry
//            IndexKey(ChunkCell(frame, key), ColumnId(its coord)), and there
//            are no other items; entries decode.
//
// Example:
//   index::S2IndexVerifyHook hook;
//   VOXDB_ASSIGN_OR_RETURN(auto report, engine::VerifyStore(store, {.hook = &hook}));
//
// Thread-safety: one hook per VerifyStore call.
#ifndef VOXDB_INDEX_S2_INDEX_VERIFY_H_
#define VOXDB_INDEX_S2_INDEX_VERIFY_H_

#include <cstdint>

#include "engine/morton.h"
#include "engine/verify.h"

namespace voxdb::index {

class S2IndexVerifyHook : public engine::VerifyHook {
 public:
  // Sets report().index_built / index_outdated from the meta key.
  void CheckMeta(engine::VerifyPass& pass) override;
  // Looks up the item a stored chunk must have in its column's entry.
  void CheckChunk(engine::VerifyPass& pass, engine::ChunkKey key, uint64_t version) override;
  // Every item must belong to a stored chunk that is not a fills marker,
  // under that chunk's cell. (Missing items and versions: CheckChunk.)
  void CheckTables(engine::VerifyPass& pass) override;
};

}  // namespace voxdb::index

#endif  // VOXDB_INDEX_S2_INDEX_VERIFY_H_
