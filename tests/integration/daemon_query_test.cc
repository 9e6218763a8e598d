// The spatial queries (QUERY_RADIUS, QUERY_CELL, QUERY_RECT, QUERY_BOX) and
// REINDEX through the client library, against the real voxdbd binary. What
// each query must return is computed with the index's own definitions
// (index::ChunkInRegion, index::FillInRegion) over the chunks and fills the
// test wrote.
#include <gtest/gtest.h>
#include <s2/r1interval.h>
#include <s2/s1interval.h>
#include <s2/s2cell_id.h>
#include <s2/s2latlng.h>
#include <s2/s2latlng_rect.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <csignal>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/database.h"
#include "engine/fills.h"
#include "engine/morton.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using engine::ChunkCoord;
using engine::ChunkKey;
using protocol::Client;
using protocol::Opcode;
using protocol::QueryKind;
using protocol::QueryReply;
using protocol::QueryRequest;
using protocol::WireStatus;
using testing::DaemonProcess;
using testing::TempDir;

// The origin of a cluster of chunks in Europe, at sea level (z = 312500 is
// altitude 0).
constexpr uint32_t kCx = 1'000'000, kCy = 400'000, kCz = 312'500;

const engine::WorldFrame& Frame() {
  static const engine::WorldFrame frame = engine::WorldFrame::Earth();
  return frame;
}

// The chunks the tests write: a 5 x 5 patch at sea level, a column above
// and below its middle, and a few far away (on both sides of the
// antimeridian, near the poles, on the prime meridian).
std::vector<ChunkCoord> SampleChunks() {
  std::vector<ChunkCoord> out;
  for (uint32_t dy = 0; dy < 5; ++dy) {
    for (uint32_t dx = 0; dx < 5; ++dx) out.push_back({kCx + dx, kCy + dy, kCz});
  }
  for (int dz : {-200, -1, 1, 10, 100}) {
    out.push_back({kCx + 2, kCy + 2, static_cast<uint32_t>(static_cast<int>(kCz) + dz)});
  }
  const uint32_t last_x = Frame().chunks_x() - 1, last_y = Frame().chunks_y() - 1;
  out.push_back({0, kCy, kCz});
  out.push_back({last_x, kCy, kCz});
  out.push_back({last_x, kCy + 1, kCz + 3});
  out.push_back({kCx, 0, kCz});
  out.push_back({kCx, last_y, kCz});
  out.push_back({Frame().chunks_x() / 2, Frame().chunks_y() / 2, kCz});
  return out;
}

ChunkKey KeyOf(const ChunkCoord& c) { return ChunkKey::FromCoord(c); }

protocol::Box ToWire(const engine::VoxelBox& b) {
  return {{b.lo.x, b.lo.y, b.lo.z}, {b.hi.x, b.hi.y, b.hi.z}};
}

// A query as the wire request and as the index's region (as voxdbd builds
// it), with the band of both.
struct Case {
  std::string name;
  QueryRequest request;
  index::Region region;
};

std::optional<index::AltitudeBand> BandOf(const QueryRequest& q) {
  if (!q.band) return std::nullopt;
  return index::AltitudeBand{q.band->min_m, q.band->max_m};
}

Case Radius(const S2LatLng& centre, double metres) {
  QueryRequest q;
  q.kind = QueryKind::kRadius;
  q.lat = centre.lat().degrees();
  q.lon = centre.lng().degrees();
  q.radius = metres;
  return {"radius", q, index::RadiusRegion{S2LatLng::FromDegrees(q.lat, q.lon), metres}};
}

Case Cell(S2CellId cell) {
  QueryRequest q;
  q.kind = QueryKind::kCell;
  q.cell = cell.id();
  return {"cell " + cell.ToToken(), q, index::CellRegion{cell}};
}

Case Rect(double lat_lo, double lon_lo, double lat_hi, double lon_hi) {
  QueryRequest q;
  q.kind = QueryKind::kRect;
  q.rect = {lat_lo, lon_lo, lat_hi, lon_hi};
  const S2LatLng lo = S2LatLng::FromDegrees(lat_lo, lon_lo);
  const S2LatLng hi = S2LatLng::FromDegrees(lat_hi, lon_hi);
  return {"rect", q,
          index::RectRegion{S2LatLngRect(R1Interval(lo.lat().radians(), hi.lat().radians()),
                                         S1Interval(lo.lng().radians(), hi.lng().radians()))}};
}

Case BoxCase(const engine::VoxelBox& box) {
  QueryRequest q;
  q.kind = QueryKind::kBox;
  q.box = ToWire(box);
  return {"box", q, index::BoxRegion{box}};
}

// The index's order: leaf cell of the centre, then Morton code; Morton code
// for box queries.
void SortLikeTheIndex(QueryKind kind, std::vector<protocol::QueryChunk>* chunks) {
  auto order = [kind](const protocol::QueryChunk& c) -> std::pair<uint64_t, uint64_t> {
    if (kind == QueryKind::kBox) return {0, c.code};
    return {index::ChunkCell(Frame(), ChunkKey::FromCode(c.code)).id(), c.code};
  };
  std::sort(chunks->begin(), chunks->end(),
            [&](const auto& a, const auto& b) { return order(a) < order(b); });
}

class DaemonQueryTest : public ::testing::Test {
 protected:
  DaemonQueryTest() : daemon_(std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"))) {
    client_ = Connect();
  }

  std::unique_ptr<Client> Connect() { return testing::ConnectWithHello(daemon_->port()); }

  // Writes one voxel into the chunk; remembers the chunk's version.
  void WriteChunk(const ChunkCoord& c, uint8_t material = 7) {
    const engine::VoxelCoord o = Frame().ChunkOrigin(c);
    auto v = client_->SetVoxels({{{{o.x + 1, o.y + 2, o.z + 3}, material}}});
    ASSERT_TRUE(v.ok()) << c.ToString() << ": " << v.status();
    versions_[KeyOf(c).code()] = *v;
  }
  void WriteSamples() {
    for (const ChunkCoord& c : SampleChunks()) WriteChunk(c);
  }
  // A fill; remembered as the index sees fills.
  void Fill(const engine::VoxelBox& box, uint8_t material) {
    auto v = client_->FillBox(ToWire(box), material);
    ASSERT_TRUE(v.ok()) << v.status();
    fills_.push_back({*v, box, material});
  }

  // What `c` must return: chunks in the index's order, fills by seq.
  QueryReply Expected(const Case& c) const {
    QueryReply want;
    for (const auto& [code, version] : versions_) {
      if (index::ChunkInRegion(Frame(), ChunkKey::FromCode(code), c.region, BandOf(c.request))) {
        want.chunks.push_back({code, version});
      }
    }
    SortLikeTheIndex(c.request.kind, &want.chunks);
    for (const engine::Fill& f : fills_) {
      if (index::FillInRegion(Frame(), f, c.region, BandOf(c.request))) {
        want.fills.push_back({f.seq, ToWire(f.box), f.material});
      }
    }
    return want;
  }

  // Every page of `q`, `limit` chunks each; the pages' fills are checked to
  // come with the first page only.
  QueryReply QueryAll(QueryRequest q, uint32_t limit, int* pages = nullptr) {
    q.limit = limit;
    q.cursor.clear();
    QueryReply all;
    int n = 0;
    for (;;) {
      auto page = client_->Query(q);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      ++n;
      EXPECT_LE(page->chunks.size(), limit);
      if (n > 1) {
        EXPECT_TRUE(page->fills.empty()) << "fills on page " << n;
      }
      all.chunks.insert(all.chunks.end(), page->chunks.begin(), page->chunks.end());
      all.fills.insert(all.fills.end(), page->fills.begin(), page->fills.end());
      if (page->next_cursor.empty()) break;
      if (page->next_cursor == q.cursor || n > 10'000) {
        ADD_FAILURE() << "the cursor does not advance";
        break;
      }
      q.cursor = page->next_cursor;
    }
    std::sort(all.fills.begin(), all.fills.end(),
              [](const auto& a, const auto& b) { return a.seq < b.seq; });
    if (pages != nullptr) *pages = n;
    return all;
  }

  // Every case's answer is exactly the expected one, in one page and in
  // pages of one chunk.
  void ExpectAllAgree(const std::vector<Case>& cases) {
    for (const Case& c : cases) {
      SCOPED_TRACE(c.name);
      const QueryReply want = Expected(c);
      const QueryReply one_page = QueryAll(c.request, protocol::kMaxQueryLimit);
      EXPECT_EQ(one_page.chunks, want.chunks);
      EXPECT_EQ(one_page.fills, want.fills);
      int pages = 0;
      const QueryReply paged = QueryAll(c.request, 1, &pages);
      EXPECT_EQ(paged.chunks, want.chunks);
      EXPECT_EQ(paged.fills, want.fills);
      EXPECT_GE(pages, static_cast<int>(want.chunks.size()));
    }
  }

  // The standard set of queries over SampleChunks().
  std::vector<Case> SampleCases() const {
    std::vector<Case> cases;
    const S2LatLng middle = index::ChunkCentre(Frame(), KeyOf({kCx + 2, kCy + 2, kCz}));
    cases.push_back(Radius(middle, 0));
    cases.push_back(Radius(middle, 40));
    cases.push_back(Radius(middle, 70));
    cases.push_back(Radius(middle, 1'000'000));
    cases.push_back(Radius(middle, 1e9));  // the whole sphere
    cases.push_back(Radius(S2LatLng::FromDegrees(0, 180), 100'000));
    const S2CellId leaf = index::ChunkCell(Frame(), KeyOf({kCx + 2, kCy + 2, kCz}));
    for (int level : {30, 20, 18, 16, 12, 0}) cases.push_back(Cell(leaf.parent(level)));
    // The middle 3 x 3 of the patch: between the centres of its outer chunks.
    const S2LatLng a = index::ChunkCentre(Frame(), KeyOf({kCx + 1, kCy + 1, kCz}));
    const S2LatLng b = index::ChunkCentre(Frame(), KeyOf({kCx + 3, kCy + 3, kCz}));
    const S2LatLng outer_a = index::ChunkCentre(Frame(), KeyOf({kCx, kCy, kCz}));
    const S2LatLng outer_b = index::ChunkCentre(Frame(), KeyOf({kCx + 4, kCy + 4, kCz}));
    auto mid = [](double u, double v) { return (u + v) / 2; };
    cases.push_back(Rect(mid(a.lat().degrees(), outer_a.lat().degrees()),
                         mid(a.lng().degrees(), outer_a.lng().degrees()),
                         mid(b.lat().degrees(), outer_b.lat().degrees()),
                         mid(b.lng().degrees(), outer_b.lng().degrees())));
    cases.push_back(Rect(-90, -180, 90, 180));
    cases.push_back(Rect(-80, 179.9, 80, -179.9));  // across the antimeridian
    cases.push_back(Rect(-90, -1, -89, 1));
    // A box over two columns of the patch, not aligned to chunks, one
    // layer of voxels deep plus the column above.
    const engine::VoxelCoord o = Frame().ChunkOrigin({kCx + 1, kCy, kCz});
    cases.push_back(
        BoxCase({{o.x + 5, o.y + 7, o.z + 127}, {o.x + 256, o.y + 5 * 128, o.z + 129}}));
    cases.push_back(BoxCase(Frame().Bounds()));
    return cases;
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<Client> client_;
  std::map<uint64_t, uint64_t> versions_;  // chunk code -> version
  std::vector<engine::Fill> fills_;
};

TEST_F(DaemonQueryTest, EveryKindReturnsExactlyTheChunksInTheRegion) {
  WriteSamples();
  ASSERT_OK(client_->Flush());
  const std::vector<Case> cases = SampleCases();
  // The cases are not trivial: some find a part of the chunks, some none.
  size_t partial = 0, none = 0;
  for (const Case& c : cases) {
    const size_t n = Expected(c).chunks.size();
    partial += n > 0 && n < versions_.size();
    none += n == 0;
  }
  EXPECT_GE(partial, 8u);
  EXPECT_GE(none, 1u);
  ExpectAllAgree(cases);
  // The antimeridian rectangle finds the chunks at both ends of the world.
  const QueryReply across = QueryAll(cases[cases.size() - 4].request, 1000);
  std::set<uint64_t> codes;
  for (const auto& c : across.chunks) codes.insert(c.code);
  EXPECT_TRUE(codes.count(KeyOf({0, kCy, kCz}).code()));
  EXPECT_TRUE(codes.count(KeyOf({Frame().chunks_x() - 1, kCy, kCz}).code()));
}

TEST_F(DaemonQueryTest, PagesOfOneEqualOnePageAndCursorsResume) {
  WriteSamples();
  ASSERT_OK(client_->Flush());
  const QueryRequest whole = Radius(S2LatLng::FromDegrees(0, 0), 1e9).request;
  const QueryReply big = QueryAll(whole, 1000);
  ASSERT_EQ(big.chunks.size(), versions_.size());
  for (uint32_t limit : {1u, 2u, 7u}) {
    int pages = 0;
    const QueryReply paged = QueryAll(whole, limit, &pages);
    EXPECT_EQ(paged.chunks, big.chunks) << limit;
    // Full pages, then the rest; a last page that is exactly full may
    // still carry a cursor to an empty page.
    const int full = static_cast<int>((versions_.size() + limit - 1) / limit);
    EXPECT_TRUE(pages == full || pages == full + 1) << limit << ": " << pages;
  }
  // A page that ends exactly at the last chunk may still have a cursor; the
  // next page is then empty with none.
  QueryRequest q = whole;
  q.limit = static_cast<uint32_t>(versions_.size());
  ASSERT_OK_AND_ASSIGN(QueryReply page, client_->Query(q));
  EXPECT_EQ(page.chunks, big.chunks);
  if (!page.next_cursor.empty()) {
    q.cursor = page.next_cursor;
    ASSERT_OK_AND_ASSIGN(QueryReply rest, client_->Query(q));
    EXPECT_TRUE(rest.chunks.empty());
    EXPECT_TRUE(rest.next_cursor.empty());
  }
  // The same for boxes (Morton order, 8-byte cursors).
  const QueryRequest box = BoxCase(Frame().Bounds()).request;
  const QueryReply all_boxes = QueryAll(box, 1000);
  EXPECT_EQ(QueryAll(box, 1).chunks, all_boxes.chunks);
  EXPECT_EQ(QueryAll(box, 3).chunks, all_boxes.chunks);
  EXPECT_EQ(all_boxes.chunks.size(), versions_.size());
  q = box;
  q.limit = 1;
  ASSERT_OK_AND_ASSIGN(page, client_->Query(q));
  EXPECT_EQ(page.next_cursor.size(), 8u);
  q = whole;
  q.limit = 1;
  ASSERT_OK_AND_ASSIGN(page, client_->Query(q));
  EXPECT_EQ(page.next_cursor.size(), 16u);
}

TEST_F(DaemonQueryTest, AltitudeBandsFilterChunksAndFills) {
  WriteSamples();
  // Fills under the patch (-2,500 m .. -250 m) and far away at the surface;
  // none of them holds a whole written chunk.
  const engine::VoxelCoord o = Frame().ChunkOrigin({kCx, kCy, kCz});
  Fill({{o.x, o.y, o.z - 10'000}, {o.x + 600, o.y + 600, o.z - 1'000}}, 3);
  const engine::VoxelCoord far = Frame().ChunkOrigin({100, 100, kCz});
  Fill({{far.x, far.y, far.z}, {far.x + 50, far.y + 50, far.z + 50}}, 4);
  ASSERT_OK(client_->Flush());
  std::vector<Case> cases;
  for (Case c : SampleCases()) {
    for (auto band :
         {std::make_pair(0.0, 0.0), std::make_pair(0.0, 100.0), std::make_pair(-7000.0, -100.0),
          std::make_pair(300.0, 5000.0), std::make_pair(1e6, 2e6)}) {
      c.request.band = protocol::AltitudeBand{band.first, band.second};
      cases.push_back(c);
      cases.back().name +=
          " band " + std::to_string(band.first) + ".." + std::to_string(band.second);
    }
  }
  // The bands make a difference.
  const Case& sea_level = cases[2 * 5 + 1];  // radius 70 m, 0..100 m
  const Case& deep = cases[2 * 5 + 2];       // radius 70 m, -7000..-100 m
  EXPECT_LT(Expected(sea_level).chunks.size(), Expected(SampleCases()[2]).chunks.size());
  EXPECT_EQ(Expected(deep).chunks.size(), 1u);
  EXPECT_EQ(Expected(deep).fills.size(), 1u);
  EXPECT_TRUE(Expected(sea_level).fills.empty());
  ExpectAllAgree(cases);
}

TEST_F(DaemonQueryTest, WritesAreFoundBeforeTheyAreFlushed) {
  WriteSamples();
  const std::vector<Case> cases = SampleCases();
  ExpectAllAgree(cases);  // nothing flushed yet
  ASSERT_OK(client_->Flush());
  // Edits after the flush: a new chunk, a rewritten one, a deleted one.
  WriteChunk({kCx + 2, kCy + 3, kCz + 1});
  WriteChunk({kCx + 2, kCy + 2, kCz}, 9);
  const ChunkKey gone = KeyOf({kCx + 1, kCy + 2, kCz});
  ASSERT_OK(client_->DeleteChunk(gone.code()).status());
  versions_.erase(gone.code());
  ExpectAllAgree(cases);
  ASSERT_OK(client_->Flush());
  ExpectAllAgree(cases);
}

TEST_F(DaemonQueryTest, ReindexCountsTheStoredChunksAndQueriesAgree) {
  WriteSamples();
  ASSERT_OK(client_->Flush());
  const std::vector<Case> cases = SampleCases();
  ExpectAllAgree(cases);
  ASSERT_OK_AND_ASSIGN(uint64_t entries, client_->Reindex());
  EXPECT_EQ(entries, versions_.size());
  ExpectAllAgree(cases);
  // A deleted chunk has no entry once flushed.
  const ChunkKey gone = KeyOf({kCx, kCy, kCz});
  ASSERT_OK(client_->DeleteChunk(gone.code()).status());
  versions_.erase(gone.code());
  ASSERT_OK(client_->Flush());
  ASSERT_OK_AND_ASSIGN(entries, client_->Reindex());
  EXPECT_EQ(entries, versions_.size());
  ExpectAllAgree(cases);
  // Unflushed writes during a reindex are still found.
  WriteChunk({kCx + 4, kCy + 4, kCz + 2});
  ASSERT_OK_AND_ASSIGN(entries, client_->Reindex());
  // (unless the flusher stored it meanwhile)
  EXPECT_TRUE(entries == versions_.size() - 1 || entries == versions_.size()) << entries;
  ExpectAllAgree(cases);
  // The index survives a restart.
  ASSERT_OK(client_->Flush());
  client_.reset();
  ASSERT_EQ(daemon_->StopWith(SIGTERM), 0);
  daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"));
  client_ = Connect();
  ExpectAllAgree(cases);
}

// A database written before voxdbd had an index gets one when voxdbd opens it.
TEST(DaemonQueryStartTest, AnIndexIsBuiltForADatabaseWithoutOne) {
  TempDir dir;
  std::map<uint64_t, uint64_t> versions;
  {
    engine::DatabaseOptions options;
    options.durability = engine::Durability::kAsync;
    ASSERT_OK_AND_ASSIGN(auto db, engine::Database::Open(dir.Sub("data"), options));
    for (const ChunkCoord& c : SampleChunks()) {
      const engine::VoxelCoord o = Frame().ChunkOrigin(c);
      const engine::VoxelEdit edit{{o.x, o.y, o.z}, 5};
      const engine::WriteResult r = db->SetVoxelsAndWait({&edit, 1});
      ASSERT_OK(r.status);
      versions[KeyOf(c).code()] = r.version;
    }
    ASSERT_OK(db->Flush());
  }
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  ASSERT_OK_AND_ASSIGN(auto c, Client::Connect("127.0.0.1", daemon.port()));
  ASSERT_OK(c->Hello(""));
  QueryRequest q = Rect(-90, -180, 90, 180).request;
  q.limit = 1000;
  ASSERT_OK_AND_ASSIGN(QueryReply page, c->Query(q));
  std::map<uint64_t, uint64_t> got;
  for (const auto& chunk : page.chunks) got[chunk.code] = chunk.version;
  EXPECT_EQ(got, versions);
  EXPECT_TRUE(page.next_cursor.empty());
}

TEST(DaemonQueryAuthTest, ReadTokensMayQueryButNotReindex) {
  const std::string admin = "aaaaaaaaaaaaaaaaaaaa", write = "wwwwwwwwwwwwwwwwwwww",
                    read = "rrrrrrrrrrrrrrrrrrrr";
  TempDir dir;
  DaemonProcess daemon(
      VOXDBD_PATH, dir.Sub("data"),
      {"--token", "admin:" + admin, "--token", "write:" + write, "--token", "read:" + read});
  auto connect = [&](const std::string& token) {
    auto c = Client::Connect("127.0.0.1", daemon.port());
    EXPECT_TRUE(c.ok()) << c.status();
    if (!token.empty()) {
      EXPECT_OK((*c)->Hello(token));
    }
    return std::move(*c);
  };
  auto writer = connect(write);
  const engine::VoxelCoord o = Frame().ChunkOrigin({kCx, kCy, kCz});
  ASSERT_OK(writer->SetVoxels({{{{o.x, o.y, o.z}, 1}}}).status());
  const QueryRequest q = BoxCase(Frame().Bounds()).request;

  auto reader = connect(read);
  ASSERT_OK_AND_ASSIGN(QueryReply page, reader->Query(q));
  ASSERT_EQ(page.chunks.size(), 1u);
  EXPECT_EQ(page.chunks[0].code, KeyOf({kCx, kCy, kCz}).code());
  for (Client* c : {reader.get(), writer.get()}) {
    auto denied = c->Reindex();
    EXPECT_EQ(protocol::ServerStatusOf(denied.status()), WireStatus::kPermissionDenied)
        << denied.status();
    EXPECT_OK(c->Ping());  // the connection stays
  }
  auto anonymous = connect("");
  auto unauthenticated = anonymous->Query(q);
  EXPECT_EQ(protocol::ServerStatusOf(unauthenticated.status()), WireStatus::kUnauthenticated);
  auto root = connect(admin);
  ASSERT_OK_AND_ASSIGN(uint64_t entries, root->Reindex());
  EXPECT_EQ(entries, 0u);  // nothing flushed yet
  ASSERT_OK(root->Flush());
  ASSERT_OK_AND_ASSIGN(entries, root->Reindex());
  EXPECT_EQ(entries, 1u);
}

// Sets the f64 at `offset` of a payload.
void PutF64(std::vector<uint8_t>* p, size_t offset, double v) {
  const uint64_t bits = std::bit_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) (*p)[offset + i] = static_cast<uint8_t>(bits >> (8 * i));
}

TEST_F(DaemonQueryTest, MalformedQueriesAreInvalidAndTheConnectionStays) {
  WriteSamples();
  QueryRequest radius = Radius(S2LatLng::FromDegrees(45, 7), 1000).request;
  const std::vector<uint8_t> good = radius.Encode();
  ASSERT_OK(client_->Call(Opcode::kQueryRadius, good).status());
  std::vector<std::pair<std::string, std::pair<Opcode, std::vector<uint8_t>>>> bad;
  auto add = [&](std::string name, Opcode op, std::vector<uint8_t> payload) {
    bad.push_back({std::move(name), {op, std::move(payload)}});
  };
  add("empty", Opcode::kQueryRadius, {});
  add("truncated", Opcode::kQueryRadius, {good.begin(), good.end() - 1});
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  add("one byte more", Opcode::kQueryRadius, longer);
  std::vector<uint8_t> p = good;
  PutF64(&p, 0, std::numeric_limits<double>::quiet_NaN());
  add("NaN latitude", Opcode::kQueryRadius, p);
  p = good;
  PutF64(&p, 16, std::numeric_limits<double>::infinity());
  add("infinite radius", Opcode::kQueryRadius, p);
  p = good;
  p[24] = 2;
  add("has_band 2", Opcode::kQueryRadius, p);
  p = good;
  PutF64(&p, 25, -std::numeric_limits<double>::infinity());
  add("infinite band without has_band", Opcode::kQueryRadius, p);
  auto encoded = [](QueryRequest q, auto change) {
    change(&q);
    return q.Encode();
  };
  add("latitude 91", Opcode::kQueryRadius, encoded(radius, [](QueryRequest* q) { q->lat = 91; }));
  add("longitude -181", Opcode::kQueryRadius,
      encoded(radius, [](QueryRequest* q) { q->lon = -181; }));
  add("negative radius", Opcode::kQueryRadius,
      encoded(radius, [](QueryRequest* q) { q->radius = -1; }));
  add("limit 0", Opcode::kQueryRadius, encoded(radius, [](QueryRequest* q) { q->limit = 0; }));
  add("limit 65537", Opcode::kQueryRadius,
      encoded(radius, [](QueryRequest* q) { q->limit = protocol::kMaxQueryLimit + 1; }));
  add("band min > max", Opcode::kQueryRadius, encoded(radius, [](QueryRequest* q) {
        q->band = protocol::AltitudeBand{10, -10};
      }));
  add("cursor of a box query", Opcode::kQueryRadius,
      encoded(radius, [](QueryRequest* q) { q->cursor = std::vector<uint8_t>(8, 0); }));
  add("cursor of 3 bytes", Opcode::kQueryBox,
      encoded(BoxCase(Frame().Bounds()).request, [](QueryRequest* q) {
        q->cursor = {1, 2, 3};
      }));
  add("cell 0", Opcode::kQueryCell, Cell(S2CellId::None()).request.Encode());
  add("cell of face 7", Opcode::kQueryCell, Cell(S2CellId(0xf000000000000000ull)).request.Encode());
  add("cell with no level bit", Opcode::kQueryCell,
      Cell(S2CellId(0x4000000000000000ull)).request.Encode());
  add("rect lat_lo > lat_hi", Opcode::kQueryRect, Rect(10, 0, -10, 1).request.Encode());
  add("rect latitude -90.5", Opcode::kQueryRect, Rect(-90.5, 0, 10, 1).request.Encode());
  add("rect longitude 180.5", Opcode::kQueryRect, Rect(0, 0, 10, 180.5).request.Encode());
  add("empty box", Opcode::kQueryBox, BoxCase({{10, 10, 10}, {10, 20, 20}}).request.Encode());
  add("radius payload as a cell query", Opcode::kQueryCell, good);
  for (const auto& [name, request] : bad) {
    auto r = client_->Call(request.first, request.second);
    EXPECT_EQ(protocol::ServerStatusOf(r.status()), WireStatus::kInvalid)
        << name << ": " << r.status();
  }
  // A box outside the world.
  const engine::VoxelBox outside{{0, 0, Frame().extent_z() - 1}, {1, 1, Frame().extent_z() + 1}};
  auto r = client_->Query(BoxCase(outside).request);
  EXPECT_EQ(protocol::ServerStatusOf(r.status()), WireStatus::kOutOfBounds) << r.status();
  // The connection still works, and the good query still answers.
  EXPECT_OK(client_->Ping());
  ASSERT_OK(client_->Call(Opcode::kQueryRadius, good).status());
  ExpectAllAgree({SampleCases()[2]});
}

// Queries as voxdbd builds their regions from the numbers on the wire.
Case RadiusAt(double lat, double lon, double metres) {
  QueryRequest q;
  q.kind = QueryKind::kRadius;
  q.lat = lat;
  q.lon = lon;
  q.radius = metres;
  auto region = index::MakeRadiusRegion(lat, lon, metres);
  EXPECT_OK(region.status());
  return {absl::StrFormat("radius %g %g %g", lat, lon, metres), q,
          region.ok() ? *region : index::Region{}};
}
Case RectAt(double lat_lo, double lon_lo, double lat_hi, double lon_hi) {
  QueryRequest q;
  q.kind = QueryKind::kRect;
  q.rect = {lat_lo, lon_lo, lat_hi, lon_hi};
  auto region = index::MakeRectRegion(lat_lo, lon_lo, lat_hi, lon_hi);
  EXPECT_OK(region.status());
  return {absl::StrFormat("rect %g %g %g %g", lat_lo, lon_lo, lat_hi, lon_hi), q,
          region.ok() ? *region : index::Region{}};
}

// A fill touching x = 0 (longitude -180; every planet-wide fill touches it)
// made the next radius query abort voxdbd inside libs2 (s1interval.h: Check
// failed: is_valid()), and the fill is durable: every restart crashed again
// on the next radius query. voxdbd now answers every kind of query, exactly,
// before and after a restart.
TEST_F(DaemonQueryTest, AFillTouchingXZeroLeavesEveryQueryAnswering) {
  WriteSamples();
  const uint64_t ex = Frame().extent_x(), ey = Frame().extent_y();
  const uint64_t row = uint64_t{kCy} * Frame().chunk_edge();      // the first row of chunk {0, kCy}
  Fill({{0, 0, 0}, {1, 1, 1}}, 0);                                // voxdb fill 0 0 0 1 1 1 0
  Fill({{0, row, 0}, {1, row + 1, 1}}, 2);                        // beside the chunk {0, kCy}
  Fill({{0, 0, 5}, {ex, ey, 6}}, 3);                              // a planet-wide layer
  Fill({{ex - 1, row, 0}, {ex, row + 1, 1}}, 4);                  // the east edge
  ASSERT_OK(client_->Query(RadiusAt(0, 0, 1).request).status());  // voxdb query radius 0 0 1
  ASSERT_OK(client_->Flush());

  const double lat = index::ChunkCentre(Frame(), KeyOf({0, kCy, kCz})).lat().degrees();
  std::vector<Case> cases = SampleCases();
  for (const Case& c :
       {RadiusAt(0, 0, 1), RadiusAt(lat, -180, 100), RadiusAt(lat, 180, 100), RadiusAt(-90, 0, 1),
        RadiusAt(90, 180, 1000), RadiusAt(0, 0, 1e300), RectAt(-90, -180, 90, 180),
        RectAt(lat - 1, -180, lat + 1, -180), RectAt(lat - 1, 180, lat + 1, -180),
        RectAt(lat - 1, 170, lat + 1, 180), RectAt(lat - 1, -180, lat + 1, -170),
        Cell(S2CellId::FromFace(5)), Cell(S2CellId(S2LatLng::FromDegrees(lat, 180)))}) {
    cases.push_back(c);
  }
  ExpectAllAgree(cases);
  // By plain geometry: 20 m around (lat, -180) holds the chunks at both
  // ends of the row (16 m east of -180 and 3 m west of 180), the fills
  // beside them (16 m south) and the planet-wide layer.
  ASSERT_OK_AND_ASSIGN(QueryReply edge, client_->Query(RadiusAt(lat, -180, 20).request));
  std::set<uint64_t> codes, seqs;
  for (const auto& c : edge.chunks) codes.insert(c.code);
  for (const auto& f : edge.fills) seqs.insert(f.seq);
  EXPECT_EQ(codes, (std::set<uint64_t>{KeyOf({0, kCy, kCz}).code(),
                                       KeyOf({Frame().chunks_x() - 1, kCy, kCz}).code()}));
  EXPECT_EQ(seqs, (std::set<uint64_t>{fills_[1].seq, fills_[2].seq, fills_[3].seq}));

  // The fills are durable: a restarted voxdbd answers the same.
  EXPECT_OK(client_->Ping());
  client_.reset();
  EXPECT_EQ(daemon_->StopWith(SIGTERM), 0);
  daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"));
  client_ = Connect();
  ASSERT_NE(client_, nullptr);
  ExpectAllAgree(cases);
  EXPECT_OK(client_->Ping());
  EXPECT_EQ(daemon_->StopWith(SIGTERM), 0);
}

// Values at the limits are accepted (a rectangle from -180 to -180 is the
// meridian 180); values past them, and NaN, are INVALID: over the wire,
// with the connection kept.
TEST_F(DaemonQueryTest, LimitsOfLatitudeAndLongitudeOverTheWire) {
  WriteSamples();
  const uint64_t row = uint64_t{kCy} * Frame().chunk_edge();
  Fill({{0, row, 0}, {1, row + 1, 1}}, 2);  // at longitude -180
  for (const Case& c :
       {RadiusAt(90, -180, 10), RadiusAt(-90, 180, 10), RectAt(-90, -180, -90, -180),
        RectAt(90, 180, 90, -180), RectAt(-90, -180, 90, -180)}) {
    SCOPED_TRACE(c.name);
    ASSERT_OK_AND_ASSIGN(QueryReply r, client_->Query(c.request));
    EXPECT_EQ(r.chunks, Expected(c).chunks);
    EXPECT_EQ(r.fills, Expected(c).fills);
  }
  // The meridian -180..-180 is the meridian 180, where the fill starts.
  ASSERT_OK_AND_ASSIGN(QueryReply meridian, client_->Query(RectAt(-90, -180, 90, -180).request));
  ASSERT_EQ(meridian.fills.size(), 1u);
  EXPECT_EQ(meridian.fills[0].seq, fills_[0].seq);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::pair<std::string, QueryRequest>> bad;
  auto add_radius = [&](std::string name, double lat, double lon, double metres) {
    QueryRequest q = RadiusAt(0, 0, 1).request;
    q.lat = lat;
    q.lon = lon;
    q.radius = metres;
    bad.push_back({std::move(name), q});
  };
  auto add_rect = [&](std::string name, double lat_lo, double lon_lo, double lat_hi,
                      double lon_hi) {
    QueryRequest q = RectAt(0, 0, 1, 1).request;
    q.rect = {lat_lo, lon_lo, lat_hi, lon_hi};
    bad.push_back({std::move(name), q});
  };
  add_radius("NaN latitude", nan, 0, 1);
  add_radius("NaN longitude", 0, nan, 1);
  add_radius("NaN radius", 0, 0, nan);
  add_radius("infinite latitude", inf, 0, 1);
  add_radius("longitude -inf", 0, -inf, 1);
  add_radius("infinite radius", 0, 0, inf);
  add_radius("latitude 90.0000001", 90.0000001, 0, 1);
  add_radius("longitude -180.0000001", 0, -180.0000001, 1);
  add_radius("longitude 1e308", 0, 1e308, 1);
  add_radius("radius -1e-300", 0, 0, -1e-300);
  add_rect("rect NaN latitude", nan, 0, 1, 1);
  add_rect("rect NaN longitude", 0, 0, 1, nan);
  add_rect("rect longitude -inf", 0, -inf, 1, 1);
  add_rect("rect latitude -90.0000001", -90.0000001, 0, 1, 1);
  add_rect("rect longitude 180.0000001", 0, 0, 1, 180.0000001);
  add_rect("rect latitudes swapped", 1, 0, 0, 1);
  for (uint64_t cell : std::vector<uint64_t>{0, 0xf000000000000000ull, 0xc000000000000001ull,
                                             0x4000000000000000ull, ~uint64_t{0}}) {
    QueryRequest q;
    q.kind = QueryKind::kCell;
    q.cell = cell;
    bad.push_back({absl::StrFormat("cell %016x", cell), q});
  }
  for (const auto& [name, q] : bad) {
    auto r = client_->Query(q);
    EXPECT_EQ(protocol::ServerStatusOf(r.status()), WireStatus::kInvalid)
        << name << ": " << r.status();
  }
  EXPECT_OK(client_->Ping());
}

}  // namespace
}  // namespace voxdb
