#include "tests/testing/terrain.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <tuple>
#include <vector>

namespace voxdb::testing {
namespace {

using ChunkKind = TerrainGenerator::ChunkKind;

constexpr int64_t kSeaZ = 40'000'000;

uint8_t VoxelAt(const std::vector<uint8_t>& dense, int x, int y, int z) {
  return dense[x + kChunkEdge * (y + static_cast<size_t>(kChunkEdge) * z)];
}

bool IsOre(uint8_t m) { return m == kCoalOre || m == kIronOre || m == kGoldOre; }
bool IsSolid(uint8_t m) { return m != kAir && m != kWater; }

bool AllEqual(const std::vector<uint8_t>& dense, uint8_t m) {
  return std::all_of(dense.begin(), dense.end(), [m](uint8_t v) { return v == m; });
}

std::array<size_t, 256> Histogram(const std::vector<uint8_t>& dense) {
  std::array<size_t, 256> h{};
  for (uint8_t m : dense) ++h[m];
  return h;
}

// Air voxels with a solid voxel above them in the same column of the chunk.
size_t CountCaveAir(const std::vector<uint8_t>& dense) {
  size_t n = 0;
  for (int y = 0; y < kChunkEdge; ++y) {
    for (int x = 0; x < kChunkEdge; ++x) {
      bool solid_above = false;
      for (int z = kChunkEdge - 1; z >= 0; --z) {
        const uint8_t m = VoxelAt(dense, x, y, z);
        if (IsSolid(m)) {
          solid_above = true;
        } else if (m == kAir && solid_above) {
          ++n;
        }
      }
    }
  }
  return n;
}

uint64_t Fnv1a(const std::vector<uint8_t>& data) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (uint8_t b : data) {
    h ^= b;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Generates chunks on demand and looks up voxels by world coordinates.
class ChunkCache {
 public:
  explicit ChunkCache(const TerrainGenerator& gen) : gen_(gen) {}
  uint8_t At(uint64_t x, uint64_t y, uint64_t z) {
    const auto key = std::make_tuple(static_cast<uint32_t>(x / kChunkEdge),
                                     static_cast<uint32_t>(y / kChunkEdge),
                                     static_cast<uint32_t>(z / kChunkEdge));
    auto it = chunks_.find(key);
    if (it == chunks_.end()) {
      it = chunks_.emplace(key, gen_.Chunk(std::get<0>(key), std::get<1>(key), std::get<2>(key)))
               .first;
    }
    return VoxelAt(it->second, static_cast<int>(x % kChunkEdge), static_cast<int>(y % kChunkEdge),
                   static_cast<int>(z % kChunkEdge));
  }
  size_t size() const { return chunks_.size(); }

 private:
  const TerrainGenerator& gen_;
  std::map<std::tuple<uint32_t, uint32_t, uint32_t>, std::vector<uint8_t>> chunks_;
};

// A chunk column whose surface is under water at its low corner.
std::array<uint32_t, 2> FindOceanColumn(const TerrainGenerator& gen) {
  for (uint64_t i = 0; i < 100000; ++i) {
    const uint64_t x = 80'000'000 + i * 4099;
    const uint64_t y = 40'000'000 + i * 1733;
    if (gen.SurfaceZ(x, y) < kSeaZ - 40) {
      return {static_cast<uint32_t>(x / kChunkEdge), static_cast<uint32_t>(y / kChunkEdge)};
    }
  }
  ADD_FAILURE() << "no ocean found";
  return {0, 0};
}

TEST(TerrainGeneratorTest, SameSeedGivesIdenticalBytes) {
  TerrainOptions options;
  options.seed = 7;
  const TerrainGenerator a(options), b(options);
  const std::array<uint32_t, 3> c = SampleSurfaceChunkCoords(7);
  EXPECT_EQ(a.Chunk(c[0], c[1], c[2]), b.Chunk(c[0], c[1], c[2]));
  EXPECT_EQ(a.Chunk(c[0], c[1], c[2] - 1), b.Chunk(c[0], c[1], c[2] - 1));
  EXPECT_EQ(SampleSurfaceChunk(1), SampleSurfaceChunk(1));
  EXPECT_EQ(NoiseChunk(3), NoiseChunk(3));
}

TEST(TerrainGeneratorTest, DifferentSeedsDiffer) {
  TerrainOptions o1, o2;
  o1.seed = 1;
  o2.seed = 2;
  const TerrainGenerator g1(o1), g2(o2);
  int same = 0;
  for (uint64_t i = 0; i < 20; ++i) {
    const uint64_t x = 83'266'979 + i * 10'007, y = 60'000'000 + i * 7'919;
    same += g1.SurfaceZ(x, y) == g2.SurfaceZ(x, y);
  }
  EXPECT_LT(same, 5);
  const std::array<uint32_t, 3> c = SampleSurfaceChunkCoords(1);
  EXPECT_NE(g1.Chunk(c[0], c[1], c[2] - 1), g2.Chunk(c[0], c[1], c[2] - 1));
  EXPECT_NE(SampleSurfaceChunk(1), SampleSurfaceChunk(2));
  EXPECT_NE(NoiseChunk(1), NoiseChunk(2));
}

TEST(TerrainGeneratorTest, SkyChunkIsAllAir) {
  const TerrainGenerator gen;
  const std::array<uint32_t, 3> c = SampleSurfaceChunkCoords(1);
  const auto [lo, hi] = gen.VariedChunkZRange(c[0], c[1]);
  ASSERT_LE(lo, c[2]);
  ASSERT_GE(hi, c[2]);
  EXPECT_EQ(gen.Classify(c[0], c[1], hi + 1), ChunkKind::kSky);
  EXPECT_TRUE(AllEqual(gen.Chunk(c[0], c[1], hi + 1), kAir));
  EXPECT_EQ(gen.Classify(c[0], c[1], 600'000), ChunkKind::kSky);
  EXPECT_TRUE(AllEqual(gen.Chunk(c[0], c[1], 600'000), kAir));
}

TEST(TerrainGeneratorTest, DeepRockChunkIsAllStone) {
  const TerrainGenerator gen;
  const std::array<uint32_t, 3> c = SampleSurfaceChunkCoords(1);
  const auto [lo, hi] = gen.VariedChunkZRange(c[0], c[1]);
  ASSERT_GT(lo, 0u);
  EXPECT_EQ(gen.Classify(c[0], c[1], lo - 1), ChunkKind::kDeepRock);
  EXPECT_TRUE(AllEqual(gen.Chunk(c[0], c[1], lo - 1), kStone));
  EXPECT_EQ(gen.Classify(c[0], c[1], 1000), ChunkKind::kDeepRock);
  EXPECT_TRUE(AllEqual(gen.Chunk(c[0], c[1], 1000), kStone));
}

TEST(TerrainGeneratorTest, SampleSurfaceChunkHasAllLayers) {
  const std::vector<uint8_t> dense = SampleSurfaceChunk(1);
  ASSERT_EQ(dense.size(), kChunkVoxels);
  const std::array<size_t, 256> h = Histogram(dense);
  EXPECT_GT(h[kAir], 0u);
  EXPECT_GT(h[kGrass], 0u);
  EXPECT_GT(h[kDirt], 0u);
  EXPECT_GT(h[kStone], 0u);
  EXPECT_GT(h[kCoalOre] + h[kIronOre] + h[kGoldOre], 0u);
  EXPECT_GT(CountCaveAir(dense), 0u);
  for (size_t m = kClay + 1; m < h.size(); ++m) {
    EXPECT_EQ(h[m], 0u) << m;
  }
  // It is the chunk at SampleSurfaceChunkCoords.
  const std::array<uint32_t, 3> c = SampleSurfaceChunkCoords(1);
  const TerrainGenerator gen;
  const std::vector<uint8_t> again = gen.Chunk(c[0], c[1], c[2]);
  EXPECT_EQ(again, dense);
}

TEST(TerrainGeneratorTest, TopSolidVoxelIsSurfaceZ) {
  const TerrainGenerator gen;
  const std::array<uint32_t, 3> land = SampleSurfaceChunkCoords(1);
  const std::array<uint32_t, 2> ocean = FindOceanColumn(gen);
  ChunkCache cache(gen);
  int checked = 0;
  for (const std::array<uint32_t, 2>& col : {std::array<uint32_t, 2>{land[0], land[1]}, ocean}) {
    for (int i = 0; i < 8; ++i) {
      const uint64_t x = uint64_t{col[0]} * kChunkEdge + (i * 37) % kChunkEdge;
      const uint64_t y = uint64_t{col[1]} * kChunkEdge + (i * 53 + 11) % kChunkEdge;
      const int64_t s = gen.SurfaceZ(x, y);
      const uint64_t top = static_cast<uint64_t>(std::max(s, kSeaZ) + 4);
      // Scan down from above the surface (and the sea) to the first solid voxel.
      uint64_t z = top;
      while (!IsSolid(cache.At(x, y, z))) {
        const uint8_t m = cache.At(x, y, z);
        if (static_cast<int64_t>(z) < kSeaZ) {
          EXPECT_EQ(m, kWater) << x << " " << y << " " << z;
        } else {
          EXPECT_EQ(m, kAir) << x << " " << y << " " << z;
        }
        --z;
      }
      EXPECT_EQ(static_cast<int64_t>(z), s) << x << " " << y;
      const uint8_t top_material = cache.At(x, y, z);
      if (s >= kSeaZ + 8) {
        EXPECT_EQ(top_material, kGrass);
        EXPECT_NE(cache.At(x, y, z - 1), kGrass);
      }
      if (s < kSeaZ) {
        EXPECT_EQ(top_material, kSand);
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 16);
}

TEST(TerrainGeneratorTest, NeighbourChunksAgreeAcrossBorders) {
  const TerrainGenerator gen;
  const std::array<uint32_t, 3> c = SampleSurfaceChunkCoords(1);
  ChunkCache cache(gen);
  // Box 1: 64^3 around the corner shared by 8 chunks, in the ore/cave zone.
  // Box 2: around the x/y border where the surface crosses it.
  const uint64_t bx = uint64_t{c[0] + 1} * kChunkEdge;
  const uint64_t by = uint64_t{c[1] + 1} * kChunkEdge;
  const int64_t s = gen.SurfaceZ(bx, by);
  struct Box {
    uint64_t x0, y0, z0;
    int n;
  };
  const Box boxes[] = {{bx - 32, by - 32, uint64_t{c[2]} * kChunkEdge - 32, 64},
                       {bx - 24, by - 24, static_cast<uint64_t>(s - 24), 48}};
  for (const Box& b : boxes) {
    std::vector<uint8_t> box(static_cast<size_t>(b.n) * b.n * b.n);
    gen.FillBox(b.x0, b.y0, b.z0, b.n, b.n, b.n, box.data());
    std::array<size_t, 256> h{};
    size_t mismatches = 0;
    for (int z = 0; z < b.n; ++z) {
      for (int y = 0; y < b.n; ++y) {
        for (int x = 0; x < b.n; ++x) {
          const uint8_t m = box[x + b.n * (y + static_cast<size_t>(b.n) * z)];
          ++h[m];
          mismatches += m != cache.At(b.x0 + x, b.y0 + y, b.z0 + z);
        }
      }
    }
    EXPECT_EQ(mismatches, 0u);
    // The box must be interesting: several materials.
    EXPECT_GE(std::count_if(h.begin(), h.end(), [](size_t n) { return n > 0; }), 3);
  }
  EXPECT_GE(cache.size(), 8u);
  // Single voxels on both sides of each border, generated on their own.
  for (int i = 0; i < 16; ++i) {
    const uint64_t y = by - 64 + i * 7;
    const uint64_t z = static_cast<uint64_t>(gen.SurfaceZ(bx, y) - i * 3);
    EXPECT_EQ(gen.Voxel(bx - 1, y, z), cache.At(bx - 1, y, z));
    EXPECT_EQ(gen.Voxel(bx, y, z), cache.At(bx, y, z));
  }
  // The surface is continuous across the border.
  for (uint64_t y = by - kChunkEdge; y < by; y += 5) {
    EXPECT_LE(std::abs(gen.SurfaceZ(bx - 1, y) - gen.SurfaceZ(bx, y)), 3) << y;
  }
}

TEST(TerrainGeneratorTest, VariedChunkZRangeBoundsHold) {
  const TerrainGenerator gen;
  const std::array<uint32_t, 3> land = SampleSurfaceChunkCoords(1);
  const std::array<uint32_t, 2> ocean = FindOceanColumn(gen);
  const std::array<uint32_t, 2> columns[] = {
      {land[0], land[1]}, {land[0] + 1, land[1]}, ocean, {land[0] + 313, land[1] + 97}};
  for (const std::array<uint32_t, 2>& col : columns) {
    const auto [lo, hi] = gen.VariedChunkZRange(col[0], col[1]);
    ASSERT_LE(lo, hi);
    EXPECT_LE(hi - lo, 8u);  // 64 m zone plus a few metres of relief.
    EXPECT_TRUE(AllEqual(gen.Chunk(col[0], col[1], hi + 1), kAir));
    EXPECT_TRUE(AllEqual(gen.Chunk(col[0], col[1], lo - 1), kStone));
    EXPECT_EQ(gen.Classify(col[0], col[1], hi + 1), ChunkKind::kSky);
    EXPECT_EQ(gen.Classify(col[0], col[1], lo - 1), ChunkKind::kDeepRock);
    int surface_chunks = 0;
    for (uint32_t cz = lo; cz <= hi; ++cz) {
      const std::vector<uint8_t> dense = gen.Chunk(col[0], col[1], cz);
      const std::array<size_t, 256> h = Histogram(dense);
      switch (gen.Classify(col[0], col[1], cz)) {
        case ChunkKind::kSky:
          EXPECT_EQ(h[kAir], kChunkVoxels);
          break;
        case ChunkKind::kDeepRock:
          EXPECT_EQ(h[kStone], kChunkVoxels);
          break;
        case ChunkKind::kUnderground:
          // At or below every column's surface: no water, all air is cave air.
          EXPECT_EQ(h[kWater], 0u);
          for (int y = 0; y < kChunkEdge; y += 9) {
            for (int x = 0; x < kChunkEdge; x += 9) {
              EXPECT_GE(gen.SurfaceZ(uint64_t{col[0]} * kChunkEdge + x,
                                     uint64_t{col[1]} * kChunkEdge + y),
                        int64_t{cz} * kChunkEdge + kChunkEdge - 1);
            }
          }
          break;
        case ChunkKind::kSurface:
          ++surface_chunks;
          EXPECT_GT(h[kAir] + h[kWater], 0u);
          EXPECT_GT(kChunkVoxels - h[kAir] - h[kWater], 0u);
          break;
      }
    }
    EXPECT_GE(surface_chunks, 1);
  }
}

TEST(TerrainGeneratorTest, OreCaveAndSoilFractionsAreSensible) {
  const TerrainGenerator gen;
  const std::array<uint32_t, 3> land = SampleSurfaceChunkCoords(1);
  size_t zone = 0, ore = 0, cave = 0, soil = 0, gravel = 0, clay = 0;
  std::array<size_t, 256> h{};
  for (uint32_t dx = 0; dx < 2; ++dx) {
    const uint32_t cx = land[0] + dx * 17, cy = land[1];
    std::vector<int64_t> surface(static_cast<size_t>(kChunkEdge) * kChunkEdge);
    for (int y = 0; y < kChunkEdge; ++y) {
      for (int x = 0; x < kChunkEdge; ++x) {
        surface[x + kChunkEdge * y] =
            gen.SurfaceZ(uint64_t{cx} * kChunkEdge + x, uint64_t{cy} * kChunkEdge + y);
      }
    }
    const auto [lo, hi] = gen.VariedChunkZRange(cx, cy);
    for (uint32_t cz = lo; cz <= hi; ++cz) {
      const std::vector<uint8_t> dense = gen.Chunk(cx, cy, cz);
      for (int z = 0; z < kChunkEdge; ++z) {
        for (int y = 0; y < kChunkEdge; ++y) {
          for (int x = 0; x < kChunkEdge; ++x) {
            const uint8_t m = VoxelAt(dense, x, y, z);
            ++h[m];
            const int64_t depth = surface[x + kChunkEdge * y] - (int64_t{cz} * kChunkEdge + z);
            // Stone zone: below the thickest soil, above the 64 m limit.
            if (depth > 24 && depth <= 256) {
              ++zone;
              ore += IsOre(m);
              cave += m == kAir;
            }
            if (depth > 256) {
              EXPECT_EQ(m, kStone);
            }
            if (m == kDirt || m == kSand || m == kGravel || m == kClay) {
              ++soil;
              gravel += m == kGravel;
              clay += m == kClay;
            }
          }
        }
      }
    }
  }
  ASSERT_GT(zone, 0u);
  ASSERT_GT(soil, 0u);
  const double ore_fraction = static_cast<double>(ore) / zone;
  const double cave_fraction = static_cast<double>(cave) / zone;
  EXPECT_GT(ore_fraction, 0.005);
  EXPECT_LT(ore_fraction, 0.03);
  EXPECT_GT(cave_fraction, 0.01);
  EXPECT_LT(cave_fraction, 0.12);
  EXPECT_GT(h[kCoalOre], h[kIronOre]);
  EXPECT_GT(h[kIronOre], h[kGoldOre]);
  EXPECT_GT(h[kGoldOre], 0u);
  EXPECT_GT(static_cast<double>(gravel) / soil, 0.003);
  EXPECT_LT(static_cast<double>(gravel) / soil, 0.12);
  EXPECT_GT(static_cast<double>(clay) / soil, 0.002);
  EXPECT_LT(static_cast<double>(clay) / soil, 0.12);
}

TEST(TerrainGeneratorTest, HeightFieldLooksLikeTerrain) {
  const TerrainGenerator gen;
  std::vector<int64_t> altitude;
  uint64_t state = 12345;
  auto next = [&state]() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 16;
  };
  for (int i = 0; i < 2000; ++i) {
    const uint64_t x = next() % 160'300'080, y = next() % 80'150'040;
    altitude.push_back(gen.SurfaceZ(x, y) - kSeaZ);
  }
  std::sort(altitude.begin(), altitude.end());
  const auto ocean =
      std::count_if(altitude.begin(), altitude.end(), [](int64_t a) { return a < 0; });
  EXPECT_GT(ocean, 100);              // > 5 %
  EXPECT_LT(ocean, 800);              // < 40 %
  EXPECT_GT(altitude[1000], 20 * 4);  // Median land tens of metres up.
  EXPECT_LT(altitude[1000], 120 * 4);
  EXPECT_LT(altitude[1990], 400 * 4);  // Hills, not the Himalaya.
  EXPECT_GT(altitude[1990], 80 * 4);
  // Within a chunk the surface varies by several metres.
  std::vector<int64_t> relief;
  for (int i = 0; i < 20; ++i) {
    const uint64_t cx = next() % 1'252'344, cy = next() % 626'172;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int y = 0; y < kChunkEdge; y += 16) {
      for (int x = 0; x < kChunkEdge; x += 16) {
        const int64_t s = gen.SurfaceZ(cx * kChunkEdge + x, cy * kChunkEdge + y);
        lo = std::min(lo, s);
        hi = std::max(hi, s);
      }
    }
    relief.push_back(hi - lo);
  }
  std::sort(relief.begin(), relief.end());
  EXPECT_GE(relief[10], 8);    // >= 2 m
  EXPECT_LE(relief[10], 200);  // <= 50 m
}

TEST(TerrainGeneratorTest, UniformAndNoiseChunks) {
  const std::vector<uint8_t> u = UniformChunk(kDirt);
  ASSERT_EQ(u.size(), kChunkVoxels);
  EXPECT_TRUE(AllEqual(u, kDirt));
  const std::vector<uint8_t> n = NoiseChunk(5);
  ASSERT_EQ(n.size(), kChunkVoxels);
  const std::array<size_t, 256> h = Histogram(n);
  const size_t expected = kChunkVoxels / 256;
  for (size_t v = 0; v < 256; ++v) {
    EXPECT_GT(h[v], expected * 9 / 10) << v;
    EXPECT_LT(h[v], expected * 11 / 10) << v;
  }
}

TEST(TerrainGeneratorTest, ClassifyFarFromSurfaceIsCheapAndCorrect) {
  const TerrainGenerator gen;
  // Thousands of calls far from the surface must not compute height maps.
  int sky = 0, deep = 0;
  for (uint32_t cz = 0; cz < 625'000; cz += 157) {
    const ChunkKind kind = gen.Classify(5000, 7000, cz);
    sky += kind == ChunkKind::kSky;
    deep += kind == ChunkKind::kDeepRock;
  }
  EXPECT_GT(sky, 1900);
  EXPECT_GT(deep, 1900);
}

// Pins the canonical world. Platform- or compiler-dependent arithmetic would
// break this; so does any change of the defaults (then update the values).
TEST(TerrainGeneratorTest, CanonicalOutputIsPinned) {
  const std::array<uint32_t, 3> c = SampleSurfaceChunkCoords(1);
  EXPECT_EQ(c[0], 650'523u);
  EXPECT_EQ(c[1], 469'629u);
  EXPECT_EQ(c[2], 312'501u);
  EXPECT_EQ(Fnv1a(SampleSurfaceChunk(1)), 16859654230809934150ULL);
  const TerrainGenerator gen;
  // The starting column of the sample search (45 N, 7 E), 53.5 m above sea level.
  EXPECT_EQ(gen.SurfaceZ(83'266'979, 60'112'525), 40'000'214);
}

}  // namespace
}  // namespace voxdb::testing
