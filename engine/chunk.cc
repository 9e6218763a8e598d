#include "engine/chunk.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "engine/status.h"

namespace voxdb::engine {
namespace brick {
namespace {

// Width for a palette of n materials.
int WidthFor(int n) {
  if (n <= 1) return 0;
  if (n <= 2) return 1;
  if (n <= 4) return 2;
  if (n <= 16) return 4;
  return 8;
}

// Index of voxel i (0..4095) in packed bits of `width` (1, 2 or 4).
inline uint8_t PackedIndex(const uint8_t* bits, int width, size_t i) {
  const size_t bit = i * static_cast<size_t>(width);
  return static_cast<uint8_t>((bits[bit >> 3] >> (bit & 7)) & ((1u << width) - 1));
}

inline void SetPackedIndex(uint8_t* bits, int width, size_t i, uint8_t index) {
  const size_t bit = i * static_cast<size_t>(width);
  const uint8_t mask = static_cast<uint8_t>(((1u << width) - 1) << (bit & 7));
  bits[bit >> 3] = static_cast<uint8_t>((bits[bit >> 3] & ~mask) | (index << (bit & 7)));
}

// Packs 4096 indices (< 2^width) into 512 * width bytes.
void PackIndices(const uint8_t* idx, int width, uint8_t* bits) {
  switch (width) {
    case 1:
      for (size_t j = 0; j < 512; ++j) {
        const uint8_t* p = idx + 8 * j;
        bits[j] = static_cast<uint8_t>(p[0] | p[1] << 1 | p[2] << 2 | p[3] << 3 | p[4] << 4 |
                                       p[5] << 5 | p[6] << 6 | p[7] << 7);
      }
      break;
    case 2:
      for (size_t j = 0; j < 1024; ++j) {
        const uint8_t* p = idx + 4 * j;
        bits[j] = static_cast<uint8_t>(p[0] | p[1] << 2 | p[2] << 4 | p[3] << 6);
      }
      break;
    case 4:
      for (size_t j = 0; j < 2048; ++j) {
        bits[j] = static_cast<uint8_t>(idx[2 * j] | idx[2 * j + 1] << 4);
      }
      break;
    default:
      std::memcpy(bits, idx, kBrickVoxels);
  }
}

#if defined(__x86_64__)
bool DetectFastExpand() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("ssse3") && __builtin_cpu_supports("bmi2");
}

// 16 voxels of one x row per step: widen the packed indices to one byte per
// voxel, then look them up in the palette with one pshufb.
__attribute__((target("ssse3,bmi2"))) void ExpandFast(int width, const uint8_t* palette,
                                                      const uint8_t* bits, uint8_t* out,
                                                      size_t row_stride, size_t slice_stride) {
  const __m128i pal = _mm_loadu_si128(reinterpret_cast<const __m128i*>(palette));
  for (int z = 0; z < kBrickEdge; ++z) {
    uint8_t* slice = out + z * slice_stride;
    for (int y = 0; y < kBrickEdge; ++y) {
      const int row = y + kBrickEdge * z;
      __m128i idx;
      switch (width) {
        case 1: {
          uint16_t b;
          std::memcpy(&b, bits + 2 * row, 2);
          idx = _mm_set_epi64x(static_cast<int64_t>(_pdep_u64(b >> 8, 0x0101010101010101ull)),
                               static_cast<int64_t>(_pdep_u64(b & 0xff, 0x0101010101010101ull)));
          break;
        }
        case 2: {
          uint32_t b;
          std::memcpy(&b, bits + 4 * row, 4);
          idx = _mm_set_epi64x(static_cast<int64_t>(_pdep_u64(b >> 16, 0x0303030303030303ull)),
                               static_cast<int64_t>(_pdep_u64(b & 0xffff, 0x0303030303030303ull)));
          break;
        }
        default: {  // 4
          const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(bits + 8 * row));
          const __m128i nib = _mm_set1_epi8(0x0f);
          idx = _mm_unpacklo_epi8(_mm_and_si128(v, nib), _mm_and_si128(_mm_srli_epi16(v, 4), nib));
        }
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(slice + y * row_stride),
                       _mm_shuffle_epi8(pal, idx));
    }
  }
}
const bool kFastExpand = DetectFastExpand();
#else
const bool kFastExpand = false;
#endif

}  // namespace

void ExpandPortable(int width, const uint8_t* palette, const uint8_t* bits, uint8_t* out,
                    size_t row_stride, size_t slice_stride) {
  for (int z = 0; z < kBrickEdge; ++z) {
    for (int y = 0; y < kBrickEdge; ++y) {
      uint8_t* row = out + z * slice_stride + y * row_stride;
      const size_t base = static_cast<size_t>(kBrickEdge) * (y + kBrickEdge * z);
      switch (width) {
        case 0:
          std::memset(row, palette[0], kBrickEdge);
          break;
        case 8:
          std::memcpy(row, bits + base, kBrickEdge);
          break;
        default:
          for (int x = 0; x < kBrickEdge; ++x) row[x] = palette[PackedIndex(bits, width, base + x)];
      }
    }
  }
}

void Expand(int width, const uint8_t* palette, const uint8_t* bits, uint8_t* out, size_t row_stride,
            size_t slice_stride) {
#if defined(__x86_64__)
  if (kFastExpand && width >= 1 && width <= 4) {
    ExpandFast(width, palette, bits, out, row_stride, slice_stride);
    return;
  }
#endif
  ExpandPortable(width, palette, bits, out, row_stride, slice_stride);
}

void Build(const uint8_t* voxels, Brick* out) {
  // Uniform check first: most bricks of real terrain are.
  const uint8_t first = voxels[0];
  uint64_t pattern = 0x0101010101010101ull * first;
  uint64_t diff = 0;
  for (size_t i = 0; i < kBrickVoxels; i += 8) {
    uint64_t w;
    std::memcpy(&w, voxels + i, 8);
    diff |= w ^ pattern;
  }
  out->bits.reset();
  std::memset(out->palette, 0, sizeof out->palette);
  if (diff == 0) {
    out->width = 0;
    out->count = 1;
    out->palette[0] = first;
    return;
  }
  // Histogram with four interleaved tables to break store-to-load chains.
  uint32_t hist[4][256] = {};
  for (size_t i = 0; i < kBrickVoxels; i += 4) {
    ++hist[0][voxels[i]];
    ++hist[1][voxels[i + 1]];
    ++hist[2][voxels[i + 2]];
    ++hist[3][voxels[i + 3]];
  }
  std::array<std::pair<uint32_t, uint8_t>, 256> used;  // (count, material)
  int n = 0;
  for (int m = 0; m < 256; ++m) {
    const uint32_t c = hist[0][m] + hist[1][m] + hist[2][m] + hist[3][m];
    if (c != 0) used[n++] = {c, static_cast<uint8_t>(m)};
  }
  const int width = WidthFor(n);
  out->width = static_cast<uint8_t>(width);
  out->bits.reset(new uint8_t[size_t{512} * width]);
  if (width == 8) {
    out->count = 0;
    std::memcpy(out->bits.get(), voxels, kBrickVoxels);
    return;
  }
  // Canonical palette: most frequent first, ties by material id.
  std::sort(used.begin(), used.begin() + n, [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  uint8_t map[256];
  for (int i = 0; i < n; ++i) {
    out->palette[i] = used[i].second;
    map[used[i].second] = static_cast<uint8_t>(i);
  }
  out->count = static_cast<uint8_t>(n);
  uint8_t idx[kBrickVoxels];
  for (size_t i = 0; i < kBrickVoxels; ++i) idx[i] = map[voxels[i]];
  PackIndices(idx, width, out->bits.get());
}

}  // namespace brick

namespace {

void ExpandBrick(const Brick& b, uint8_t* out, size_t row_stride, size_t slice_stride) {
  brick::Expand(b.width, b.palette, b.bits.get(), out, row_stride, slice_stride);
}

void ExpandBrickContiguous(const Brick& b, uint8_t* out) {
  ExpandBrick(b, out, kBrickEdge, kBrickEdge * kBrickEdge);
}

uint8_t* BrickOrigin(uint8_t* dense, int bx, int by, int bz) {
  return dense + bx * kBrickEdge + size_t{kChunkEdge} * (by * kBrickEdge) +
         size_t{kChunkEdge} * kChunkEdge * (bz * kBrickEdge);
}

void CopyBrick(const Brick& from, Brick* to) {
  to->width = from.width;
  to->count = from.count;
  std::memcpy(to->palette, from.palette, sizeof to->palette);
  if (from.bits) {
    to->bits.reset(new uint8_t[from.BitsBytes()]);
    std::memcpy(to->bits.get(), from.bits.get(), from.BitsBytes());
  } else {
    to->bits.reset();
  }
}

// Returns the brick's widened copy (width doubled; 4 -> 8 raw).
void Widen(Brick* b) {
  uint8_t voxels[kBrickVoxels];
  if (b->width == 4) {
    ExpandBrickContiguous(*b, voxels);
    b->width = 8;
    b->count = 0;
    b->bits.reset(new uint8_t[kBrickVoxels]);
    std::memcpy(b->bits.get(), voxels, kBrickVoxels);
    return;
  }
  uint8_t idx[kBrickVoxels];
  const int width = b->width;
  for (size_t i = 0; i < kBrickVoxels; ++i) idx[i] = brick::PackedIndex(b->bits.get(), width, i);
  b->width = static_cast<uint8_t>(width * 2);
  b->bits.reset(new uint8_t[b->BitsBytes()]);
  brick::PackIndices(idx, b->width, b->bits.get());
}

}  // namespace

Chunk::Chunk(const Chunk& other) : uniform_(other.uniform_), bits_bytes_(other.bits_bytes_) {
  if (other.bricks_) {
    bricks_ = std::make_unique<Brick[]>(kBricksPerChunk);
    for (int i = 0; i < kBricksPerChunk; ++i) CopyBrick(other.bricks_[i], &bricks_[i]);
  }
}

Chunk& Chunk::operator=(const Chunk& other) {
  if (this != &other) *this = Chunk(other);
  return *this;
}

Chunk Chunk::FromDense(std::span<const uint8_t> dense) {
  VOXDB_CHECK(dense.size() == kChunkVoxels);
  auto bricks = std::make_unique<Brick[]>(kBricksPerChunk);
  uint8_t voxels[kBrickVoxels];
  for (int bz = 0; bz < kBricksPerAxis; ++bz) {
    for (int by = 0; by < kBricksPerAxis; ++by) {
      for (int bx = 0; bx < kBricksPerAxis; ++bx) {
        const uint8_t* src =
            BrickOrigin(const_cast<uint8_t*>(dense.data()), bx, by, bz);  // read only
        for (int z = 0; z < kBrickEdge; ++z) {
          for (int y = 0; y < kBrickEdge; ++y) {
            std::memcpy(voxels + kBrickEdge * (y + kBrickEdge * z),
                        src + size_t{kChunkEdge} * (y + size_t{kChunkEdge} * z), kBrickEdge);
          }
        }
        brick::Build(voxels, &bricks[bx + kBricksPerAxis * (by + kBricksPerAxis * bz)]);
      }
    }
  }
  Chunk chunk = FromBricks(std::move(bricks));
  // brick::Build's bricks are canonical already: what is left of Compact()
  // is collapsing an all-uniform grid (a full Compact() would rebuild every
  // brick a second time).
  chunk.CollapseUniform();
  return chunk;
}

Chunk Chunk::FromBricks(std::unique_ptr<Brick[]> bricks) {
  Chunk chunk;
  chunk.bricks_ = std::move(bricks);
  chunk.RecountBits();
  return chunk;
}

void Chunk::RecountBits() {
  bits_bytes_ = 0;
  if (!bricks_) return;
  for (int i = 0; i < kBricksPerChunk; ++i) bits_bytes_ += bricks_[i].BitsBytes();
}

uint8_t Chunk::Get(uint32_t x, uint32_t y, uint32_t z) const {
  if (!bricks_) return uniform_;
  const Brick& b = bricks_[BrickIndex(x, y, z)];
  const size_t i = (x & 15) + kBrickEdge * ((y & 15) + kBrickEdge * (z & 15));
  switch (b.width) {
    case 0:
      return b.palette[0];
    case 8:
      return b.bits[i];
    default:
      return b.palette[brick::PackedIndex(b.bits.get(), b.width, i)];
  }
}

void Chunk::EnsureGrid() {
  if (bricks_) return;
  bricks_ = std::make_unique<Brick[]>(kBricksPerChunk);
  for (int i = 0; i < kBricksPerChunk; ++i) bricks_[i].palette[0] = uniform_;
}

void Chunk::Set(uint32_t x, uint32_t y, uint32_t z, uint8_t material) {
  if (!bricks_ && uniform_ == material) return;
  EnsureGrid();
  Brick& b = bricks_[BrickIndex(x, y, z)];
  const size_t i = (x & 15) + kBrickEdge * ((y & 15) + kBrickEdge * (z & 15));
  if (b.width == 0) {
    if (b.palette[0] == material) return;
    b.width = 1;
    b.count = 2;
    b.palette[1] = material;
    b.bits.reset(new uint8_t[512]());
    bits_bytes_ += 512;
    brick::SetPackedIndex(b.bits.get(), 1, i, 1);
    return;
  }
  if (b.width == 8) {
    b.bits[i] = material;
    return;
  }
  int index = -1;
  for (int p = 0; p < b.count; ++p) {
    if (b.palette[p] == material) {
      index = p;
      break;
    }
  }
  if (index < 0) {
    if (b.count == (1 << b.width)) {
      bits_bytes_ += b.BitsBytes();  // Widen doubles the width
      Widen(&b);
      if (b.width == 8) {
        b.bits[i] = material;
        return;
      }
    }
    index = b.count++;
    b.palette[index] = material;
  }
  brick::SetPackedIndex(b.bits.get(), b.width, i, static_cast<uint8_t>(index));
}

void Chunk::ReadBox(const LocalBox& box, uint8_t* out) const {
  VOXDB_CHECK(box.valid());
  if (box.empty()) return;
  const size_t sx = box.hi.x - box.lo.x, sy = box.hi.y - box.lo.y;
  if (!bricks_) {
    std::memset(out, uniform_, box.volume());
    return;
  }
  uint8_t voxels[kBrickVoxels];
  for (uint32_t bz = box.lo.z >> 4; bz <= (box.hi.z - 1) >> 4; ++bz) {
    for (uint32_t by = box.lo.y >> 4; by <= (box.hi.y - 1) >> 4; ++by) {
      for (uint32_t bx = box.lo.x >> 4; bx <= (box.hi.x - 1) >> 4; ++bx) {
        ExpandBrickContiguous(bricks_[bx + kBricksPerAxis * (by + kBricksPerAxis * bz)], voxels);
        const uint32_t x0 = std::max(box.lo.x, bx * 16), x1 = std::min(box.hi.x, bx * 16 + 16);
        const uint32_t y0 = std::max(box.lo.y, by * 16), y1 = std::min(box.hi.y, by * 16 + 16);
        const uint32_t z0 = std::max(box.lo.z, bz * 16), z1 = std::min(box.hi.z, bz * 16 + 16);
        for (uint32_t z = z0; z < z1; ++z) {
          for (uint32_t y = y0; y < y1; ++y) {
            std::memcpy(out + (x0 - box.lo.x) + sx * ((y - box.lo.y) + sy * (z - box.lo.z)),
                        voxels + (x0 & 15) + 16 * ((y & 15) + 16 * (z & 15)), x1 - x0);
          }
        }
      }
    }
  }
}

void Chunk::WriteBox(const LocalBox& box, const uint8_t* in) {
  VOXDB_CHECK(box.valid());
  if (box.empty()) return;
  const size_t sx = box.hi.x - box.lo.x, sy = box.hi.y - box.lo.y;
  EnsureGrid();
  uint8_t voxels[kBrickVoxels];
  for (uint32_t bz = box.lo.z >> 4; bz <= (box.hi.z - 1) >> 4; ++bz) {
    for (uint32_t by = box.lo.y >> 4; by <= (box.hi.y - 1) >> 4; ++by) {
      for (uint32_t bx = box.lo.x >> 4; bx <= (box.hi.x - 1) >> 4; ++bx) {
        Brick& b = bricks_[bx + kBricksPerAxis * (by + kBricksPerAxis * bz)];
        ExpandBrickContiguous(b, voxels);
        const uint32_t x0 = std::max(box.lo.x, bx * 16), x1 = std::min(box.hi.x, bx * 16 + 16);
        const uint32_t y0 = std::max(box.lo.y, by * 16), y1 = std::min(box.hi.y, by * 16 + 16);
        const uint32_t z0 = std::max(box.lo.z, bz * 16), z1 = std::min(box.hi.z, bz * 16 + 16);
        for (uint32_t z = z0; z < z1; ++z) {
          for (uint32_t y = y0; y < y1; ++y) {
            std::memcpy(voxels + (x0 & 15) + 16 * ((y & 15) + 16 * (z & 15)),
                        in + (x0 - box.lo.x) + sx * ((y - box.lo.y) + sy * (z - box.lo.z)),
                        x1 - x0);
          }
        }
        bits_bytes_ -= b.BitsBytes();
        brick::Build(voxels, &b);
        bits_bytes_ += b.BitsBytes();
      }
    }
  }
}

void Chunk::FillBox(const LocalBox& box, uint8_t material) {
  VOXDB_CHECK(box.valid());
  if (box.empty()) return;
  if (box.volume() == kChunkVoxels) {
    bricks_.reset();
    bits_bytes_ = 0;
    uniform_ = material;
    return;
  }
  if (!bricks_ && uniform_ == material) return;
  EnsureGrid();
  uint8_t voxels[kBrickVoxels];
  for (uint32_t bz = box.lo.z >> 4; bz <= (box.hi.z - 1) >> 4; ++bz) {
    for (uint32_t by = box.lo.y >> 4; by <= (box.hi.y - 1) >> 4; ++by) {
      for (uint32_t bx = box.lo.x >> 4; bx <= (box.hi.x - 1) >> 4; ++bx) {
        Brick& b = bricks_[bx + kBricksPerAxis * (by + kBricksPerAxis * bz)];
        const uint32_t x0 = std::max(box.lo.x, bx * 16), x1 = std::min(box.hi.x, bx * 16 + 16);
        const uint32_t y0 = std::max(box.lo.y, by * 16), y1 = std::min(box.hi.y, by * 16 + 16);
        const uint32_t z0 = std::max(box.lo.z, bz * 16), z1 = std::min(box.hi.z, bz * 16 + 16);
        if (x1 - x0 == 16 && y1 - y0 == 16 && z1 - z0 == 16) {
          bits_bytes_ -= b.BitsBytes();
          b.bits.reset();
          b.width = 0;
          b.count = 1;
          std::memset(b.palette, 0, sizeof b.palette);
          b.palette[0] = material;
          continue;
        }
        ExpandBrickContiguous(b, voxels);
        for (uint32_t z = z0; z < z1; ++z) {
          for (uint32_t y = y0; y < y1; ++y) {
            std::memset(voxels + (x0 & 15) + 16 * ((y & 15) + 16 * (z & 15)), material, x1 - x0);
          }
        }
        bits_bytes_ -= b.BitsBytes();
        brick::Build(voxels, &b);
        bits_bytes_ += b.BitsBytes();
      }
    }
  }
}

void Chunk::ToDense(uint8_t* out) const {
  if (!bricks_) {
    std::memset(out, uniform_, kChunkVoxels);
    return;
  }
  for (int bz = 0; bz < kBricksPerAxis; ++bz) {
    for (int by = 0; by < kBricksPerAxis; ++by) {
      for (int bx = 0; bx < kBricksPerAxis; ++bx) {
        ExpandBrick(bricks_[bx + kBricksPerAxis * (by + kBricksPerAxis * bz)],
                    BrickOrigin(out, bx, by, bz), kChunkEdge, size_t{kChunkEdge} * kChunkEdge);
      }
    }
  }
}

std::optional<uint8_t> Chunk::UniformMaterial() const {
  if (!bricks_) return uniform_;
  uint8_t voxels[kBrickVoxels];
  std::optional<uint8_t> material;
  for (int i = 0; i < kBricksPerChunk; ++i) {
    const Brick& b = bricks_[i];
    uint8_t m;
    if (b.width == 0) {
      m = b.palette[0];
    } else {
      // A brick that is packed may still hold one material after edits.
      ExpandBrickContiguous(b, voxels);
      m = voxels[0];
      for (size_t v = 1; v < kBrickVoxels; ++v) {
        if (voxels[v] != m) return std::nullopt;
      }
    }
    if (material && *material != m) return std::nullopt;
    material = m;
  }
  return material;
}

void Chunk::Compact() {
  if (!bricks_) return;
  uint8_t voxels[kBrickVoxels];
  for (int i = 0; i < kBricksPerChunk; ++i) {
    Brick& b = bricks_[i];
    if (b.width == 0) {
      std::memset(b.palette + 1, 0, sizeof b.palette - 1);
      b.count = 1;
      continue;
    }
    ExpandBrickContiguous(b, voxels);
    brick::Build(voxels, &b);
  }
  RecountBits();
  CollapseUniform();
}

void Chunk::CollapseUniform() {
  if (!bricks_) return;
  const uint8_t first = bricks_[0].palette[0];
  for (int i = 0; i < kBricksPerChunk; ++i) {
    if (bricks_[i].width != 0 || bricks_[i].palette[0] != first) return;
  }
  bricks_.reset();
  bits_bytes_ = 0;
  uniform_ = first;
}

size_t Chunk::MemoryUsage() const {
  return sizeof(Chunk) + (bricks_ ? sizeof(Brick) * kBricksPerChunk + bits_bytes_ : 0);
}

bool operator==(const Chunk& a, const Chunk& b) {
  if (!a.bricks_ && !b.bricks_) return a.uniform_ == b.uniform_;
  uint8_t va[kBrickVoxels], vb[kBrickVoxels];
  for (int i = 0; i < kBricksPerChunk; ++i) {
    if (a.bricks_) {
      ExpandBrickContiguous(a.bricks_[i], va);
    } else {
      std::memset(va, a.uniform_, kBrickVoxels);
    }
    if (b.bricks_) {
      ExpandBrickContiguous(b.bricks_[i], vb);
    } else {
      std::memset(vb, b.uniform_, kBrickVoxels);
    }
    if (std::memcmp(va, vb, kBrickVoxels) != 0) return false;
  }
  return true;
}

}  // namespace voxdb::engine
