// CRC-32C (Castagnoli), the checksum of chunk records and journal records.
//
// Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise;
// both give the same value (tests prove it). Known vector:
// Crc32c("123456789") == 0xE3069283.
//
// Thread-safety: pure functions.
#ifndef VOXDB_ENGINE_CRC32C_H_
#define VOXDB_ENGINE_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include <span>

namespace voxdb::engine {

// Extends `crc` (the value of an earlier call, or 0 to start) over data.
uint32_t Crc32cExtend(uint32_t crc, const uint8_t* data, size_t n);
inline uint32_t Crc32c(std::span<const uint8_t> data) {
  return Crc32cExtend(0, data.data(), data.size());
}
// The portable implementation, for tests.
uint32_t Crc32cExtendPortable(uint32_t crc, const uint8_t* data, size_t n);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_CRC32C_H_
