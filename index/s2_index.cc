#include "index/s2_index.h"

#include <s2/r1interval.h>
#include <s2/s1angle.h>
#include <s2/s1chord_angle.h>
#include <s2/s1interval.h>
#include <s2/s2cap.h>
#include <s2/s2cell.h>
#include <s2/s2cell_union.h>
#include <s2/s2region_coverer.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/format.h"
#include "engine/morton_box.h"
#include "engine/status.h"
#include "engine/voxel_box.h"

namespace voxdb::index {
namespace {

using engine::AsBytes;
using engine::ChunkKey;
using engine::DecodeBigEndian64;
using engine::EncodeBigEndian64;
using engine::kMetaIndexFormat;
using engine::Table;

constexpr uint32_t kMaxLimit = 65536;
constexpr int kCoveringCells = 128;
// Cells below ~10 m gain nothing: chunk centres are 32 m apart.
constexpr int kCoveringMaxLevel = 20;
// The covering is computed for the region grown by this much, so that a
// point on a covering cell's boundary (whose leaf cell may lie on the other
// side) is never missed; the exact test decides.
constexpr double kCoveringSlackRad = 1e-12;

engine::VoxelBox ChunkVoxels(const engine::WorldFrame& frame, ChunkKey key) {
  return frame.VoxelsOfChunk(key.coord());
}

bool BandMeets(const std::optional<AltitudeBand>& band, double bottom, double top) {
  return !band || (bottom <= band->max_m && top > band->min_m);
}

// --- Building S2 values safely ---------------------------------------------
// s2geometry CHECKs its arguments (Debian's libs2 aborts on a failed one):
// everything below hands it only values in range.

bool IsLatitude(double deg) { return deg >= -90 && deg <= 90; }     // false for NaN
bool IsLongitude(double deg) { return deg >= -180 && deg <= 180; }  // false for NaN

double LatRadians(double deg) {
  return std::clamp(S1Angle::Degrees(deg).radians(), -M_PI_2, M_PI_2);
}
double LngRadians(double deg) { return std::clamp(S1Angle::Degrees(deg).radians(), -M_PI, M_PI); }

// The longitudes from lo east to hi (radians in [-pi, pi]; lo > hi crosses
// the antimeridian). -pi is the meridian pi: S1Interval takes it only as
// the start of the full circle.
S1Interval LngInterval(double lo, double hi) {
  lo = std::clamp(lo, -M_PI, M_PI);
  hi = std::clamp(hi, -M_PI, M_PI);
  if (lo == -M_PI && hi == M_PI) return S1Interval::Full();
  if (lo == -M_PI) lo = M_PI;
  if (hi == -M_PI) hi = M_PI;
  return S1Interval(lo, hi);
}

// The frame's lat/lon (already clamped to the globe) as an S2LatLng.
S2LatLng ToLatLng(const engine::GeoCoord& g) {
  return S2LatLng::FromDegrees(std::clamp(g.lat_deg, -90.0, 90.0),
                               std::clamp(g.lon_deg, -180.0, 180.0));
}

// CheckRegion without the frame: OK for every box.
Status CheckS2Region(const Region& region) {
  if (const auto* r = std::get_if<RadiusRegion>(&region)) {
    if (!r->centre.is_valid() || !std::isfinite(r->radius_m) || r->radius_m < 0) {
      return absl::InvalidArgumentError(
          "a radius query needs a valid lat/lon and a finite radius >= 0");
    }
  } else if (const auto* c = std::get_if<CellRegion>(&region)) {
    if (!c->cell.is_valid()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%016x is not a valid S2 cell id (face 0..5, level 0..30)", c->cell.id()));
    }
  } else if (const auto* q = std::get_if<RectRegion>(&region)) {
    if (!q->rect.is_valid() || q->rect.is_empty()) {
      return absl::InvalidArgumentError(
          "a rectangle needs lat in [-90, 90] with lo <= hi and lon in [-180, 180]");
    }
  }
  return absl::OkStatus();
}

S1Angle RadiusAngle(double radius_m) { return S1Angle::Radians(radius_m / engine::kEarthRadiusM); }
bool IsFullSphere(double radius_m) { return radius_m / engine::kEarthRadiusM >= M_PI; }

// A chunk record's encoding and version, read from its header (the CRC is
// checked when the chunk itself is read).
// Whether `code` is among the dirty chunks (Database::DirtyChunks, in
// Morton order): those read from the cache, not the store.
bool InDirty(const std::vector<engine::Database::DirtyChunk>& dirty, uint64_t code) {
  auto it = std::lower_bound(
      dirty.begin(), dirty.end(), code,
      [](const engine::Database::DirtyChunk& d, uint64_t c) { return d.key.code() < c; });
  return it != dirty.end() && it->key.code() == code;
}

bool StoredChunkVersion(std::span<const uint8_t> record, uint64_t* version) {
  const std::optional<engine::ChunkRecordHeader> header = engine::PeekChunkHeader(record);
  if (!header || header->encoding == engine::ChunkEncoding::kFills) return false;
  *version = header->version;
  return true;
}

Status CheckOptions(const QueryOptions& o, size_t cursor_size) {
  if (o.limit == 0 || o.limit > kMaxLimit) {
    return absl::InvalidArgumentError(absl::StrFormat("limit must be in 1..%u", kMaxLimit));
  }
  if (o.band && (!std::isfinite(o.band->min_m) || !std::isfinite(o.band->max_m) ||
                 o.band->min_m > o.band->max_m)) {
    return absl::InvalidArgumentError("the altitude band must be finite with min <= max");
  }
  if (!o.cursor.empty() && o.cursor.size() != cursor_size) {
    return absl::InvalidArgumentError("the cursor does not belong to this kind of query");
  }
  return absl::OkStatus();
}

Status CheckRegion(const engine::WorldFrame& frame, const Region& region) {
  if (const auto* b = std::get_if<BoxRegion>(&region)) return frame.CheckBox(b->box);
  return CheckS2Region(region);
}

// A candidate of the merge: its order key and what it reports.
struct Hit {
  std::array<uint8_t, kIndexKeySize> order;  // box queries: the code in the first 8 bytes
  ChunkHit hit;
};

// Merges the sorted index (or chunk table) scan with the sorted dirty
// candidates into pages.
class PageBuilder {
 public:
  PageBuilder(uint32_t limit, std::vector<Hit> dirty, size_t order_size)
      : limit_(limit), dirty_(std::move(dirty)), order_size_(order_size) {
    out_.reserve(std::min<uint32_t>(limit, 16384));
  }

  // Offers the next stored hit (in order). Returns false once the page and
  // one more are known (the scan can stop).
  bool Add(const Hit& h) {
    while (next_dirty_ < dirty_.size() && Less(dirty_[next_dirty_].order, h.order)) {
      if (!Emit(dirty_[next_dirty_++])) return false;
    }
    return Emit(h);
  }
  QueryResult Finish() {
    while (next_dirty_ < dirty_.size() && Emit(dirty_[next_dirty_++])) {
    }
    QueryResult r;
    r.chunks = std::move(out_);
    if (more_) r.next_cursor.assign(last_.begin(), last_.begin() + order_size_);
    return r;
  }

 private:
  bool Less(const std::array<uint8_t, kIndexKeySize>& a,
            const std::array<uint8_t, kIndexKeySize>& b) const {
    return std::memcmp(a.data(), b.data(), order_size_) < 0;
  }
  bool Emit(const Hit& h) {
    if (out_.size() == limit_) {
      more_ = true;
      return false;
    }
    out_.push_back(h.hit);
    last_ = h.order;
    return true;
  }

  uint32_t limit_;
  std::vector<Hit> dirty_;
  size_t next_dirty_ = 0;
  size_t order_size_;
  std::vector<ChunkHit> out_;
  std::array<uint8_t, kIndexKeySize> last_{};
  bool more_ = false;
};

// The cursor as the first key to scan from (cursor + 1), or zeros.
std::array<uint8_t, kIndexKeySize> ResumeKey(const std::vector<uint8_t>& cursor) {
  std::array<uint8_t, kIndexKeySize> k{};
  if (cursor.empty()) return k;
  std::copy(cursor.begin(), cursor.end(), k.begin());
  for (int i = static_cast<int>(cursor.size()) - 1; i >= 0; --i) {
    if (++k[i] != 0) break;
  }
  return k;
}

StatusOr<QueryResult> QueryCells(engine::Database& db, const Region& region,
                                 const QueryOptions& options) {
  const engine::WorldFrame& frame = db.frame();
  S2CellUnion covering;
  if (const auto* r = std::get_if<RadiusRegion>(&region)) {
    if (IsFullSphere(r->radius_m)) {
      covering = S2CellUnion::WholeSphere();
    } else {
      S2RegionCoverer::Options o;
      o.set_max_cells(kCoveringCells);
      o.set_max_level(kCoveringMaxLevel);
      S2RegionCoverer coverer(o);
      const S2Cap cap(r->centre.Normalized().ToPoint(),
                      RadiusAngle(r->radius_m) + S1Angle::Radians(kCoveringSlackRad));
      covering = coverer.GetCovering(cap);
    }
  } else if (const auto* c = std::get_if<CellRegion>(&region)) {
    covering = S2CellUnion({c->cell});
  } else {
    S2RegionCoverer::Options o;
    o.set_max_cells(kCoveringCells);
    o.set_max_level(kCoveringMaxLevel);
    S2RegionCoverer coverer(o);
    covering = coverer.GetCovering(std::get<RectRegion>(region).rect.Expanded(
        S2LatLng::FromRadians(kCoveringSlackRad, kCoveringSlackRad)));
  }

  // Chunks not flushed yet: their newest state wins over the index.
  const std::vector<engine::Database::DirtyChunk> dirty = db.DirtyChunks();
  const std::array<uint8_t, kIndexKeySize> resume = ResumeKey(options.cursor);
  std::vector<Hit> dirty_hits;
  for (const auto& d : dirty) {
    if (!d.present || !ChunkInRegion(frame, d.key, region, options.band)) continue;
    Hit h{OrderKey(ChunkCell(frame, d.key), d.key), {d.key, d.version}};
    if (std::memcmp(h.order.data(), resume.data(), kIndexKeySize) >= 0) dirty_hits.push_back(h);
  }
  std::sort(dirty_hits.begin(), dirty_hits.end(), [](const Hit& a, const Hit& b) {
    return std::memcmp(a.order.data(), b.order.data(), kIndexKeySize) < 0;
  });
  auto is_dirty = [&](uint64_t code) { return InDirty(dirty, code); };

  // Per covering cell: whether the region contains all of it (then only
  // the altitude band needs checking per entry).
  const auto* radius = std::get_if<RadiusRegion>(&region);
  const auto* rect = std::get_if<RectRegion>(&region);
  std::optional<S2Cap> cap;
  S1ChordAngle inner, outer;  // surely inside / outside, for leaf cell centres
  if (radius && !IsFullSphere(radius->radius_m)) {
    cap = S2Cap(radius->centre.Normalized().ToPoint(), RadiusAngle(radius->radius_m));
    // A leaf cell's centre is within 2e-9 radians of any point in it.
    const S1Angle margin = S1Angle::Radians(4e-9);
    inner = S1ChordAngle(std::max(S1Angle::Zero(), RadiusAngle(radius->radius_m) - margin));
    outer = S1ChordAngle(std::min(S1Angle::Radians(M_PI), RadiusAngle(radius->radius_m) + margin));
  }
  auto contains_cell = [&](S2CellId cell) {
    if (cap) return cap->Contains(S2Cell(cell));
    if (rect) return rect->rect.Contains(S2Cell(cell));
    return true;  // the cell region itself, or the whole sphere
  };
  // Whether the entry's chunk is in the region; `leaf` is its centre's cell.
  auto in_region = [&](S2CellId leaf, ChunkKey key) {
    // (A damaged key's cell may be no leaf: then the exact test only.)
    if (cap && radius->radius_m > 0 && leaf.is_valid() && leaf.is_leaf()) {
      const S1ChordAngle d(leaf.ToPoint(), cap->center());
      if (d < inner) return true;
      if (d > outer) return false;
    }
    return ChunkInRegion(frame, key, region, std::nullopt);
  };

  PageBuilder page(options.limit, std::move(dirty_hits), kIndexKeySize);
  VOXDB_ASSIGN_OR_RETURN(auto snapshot, db.store().BeginRead());
  bool stopped = false;
  for (const S2CellId cell : covering) {
    if (stopped) break;
    const bool interior = contains_cell(cell);
    std::array<uint8_t, kIndexKeySize> begin{}, end{};
    EncodeBigEndian64(begin.data(), cell.range_min().id());
    EncodeBigEndian64(end.data(), cell.range_max().id() + 1);
    if (std::memcmp(end.data(), resume.data(), kIndexKeySize) <= 0) continue;
    if (std::memcmp(begin.data(), resume.data(), kIndexKeySize) < 0) {
      // From the resume point's column; its items before the point are skipped.
      EncodeBigEndian64(begin.data(), DecodeBigEndian64(resume.data()));
      EncodeBigEndian64(begin.data() + 8,
                        DecodeBigEndian64(resume.data() + 8) >> engine::kMortonAxisBits);
    }
    std::vector<IndexItem> items;
    VOXDB_RETURN_IF_ERROR(snapshot->Scan(
        Table::kS2Index, begin, end, [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
          if (k.size() != kIndexKeySize) return true;  // not an entry
          DecodeIndexValue(v, &items);                 // a damaged value: what can be read of it
          const uint64_t column = DecodeBigEndian64(k.data() + 8);
          if (column >> (2 * engine::kMortonAxisBits) != 0) return true;
          const uint32_t x = static_cast<uint32_t>(column >> engine::kMortonAxisBits);
          const uint32_t y = static_cast<uint32_t>(column & engine::kMaxChunkAxis);
          const S2CellId leaf(DecodeBigEndian64(k.data()));
          // The region test depends on the column only; the band on z.
          std::optional<bool> inside;
          if (interior) inside = true;
          for (const IndexItem& item : items) {
            const ChunkKey key = ChunkKey::FromCoord({x, y, item.z});
            if (is_dirty(key.code())) continue;
            if (options.band) {
              const auto [bottom, top] = ChunkAltitudes(frame, key);
              if (!BandMeets(options.band, bottom, top)) continue;
            }
            Hit h;
            EncodeBigEndian64(h.order.data(), leaf.id());
            EncodeBigEndian64(h.order.data() + 8, column << engine::kMortonAxisBits | item.z);
            if (std::memcmp(h.order.data(), resume.data(), kIndexKeySize) < 0) continue;
            if (!inside) inside = in_region(leaf, key);
            if (!*inside) return true;
            h.hit = {key, item.version};
            if (!page.Add(h)) {
              stopped = true;
              return false;
            }
          }
          return true;
        }));
  }
  return page.Finish();
}

StatusOr<QueryResult> QueryBox(engine::Database& db, const engine::VoxelBox& box,
                               const QueryOptions& options) {
  const engine::WorldFrame& frame = db.frame();
  const engine::ChunkBox chunks = engine::ChunksCovering(frame, box);
  const Region region = BoxRegion{box};
  const std::array<uint8_t, kIndexKeySize> resume = ResumeKey(options.cursor);
  const uint64_t from = options.cursor.empty() ? 0 : DecodeBigEndian64(resume.data());
  if (!options.cursor.empty() && from == 0) return QueryResult{};  // the cursor was the last key

  const std::vector<engine::Database::DirtyChunk> dirty = db.DirtyChunks();
  std::vector<Hit> dirty_hits;
  for (const auto& d : dirty) {
    if (!d.present || d.key.code() < from || !chunks.Contains(d.key.coord()) ||
        !ChunkInRegion(frame, d.key, region, options.band)) {
      continue;
    }
    Hit h{};
    EncodeBigEndian64(h.order.data(), d.key.code());
    h.hit = {d.key, d.version};
    dirty_hits.push_back(h);  // DirtyChunks is in Morton order already
  }
  auto is_dirty = [&](uint64_t code) { return InDirty(dirty, code); };

  PageBuilder page(options.limit, std::move(dirty_hits), 8);
  VOXDB_ASSIGN_OR_RETURN(auto snapshot, db.store().BeginRead());
  // The stored chunks inside the box, skipping the gaps of the Morton curve.
  VOXDB_RETURN_IF_ERROR(
      snapshot->ScanChunksInBox(chunks, from, [&](ChunkKey key, std::span<const uint8_t> record) {
        uint64_t version;
        if (is_dirty(key.code()) || !StoredChunkVersion(record, &version) ||
            !BandMeets(options.band, ChunkAltitudes(frame, key).first,
                       ChunkAltitudes(frame, key).second)) {
          return true;
        }
        Hit h{};
        EncodeBigEndian64(h.order.data(), key.code());
        h.hit = {key, version};
        return page.Add(h);
      }));
  return page.Finish();
}

}  // namespace

Status ForEachChunkInBox(engine::Database& db, const engine::ChunkBox& box,
                         const std::function<void(engine::ChunkKey)>& fn) {
  const std::vector<engine::Database::DirtyChunk> dirty = db.DirtyChunks();
  for (const auto& d : dirty) {
    if (d.present && box.Contains(d.key.coord())) fn(d.key);
  }
  VOXDB_ASSIGN_OR_RETURN(auto snapshot, db.store().BeginRead());
  return snapshot->ScanChunksInBox(box, 0, [&](ChunkKey key, std::span<const uint8_t> record) {
    // Only a fills marker is as short as a header: a longer record is chunk
    // data, known without reading it.
    const bool data = record.size() > engine::kChunkHeaderSize ||
                      (record.size() == engine::kChunkHeaderSize &&
                       engine::PeekChunkHeader(record)->encoding != engine::ChunkEncoding::kFills);
    if (data && !InDirty(dirty, key.code())) fn(key);
    return true;
  });
}

StatusOr<QueryResult> QueryLod(engine::Database& db, engine::LodPyramid& lod, int level,
                               const Region& region, const QueryOptions& options) {
  if (level < 1 || level > lod.levels()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "LOD level %d is not kept (this server keeps levels 1..%d)", level, lod.levels()));
  }
  if (options.limit == 0 || options.limit > kMaxLimit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("limit %u is not in 1..%u", options.limit, kMaxLimit));
  }
  uint64_t from = 0;
  if (!options.cursor.empty()) {
    if (options.cursor.size() != 8) return absl::InvalidArgumentError("bad LOD query cursor");
    from = DecodeBigEndian64(options.cursor.data());
  }
  // The whole level-0 answer, mapped to its ancestors.
  QueryOptions all;
  all.band = options.band;
  all.limit = 1 << 16;
  std::vector<uint64_t> nodes;
  std::vector<engine::Fill> fills;
  uint64_t chunks = 0;
  for (bool first = true; first || !all.cursor.empty(); first = false) {
    VOXDB_ASSIGN_OR_RETURN(QueryResult page, Query(db, region, all));
    chunks += page.chunks.size();
    if (chunks > kMaxLodQueryChunks) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "a LOD query evaluates its level-0 answer, and this one holds more than %u chunks: "
          "query a smaller region",
          kMaxLodQueryChunks));
    }
    for (const ChunkHit& c : page.chunks) {
      const uint64_t node = c.key.code() >> (3 * level);
      if (node >= from) nodes.push_back(node);
    }
    if (first) fills = std::move(page.fills);
    all.cursor = std::move(page.next_cursor);
  }
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());

  QueryResult result;
  if (options.cursor.empty()) result.fills = std::move(fills);
  for (uint64_t node : nodes) {
    if (result.chunks.size() == options.limit) {
      result.next_cursor.resize(8);
      EncodeBigEndian64(result.next_cursor.data(), node);
      break;
    }
    uint64_t version = 0;
    auto read = lod.GetLod(level, node);
    if (read.ok()) {
      version = read->version;
    } else if (!absl::IsNotFound(read.status())) {
      return read.status();
    }
    result.chunks.push_back({ChunkKey::FromCode(node), version});
  }
  return result;
}

S2LatLng ChunkCentre(const engine::WorldFrame& frame, ChunkKey key) {
  const engine::VoxelBox b = ChunkVoxels(frame, key);
  const double vs = frame.voxel_size_m();
  const engine::MetreCoord m{(static_cast<double>(b.lo.x) + static_cast<double>(b.hi.x)) / 2 * vs,
                             (static_cast<double>(b.lo.y) + static_cast<double>(b.hi.y)) / 2 * vs,
                             0};
  return ToLatLng(frame.MetresToGeo(m));
}

S2CellId ChunkCell(const engine::WorldFrame& frame, ChunkKey key) {
  return S2CellId(ChunkCentre(frame, key));
}

std::pair<double, double> ChunkAltitudes(const engine::WorldFrame& frame, ChunkKey key) {
  const engine::VoxelBox b = ChunkVoxels(frame, key);
  return {frame.AltitudeOfZ(b.lo.z), frame.AltitudeOfZ(b.hi.z)};
}

S2LatLngRect BoxFootprint(const engine::WorldFrame& frame, const engine::VoxelBox& box) {
  const double vs = frame.voxel_size_m();
  const engine::GeoCoord lo = frame.MetresToGeo(
      {static_cast<double>(box.lo.x) * vs, static_cast<double>(box.lo.y) * vs, 0});
  const engine::GeoCoord hi = frame.MetresToGeo(
      {static_cast<double>(box.hi.x) * vs, static_cast<double>(box.hi.y) * vs, 0});
  // x grows eastwards without wrapping: the footprint runs east from the
  // box's west edge to its east edge.
  const double west = LngRadians(std::min(lo.lon_deg, hi.lon_deg));
  const double east = LngRadians(std::max(lo.lon_deg, hi.lon_deg));
  return S2LatLngRect(R1Interval::FromPointPair(LatRadians(lo.lat_deg), LatRadians(hi.lat_deg)),
                      LngInterval(west, east));
}

StatusOr<Region> MakeRadiusRegion(double lat_deg, double lon_deg, double radius_m) {
  if (!IsLatitude(lat_deg) || !IsLongitude(lon_deg)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the centre needs a latitude in [-90, 90] and a longitude in [-180, 180] (got %g, %g)",
        lat_deg, lon_deg));
  }
  if (!std::isfinite(radius_m) || radius_m < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the radius must be a finite number of metres >= 0 (got %g)", radius_m));
  }
  return RadiusRegion{S2LatLng::FromRadians(LatRadians(lat_deg), LngRadians(lon_deg)), radius_m};
}

StatusOr<Region> MakeCellRegion(uint64_t cell_id) {
  const CellRegion c{S2CellId(cell_id)};
  VOXDB_RETURN_IF_ERROR(CheckS2Region(c));
  return c;
}

StatusOr<Region> MakeRectRegion(double lat_lo_deg, double lon_lo_deg, double lat_hi_deg,
                                double lon_hi_deg) {
  if (!IsLatitude(lat_lo_deg) || !IsLatitude(lat_hi_deg) || lat_lo_deg > lat_hi_deg ||
      !IsLongitude(lon_lo_deg) || !IsLongitude(lon_hi_deg)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a rectangle needs latitudes in [-90, 90] with lat_lo <= lat_hi and longitudes in "
        "[-180, 180] (got lat %g..%g, lon %g..%g)",
        lat_lo_deg, lat_hi_deg, lon_lo_deg, lon_hi_deg));
  }
  return RectRegion{S2LatLngRect(R1Interval(LatRadians(lat_lo_deg), LatRadians(lat_hi_deg)),
                                 LngInterval(LngRadians(lon_lo_deg), LngRadians(lon_hi_deg)))};
}

std::array<uint8_t, kIndexKeySize> IndexKey(S2CellId cell, uint64_t column) {
  std::array<uint8_t, kIndexKeySize> k;
  EncodeBigEndian64(k.data(), cell.id());
  EncodeBigEndian64(k.data() + 8, column);
  return k;
}

std::array<uint8_t, kIndexKeySize> OrderKey(S2CellId cell, ChunkKey key) {
  const engine::ChunkCoord c = key.coord();
  return IndexKey(cell, ColumnId(c) << engine::kMortonAxisBits | c.z);
}

bool DecodeIndexValue(std::span<const uint8_t> value, std::vector<IndexItem>* items) {
  items->clear();
  bool ok = !value.empty() && value.size() % kIndexItemSize == 0;
  for (size_t at = 0; at + kIndexItemSize <= value.size(); at += kIndexItemSize) {
    const IndexItem item{engine::DecodeFixed32(value.data() + at),
                         engine::DecodeFixed64(value.data() + at + 4)};
    if (item.z > engine::kMaxChunkAxis || (!items->empty() && item.z <= items->back().z)) {
      ok = false;
    }
    if (item.z <= engine::kMaxChunkAxis) items->push_back(item);
  }
  if (!ok) {  // keep the last item of each z, in z order
    std::stable_sort(items->begin(), items->end(),
                     [](const IndexItem& a, const IndexItem& b) { return a.z < b.z; });
    std::vector<IndexItem> unique;
    for (const IndexItem& item : *items) {
      if (!unique.empty() && unique.back().z == item.z) {
        unique.back() = item;
      } else {
        unique.push_back(item);
      }
    }
    items->swap(unique);
  }
  return ok;
}

std::vector<uint8_t> EncodeIndexValue(std::span<const IndexItem> items) {
  std::vector<uint8_t> value(items.size() * kIndexItemSize);
  for (size_t i = 0; i < items.size(); ++i) {
    engine::EncodeFixed32(value.data() + i * kIndexItemSize, items[i].z);
    engine::EncodeFixed64(value.data() + i * kIndexItemSize + 4, items[i].version);
  }
  return value;
}

namespace {

// What one flush does to one chunk: sorted by `order` (column id << 21 | z).
struct ItemChange {
  uint64_t order;
  uint64_t version;  // 0: removed (stored versions are >= 1)
  uint32_t z() const { return static_cast<uint32_t>(order & engine::kMaxChunkAxis); }
};

// Sorts `v` by key(element), a u64, stably: an LSD radix sort with one pass
// per byte that differs between the keys (a flush's columns share their
// high bytes). Several times faster than std::sort for a large flush.
template <typename T, typename Key>
void RadixSort(std::vector<T>* v, Key key) {
  if (v->size() < 2) return;
  std::vector<T> tmp(v->size());
  for (int shift = 0; shift < 64; shift += 8) {
    size_t count[257] = {};
    for (const T& e : *v) ++count[((key(e) >> shift) & 0xff) + 1];
    if (count[((key(v->front()) >> shift) & 0xff) + 1] == v->size()) continue;  // all equal
    for (int i = 0; i < 256; ++i) count[i + 1] += count[i];
    for (const T& e : *v) tmp[count[(key(e) >> shift) & 0xff]++] = e;
    v->swap(tmp);
  }
}

// DecodeIndexValue's test, without decoding.
bool WellFormed(std::span<const uint8_t> value) {
  if (value.empty() || value.size() % kIndexItemSize != 0) return false;
  int64_t last = -1;
  for (size_t at = 0; at < value.size(); at += kIndexItemSize) {
    const uint32_t z = engine::DecodeFixed32(value.data() + at);
    if (z > engine::kMaxChunkAxis || z <= last) return false;
    last = z;
  }
  return true;
}

// A column's new value: `current` with `changes` (by increasing z) applied,
// merged byte by byte. A damaged current value is first read as far as it
// can be (DecodeIndexValue), so the merge writes it back well formed.
std::optional<std::vector<uint8_t>> MergeColumn(std::optional<std::span<const uint8_t>> current,
                                                std::span<const ItemChange> changes) {
  std::span<const uint8_t> old;
  std::vector<uint8_t> repaired;
  if (current && WellFormed(*current)) {
    old = *current;
  } else if (current) {  // damaged: merge into what can be read of it
    std::vector<IndexItem> items;
    DecodeIndexValue(*current, &items);
    repaired = EncodeIndexValue(items);
    old = repaired;
  }
  std::vector<uint8_t> value;
  value.reserve(old.size() + changes.size() * kIndexItemSize);
  auto append = [&](uint32_t z, uint64_t version) {
    uint8_t item[kIndexItemSize];
    engine::EncodeFixed32(item, z);
    engine::EncodeFixed64(item + 4, version);
    value.insert(value.end(), item, item + kIndexItemSize);
  };
  size_t at = 0;  // the next old item
  auto old_z = [&] { return engine::DecodeFixed32(old.data() + at); };
  for (const ItemChange& c : changes) {
    for (; at < old.size() && old_z() < c.z(); at += kIndexItemSize) {
      value.insert(value.end(), old.begin() + at, old.begin() + at + kIndexItemSize);
    }
    if (at < old.size() && old_z() == c.z()) at += kIndexItemSize;
    if (c.version != 0) append(c.z(), c.version);
  }
  value.insert(value.end(), old.begin() + at, old.end());
  if (value.empty()) return std::nullopt;
  return value;
}

}  // namespace

namespace {

// The changes of one column, in z order, and the column's index key.
struct ColumnChanges {
  uint64_t cell;
  uint64_t column;
  std::span<const ItemChange> changes;
};

// Sorts `all` by (column, z) and groups it by column, in index key order
// (cell, then column). The spans point into *all.
std::vector<ColumnChanges> GroupByColumn(const engine::WorldFrame& frame,
                                         std::vector<ItemChange>* all) {
  RadixSort(all, [](const ItemChange& c) { return c.order; });
  std::vector<ColumnChanges> columns;
  const ItemChange* const last = all->data() + all->size();
  for (const ItemChange* at = all->data(); at != last;) {
    const uint64_t column = at->order >> engine::kMortonAxisBits;
    const ItemChange* end = at;
    while (end != last && end->order >> engine::kMortonAxisBits == column) ++end;
    const ChunkKey first =
        ChunkKey::FromCoord({static_cast<uint32_t>(column >> engine::kMortonAxisBits),
                             static_cast<uint32_t>(column & engine::kMaxChunkAxis), at->z()});
    columns.push_back({ChunkCell(frame, first).id(), column, {at, end}});
    at = end;
  }
  RadixSort(&columns, [](const ColumnChanges& c) { return c.cell; });  // stable
  return columns;
}

ItemChange ChangeOf(ChunkKey key, uint64_t version) {
  const engine::ChunkCoord c = key.coord();
  return {ColumnId(c) << engine::kMortonAxisBits | c.z, version};
}

}  // namespace

void S2Index::OnFlush(std::span<const engine::FlushedChunk> chunks, engine::WriteBatch* batch) {
  // The updaters point into `all`, which the batch keeps.
  auto all = std::make_shared<std::vector<ItemChange>>();
  all->reserve(chunks.size());
  for (const engine::FlushedChunk& c : chunks) {
    all->push_back(ChangeOf(c.key, c.stored ? c.version : 0));
  }
  const std::vector<ColumnChanges> columns = GroupByColumn(frame_, all.get());
  batch->Reserve(columns.size());
  for (const ColumnChanges& c : columns) {
    batch->Update(
        Table::kS2Index, IndexKey(S2CellId(c.cell), c.column),
        [changes = c.changes](std::optional<std::span<const uint8_t>> current) {
          return MergeColumn(current, changes);
        },
        (c.changes.size() + 4) * kIndexItemSize);
  }
  batch->Keep(std::move(all));
}

StatusOr<uint64_t> ColumnCount(engine::Database& db) {
  VOXDB_ASSIGN_OR_RETURN(auto snapshot, db.store().BeginRead());
  return snapshot->Count(Table::kS2Index);
}

Status Rebuild(engine::Database* db, uint64_t* chunks) {
  const engine::WorldFrame frame = db->frame();
  *chunks = 0;
  return db->RebuildFromStore([&](const engine::ChunkStore::Snapshot& snapshot,
                                  engine::WriteBatch* batch) -> Status {
    std::array<uint8_t, kIndexKeySize + 1> past_last;
    past_last.fill(0xff);
    batch->DeleteRange(Table::kS2Index, std::array<uint8_t, 1>{0}, past_last);
    std::vector<ItemChange> stored;
    VOXDB_RETURN_IF_ERROR(snapshot.ScanChunks(engine::MortonRange{0, ChunkKey::kMaxCode + 1},
                                              [&](ChunkKey key, std::span<const uint8_t> record) {
                                                uint64_t version;
                                                if (StoredChunkVersion(record, &version))
                                                  stored.push_back(ChangeOf(key, version));
                                                return true;
                                              }));
    *chunks = stored.size();
    for (const ColumnChanges& c : GroupByColumn(frame, &stored)) {
      batch->Put(Table::kS2Index, IndexKey(S2CellId(c.cell), c.column),
                 *MergeColumn(std::nullopt, c.changes));
    }
    std::vector<uint8_t> format(4);
    engine::EncodeFixed32(format.data(), kIndexFormat);
    batch->Put(Table::kMeta, AsBytes(kMetaIndexFormat), std::move(format));
    return absl::OkStatus();
  });
}

Status EnsureBuilt(engine::Database* db,
                   const std::function<void(std::string_view why)>& starting) {
  std::string_view why = "the database has no S2 index yet";
  uint64_t chunks = 0;
  {
    VOXDB_ASSIGN_OR_RETURN(auto snapshot, db->store().BeginRead());
    VOXDB_ASSIGN_OR_RETURN(chunks, snapshot->Count(Table::kChunks));
    auto format = snapshot->Get(Table::kMeta, AsBytes(kMetaIndexFormat));
    if (format.ok()) {
      if (format->size() != 4 || engine::DecodeFixed32(format->data()) > kIndexFormat) {
        return UnsupportedError("the S2 index has an unknown format (written by a newer voxdb?)");
      }
      if (engine::DecodeFixed32(format->data()) == kIndexFormat) return absl::OkStatus();
      why = "the S2 index has an older format";
    } else if (!absl::IsNotFound(format.status())) {
      return format.status();
    }
  }
  if (starting && chunks > 0) starting(why);
  uint64_t entries;
  return Rebuild(db, &entries);
}

ChunkFacts::ChunkFacts(const engine::WorldFrame& frame, ChunkKey key)
    : frame_(&frame), key_(key), voxels_(ChunkVoxels(frame, key)) {
  bottom_m_ = frame.AltitudeOfZ(voxels_.lo.z);
  top_m_ = frame.AltitudeOfZ(voxels_.hi.z);
}

void ChunkFacts::Geo() const {
  if (geo_) return;
  centre_ = ChunkCentre(*frame_, key_);
  point_ = centre_.ToPoint();
  geo_ = true;
}
const S2LatLng& ChunkFacts::centre() const {
  Geo();
  return centre_;
}
const S2Point& ChunkFacts::point() const {
  Geo();
  return point_;
}
S2CellId ChunkFacts::cell() const { return S2CellId(centre()); }

RegionMatcher::RegionMatcher(const Region& region, const std::optional<AltitudeBand>& band)
    : region_(region), band_(band), valid_(CheckS2Region(region).ok()) {
  if (!valid_) return;
  if (const auto* r = std::get_if<RadiusRegion>(&region)) {
    everything_ = IsFullSphere(r->radius_m);
    if (!everything_) cap_ = S2Cap(r->centre.Normalized().ToPoint(), RadiusAngle(r->radius_m));
  }
}

bool RegionMatcher::Contains(const ChunkFacts& chunk) const {
  if (!valid_) return false;
  if (!BandMeets(band_, chunk.bottom_m(), chunk.top_m())) return false;
  if (const auto* b = std::get_if<BoxRegion>(&region_)) {
    return engine::Meets(chunk.voxels(), b->box);
  }
  if (std::holds_alternative<RadiusRegion>(region_)) {
    return everything_ || cap_->Contains(chunk.point());
  }
  if (const auto* c = std::get_if<CellRegion>(&region_)) return c->cell.contains(chunk.cell());
  return std::get<RectRegion>(region_).rect.Contains(chunk.centre());
}

bool ChunkInRegion(const engine::WorldFrame& frame, ChunkKey key, const Region& region,
                   const std::optional<AltitudeBand>& band) {
  return RegionMatcher(region, band).Contains(ChunkFacts(frame, key));
}

bool FillInRegion(const engine::WorldFrame& frame, const engine::Fill& fill, const Region& region,
                  const std::optional<AltitudeBand>& band) {
  if (!BandMeets(band, frame.AltitudeOfZ(fill.box.lo.z), frame.AltitudeOfZ(fill.box.hi.z))) {
    return false;
  }
  if (const auto* b = std::get_if<BoxRegion>(&region)) return engine::Meets(fill.box, b->box);
  if (!CheckS2Region(region).ok()) return false;
  const S2LatLngRect footprint = BoxFootprint(frame, fill.box);
  if (const auto* r = std::get_if<RadiusRegion>(&region)) {
    if (IsFullSphere(r->radius_m)) return true;
    return footprint.GetDistance(r->centre.Normalized()) <= RadiusAngle(r->radius_m);
  }
  if (const auto* c = std::get_if<CellRegion>(&region)) {
    return footprint.Intersects(S2Cell(c->cell));
  }
  return footprint.Intersects(std::get<RectRegion>(region).rect);
}

Status CheckRegionAndBand(const engine::WorldFrame& frame, const Region& region,
                          const std::optional<AltitudeBand>& band) {
  QueryOptions o;
  o.band = band;
  VOXDB_RETURN_IF_ERROR(CheckOptions(o, 0));
  return CheckRegion(frame, region);
}

Status CheckQuery(const engine::WorldFrame& frame, const Region& region,
                  const QueryOptions& options) {
  VOXDB_RETURN_IF_ERROR(CheckRegion(frame, region));
  const bool box = std::holds_alternative<BoxRegion>(region);
  return CheckOptions(options, box ? 8 : kIndexKeySize);
}

StatusOr<QueryResult> Query(engine::Database& db, const Region& region,
                            const QueryOptions& options) {
  VOXDB_RETURN_IF_ERROR(CheckQuery(db.frame(), region, options));
  const bool box = std::holds_alternative<BoxRegion>(region);
  StatusOr<QueryResult> result = box ? QueryBox(db, std::get<BoxRegion>(region).box, options)
                                     : QueryCells(db, region, options);
  if (result.ok() && options.cursor.empty()) {
    for (const engine::Fill& f : db.Fills()->fills()) {
      if (FillInRegion(db.frame(), f, region, options.band)) result->fills.push_back(f);
    }
  }
  return result;
}

}  // namespace voxdb::index
