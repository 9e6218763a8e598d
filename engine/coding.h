// Fixed-width integer encoding: the one home of the byte order of every
// on-disk record (engine/FORMAT.md) and of the wire format
// (protocol/PROTOCOL.md).
//
//   little-endian  16, 32 and 64 bits: every value on disk and every field
//                  on the wire (EncodeFixedN / DecodeFixedN / PutFixedN);
//   big-endian     64 bits: LMDB keys (chunk keys, journal and fill
//                  sequence numbers, S2 cells), so that LMDB's byte order
//                  is the numeric order (EncodeBigEndian64 /
//                  DecodeBigEndian64).
//
// Header-only and standard C++ only, so that protocol/ includes it without
// linking the engine.
//
// Example:
//   std::vector<uint8_t> out;
//   PutFixed32(out, 7);                       // 07 00 00 00
//   uint8_t key[8];
//   EncodeBigEndian64(key, 7);                // 00 .. 00 07
//   uint64_t seq = DecodeBigEndian64(key);    // 7
//
// Thread-safety: pure functions.
#ifndef VOXDB_ENGINE_CODING_H_
#define VOXDB_ENGINE_CODING_H_

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace voxdb::engine {

// --- Little-endian ---------------------------------------------------------

inline void EncodeFixed16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void EncodeFixed32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void EncodeFixed64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint16_t DecodeFixed16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
inline uint32_t DecodeFixed32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t DecodeFixed64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Append to `out`.
inline void PutFixed16(std::vector<uint8_t>& out, uint16_t v) {
  out.resize(out.size() + 2);
  EncodeFixed16(out.data() + out.size() - 2, v);
}
inline void PutFixed32(std::vector<uint8_t>& out, uint32_t v) {
  out.resize(out.size() + 4);
  EncodeFixed32(out.data() + out.size() - 4, v);
}
inline void PutFixed64(std::vector<uint8_t>& out, uint64_t v) {
  out.resize(out.size() + 8);
  EncodeFixed64(out.data() + out.size() - 8, v);
}

// --- Big-endian (keys) -----------------------------------------------------

inline void EncodeBigEndian64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
}
inline std::array<uint8_t, 8> BigEndian64(uint64_t v) {
  std::array<uint8_t, 8> out;
  EncodeBigEndian64(out.data(), v);
  return out;
}
inline uint64_t DecodeBigEndian64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}
// The big-endian number `bytes` spell, of any length: shorter than 8 bytes
// reads as if zero-padded in front; longer keeps the last 8 bytes (callers
// that need exactly 8 check the size first).
inline uint64_t DecodeBigEndian(std::span<const uint8_t> bytes) {
  uint64_t v = 0;
  for (uint8_t b : bytes) v = (v << 8) | b;
  return v;
}

// The bytes of a string, for keys such as the meta table's names.
inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_CODING_H_
