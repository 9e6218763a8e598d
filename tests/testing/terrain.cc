#include "tests/testing/terrain.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace voxdb::testing {
namespace {

using terrain_internal::NoiseField;

// 1.0 in 16.16 fixed point. All noise values are in this format.
constexpr int64_t kOne = int64_t{1} << 16;
// Caves and soil patches are evaluated on a lattice of this spacing (voxels)
// aligned to world multiples of it, and trilinearly interpolated in between.
constexpr int kLatticeShift = 2;
constexpr int kLattice = 1 << kLatticeShift;
// Ore blobs: one potential blob per cell of kOreCell^3 voxels.
constexpr int kOreCell = 8;
// Ore blob radii are kOreMinRadius + [0, kOreRadiusRange), in 1/256 voxel.
constexpr int64_t kOreMinRadius = 230;
constexpr int64_t kOreRadiusRange = 333;

// splitmix64 finalizer.
uint64_t Mix(uint64_t z) {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9ULL;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return z;
}

// Hash of a lattice point. Callers pass unsigned coordinates, so results do
// not depend on the platform.
uint64_t Hash(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  return Mix(seed + a * 0x9e3779b97f4a7c15ULL + b * 0xc2b2ae3d27d4eb4fULL +
             c * 0x165667b19e3779f9ULL);
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t ToQ16(double v) { return std::llround(v * static_cast<double>(kOne)); }

int64_t ToVoxels(double metres, double voxel_size_m) { return std::llround(metres / voxel_size_m); }

// Quintic fade 6t^5 - 15t^4 + 10t^3 of t in [0, 1), all 16.16.
int64_t Fade(int64_t t) {
  const int64_t t2 = (t * t) >> 16;
  const int64_t t3 = (t2 * t) >> 16;
  const int64_t inner = (((6 * t - 15 * kOne) * t) >> 16) + 10 * kOne;
  return (t3 * inner) >> 16;
}

int64_t Lerp16(int64_t a, int64_t b, int64_t f) { return a + (((b - a) * f) >> 16); }

int64_t LerpLattice(int64_t a, int64_t b, int64_t t) {
  return a + (((b - a) * t) >> kLatticeShift);
}

// Unit gradients at multiples of 22.5 degrees, 16.16.
struct Grad2 {
  int32_t x, y;
};
constexpr Grad2 kGrad2[16] = {
    {65536, 0},  {60547, 25080},   {46341, 46341},   {25080, 60547},
    {0, 65536},  {-25080, 60547},  {-46341, 46341},  {-60547, 25080},
    {-65536, 0}, {-60547, -25080}, {-46341, -46341}, {-25080, -60547},
    {0, -65536}, {25080, -60547},  {46341, -46341},  {60547, -25080},
};

// Improved-Perlin 3D gradients (cube edge midpoints, padded to 16).
struct Grad3 {
  int8_t x, y, z;
};
constexpr Grad3 kGrad3[16] = {
    {1, 1, 0}, {-1, 1, 0}, {1, -1, 0}, {-1, -1, 0}, {1, 0, 1}, {-1, 0, 1}, {1, 0, -1}, {-1, 0, -1},
    {0, 1, 1}, {0, -1, 1}, {0, 1, -1}, {0, -1, -1}, {1, 1, 0}, {-1, 1, 0}, {0, -1, 1}, {0, -1, -1},
};

// Noise lattice coordinates of a run of sample positions along one axis.
struct Axis {
  uint64_t base_cell = 0;     // Noise cell of the first sample.
  int num_cells = 0;          // Cells spanned (relative cells are 0..num_cells-1).
  std::vector<int32_t> cell;  // Cell of each sample, relative to base_cell.
  std::vector<int32_t> t;     // Position inside the cell, 16.16 in [0, 1).
  std::vector<int32_t> fade;  // Fade(t).
};

// Samples at world coordinates start + i * step, i in [0, count).
Axis MakeAxis(uint64_t start, uint64_t step, int count, uint64_t offset, uint64_t wavelength) {
  Axis axis;
  axis.cell.resize(count);
  axis.t.resize(count);
  axis.fade.resize(count);
  for (int i = 0; i < count; ++i) {
    const uint64_t p = start + static_cast<uint64_t>(i) * step + offset;
    const uint64_t c = p / wavelength;
    const uint64_t r = p - c * wavelength;
    if (i == 0) axis.base_cell = c;
    axis.cell[i] = static_cast<int32_t>(c - axis.base_cell);
    axis.t[i] = static_cast<int32_t>((r << 16) / wavelength);
    axis.fade[i] = static_cast<int32_t>(Fade(axis.t[i]));
  }
  axis.num_cells = count > 0 ? axis.cell[count - 1] + 1 : 0;
  return axis;
}

// acc[x + nx * y] += amplitude * perlin(x0 + x, y0 + y), everything 16.16.
void AddNoise2(const NoiseField& field, uint64_t x0, uint64_t y0, int nx, int ny, int64_t* acc) {
  const Axis ax = MakeAxis(x0, 1, nx, field.offset[0], field.wavelength[0]);
  const Axis ay = MakeAxis(y0, 1, ny, field.offset[1], field.wavelength[1]);
  const int gw = ax.num_cells + 1;
  const int gh = ay.num_cells + 1;
  std::vector<uint8_t> grads(static_cast<size_t>(gw) * gh);
  for (int j = 0; j < gh; ++j) {
    for (int i = 0; i < gw; ++i) {
      grads[static_cast<size_t>(j) * gw + i] =
          static_cast<uint8_t>(Hash(field.seed, ax.base_cell + i, ay.base_cell + j, 0) >> 60);
    }
  }
  const int64_t amp = field.amplitude_q16;
  for (int y = 0; y < ny; ++y) {
    const int64_t ty = ay.t[y];
    const int64_t fy = ay.fade[y];
    const uint8_t* g0 = &grads[static_cast<size_t>(ay.cell[y]) * gw];
    const uint8_t* g1 = g0 + gw;
    int64_t* row = acc + static_cast<size_t>(y) * nx;
    for (int x = 0; x < nx; ++x) {
      const int cx = ax.cell[x];
      const int64_t tx = ax.t[x];
      const Grad2& a = kGrad2[g0[cx]];
      const Grad2& b = kGrad2[g0[cx + 1]];
      const Grad2& c = kGrad2[g1[cx]];
      const Grad2& d = kGrad2[g1[cx + 1]];
      const int64_t d00 = (a.x * tx + a.y * ty) >> 16;
      const int64_t d10 = (b.x * (tx - kOne) + b.y * ty) >> 16;
      const int64_t d01 = (c.x * tx + c.y * (ty - kOne)) >> 16;
      const int64_t d11 = (d.x * (tx - kOne) + d.y * (ty - kOne)) >> 16;
      const int64_t fx = ax.fade[x];
      const int64_t n = Lerp16(Lerp16(d00, d10, fx), Lerp16(d01, d11, fx), fy);
      row[x] += (n * amp) >> 16;
    }
  }
}

// A box of noise lattice points (world coordinates kLattice * index).
struct Lattice {
  uint64_t lx0 = 0, ly0 = 0, lz0 = 0;  // Lattice index of the first point per axis.
  int nx = 0, ny = 0, nz = 0;          // Points per axis.
  // Per lattice column (i + nx * j): inclusive range of point indices k that
  // are needed; kmin > kmax if none.
  std::vector<int32_t> kmin, kmax;
  size_t Index(int i, int j, int k) const { return (static_cast<size_t>(k) * ny + j) * nx + i; }
  size_t size() const { return static_cast<size_t>(nx) * ny * nz; }
};

// out[point] += amplitude * perlin3(point) for the needed lattice points.
void AddNoise3(const NoiseField& field, const Lattice& lat, int32_t* out) {
  const Axis ax =
      MakeAxis(lat.lx0 << kLatticeShift, kLattice, lat.nx, field.offset[0], field.wavelength[0]);
  const Axis ay =
      MakeAxis(lat.ly0 << kLatticeShift, kLattice, lat.ny, field.offset[1], field.wavelength[1]);
  const Axis az =
      MakeAxis(lat.lz0 << kLatticeShift, kLattice, lat.nz, field.offset[2], field.wavelength[2]);
  const int gx = ax.num_cells + 1;
  const int gy = ay.num_cells + 1;
  const int gz = az.num_cells + 1;
  std::vector<uint8_t> grads(static_cast<size_t>(gx) * gy * gz);
  for (int k = 0; k < gz; ++k) {
    for (int j = 0; j < gy; ++j) {
      for (int i = 0; i < gx; ++i) {
        grads[(static_cast<size_t>(k) * gy + j) * gx + i] = static_cast<uint8_t>(
            Hash(field.seed, ax.base_cell + i, ay.base_cell + j, az.base_cell + k) >> 60);
      }
    }
  }
  const int64_t amp = field.amplitude_q16;
  const size_t sy = gx;
  const size_t sz = static_cast<size_t>(gx) * gy;
  for (int j = 0; j < lat.ny; ++j) {
    for (int i = 0; i < lat.nx; ++i) {
      const int col = i + lat.nx * j;
      const int64_t tx = ax.t[i], ty = ay.t[j];
      const int64_t fx = ax.fade[i], fy = ay.fade[j];
      for (int k = lat.kmin[col]; k <= lat.kmax[col]; ++k) {
        const int64_t tz = az.t[k];
        const uint8_t* g =
            &grads[static_cast<size_t>(az.cell[k]) * sz + static_cast<size_t>(ay.cell[j]) * sy +
                   static_cast<size_t>(ax.cell[i])];
        auto dot = [&](size_t off, int64_t px, int64_t py, int64_t pz) {
          const Grad3& v = kGrad3[g[off]];
          return v.x * px + v.y * py + v.z * pz;
        };
        const int64_t ux = tx - kOne, uy = ty - kOne, uz = tz - kOne;
        const int64_t x00 = Lerp16(dot(0, tx, ty, tz), dot(1, ux, ty, tz), fx);
        const int64_t x10 = Lerp16(dot(sy, tx, uy, tz), dot(sy + 1, ux, uy, tz), fx);
        const int64_t x01 = Lerp16(dot(sz, tx, ty, uz), dot(sz + 1, ux, ty, uz), fx);
        const int64_t x11 = Lerp16(dot(sz + sy, tx, uy, uz), dot(sz + sy + 1, ux, uy, uz), fx);
        const int64_t n = Lerp16(Lerp16(x00, x10, fy), Lerp16(x01, x11, fy), az.fade[k]);
        out[lat.Index(i, j, k)] += static_cast<int32_t>((n * amp) >> 16);
      }
    }
  }
}

NoiseField MakeField(uint64_t world_seed, uint64_t id, double wavelength_xy_m,
                     double wavelength_z_m, double amplitude, double voxel_size_m) {
  NoiseField f;
  f.seed = Mix(Mix(world_seed ^ 0x5eed5eed5eed5eedULL) + id * 0x9e3779b97f4a7c15ULL);
  for (int i = 0; i < 3; ++i) f.offset[i] = Mix(f.seed + 1 + i) & 0xffffffffULL;
  const int64_t wxy = std::max<int64_t>(2, ToVoxels(wavelength_xy_m, voxel_size_m));
  const int64_t wz = std::max<int64_t>(2, ToVoxels(wavelength_z_m, voxel_size_m));
  f.wavelength = {static_cast<uint64_t>(wxy), static_cast<uint64_t>(wxy),
                  static_cast<uint64_t>(wz)};
  f.amplitude_q16 = ToQ16(amplitude);
  return f;
}

// Ids of the noise fields (for MakeField). Octave k of the height field is k.
enum FieldId : uint64_t {
  kRoughnessField = 100,
  kSoilDepthField,
  kSoilPatchField,
  kTunnelAField,
  kTunnelBField,
  kPocketAField,
  kPocketBField,
  kOreSeed,
};

bool IsStoneOrOre(uint8_t m) {
  return m == kStone || m == kCoalOre || m == kIronOre || m == kGoldOre;
}

}  // namespace

TerrainGenerator::TerrainGenerator(const TerrainOptions& options)
    : options_(options), sea_z_(static_cast<int64_t>(options.sea_level_z)) {
  const double v = options_.voxel_size_m;
  const uint64_t seed = options_.seed;
  base_height_q16_ = ToQ16(options_.base_height_m / v);
  int64_t low_bound = 0, rough_bound = 0;  // Sum of |amplitude|, 16.16 voxels.
  for (size_t k = 0; k < options_.octave_wavelengths_m.size(); ++k) {
    const double wl = options_.octave_wavelengths_m[k];
    NoiseField f = MakeField(seed, k, wl, wl, options_.octave_amplitudes_m[k] / v, v);
    if (wl <= options_.roughness_max_wavelength_m) {
      rough_bound += std::abs(f.amplitude_q16);
      rough_octaves_.push_back(f);
    } else {
      low_bound += std::abs(f.amplitude_q16);
      low_octaves_.push_back(f);
    }
  }
  roughness_ = MakeField(seed, kRoughnessField, options_.roughness_wavelength_m,
                         options_.roughness_wavelength_m, options_.roughness_variation, v);
  // |perlin2| <= sqrt(2) < 1.5 (unit gradients, convex interpolation), so the
  // roughness factor is at most 1 + 1.5 * |variation|.
  const int64_t max_factor = kOne + 3 * std::abs(roughness_.amplitude_q16) / 2;
  const int64_t bound = (3 * low_bound / 2) + ((3 * rough_bound / 2) * max_factor >> 16);
  surface_bound_lo_ = sea_z_ + ((base_height_q16_ - bound) >> 16) - 2;
  surface_bound_hi_ = sea_z_ + ((base_height_q16_ + bound) >> 16) + 2;

  soil_depth_ = MakeField(seed, kSoilDepthField, options_.soil_wavelength_m,
                          options_.soil_wavelength_m, 1.0, v);
  soil_patch_ = MakeField(seed, kSoilPatchField, options_.soil_patch_wavelength_m,
                          options_.soil_patch_wavelength_m, 1.0, v);
  beach_voxels_ = ToVoxels(options_.beach_height_m, v);
  min_soil_voxels_ = std::max<int64_t>(0, ToVoxels(options_.min_soil_m, v));
  max_soil_voxels_ = std::max<int64_t>(min_soil_voxels_, ToVoxels(options_.max_soil_m, v));
  gravel_threshold_q16_ = ToQ16(options_.gravel_threshold);
  clay_threshold_q16_ = ToQ16(options_.clay_threshold);

  band_voxels_ = std::max<int64_t>(0, ToVoxels(options_.variation_depth_m, v));
  ore_seed_ = MakeField(seed, kOreSeed, 2, 2, 0, v).seed;
  auto limit = [](double chance) {
    return static_cast<uint64_t>(std::llround(std::clamp(chance, 0.0, 1.0) * 4294967296.0));
  };
  coal_limit_ = limit(options_.coal_blob_chance);
  iron_limit_ = std::min<uint64_t>(coal_limit_ + limit(options_.iron_blob_chance), 1ULL << 32);
  gold_limit_ = std::min<uint64_t>(iron_limit_ + limit(options_.gold_blob_chance), 1ULL << 32);
  iron_min_depth_ = ToVoxels(options_.iron_min_depth_m, v);
  gold_min_depth_ = ToVoxels(options_.gold_min_depth_m, v);
  cave_min_depth_ = std::max<int64_t>(1, ToVoxels(options_.cave_min_depth_m, v));

  // Caves: vertical wavelengths are half the horizontal ones, so tunnels run
  // mostly horizontally and pockets are wider than tall.
  const double tw = options_.tunnel_wavelength_m;
  const double pw = options_.pocket_wavelength_m;
  tunnel_a_ = MakeField(seed, kTunnelAField, tw, tw / 2, 1.0, v);
  tunnel_b_ = MakeField(seed, kTunnelBField, tw, tw / 2, 1.0, v);
  pocket_a_ = MakeField(seed, kPocketAField, pw, pw / 2, 1.0, v);
  // A weaker, shorter second octave makes pocket walls irregular.
  pocket_b_ = MakeField(seed, kPocketBField, pw / 3, pw / 6, 0.4, v);
  tunnel_radius_q16_ = ToQ16(options_.tunnel_radius);
  pocket_threshold_q16_ = ToQ16(options_.pocket_threshold);
  const int64_t fade = std::max<int64_t>(1, ToVoxels(options_.cave_fade_m, v));
  cave_fade_q16_.assign(static_cast<size_t>(band_voxels_ + 1), 0);
  for (int64_t d = 0; d <= band_voxels_; ++d) {
    const int64_t from_top = d - cave_min_depth_;
    const int64_t from_bottom = band_voxels_ - d;
    const int64_t f = std::clamp<int64_t>(std::min(from_top, from_bottom) * kOne / fade, 0, kOne);
    cave_fade_q16_[d] = static_cast<int32_t>(from_top < 0 ? 0 : f);
  }
}

void TerrainGenerator::ComputeSurface(uint64_t x0, uint64_t y0, int nx, int ny,
                                      int64_t* out) const {
  const size_t n = static_cast<size_t>(nx) * ny;
  std::vector<int64_t> low(n, base_height_q16_);
  for (const NoiseField& f : low_octaves_) AddNoise2(f, x0, y0, nx, ny, low.data());
  if (!rough_octaves_.empty()) {
    std::vector<int64_t> rough(n, 0);
    std::vector<int64_t> factor(n, kOne);
    for (const NoiseField& f : rough_octaves_) AddNoise2(f, x0, y0, nx, ny, rough.data());
    AddNoise2(roughness_, x0, y0, nx, ny, factor.data());
    for (size_t i = 0; i < n; ++i) {
      low[i] += (rough[i] * std::max<int64_t>(0, factor[i])) >> 16;
    }
  }
  for (size_t i = 0; i < n; ++i) out[i] = sea_z_ + (low[i] >> 16);
}

int64_t TerrainGenerator::SurfaceZ(uint64_t x, uint64_t y) const {
  int64_t z = 0;
  ComputeSurface(x, y, 1, 1, &z);
  return z;
}

std::pair<int64_t, int64_t> TerrainGenerator::ChunkSurfaceRange(uint32_t cx, uint32_t cy) const {
  std::vector<int64_t> s(static_cast<size_t>(kChunkEdge) * kChunkEdge);
  ComputeSurface(uint64_t{cx} * kChunkEdge, uint64_t{cy} * kChunkEdge, kChunkEdge, kChunkEdge,
                 s.data());
  const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
  return {*lo, *hi};
}

void TerrainGenerator::FillChunk(uint32_t cx, uint32_t cy, uint32_t cz, uint8_t* dense) const {
  FillBox(uint64_t{cx} * kChunkEdge, uint64_t{cy} * kChunkEdge, uint64_t{cz} * kChunkEdge,
          kChunkEdge, kChunkEdge, kChunkEdge, dense);
}

std::vector<uint8_t> TerrainGenerator::Chunk(uint32_t cx, uint32_t cy, uint32_t cz) const {
  std::vector<uint8_t> dense(kChunkVoxels);
  FillChunk(cx, cy, cz, dense.data());
  return dense;
}

uint8_t TerrainGenerator::Voxel(uint64_t x, uint64_t y, uint64_t z) const {
  uint8_t m = kAir;
  FillBox(x, y, z, 1, 1, 1, &m);
  return m;
}

void TerrainGenerator::FillBox(uint64_t x0, uint64_t y0, uint64_t z0, int nx, int ny, int nz,
                               uint8_t* out) const {
  if (nx <= 0 || ny <= 0 || nz <= 0) return;
  const size_t ncol = static_cast<size_t>(nx) * ny;
  const size_t nvox = ncol * nz;
  const int64_t zlo = static_cast<int64_t>(z0);
  const int64_t zhi = zlo + nz - 1;
  const int64_t water_top = sea_z_ - 1;  // Highest water voxel.
  const int64_t band = band_voxels_;

  // Cheap exits far from any possible surface.
  if (zlo > std::max(surface_bound_hi_, water_top)) {
    std::memset(out, kAir, nvox);
    return;
  }
  if (zhi < surface_bound_lo_ - band) {
    std::memset(out, kStone, nvox);
    return;
  }

  // Columns.
  std::vector<int64_t> surface(ncol);
  ComputeSurface(x0, y0, nx, ny, surface.data());
  const auto [smin_it, smax_it] = std::minmax_element(surface.begin(), surface.end());
  const int64_t smin = *smin_it, smax = *smax_it;
  const int64_t top = smin < water_top ? std::max(smax, water_top) : smax;
  if (zlo > top) {
    std::memset(out, kAir, nvox);
    return;
  }
  if (zhi < smin - band) {
    std::memset(out, kStone, nvox);
    return;
  }

  std::vector<int64_t> soil_noise(ncol, 0);
  AddNoise2(soil_depth_, x0, y0, nx, ny, soil_noise.data());
  std::vector<int64_t> soil_bottom(ncol);  // Lowest soil voxel z.
  std::vector<int64_t> sand_bottom(ncol);  // Lowest sand voxel z (above surface: none).
  std::vector<uint8_t> top_material(ncol);
  std::vector<uint8_t> wet(ncol);  // Beach or sea floor.
  for (size_t c = 0; c < ncol; ++c) {
    const int64_t s = surface[c];
    const int64_t u = std::clamp<int64_t>(soil_noise[c] * 2 + kOne / 2, 0, kOne);
    const int64_t depth = min_soil_voxels_ + (((max_soil_voxels_ - min_soil_voxels_) * u) >> 16);
    soil_bottom[c] = s - depth;
    const bool is_wet = s < sea_z_ + beach_voxels_;
    wet[c] = is_wet;
    top_material[c] = is_wet ? kSand : kGrass;
    sand_bottom[c] = is_wet ? s - depth / 2 : s + 1;
  }
  std::vector<int64_t> row_min(ny), row_max(ny), row_top(ny);
  for (int y = 0; y < ny; ++y) {
    const auto [lo, hi] = std::minmax_element(surface.begin() + static_cast<ptrdiff_t>(y) * nx,
                                              surface.begin() + static_cast<ptrdiff_t>(y + 1) * nx);
    row_min[y] = *lo;
    row_max[y] = *hi;
    row_top[y] = *lo < water_top ? std::max(*hi, water_top) : *hi;
  }

  // Z ranges (inclusive) needing cave and soil-patch noise, over the box.
  const int64_t max_soil = max_soil_voxels_;
  const int64_t cave_lo = std::max(zlo, smin - band);
  const int64_t cave_hi = std::min(zhi, smax - cave_min_depth_);
  const int64_t patch_lo = std::max(zlo, smin - max_soil);
  const int64_t patch_hi = std::min(zhi, smax - 1);
  const bool any_cave = cave_lo <= cave_hi;
  const bool any_patch = patch_lo <= patch_hi;

  // Noise lattice covering the box (one extra point per axis for interpolation).
  Lattice lat;
  lat.lx0 = x0 >> kLatticeShift;
  lat.ly0 = y0 >> kLatticeShift;
  lat.lz0 = z0 >> kLatticeShift;
  lat.nx = static_cast<int>(((x0 + nx - 1) >> kLatticeShift) - lat.lx0 + 2);
  lat.ny = static_cast<int>(((y0 + ny - 1) >> kLatticeShift) - lat.ly0 + 2);
  lat.nz = static_cast<int>(((z0 + nz - 1) >> kLatticeShift) - lat.lz0 + 2);
  std::vector<int32_t> tunnel_a, tunnel_b, pocket, patch;
  if (any_cave || any_patch) {
    // Per lattice column, min/max surface over the voxel columns that use it
    // (x in [4 i - 4, 4 i + 3], same for y).
    const size_t nlcol = static_cast<size_t>(lat.nx) * lat.ny;
    std::vector<int64_t> lmin(nlcol, std::numeric_limits<int64_t>::max());
    std::vector<int64_t> lmax(nlcol, std::numeric_limits<int64_t>::min());
    for (int j = 0; j < lat.ny; ++j) {
      const int64_t wy = static_cast<int64_t>((lat.ly0 + j) << kLatticeShift);
      const int64_t ya = std::max<int64_t>(0, wy - kLattice - static_cast<int64_t>(y0));
      const int64_t yb = std::min<int64_t>(ny - 1, wy + (kLattice - 1) - static_cast<int64_t>(y0));
      for (int i = 0; i < lat.nx; ++i) {
        const int64_t wx = static_cast<int64_t>((lat.lx0 + i) << kLatticeShift);
        const int64_t xa = std::max<int64_t>(0, wx - kLattice - static_cast<int64_t>(x0));
        const int64_t xb =
            std::min<int64_t>(nx - 1, wx + (kLattice - 1) - static_cast<int64_t>(x0));
        int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
        for (int64_t y = ya; y <= yb; ++y) {
          for (int64_t x = xa; x <= xb; ++x) {
            const int64_t s = surface[static_cast<size_t>(y) * nx + x];
            lo = std::min(lo, s);
            hi = std::max(hi, s);
          }
        }
        lmin[i + static_cast<size_t>(lat.nx) * j] = lo;
        lmax[i + static_cast<size_t>(lat.nx) * j] = hi;
      }
    }
    // Lattice point range used by the voxels with z in [a, b].
    auto set_ranges = [&](int64_t depth_lo_off, int64_t depth_hi_off) {
      lat.kmin.assign(nlcol, 0);
      lat.kmax.assign(nlcol, -1);
      for (size_t c = 0; c < nlcol; ++c) {
        if (lmin[c] > lmax[c]) continue;
        const int64_t a = std::max(zlo, lmin[c] - depth_lo_off);
        const int64_t b = std::min(zhi, lmax[c] - depth_hi_off);
        if (a > b) continue;
        // A voxel z interpolates between points z >> 2 and (z >> 2) + 1.
        const int64_t ka = FloorDiv(a, kLattice) - static_cast<int64_t>(lat.lz0);
        const int64_t kb = FloorDiv(b, kLattice) + 1 - static_cast<int64_t>(lat.lz0);
        lat.kmin[c] = static_cast<int32_t>(std::clamp<int64_t>(ka, 0, lat.nz - 1));
        lat.kmax[c] = static_cast<int32_t>(std::clamp<int64_t>(kb, 0, lat.nz - 1));
      }
    };
    if (any_cave) {
      set_ranges(band, cave_min_depth_);
      tunnel_a.assign(lat.size(), 0);
      tunnel_b.assign(lat.size(), 0);
      pocket.assign(lat.size(), 0);
      AddNoise3(tunnel_a_, lat, tunnel_a.data());
      AddNoise3(tunnel_b_, lat, tunnel_b.data());
      AddNoise3(pocket_a_, lat, pocket.data());
      AddNoise3(pocket_b_, lat, pocket.data());
    }
    if (any_patch) {
      set_ranges(max_soil, 1);
      patch.assign(lat.size(), 0);
      AddNoise3(soil_patch_, lat, patch.data());
    }
  }

  // First pass: layers, water and caves.
  const size_t plane_size = static_cast<size_t>(lat.nx) * lat.ny;
  std::vector<int32_t> plane_a(plane_size), plane_b(plane_size), plane_c(plane_size),
      plane_p(plane_size);
  std::vector<int32_t> row_a(lat.nx), row_b(lat.nx), row_c(lat.nx), row_p(lat.nx);
  const int64_t gravel_dry = gravel_threshold_q16_;
  const int64_t gravel_wet = gravel_threshold_q16_ - kOne / 10;
  const int64_t clay_dry = -clay_threshold_q16_;
  const int64_t clay_wet = -clay_threshold_q16_ + kOne / 10;
  const int64_t pocket_max = kOne * 3 / 2;
  for (int z = 0; z < nz; ++z) {
    const int64_t zw = zlo + z;
    uint8_t* slab = out + static_cast<size_t>(z) * ncol;
    if (zw > top) {
      std::memset(slab, kAir, ncol);
      continue;
    }
    if (zw < smin - band) {
      std::memset(slab, kStone, ncol);
      continue;
    }
    const bool cave_plane = any_cave && zw >= cave_lo && zw <= cave_hi;
    const bool patch_plane = any_patch && zw >= patch_lo && zw <= patch_hi;
    const int kz = static_cast<int>((static_cast<uint64_t>(zw) >> kLatticeShift) - lat.lz0);
    const int64_t tz = zw & (kLattice - 1);
    if (cave_plane) {
      const size_t o0 = lat.Index(0, 0, kz), o1 = lat.Index(0, 0, kz + 1);
      for (size_t i = 0; i < plane_size; ++i) {
        plane_a[i] = static_cast<int32_t>(LerpLattice(tunnel_a[o0 + i], tunnel_a[o1 + i], tz));
        plane_b[i] = static_cast<int32_t>(LerpLattice(tunnel_b[o0 + i], tunnel_b[o1 + i], tz));
        plane_c[i] = static_cast<int32_t>(LerpLattice(pocket[o0 + i], pocket[o1 + i], tz));
      }
    }
    if (patch_plane) {
      const size_t o0 = lat.Index(0, 0, kz), o1 = lat.Index(0, 0, kz + 1);
      for (size_t i = 0; i < plane_size; ++i) {
        plane_p[i] = static_cast<int32_t>(LerpLattice(patch[o0 + i], patch[o1 + i], tz));
      }
    }
    for (int y = 0; y < ny; ++y) {
      uint8_t* row = slab + static_cast<size_t>(y) * nx;
      if (zw > row_top[y]) {
        std::memset(row, kAir, nx);
        continue;
      }
      if (zw < row_min[y] - band) {
        std::memset(row, kStone, nx);
        continue;
      }
      const uint64_t yw = y0 + y;
      const size_t ky = static_cast<size_t>((yw >> kLatticeShift) - lat.ly0);
      const int64_t ty = static_cast<int64_t>(yw & (kLattice - 1));
      const bool cave_row =
          cave_plane && zw >= row_min[y] - band && zw <= row_max[y] - cave_min_depth_;
      const bool patch_row = patch_plane && zw >= row_min[y] - max_soil && zw <= row_max[y] - 1;
      if (cave_row) {
        const size_t o0 = ky * lat.nx, o1 = o0 + lat.nx;
        for (int i = 0; i < lat.nx; ++i) {
          row_a[i] = static_cast<int32_t>(LerpLattice(plane_a[o0 + i], plane_a[o1 + i], ty));
          row_b[i] = static_cast<int32_t>(LerpLattice(plane_b[o0 + i], plane_b[o1 + i], ty));
          row_c[i] = static_cast<int32_t>(LerpLattice(plane_c[o0 + i], plane_c[o1 + i], ty));
        }
      }
      if (patch_row) {
        const size_t o0 = ky * lat.nx, o1 = o0 + lat.nx;
        for (int i = 0; i < lat.nx; ++i) {
          row_p[i] = static_cast<int32_t>(LerpLattice(plane_p[o0 + i], plane_p[o1 + i], ty));
        }
      }
      const size_t cbase = static_cast<size_t>(y) * nx;
      for (int x = 0; x < nx; ++x) {
        const size_t c = cbase + x;
        const int64_t s = surface[c];
        uint8_t m;
        if (zw > s) {
          m = zw < sea_z_ ? kWater : kAir;
        } else if (zw == s) {
          m = top_material[c];
        } else if (zw >= soil_bottom[c]) {
          m = zw >= sand_bottom[c] ? kSand : kDirt;
          const uint64_t xw = x0 + x;
          const size_t kx = static_cast<size_t>((xw >> kLatticeShift) - lat.lx0);
          const int64_t tx = static_cast<int64_t>(xw & (kLattice - 1));
          const int64_t p = LerpLattice(row_p[kx], row_p[kx + 1], tx);
          if (p > (wet[c] ? gravel_wet : gravel_dry)) {
            m = kGravel;
          } else if (p < (wet[c] ? clay_wet : clay_dry)) {
            m = kClay;
          }
        } else {
          m = kStone;
          const int64_t depth = s - zw;
          if (depth <= band) {
            const int64_t f = cave_fade_q16_[static_cast<size_t>(depth)];
            if (f > 0) {
              const uint64_t xw = x0 + x;
              const size_t kx = static_cast<size_t>((xw >> kLatticeShift) - lat.lx0);
              const int64_t tx = static_cast<int64_t>(xw & (kLattice - 1));
              const int64_t a = LerpLattice(row_a[kx], row_a[kx + 1], tx);
              const int64_t b = LerpLattice(row_b[kx], row_b[kx + 1], tx);
              const int64_t r = (tunnel_radius_q16_ * f) >> 16;
              if (a * a + b * b < r * r) {
                m = kAir;
              } else {
                const int64_t pc = LerpLattice(row_c[kx], row_c[kx + 1], tx);
                const int64_t thr = pocket_threshold_q16_ +
                                    (((kOne - f) * (pocket_max - pocket_threshold_q16_)) >> 16);
                if (pc > thr) m = kAir;
              }
            }
          }
        }
        row[x] = m;
      }
    }
  }

  // Second pass: ore blobs in the stone of the variation zone.
  const int64_t ore_lo = std::max(zlo, smin - band);
  const int64_t ore_hi = std::min(zhi, smax - 1);
  if (ore_lo <= ore_hi) {
    PaintOres(x0, y0, z0, nx, ny, nz, surface.data(), ore_lo, ore_hi, out);
  }
}

void TerrainGenerator::PaintOres(uint64_t x0, uint64_t y0, uint64_t z0, int nx, int ny, int nz,
                                 const int64_t* surface, int64_t zmin, int64_t zmax,
                                 uint8_t* out) const {
  // A blob's voxels are within 3 voxels of its cell, so look at cells within
  // that margin of the box (z: of the part of the box that can hold ore).
  const int64_t bx0 = static_cast<int64_t>(x0), by0 = static_cast<int64_t>(y0),
                bz0 = static_cast<int64_t>(z0);
  const int64_t margin = 3;
  const int64_t cx_lo = std::max<int64_t>(0, FloorDiv(bx0 - margin, kOreCell));
  const int64_t cx_hi = FloorDiv(bx0 + nx - 1 + margin, kOreCell);
  const int64_t cy_lo = std::max<int64_t>(0, FloorDiv(by0 - margin, kOreCell));
  const int64_t cy_hi = FloorDiv(by0 + ny - 1 + margin, kOreCell);
  const int64_t cz_lo = std::max<int64_t>(0, FloorDiv(zmin - margin, kOreCell));
  const int64_t cz_hi = FloorDiv(zmax + margin, kOreCell);
  const int64_t band = band_voxels_;
  for (int64_t cz = cz_lo; cz <= cz_hi; ++cz) {
    for (int64_t cy = cy_lo; cy <= cy_hi; ++cy) {
      for (int64_t cx = cx_lo; cx <= cx_hi; ++cx) {
        const uint64_t h = Hash(ore_seed_, static_cast<uint64_t>(cx), static_cast<uint64_t>(cy),
                                static_cast<uint64_t>(cz));
        const uint64_t u = h >> 32;
        if (u >= gold_limit_) continue;
        uint8_t ore;
        int64_t min_depth;
        if (u < coal_limit_) {
          ore = kCoalOre;
          min_depth = 0;
        } else if (u < iron_limit_) {
          ore = kIronOre;
          min_depth = iron_min_depth_;
        } else {
          ore = kGoldOre;
          min_depth = gold_min_depth_;
        }
        // Blob: an axis-aligned ellipsoid, centre and radii in 1/256 voxel.
        const uint64_t g = Mix(h ^ 0x0123456789abcdefULL);
        const int64_t px = cx * kOreCell * 256 + static_cast<int64_t>(g & 2047);
        const int64_t py = cy * kOreCell * 256 + static_cast<int64_t>((g >> 11) & 2047);
        const int64_t pz = cz * kOreCell * 256 + static_cast<int64_t>((g >> 22) & 2047);
        const int64_t rx =
            kOreMinRadius + static_cast<int64_t>(((g >> 33) & 511) * kOreRadiusRange >> 9);
        const int64_t ry =
            kOreMinRadius + static_cast<int64_t>(((g >> 42) & 511) * kOreRadiusRange >> 9);
        const int64_t rz =
            kOreMinRadius + static_cast<int64_t>(((g >> 51) & 511) * kOreRadiusRange >> 9);
        // Voxel v is inside if |256 v + 128 - p| <= r.
        const int64_t xa = std::max(bx0, FloorDiv(px - rx - 128 + 255, 256));
        const int64_t xb = std::min(bx0 + nx - 1, FloorDiv(px + rx - 128, 256));
        const int64_t ya = std::max(by0, FloorDiv(py - ry - 128 + 255, 256));
        const int64_t yb = std::min(by0 + ny - 1, FloorDiv(py + ry - 128, 256));
        const int64_t za = std::max(bz0, FloorDiv(pz - rz - 128 + 255, 256));
        const int64_t zb = std::min(bz0 + nz - 1, FloorDiv(pz + rz - 128, 256));
        if (xa > xb || ya > yb || za > zb) continue;
        const int64_t rx2 = rx * rx, ry2 = ry * ry, rz2 = rz * rz;
        // dx^2/rx^2 + dy^2/ry^2 + dz^2/rz^2 <= 1, scaled by rx^2 ry^2 rz^2 (< 2^57).
        const int64_t lim = rx2 * ry2 * rz2;
        const uint64_t drop_seed = Mix(g);
        for (int64_t z = za; z <= zb; ++z) {
          const int64_t dz = z * 256 + 128 - pz;
          const int64_t tz = dz * dz * rx2 * ry2;
          for (int64_t y = ya; y <= yb; ++y) {
            const int64_t dy = y * 256 + 128 - py;
            const int64_t tyz = tz + dy * dy * rx2 * rz2;
            if (tyz > lim) continue;
            for (int64_t x = xa; x <= xb; ++x) {
              const int64_t dx = x * 256 + 128 - px;
              if (tyz + dx * dx * ry2 * rz2 > lim) continue;
              // Ragged blobs: drop about one voxel in eight.
              if ((Hash(drop_seed, static_cast<uint64_t>(x), static_cast<uint64_t>(y),
                        static_cast<uint64_t>(z)) >>
                   61) == 0) {
                continue;
              }
              const size_t c = static_cast<size_t>(y - by0) * nx + static_cast<size_t>(x - bx0);
              const int64_t depth = surface[c] - z;
              if (depth > band || depth < min_depth) continue;
              uint8_t& m = out[(static_cast<size_t>(z - bz0) * ny) * nx + c];
              if (IsStoneOrOre(m) && (m == kStone || m < ore)) m = ore;
            }
          }
        }
      }
    }
  }
}

TerrainGenerator::ChunkKind TerrainGenerator::Classify(uint32_t cx, uint32_t cy,
                                                       uint32_t cz) const {
  const int64_t zlo = int64_t{cz} * kChunkEdge;
  const int64_t zhi = zlo + kChunkEdge - 1;
  const int64_t water_top = sea_z_ - 1;
  if (zlo > std::max(surface_bound_hi_, water_top)) return ChunkKind::kSky;
  if (zhi < surface_bound_lo_ - band_voxels_) return ChunkKind::kDeepRock;
  const auto [smin, smax] = ChunkSurfaceRange(cx, cy);
  const int64_t top = smin < water_top ? std::max(smax, water_top) : smax;
  if (zlo > top) return ChunkKind::kSky;
  if (zhi < smin - band_voxels_) return ChunkKind::kDeepRock;
  if (zhi <= smin) return ChunkKind::kUnderground;
  return ChunkKind::kSurface;
}

std::pair<uint32_t, uint32_t> TerrainGenerator::VariedChunkZRange(uint32_t cx, uint32_t cy) const {
  const auto [smin, smax] = ChunkSurfaceRange(cx, cy);
  const int64_t water_top = sea_z_ - 1;
  const int64_t top = smin < water_top ? std::max(smax, water_top) : smax;
  const int64_t lo = std::max<int64_t>(0, FloorDiv(smin - band_voxels_, kChunkEdge));
  const int64_t hi = std::max<int64_t>(lo, FloorDiv(top, kChunkEdge));
  constexpr int64_t kMax = std::numeric_limits<uint32_t>::max();
  return {static_cast<uint32_t>(std::min(lo, kMax)), static_cast<uint32_t>(std::min(hi, kMax))};
}

namespace {

// Voxel coordinate of a longitude/latitude in the default world frame
// (EPSG:4087, R = 6378137 m, 0.25 m voxels).
constexpr double kPi = 3.14159265358979323846;
constexpr double kEarthRadiusM = 6378137.0;
constexpr uint64_t LonToVoxelX(double lon_deg, double voxel_m) {
  return static_cast<uint64_t>((lon_deg * kPi / 180.0 + kPi) * kEarthRadiusM / voxel_m);
}
constexpr uint64_t LatToVoxelY(double lat_deg, double voxel_m) {
  return static_cast<uint64_t>((lat_deg * kPi / 180.0 + kPi / 2) * kEarthRadiusM / voxel_m);
}

// True if the chunk has air, grass, dirt, stone, an ore and cave air (air
// below a solid voxel of its column).
bool IsGoodSample(const std::vector<uint8_t>& dense) {
  bool has[256] = {};
  for (uint8_t m : dense) has[m] = true;
  if (!has[kAir] || !has[kGrass] || !has[kDirt] || !has[kStone]) return false;
  if (!has[kCoalOre] && !has[kIronOre] && !has[kGoldOre]) return false;
  for (int y = 0; y < kChunkEdge; ++y) {
    for (int x = 0; x < kChunkEdge; ++x) {
      bool solid_above = false;
      for (int z = kChunkEdge - 1; z >= 0; --z) {
        const uint8_t m = dense[x + kChunkEdge * (y + static_cast<size_t>(kChunkEdge) * z)];
        if (m != kAir && m != kWater) {
          solid_above = true;
        } else if (m == kAir && solid_above) {
          return true;
        }
      }
    }
  }
  return false;
}

}  // namespace

std::array<uint32_t, 3> SampleSurfaceChunkCoords(uint64_t seed) {
  TerrainOptions options;
  options.seed = seed;
  const TerrainGenerator gen(options);
  // Start near 45 N, 7 E (the western Alps in the real world), then walk in
  // fixed steps until a column gives a chunk with everything we want.
  constexpr uint64_t kStartX = LonToVoxelX(7.0, 0.25);
  constexpr uint64_t kStartY = LatToVoxelY(45.0, 0.25);
  constexpr int kMaxTries = 4096;
  std::array<uint32_t, 3> first_land = {0, 0, 0};
  bool have_land = false;
  for (uint64_t i = 0; i < kMaxTries; ++i) {
    const uint64_t x = kStartX + i * 1237;
    const uint64_t y = kStartY + i * 2111;
    const int64_t s = gen.SurfaceZ(x, y);
    if (s < static_cast<int64_t>(options.sea_level_z) + 16) continue;  // Want land.
    const int64_t in_chunk = s % kChunkEdge;
    const std::array<uint32_t, 3> coords = {static_cast<uint32_t>(x / kChunkEdge),
                                            static_cast<uint32_t>(y / kChunkEdge),
                                            static_cast<uint32_t>(s / kChunkEdge)};
    if (!have_land) {
      first_land = coords;
      have_land = true;
    }
    // Leave room for sky above and cave-bearing stone below.
    if (in_chunk < 48 || in_chunk > 112) continue;
    if (IsGoodSample(gen.Chunk(coords[0], coords[1], coords[2]))) return coords;
  }
  return first_land;  // Not reached with sane options.
}

std::vector<uint8_t> SampleSurfaceChunk(uint64_t seed) {
  TerrainOptions options;
  options.seed = seed;
  const TerrainGenerator gen(options);
  const std::array<uint32_t, 3> c = SampleSurfaceChunkCoords(seed);
  return gen.Chunk(c[0], c[1], c[2]);
}

std::vector<uint8_t> UniformChunk(uint8_t material) {
  return std::vector<uint8_t>(kChunkVoxels, material);
}

std::vector<uint8_t> NoiseChunk(uint64_t seed) {
  std::vector<uint8_t> out(kChunkVoxels);
  uint64_t state = seed;
  for (size_t i = 0; i < out.size(); i += 8) {
    state += 0x9e3779b97f4a7c15ULL;
    const uint64_t r = Mix(state);
    for (size_t b = 0; b < 8; ++b) out[i + b] = static_cast<uint8_t>(r >> (8 * b));
  }
  return out;
}

}  // namespace voxdb::testing
