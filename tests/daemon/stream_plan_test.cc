// Tests of StreamPlan (daemon/stream.h): the rules of protocol/PROTOCOL.md
// "Streaming" as pure geometry, checked against brute force over the nodes
// around the viewers. No server, no database.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "daemon/stream.h"
#include "engine/morton.h"
#include "engine/world_frame.h"
#include "protocol/messages.h"
#include "tests/testing/world.h"

namespace voxdb::daemon {
namespace {

using protocol::Viewer;

const engine::WorldFrame kFrame = engine::WorldFrame::Earth();
constexpr double kEdgeM = 128 * 0.25;  // a chunk's edge in metres

// A viewer standing in the middle of the region's first chunk.
Viewer StandingViewer(double view_distance_m, uint32_t id = 1) {
  Viewer v;
  v.id = id;
  v.x = static_cast<double>(testing::kX) + 64;
  v.y = static_cast<double>(testing::kY) + 64;
  v.z = static_cast<double>(testing::kZ) + 64;
  v.view_distance_m = view_distance_m;
  return v;
}

NodeKey Chunk(int64_t dx, int64_t dy, int64_t dz) {
  return {0, engine::MortonEncode(static_cast<uint32_t>(testing::kCx + dx),
                                  static_cast<uint32_t>(testing::kCy + dy),
                                  static_cast<uint32_t>(testing::kCz + dz))};
}

// The distance rule, written out: metres from (x, y, z) in voxels to the
// nearest point of the node's box.
double NaiveDistance(const Viewer& v, const NodeKey& key) {
  const engine::ChunkCoord c = engine::MortonDecode(key.code);
  const double edge = static_cast<double>(128u << key.level);
  double sum = 0;
  const double p[3] = {v.x, v.y, v.z};
  const uint32_t n[3] = {c.x, c.y, c.z};
  for (int a = 0; a < 3; ++a) {
    const double lo = n[a] * edge, hi = lo + edge;
    const double d = p[a] < lo ? lo - p[a] : p[a] > hi ? p[a] - hi : 0;
    sum += d * d;
  }
  return std::sqrt(sum) * 0.25;
}

std::set<NodeKey> Keys(const std::vector<StreamPlan::Want>& wants) {
  std::set<NodeKey> keys;
  for (const auto& w : wants) EXPECT_TRUE(keys.insert(w.key).second) << "listed twice";
  return keys;
}

TEST(StreamPlanTest, DistanceIsToTheNearestPointOfTheNodesBoxInMetres) {
  StreamPlan plan(kFrame, 3);
  const Viewer v = StandingViewer(100);
  EXPECT_EQ(plan.Distance(v, Chunk(0, 0, 0)), 0);  // inside
  // Two chunks along x: 64 voxels to the far side of the own chunk, then
  // one whole chunk: 64 + 128 voxels.
  EXPECT_DOUBLE_EQ(plan.Distance(v, Chunk(2, 0, 0)), (64 + 128) * 0.25);
  EXPECT_DOUBLE_EQ(plan.Distance(v, Chunk(-1, 0, 0)), 64 * 0.25);
  // Diagonal: Euclidean.
  EXPECT_DOUBLE_EQ(plan.Distance(v, Chunk(1, 1, 0)), std::sqrt(2.0) * 64 * 0.25);
  // A LOD node holding the viewer's chunk is at distance 0.
  const NodeKey level2{2, Chunk(0, 0, 0).code >> 6};
  EXPECT_EQ(plan.Distance(v, level2), 0);
  for (const NodeKey& k :
       {Chunk(3, -2, 1), Chunk(-4, 4, -1), NodeKey{1, Chunk(6, 0, 0).code >> 3}}) {
    EXPECT_DOUBLE_EQ(plan.Distance(v, k), NaiveDistance(v, k));
  }
}

// Chunks only (lod_distance 0): every chunk within the view distance, each
// once, nearest first; none beyond it.
TEST(StreamPlanTest, ChunksOnlyAreEveryChunkInRangeNearestFirst) {
  StreamPlan plan(kFrame, 3);
  const Viewer v = StandingViewer(3 * kEdgeM);
  plan.Set({v}, 0);
  const std::vector<StreamPlan::Want> wants = plan.Wanted();
  std::set<NodeKey> expected;
  for (int dz = -5; dz <= 5; ++dz) {
    for (int dy = -5; dy <= 5; ++dy) {
      for (int dx = -5; dx <= 5; ++dx) {
        const NodeKey k = Chunk(dx, dy, dz);
        if (NaiveDistance(v, k) <= v.view_distance_m) expected.insert(k);
      }
    }
  }
  EXPECT_EQ(Keys(wants), expected);
  for (size_t i = 0; i < wants.size(); ++i) {
    EXPECT_EQ(wants[i].key.level, 0);
    // A standing viewer: the priority is the distance.
    EXPECT_DOUBLE_EQ(wants[i].priority_m, NaiveDistance(v, wants[i].key));
    if (i > 0) {
      EXPECT_LE(wants[i - 1].priority_m, wants[i].priority_m);
      if (wants[i - 1].priority_m == wants[i].priority_m) {
        EXPECT_LT(wants[i - 1].key, wants[i].key);
      }
    }
  }
  EXPECT_EQ(wants.front().key, Chunk(0, 0, 0));
}

// With LOD levels: a node of level l >= 1 closer than lod_distance x
// 2^(l-1) is replaced by its children, so the chosen nodes never overlap,
// each is at least its level's start away, its parent was closer than the
// parent level's start, and all are within the view distance.
TEST(StreamPlanTest, LevelsTileSpaceFineNearAndCoarseFar) {
  constexpr int kLevels = 3;
  StreamPlan plan(kFrame, kLevels);
  const double lod_distance = 2 * kEdgeM;
  const Viewer v = StandingViewer(40 * kEdgeM);
  plan.Set({v}, lod_distance);
  EXPECT_EQ(plan.LevelStart(0), 0);
  EXPECT_EQ(plan.LevelStart(1), lod_distance);
  EXPECT_EQ(plan.LevelStart(3), 4 * lod_distance);
  const std::set<NodeKey> keys = Keys(plan.Wanted());
  std::map<int, int> per_level;
  for (const NodeKey& k : keys) {
    ++per_level[k.level];
    EXPECT_LE(NaiveDistance(v, k), v.view_distance_m);
    if (k.level > 0) {
      EXPECT_GE(NaiveDistance(v, k), plan.LevelStart(k.level));
    }
    if (k.level < kLevels) {
      const NodeKey parent{static_cast<uint8_t>(k.level + 1), k.code >> 3};
      EXPECT_LT(NaiveDistance(v, parent), plan.LevelStart(k.level + 1));
    }
    // No ancestor of a chosen node is chosen too.
    for (int up = k.level + 1; up <= kLevels; ++up) {
      const NodeKey a{static_cast<uint8_t>(up), k.code >> (3 * (up - k.level))};
      EXPECT_EQ(keys.count(a), 0u);
    }
  }
  for (int level = 0; level <= kLevels; ++level) EXPECT_GT(per_level[level], 0) << level;
  EXPECT_EQ(keys.count(Chunk(0, 0, 0)), 1u);  // the viewer's own chunk at level 0
  // Farther than the top level's start (4 x 64 m): the top level only.
  // Chunk 20 along x lies in the level-3 node of chunks 16..23, about 500 m
  // away.
  EXPECT_EQ(keys.count(NodeKey{3, Chunk(20, 0, 0).code >> 9}), 1u);
  EXPECT_EQ(keys.count(NodeKey{1, Chunk(20, 0, 0).code >> 3}), 0u);
  EXPECT_EQ(keys.count(Chunk(20, 0, 0)), 0u);
}

// The order: by the smaller of the distance now and from where the viewer
// will be in kLookAheadSeconds; so what it approaches comes before what it
// leaves behind.
TEST(StreamPlanTest, WhatAViewerApproachesComesFirst) {
  StreamPlan plan(kFrame, 0);
  Viewer v = StandingViewer(6 * kEdgeM);
  v.vx = 128;  // a chunk a second along +x
  plan.Set({v}, 0);
  const std::vector<StreamPlan::Want> wants = plan.Wanted();
  std::map<NodeKey, double> priority;
  for (const auto& w : wants) priority[w.key] = w.priority_m;
  ASSERT_TRUE(priority.count(Chunk(3, 0, 0)) && priority.count(Chunk(-3, 0, 0)));
  EXPECT_DOUBLE_EQ(plan.Distance(v, Chunk(3, 0, 0)), plan.Distance(v, Chunk(-3, 0, 0)));
  EXPECT_LT(priority[Chunk(3, 0, 0)], priority[Chunk(-3, 0, 0)]);
  Viewer ahead = v;
  ahead.x += v.vx * StreamPlan::kLookAheadSeconds;
  EXPECT_DOUBLE_EQ(priority[Chunk(3, 0, 0)], std::min(NaiveDistance(v, Chunk(3, 0, 0)),
                                                      NaiveDistance(ahead, Chunk(3, 0, 0))));
  // A chunk only the look-ahead position would reach is not wanted: the
  // view distance counts from where the viewer is.
  for (const auto& w : wants) EXPECT_LE(NaiveDistance(v, w.key), v.view_distance_m);
}

// Several viewers: the union, each node once at its best priority; a node
// is unloaded only once every viewer is beyond 1.5 x its view distance.
TEST(StreamPlanTest, ViewersShareNodesAndUnloadWaitsForTheLastOne) {
  StreamPlan plan(kFrame, 0);
  const Viewer a = StandingViewer(2 * kEdgeM, 1);
  Viewer b = StandingViewer(2 * kEdgeM, 2);
  b.x += 3 * 128;  // three chunks along x
  plan.Set({a, b}, 0);
  const std::vector<StreamPlan::Want> wants = plan.Wanted();
  std::map<NodeKey, double> priority;
  for (const auto& w : wants) priority[w.key] = w.priority_m;
  EXPECT_EQ(priority.size(), wants.size());
  const NodeKey between = Chunk(1, 0, 0);  // 64 voxels from a, 192 from b
  ASSERT_TRUE(priority.count(between));
  EXPECT_DOUBLE_EQ(priority[between], 64 * 0.25);
  EXPECT_TRUE(priority.count(Chunk(3, 0, 0)) && priority.count(Chunk(0, 0, 0)));

  // Unload: 1.5 x 64 m = 96 m.
  const NodeKey far = Chunk(20, 0, 0);
  EXPECT_TRUE(plan.ShouldUnload(far));
  EXPECT_FALSE(plan.ShouldUnload(Chunk(0, 0, 0)));
  // Beyond a's view distance but within 1.5 x of it: kept.
  const NodeKey edge = Chunk(-3, 0, 0);  // 64 + 2 * 128 = 320 voxels = 80 m from a
  EXPECT_GT(plan.Distance(a, edge), a.view_distance_m);
  EXPECT_FALSE(plan.ShouldUnload(edge));
  const NodeKey gone = Chunk(-4, 0, 0);  // 112 m from a, more from b
  EXPECT_TRUE(plan.ShouldUnload(gone));
  // b alone keeps what is near b.
  EXPECT_FALSE(plan.ShouldUnload(Chunk(5, 0, 0)));
  plan.Set({a}, 0);
  EXPECT_TRUE(plan.ShouldUnload(Chunk(6, 0, 0)));
  plan.Set({}, 0);  // no viewers: everything goes
  EXPECT_TRUE(plan.Wanted().empty());
  EXPECT_TRUE(plan.ShouldUnload(Chunk(0, 0, 0)));
}

// Chunks only with a lister: the chunks with data it lists (within the
// view distance), not every position; a lister that fails falls back to
// every position.
TEST(StreamPlanTest, AListerNarrowsChunksToThoseWithData) {
  StreamPlan plan(kFrame, 3);
  const Viewer v = StandingViewer(3 * kEdgeM);
  plan.Set({v}, 0);
  const std::set<NodeKey> all = Keys(plan.Wanted());
  const std::vector<uint64_t> with_data{Chunk(0, 0, 0).code, Chunk(1, 0, 0).code,
                                        Chunk(50, 0, 0).code};
  StreamPlan::ChunkLister lister = [&](const engine::VoxelBox&,
                                       const std::function<void(uint64_t)>& fn) {
    for (uint64_t c : with_data) fn(c);
    return true;
  };
  EXPECT_EQ(Keys(plan.Wanted(&lister)), (std::set<NodeKey>{Chunk(0, 0, 0), Chunk(1, 0, 0)}));
  StreamPlan::ChunkLister failing = [](const engine::VoxelBox&,
                                       const std::function<void(uint64_t)>&) { return false; };
  EXPECT_EQ(Keys(plan.Wanted(&failing)), all);
  // With LOD levels in play the lister is not used.
  plan.Set({v}, kEdgeM);
  EXPECT_EQ(Keys(plan.Wanted(&lister)), Keys(plan.Wanted()));
}

// At the world's corner nothing outside the grid is planned.
TEST(StreamPlanTest, NothingOutsideTheWorldIsPlanned) {
  StreamPlan plan(kFrame, 2);
  Viewer v;
  v.x = 10;
  v.y = 10;
  v.z = 10;
  v.view_distance_m = 4 * kEdgeM;
  plan.Set({v}, kEdgeM);
  const std::vector<StreamPlan::Want> wants = plan.Wanted();
  ASSERT_FALSE(wants.empty());
  for (const auto& w : wants) {
    const engine::ChunkCoord c = engine::MortonDecode(w.key.code);
    EXPECT_TRUE(kFrame.ContainsChunk({c.x << w.key.level, c.y << w.key.level, c.z << w.key.level}));
  }
}

}  // namespace
}  // namespace voxdb::daemon
