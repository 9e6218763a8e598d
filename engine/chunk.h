// A 128^3 chunk of uint8 material ids, in memory.
//
// The chunk is a grid of 8 x 8 x 8 bricks of 16^3 voxels. A brick is either
// uniform (one material, no voxel storage) or a palette of up to 16 materials
// with bit-packed indices (1, 2 or 4 bits per voxel), or raw bytes when it
// holds more than 16 materials. Memory therefore grows with non-uniform
// content: an all-air chunk is a few bytes, a surface chunk a fraction of the
// 2 MiB its dense form would take. MemoryUsage() reports the exact figure.
//
// Coordinates inside a chunk are (x, y, z), each in [0, 128); the dense layout
// used by ToDense/FromDense and the box calls is x fastest:
// index = x + 128 * (y + 128 * z).
//
// Example:
//   Chunk chunk(kStone);                 // uniform, ~16 bytes
//   chunk.Set(5, 6, 7, kGold);           // one brick becomes 1-bit packed
//   std::vector<uint8_t> dense(kChunkVoxels);
//   chunk.ToDense(dense.data());
//
// Thread-safety: like a std::vector: const calls may run concurrently, any
// mutation needs exclusive access.
//
// Invariants: brick voxels only ever index palette entries < palette count;
// a brick's width is 0, 1, 2, 4 or 8. Setters may leave palettes with unused
// entries or wider than necessary; Compact() restores the canonical form that
// the codec writes (see engine/FORMAT.md).
#ifndef VOXDB_ENGINE_CHUNK_H_
#define VOXDB_ENGINE_CHUNK_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "engine/morton.h"

namespace voxdb::engine {

inline constexpr int kChunkEdge = 128;
inline constexpr size_t kChunkVoxels = size_t{kChunkEdge} * kChunkEdge * kChunkEdge;
inline constexpr int kBrickEdge = 16;
inline constexpr int kBricksPerAxis = kChunkEdge / kBrickEdge;
inline constexpr int kBricksPerChunk = kBricksPerAxis * kBricksPerAxis * kBricksPerAxis;
inline constexpr size_t kBrickVoxels = size_t{kBrickEdge} * kBrickEdge * kBrickEdge;
inline constexpr int kMaxPalette = 16;

// A half-open box inside one chunk, [lo, hi) per axis, each in [0, 128].
struct LocalBox {
  ChunkCoord lo;
  ChunkCoord hi;
  bool empty() const { return lo.x >= hi.x || lo.y >= hi.y || lo.z >= hi.z; }
  size_t volume() const {
    return empty() ? 0 : size_t{hi.x - lo.x} * (hi.y - lo.y) * (hi.z - lo.z);
  }
  bool valid() const { return hi.x <= kChunkEdge && hi.y <= kChunkEdge && hi.z <= kChunkEdge; }
  static LocalBox Whole() { return LocalBox{{0, 0, 0}, {kChunkEdge, kChunkEdge, kChunkEdge}}; }
};

// One brick's storage. Exposed for the codec; users go through Chunk.
struct Brick {
  uint8_t width = 0;                  // bits per voxel: 0 (uniform), 1, 2, 4 or 8 (raw)
  uint8_t count = 1;                  // palette entries in use (width 0: 1; width 8: unused)
  uint8_t palette[kMaxPalette] = {};  // palette[0] is the material of a uniform brick
  std::unique_ptr<uint8_t[]> bits;    // 512 * width bytes, LSB-first; null when width == 0

  size_t BitsBytes() const { return size_t{512} * width; }
};

class Chunk {
 public:
  // An all-`material` chunk.
  explicit Chunk(uint8_t material = 0) : uniform_(material) {}
  // REQUIRES: dense.size() == kChunkVoxels. The result is canonical.
  static Chunk FromDense(std::span<const uint8_t> dense);

  Chunk(const Chunk& other);
  Chunk& operator=(const Chunk& other);
  Chunk(Chunk&&) noexcept = default;
  Chunk& operator=(Chunk&&) noexcept = default;
  ~Chunk() = default;

  // REQUIRES: x, y, z < 128.
  uint8_t Get(uint32_t x, uint32_t y, uint32_t z) const;
  void Set(uint32_t x, uint32_t y, uint32_t z, uint8_t material);

  // Dense copy of the box into out (box.volume() bytes, x fastest).
  // REQUIRES: box.valid().
  void ReadBox(const LocalBox& box, uint8_t* out) const;
  // Overwrites the box from in (box.volume() bytes, x fastest).
  void WriteBox(const LocalBox& box, const uint8_t* in);
  // Sets every voxel of the box to material.
  void FillBox(const LocalBox& box, uint8_t material);
  // All kChunkVoxels voxels.
  void ToDense(uint8_t* out) const;

  // The material if every voxel holds the same one. Exact (scans the bricks).
  std::optional<uint8_t> UniformMaterial() const;
  bool IsUniform() const { return UniformMaterial().has_value(); }

  // Shrinks palettes to the materials in use (ordered by frequency), narrows
  // widths, collapses uniform bricks and an all-uniform chunk.
  void Compact();

  // Bytes of memory this chunk holds, including sizeof(Chunk).
  size_t MemoryUsage() const;

  // Brick access for the codec. REQUIRES: !HasGrid() -> only UniformValue().
  bool HasGrid() const { return bricks_ != nullptr; }
  uint8_t UniformValue() const { return uniform_; }  // valid when !HasGrid()
  const Brick& brick(int i) const { return bricks_[i]; }
  // Takes ownership of 512 bricks (codec). REQUIRES: bricks are valid.
  static Chunk FromBricks(std::unique_ptr<Brick[]> bricks);

  // Voxel-wise equality (representation-independent).
  friend bool operator==(const Chunk& a, const Chunk& b);

 private:
  void EnsureGrid();
  Brick& MutableBrick(uint32_t x, uint32_t y, uint32_t z);

  void RecountBits();
  // Turns a grid of bricks that are all uniform with one material into a
  // uniform chunk.
  void CollapseUniform();

  uint8_t uniform_ = 0;              // the material when bricks_ is null
  std::unique_ptr<Brick[]> bricks_;  // kBricksPerChunk bricks, or null when uniform
  size_t bits_bytes_ = 0;            // sum of the bricks' BitsBytes()
};

// Brick index of in-chunk voxel (x, y, z), bx fastest.
inline int BrickIndex(uint32_t x, uint32_t y, uint32_t z) {
  return static_cast<int>((x >> 4) + kBricksPerAxis * ((y >> 4) + kBricksPerAxis * (z >> 4)));
}

namespace brick {
// Kernels shared by Chunk and the codec (engine/chunk.cc).

// Writes the brick's 4096 voxels (x fastest, 16 x 16 x 16) to out, with
// row stride `row_stride` bytes between consecutive y rows and `slice_stride`
// between z slices. A brick in a dense chunk uses (128, 128 * 128).
void Expand(int width, const uint8_t* palette, const uint8_t* bits, uint8_t* out, size_t row_stride,
            size_t slice_stride);
// Portable reference of Expand (tests prove them equal).
void ExpandPortable(int width, const uint8_t* palette, const uint8_t* bits, uint8_t* out,
                    size_t row_stride, size_t slice_stride);
// Builds the canonical brick of 4096 voxels (x fastest, contiguous).
void Build(const uint8_t* voxels, Brick* out);
}  // namespace brick

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_CHUNK_H_
