// A deterministic, seeded terrain generator for tests and benchmarks.
//
// It produces game-like voxel terrain in the voxdb world frame: a fractal
// (fBm, Perlin) height field with ocean and land, a grass or sand top voxel,
// a few metres of dirt (with gravel and clay patches), stone below, ore blobs
// and caves in the stone near the surface, and pure stone deeper down. The
// data is meant to look like real game terrain so that codec benchmarks on it
// are meaningful.
//
// Every voxel's material is a function of its world voxel coordinates and the
// options only, so chunk borders are seamless and any box can be generated on
// its own. All arithmetic is integer (fixed point) with our own hashing, so a
// seed gives byte-identical output on every platform and compiler.
//
// Coordinates: world voxel coordinates are unsigned (x east, y north, z up);
// chunk coordinates are voxel / 128. A dense chunk is laid out x fastest:
// index = x + 128 * (y + 128 * z).
//
// Example:
//   voxdb::testing::TerrainGenerator gen;  // seed 1
//   auto [lo, hi] = gen.VariedChunkZRange(cx, cy);
//   for (uint32_t cz = lo; cz <= hi; ++cz) {
//     std::vector<uint8_t> dense = gen.Chunk(cx, cy, cz);
//     ...
//   }
//
// Thread-safety: TerrainGenerator is immutable after construction; all its
// const methods may be called concurrently.
#ifndef VOXDB_TESTS_TESTING_TERRAIN_H_
#define VOXDB_TESTS_TESTING_TERRAIN_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace voxdb::testing {

// Material ids written by the generator. 0 is air.
enum Material : uint8_t {
  kAir = 0,
  kStone = 1,
  kDirt = 2,
  kGrass = 3,
  kSand = 4,
  kWater = 5,
  kGravel = 6,
  kCoalOre = 7,
  kIronOre = 8,
  kGoldOre = 9,
  kClay = 10,
};

// Edge of a chunk in voxels, and voxels in a chunk.
inline constexpr int kChunkEdge = 128;
inline constexpr size_t kChunkVoxels = size_t{kChunkEdge} * kChunkEdge * kChunkEdge;

// Parameters of the generated world. The defaults give the canonical world;
// benchmarks should keep them so that results stay comparable.
struct TerrainOptions {
  uint64_t seed = 1;                  // Everything derives from this.
  uint64_t sea_level_z = 40'000'000;  // World voxel z of altitude 0.
  double voxel_size_m = 0.25;         // Edge of a voxel in metres (> 0).

  // Height field: base_height_m + sum of Perlin octaves (each noise value is
  // in about [-0.7, 0.7], times the octave's amplitude).
  double base_height_m = 50.0;  // Altitude the height field varies around.
  std::array<double, 7> octave_wavelengths_m = {8192, 2048, 512, 128, 32, 8, 2};  // fBm octaves.
  std::array<double, 7> octave_amplitudes_m = {170, 140, 45, 12, 3.5, 0.9, 0.3};  // Per octave.
  double roughness_max_wavelength_m = 128;  // Octaves this short or shorter are "roughness".
  double roughness_wavelength_m = 1024;     // Wavelength of the noise that scales roughness.
  double roughness_variation = 0.8;         // Roughness scale is 1 +- this * noise (0 = uniform).

  // Soil.
  double beach_height_m = 1.5;           // Columns lower than this altitude get sand, not grass.
  double min_soil_m = 2.0;               // Thinnest dirt layer under the top voxel.
  double max_soil_m = 5.0;               // Thickest dirt layer under the top voxel.
  double soil_wavelength_m = 24.0;       // Wavelength of the soil thickness variation.
  double soil_patch_wavelength_m = 3.0;  // Wavelength of the gravel/clay patch noise.
  double gravel_threshold = 0.42;        // Patch noise above this is gravel (lower = more gravel).
  double clay_threshold = 0.47;  // Patch noise below minus this is clay (lower = more clay).

  // Ores and caves live in stone at most variation_depth_m below the column's
  // surface; everything deeper is pure stone.
  double variation_depth_m = 64.0;    // Depth of the ore and cave zone below the surface.
  double coal_blob_chance = 0.36;     // Chance that an 8^3-voxel cell holds a coal blob.
  double iron_blob_chance = 0.17;     // Chance that an 8^3-voxel cell holds an iron blob.
  double gold_blob_chance = 0.05;     // Chance that an 8^3-voxel cell holds a gold blob.
  double iron_min_depth_m = 8.0;      // Iron only this deep below the surface or deeper.
  double gold_min_depth_m = 24.0;     // Gold only this deep below the surface or deeper.
  double cave_min_depth_m = 4.0;      // Caves start at least this deep below the surface.
  double cave_fade_m = 6.0;           // Caves widen over this depth range at the zone edges.
  double tunnel_wavelength_m = 40.0;  // Horizontal wavelength of the tunnel noises.
  double tunnel_radius = 0.09;        // Tunnels where a^2 + b^2 < this^2 (a, b: tunnel noises).
  double pocket_wavelength_m = 24.0;  // Horizontal wavelength of the cave pocket noise.
  double pocket_threshold = 0.6;      // Pockets where the pocket noise exceeds this.
};

namespace terrain_internal {

// One Perlin noise octave: its own hash seed, a per-axis coordinate offset (so
// octaves do not share lattice points) and a per-axis wavelength in voxels.
struct NoiseField {
  uint64_t seed = 0;
  std::array<uint64_t, 3> offset = {0, 0, 0};
  std::array<uint64_t, 3> wavelength = {2, 2, 2};
  int64_t amplitude_q16 = 0;  // Multiplier of the noise value, 16.16 fixed point.
};

}  // namespace terrain_internal

// Generates the terrain described by a TerrainOptions.
class TerrainGenerator {
 public:
  // What a chunk contains, decided without generating its voxels.
  enum class ChunkKind {
    kSky,          // All air.
    kSurface,      // Has air or water above the ground (and usually ground).
    kUnderground,  // No voxel above its column's surface: ground, ores and caves only.
    kDeepRock,     // All stone.
  };

  explicit TerrainGenerator(const TerrainOptions& options = {});

  const TerrainOptions& options() const { return options_; }

  // World voxel z of the top solid voxel of column (x, y) (world voxel coords).
  // Water is not solid: in the ocean this is the sea floor.
  int64_t SurfaceZ(uint64_t x, uint64_t y) const;

  // Writes the 128^3 chunk at chunk coords (cx, cy, cz) into dense (kChunkVoxels bytes).
  void FillChunk(uint32_t cx, uint32_t cy, uint32_t cz, uint8_t* dense) const;
  std::vector<uint8_t> Chunk(uint32_t cx, uint32_t cy, uint32_t cz) const;

  // Writes the box of nx * ny * nz voxels whose low corner is world voxel
  // (x0, y0, z0) into out, x fastest: out[x + nx * (y + ny * z)]. Each voxel
  // is identical to the one FillChunk writes for the same world coordinates.
  void FillBox(uint64_t x0, uint64_t y0, uint64_t z0, int nx, int ny, int nz, uint8_t* out) const;

  // The material of one world voxel (slow: use FillChunk/FillBox for bulk).
  uint8_t Voxel(uint64_t x, uint64_t y, uint64_t z) const;

  // Classification without generating voxels (sky = all air; deep rock = all stone).
  // O(1) far from the surface; near it, costs one 128 x 128 height map (~0.5 ms).
  ChunkKind Classify(uint32_t cx, uint32_t cy, uint32_t cz) const;

  // Min and max chunk z that contain any surface/soil/water/cave/ore variation in column (cx, cy):
  // everything above is sky, everything below is deep rock. The bounds are
  // conservative: the end chunks may happen to hold no variation (e.g. no ore
  // or cave reached the bottom one). Costs one 128 x 128 height map (~0.5 ms).
  std::pair<uint32_t, uint32_t> VariedChunkZRange(uint32_t cx, uint32_t cy) const;

 private:
  using NoiseField = terrain_internal::NoiseField;

  // Surface z of the nx * ny columns from (x0, y0), into out[x + nx * y].
  void ComputeSurface(uint64_t x0, uint64_t y0, int nx, int ny, int64_t* out) const;
  // Min and max surface z over the 128 x 128 columns of chunk column (cx, cy).
  std::pair<int64_t, int64_t> ChunkSurfaceRange(uint32_t cx, uint32_t cy) const;
  // Paints ore blobs into the box (first pass already written to out).
  void PaintOres(uint64_t x0, uint64_t y0, uint64_t z0, int nx, int ny, int nz,
                 const int64_t* surface, int64_t zmin, int64_t zmax, uint8_t* out) const;

  TerrainOptions options_;
  int64_t sea_z_;  // options_.sea_level_z as a signed value.

  // Height field.
  int64_t base_height_q16_;                // base_height_m in voxels, 16.16 fixed point.
  std::vector<NoiseField> low_octaves_;    // Octaves longer than the roughness limit.
  std::vector<NoiseField> rough_octaves_;  // Octaves scaled by the roughness noise.
  NoiseField roughness_;                   // Scales rough_octaves_.
  int64_t surface_bound_lo_;               // No column's surface is below this z.
  int64_t surface_bound_hi_;               // No column's surface is above this z.

  // Soil.
  NoiseField soil_depth_;    // Thickness of the dirt layer.
  NoiseField soil_patch_;    // Gravel and clay patches (3D).
  int64_t beach_voxels_;     // Altitude below which the top is sand, in voxels.
  int64_t min_soil_voxels_;  // Thinnest dirt layer.
  int64_t max_soil_voxels_;  // Thickest dirt layer.
  int64_t gravel_threshold_q16_;
  int64_t clay_threshold_q16_;

  // Ores and caves.
  int64_t band_voxels_;     // Depth of the ore and cave zone.
  uint64_t ore_seed_;       // Seed of the ore blob placement.
  uint64_t coal_limit_;     // Cell hash (32 bits) below this: coal blob.
  uint64_t iron_limit_;     // ... below this (and not coal): iron blob.
  uint64_t gold_limit_;     // ... below this (and not iron): gold blob.
  int64_t iron_min_depth_;  // In voxels.
  int64_t gold_min_depth_;  // In voxels.
  int64_t cave_min_depth_;  // In voxels.
  NoiseField tunnel_a_;     // Tunnels are where tunnel_a_ and tunnel_b_ are both near 0.
  NoiseField tunnel_b_;
  NoiseField pocket_a_;  // Pockets where pocket_a_ + pocket_b_ is large.
  NoiseField pocket_b_;
  int64_t tunnel_radius_q16_;
  int64_t pocket_threshold_q16_;
  std::vector<int32_t> cave_fade_q16_;  // Cave strength by depth below the surface, [0, 1].
};

// Canonical sample chunks for codec tests and benchmarks:
// A land chunk cut by the surface, with grass, dirt, stone, ores and a cave.
std::vector<uint8_t> SampleSurfaceChunk(uint64_t seed = 1);
// The chunk coordinates SampleSurfaceChunk(seed) returns.
std::array<uint32_t, 3> SampleSurfaceChunkCoords(uint64_t seed = 1);
// A chunk of one material.
std::vector<uint8_t> UniformChunk(uint8_t material);
// Independent uniformly random bytes 0..255.
std::vector<uint8_t> NoiseChunk(uint64_t seed);

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_TERRAIN_H_
