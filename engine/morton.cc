#include "engine/morton.h"

#include <immintrin.h>

#include <cstdio>

#include "absl/strings/str_format.h"
#include "engine/coding.h"

namespace voxdb::engine {
namespace {

// Bits 0, 3, 6, ..., 60: where x's bits land.
constexpr uint64_t kMaskX = 0x1249249249249249ull;
constexpr uint64_t kMaskY = kMaskX << 1;
constexpr uint64_t kMaskZ = kMaskX << 2;

// Spreads the low 21 bits of v so that bit i moves to bit 3i.
constexpr uint64_t Spread3(uint64_t v) {
  v &= 0x1fffff;
  v = (v | (v << 32)) & 0x1f00000000ffffull;
  v = (v | (v << 16)) & 0x1f0000ff0000ffull;
  v = (v | (v << 8)) & 0x100f00f00f00f00full;
  v = (v | (v << 4)) & 0x10c30c30c30c30c3ull;
  v = (v | (v << 2)) & kMaskX;
  return v;
}

// Inverse of Spread3: gathers bits 3i into bit i.
constexpr uint32_t Compact3(uint64_t v) {
  v &= kMaskX;
  v = (v ^ (v >> 2)) & 0x10c30c30c30c30c3ull;
  v = (v ^ (v >> 4)) & 0x100f00f00f00f00full;
  v = (v ^ (v >> 8)) & 0x1f0000ff0000ffull;
  v = (v ^ (v >> 16)) & 0x1f00000000ffffull;
  v = (v ^ (v >> 32)) & 0x1fffff;
  return static_cast<uint32_t>(v);
}

static_assert(Spread3(1) == 1 && Spread3(2) == 8 && Spread3(0x1fffff) == kMaskX);
static_assert(Compact3(kMaskX) == 0x1fffff && Compact3(Spread3(0x12345)) == 0x12345);

bool DetectBmi2() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("bmi2");
#else
  return false;
#endif
}

const bool kHasBmi2 = DetectBmi2();

}  // namespace

uint64_t MortonEncodePortable(uint32_t x, uint32_t y, uint32_t z) {
  return Spread3(x) | (Spread3(y) << 1) | (Spread3(z) << 2);
}

ChunkCoord MortonDecodePortable(uint64_t code) {
  return ChunkCoord{Compact3(code), Compact3(code >> 1), Compact3(code >> 2)};
}

#if defined(__x86_64__)
__attribute__((target("bmi2"))) uint64_t MortonEncodeBmi2(uint32_t x, uint32_t y, uint32_t z) {
  return _pdep_u64(x, kMaskX) | _pdep_u64(y, kMaskY) | _pdep_u64(z, kMaskZ);
}

__attribute__((target("bmi2"))) ChunkCoord MortonDecodeBmi2(uint64_t code) {
  return ChunkCoord{static_cast<uint32_t>(_pext_u64(code, kMaskX)),
                    static_cast<uint32_t>(_pext_u64(code, kMaskY)),
                    static_cast<uint32_t>(_pext_u64(code, kMaskZ))};
}
#else
uint64_t MortonEncodeBmi2(uint32_t x, uint32_t y, uint32_t z) {
  return MortonEncodePortable(x, y, z);
}
ChunkCoord MortonDecodeBmi2(uint64_t code) { return MortonDecodePortable(code); }
#endif

bool HasBmi2() { return kHasBmi2; }

uint64_t MortonEncode(uint32_t x, uint32_t y, uint32_t z) {
  return kHasBmi2 ? MortonEncodeBmi2(x & kMaxChunkAxis, y & kMaxChunkAxis, z & kMaxChunkAxis)
                  : MortonEncodePortable(x, y, z);
}

ChunkCoord MortonDecode(uint64_t code) {
  return kHasBmi2 ? MortonDecodeBmi2(code) : MortonDecodePortable(code);
}

std::string ChunkCoord::ToString() const { return absl::StrFormat("(%u, %u, %u)", x, y, z); }

std::array<uint8_t, ChunkKey::kEncodedSize> ChunkKey::Encode() const {
  std::array<uint8_t, kEncodedSize> out;
  EncodeTo(out.data());
  return out;
}

void ChunkKey::EncodeTo(uint8_t* out) const { EncodeBigEndian64(out, code_); }

std::optional<ChunkKey> ChunkKey::Decode(std::span<const uint8_t> bytes) {
  if (bytes.size() != kEncodedSize) return std::nullopt;
  const uint64_t code = DecodeBigEndian64(bytes.data());
  if (code > kMaxCode) return std::nullopt;
  return ChunkKey(code);
}

std::string ChunkKey::ToString() const {
  return absl::StrFormat("%016x%s", code_, coord().ToString());
}

}  // namespace voxdb::engine
