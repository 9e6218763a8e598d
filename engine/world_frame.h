// The world frame: extents, voxel size, chunk size and vertical datum, and the
// one place that converts between voxel, chunk, metre and lat/lon/altitude
// coordinates.
//
// Horizontal axes follow EPSG:4087 (World Equidistant Cylindrical, sphere of
// radius R = 6,378,137 m, true scale at the equator): x runs west -> east
// from longitude -180 degrees, y runs south -> north from latitude -90
// degrees, so
//   easting  = x_m - pi R       (x_m = x * voxel_size, metres from the west edge)
//   northing = y_m - pi R / 2
//   lon = easting / R, lat = northing / R   (radians)
// z is altitude: altitude_m = (z - sea_level_z) * voxel_size.
//
// Voxel coordinates are unsigned integers in [0, extent) per axis; anything
// outside is OUT_OF_BOUNDS, never a wrap-around. The default frame is the
// source design's Earth: 160,300,080 x 80,150,040 x 80,000,000 voxels of
// 0.25 m, chunks of 128^3, sea level at z = 40,000,000 (10,000 km of depth
// and of height).
//
// The frame is stored in the database when it is created (Encode) and checked
// on every open (Decode + operator==).
//
// Thread-safety: an immutable value type.
#ifndef VOXDB_ENGINE_WORLD_FRAME_H_
#define VOXDB_ENGINE_WORLD_FRAME_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/morton.h"
#include "engine/status.h"
#include "engine/voxel_box.h"

namespace voxdb::engine {

inline constexpr double kEarthRadiusM = 6'378'137.0;  // EPSG:4087 sphere

// A point in metres from the world's south-west-bottom corner.
struct MetreCoord {
  double x = 0;
  double y = 0;
  double z = 0;
};

// Geographic position: degrees, and metres above the datum's sea level.
struct GeoCoord {
  double lat_deg = 0;
  double lon_deg = 0;
  double altitude_m = 0;
};

class WorldFrame {
 public:
  static constexpr uint32_t kFormatVersion = 1;  // of Encode()

  // The source design's Earth (see the file comment).
  static WorldFrame Earth();

  // Validates and builds a frame. Returns INVALID (kInvalidArgument) unless
  // every extent is non-zero and its chunk grid (ceil(extent / chunk_edge),
  // edge chunks may be partial) fits 21 bits; chunk_edge == kChunkEdge (128);
  // voxel_size_m is finite and > 0; sea_level_z < extent_z.
  static StatusOr<WorldFrame> Create(uint64_t extent_x, uint64_t extent_y, uint64_t extent_z,
                                     double voxel_size_m, uint32_t chunk_edge,
                                     uint64_t sea_level_z);

  uint64_t extent_x() const { return extent_[0]; }
  uint64_t extent_y() const { return extent_[1]; }
  uint64_t extent_z() const { return extent_[2]; }
  double voxel_size_m() const { return voxel_size_m_; }
  uint32_t chunk_edge() const { return chunk_edge_; }
  uint64_t sea_level_z() const { return sea_level_z_; }
  // Chunk grid dimensions: ceil(extent / chunk_edge).
  uint32_t chunks_x() const { return chunks_[0]; }
  uint32_t chunks_y() const { return chunks_[1]; }
  uint32_t chunks_z() const { return chunks_[2]; }

  // --- Bounds -------------------------------------------------------------
  bool Contains(const VoxelCoord& v) const {
    return v.x < extent_[0] && v.y < extent_[1] && v.z < extent_[2];
  }
  bool ContainsChunk(const ChunkCoord& c) const {
    return c.x < chunks_[0] && c.y < chunks_[1] && c.z < chunks_[2];
  }
  // OK, or OUT_OF_BOUNDS naming the coordinate.
  Status CheckVoxel(const VoxelCoord& v) const;
  Status CheckChunk(const ChunkCoord& c) const;
  Status CheckBox(const VoxelBox& box) const;  // empty boxes are INVALID
  // The whole world as a box.
  VoxelBox Bounds() const;

  // --- Voxel <-> chunk ----------------------------------------------------
  ChunkCoord ChunkOf(const VoxelCoord& v) const {
    // chunk_edge_ is always kChunkEdge, 128 (Create enforces it): shifts.
    return ChunkCoord{static_cast<uint32_t>(v.x >> kChunkShift),
                      static_cast<uint32_t>(v.y >> kChunkShift),
                      static_cast<uint32_t>(v.z >> kChunkShift)};
  }
  // Offset of v inside its chunk, each axis in [0, chunk_edge).
  ChunkCoord OffsetInChunk(const VoxelCoord& v) const {
    constexpr uint64_t kMask = (uint64_t{1} << kChunkShift) - 1;
    return ChunkCoord{static_cast<uint32_t>(v.x & kMask), static_cast<uint32_t>(v.y & kMask),
                      static_cast<uint32_t>(v.z & kMask)};
  }
  VoxelCoord ChunkOrigin(const ChunkCoord& c) const {
    return VoxelCoord{uint64_t{c.x} * chunk_edge_, uint64_t{c.y} * chunk_edge_,
                      uint64_t{c.z} * chunk_edge_};
  }
  // The voxels of chunk c, clipped to the world (edge chunks may be partial).
  VoxelBox VoxelsOfChunk(const ChunkCoord& c) const;
  // Checked: OUT_OF_BOUNDS outside the world.
  StatusOr<ChunkKey> KeyOf(const VoxelCoord& v) const;

  // --- Voxel <-> metres ---------------------------------------------------
  // The centre of voxel v, in metres from the south-west-bottom corner.
  MetreCoord VoxelCentreMetres(const VoxelCoord& v) const;
  // The voxel containing metre point m; OUT_OF_BOUNDS outside the world.
  StatusOr<VoxelCoord> VoxelAtMetres(const MetreCoord& m) const;

  // --- Metres / voxels <-> lat, lon, altitude (EPSG:4087) ------------------
  GeoCoord MetresToGeo(const MetreCoord& m) const;  // lat, lon clamped to the globe
  MetreCoord GeoToMetres(const GeoCoord& g) const;
  GeoCoord VoxelToGeo(const VoxelCoord& v) const { return MetresToGeo(VoxelCentreMetres(v)); }
  // INVALID for lat outside [-90, 90] or lon outside [-180, 180] or
  // non-finite input; OUT_OF_BOUNDS for an altitude outside the world.
  StatusOr<VoxelCoord> GeoToVoxel(const GeoCoord& g) const;
  // Altitude in metres of the bottom face of voxel layer z.
  double AltitudeOfZ(uint64_t z) const {
    return (static_cast<double>(z) - static_cast<double>(sea_level_z_)) * voxel_size_m_;
  }

  // --- Serialisation ------------------------------------------------------
  // A fixed 56-byte little-endian record (engine/FORMAT.md, "world frame").
  std::vector<uint8_t> Encode() const;
  // CORRUPT on a wrong size or unknown version; INVALID on a frame that
  // Create() would refuse.
  static StatusOr<WorldFrame> Decode(std::span<const uint8_t> bytes);

  std::string ToString() const;
  friend bool operator==(const WorldFrame&, const WorldFrame&) = default;

 private:
  WorldFrame() = default;
  static constexpr int kChunkShift = 7;  // log2 of the chunk edge, 128
  uint64_t extent_[3] = {0, 0, 0};
  uint32_t chunks_[3] = {0, 0, 0};
  double voxel_size_m_ = 0;
  uint32_t chunk_edge_ = 0;
  uint64_t sea_level_z_ = 0;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_WORLD_FRAME_H_
