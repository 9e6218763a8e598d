#include "index/node_query.h"

#include <s2/s1angle.h>
#include <s2/s1interval.h>
#include <s2/s2cap.h>
#include <s2/s2cell.h>
#include <s2/s2latlng_rect.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <optional>
#include <queue>
#include <utility>
#include <vector>

#include "engine/chunk.h"
#include "engine/coding.h"
#include "engine/morton_box.h"

namespace voxdb::index {
namespace {

using engine::ChunkKey;
using engine::Node;

using OrderKeyBytes = std::array<uint8_t, kIndexKeySize>;

// A box query over the partitions the box meets, in range order: Morton
// order, so the pages of the partitions follow one another.
StatusOr<QueryResult> QueryBox(const Node::Layout& layout, const Region& region,
                               const engine::ChunkBox& chunks, const QueryOptions& options) {
  QueryResult result;
  std::optional<uint64_t> after;  // the cursor: the last code listed
  if (!options.cursor.empty()) after = engine::DecodeBigEndian64(options.cursor.data());
  QueryOptions o;
  o.band = options.band;
  o.cursor = options.cursor;
  bool more = false;
  for (const size_t p : layout.ranges.Meeting(chunks)) {
    // A partition wholly at or before the cursor has nothing after it.
    if (after && layout.ranges.range(p).end - 1 <= *after) continue;
    engine::Database& db = *layout.parts[p].db;
    if (result.chunks.size() == options.limit) {
      // The page is full: it has a next page if one more chunk follows.
      o.limit = 1;
      VOXDB_ASSIGN_OR_RETURN(QueryResult r, Query(db, region, o));
      if (!r.chunks.empty()) {
        more = true;
        break;
      }
      continue;
    }
    o.limit = options.limit - static_cast<uint32_t>(result.chunks.size());
    VOXDB_ASSIGN_OR_RETURN(QueryResult r, Query(db, region, o));
    result.chunks.insert(result.chunks.end(), r.chunks.begin(), r.chunks.end());
    if (!r.next_cursor.empty()) {  // it filled the page and has more
      more = true;
      break;
    }
  }
  if (more) {
    result.next_cursor.resize(8);
    engine::EncodeBigEndian64(result.next_cursor.data(), result.chunks.back().key.code());
  }
  return result;
}

// One partition's answer to a cell-ordered query, read `batch` hits at a
// time.
struct Stream {
  engine::Database* db = nullptr;
  std::vector<ChunkHit> hits;
  std::vector<OrderKeyBytes> keys;  // of hits
  size_t at = 0;                    // the next hit
  std::vector<uint8_t> cursor;      // the partition's next page; empty: none
};

// Reads the stream's next batch: the hits after o.cursor, o.limit of them.
Status Fetch(const engine::WorldFrame& frame, const Region& region, const QueryOptions& o,
             Stream* s) {
  VOXDB_ASSIGN_OR_RETURN(QueryResult r, Query(*s->db, region, o));
  s->hits = std::move(r.chunks);
  s->keys.clear();
  s->keys.reserve(s->hits.size());
  for (const ChunkHit& h : s->hits) s->keys.push_back(OrderKey(ChunkCell(frame, h.key), h.key));
  s->at = 0;
  s->cursor = std::move(r.next_cursor);
  return absl::OkStatus();
}

// A radius, cell or rect query: every partition's answer, merged by order
// key.
StatusOr<QueryResult> QueryCells(const engine::WorldFrame& frame, const Node::Layout& layout,
                                 const std::vector<size_t>& parts, const Region& region,
                                 const QueryOptions& options, uint32_t batch) {
  QueryOptions o;
  o.band = options.band;
  o.limit = std::min(batch, options.limit);
  std::vector<Stream> streams(parts.size());
  auto later = [&](size_t a, size_t b) {  // a's next hit after b's: a min-heap
    return std::memcmp(streams[a].keys[streams[a].at].data(), streams[b].keys[streams[b].at].data(),
                       kIndexKeySize) > 0;
  };
  std::priority_queue<size_t, std::vector<size_t>, decltype(later)> heap(later);
  for (size_t p = 0; p < streams.size(); ++p) {
    streams[p].db = layout.parts[parts[p]].db.get();
    o.cursor = options.cursor;
    VOXDB_RETURN_IF_ERROR(Fetch(frame, region, o, &streams[p]));
    if (!streams[p].hits.empty()) heap.push(p);
  }
  QueryResult result;
  result.chunks.reserve(std::min<uint32_t>(options.limit, 16384));
  OrderKeyBytes last{};
  while (!heap.empty() && result.chunks.size() < options.limit) {
    const size_t p = heap.top();
    heap.pop();
    Stream& s = streams[p];
    result.chunks.push_back(s.hits[s.at]);
    last = s.keys[s.at];
    if (++s.at == s.hits.size()) {
      if (s.cursor.empty()) continue;  // the partition has no more
      o.cursor = s.cursor;
      VOXDB_RETURN_IF_ERROR(Fetch(frame, region, o, &s));
      if (s.hits.empty()) continue;  // what followed was deleted meanwhile
    }
    heap.push(p);
  }
  // A next page when one more hit follows the page's last.
  if (!heap.empty()) result.next_cursor.assign(last.begin(), last.end());
  return result;
}

// The chunk index of a position `metres` along an axis of `chunks` chunks,
// moved by `margin` chunks and clamped to the grid.
uint32_t ChunkIndex(double metres, double chunk_m, double margin, uint32_t chunks) {
  const double c = std::floor(metres / chunk_m) + margin;
  return static_cast<uint32_t>(std::clamp(c, 0.0, static_cast<double>(chunks) - 1));
}

// The partitions a radius, cell or rect query's chunks and fills can lie
// in: those meeting the chunk boxes (two when the region crosses the
// antimeridian) of the region's lat/lon bound and the band, grown by two
// chunks on each side. A chunk in the region has its centre in the bound;
// a fill piece that meets the region and band has a chunk in the boxes
// (its chunks are a box, all in its partition). The margin covers the
// rounding of the bound and the clamping of chunk centres at the world's
// edges (the world is a few metres wider than the sphere).
std::vector<size_t> CellQueryPartitions(const engine::WorldFrame& frame, const Node::Layout& layout,
                                        const Region& region,
                                        const std::optional<AltitudeBand>& band) {
  S2LatLngRect bound = S2LatLngRect::Full();
  if (const auto* r = std::get_if<RadiusRegion>(&region)) {
    const double angle = r->radius_m / engine::kEarthRadiusM;
    if (angle < M_PI) {
      bound = S2Cap(r->centre.Normalized().ToPoint(), S1Angle::Radians(angle)).GetRectBound();
    }
  } else if (const auto* c = std::get_if<CellRegion>(&region)) {
    bound = S2Cell(c->cell).GetRectBound();
  } else {
    bound = std::get<RectRegion>(region).rect;
  }
  const double chunk_m = frame.voxel_size_m() * engine::kChunkEdge;
  auto x_of = [&](double lon_rad) { return frame.GeoToMetres({0, lon_rad * 180 / M_PI, 0}).x; };
  const double y_lo = frame.GeoToMetres({bound.lat_lo().degrees(), 0, 0}).y;
  const double y_hi = frame.GeoToMetres({bound.lat_hi().degrees(), 0, 0}).y;
  engine::ChunkBox box;
  box.lo.y = ChunkIndex(y_lo, chunk_m, -2, frame.chunks_y());
  box.hi.y = ChunkIndex(y_hi, chunk_m, 2, frame.chunks_y());
  box.lo.z = 0;
  box.hi.z = frame.chunks_z() - 1;
  if (band) {
    // Chunk z holds altitudes [AltitudeOfZ(128 z), AltitudeOfZ(128 (z + 1))).
    const double sea_m = -frame.AltitudeOfZ(0);
    box.lo.z = ChunkIndex(band->min_m + sea_m, chunk_m, -1, frame.chunks_z());
    box.hi.z = ChunkIndex(band->max_m + sea_m, chunk_m, 1, frame.chunks_z());
  }
  std::vector<std::pair<double, double>> xs;  // metres, west to east
  const S1Interval lng = bound.lng();
  if (lng.is_full() || lng.hi() - lng.lo() >= 2 * M_PI - 1e-9) {
    xs.push_back({-1e300, 1e300});
  } else if (lng.is_inverted()) {  // across the antimeridian
    xs.push_back({x_of(lng.lo()), 1e300});
    xs.push_back({-1e300, x_of(lng.hi())});
  } else {
    xs.push_back({x_of(lng.lo()), x_of(lng.hi())});
  }
  // A box at x = 0 starts at longitude -180, the meridian 180 (its
  // footprint, BoxFootprint): a region at that meridian meets fills at both
  // edges of the world.
  if (lng.Contains(M_PI)) {
    xs.push_back({-1e300, x_of(-M_PI)});
    xs.push_back({x_of(M_PI), 1e300});
  }
  std::vector<size_t> parts;
  for (const auto& [west, east] : xs) {
    box.lo.x = ChunkIndex(std::max(west, -1e18), chunk_m, -2, frame.chunks_x());
    box.hi.x = ChunkIndex(std::min(east, 1e18), chunk_m, 2, frame.chunks_x());
    for (const size_t p : layout.ranges.Meeting(box)) parts.push_back(p);
  }
  std::sort(parts.begin(), parts.end());
  parts.erase(std::unique(parts.begin(), parts.end()), parts.end());
  return parts;
}

// The fills of the partitions `parts` that meet the region and band, by
// (fill_seq, partition).
std::vector<engine::Fill> NodeFills(const engine::WorldFrame& frame, const Node::Layout& layout,
                                    const std::vector<size_t>& parts, const Region& region,
                                    const std::optional<AltitudeBand>& band) {
  std::vector<std::pair<uint64_t, engine::Fill>> all;  // (partition, fill)
  for (const size_t p : parts) {
    const std::shared_ptr<const engine::FillSet> fills = layout.parts[p].db->Fills();
    for (const engine::Fill& f : fills->fills()) {
      if (FillInRegion(frame, f, region, band)) all.emplace_back(p, f);
    }
  }
  // Each partition's fills are in seq order already: a stable sort by seq
  // keeps them so, and ties in partition order.
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& a, const auto& b) { return a.second.seq < b.second.seq; });
  std::vector<engine::Fill> out;
  out.reserve(all.size());
  for (auto& [p, f] : all) out.push_back(f);
  return out;
}

}  // namespace

uint32_t QueryMergeBatch(size_t partitions, uint32_t limit) {
  constexpr uint64_t kMergeHits = uint64_t{1} << 18;
  if (partitions == 0 || uint64_t{limit} * partitions <= kMergeHits) return std::max(limit, 1u);
  const uint32_t share = static_cast<uint32_t>(kMergeHits / partitions);
  return std::max(share, std::min(limit, 64u));
}

StatusOr<QueryResult> Query(Node& node, const Region& region, const QueryOptions& options) {
  return QueryWithBatch(node, region, options,
                        QueryMergeBatch(node.partition_count(), options.limit));
}

StatusOr<QueryResult> QueryWithBatch(Node& node, const Region& region, const QueryOptions& options,
                                     uint32_t batch) {
  const engine::WorldFrame& frame = node.frame();
  VOXDB_RETURN_IF_ERROR(CheckQuery(frame, region, options));
  // Held to the end: the partitions' Databases stay open meanwhile.
  const std::shared_ptr<const Node::Layout> layout = node.layout();
  std::vector<size_t> parts;
  StatusOr<QueryResult> result;
  if (const auto* b = std::get_if<BoxRegion>(&region)) {
    const engine::ChunkBox chunks = engine::ChunksCovering(frame, b->box);
    parts = layout->ranges.Meeting(chunks);
    result = QueryBox(*layout, region, chunks, options);
  } else {
    parts = CellQueryPartitions(frame, *layout, region, options.band);
    result = QueryCells(frame, *layout, parts, region, options, std::max(batch, 1u));
  }
  if (result.ok() && options.cursor.empty()) {
    result->fills = NodeFills(frame, *layout, parts, region, options.band);
  }
  return result;
}

Status ForEachChunkInBox(Node& node, const engine::ChunkBox& box,
                         const std::function<void(ChunkKey)>& fn) {
  const std::shared_ptr<const Node::Layout> layout = node.layout();
  for (const size_t p : layout->ranges.Meeting(box)) {
    VOXDB_RETURN_IF_ERROR(ForEachChunkInBox(*layout->parts[p].db, box, fn));
  }
  return absl::OkStatus();
}

StatusOr<uint64_t> ColumnCount(Node& node) {
  const std::shared_ptr<const Node::Layout> layout = node.layout();
  uint64_t sum = 0;
  for (const Node::Part& part : layout->parts) {
    VOXDB_ASSIGN_OR_RETURN(const uint64_t n, ColumnCount(*part.db));
    sum += n;
  }
  return sum;
}

Status EnsureBuilt(Node* node, const std::function<void(std::string_view why)>& starting) {
  const std::shared_ptr<const Node::Layout> layout = node->layout();
  for (const Node::Part& part : layout->parts) {
    VOXDB_RETURN_IF_ERROR(EnsureBuilt(part.db.get(), starting));
  }
  return absl::OkStatus();
}

Status Rebuild(Node* node, uint64_t* chunks) {
  *chunks = 0;
  const std::shared_ptr<const Node::Layout> layout = node->layout();
  for (const Node::Part& part : layout->parts) {
    uint64_t n = 0;
    VOXDB_RETURN_IF_ERROR(Rebuild(part.db.get(), &n));
    *chunks += n;
  }
  return absl::OkStatus();
}

}  // namespace voxdb::index
