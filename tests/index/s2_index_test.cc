// The S2 index and the spatial queries against brute force: every query's
// answer (all pages) must equal the stored chunks that the region's
// definition selects, found by scanning the whole chunks table.
#include "index/s2_index.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "tests/index/random_world.h"
#include "tests/testing/indexed_db.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace voxdb::index {
namespace {

using engine::ChunkCoord;
using engine::ChunkKey;
using engine::Database;
using engine::DatabaseOptions;
using engine::Table;
using testing::TempDir;

using test_world::Jitter;
using test_world::kFrame;
using test_world::kSeaCz;
using test_world::RandomBand;
using test_world::RandomRegion;
using test_world::RandomWorld;
using test_world::Uniform;

using Db = testing::IndexedDb;

// Brute force: the stored chunks (not fills markers) and their versions.
std::map<uint64_t, uint64_t> StoredChunks(Database& db) {
  std::map<uint64_t, uint64_t> out;
  auto snap = db.store().BeginRead();
  EXPECT_TRUE(snap.ok());
  EXPECT_OK((*snap)->ScanChunks(engine::MortonRange{0, ChunkKey::kMaxCode + 1},
                                [&](ChunkKey key, std::span<const uint8_t> rec) {
                                  auto view = engine::ParseChunkRecord(rec);
                                  EXPECT_TRUE(view.ok()) << view.status();
                                  if (view->header.encoding != engine::ChunkEncoding::kFills) {
                                    out[key.code()] = view->header.version;
                                  }
                                  return true;
                                }));
  return out;
}

// The index table holds exactly one entry per column of stored chunks,
// under its centre's leaf cell, with an item (z, version) per chunk.
void ExpectIndexMatchesChunks(Database& db) {
  std::map<std::array<uint8_t, kIndexKeySize>, std::vector<IndexItem>> want, got;
  for (auto [code, version] : StoredChunks(db)) {
    const ChunkKey key = ChunkKey::FromCode(code);
    const ChunkCoord c = key.coord();
    want[IndexKey(ChunkCell(kFrame, key), ColumnId(c))].push_back({c.z, version});
  }
  for (auto& [k, items] : want) {
    std::sort(items.begin(), items.end(), [](auto& a, auto& b) { return a.z < b.z; });
  }
  auto snap = db.store().BeginRead();
  ASSERT_TRUE(snap.ok());
  ASSERT_OK((*snap)->Scan(Table::kS2Index, std::array<uint8_t, 1>{0}, {},
                          [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                            EXPECT_EQ(k.size(), kIndexKeySize);
                            std::array<uint8_t, kIndexKeySize> key{};
                            std::copy(k.begin(), k.end(), key.begin());
                            EXPECT_TRUE(DecodeIndexValue(v, &got[key])) << "malformed value";
                            return true;
                          }));
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "the index disagrees with the chunks";
}

// Every page of a query, concatenated; checks the pages' sizes.
QueryResult AllPages(Database& db, const Region& region, QueryOptions options) {
  QueryResult all;
  for (int page = 0;; ++page) {
    auto r = Query(db, region, options);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return all;
    EXPECT_LE(r->chunks.size(), options.limit);
    if (!r->next_cursor.empty()) {
      EXPECT_EQ(r->chunks.size(), options.limit);
    }
    if (page > 0) {
      EXPECT_TRUE(r->fills.empty());
    }
    all.chunks.insert(all.chunks.end(), r->chunks.begin(), r->chunks.end());
    all.fills.insert(all.fills.end(), r->fills.begin(), r->fills.end());
    if (r->next_cursor.empty()) return all;
    options.cursor = r->next_cursor;
  }
}

// The oracle: the stored chunks in the region, in the query's order.
std::vector<ChunkHit> Expected(const std::map<uint64_t, uint64_t>& stored, const Region& region,
                               const std::optional<AltitudeBand>& band) {
  std::vector<std::pair<std::array<uint8_t, kIndexKeySize>, ChunkHit>> hits;
  const bool box = std::holds_alternative<BoxRegion>(region);
  for (auto [code, version] : stored) {
    const ChunkKey key = ChunkKey::FromCode(code);
    if (!ChunkInRegion(kFrame, key, region, band)) continue;
    std::array<uint8_t, kIndexKeySize> order{};
    if (box) {
      for (int i = 0; i < 8; ++i) order[i] = static_cast<uint8_t>(code >> (56 - 8 * i));
    } else {
      order = OrderKey(ChunkCell(kFrame, key), key);
    }
    hits.push_back({order, ChunkHit{key, version}});
  }
  std::sort(hits.begin(), hits.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<ChunkHit> out;
  for (auto& h : hits) out.push_back(h.second);
  return out;
}

TEST(S2IndexTest, QueriesEqualBruteForceOnRandomWorlds) {
  TempDir dir;
  Db d(dir.Sub("db"));
  std::mt19937_64 rng(42);
  const std::vector<ChunkCoord> world = RandomWorld(rng, 9, 250);
  for (const ChunkCoord& c : world) {
    ASSERT_OK(
        d.db->PutChunkAndWait(ChunkKey::FromCoord(c), Uniform(1 + rng() % 9), std::nullopt).status);
  }
  ASSERT_OK(d.db->Flush());
  // Some deletes, rewrites and a fill of stored chunks, so the index loses
  // and changes entries too.
  for (int i = 0; i < 100; ++i) {
    ASSERT_OK(d.db->DeleteChunkAndWait(ChunkKey::FromCoord(world[rng() % world.size()])).status);
    ASSERT_OK(d.db->PutChunkAndWait(ChunkKey::FromCoord(world[rng() % world.size()]), Uniform(7),
                                    std::nullopt)
                  .status);
  }
  const engine::VoxelCoord o = kFrame.ChunkOrigin(world[0]);
  ASSERT_OK(
      d.db->FillBoxAndWait({{o.x, o.y, o.z}, {o.x + 128 * 6, o.y + 128 * 6, o.z + 200}}, 5).status);
  ASSERT_OK(d.db->Flush());
  ExpectIndexMatchesChunks(*d.db);
  const auto stored = StoredChunks(*d.db);
  ASSERT_GT(stored.size(), 1500u);

  int nonempty = 0;
  for (int q = 0; q < 400; ++q) {
    const Region region = RandomRegion(rng, world);
    QueryOptions options;
    options.band = RandomBand(rng);
    options.limit = q % 3 == 0 ? 1 + static_cast<uint32_t>(rng() % 7) : 65536;
    const QueryResult got = AllPages(*d.db, region, options);
    const std::vector<ChunkHit> want = Expected(stored, region, options.band);
    ASSERT_EQ(got.chunks.size(), want.size()) << "query " << q << " kind " << region.index();
    EXPECT_TRUE(got.chunks == want) << "query " << q << " kind " << region.index();
    nonempty += !want.empty();
    std::vector<uint64_t> fills_want, fills_got;
    for (const auto& f : d.db->Fills()->fills()) {
      if (FillInRegion(kFrame, f, region, options.band)) fills_want.push_back(f.seq);
    }
    for (const auto& f : got.fills) fills_got.push_back(f.seq);
    EXPECT_EQ(fills_got, fills_want) << "query " << q;
  }
  EXPECT_GT(nonempty, 150);  // the regions are not all empty
}

TEST(S2IndexTest, EdgeCases) {
  TempDir dir;
  Db d(dir.Sub("db"));
  std::mt19937_64 rng(7);
  const std::vector<ChunkCoord> world = RandomWorld(rng, 5, 100);
  for (const ChunkCoord& c : world) {
    ASSERT_OK(d.db->PutChunkAndWait(ChunkKey::FromCoord(c), Uniform(3), std::nullopt).status);
  }
  ASSERT_OK(d.db->Flush());
  const auto stored = StoredChunks(*d.db);
  auto keys = [](const QueryResult& r) {
    std::set<uint64_t> s;
    for (const auto& h : r.chunks) s.insert(h.key.code());
    return s;
  };
  // Radius 0 at a chunk's centre: that chunk.
  const ChunkKey one = ChunkKey::FromCoord(world[17]);
  auto r0 = AllPages(*d.db, RadiusRegion{ChunkCentre(kFrame, one), 0}, {});
  EXPECT_EQ(keys(r0), std::set<uint64_t>{one.code()});
  // More than half the circumference: everything.
  auto all = AllPages(*d.db, RadiusRegion{S2LatLng::FromDegrees(10, 20), 2.1e7}, {});
  EXPECT_EQ(all.chunks.size(), stored.size());
  // The whole world as a rectangle, and as the six face cells.
  all = AllPages(*d.db, RectRegion{S2LatLngRect::Full()}, {});
  EXPECT_EQ(all.chunks.size(), stored.size());
  size_t in_faces = 0;
  for (int face = 0; face < 6; ++face) {
    in_faces += AllPages(*d.db, CellRegion{S2CellId::FromFace(face)}, {}).chunks.size();
  }
  EXPECT_EQ(in_faces, stored.size());
  // A rectangle across the antimeridian holds both sides' clusters.
  const S2LatLngRect across(R1Interval(-0.1, 0.1), S1Interval(M_PI - 0.01, -M_PI + 0.01));
  auto both = AllPages(*d.db, RectRegion{across}, {});
  bool east = false, west = false;
  for (const auto& h : both.chunks) {
    (h.key.coord().x < kFrame.chunks_x() / 2 ? west : east) = true;
  }
  EXPECT_TRUE(east && west) << both.chunks.size();
  EXPECT_EQ(both.chunks, Expected(stored, RectRegion{across}, std::nullopt));
  // The poles: a cap around each pole.
  for (double lat : {90.0, -90.0}) {
    const Region cap = RadiusRegion{S2LatLng::FromDegrees(lat, 0), 30'000};
    auto polar = AllPages(*d.db, cap, {});
    EXPECT_FALSE(polar.chunks.empty()) << lat;
    EXPECT_EQ(polar.chunks, Expected(stored, cap, std::nullopt)) << lat;
  }
  // Empty regions.
  EXPECT_TRUE(
      AllPages(*d.db, RadiusRegion{S2LatLng::FromDegrees(-33, 151), 10'000}, {}).chunks.empty());
  QueryOptions high;
  high.band = AltitudeBand{5000, 6000};
  EXPECT_TRUE(AllPages(*d.db, RectRegion{S2LatLngRect::Full()}, high).chunks.empty());
  // Bad arguments.
  QueryOptions zero;
  zero.limit = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(
      Query(*d.db, RadiusRegion{S2LatLng::FromDegrees(0, 0), 1}, zero).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      Query(*d.db, RadiusRegion{S2LatLng::FromDegrees(0, 0), -1}, {}).status()));
  QueryOptions bad_cursor;
  bad_cursor.cursor = {1, 2, 3};
  EXPECT_TRUE(absl::IsInvalidArgument(
      Query(*d.db, RadiusRegion{S2LatLng::FromDegrees(0, 0), 1}, bad_cursor).status()));
  EXPECT_TRUE(IsOutOfBounds(
      Query(*d.db, BoxRegion{{{0, 0, 0}, {1, 1, kFrame.extent_z() + 1}}}, {}).status()));
}

// The predicate itself, against independent arithmetic: haversine distance
// for radius queries, plain lat/lon comparison for rectangles.
TEST(S2IndexTest, RegionDefinitionsAgreeWithPlainGeometry) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(0, 1);
  int inside = 0;
  for (int i = 0; i < 20'000; ++i) {
    const ChunkKey key =
        ChunkKey::FromCoord({static_cast<uint32_t>(rng() % kFrame.chunks_x()),
                             static_cast<uint32_t>(rng() % kFrame.chunks_y()), kSeaCz});
    const S2LatLng c = ChunkCentre(kFrame, key);
    const S2LatLng q = Jitter(rng, c, 0.2);
    const double lat1 = c.lat().radians(), lat2 = q.lat().radians();
    const double dlat = lat2 - lat1, dlon = q.lng().radians() - c.lng().radians();
    const double h = std::sin(dlat / 2) * std::sin(dlat / 2) +
                     std::cos(lat1) * std::cos(lat2) * std::sin(dlon / 2) * std::sin(dlon / 2);
    const double dist = 2 * engine::kEarthRadiusM * std::asin(std::min(1.0, std::sqrt(h)));
    const double radius = 30'000 * u(rng);
    if (std::abs(dist - radius) < 1e-3) continue;  // too close to call
    const bool in = ChunkInRegion(kFrame, key, RadiusRegion{q, radius}, std::nullopt);
    EXPECT_EQ(in, dist <= radius) << dist << " " << radius;
    inside += in;
    // The chunk's centre, by the frame's own conversion.
    const engine::VoxelBox b = kFrame.VoxelsOfChunk(key.coord());
    const engine::GeoCoord g =
        kFrame.MetresToGeo({(b.lo.x + b.hi.x) / 2.0 * kFrame.voxel_size_m(),
                            (b.lo.y + b.hi.y) / 2.0 * kFrame.voxel_size_m(), 0});
    EXPECT_NEAR(c.lat().degrees(), g.lat_deg, 1e-9);
    EXPECT_NEAR(c.lng().degrees(), g.lon_deg, 1e-9);
    const double lat_lo = g.lat_deg - 0.01 * u(rng), lon_lo = g.lon_deg - 0.01 * u(rng);
    EXPECT_TRUE(ChunkInRegion(
        kFrame, key,
        RectRegion{S2LatLngRect(S2LatLng::FromDegrees(lat_lo, lon_lo),
                                S2LatLng::FromDegrees(std::min(90.0, g.lat_deg + 0.01),
                                                      std::min(180.0, g.lon_deg + 0.01)))},
        std::nullopt));
    EXPECT_FALSE(
        ChunkInRegion(kFrame, key,
                      RectRegion{S2LatLngRect(S2LatLng::FromDegrees(lat_lo, lon_lo),
                                              S2LatLng::FromDegrees(lat_lo + 1e-9, lon_lo + 1e-9))},
                      std::nullopt));
  }
  EXPECT_GT(inside, 1000);
}

TEST(S2IndexTest, UnflushedWritesAndDeletesAreSeen) {
  TempDir dir;
  Db d(dir.Sub("db"));
  const ChunkKey a = ChunkKey::FromCoord({1'000'000, 400'000, kSeaCz});
  const ChunkKey b = ChunkKey::FromCoord({1'000'001, 400'000, kSeaCz});
  ASSERT_OK(d.db->PutChunkAndWait(a, Uniform(2), std::nullopt).status);
  ASSERT_OK(d.db->Flush());
  const Region around = RadiusRegion{ChunkCentre(kFrame, a), 100};
  auto r = AllPages(*d.db, around, {});
  ASSERT_EQ(r.chunks.size(), 1u);
  // Not flushed: b appears, then a disappears once deleted.
  const uint64_t vb = d.db->PutChunkAndWait(b, Uniform(3), std::nullopt).version;
  r = AllPages(*d.db, around, {});
  ASSERT_EQ(r.chunks.size(), 2u);
  EXPECT_EQ(r.chunks,
            Expected({{a.code(), r.chunks[0].key == a ? r.chunks[0].version : r.chunks[1].version},
                      {b.code(), vb}},
                     around, std::nullopt));
  ASSERT_OK(d.db->DeleteChunkAndWait(a).status);
  r = AllPages(*d.db, around, {});
  ASSERT_EQ(r.chunks.size(), 1u);
  EXPECT_EQ(r.chunks[0].key, b);
  auto box = AllPages(*d.db, BoxRegion{kFrame.VoxelsOfChunk(a.coord())}, {});
  EXPECT_TRUE(box.chunks.empty());
  ASSERT_OK(d.db->Flush());
  ExpectIndexMatchesChunks(*d.db);
  EXPECT_EQ(AllPages(*d.db, around, {}).chunks, r.chunks);
}

// ForEachChunkInBox (the stream planner's listing) names the chunks a box
// query finds, each once: small records (uniform chunks and the fills
// markers of deleted ones, inside the B-tree's pages) and big ones (chunks of
// bricks, on overflow pages whose bytes it does not read), flushed or not.
TEST(S2IndexTest, ForEachChunkInBoxListsWhatABoxQueryFinds) {
  TempDir dir;
  Db d(dir.Sub("db"));
  std::mt19937_64 rng(7);
  engine::Chunk bricks(1);
  for (uint32_t i = 0; i < 2000; ++i) {
    bricks.Set(rng() % 128, rng() % 128, rng() % 128, static_cast<uint8_t>(rng() % 200));
  }
  const std::vector<uint8_t> big = engine::EncodeChunk(bricks, 1, 1);
  ASSERT_GT(big.size(), 4096u);  // an overflow page of its own
  const ChunkCoord o{1'000'000, 300'000, kSeaCz - 2};
  std::vector<ChunkKey> keys;
  for (uint32_t z = 0; z < 4; ++z) {
    for (uint32_t y = 0; y < 8; ++y) {
      for (uint32_t x = 0; x < 8; ++x)
        keys.push_back(ChunkKey::FromCoord({o.x + x, o.y + y, o.z + z}));
    }
  }
  auto put_some = [&](int n) {
    for (int i = 0; i < n; ++i) {
      const ChunkKey k = keys[rng() % keys.size()];
      ASSERT_OK(d.db->PutChunkAndWait(k, rng() % 2 ? big : Uniform(3), std::nullopt).status);
    }
  };
  auto delete_some = [&](int n) {
    for (int i = 0; i < n; ++i)
      ASSERT_OK(d.db->DeleteChunkAndWait(keys[rng() % keys.size()]).status);
  };
  put_some(150);
  ASSERT_OK(d.db->Flush());
  delete_some(40);  // fills markers once flushed
  ASSERT_OK(d.db->Flush());
  put_some(30);     // dirty: new chunks, rewrites and re-creations of deleted ones
  delete_some(15);  // dirty deletes of stored chunks

  for (int q = 0; q < 60; ++q) {
    const uint32_t x0 = o.x - 1 + rng() % 10, y0 = o.y - 1 + rng() % 10, z0 = o.z - 1 + rng() % 6;
    const engine::ChunkBox box{
        {x0, y0, z0},
        {x0 + static_cast<uint32_t>(rng() % 10), y0 + static_cast<uint32_t>(rng() % 10),
         z0 + static_cast<uint32_t>(rng() % 6)}};
    const engine::VoxelCoord lo = kFrame.ChunkOrigin(box.lo), hi = kFrame.ChunkOrigin(box.hi);
    const QueryResult want =
        AllPages(*d.db, BoxRegion{{lo, {hi.x + 128, hi.y + 128, hi.z + 128}}}, {});
    std::vector<uint64_t> want_codes, got_codes;
    for (const ChunkHit& h : want.chunks) want_codes.push_back(h.key.code());
    ASSERT_OK(
        ForEachChunkInBox(*d.db, box, [&](ChunkKey key) { got_codes.push_back(key.code()); }));
    std::sort(got_codes.begin(), got_codes.end());  // Query's box order is by code
    EXPECT_EQ(got_codes, want_codes) << "box " << q;
  }
}

TEST(S2IndexTest, RebuildAndEnsureBuiltRecreateTheIndex) {
  TempDir dir;
  std::mt19937_64 rng(11);
  const std::vector<ChunkCoord> world = RandomWorld(rng, 6, 60);
  {
    // A database written without the index (as before it existed).
    auto db = Database::Open(dir.Sub("db"), testing::TestOptions());
    ASSERT_TRUE(db.ok());
    for (const ChunkCoord& c : world) {
      ASSERT_OK((*db)->PutChunkAndWait(ChunkKey::FromCoord(c), Uniform(4), std::nullopt).status);
    }
  }
  Db d(dir.Sub("db"));  // EnsureBuilt builds it
  ExpectIndexMatchesChunks(*d.db);
  // Damage it, then rebuild.
  engine::WriteBatch damage;
  damage.Delete(Table::kS2Index,
                IndexKey(ChunkCell(kFrame, ChunkKey::FromCoord(world[0])), ColumnId(world[0])));
  const IndexItem bogus[] = {{3, 9}};
  damage.Put(Table::kS2Index, IndexKey(S2CellId::FromFace(2).child_begin(30), 5),
             EncodeIndexValue(bogus));
  ASSERT_OK(d.db->store().Write(damage));
  uint64_t entries = 0;
  ASSERT_OK(Rebuild(d.db.get(), &entries));
  EXPECT_EQ(entries, StoredChunks(*d.db).size());
  ExpectIndexMatchesChunks(*d.db);
}

// A database whose index has format 1 (one 8-byte entry per chunk, before
// entries per column) gets the current format when it is opened; a newer
// format is refused.
TEST(S2IndexTest, EnsureBuiltReplacesAnOlderFormat) {
  TempDir dir;
  std::mt19937_64 rng(12);
  const std::vector<ChunkCoord> world = RandomWorld(rng, 4, 40);
  auto format_value = [](uint32_t format) {
    std::vector<uint8_t> v(4);
    engine::EncodeFixed32(v.data(), format);
    return v;
  };
  const std::string_view name = "s2index_format";
  const std::span<const uint8_t> name_bytes(reinterpret_cast<const uint8_t*>(name.data()),
                                            name.size());
  {
    Db d(dir.Sub("db"));
    for (const ChunkCoord& c : world) {
      ASSERT_OK(d.db->PutChunkAndWait(ChunkKey::FromCoord(c), Uniform(4), std::nullopt).status);
    }
    ASSERT_OK(d.db->Flush());
    // Replace the index by format-1 entries.
    engine::WriteBatch old;
    std::array<uint8_t, kIndexKeySize + 1> past_last;
    past_last.fill(0xff);
    old.DeleteRange(Table::kS2Index, std::array<uint8_t, 1>{0}, past_last);
    for (const ChunkCoord& c : world) {
      const ChunkKey key = ChunkKey::FromCoord(c);
      std::array<uint8_t, kIndexKeySize> k = IndexKey(ChunkCell(kFrame, key), 0);
      key.EncodeTo(k.data() + 8);
      old.Put(Table::kS2Index, k, std::vector<uint8_t>(8, 1));
    }
    old.Put(Table::kMeta, name_bytes, format_value(1));
    ASSERT_OK(d.db->store().Write(old));
  }
  {
    Db d(dir.Sub("db"));  // EnsureBuilt rebuilds it
    ExpectIndexMatchesChunks(*d.db);
    // It says why before a rebuild of stored chunks (voxdbd logs it).
    std::vector<std::string> said;
    auto tell = [&](std::string_view why) { said.emplace_back(why); };
    engine::WriteBatch old_again;
    old_again.Put(Table::kMeta, name_bytes, format_value(1));
    ASSERT_OK(d.db->store().Write(old_again));
    ASSERT_OK(EnsureBuilt(d.db.get(), tell));
    ASSERT_EQ(said.size(), 1u);
    EXPECT_NE(said[0].find("older format"), std::string::npos) << said[0];
    ASSERT_OK(EnsureBuilt(d.db.get(), tell));  // current: nothing to do
    EXPECT_EQ(said.size(), 1u);
    {
      auto empty = Database::Open(dir.Sub("empty"), testing::TestOptions());
      ASSERT_TRUE(empty.ok());
      ASSERT_OK(EnsureBuilt(empty->get(), tell));  // a new database: built without a word
      EXPECT_EQ(said.size(), 1u);
    }
    auto snap = d.db->store().BeginRead();
    ASSERT_TRUE(snap.ok());
    auto format = (*snap)->Get(Table::kMeta, name_bytes);
    ASSERT_TRUE(format.ok());
    EXPECT_EQ(engine::DecodeFixed32(format->data()), kIndexFormat);
    engine::WriteBatch newer;
    newer.Put(Table::kMeta, name_bytes, format_value(kIndexFormat + 1));
    snap->reset();
    ASSERT_OK(d.db->store().Write(newer));
    EXPECT_TRUE(IsUnsupported(EnsureBuilt(d.db.get())));
  }
}

// A damaged column entry (items out of order, a repeated z, a torn item)
// still serves what can be read of it, and the next flush of one of its
// chunks writes it back well formed.
TEST(S2IndexTest, ADamagedColumnStillServesAndTheNextFlushRepairsIt) {
  TempDir dir;
  Db d(dir.Sub("db"));
  const ChunkCoord base{700'000, 300'000, kSeaCz};
  std::map<uint32_t, uint64_t> versions;  // z -> version
  for (uint32_t z : {0u, 1u, 2u, 3u}) {
    auto w = d.db->PutChunkAndWait(ChunkKey::FromCoord({base.x, base.y, base.z + z}), Uniform(2),
                                   std::nullopt);
    ASSERT_OK(w.status);
    versions[base.z + z] = w.version;
  }
  ASSERT_OK(d.db->Flush());
  const ChunkKey first = ChunkKey::FromCoord(base);
  const auto key = IndexKey(ChunkCell(kFrame, first), ColumnId(base));
  // Items z+2, z+0, z+1, z+1 (out of order, repeated), z+3 torn.
  std::vector<uint8_t> damaged;
  for (uint32_t dz : {2u, 0u, 1u, 1u, 3u}) {
    const IndexItem item[] = {{base.z + dz, versions[base.z + dz]}};
    const std::vector<uint8_t> bytes = EncodeIndexValue(item);
    damaged.insert(damaged.end(), bytes.begin(), bytes.end());
  }
  damaged.resize(damaged.size() - 5);
  engine::WriteBatch damage;
  damage.Put(Table::kS2Index, key, damaged);
  ASSERT_OK(d.db->store().Write(damage));
  std::vector<IndexItem> items;
  EXPECT_FALSE(DecodeIndexValue(damaged, &items));
  ASSERT_EQ(items.size(), 3u);  // z+0..z+2, in order, once each

  const Region around = CellRegion{ChunkCell(kFrame, first).parent(20)};
  QueryResult r = AllPages(*d.db, around, {});
  ASSERT_EQ(r.chunks.size(), 3u);  // the torn z+3 is lost until a repair
  for (const ChunkHit& h : r.chunks) EXPECT_EQ(h.version, versions[h.key.coord().z]);

  // Rewriting z+3 repairs the entry.
  ASSERT_OK(d.db->PutChunkAndWait(ChunkKey::FromCoord({base.x, base.y, base.z + 3}), Uniform(5),
                                  std::nullopt)
                .status);
  ASSERT_OK(d.db->Flush());
  ExpectIndexMatchesChunks(*d.db);
  EXPECT_EQ(AllPages(*d.db, around, {}).chunks.size(), 4u);
}

// kill -9 while writing and flushing: after reopening, the index agrees
// with the chunks (they commit in one transaction).
TEST(S2IndexTest, IndexSurvivesKillNineWithTheChunks) {
  TempDir dir;
  for (int round = 0; round < 4; ++round) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      Db d(dir.Sub("db"));
      std::mt19937_64 rng(round);
      for (uint64_t i = 0;; ++i) {
        const ChunkKey key =
            ChunkKey::FromCoord({static_cast<uint32_t>(500'000 + rng() % 64),
                                 static_cast<uint32_t>(300'000 + rng() % 64), kSeaCz});
        if (rng() % 4 == 0) {
          (void)d.db->DeleteChunkAndWait(key);
        } else {
          (void)d.db->PutChunkAndWait(key, Uniform(1 + rng() % 9), std::nullopt);
        }
        if (i % 50 == 0) (void)d.db->Flush();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + 100 * round));
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    Db d(dir.Sub("db"));
    ASSERT_OK(d.db->Flush());  // the replayed journal, flushed with its index entries
    ExpectIndexMatchesChunks(*d.db);
    EXPECT_GT(StoredChunks(*d.db).size(), 0u);
  }
}

// --- Values s2geometry would abort on ------------------------------------------
// Debian's libs2 CHECKs its arguments: a longitude past -pi, an interval
// starting at -pi, an invalid cell id abort the process. Nothing a client
// can send (or a fill can cover) may reach it.

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// The latitude of voxel row y's centre.
double LatOfRow(uint64_t y) {
  return kFrame.MetresToGeo({0, (static_cast<double>(y) + 0.5) * kFrame.voxel_size_m(), 0}).lat_deg;
}

Region Made(StatusOr<Region> r) {
  EXPECT_OK(r.status());
  return r.ok() ? *r : Region{BoxRegion{}};
}

// x = 0 and y = 0 are longitude -180 and latitude -90 exactly (not a
// rounding past them), and every box's footprint is a valid, non-empty
// rectangle: at x = 0 it holds the meridian 180, over the whole width
// every longitude.
TEST(S2IndexTest, FootprintsOfBoxesAtTheWorldsEdgesAreValid) {
  const engine::GeoCoord corner = kFrame.MetresToGeo({0, 0, 0});
  EXPECT_EQ(corner.lon_deg, -180.0);
  EXPECT_EQ(corner.lat_deg, -90.0);
  const uint64_t ex = kFrame.extent_x(), ey = kFrame.extent_y(), mid = ey / 2;
  const struct {
    const char* name;
    engine::VoxelBox box;
  } boxes[] = {
      {"the corner at x = 0, y = 0", {{0, 0, 0}, {1, 1, 1}}},
      {"x = 0 at the equator", {{0, mid, 0}, {1, mid + 1, 1}}},
      {"the east edge", {{ex - 1, mid, 0}, {ex, mid + 1, 1}}},
      {"the north edge", {{5, ey - 1, 0}, {6, ey, 1}}},
      {"a planet-wide layer", {{0, 0, 7}, {ex, ey, 8}}},
      {"the whole world", kFrame.Bounds()},
      {"past the world", {{ex, ey, 0}, {ex + 10, ey + 10, 1}}},
  };
  for (const auto& b : boxes) {
    SCOPED_TRACE(b.name);
    const S2LatLngRect r = BoxFootprint(kFrame, b.box);
    EXPECT_TRUE(r.is_valid()) << r;
    EXPECT_FALSE(r.is_empty()) << r;
    EXPECT_TRUE(r.lng().is_valid()) << r.lng();
    if (b.box.lo.x == 0) {
      EXPECT_TRUE(r.lng().Contains(M_PI)) << r.lng();
    }
    if (b.box.lo.x == 0 && b.box.hi.x >= ex) {
      EXPECT_TRUE(r.lng().is_full()) << r.lng();
    }
    if (b.box.lo.y == 0 && b.box.hi.y >= ey) {
      EXPECT_EQ(r.lat(), S2LatLngRect::FullLat());
    }
  }
}

// Fills at the world's edges against regions of every kind: no abort, and
// the answers of plain geometry (the meridian -180 is the meridian 180).
TEST(S2IndexTest, FillsAtTheWorldsEdgesMeetTheRightRegions) {
  const uint64_t ex = kFrame.extent_x(), ey = kFrame.extent_y(), mid = ey / 2;
  const double lat = LatOfRow(mid);
  const engine::Fill at_x0{1, {{0, mid, 0}, {1, mid + 1, 1}}, 3};
  const engine::Fill east{2, {{ex - 1, mid, 0}, {ex, mid + 1, 1}}, 3};
  const engine::Fill south_pole{3, {{0, 0, 0}, {1, 1, 1}}, 3};
  const engine::Fill planet{4, {{0, 0, 7}, {ex, ey, 8}}, 3};
  struct Case {
    std::string name;
    Region region;
    bool x0, east, pole;  // whether it meets these fills (the planet: always)
  };
  const S2CellId on_meridian(S2LatLng::FromDegrees(lat, 180));
  const std::vector<Case> cases = {
      {"1 m around (lat, 180)", Made(MakeRadiusRegion(lat, 180, 1)), true, true, false},
      {"1 m around (lat, -180)", Made(MakeRadiusRegion(lat, -180, 1)), true, true, false},
      {"1 m around (0, 0)", Made(MakeRadiusRegion(0, 0, 1)), false, false, false},
      {"1 cm at the south pole", Made(MakeRadiusRegion(-90, 0, 0.01)), false, false, true},
      {"100 m around 11 m from the pole", Made(MakeRadiusRegion(-89.9999, 123, 100)), false, false,
       true},
      {"5 m around 11 m from the pole", Made(MakeRadiusRegion(-89.9999, 123, 5)), false, false,
       false},
      {"the whole sphere", Made(MakeRadiusRegion(0, 0, 1e300)), true, true, true},
      {"the leaf cell at (lat, 180)", Made(MakeCellRegion(on_meridian.id())), true, true, false},
      {"its level-5 parent", Made(MakeCellRegion(on_meridian.parent(5).id())), true, true, false},
      {"face 0", Made(MakeCellRegion(S2CellId::FromFace(0).id())), false, false, false},
      {"face 5 (the south pole's)", Made(MakeCellRegion(S2CellId::FromFace(5).id())), false, false,
       true},
      {"the meridian -180..-180", Made(MakeRectRegion(lat - 1, -180, lat + 1, -180)), true, true,
       false},
      {"the meridian 180..-180", Made(MakeRectRegion(lat - 1, 180, lat + 1, -180)), true, true,
       false},
      {"across the antimeridian", Made(MakeRectRegion(lat - 1, 179.9, lat + 1, -179.9)), true, true,
       false},
      {"every longitude", Made(MakeRectRegion(-90, -180, 90, 180)), true, true, true},
      // (Rectangles meet when their lat and lon intervals do: not at the pole.)
      {"lon 0..10", Made(MakeRectRegion(-90, 0, 90, 10)), false, false, false},
      {"the world box", BoxRegion{kFrame.Bounds()}, true, true, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(FillInRegion(kFrame, at_x0, c.region, std::nullopt), c.x0);
    EXPECT_EQ(FillInRegion(kFrame, east, c.region, std::nullopt), c.east);
    EXPECT_EQ(FillInRegion(kFrame, south_pole, c.region, std::nullopt), c.pole);
    EXPECT_TRUE(FillInRegion(kFrame, planet, c.region, std::nullopt));
    // The band still counts: the fills are at the world's bottom.
    EXPECT_FALSE(FillInRegion(kFrame, planet, c.region, AltitudeBand{0, 1}));
  }
}

// The region builders take any doubles and any cell id: a value S2 would
// abort on is INVALID naming the limit, a value at a limit (the poles,
// +-180) makes a region that queries answer like brute force, with the
// fills at x = 0 (a planet-wide one among them) found and nothing aborting.
TEST(S2IndexTest, RegionsFromAnyNumbersAreSafeOrInvalid) {
  TempDir dir;
  Db d(dir.Sub("db"));
  const uint32_t lx = kFrame.chunks_x() - 1, ly = kFrame.chunks_y() - 1;
  const uint32_t my = kFrame.chunks_y() / 2;
  for (const ChunkCoord& c : std::vector<ChunkCoord>{{0, my, kSeaCz},
                                                     {lx, my, kSeaCz},
                                                     {0, 0, kSeaCz},
                                                     {lx, ly, kSeaCz},
                                                     {0, ly, kSeaCz},
                                                     {lx / 2, 0, kSeaCz},
                                                     {lx / 2, ly, kSeaCz},
                                                     {lx / 2, my, kSeaCz}}) {
    ASSERT_OK(d.db->PutChunkAndWait(ChunkKey::FromCoord(c), Uniform(2), std::nullopt).status);
  }
  const uint64_t ex = kFrame.extent_x(), ey = kFrame.extent_y();
  const uint64_t sea = kFrame.sea_level_z();
  ASSERT_OK(d.db->FillBoxAndWait({{0, 0, 0}, {1, 1, 1}}, 0).status);  // voxdb fill 0 0 0 1 1 1 0
  ASSERT_OK(d.db->FillBoxAndWait({{0, 0, sea + 200}, {ex, ey, sea + 201}}, 4).status);
  ASSERT_OK(d.db->Flush());
  const auto stored = StoredChunks(*d.db);
  ASSERT_EQ(stored.size(), 8u);
  const auto fills = d.db->Fills()->fills();
  ASSERT_EQ(fills.size(), 2u);

  // Refused, each with a message naming the limit.
  const std::vector<std::pair<std::string, StatusOr<Region>>> bad = {
      {"NaN latitude", MakeRadiusRegion(kNaN, 0, 1)},
      {"NaN longitude", MakeRadiusRegion(0, kNaN, 1)},
      {"infinite latitude", MakeRadiusRegion(kInf, 0, 1)},
      {"latitude 90.000001", MakeRadiusRegion(90.000001, 0, 1)},
      {"longitude -180.000001", MakeRadiusRegion(0, -180.000001, 1)},
      {"longitude 540", MakeRadiusRegion(0, 540, 1)},
      {"NaN radius", MakeRadiusRegion(0, 0, kNaN)},
      {"infinite radius", MakeRadiusRegion(0, 0, kInf)},
      {"negative radius", MakeRadiusRegion(0, 0, -1)},
      {"cell 0", MakeCellRegion(0)},
      {"a face-7 cell", MakeCellRegion(0xf000000000000000ull)},
      {"a face-6 leaf", MakeCellRegion(0xc000000000000001ull)},
      {"no level bit", MakeCellRegion(0x4000000000000000ull)},
      {"all ones", MakeCellRegion(~uint64_t{0})},
      {"the sentinel", MakeCellRegion(S2CellId::Sentinel().id())},
      {"rect NaN", MakeRectRegion(kNaN, 0, 1, 1)},
      {"rect NaN longitude", MakeRectRegion(0, 0, 1, kNaN)},
      {"rect lat_lo > lat_hi", MakeRectRegion(10, 0, -10, 1)},
      {"rect latitude -90.5", MakeRectRegion(-90.5, 0, 10, 1)},
      {"rect longitude 180.5", MakeRectRegion(0, 0, 10, 180.5)},
      {"rect longitude -inf", MakeRectRegion(0, -kInf, 10, 0)},
  };
  for (const auto& [name, r] : bad) {
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << name << ": " << r.status();
    EXPECT_FALSE(r.status().message().empty()) << name;
  }

  // Regions built directly from bad S2 values: refused, and matching nothing.
  const std::vector<std::pair<std::string, Region>> raw = {
      {"NaN centre", RadiusRegion{S2LatLng::FromRadians(kNaN, 0), 1}},
      {"centre past the pole", RadiusRegion{S2LatLng::FromRadians(2, 0), 1}},
      {"NaN radius", RadiusRegion{S2LatLng::FromDegrees(0, 0), kNaN}},
      {"a face-7 cell", CellRegion{S2CellId(0xf000000000000000ull)}},
      {"cell none", CellRegion{S2CellId::None()}},
      {"rect past the poles", RectRegion{S2LatLngRect(R1Interval(-2, 2), S1Interval::Full())}},
      {"empty rect", RectRegion{S2LatLngRect::Empty()}},
  };
  for (const auto& [name, region] : raw) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(absl::IsInvalidArgument(Query(*d.db, region, {}).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(CheckRegionAndBand(kFrame, region, std::nullopt)));
    for (const auto& [code, version] : stored) {
      EXPECT_FALSE(ChunkInRegion(kFrame, ChunkKey::FromCode(code), region, std::nullopt));
    }
    for (const engine::Fill& f : fills) {
      EXPECT_FALSE(FillInRegion(kFrame, f, region, std::nullopt));
    }
  }

  // At the limits: accepted, and queries agree with brute force.
  const double lat = ChunkCentre(kFrame, ChunkKey::FromCoord({0, my, kSeaCz})).lat().degrees();
  const std::vector<std::pair<std::string, StatusOr<Region>>> good = {
      {"1 m at (0, 0)", MakeRadiusRegion(0, 0, 1)},
      {"radius 0 at (0, 0)", MakeRadiusRegion(0, 0, 0)},
      {"radius -0", MakeRadiusRegion(0, 0, -0.0)},
      {"a denormal radius", MakeRadiusRegion(0, 0, 5e-324)},
      {"the north pole", MakeRadiusRegion(90, 0, 30'000)},
      {"the south pole", MakeRadiusRegion(-90, -180, 30'000)},
      {"lon -180", MakeRadiusRegion(lat, -180, 30'000)},
      {"lon 180", MakeRadiusRegion(lat, 180, 30'000)},
      {"half the circumference", MakeRadiusRegion(lat, 180, M_PI * engine::kEarthRadiusM)},
      {"just under half", MakeRadiusRegion(lat, 180, M_PI * engine::kEarthRadiusM - 1)},
      {"a huge radius", MakeRadiusRegion(0, 0, 1e300)},
      {"the max double", MakeRadiusRegion(0, 0, std::numeric_limits<double>::max())},
      {"a face cell", MakeCellRegion(S2CellId::FromFace(5).id())},
      {"a leaf", MakeCellRegion(ChunkCell(kFrame, ChunkKey::FromCoord({0, 0, kSeaCz})).id())},
      {"the whole world", MakeRectRegion(-90, -180, 90, 180)},
      {"the meridian -180..-180", MakeRectRegion(-90, -180, 90, -180)},
      {"the meridian 180..180", MakeRectRegion(-90, 180, 90, 180)},
      {"from 180 to -180", MakeRectRegion(-90, 180, 90, -180)},
      {"from -180 east to -170", MakeRectRegion(lat - 1, -180, lat + 1, -170)},
      {"from 170 east to 180", MakeRectRegion(lat - 1, 170, lat + 1, 180)},
      {"across the antimeridian", MakeRectRegion(lat - 1, 179.999, lat + 1, -179.999)},
      {"the south pole as a point", MakeRectRegion(-90, 0, -90, 0)},
      {"a polar cap", MakeRectRegion(89.99, -180, 90, 180)},
  };
  int found = 0;
  for (const auto& [name, r] : good) {
    SCOPED_TRACE(name);
    ASSERT_OK(r.status());
    ASSERT_OK(CheckRegionAndBand(kFrame, *r, std::nullopt));
    const QueryResult got = AllPages(*d.db, *r, {});
    EXPECT_EQ(got.chunks, Expected(stored, *r, std::nullopt));
    found += !got.chunks.empty();
    std::vector<uint64_t> fills_want, fills_got;
    for (const engine::Fill& f : fills) {
      if (FillInRegion(kFrame, f, *r, std::nullopt)) fills_want.push_back(f.seq);
    }
    for (const engine::Fill& f : got.fills) fills_got.push_back(f.seq);
    EXPECT_EQ(fills_got, fills_want);
    // The planet-wide layer meets every region.
    EXPECT_TRUE(std::find(fills_got.begin(), fills_got.end(), fills[1].seq) != fills_got.end());
  }
  EXPECT_GE(found, 10);
  // By plain geometry: the chunk at x = 0 on the equator row is 30 km from
  // (lat, +-180) and in the meridian rectangles' neighbours; the corner
  // fill is at the south pole.
  auto codes = [&](const StatusOr<Region>& r) {
    std::set<uint64_t> s;
    for (const ChunkHit& h : AllPages(*d.db, *r, {}).chunks) s.insert(h.key.code());
    return s;
  };
  const uint64_t west = ChunkKey::FromCoord({0, my, kSeaCz}).code();
  const uint64_t east = ChunkKey::FromCoord({lx, my, kSeaCz}).code();
  EXPECT_EQ(codes(MakeRadiusRegion(lat, -180, 30'000)), (std::set<uint64_t>{west, east}));
  EXPECT_EQ(codes(MakeRadiusRegion(lat, 180, 30'000)), (std::set<uint64_t>{west, east}));
  EXPECT_EQ(codes(MakeRectRegion(lat - 1, 179.999, lat + 1, -179.999)),
            (std::set<uint64_t>{west, east}));
  const auto pole = Query(*d.db, Made(MakeRadiusRegion(-90, 0, 1)), {});
  ASSERT_OK(pole.status());
  ASSERT_EQ(pole->fills.size(), 2u);
  EXPECT_EQ(pole->fills[0].box, (engine::VoxelBox{{0, 0, 0}, {1, 1, 1}}));
}

}  // namespace
}  // namespace voxdb::index
