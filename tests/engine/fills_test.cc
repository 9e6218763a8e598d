// FillSet against a brute-force reference (every fill scanned, in seq
// order: what FillSet did before it had a spatial index), on random fills of
// every size, planet-wide and thin ones included.
#include "engine/fills.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "engine/chunk.h"
#include "engine/world_frame.h"

namespace voxdb::engine {
namespace {

// The reference: a sorted vector, scanned whole.
class ReferenceFills {
 public:
  void Add(const Fill& fill) {
    auto it = std::lower_bound(fills_.begin(), fills_.end(), fill.seq,
                               [](const Fill& f, uint64_t seq) { return f.seq < seq; });
    if (it != fills_.end() && it->seq == fill.seq) {
      *it = fill;
    } else {
      fills_.insert(it, fill);
    }
  }
  const std::vector<Fill>& fills() const { return fills_; }

  Chunk Rasterise(const WorldFrame& frame, const ChunkCoord& c, uint64_t* version) const {
    const VoxelBox chunk_box = frame.VoxelsOfChunk(c);
    const VoxelCoord origin = frame.ChunkOrigin(c);
    Chunk chunk(0);
    uint64_t newest = 0;
    for (const Fill& f : fills_) {
      const VoxelBox part = Intersect(f.box, chunk_box);
      if (part.empty()) continue;
      newest = f.seq;
      LocalBox local{
          {static_cast<uint32_t>(part.lo.x - origin.x), static_cast<uint32_t>(part.lo.y - origin.y),
           static_cast<uint32_t>(part.lo.z - origin.z)},
          {static_cast<uint32_t>(part.hi.x - origin.x), static_cast<uint32_t>(part.hi.y - origin.y),
           static_cast<uint32_t>(part.hi.z - origin.z)}};
      chunk.FillBox(local, f.material);
    }
    chunk.Compact();
    *version = newest;
    return chunk;
  }

 private:
  std::vector<Fill> fills_;
};

std::vector<Fill> ToVector(const FillList& list) { return {list.begin(), list.end()}; }

bool SameFills(const std::vector<Fill>& a, const std::vector<Fill>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](auto& x, auto& y) {
           return x.seq == y.seq && x.box == y.box && x.material == y.material;
         });
}

// [lo, lo + len) on one axis of extent `extent`, len drawn log-uniformly from
// 1 voxel to the whole axis.
void RandomSpan(std::mt19937_64& rng, uint64_t extent, uint64_t* lo, uint64_t* hi) {
  const int bits = std::bit_width(extent);
  uint64_t len = uint64_t{1} << (rng() % bits);
  len = std::min(extent, len + rng() % len);
  *lo = rng() % (extent - len + 1);
  *hi = *lo + len;
}

VoxelBox RandomBox(std::mt19937_64& rng, const WorldFrame& frame) {
  const uint64_t ex = frame.extent_x(), ey = frame.extent_y(), ez = frame.extent_z();
  VoxelBox b;
  RandomSpan(rng, ex, &b.lo.x, &b.hi.x);
  RandomSpan(rng, ey, &b.lo.y, &b.hi.y);
  RandomSpan(rng, ez, &b.lo.z, &b.hi.z);
  switch (rng() % 16) {
    case 0:  // planet-wide
      return frame.Bounds();
    case 1:  // a thin column, the whole height
      b.hi.x = b.lo.x + 1, b.hi.y = b.lo.y + 1 + rng() % 3;
      b.lo.z = 0, b.hi.z = ez;
      break;
    case 2:  // a thin layer, the whole planet
      b.lo.x = 0, b.hi.x = ex, b.lo.y = 0, b.hi.y = ey;
      b.hi.z = b.lo.z + 1;
      break;
    case 3:  // a thin wall along x
      b.hi.y = b.lo.y + 1;
      break;
    case 4:  // up to the far edges (edge chunks are partial)
      b.hi = {ex, ey, ez};
      break;
    case 5:  // small, near the origin
      b.lo = {rng() % 300, rng() % 300, rng() % 300};
      b.hi = {b.lo.x + 1 + rng() % 300, b.lo.y + 1 + rng() % 300, b.lo.z + 1 + rng() % 300};
      break;
    case 6:
    case 7: {  // on the octree's node boundaries: 2^L chunks from just below a node
      const int level = static_cast<int>(rng() % 21);
      const auto aligned = [&](uint64_t extent, uint64_t* lo, uint64_t* hi) {
        const uint64_t chunks = (extent + 127) / 128;
        const uint64_t len = std::min<uint64_t>(uint64_t{1} << level, chunks);
        const uint64_t nodes = std::max<uint64_t>(1, chunks >> level);
        uint64_t lo_c = (rng() % nodes) << level;
        if (lo_c > 0 && rng() % 2 == 0) --lo_c;
        lo_c = std::min(lo_c, chunks - len);
        *lo = lo_c * 128 + (rng() % 2 == 0 ? 0 : 127);
        *hi = std::min(extent, (lo_c + len) * 128 - (rng() % 2 == 0 ? 0 : 100));
        if (*hi <= *lo) *hi = *lo + 1;
      };
      aligned(ex, &b.lo.x, &b.hi.x);
      aligned(ey, &b.lo.y, &b.hi.y);
      aligned(ez, &b.lo.z, &b.hi.z);
      break;
    }
    default:
      break;
  }
  return b;
}

// A chunk to look up: often one a fill touches or borders, sometimes any.
ChunkCoord RandomChunk(std::mt19937_64& rng, const WorldFrame& frame,
                       const std::vector<Fill>& fills) {
  const auto clamp = [](int64_t v, uint32_t n) {
    return static_cast<uint32_t>(std::clamp<int64_t>(v, 0, int64_t{n} - 1));
  };
  if (fills.empty() || rng() % 4 == 0) {
    if (rng() % 2 == 0) return {frame.chunks_x() - 1, frame.chunks_y() - 1, frame.chunks_z() - 1};
    return {static_cast<uint32_t>(rng() % frame.chunks_x()),
            static_cast<uint32_t>(rng() % frame.chunks_y()),
            static_cast<uint32_t>(rng() % frame.chunks_z())};
  }
  const VoxelBox& b = fills[rng() % fills.size()].box;
  const ChunkCoord lo = frame.ChunkOf(b.lo),
                   hi = frame.ChunkOf({b.hi.x - 1, b.hi.y - 1, b.hi.z - 1});
  const auto pick = [&](uint32_t l, uint32_t h, uint32_t n) {
    int64_t v = int64_t{l} + static_cast<int64_t>(rng() % (uint64_t{h} - l + 1));
    if (rng() % 2 == 0) v = rng() % 2 == 0 ? l : h;  // its ends,
    v += static_cast<int64_t>(rng() % 3) - 1;        // and one either side
    return clamp(v, n);
  };
  return {pick(lo.x, hi.x, frame.chunks_x()), pick(lo.y, hi.y, frame.chunks_y()),
          pick(lo.z, hi.z, frame.chunks_z())};
}

void ExpectSameChunk(const FillSet& set, const ReferenceFills& ref, const WorldFrame& frame,
                     const ChunkCoord& c) {
  uint64_t want_version = 0, got_version = 0;
  const Chunk want = ref.Rasterise(frame, c, &want_version);
  const Chunk got = set.Rasterise(frame, c, &got_version);
  EXPECT_EQ(got_version, want_version) << c.ToString();
  EXPECT_EQ(set.VersionOf(frame, c), want_version) << c.ToString();
  EXPECT_TRUE(got == want) << "chunk " << c.ToString() << " rasterises differently";
}

class FillSetRandomTest : public ::testing::TestWithParam<int> {};

TEST_P(FillSetRandomTest, MatchesBruteForce) {
  // 0: the Earth frame; 1: a small world with partial edge chunks.
  const WorldFrame frame =
      GetParam() == 0 ? WorldFrame::Earth() : *WorldFrame::Create(1000, 700, 900, 0.25, 128, 450);
  std::mt19937_64 rng(1234 + GetParam());
  FillSet set;
  ReferenceFills ref;
  uint64_t seq = 0;
  // The small world's chunks each hold most fills: fewer, or rasterising
  // them all by brute force takes minutes.
  const int rounds = GetParam() == 0 ? 40 : 10;
  for (int round = 0; round < rounds; ++round) {
    // A snapshot, and what it reads, before this round's fills.
    const FillSet before = set;
    const std::vector<Fill> before_fills = ref.fills();
    std::vector<std::pair<ChunkCoord, Chunk>> before_chunks;
    std::vector<uint64_t> before_versions;
    for (int i = 0; i < 5; ++i) {
      const ChunkCoord c = RandomChunk(rng, frame, ref.fills());
      uint64_t v = 0;
      before_chunks.emplace_back(c, before.Rasterise(frame, c, &v));
      before_versions.push_back(v);
    }

    for (int i = 0; i < (GetParam() == 0 ? 50 : 25); ++i) {
      Fill f{0, RandomBox(rng, frame), static_cast<uint8_t>(rng() % 8)};
      const uint64_t kind = rng() % 20;
      if (kind == 0 && !ref.fills().empty()) {
        f = ref.fills()[rng() % ref.fills().size()];  // replayed: replaced by itself
      } else if (kind == 1 && !ref.fills().empty()) {
        f.seq = ref.fills()[rng() % ref.fills().size()].seq;  // replaced, box and all
      } else if (kind == 2 && seq > 10) {
        f.seq = 1 + rng() % seq;  // older than the newest (replaced if present)
      } else {
        seq += 1 + rng() % 3;
        f.seq = seq;
      }
      set.Add(f);
      ref.Add(f);
    }

    ASSERT_TRUE(SameFills(ToVector(set.fills()), ref.fills())) << "round " << round;
    ASSERT_EQ(set.size(), ref.fills().size());
    EXPECT_EQ(set.last_seq(), ref.fills().back().seq);
    for (int i = 0; i < 60; ++i)
      ExpectSameChunk(set, ref, frame, RandomChunk(rng, frame, ref.fills()));

    // The snapshot did not change.
    EXPECT_TRUE(SameFills(ToVector(before.fills()), before_fills)) << "round " << round;
    for (size_t i = 0; i < before_chunks.size(); ++i) {
      uint64_t v = 0;
      EXPECT_TRUE(before.Rasterise(frame, before_chunks[i].first, &v) == before_chunks[i].second);
      EXPECT_EQ(v, before_versions[i]);
    }
    if (HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Frames, FillSetRandomTest, ::testing::Values(0, 1));

TEST(FillSetTest, EmptySetReadsAir) {
  const WorldFrame frame = WorldFrame::Earth();
  FillSet set;
  uint64_t v = 7;
  EXPECT_TRUE(set.Rasterise(frame, {3, 4, 5}, &v) == Chunk(0));
  EXPECT_EQ(v, 0u);
  EXPECT_EQ(set.VersionOf(frame, {3, 4, 5}), 0u);
  EXPECT_EQ(set.last_seq(), 0u);
  EXPECT_TRUE(set.fills().empty());
  EXPECT_EQ(set.fills().begin(), set.fills().end());
}

TEST(FillListTest, IndexingAndIterationAcrossLeaves) {
  FillSet set;
  for (uint64_t s = 1; s <= 5000; ++s) set.Add(Fill{s * 2, {{s, 0, 0}, {s + 1, 1, 1}}, 1});
  set.Add(Fill{3, {{0, 0, 0}, {1, 1, 1}}, 2});  // before newer ones
  const FillList list = set.fills();
  ASSERT_EQ(list.size(), 5001u);
  EXPECT_EQ(list.front().seq, 2u);
  EXPECT_EQ(list[1].seq, 3u);
  EXPECT_EQ(list[2].seq, 4u);
  EXPECT_EQ(list.back().seq, 10000u);
  uint64_t prev = 0;
  size_t n = 0;
  for (const Fill& f : list) {
    EXPECT_GT(f.seq, prev);
    EXPECT_EQ(list[n].seq, f.seq);
    prev = f.seq;
    ++n;
  }
  EXPECT_EQ(n, list.size());
  EXPECT_EQ(list.Find(4000), 2000u);
  EXPECT_EQ(list.Find(4001), list.size());
}

// Many fills, each a chunk of its own: every Add used to copy the whole set
// and every lookup to scan it (hours for this test); now both touch only
// O(log n) nodes and the fills near the chunk.
TEST(FillSetTest, ManyFillsStayCheap) {
  const WorldFrame frame = WorldFrame::Earth();
  constexpr uint32_t kSide = 64;  // 64^2 x 50 chunks
  constexpr uint32_t kLayers = 50;
  FillSet set;
  std::vector<FillSet> snapshots;
  uint64_t seq = 0;
  for (uint32_t z = 0; z < kLayers; ++z) {
    for (uint32_t y = 0; y < kSide; ++y) {
      for (uint32_t x = 0; x < kSide; ++x) {
        const VoxelCoord o = frame.ChunkOrigin({x + 1000, y + 2000, z + 300'000});
        set.Add(Fill{++seq, {o, {o.x + 128, o.y + 128, o.z + 128}}, static_cast<uint8_t>(seq % 7)});
      }
    }
    snapshots.push_back(set);  // every snapshot kept: they share storage
  }
  ASSERT_EQ(set.size(), size_t{kSide} * kSide * kLayers);
  std::mt19937_64 rng(5);
  for (int i = 0; i < 2000; ++i) {
    const uint32_t x = rng() % kSide, y = rng() % kSide, z = rng() % kLayers;
    const uint64_t want = 1 + x + kSide * (y + uint64_t{kSide} * z);
    uint64_t v = 0;
    const Chunk c = set.Rasterise(frame, {x + 1000, y + 2000, z + 300'000}, &v);
    ASSERT_EQ(v, want);
    ASSERT_TRUE(c == Chunk(static_cast<uint8_t>(want % 7)));
    // The snapshot of an earlier layer does not see this one's fill.
    const size_t layer = rng() % kLayers;
    EXPECT_EQ(snapshots[layer].VersionOf(frame, {x + 1000, y + 2000, z + 300'000}),
              z <= layer ? want : 0u);
  }
}

}  // namespace
}  // namespace voxdb::engine
