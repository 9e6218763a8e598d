// engine/partition_range.h: aligned Morton ranges, their octree cubes, boxes
// clipped to ranges and the routing of codes and boxes to partitions, each
// checked against brute force over the codes.
#include "engine/partition_range.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "tests/testing/status_matchers.h"

namespace voxdb::engine {
namespace {

constexpr uint64_t kEnd = ChunkKey::kMaxCode + 1;

TEST(PartitionRangeTest, AlignmentIsAboutBothEnds) {
  EXPECT_TRUE(IsAlignedCode(0, 21));
  EXPECT_TRUE(IsAlignedCode(4096, 4));
  EXPECT_FALSE(IsAlignedCode(4096 + 8, 4));
  EXPECT_TRUE(IsAlignedRange({0, kEnd}, 4));
  EXPECT_TRUE(IsAlignedRange({4096, kEnd}, 4));  // the key space's end counts as aligned
  EXPECT_TRUE(IsAlignedRange({4096, 3 * 4096}, 4));
  EXPECT_FALSE(IsAlignedRange({4096, 3 * 4096 + 512}, 4));
  EXPECT_FALSE(IsAlignedRange({512, 4096}, 4));
  EXPECT_FALSE(IsAlignedRange({4096, 4096}, 4));  // empty
  EXPECT_FALSE(IsAlignedRange({0, kEnd + 4096}, 4));
}

// The cubes tile the range exactly, each aligned to its own size and the
// largest that fits, at most 7 per level on each side.
TEST(PartitionRangeTest, CubesOfRangeTileItExactly) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 2000; ++round) {
    uint64_t a = rng() % kEnd, b = rng() % (kEnd + 1);
    if (round % 4 == 0) b = kEnd;
    if (round % 5 == 0) a &= ~uint64_t{4095};
    if (a > b) std::swap(a, b);
    const MortonRange r{a, b};
    const std::vector<OctreeCube> cubes = CubesOfRange(r);
    uint64_t at = r.begin;
    std::vector<int> per_level(kMaxOctreeLevel + 1, 0);
    for (const OctreeCube& c : cubes) {
      const MortonRange cr = c.Range();
      ASSERT_EQ(cr.begin, at) << "round " << round;
      ASSERT_LE(cr.end, r.end);
      // The largest: the next level up would not be aligned or would not fit.
      if (c.level < kMaxOctreeLevel) {
        const uint64_t up = uint64_t{1} << (3 * (c.level + 1));
        EXPECT_TRUE(!IsAlignedCode(cr.begin, c.level + 1) || r.end - cr.begin < up);
      }
      ++per_level[c.level];
      at = cr.end;
    }
    EXPECT_EQ(at, r.end);
    for (int n : per_level) EXPECT_LE(n, 14);
  }
  EXPECT_EQ(CubesOfRange({0, kEnd}), (std::vector<OctreeCube>{{0, kMaxOctreeLevel}}));
  EXPECT_TRUE(CubesOfRange({5, 5}).empty());
}

TEST(PartitionRangeTest, ACubeBoxHoldsExactlyItsCodes) {
  for (const OctreeCube c : {OctreeCube{0, 0}, OctreeCube{5, 1}, OctreeCube{77, 2},
                             OctreeCube{0, kMaxOctreeLevel}, OctreeCube{7, kMaxOctreeLevel - 1}}) {
    const ChunkBox b = c.Box();
    const MortonRange r = c.Range();
    EXPECT_EQ(b.MinCode(), r.begin);
    EXPECT_EQ(b.MaxCode(), r.end - 1);
    const uint64_t side = uint64_t{1} << c.level;
    EXPECT_EQ(uint64_t{b.hi.x} - b.lo.x + 1, side);
    EXPECT_EQ(uint64_t{b.hi.z} - b.lo.z + 1, side);
  }
}

// A small world corner (8^3 chunks, codes 0..511) with ranges aligned to 8
// (one level): every chunk of a box is in exactly one clipped part of the
// range holding its code, and in none of the others.
TEST(PartitionRangeTest, ClippingABoxAgreesWithBruteForce) {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 500; ++round) {
    std::vector<uint64_t> starts{0};
    for (uint64_t s = 8; s < 512; s += 8) {
      if (rng() % 6 == 0) starts.push_back(s);
    }
    starts.push_back(512);  // the rest of the key space
    ASSERT_OK_AND_ASSIGN(const PartitionRanges ranges, PartitionRanges::FromStarts(starts, 1));
    ChunkBox box;
    for (uint32_t* lo_hi : {&box.lo.x, &box.lo.y, &box.lo.z}) *lo_hi = rng() % 8;
    box.hi = {box.lo.x + static_cast<uint32_t>(rng() % (8 - box.lo.x)),
              box.lo.y + static_cast<uint32_t>(rng() % (8 - box.lo.y)),
              box.lo.z + static_cast<uint32_t>(rng() % (8 - box.lo.z))};
    std::set<size_t> meeting;
    for (size_t p = 0; p < ranges.size(); ++p) {
      const MortonRange r = ranges.range(p);
      const std::vector<ChunkBox> parts = ClipBoxToRange(box, r);
      EXPECT_EQ(BoxMeetsRange(box, r), !parts.empty());
      if (!parts.empty()) meeting.insert(p);
      for (uint64_t code = 0; code < 512; ++code) {
        const bool want = box.ContainsCode(code) && r.Contains(code);
        int in = 0;
        for (const ChunkBox& part : parts) in += part.ContainsCode(code) ? 1 : 0;
        ASSERT_EQ(in, want ? 1 : 0) << "round " << round << " partition " << p << " code " << code;
      }
    }
    const std::vector<size_t> routed = ranges.Meeting(box);
    EXPECT_EQ(std::set<size_t>(routed.begin(), routed.end()), meeting) << "round " << round;
    EXPECT_TRUE(std::is_sorted(routed.begin(), routed.end()));
  }
}

TEST(PartitionRangeTest, FindIsTheRangeHoldingTheCode) {
  std::mt19937_64 rng(3);
  std::vector<uint64_t> starts{0};
  for (int i = 0; i < 200; ++i) starts.push_back(starts.back() + ((rng() % 1000 + 1) << 12));
  ASSERT_OK_AND_ASSIGN(const PartitionRanges ranges, PartitionRanges::FromStarts(starts, 4));
  EXPECT_EQ(ranges.size(), 201u);
  for (int i = 0; i < 10000; ++i) {
    const uint64_t code = i % 3 == 0 ? starts[rng() % starts.size()] - (i % 2)
                                     : rng() % (starts.back() + (uint64_t{1} << 20));
    if (code > ChunkKey::kMaxCode) continue;
    const size_t p = ranges.Find(code);
    ASSERT_TRUE(ranges.range(p).Contains(code)) << code;
  }
  EXPECT_EQ(ranges.Find(ChunkKey::kMaxCode), 200u);
  EXPECT_EQ(ranges.range(200).end, kEnd);
}

TEST(PartitionRangeTest, StartsAndSplitsAreChecked) {
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionRanges::FromStarts({}, 4).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionRanges::FromStarts({4096}, 4).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionRanges::FromStarts({0, 4096, 4096}, 4).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionRanges::FromStarts({0, 8192, 4096}, 4).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionRanges::FromStarts({0, 4096 + 512}, 4).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionRanges::FromStarts({0, kEnd}, 4).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PartitionRanges::FromStarts({0}, 22).status()));

  const PartitionRanges whole = PartitionRanges::Whole();
  EXPECT_EQ(whole.size(), 1u);
  EXPECT_EQ(whole.range(0), (MortonRange{0, kEnd}));
  ASSERT_OK_AND_ASSIGN(const PartitionRanges two, whole.Split(0, uint64_t{1} << 60, 4));
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two.range(0), (MortonRange{0, uint64_t{1} << 60}));
  EXPECT_EQ(two.range(1), (MortonRange{uint64_t{1} << 60, kEnd}));
  ASSERT_OK_AND_ASSIGN(const PartitionRanges three, two.Split(0, 4096, 4));
  EXPECT_EQ(three.starts(), (std::vector<uint64_t>{0, 4096, uint64_t{1} << 60}));
  EXPECT_TRUE(absl::IsInvalidArgument(two.Split(0, 0, 4).status()));  // not inside
  EXPECT_TRUE(absl::IsInvalidArgument(two.Split(0, uint64_t{1} << 60, 4).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(two.Split(1, (uint64_t{1} << 60) + 8, 4).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(two.Split(2, 4096, 4).status()));  // no such partition
}

}  // namespace
}  // namespace voxdb::engine
