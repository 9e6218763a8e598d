#include "engine/world_frame.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/coding.h"

namespace voxdb::engine {
namespace {

constexpr double kPi = std::numbers::pi;
constexpr double kDegPerRad = 180.0 / kPi;

constexpr size_t kEncodedFrameSize = 56;
constexpr uint32_t kFrameMagic = 0x46584f56;  // "VOXF" little-endian

}  // namespace

WorldFrame WorldFrame::Earth() {
  auto frame = Create(160'300'080, 80'150'040, 80'000'000, 0.25, kChunkEdge, 40'000'000);
  VOXDB_CHECK(frame.ok());
  return *frame;
}

StatusOr<WorldFrame> WorldFrame::Create(uint64_t extent_x, uint64_t extent_y, uint64_t extent_z,
                                        double voxel_size_m, uint32_t chunk_edge,
                                        uint64_t sea_level_z) {
  if (chunk_edge != static_cast<uint32_t>(kChunkEdge)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunk edge %u is not supported (this build uses %d)", chunk_edge, kChunkEdge));
  }
  static_assert(kChunkEdge == 1 << kChunkShift);
  if (!(voxel_size_m > 0) || !std::isfinite(voxel_size_m)) {
    return absl::InvalidArgumentError("voxel size must be a positive number of metres");
  }
  WorldFrame f;
  f.extent_[0] = extent_x;
  f.extent_[1] = extent_y;
  f.extent_[2] = extent_z;
  for (int a = 0; a < 3; ++a) {
    if (f.extent_[a] == 0) return absl::InvalidArgumentError("world extents must be non-zero");
    const uint64_t chunks = (f.extent_[a] + chunk_edge - 1) / chunk_edge;
    if (chunks > uint64_t{kMaxChunkAxis} + 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "world extent %u voxels needs %u chunks on one axis; at most %u fit a Morton key",
          f.extent_[a], chunks, uint64_t{kMaxChunkAxis} + 1));
    }
    f.chunks_[a] = static_cast<uint32_t>(chunks);
  }
  if (sea_level_z >= extent_z) {
    return absl::InvalidArgumentError("sea level z must lie inside the world's z extent");
  }
  f.voxel_size_m_ = voxel_size_m;
  f.chunk_edge_ = chunk_edge;
  f.sea_level_z_ = sea_level_z;
  return f;
}

Status WorldFrame::CheckVoxel(const VoxelCoord& v) const {
  if (Contains(v)) return absl::OkStatus();
  return OutOfBoundsError(
      absl::StrFormat("voxel %s is outside the world [0, %u) x [0, %u) x [0, %u)", v.ToString(),
                      extent_[0], extent_[1], extent_[2]));
}

Status WorldFrame::CheckChunk(const ChunkCoord& c) const {
  if (ContainsChunk(c)) return absl::OkStatus();
  return OutOfBoundsError(
      absl::StrFormat("chunk %s is outside the grid [0, %u) x [0, %u) x [0, %u)", c.ToString(),
                      chunks_[0], chunks_[1], chunks_[2]));
}

Status WorldFrame::CheckBox(const VoxelBox& box) const {
  if (box.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("box %s..%s is empty", box.lo.ToString(), box.hi.ToString()));
  }
  if (box.hi.x > extent_[0] || box.hi.y > extent_[1] || box.hi.z > extent_[2]) {
    return OutOfBoundsError(absl::StrFormat("box %s..%s reaches outside the world",
                                            box.lo.ToString(), box.hi.ToString()));
  }
  return absl::OkStatus();
}

VoxelBox WorldFrame::Bounds() const {
  return VoxelBox{{0, 0, 0}, {extent_[0], extent_[1], extent_[2]}};
}

VoxelBox WorldFrame::VoxelsOfChunk(const ChunkCoord& c) const {
  VoxelCoord lo = ChunkOrigin(c);
  VoxelCoord hi{std::min(lo.x + chunk_edge_, extent_[0]), std::min(lo.y + chunk_edge_, extent_[1]),
                std::min(lo.z + chunk_edge_, extent_[2])};
  return VoxelBox{lo, hi};
}

StatusOr<ChunkKey> WorldFrame::KeyOf(const VoxelCoord& v) const {
  VOXDB_RETURN_IF_ERROR(CheckVoxel(v));
  return ChunkKey::FromCoord(ChunkOf(v));
}

MetreCoord WorldFrame::VoxelCentreMetres(const VoxelCoord& v) const {
  return MetreCoord{(static_cast<double>(v.x) + 0.5) * voxel_size_m_,
                    (static_cast<double>(v.y) + 0.5) * voxel_size_m_,
                    (static_cast<double>(v.z) + 0.5) * voxel_size_m_};
}

StatusOr<VoxelCoord> WorldFrame::VoxelAtMetres(const MetreCoord& m) const {
  const double f[3] = {std::floor(m.x / voxel_size_m_), std::floor(m.y / voxel_size_m_),
                       std::floor(m.z / voxel_size_m_)};
  for (int a = 0; a < 3; ++a) {
    // The comparison is false for NaN, so NaN is out of bounds too.
    if (!(f[a] >= 0 && f[a] < static_cast<double>(extent_[a]))) {
      return OutOfBoundsError(
          absl::StrFormat("point (%.3f, %.3f, %.3f) m is outside the world", m.x, m.y, m.z));
    }
  }
  return VoxelCoord{static_cast<uint64_t>(f[0]), static_cast<uint64_t>(f[1]),
                    static_cast<uint64_t>(f[2])};
}

GeoCoord WorldFrame::MetresToGeo(const MetreCoord& m) const {
  const double easting = m.x - kPi * kEarthRadiusM;
  const double northing = m.y - kPi / 2 * kEarthRadiusM;
  GeoCoord g;
  g.lon_deg = easting / kEarthRadiusM * kDegPerRad;
  g.lat_deg = northing / kEarthRadiusM * kDegPerRad;
  // The source world is a few metres wider/taller than the sphere's
  // 2 pi R x pi R; its last voxels map to just past 180 / 90 degrees. And
  // x = 0 / y = 0 map to -180.00000000000003 / -90.000000000000014 by
  // rounding: clamp both ends (S2 aborts on a longitude past -pi).
  g.lon_deg = std::clamp(g.lon_deg, -180.0, 180.0);
  g.lat_deg = std::clamp(g.lat_deg, -90.0, 90.0);
  g.altitude_m = m.z - static_cast<double>(sea_level_z_) * voxel_size_m_;
  return g;
}

MetreCoord WorldFrame::GeoToMetres(const GeoCoord& g) const {
  return MetreCoord{g.lon_deg / kDegPerRad * kEarthRadiusM + kPi * kEarthRadiusM,
                    g.lat_deg / kDegPerRad * kEarthRadiusM + kPi / 2 * kEarthRadiusM,
                    g.altitude_m + static_cast<double>(sea_level_z_) * voxel_size_m_};
}

StatusOr<VoxelCoord> WorldFrame::GeoToVoxel(const GeoCoord& g) const {
  if (!(g.lat_deg >= -90 && g.lat_deg <= 90) || !(g.lon_deg >= -180 && g.lon_deg <= 180) ||
      !std::isfinite(g.altitude_m)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "lat %f / lon %f is not a position on Earth (lat in [-90, 90], lon in [-180, 180])",
        g.lat_deg, g.lon_deg));
  }
  MetreCoord m = GeoToMetres(g);
  const double f[2] = {std::floor(m.x / voxel_size_m_), std::floor(m.y / voxel_size_m_)};
  const double fz = std::floor(m.z / voxel_size_m_);
  if (!(fz >= 0 && fz < static_cast<double>(extent_[2]))) {
    return OutOfBoundsError(
        absl::StrFormat("altitude %.3f m is outside the world's vertical extent", g.altitude_m));
  }
  // Horizontal positions are always on the planet; clamp rounding at the
  // far edges (lon = 180, lat = 90) into the last voxel.
  VoxelCoord v;
  v.x = static_cast<uint64_t>(std::clamp(f[0], 0.0, static_cast<double>(extent_[0] - 1)));
  v.y = static_cast<uint64_t>(std::clamp(f[1], 0.0, static_cast<double>(extent_[1] - 1)));
  v.z = static_cast<uint64_t>(fz);
  return v;
}

std::vector<uint8_t> WorldFrame::Encode() const {
  std::vector<uint8_t> out;
  out.reserve(kEncodedFrameSize);
  PutFixed32(out, kFrameMagic);
  PutFixed32(out, kFormatVersion);
  PutFixed64(out, extent_[0]);
  PutFixed64(out, extent_[1]);
  PutFixed64(out, extent_[2]);
  uint64_t bits;
  std::memcpy(&bits, &voxel_size_m_, sizeof bits);
  PutFixed64(out, bits);
  PutFixed32(out, chunk_edge_);
  PutFixed32(out, 0);  // reserved
  PutFixed64(out, sea_level_z_);
  return out;
}

StatusOr<WorldFrame> WorldFrame::Decode(std::span<const uint8_t> bytes) {
  if (bytes.size() != kEncodedFrameSize || DecodeFixed32(bytes.data()) != kFrameMagic) {
    return CorruptError(
        absl::StrFormat("world frame record is malformed (%u bytes)", bytes.size()));
  }
  const uint32_t version = DecodeFixed32(bytes.data() + 4);
  if (version != kFormatVersion) {
    return CorruptError(absl::StrFormat("world frame record has unknown version %u", version));
  }
  double voxel_size;
  const uint64_t bits = DecodeFixed64(bytes.data() + 32);
  std::memcpy(&voxel_size, &bits, sizeof voxel_size);
  return Create(DecodeFixed64(bytes.data() + 8), DecodeFixed64(bytes.data() + 16),
                DecodeFixed64(bytes.data() + 24), voxel_size, DecodeFixed32(bytes.data() + 40),
                DecodeFixed64(bytes.data() + 48));
}

std::string WorldFrame::ToString() const {
  return absl::StrFormat(
      "%u x %u x %u voxels of %g m (%u x %u x %u chunks of %u^3), sea level at z = %u", extent_[0],
      extent_[1], extent_[2], voxel_size_m_, chunks_[0], chunks_[1], chunks_[2], chunk_edge_,
      sea_level_z_);
}

}  // namespace voxdb::engine
