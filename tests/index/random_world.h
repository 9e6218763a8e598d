// Random worlds of chunks at real places in the Earth frame, and random
// regions and altitude bands over them: what the S2 index tests query
// (tests/index/s2_index_test.cc, node_query_test.cc).
//
// Thread-safety: free functions; each rng is used by one thread.
#ifndef VOXDB_TESTS_INDEX_RANDOM_WORLD_H_
#define VOXDB_TESTS_INDEX_RANDOM_WORLD_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "engine/chunk_codec.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"

namespace voxdb::index::test_world {

using engine::ChunkCoord;
using engine::ChunkKey;

inline const engine::WorldFrame kFrame = engine::WorldFrame::Earth();
inline constexpr uint32_t kSeaCz = 312'500;  // the chunk layer starting at altitude 0

inline std::vector<uint8_t> Uniform(uint8_t material) {
  return engine::EncodeChunk(engine::Chunk(material), 1, 1);
}

// Clusters of chunks at the poles, on both sides of the antimeridian and at
// random places, around sea level.
inline std::vector<ChunkCoord> RandomWorld(std::mt19937_64& rng, int clusters, int per_cluster) {
  const uint32_t nx = kFrame.chunks_x(), ny = kFrame.chunks_y();
  std::vector<std::pair<uint32_t, uint32_t>> centres = {
      {20, ny / 2}, {nx - 21, ny / 2}, {nx / 3, 10}, {nx / 3, ny - 11}, {nx / 2, ny - 1}};
  while (static_cast<int>(centres.size()) < clusters) {
    centres.push_back({static_cast<uint32_t>(rng() % nx), static_cast<uint32_t>(rng() % ny)});
  }
  std::vector<ChunkCoord> out;
  for (auto [cx, cy] : centres) {
    for (int i = 0; i < per_cluster; ++i) {
      const int64_t x = static_cast<int64_t>(cx) + static_cast<int64_t>(rng() % 81) - 40;
      const int64_t y = static_cast<int64_t>(cy) + static_cast<int64_t>(rng() % 81) - 40;
      if (x < 0 || y < 0 || x >= nx || y >= ny) continue;
      out.push_back({static_cast<uint32_t>(x), static_cast<uint32_t>(y),
                     static_cast<uint32_t>(kSeaCz - 3 + rng() % 7)});
    }
  }
  return out;
}

inline S2LatLng Jitter(std::mt19937_64& rng, const S2LatLng& p, double deg) {
  std::uniform_real_distribution<double> u(-deg, deg);
  return S2LatLng::FromDegrees(std::clamp(p.lat().degrees() + u(rng), -90.0, 90.0),
                               std::clamp(p.lng().degrees() + u(rng), -180.0, 180.0));
}

inline Region RandomRegion(std::mt19937_64& rng, const std::vector<ChunkCoord>& world) {
  const ChunkKey near = ChunkKey::FromCoord(world[rng() % world.size()]);
  const S2LatLng c = ChunkCentre(kFrame, near);
  std::uniform_real_distribution<double> u(0, 1);
  switch (rng() % 4) {
    case 0: {
      const double radii[] = {0, 1, 50, 400, 1000, 3000, 20'000, 1e6, 1.2e7, 2.1e7};
      return RadiusRegion{Jitter(rng, c, 0.01), radii[rng() % 10] * (0.5 + u(rng))};
    }
    case 1:
      return CellRegion{ChunkCell(kFrame, near).parent(static_cast<int>(rng() % 31))};
    case 2: {
      const double span = std::pow(10.0, -4 + 4 * u(rng));  // 0.0001 to 1 degree
      const S2LatLng a = Jitter(rng, c, span), b = Jitter(rng, c, span);
      return RectRegion{S2LatLngRect::FromPointPair(a, b)};
    }
    default: {
      const engine::VoxelCoord o = kFrame.ChunkOrigin(near.coord());
      const uint64_t w = 1 + rng() % (128 * 60), h = 1 + rng() % (128 * 60), d = 1 + rng() % 1000;
      const uint64_t x0 = o.x > w / 2 ? o.x - w / 2 : 0, y0 = o.y > h / 2 ? o.y - h / 2 : 0;
      engine::VoxelBox box{
          {x0, y0, o.z - std::min<uint64_t>(o.z, 500)},
          {std::min(x0 + w, kFrame.extent_x()), std::min(y0 + h, kFrame.extent_y()), o.z + d}};
      return BoxRegion{box};
    }
  }
}

inline std::optional<AltitudeBand> RandomBand(std::mt19937_64& rng) {
  if (rng() % 2) return std::nullopt;
  std::uniform_real_distribution<double> u(-150, 150);
  double a = u(rng), b = u(rng);
  if (a > b) std::swap(a, b);
  return AltitudeBand{a, b};
}

}  // namespace voxdb::index::test_world

#endif  // VOXDB_TESTS_INDEX_RANDOM_WORLD_H_
