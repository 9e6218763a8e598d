#include "engine/coding.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace voxdb::engine {
namespace {

TEST(CodingTest, LittleEndianBytesAreLeastSignificantFirst) {
  uint8_t b[8] = {};
  EncodeFixed16(b, 0x0102);
  EXPECT_EQ(b[0], 0x02);
  EXPECT_EQ(b[1], 0x01);
  EncodeFixed32(b, 0x01020304);
  EXPECT_EQ(std::vector<uint8_t>(b, b + 4), (std::vector<uint8_t>{4, 3, 2, 1}));
  EncodeFixed64(b, 0x0102030405060708);
  EXPECT_EQ(std::vector<uint8_t>(b, b + 8), (std::vector<uint8_t>{8, 7, 6, 5, 4, 3, 2, 1}));
}

TEST(CodingTest, LittleEndianRoundTripsEveryWidth) {
  for (uint64_t v :
       {uint64_t{0}, uint64_t{1}, uint64_t{0x80}, uint64_t{0xff}, uint64_t{0x1234},
        uint64_t{0x89abcdef}, uint64_t{0x0123456789abcdef}, std::numeric_limits<uint64_t>::max()}) {
    uint8_t b[8];
    EncodeFixed16(b, static_cast<uint16_t>(v));
    EXPECT_EQ(DecodeFixed16(b), static_cast<uint16_t>(v));
    EncodeFixed32(b, static_cast<uint32_t>(v));
    EXPECT_EQ(DecodeFixed32(b), static_cast<uint32_t>(v));
    EncodeFixed64(b, v);
    EXPECT_EQ(DecodeFixed64(b), v);
  }
}

TEST(CodingTest, PutAppendsInOrder) {
  std::vector<uint8_t> out = {0xee};
  PutFixed16(out, 0xbeef);
  PutFixed32(out, 0xdeadbeef);
  PutFixed64(out, 0x1122334455667788);
  ASSERT_EQ(out.size(), 1u + 2 + 4 + 8);
  EXPECT_EQ(out[0], 0xee);
  EXPECT_EQ(DecodeFixed16(out.data() + 1), 0xbeef);
  EXPECT_EQ(DecodeFixed32(out.data() + 3), 0xdeadbeefu);
  EXPECT_EQ(DecodeFixed64(out.data() + 7), 0x1122334455667788u);
}

TEST(CodingTest, BigEndianBytesAreMostSignificantFirst) {
  const std::array<uint8_t, 8> b = BigEndian64(0x0102030405060708);
  EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.end()),
            (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(DecodeBigEndian64(b.data()), 0x0102030405060708u);
  uint8_t p[8];
  EncodeBigEndian64(p, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(DecodeBigEndian64(p), std::numeric_limits<uint64_t>::max());
}

// Keys sort as their numbers: what LMDB's byte order relies on.
TEST(CodingTest, BigEndianOrderIsNumericOrder) {
  const uint64_t values[] = {0, 1, 255, 256, 65535, 65536, uint64_t{1} << 40, ~uint64_t{0}};
  for (size_t i = 0; i + 1 < std::size(values); ++i) {
    EXPECT_LT(BigEndian64(values[i]), BigEndian64(values[i + 1])) << values[i];
  }
}

TEST(CodingTest, DecodeBigEndianOfAnyLength) {
  const uint8_t b[10] = {9, 9, 1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(DecodeBigEndian({}), 0u);
  EXPECT_EQ(DecodeBigEndian({b + 2, 2}), 0x0102u);
  EXPECT_EQ(DecodeBigEndian({b + 2, 8}), 0x0102030405060708u);
  // Longer than 8 bytes: the last 8 count.
  EXPECT_EQ(DecodeBigEndian({b, 10}), 0x0102030405060708u);
}

TEST(CodingTest, AsBytesViewsTheString) {
  const std::string_view s = "last_seq";
  const std::span<const uint8_t> b = AsBytes(s);
  ASSERT_EQ(b.size(), s.size());
  EXPECT_EQ(static_cast<const void*>(b.data()), static_cast<const void*>(s.data()));
  EXPECT_EQ(b[0], 'l');
}

}  // namespace
}  // namespace voxdb::engine
