#include "engine/crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <string_view>
#include <vector>

namespace voxdb::engine {
namespace {

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c(Bytes("123456789")), 0xE3069283u);
  EXPECT_EQ(Crc32c(Bytes("")), 0u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(Crc32c(zeros), 0x8A9136AAu);  // RFC 3720 B.4
  std::vector<uint8_t> ones(32, 0xff);
  EXPECT_EQ(Crc32c(ones), 0x62A8AB43u);
}

TEST(Crc32cTest, HardwareEqualsPortableAndExtendIsConcatenation) {
  std::mt19937 rng(1);
  std::vector<uint8_t> data(100'003);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (size_t n : {0u, 1u, 7u, 8u, 9u, 63u, 767u, 768u, 769u, 1000u, 10'000u, 12'288u, 12'289u,
                   40'000u, 100'003u}) {
    EXPECT_EQ(Crc32cExtend(0, data.data(), n), Crc32cExtendPortable(0, data.data(), n)) << n;
    const size_t cut = n / 3;
    EXPECT_EQ(Crc32cExtend(Crc32cExtend(0, data.data(), cut), data.data() + cut, n - cut),
              Crc32cExtend(0, data.data(), n));
  }
}

}  // namespace
}  // namespace voxdb::engine
