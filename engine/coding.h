// Fixed-width little-endian integer encoding, as used by every on-disk
// record (engine/FORMAT.md). Keys use big-endian (ChunkKey::Encode).
//
// Thread-safety: pure functions.
#ifndef VOXDB_ENGINE_CODING_H_
#define VOXDB_ENGINE_CODING_H_

#include <cstdint>
#include <vector>

namespace voxdb::engine {

inline void EncodeFixed32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void EncodeFixed64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
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
inline void PutFixed32(std::vector<uint8_t>& out, uint32_t v) {
  out.resize(out.size() + 4);
  EncodeFixed32(out.data() + out.size() - 4, v);
}
inline void PutFixed64(std::vector<uint8_t>& out, uint64_t v) {
  out.resize(out.size() + 8);
  EncodeFixed64(out.data() + out.size() - 8, v);
}

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_CODING_H_
