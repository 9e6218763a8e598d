#include "engine/world_frame.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/testing/status_matchers.h"

namespace voxdb::engine {
namespace {

TEST(WorldFrameTest, EarthMatchesSourceDesign) {
  const WorldFrame f = WorldFrame::Earth();
  EXPECT_EQ(f.extent_x(), 160'300'080u);
  EXPECT_EQ(f.extent_y(), 80'150'040u);
  EXPECT_EQ(f.extent_z(), 80'000'000u);
  EXPECT_EQ(f.chunks_x(), 1'252'345u);
  EXPECT_EQ(f.chunks_y(), 626'173u);
  EXPECT_EQ(f.chunks_z(), 625'000u);
  EXPECT_DOUBLE_EQ(f.voxel_size_m(), 0.25);
  EXPECT_EQ(f.chunk_edge(), 128u);
}

TEST(WorldFrameTest, OutOfRangeIsAnErrorNeverAWrap) {
  const WorldFrame f = WorldFrame::Earth();
  EXPECT_OK(f.CheckVoxel({160'300'079, 80'150'039, 79'999'999}));
  EXPECT_TRUE(IsOutOfBounds(f.CheckVoxel({160'300'080, 0, 0})));
  EXPECT_TRUE(IsOutOfBounds(f.CheckVoxel({0, 80'150'040, 0})));
  EXPECT_TRUE(IsOutOfBounds(f.CheckVoxel({0, 0, 80'000'000})));
  EXPECT_TRUE(IsOutOfBounds(f.KeyOf({UINT64_MAX, 0, 0}).status()));
  EXPECT_TRUE(IsOutOfBounds(f.CheckChunk({1'252'345, 0, 0})));
  EXPECT_OK(f.CheckChunk({1'252'344, 626'172, 624'999}));
  EXPECT_TRUE(IsOutOfBounds(f.VoxelAtMetres({-0.01, 0, 0}).status()));
  EXPECT_TRUE(IsOutOfBounds(f.VoxelAtMetres({NAN, 0, 0}).status()));
  EXPECT_TRUE(IsOutOfBounds(f.GeoToVoxel({0, 0, 1e8}).status()));
  EXPECT_FALSE(f.GeoToVoxel({91, 0, 0}).ok());
  EXPECT_FALSE(f.GeoToVoxel({0, -180.5, 0}).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(f.CheckBox({{5, 5, 5}, {5, 6, 6}})));
  EXPECT_TRUE(IsOutOfBounds(f.CheckBox({{0, 0, 0}, {1, 1, 80'000'001}})));
}

TEST(WorldFrameTest, VoxelChunkConversions) {
  const WorldFrame f = WorldFrame::Earth();
  const VoxelCoord v{1000, 129, 40'000'000};
  EXPECT_EQ(f.ChunkOf(v), (ChunkCoord{7, 1, 312'500}));
  EXPECT_EQ(f.OffsetInChunk(v), (ChunkCoord{1000 - 7 * 128, 1, 0}));
  EXPECT_EQ(f.ChunkOrigin({7, 1, 312'500}), (VoxelCoord{896, 128, 40'000'000}));
  ASSERT_OK_AND_ASSIGN(ChunkKey key, f.KeyOf(v));
  EXPECT_EQ(key.coord(), (ChunkCoord{7, 1, 312'500}));
  // The last chunk on x is partial: 160,300,080 = 1,252,344 * 128 + 48.
  const VoxelBox last = f.VoxelsOfChunk({1'252'344, 0, 0});
  EXPECT_EQ(last.hi.x - last.lo.x, 48u);
}

TEST(WorldFrameTest, GeoRoundTripsAndKnownPoints) {
  const WorldFrame f = WorldFrame::Earth();
  // (lat 0, lon 0, sea level) is the middle of x, the middle of y, z = datum.
  ASSERT_OK_AND_ASSIGN(VoxelCoord origin, f.GeoToVoxel({0, 0, 0}));
  EXPECT_NEAR(static_cast<double>(origin.x), M_PI * kEarthRadiusM / 0.25, 1.0);
  EXPECT_NEAR(static_cast<double>(origin.y), M_PI / 2 * kEarthRadiusM / 0.25, 1.0);
  EXPECT_EQ(origin.z, 40'000'000u);
  // West edge, south pole.
  ASSERT_OK_AND_ASSIGN(VoxelCoord sw, f.GeoToVoxel({-90, -180, -10'000'000}));
  EXPECT_EQ(sw, (VoxelCoord{0, 0, 0}));
  // East edge and north pole clamp into the last voxel.
  ASSERT_OK_AND_ASSIGN(VoxelCoord ne, f.GeoToVoxel({90, 180, 0}));
  EXPECT_LE(ne.x, f.extent_x() - 1);
  EXPECT_LE(ne.y, f.extent_y() - 1);
  for (double lat : {-89.9, -45.0, 0.0, 12.345678, 60.0, 89.9}) {
    for (double lon : {-179.9, -90.0, 0.0, 7.654321, 179.9}) {
      for (double alt : {-9'000'000.0, -10.0, 0.0, 123.4, 8848.0}) {
        ASSERT_OK_AND_ASSIGN(VoxelCoord v, f.GeoToVoxel({lat, lon, alt}));
        const GeoCoord g = f.VoxelToGeo(v);
        // Within one voxel (0.25 m) in each direction.
        EXPECT_NEAR(g.lat_deg, lat, 0.25 / kEarthRadiusM * 180 / M_PI);
        EXPECT_NEAR(g.lon_deg, lon, 0.25 / kEarthRadiusM * 180 / M_PI);
        EXPECT_NEAR(g.altitude_m, alt, 0.25);
      }
    }
  }
  EXPECT_DOUBLE_EQ(f.AltitudeOfZ(40'000'004), 1.0);
}

TEST(WorldFrameTest, EncodeDecodeAndValidation) {
  const WorldFrame f = WorldFrame::Earth();
  ASSERT_OK_AND_ASSIGN(WorldFrame back, WorldFrame::Decode(f.Encode()));
  EXPECT_EQ(back, f);
  ASSERT_OK_AND_ASSIGN(WorldFrame small, WorldFrame::Create(4096, 4096, 4096, 1.0, 128, 2048));
  EXPECT_FALSE(small == f);
  ASSERT_OK_AND_ASSIGN(WorldFrame small_back, WorldFrame::Decode(small.Encode()));
  EXPECT_EQ(small_back, small);
  auto bytes = f.Encode();
  bytes[4] = 9;  // unknown version
  EXPECT_TRUE(IsCorrupt(WorldFrame::Decode(bytes).status()));
  bytes.pop_back();
  EXPECT_TRUE(IsCorrupt(WorldFrame::Decode(bytes).status()));
  EXPECT_FALSE(WorldFrame::Create(0, 1, 1, 0.25, 128, 0).ok());
  EXPECT_FALSE(WorldFrame::Create(1ull << 40, 1, 1, 0.25, 128, 0).ok());  // grid > 21 bits
  EXPECT_FALSE(WorldFrame::Create(128, 128, 128, -1, 128, 0).ok());
  EXPECT_FALSE(WorldFrame::Create(128, 128, 128, 0.25, 64, 0).ok());
  EXPECT_FALSE(WorldFrame::Create(128, 128, 128, 0.25, 128, 128).ok());
}

}  // namespace
}  // namespace voxdb::engine
