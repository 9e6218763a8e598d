// The S2 cell -> chunk secondary index and the spatial queries on it
// (docs/DESIGN.md, section 8).
//
// Index entries live in the store's s2index table, one per column of
// stored chunks (the chunks with one x, y: they share a centre, so a cell):
//
//   key   = S2 cell id (u64, big-endian) of the column's centre at the leaf
//           level 30, then the column id x << 21 | y (u64, big-endian)
//   value = for each stored chunk of the column, by increasing z:
//           z (u32, little-endian), version (u64, little-endian)
//
// so every S2 cell, at any level, is one contiguous key range
// [range_min, range_max] and a region's covering is a handful of cursor
// scans. The flusher keeps the index in the same LMDB transaction as the
// chunks (S2Index is an engine::ChunkObserver): one read-modify-write per
// column a flush touches. A fills marker or a deleted chunk has no item.
// Rebuild() recreates the index from the chunks.
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
// Results come in a deterministic order (index order: leaf cell, column,
// z; Morton code for box queries), `limit` per page, with a cursor for the
// next page (OrderKey of the last chunk; its code for box queries). Fills
// come with the first page.
// index/node_query.h runs the same queries over a node's partitions.
//
// Thread-safety: S2Index's observer methods run on the flusher thread;
// Query and Rebuild may be called from any thread.
#ifndef VOXDB_INDEX_S2_INDEX_H_
#define VOXDB_INDEX_S2_INDEX_H_

#include <s2/s2cap.h>
#include <s2/s2cell_id.h>
#include <s2/s2latlng.h>
#include <s2/s2latlng_rect.h>
#include <s2/s2point.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/database.h"
#include "engine/lod.h"
#include "engine/morton_box.h"
#include "engine/world_frame.h"

namespace voxdb::index {

inline constexpr int kIndexLevel = S2CellId::kMaxLevel;  // leaf cells
inline constexpr size_t kIndexKeySize = 16;
inline constexpr size_t kIndexItemSize = 12;  // z u32 + version u64
// meta.s2index_format of the index this build keeps (engine/FORMAT.md).
// Format 1 (one entry per chunk) is rebuilt by EnsureBuilt.
inline constexpr uint32_t kIndexFormat = 2;

// The chunk's centre, as the index sees it.
S2LatLng ChunkCentre(const engine::WorldFrame& frame, engine::ChunkKey key);
// Its leaf cell.
S2CellId ChunkCell(const engine::WorldFrame& frame, engine::ChunkKey key);
// Altitudes in metres of the chunk's bottom and top faces.
std::pair<double, double> ChunkAltitudes(const engine::WorldFrame& frame, engine::ChunkKey key);
// The lat/lon rectangle a voxel box covers: never empty, always valid for
// S2 (a box at x = 0 starts at longitude -180, one reaching the world's
// east edge ends at 180; the whole width is every longitude).
S2LatLngRect BoxFootprint(const engine::WorldFrame& frame, const engine::VoxelBox& box);

// A column's id: x << 21 | y.
constexpr uint64_t ColumnId(const engine::ChunkCoord& c) {
  return uint64_t{c.x} << engine::kMortonAxisBits | c.y;
}
// Keys of the s2index table.
std::array<uint8_t, kIndexKeySize> IndexKey(S2CellId cell, uint64_t column);
// The order of cell-ordered query results: the leaf cell (u64 BE), then
// column id << 21 | z (u64 BE). Ascending index keys and z give ascending
// order keys.
std::array<uint8_t, kIndexKeySize> OrderKey(S2CellId cell, engine::ChunkKey key);

// One chunk of an index entry's value.
struct IndexItem {
  uint32_t z = 0;
  uint64_t version = 0;
  friend bool operator==(const IndexItem&, const IndexItem&) = default;
};
// Parses a value. False unless it holds one or more items in strictly
// increasing z, each z <= kMaxChunkAxis. Either way *items gets what can
// be read: the whole items with z <= kMaxChunkAxis, sorted by z, one per z
// (the last one), so that a damaged entry still serves its other chunks
// and the next flush of the column rewrites it well formed.
bool DecodeIndexValue(std::span<const uint8_t> value, std::vector<IndexItem>* items);
std::vector<uint8_t> EncodeIndexValue(std::span<const IndexItem> items);

class S2Index : public engine::ChunkObserver {
 public:
  explicit S2Index(const engine::WorldFrame& frame) : frame_(frame) {}
  void OnFlush(std::span<const engine::FlushedChunk> chunks, engine::WriteBatch* batch) override;

 private:
  engine::WorldFrame frame_;
};

// Rebuilds the whole index from the stored chunks, in one transaction
// (flushes wait meanwhile). *chunks gets the number of chunks indexed.
Status Rebuild(engine::Database* db, uint64_t* chunks);
// Rebuilds the index if the store has none (a database created before the
// index existed) or has one of an older format. UNSUPPORTED for a newer
// format. Call once after opening.
// `starting`, when set, is told why just before a rebuild of a database
// with stored chunks starts (it is one write transaction over them all).
Status EnsureBuilt(engine::Database* db,
                   const std::function<void(std::string_view why)>& starting = {});
// The index's entries: one per column of stored chunks (STATS
// index_columns).
StatusOr<uint64_t> ColumnCount(engine::Database& db);

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

// Regions from a client's numbers. s2geometry aborts the process (a failed
// CHECK) on a latitude past +-90 degrees, a longitude past +-180, a
// longitude interval that starts at -180 without ending at 180, or an
// invalid cell id; these build a region only from values that are safe,
// and return INVALID naming the limit otherwise. NaN and infinities are
// INVALID. A longitude of -180 is the same meridian as 180: a rectangle
// from -180 to -180 (or from 180 to -180) is that meridian; from -180 to 180
// it is every longitude. A rectangle whose lon_lo > lon_hi crosses the
// antimeridian.
StatusOr<Region> MakeRadiusRegion(double lat_deg, double lon_deg, double radius_m);
StatusOr<Region> MakeCellRegion(uint64_t cell_id);
StatusOr<Region> MakeRectRegion(double lat_lo_deg, double lon_lo_deg, double lat_hi_deg,
                                double lon_hi_deg);

// OK when Query accepts the region and options; else the error it answers
// (INVALID, or OUT_OF_BOUNDS for a box outside the world), checked in the
// same order. The cursor's size is checked, not its content.
Status CheckQuery(const engine::WorldFrame& frame, const Region& region,
                  const QueryOptions& options);

// INVALID for a malformed region, band, limit or cursor (a region S2 would
// abort on: an invalid centre, cell or rectangle, a NaN or negative
// radius); OUT_OF_BOUNDS for a box outside the world.
StatusOr<QueryResult> Query(engine::Database& db, const Region& region,
                            const QueryOptions& options);

// The chunks with a record inside `box` (stored or written, not deleted:
// the chunks a box query lists, without the fills), each once, in no
// particular order: fn(key). No versions, and so much cheaper than Query on
// big boxes: it reads LMDB keys and record sizes, never a record (the
// record of a chunk of bricks has overflow pages of its own: touching each
// is a cache and a TLB miss).
Status ForEachChunkInBox(engine::Database& db, const engine::ChunkBox& box,
                         const std::function<void(engine::ChunkKey)>& fn);

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

// OK when queries and subscriptions accept the region and band (INVALID,
// or OUT_OF_BOUNDS for a box outside the world, otherwise).
Status CheckRegionAndBand(const engine::WorldFrame& frame, const Region& region,
                          const std::optional<AltitudeBand>& band);

// Whether the chunk / fill is in the region and band, by the definitions
// above, without the index: the oracle of the tests and the final filter of
// Query. False for a region CheckRegionAndBand refuses.
bool ChunkInRegion(const engine::WorldFrame& frame, engine::ChunkKey key, const Region& region,
                   const std::optional<AltitudeBand>& band);
bool FillInRegion(const engine::WorldFrame& frame, const engine::Fill& fill, const Region& region,
                  const std::optional<AltitudeBand>& band);

// What the region tests need of a chunk, computed once for many regions
// (its lat/lon centre only when a region asks). One thread at a time.
class ChunkFacts {
 public:
  ChunkFacts(const engine::WorldFrame& frame, engine::ChunkKey key);
  const engine::VoxelBox& voxels() const { return voxels_; }
  double bottom_m() const { return bottom_m_; }
  double top_m() const { return top_m_; }
  const S2LatLng& centre() const;
  const S2Point& point() const;
  S2CellId cell() const;

 private:
  void Geo() const;
  const engine::WorldFrame* frame_;
  engine::ChunkKey key_;
  engine::VoxelBox voxels_;
  double bottom_m_ = 0, top_m_ = 0;
  mutable bool geo_ = false;
  mutable S2LatLng centre_;
  mutable S2Point point_;
};

// ChunkInRegion against one region for many chunks, with the region's S2
// shapes built once (ChunkInRegion is this, once).
class RegionMatcher {
 public:
  RegionMatcher(const Region& region, const std::optional<AltitudeBand>& band);
  bool Contains(const ChunkFacts& chunk) const;

 private:
  Region region_;
  std::optional<AltitudeBand> band_;
  bool valid_ = true;         // false: a region S2 cannot take; matches nothing
  std::optional<S2Cap> cap_;  // kRadius, unless the whole sphere
  bool everything_ = false;   // kRadius over the whole sphere
};

}  // namespace voxdb::index

#endif  // VOXDB_INDEX_S2_INDEX_H_
