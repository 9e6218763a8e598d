// index/node_query.h: the spatial queries over a node of 1, 8 and 200
// partitions against one Database holding every chunk (the oracle), both
// with the S2 index and fed the same writes. Every page must list the
// oracle's chunks in its order, with its cursors; versions are the node's
// own (each partition numbers its writes); fills are the node's pieces,
// which must paint every voxel in the region and band as the oracle's
// fills do.
#include "index/node_query.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/morton_box.h"
#include "engine/node.h"
#include "tests/index/random_world.h"
#include "tests/testing/indexed_db.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"

namespace voxdb::index {
namespace {

using engine::ChunkCoord;
using engine::ChunkKey;
using engine::MortonRange;
using engine::Node;
using engine::PartitionSpec;
using engine::VoxelBox;
using engine::VoxelCoord;
using test_world::kFrame;
using test_world::RandomBand;
using test_world::RandomRegion;
using test_world::RandomWorld;
using test_world::Uniform;
using testing::TempDir;

constexpr int kAlignLevels = 1;  // 2x2x2 chunks: a column's chunks fall in several partitions

// A node as voxdbd keeps one: the S2 index as every partition's observer.
struct IndexedNode {
  IndexedNode(std::vector<PartitionSpec> specs) : index(kFrame) {
    engine::NodeOptions o;
    o.database = testing::TestOptions();
    // Many partitions in one process: a small cache each.
    o.database.cache_bytes = size_t{16} << 20;
    o.database.dirty_bytes = size_t{8} << 20;
    o.database.observers = {&index};
    o.align_levels = kAlignLevels;
    auto n = Node::Open(std::move(specs), o);
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok()) std::abort();
    node = std::move(*n);
    EXPECT_OK(EnsureBuilt(node.get()));
  }
  S2Index index;
  std::unique_ptr<Node> node;  // closed (flushed) before the index goes
};

// `count` partitions, their starts at random chunks of the world (aligned
// down), so that clusters, and columns along z, are split between them.
std::vector<PartitionSpec> WorldPartitions(const std::string& dir, size_t count,
                                           const std::vector<ChunkCoord>& world,
                                           std::mt19937_64& rng) {
  if (count == 1) return {{0, MortonRange::All(), dir + "/p0"}};
  const uint64_t unit = uint64_t{1} << (3 * kAlignLevels);
  std::set<uint64_t> starts{0};
  while (starts.size() < count) {
    const uint64_t code = ChunkKey::FromCoord(world[rng() % world.size()]).code();
    if (code / unit > 0) starts.insert(code / unit * unit);
  }
  std::vector<uint64_t> s(starts.begin(), starts.end());
  std::vector<PartitionSpec> parts;
  for (size_t i = 0; i < s.size(); ++i) {
    const uint64_t end = i + 1 < s.size() ? s[i + 1] : MortonRange::All().end;
    parts.push_back(PartitionSpec{i, {s[i], end}, absl::StrFormat("%s/p%u", dir, i)});
  }
  return parts;
}

bool Contains(const VoxelBox& b, const VoxelCoord& v) {
  return v.x >= b.lo.x && v.x < b.hi.x && v.y >= b.lo.y && v.y < b.hi.y && v.z >= b.lo.z &&
         v.z < b.hi.z;
}

// The material the fills give voxel v, painted in list order: -1 for none.
int Paint(const std::vector<engine::Fill>& fills, const VoxelCoord& v) {
  int m = -1;
  for (const engine::Fill& f : fills) {
    if (Contains(f.box, v)) m = f.material;
  }
  return m;
}

// What PROTOCOL.md promises of a node's first-page fills against the one
// Database's (`want`, of all fills `all_oracle`): each is a piece of an
// oracle fill inside one partition, in fill_seq order, and every voxel in
// the region and band is painted the same. Returns the number of voxels
// compared (none when the sample misses the region and band).
size_t ExpectFillsPaintTheSame(Node& node, const std::vector<engine::Fill>& got,
                               const std::vector<engine::Fill>& want,
                               const std::vector<engine::Fill>& all_oracle, const Region& region,
                               const std::optional<AltitudeBand>& band, std::mt19937_64& rng,
                               const std::string& where) {
  const auto layout = node.layout();
  for (size_t i = 0; i < got.size(); ++i) {
    const engine::Fill& f = got[i];
    EXPECT_TRUE(FillInRegion(kFrame, f, region, band)) << where;
    if (i > 0) {
      EXPECT_LE(got[i - 1].seq, f.seq) << where << ": fills in fill_seq order";
    }
    EXPECT_EQ(layout->ranges.Meeting(engine::ChunksCovering(kFrame, f.box)).size(), 1u)
        << where << ": a fill piece lies in one partition";
    const bool inside = std::any_of(all_oracle.begin(), all_oracle.end(), [&](const auto& o) {
      return o.material == f.material && Contains(o.box, f.box.lo) &&
             Contains(o.box, {f.box.hi.x - 1, f.box.hi.y - 1, f.box.hi.z - 1});
    });
    EXPECT_TRUE(inside) << where << ": a piece of no fill";
  }
  // Voxels: the corners of every fill and piece, and random ones in them.
  std::vector<VoxelCoord> voxels;
  auto sample = [&](const VoxelBox& b) {
    voxels.push_back(b.lo);
    voxels.push_back({b.hi.x - 1, b.hi.y - 1, b.hi.z - 1});
    for (int i = 0; i < 30; ++i) {
      voxels.push_back({b.lo.x + rng() % (b.hi.x - b.lo.x), b.lo.y + rng() % (b.hi.y - b.lo.y),
                        b.lo.z + rng() % (b.hi.z - b.lo.z)});
    }
  };
  for (const auto& f : all_oracle) sample(f.box);
  for (const auto& f : got) sample(f.box);
  size_t checked = 0;
  for (const VoxelCoord& v : voxels) {
    const engine::Fill one{0, {v, {v.x + 1, v.y + 1, v.z + 1}}, 0};
    if (!FillInRegion(kFrame, one, region, band)) continue;
    ++checked;
    const int a = Paint(got, v), b = Paint(want, v);
    EXPECT_EQ(a, b) << where << ": voxel " << v.ToString();
    if (a != b) break;
  }
  return checked;
}

// What the queries exercised, so that a test can tell it covered the merge.
struct Coverage {
  int mixed_pages = 0;        // pages listing chunks of two partitions or more
  int split_fills = 0;        // first pages with more fill pieces than the oracle's fills
  int listed_fills = 0;       // first pages with fills
  size_t painted_voxels = 0;  // voxels in a region and band whose paint was compared
};

// Walks every page of the query on the node and on the oracle side by side:
// each page's chunks (keys) and cursor must be the oracle's; versions the
// node's current ones. Returns the number of chunks.
size_t ExpectSamePages(Node& node, engine::Database& oracle, const Region& region,
                       QueryOptions options, uint32_t batch, std::mt19937_64& rng,
                       const std::string& where, Coverage* coverage) {
  size_t total = 0;
  const auto layout = node.layout();
  for (int page = 0;; ++page) {
    const std::string at = absl::StrFormat("%s page %d", where, page);
    StatusOr<QueryResult> a =
        batch == 0 ? Query(node, region, options) : QueryWithBatch(node, region, options, batch);
    StatusOr<QueryResult> b = Query(oracle, region, options);
    EXPECT_TRUE(a.ok()) << at << ": " << a.status();
    EXPECT_TRUE(b.ok()) << at << ": " << b.status();
    if (!a.ok() || !b.ok()) return total;
    std::vector<ChunkKey> ka, kb;
    for (const ChunkHit& h : a->chunks) ka.push_back(h.key);
    for (const ChunkHit& h : b->chunks) kb.push_back(h.key);
    EXPECT_EQ(ka, kb) << at;
    EXPECT_EQ(a->next_cursor, b->next_cursor) << at;
    if (ka != kb || a->next_cursor != b->next_cursor) return total;
    // The node's versions: its partitions' current ones.
    std::vector<uint64_t> versions(ka.size());
    EXPECT_OK(
        node.GetChunks(ka, [&](size_t i, const engine::ChunkRead& r) { versions[i] = r.version; }));
    for (size_t i = 0; i < ka.size(); ++i) {
      EXPECT_EQ(a->chunks[i].version, versions[i]) << at << " " << ka[i].ToString();
    }
    std::set<size_t> parts;
    for (const ChunkKey& k : ka) parts.insert(layout->ranges.Find(k.code()));
    coverage->mixed_pages += parts.size() > 1;
    if (page == 0) {
      coverage->split_fills += a->fills.size() > b->fills.size();
      coverage->listed_fills += !a->fills.empty();
      const auto oracle_fills = oracle.Fills();
      const std::vector<engine::Fill> all(oracle_fills->fills().begin(),
                                          oracle_fills->fills().end());
      coverage->painted_voxels +=
          ExpectFillsPaintTheSame(node, a->fills, b->fills, all, region, options.band, rng, at);
    } else {
      EXPECT_TRUE(a->fills.empty()) << at;
    }
    total += ka.size();
    if (a->next_cursor.empty()) return total;
    options.cursor = a->next_cursor;
  }
}

class NodeQueryTest : public ::testing::TestWithParam<size_t> {};

TEST_P(NodeQueryTest, PagesEqualOneDatabases) {
  const size_t partitions = GetParam();
  TempDir dir;
  std::mt19937_64 rng(1000 + partitions);
  const std::vector<ChunkCoord> world = RandomWorld(rng, 9, 220);
  IndexedNode n(WorldPartitions(dir.Sub("node"), partitions, world, rng));
  ASSERT_EQ(n.node->partition_count(), partitions);
  testing::IndexedDb oracle(dir.Sub("oracle"));
  Node& node = *n.node;

  auto put = [&](const ChunkCoord& c, uint8_t material) {
    const ChunkKey key = ChunkKey::FromCoord(c);
    ASSERT_OK(node.PutChunkAndWait(key, Uniform(material), std::nullopt).status);
    ASSERT_OK(oracle.db->PutChunkAndWait(key, Uniform(material), std::nullopt).status);
  };
  auto erase = [&](const ChunkCoord& c) {
    ASSERT_OK(node.DeleteChunkAndWait(ChunkKey::FromCoord(c)).status);
    ASSERT_OK(oracle.db->DeleteChunkAndWait(ChunkKey::FromCoord(c)).status);
  };
  auto fill = [&](const VoxelBox& box, uint8_t material) {
    ASSERT_OK(node.FillBoxAndWait(box, material).status);
    ASSERT_OK(oracle.db->FillBoxAndWait(box, material).status);
  };
  for (const ChunkCoord& c : world) put(c, static_cast<uint8_t>(1 + rng() % 9));
  ASSERT_OK(node.Flush());
  ASSERT_OK(oracle.db->Flush());
  for (int i = 0; i < 80; ++i) {
    erase(world[rng() % world.size()]);
    put(world[rng() % world.size()], 7);
  }
  // Overlapping fills across partitions (and a chunk layer), some partly
  // over stored chunks.
  for (int i = 0; i < 4; ++i) {
    // Half of them where two partitions meet: the chunk at a range's
    // start and those before it along x, y and z are in different ones.
    const auto& starts = node.layout()->ranges.starts();
    ChunkCoord at = world[rng() % world.size()];
    if (i % 2 == 0 && starts.size() > 1) {
      at = ChunkKey::FromCode(starts[1 + rng() % (starts.size() - 1)]).coord();
    }
    VoxelCoord o = kFrame.ChunkOrigin(at);
    o = {o.x - std::min<uint64_t>(o.x, 100), o.y - std::min<uint64_t>(o.y, 100),
         o.z - std::min<uint64_t>(o.z, 100)};
    const uint64_t w = 128 + rng() % (128 * 6), z0 = o.z + rng() % 100;
    const uint64_t x1 = std::min(o.x + w, kFrame.extent_x());
    const uint64_t y1 = std::min(o.y + w, kFrame.extent_y());
    fill({{o.x, o.y, z0}, {x1, y1, z0 + 150 + rng() % 300}}, static_cast<uint8_t>(1 + i));
    fill({{o.x + w / 3, o.y + w / 4, z0 + 50}, {x1, std::min(o.y + w / 2 + 1, y1), z0 + 500}},
         static_cast<uint8_t>(5 + i));
  }
  ASSERT_OK(node.Flush());
  ASSERT_OK(oracle.db->Flush());

  Coverage coverage;
  auto run_queries = [&](int queries, const std::string& phase) {
    int nonempty = 0;
    for (int q = 0; q < queries; ++q) {
      const Region region = RandomRegion(rng, world);
      QueryOptions options;
      options.band = RandomBand(rng);
      const uint32_t limits[] = {1, 3, 7, 65536, 100};
      options.limit = limits[q % 5];
      if (partitions >= 200) {
        // At most ~40 pages: every page asks every partition.
        QueryOptions all = options;
        all.limit = 65536;
        ASSERT_OK_AND_ASSIGN(QueryResult r, Query(*oracle.db, region, all));
        options.limit = std::max<uint32_t>(options.limit, r.chunks.size() / 40);
      }
      // Small batches make the merge ask partitions again.
      const uint32_t batch = q % 4 == 3 ? 1 + static_cast<uint32_t>(rng() % 3) : 0;
      const std::string where =
          absl::StrFormat("%s query %d kind %d limit %u batch %u", phase, q,
                          static_cast<int>(region.index()), options.limit, batch);
      nonempty +=
          ExpectSamePages(node, *oracle.db, region, options, batch, rng, where, &coverage) > 0;
      if (HasFailure()) return;
    }
    EXPECT_GT(nonempty, queries / 3) << phase << ": the regions are not all empty";
  };
  run_queries(partitions >= 200 ? 80 : 160, "flushed");

  // The index entries: one per (partition, column) with stored chunks.
  std::set<std::pair<size_t, uint64_t>> entries;
  std::set<uint64_t> columns;
  {
    QueryOptions all;
    all.limit = 65536;
    ASSERT_OK_AND_ASSIGN(QueryResult r, Query(*oracle.db, RadiusRegion{{}, 1e9}, all));
    ASSERT_TRUE(r.next_cursor.empty());
    const auto layout = node.layout();
    for (const ChunkHit& h : r.chunks) {
      entries.insert({layout->ranges.Find(h.key.code()), ColumnId(h.key.coord())});
      columns.insert(ColumnId(h.key.coord()));
    }
  }
  ASSERT_OK_AND_ASSIGN(const uint64_t node_columns, ColumnCount(node));
  ASSERT_OK_AND_ASSIGN(const uint64_t oracle_columns, ColumnCount(*oracle.db));
  EXPECT_EQ(oracle_columns, columns.size());
  EXPECT_EQ(node_columns, entries.size());
  if (partitions == 1) {
    EXPECT_EQ(node_columns, oracle_columns);
  }

  // Unflushed writes and deletes are seen as by the oracle.
  for (int i = 0; i < 60; ++i) {
    erase(world[rng() % world.size()]);
    ChunkCoord c = world[rng() % world.size()];
    c.z += 1 + static_cast<uint32_t>(rng() % 3);
    put(c, 3);
  }
  run_queries(partitions >= 200 ? 40 : 80, "unflushed");

  // A rebuilt index answers the same.
  ASSERT_OK(node.Flush());
  ASSERT_OK(oracle.db->Flush());
  uint64_t node_chunks = 0, oracle_chunks = 0;
  ASSERT_OK(Rebuild(n.node.get(), &node_chunks));
  ASSERT_OK(Rebuild(oracle.db.get(), &oracle_chunks));
  EXPECT_EQ(node_chunks, oracle_chunks);
  ASSERT_OK(EnsureBuilt(n.node.get()));  // built: nothing to do
  run_queries(partitions >= 200 ? 20 : 40, "rebuilt");
  if (partitions > 1) {
    EXPECT_GT(coverage.mixed_pages, 20);
    EXPECT_GT(coverage.split_fills, 5);
  }
  EXPECT_GT(coverage.listed_fills, 10);
  EXPECT_GT(coverage.painted_voxels, 1000u);
}

TEST_P(NodeQueryTest, ForEachChunkInBoxListsTheOraclesChunks) {
  const size_t partitions = GetParam();
  TempDir dir;
  std::mt19937_64 rng(2000 + partitions);
  const std::vector<ChunkCoord> world = RandomWorld(rng, 6, 200);
  IndexedNode n(WorldPartitions(dir.Sub("node"), partitions, world, rng));
  testing::IndexedDb oracle(dir.Sub("oracle"));
  for (size_t i = 0; i < world.size(); ++i) {
    const ChunkKey key = ChunkKey::FromCoord(world[i]);
    ASSERT_OK(n.node->PutChunkAndWait(key, Uniform(2), std::nullopt).status);
    ASSERT_OK(oracle.db->PutChunkAndWait(key, Uniform(2), std::nullopt).status);
    if (i == world.size() / 2) {  // half flushed, half in the caches
      ASSERT_OK(n.node->Flush());
      ASSERT_OK(oracle.db->Flush());
    }
  }
  for (int q = 0; q < 60; ++q) {
    const ChunkCoord c = world[rng() % world.size()];
    const uint32_t r = 1 + static_cast<uint32_t>(rng() % 40), h = 1 + rng() % 5;
    const engine::ChunkBox box{
        {c.x > r ? c.x - r : 0, c.y > r ? c.y - r : 0, c.z - h},
        {std::min(c.x + r, kFrame.chunks_x()), std::min(c.y + r, kFrame.chunks_y()), c.z + h}};
    std::vector<uint64_t> a, b;
    ASSERT_OK(ForEachChunkInBox(*n.node, box, [&](ChunkKey k) { a.push_back(k.code()); }));
    ASSERT_OK(ForEachChunkInBox(*oracle.db, box, [&](ChunkKey k) { b.push_back(k.code()); }));
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    EXPECT_TRUE(std::adjacent_find(a.begin(), a.end()) == a.end()) << "each chunk once";
    ASSERT_EQ(a, b) << "box " << q;
  }
}

INSTANTIATE_TEST_SUITE_P(Partitions, NodeQueryTest, ::testing::Values(1, 8, 200));

// Chunks at the world's edges and poles, each 2x2x2 cube of them its own
// partition, under regions and bands that just reach them: the partitions a
// query asks (from the region's bound and the band) must hold every hit.
TEST(NodeQueryEdgesTest, EdgesAndPolesOfTheWorld) {
  TempDir dir;
  std::mt19937_64 rng(11);
  const uint32_t nx = kFrame.chunks_x(), ny = kFrame.chunks_y(), nz = kFrame.chunks_z();
  std::vector<ChunkCoord> world;
  for (uint32_t x : {0u, 1u, nx / 2, nx - 2, nx - 1}) {
    for (uint32_t y : {0u, 1u, ny / 2, ny - 2, ny - 1}) {
      for (uint32_t z : {0u, test_world::kSeaCz - 1, test_world::kSeaCz, nz - 1}) {
        world.push_back({x, y, z});
      }
    }
  }
  std::set<uint64_t> starts{0};
  const uint64_t unit = uint64_t{1} << (3 * kAlignLevels);
  for (const ChunkCoord& c : world) starts.insert(ChunkKey::FromCoord(c).code() / unit * unit);
  std::vector<PartitionSpec> specs;
  const std::vector<uint64_t> s(starts.begin(), starts.end());
  for (size_t i = 0; i < s.size(); ++i) {
    specs.push_back({i,
                     {s[i], i + 1 < s.size() ? s[i + 1] : MortonRange::All().end},
                     absl::StrFormat("%s/p%u", dir.Sub("node"), i)});
  }
  IndexedNode n(std::move(specs));
  testing::IndexedDb oracle(dir.Sub("oracle"));
  for (const ChunkCoord& c : world) {
    const ChunkKey key = ChunkKey::FromCoord(c);
    ASSERT_OK(n.node->PutChunkAndWait(key, Uniform(4), std::nullopt).status);
    ASSERT_OK(oracle.db->PutChunkAndWait(key, Uniform(4), std::nullopt).status);
  }
  // Fills along the world's edges, across partitions.
  for (const VoxelBox& box :
       {VoxelBox{{0, 0, 0}, {300, 300, 300}},
        VoxelBox{{kFrame.extent_x() - 300, kFrame.extent_y() - 300, kFrame.extent_z() - 300},
                 {kFrame.extent_x(), kFrame.extent_y(), kFrame.extent_z()}}}) {
    ASSERT_OK(n.node->FillBoxAndWait(box, 9).status);
    ASSERT_OK(oracle.db->FillBoxAndWait(box, 9).status);
  }
  ASSERT_OK(n.node->Flush());
  ASSERT_OK(oracle.db->Flush());

  std::vector<Region> regions;
  for (const ChunkCoord& c : world) {
    const ChunkKey key = ChunkKey::FromCoord(c);
    const S2LatLng centre = ChunkCentre(kFrame, key);
    regions.push_back(CellRegion{ChunkCell(kFrame, key)});
    regions.push_back(RadiusRegion{centre, 0});
    regions.push_back(RadiusRegion{centre, 20});
    regions.push_back(RectRegion{S2LatLngRect(centre, centre)});
  }
  for (double lon : {-180.0, 180.0}) {
    regions.push_back(*MakeRectRegion(-90, lon, 90, lon));  // the meridian 180
  }
  regions.push_back(*MakeRectRegion(-90, 180, 90, -180));   // the same
  regions.push_back(*MakeRectRegion(90, -180, 90, 180));    // the north pole
  regions.push_back(*MakeRectRegion(-90, -180, -90, 180));  // the south pole
  regions.push_back(*MakeRectRegion(89.9999, 179.9999, 90, -179.9999));
  regions.push_back(*MakeRadiusRegion(90, 0, 100));
  regions.push_back(*MakeRadiusRegion(-90, 0, 100));
  regions.push_back(*MakeRadiusRegion(0, 180, 100));
  regions.push_back(*MakeRadiusRegion(0, -180, 100));
  const double sea = test_world::kSeaCz;
  const double chunk_m = kFrame.voxel_size_m() * engine::kChunkEdge;
  const std::vector<std::optional<AltitudeBand>> bands = {
      std::nullopt,
      AltitudeBand{0, 0},                // the bottom of the sea-level layer only
      AltitudeBand{-chunk_m, -chunk_m},  // the bottom of the layer below it
      AltitudeBand{-1e9, -1e9},
      AltitudeBand{1e9, 1e9},
      AltitudeBand{kFrame.AltitudeOfZ(0), kFrame.AltitudeOfZ(0)},
      AltitudeBand{kFrame.AltitudeOfZ(kFrame.extent_z()) - 1,
                   kFrame.AltitudeOfZ(kFrame.extent_z()) - 1},
      AltitudeBand{(1 - sea) * chunk_m, (1 - sea) * chunk_m}};
  Coverage coverage;
  size_t hits = 0;
  for (size_t r = 0; r < regions.size(); ++r) {
    for (size_t b = 0; b < bands.size(); ++b) {
      QueryOptions options;
      options.band = bands[b];
      options.limit = r % 2 ? 1 : 65536;
      hits += ExpectSamePages(*n.node, *oracle.db, regions[r], options, 0, rng,
                              absl::StrFormat("region %u band %u", r, b), &coverage);
      if (HasFailure()) return;
    }
  }
  EXPECT_GT(hits, world.size());
  EXPECT_GT(coverage.listed_fills, 0);
}

// A malformed query is refused with the one-Database error, before any
// partition is asked.
TEST(NodeQueryErrorsTest, SameErrorsAsOneDatabase) {
  TempDir dir;
  std::mt19937_64 rng(5);
  const std::vector<ChunkCoord> world = RandomWorld(rng, 5, 20);
  IndexedNode n(WorldPartitions(dir.Sub("node"), 8, world, rng));
  testing::IndexedDb oracle(dir.Sub("oracle"));
  const Region radius = RadiusRegion{S2LatLng::FromDegrees(45, 6), 1000};
  const Region box = BoxRegion{{{0, 0, 0}, {10, 10, 10}}};
  struct Case {
    Region region;
    QueryOptions options;
  };
  std::vector<Case> cases;
  auto with = [](auto f) {
    QueryOptions o;
    f(o);
    return o;
  };
  cases.push_back({radius, with([](QueryOptions& o) { o.limit = 0; })});
  cases.push_back({radius, with([](QueryOptions& o) { o.limit = 65537; })});
  cases.push_back({box, with([](QueryOptions& o) { o.limit = 0; })});
  cases.push_back({radius, with([](QueryOptions& o) { o.band = AltitudeBand{5, 1}; })});
  cases.push_back({radius, with([](QueryOptions& o) { o.cursor.assign(8, 0); })});
  cases.push_back({box, with([](QueryOptions& o) { o.cursor.assign(16, 0); })});
  cases.push_back({RadiusRegion{S2LatLng::FromDegrees(45, 6), -1}, {}});
  cases.push_back({CellRegion{S2CellId(uint64_t{7} << 61)}, {}});
  cases.push_back({BoxRegion{{{0, 0, 0}, {kFrame.extent_x() + 1, 1, 1}}}, {}});
  cases.push_back({BoxRegion{{{5, 5, 5}, {5, 9, 9}}}, {}});
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto a = Query(*n.node, cases[i].region, cases[i].options);
    const auto b = Query(*oracle.db, cases[i].region, cases[i].options);
    ASSERT_FALSE(b.ok()) << "case " << i;
    EXPECT_EQ(a.status(), b.status()) << "case " << i;
  }
  // The last cursor of a box query: nothing follows it, as for the oracle.
  QueryOptions last;
  last.cursor.assign(8, 0xff);
  ASSERT_OK_AND_ASSIGN(QueryResult r, Query(*n.node, box, last));
  EXPECT_TRUE(r.chunks.empty() && r.fills.empty() && r.next_cursor.empty());
}

}  // namespace
}  // namespace voxdb::index
