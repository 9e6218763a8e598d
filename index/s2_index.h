// The S2 cell -> chunk secondary index and the spatial queries on it
// (DESIGN.md section 5).
//
// Index entries live in the store's s2index table:
//
//   key   = S2 cell id (u64, big-endian) of the chunk's centre at the leaf
//           level 30, then the chunk's Morton code (u64, big-endian)
//   value = the chunk's version (u64, little-endian)
//
// so every S2 cell, at any level, is one contiguous key range
// [range_min, range_max] and a region's covering is a handful of cursor
// scans. The flusher keeps the index in the same LMDB transaction as the
// chunks (S2Index is an engine::ChunkObserver); a fills marker or a deleted
// chunk has no entry. Rebuild() recreates it from the chunks.
//
// A query's answer is exact for these definitions (engine/FORMAT.md and
// protocol/PROTOCOL.md, "Queries"):
//   - a chunk's position is the centre of its voxel box (clipped to the
//     world), as latitude/longitude on the sphere of the world frame;
//   - radius, cell and rect queries take the chunks whose centre lies in the
//     region; a box query the chunks that intersect the voxel box;
//   - an altitude band [min_m, max_m] keeps the chunks whose vertical extent
//     [bottom, top) meets it;
//   - a fill is reported when its footprint (the lat/lon rectangle of its
//     voxel box) meets the region and its vertical extent meets the band.
// The newest state counts: chunks edited but not flushed yet are merged in
// from the cache (a deleted one is left out).
//
// Results come in a deterministic order (index key order: leaf cell, then
// Morton code; Morton code for box queries), `limit` per page, with a cursor
// for the next page. Fills come with the first page.
//
// Thread-safety: S2Index's observer methods run on the flusher thread;
// Query and Rebuild may be called from any thread.
#ifndef VOXDB_INDEX_S2_INDEX_H_
#define VOXDB_INDEX_S2_INDEX_H_

#include <s2/s2cell_id.h>
#include <s2/s2latlng.h>
#include <s2/s2latlng_rect.h>
#include <s2/s2point.h>

#include <cstdint>
#include <optional>
#include <variant>
#include <vector>

#include "engine/database.h"
#include "engine/lod.h"
#include "engine/world_frame.h"

namespace voxdb::index {

inline constexpr int kIndexLevel = S2CellId::kMaxLevel;  // leaf cells
inline constexpr size_t kIndexKeySize = 16;

// The chunk's centre, as the index sees it.
S2LatLng ChunkCentre(const engine::WorldFrame& frame, engine::ChunkKey key);
// Its leaf cell.
S2CellId ChunkCell(const engine::WorldFrame& frame, engine::ChunkKey key);
// Altitudes in metres of the chunk's bottom and top faces.
std::pair<double, double> ChunkAltitudes(const engine::WorldFrame& frame, engine::ChunkKey key);
// The lat/lon rectangle a voxel box covers.
S2LatLngRect BoxFootprint(const engine::WorldFrame& frame, const engine::VoxelBox& box);

// Keys of the s2index table.
std::array<uint8_t, kIndexKeySize> IndexKey(S2CellId cell, engine::ChunkKey key);

class S2Index : public engine::ChunkObserver {
 public:
  explicit S2Index(const engine::WorldFrame& frame) : frame_(frame) {}
  void OnChunkStored(engine::ChunkKey key, uint64_t version, engine::WriteBatch* batch) override;
  void OnChunkRemoved(engine::ChunkKey key, engine::WriteBatch* batch) override;

 private:
  engine::WorldFrame frame_;
};

// Rebuilds the whole index from the stored chunks, in one transaction
// (flushes wait meanwhile). *entries gets the number of index entries.
Status Rebuild(engine::Database* db, uint64_t* entries);
// Rebuilds the index if the store has never had one (a database created
// before the index existed). Call once after opening.
Status EnsureBuilt(engine::Database* db);

// --- Queries -----------------------------------------------------------------

struct RadiusRegion {
  S2LatLng centre;
  double radius_m = 0;  // >= 0; past half the circumference: the whole sphere
};
struct CellRegion {
  S2CellId cell;
};
struct RectRegion {
  S2LatLngRect rect;  // lng.lo > lng.hi: it crosses the antimeridian
};
struct BoxRegion {
  engine::VoxelBox box;
};
using Region = std::variant<RadiusRegion, CellRegion, RectRegion, BoxRegion>;

struct AltitudeBand {
  double min_m = 0, max_m = 0;  // inclusive
};

struct QueryOptions {
  std::optional<AltitudeBand> band;
  uint32_t limit = 1000;        // chunks per page, >= 1
  std::vector<uint8_t> cursor;  // empty: the first page
};

struct ChunkHit {
  engine::ChunkKey key;
  uint64_t version = 0;
  friend bool operator==(const ChunkHit&, const ChunkHit&) = default;
};

struct QueryResult {
  std::vector<ChunkHit> chunks;
  std::vector<engine::Fill> fills;   // the first page only
  std::vector<uint8_t> next_cursor;  // empty: no more pages
};

// INVALID for a malformed region, band, limit or cursor; OUT_OF_BOUNDS for
// a box outside the world.
StatusOr<QueryResult> Query(engine::Database& db, const Region& region,
                            const QueryOptions& options);

// A query at LOD level `level` (1..lod.levels()): the distinct level-`level`
// ancestors (node code = chunk code >> 3 * level) of the chunks the level-0
// query answers, in node code order, each with the version of its last
// built LOD record (0: never built yet; see LodPyramid::DirtyCount), paged
// by options.limit with a cursor (the next node code, 8 bytes big-endian).
// Fills come with the first page, as at level 0. Every page evaluates the
// whole level-0 answer: INVALID when it holds more than
// kMaxLodQueryChunks chunks (ask a smaller region or a coarser level's
// region). INVALID for a bad level or cursor.
inline constexpr uint64_t kMaxLodQueryChunks = uint64_t{1} << 22;
StatusOr<QueryResult> QueryLod(engine::Database& db, engine::LodPyramid& lod, int level,
                               const Region& region, const QueryOptions& options);

// Whether the chunk / fill is in the region and band, by the definitions
// above, without the index: the oracle of the tests and the final filter of
// Query.
bool ChunkInRegion(const engine::WorldFrame& frame, engine::ChunkKey key, const Region& region,
                   const std::optional<AltitudeBand>& band);
bool FillInRegion(const engine::WorldFrame& frame, const engine::Fill& fill, const Region& region,
                  const std::optional<AltitudeBand>& band);

}  // namespace voxdb::index

#endif  // VOXDB_INDEX_S2_INDEX_H_
