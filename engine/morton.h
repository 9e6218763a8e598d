// Chunk coordinates, chunk keys and 3-D Morton codes.
//
// A chunk's key is the 63-bit Morton code of its chunk coordinates, bits
// interleaved as x -> bit 3i, y -> bit 3i+1, z -> bit 3i+2 (i = 0..20). The
// stored form is 8 bytes big-endian, so byte order equals Morton order and an
// octree node of level l, `code >> 3l`, is the contiguous key range
// [node << 3l, (node + 1) << 3l).
//
// Two implementations are kept: a BMI2 one (pdep/pext), chosen at run time
// when the CPU has BMI2, and a portable one (magic-number bit spreading). The
// tests prove them equal.
//
// Example:
//   ChunkCoord c{3, 5, 7};
//   ChunkKey key = ChunkKey::FromCoord(c);
//   std::array<uint8_t, 8> bytes = key.Encode();   // big-endian
//   assert(ChunkKey::Decode(bytes)->coord() == c);
//
// Thread-safety: value types and pure functions.
#ifndef VOXDB_ENGINE_MORTON_H_
#define VOXDB_ENGINE_MORTON_H_

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace voxdb::engine {

// Bits per axis of a chunk coordinate, and the largest coordinate.
inline constexpr int kMortonAxisBits = 21;
inline constexpr uint32_t kMaxChunkAxis = (1u << kMortonAxisBits) - 1;
// Octree levels: level 0 is a chunk, level 21 the whole key space.
inline constexpr int kMaxOctreeLevel = kMortonAxisBits;

// Integer chunk coordinates; each axis must be <= kMaxChunkAxis to have a key.
struct ChunkCoord {
  uint32_t x = 0;
  uint32_t y = 0;
  uint32_t z = 0;
  friend bool operator==(const ChunkCoord&, const ChunkCoord&) = default;
  std::string ToString() const;
};

// Morton encode/decode, dispatched to BMI2 when available.
// REQUIRES: each axis <= kMaxChunkAxis (higher bits are dropped).
uint64_t MortonEncode(uint32_t x, uint32_t y, uint32_t z);
ChunkCoord MortonDecode(uint64_t code);

// The two implementations, exposed for tests and benchmarks.
uint64_t MortonEncodePortable(uint32_t x, uint32_t y, uint32_t z);
ChunkCoord MortonDecodePortable(uint64_t code);
// REQUIRES: HasBmi2().
uint64_t MortonEncodeBmi2(uint32_t x, uint32_t y, uint32_t z);
ChunkCoord MortonDecodeBmi2(uint64_t code);
bool HasBmi2();

// A chunk's key: its Morton code. Ordered like the stored bytes.
class ChunkKey {
 public:
  static constexpr size_t kEncodedSize = 8;
  static constexpr uint64_t kMaxCode = (uint64_t{1} << (3 * kMortonAxisBits)) - 1;

  constexpr ChunkKey() = default;
  // REQUIRES: code <= kMaxCode.
  static constexpr ChunkKey FromCode(uint64_t code) { return ChunkKey(code); }
  // REQUIRES: every axis <= kMaxChunkAxis.
  static ChunkKey FromCoord(const ChunkCoord& c) { return ChunkKey(MortonEncode(c.x, c.y, c.z)); }

  constexpr uint64_t code() const { return code_; }
  ChunkCoord coord() const { return MortonDecode(code_); }

  // 8 bytes, big-endian.
  std::array<uint8_t, kEncodedSize> Encode() const;
  void EncodeTo(uint8_t* out) const;
  // Returns nullopt unless `bytes` is exactly 8 bytes holding a code <= kMaxCode.
  static std::optional<ChunkKey> Decode(std::span<const uint8_t> bytes);

  // The octree node of `level` containing this chunk: code >> 3*level.
  // REQUIRES: 0 <= level <= kMaxOctreeLevel.
  constexpr uint64_t OctreeNode(int level) const { return code_ >> (3 * level); }

  friend constexpr auto operator<=>(const ChunkKey&, const ChunkKey&) = default;
  std::string ToString() const;

 private:
  explicit constexpr ChunkKey(uint64_t code) : code_(code) {}
  uint64_t code_ = 0;
};

// A half-open range of Morton codes [begin, end). end may be kMaxCode + 1.
struct MortonRange {
  uint64_t begin = 0;
  uint64_t end = 0;
  bool Contains(uint64_t code) const { return code >= begin && code < end; }
  bool empty() const { return begin >= end; }
  friend bool operator==(const MortonRange&, const MortonRange&) = default;

  // All chunks of octree node `node` at `level`.
  // REQUIRES: 0 <= level <= kMaxOctreeLevel, node < 8^(21 - level).
  static MortonRange OctreeNode(uint64_t node, int level) {
    return MortonRange{node << (3 * level), (node + 1) << (3 * level)};
  }
  // The whole key space.
  static MortonRange All() { return MortonRange{0, ChunkKey::kMaxCode + 1}; }
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_MORTON_H_
