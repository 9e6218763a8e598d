// engine/node_snapshot.h: snapshots of a node of 1, 8 and 200 partitions
// read exactly as a snapshot of one Database fed the same writes (the
// oracle), and never see later writes; snapshots taken while writers cross
// partition borders hold each write whole or not at all; a snapshot taken
// while a split runs reads the node as it was.
#include "engine/node_snapshot.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/chunk_codec.h"
#include "engine/voxel_box.h"
#include "engine/world_frame.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"
#include "tests/testing/test_node.h"

namespace voxdb::engine {
namespace {

using testing::TempDir;

constexpr uint64_t kEdge = 128;

using testing::RandomPartitions;
using testing::TestNodeOptions;

class Rand {
 public:
  Rand(uint64_t region_chunks, uint64_t seed) : region_(region_chunks * kEdge), rng_(seed) {}
  uint64_t operator()(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  // Near a chunk border (where partitions meet), or anywhere.
  uint64_t Coord() {
    if ((*this)(3) == 0) return (*this)(region_);
    const uint64_t border = (1 + (*this)(region_ / kEdge - 1)) * kEdge;
    return border - 24 + (*this)(48);
  }
  VoxelCoord Voxel() { return {Coord(), Coord(), Coord()}; }
  VoxelBox Box(uint64_t max_side) {
    VoxelBox b;
    b.lo = Voxel();
    b.hi = {std::min(region_, b.lo.x + 1 + (*this)(max_side)),
            std::min(region_, b.lo.y + 1 + (*this)(max_side)),
            std::min(region_, b.lo.z + 1 + (*this)(max_side))};
    return b;
  }
  ChunkKey Chunk() {
    const uint32_t n = static_cast<uint32_t>(region_ / kEdge);
    return ChunkKey::FromCoord({static_cast<uint32_t>((*this)(n)),
                                static_cast<uint32_t>((*this)(n)),
                                static_cast<uint32_t>((*this)(n))});
  }
  ChunkBox Chunks() {
    const uint32_t n = static_cast<uint32_t>(region_ / kEdge);
    ChunkCoord a{static_cast<uint32_t>((*this)(n)), static_cast<uint32_t>((*this)(n)),
                 static_cast<uint32_t>((*this)(n))};
    ChunkCoord b{static_cast<uint32_t>((*this)(n)), static_cast<uint32_t>((*this)(n)),
                 static_cast<uint32_t>((*this)(n))};
    return ChunkBox{{std::min(a.x, b.x), std::min(a.y, b.y), std::min(a.z, b.z)},
                    {std::max(a.x, b.x), std::max(a.y, b.y), std::max(a.z, b.z)}};
  }
  uint8_t Material() { return static_cast<uint8_t>(1 + (*this)(6)); }
  uint64_t region() const { return region_; }

 private:
  uint64_t region_;
  std::mt19937_64 rng_;
};

// Runs fn once: by Run, else when it goes out of scope.
class Finally {
 public:
  explicit Finally(std::function<void()> fn) : fn_(std::move(fn)) {}
  ~Finally() { Run(); }
  void Run() {
    if (fn_) std::exchange(fn_, nullptr)();
  }

 private:
  std::function<void()> fn_;
};

// One random write, to both.
void RandomWrite(Node& node, Database& oracle, Rand& r) {
  switch (r(8)) {
    case 0:
    case 1: {
      std::vector<VoxelEdit> edits;
      for (uint64_t i = 0, n = 1 + r(40); i < n; ++i) edits.push_back({r.Voxel(), r.Material()});
      ASSERT_OK(node.SetVoxelsAndWait(edits).status);
      ASSERT_OK(oracle.SetVoxelsAndWait(edits).status);
      break;
    }
    case 2:
    case 3:
    case 4: {
      const VoxelBox box = r.Box(80);
      std::vector<uint8_t> v(box.volume());
      for (uint8_t& x : v) x = static_cast<uint8_t>(r(4) == 0 ? r.Material() : 0);
      ASSERT_OK(node.WriteBoxAndWait(box, v).status);
      ASSERT_OK(oracle.WriteBoxAndWait(box, v).status);
      break;
    }
    case 5:
    case 6: {
      const VoxelBox box = r.Box(300);
      const uint8_t m = r.Material();
      ASSERT_OK(node.FillBoxAndWait(box, m).status);
      ASSERT_OK(oracle.FillBoxAndWait(box, m).status);
      break;
    }
    case 7: {
      const ChunkKey k = r.Chunk();
      ASSERT_OK(node.DeleteChunkAndWait(k).status);
      ASSERT_OK(oracle.DeleteChunkAndWait(k).status);
      break;
    }
  }
}

// A chunk as read: its status, whether it has a version, its voxels.
struct Read {
  Status status;
  bool versioned = false;
  uint64_t version = 0;
  std::vector<uint8_t> dense;
};

template <typename View>
std::vector<Read> ReadChunks(View& view, const std::vector<ChunkKey>& keys) {
  std::vector<Read> out(keys.size());
  std::vector<size_t> order;
  EXPECT_OK(view.GetChunks(keys, [&](size_t i, const ChunkRead& r) {
    order.push_back(i);
    EXPECT_EQ(r.key, keys[i]);
    out[i].status = r.status;
    out[i].versioned = r.version > 0;
    out[i].version = r.version;
    if (!r.status.ok()) return;
    out[i].dense.resize(kEdge * kEdge * kEdge);
    EXPECT_OK(DecodeChunkToDense(r.record, out[i].dense.data()));
  }));
  std::vector<size_t> want(keys.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = i;
  EXPECT_EQ(order, want) << "GetChunks calls back once per key, in key order";
  return out;
}

template <typename View>
std::vector<std::pair<uint64_t, uint64_t>> Scan(View& view, const ChunkBox& box,
                                                uint64_t from = 0) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  EXPECT_OK(view.ScanChunks(box, from, [&](ChunkKey key, uint64_t version) {
    out.emplace_back(key.code(), version);
    return true;
  }));
  return out;
}

std::vector<uint64_t> Codes(const std::vector<std::pair<uint64_t, uint64_t>>& scan) {
  std::vector<uint64_t> codes;
  for (const auto& [code, version] : scan) codes.push_back(code);
  return codes;
}

// The material the fills give voxel v: the last fill (in the given order)
// holding it, else air.
uint8_t FillsAt(const std::vector<Fill>& fills, const VoxelCoord& v) {
  uint8_t m = 0;
  for (const Fill& f : fills) {
    if (v.x >= f.box.lo.x && v.x < f.box.hi.x && v.y >= f.box.lo.y && v.y < f.box.hi.y &&
        v.z >= f.box.lo.z && v.z < f.box.hi.z) {
      m = f.material;
    }
  }
  return m;
}

uint8_t VoxelOf(const std::vector<uint8_t>& dense, const VoxelCoord& v) {
  const uint64_t x = v.x % kEdge, y = v.y % kEdge, z = v.z % kEdge;
  return dense[(z * kEdge + y) * kEdge + x];
}

// Everything `snap` answers equals what `oracle` (a snapshot of one
// Database fed the same writes) answers. Versions are the partitions' own:
// equal with one partition, else only zero together.
void ExpectSameView(const NodeSnapshot& snap, const DatabaseSnapshot& oracle, Rand& r,
                    bool same_versions, const std::vector<ChunkKey>& extra_keys) {
  std::vector<ChunkKey> keys = extra_keys;
  for (int i = 0; i < 60; ++i) keys.push_back(r.Chunk());
  const std::vector<Read> a = ReadChunks(snap, keys);
  const std::vector<Read> b = ReadChunks(oracle, keys);
  for (size_t i = 0; i < keys.size(); ++i) {
    SCOPED_TRACE("chunk " + keys[i].ToString());
    ASSERT_OK(a[i].status);
    ASSERT_OK(b[i].status);
    ASSERT_TRUE(a[i].dense == b[i].dense);
    ASSERT_EQ(a[i].versioned, b[i].versioned);
    if (same_versions) {
      ASSERT_EQ(a[i].version, b[i].version);
    }
  }
  // Scans: the same chunks in the same order, whole or page by page (as
  // SNAPSHOT_SCAN pages: the key that did not fit is the next cursor).
  const uint32_t n = static_cast<uint32_t>(r.region() / kEdge);
  std::vector<ChunkBox> boxes{ChunkBox{{0, 0, 0}, {n - 1, n - 1, n - 1}}};
  for (int i = 0; i < 4; ++i) boxes.push_back(r.Chunks());
  for (const ChunkBox& box : boxes) {
    const auto sa = Scan(snap, box), sb = Scan(oracle, box);
    ASSERT_EQ(Codes(sa), Codes(sb));
    if (same_versions) {
      ASSERT_EQ(sa, sb);
    }
    ASSERT_TRUE(std::is_sorted(sa.begin(), sa.end()));
    std::vector<uint64_t> paged;
    uint64_t from = 0;
    for (bool more = true; more;) {
      more = false;
      size_t page = 0;
      ASSERT_OK(snap.ScanChunks(box, from, [&](ChunkKey key, uint64_t) {
        if (page == 5) {
          from = key.code();
          more = true;
          return false;
        }
        ++page;
        paged.push_back(key.code());
        return true;
      }));
    }
    ASSERT_EQ(paged, Codes(sb));
  }
  // Records: the same chunks (and deletion markers), in order.
  std::vector<uint64_t> ra, rb;
  const MortonRange all{0, uint64_t{n} * n * n};
  ASSERT_OK(snap.ScanRecords(all, [&](ChunkKey k, uint64_t, const auto& rec) {
    EXPECT_FALSE(rec().empty());
    ra.push_back(k.code());
    return true;
  }));
  ASSERT_OK(oracle.ScanRecords(all, [&](ChunkKey k, uint64_t, const auto&) {
    rb.push_back(k.code());
    return true;
  }));
  ASSERT_EQ(ra, rb);
  // Fills: the pieces rasterise as the whole fills do.
  for (int i = 0; i < 4; ++i) {
    const VoxelBox box = r.Box(400);
    const std::vector<Fill> fa = snap.FillsMeeting(box);
    std::vector<Fill> fb;
    for (const Fill& f : oracle.fills().fills()) {
      if (Meets(f.box, box)) fb.push_back(f);
    }
    for (int k = 0; k < 300; ++k) {
      const VoxelCoord v{box.lo.x + r(box.hi.x - box.lo.x), box.lo.y + r(box.hi.y - box.lo.y),
                         box.lo.z + r(box.hi.z - box.lo.z)};
      ASSERT_EQ(FillsAt(fa, v), FillsAt(fb, v)) << v.ToString();
    }
  }
}

// The id of the partition holding `code` (the layout is not held after:
// a split waits for the old partition's last holder).
uint64_t PartitionHolding(Node& node, uint64_t code) {
  const std::shared_ptr<const Node::Layout> layout = node.layout();
  return layout->parts[layout->ranges.Find(code)].spec.id;
}

struct Case {
  size_t partitions;
  int align_levels;
  uint64_t region_chunks;  // per axis
};

class NodeSnapshotModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(NodeSnapshotModelTest, ReadsAsOneDatabaseAndMissesLaterWrites) {
  const Case c = GetParam();
  TempDir dir;
  std::mt19937_64 rng(c.partitions * 31 + 5);
  const uint64_t limit = c.region_chunks * c.region_chunks * c.region_chunks;
  const auto specs = RandomPartitions(dir.path(), c.partitions, c.align_levels, limit, rng);
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(specs, TestNodeOptions(c.align_levels)));
  ASSERT_OK_AND_ASSIGN(auto oracle, Database::Open(dir.Sub("oracle"), testing::TestOptions()));
  Rand r(c.region_chunks, c.partitions);
  for (int i = 0; i < 80; ++i) {
    RandomWrite(*node, *oracle, r);
    if (HasFatalFailure()) return;
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<NodeSnapshot> snap, SnapshotOf(*node, std::nullopt));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DatabaseSnapshot> osnap, oracle->Snapshot());

  // One sequence number per partition: where each partition's writes stand.
  const auto layout = node->layout();
  ASSERT_EQ(snap->partition_count(), c.partitions);
  const auto seqs = snap->seqs();
  ASSERT_EQ(seqs.size(), c.partitions);
  uint64_t max_seq = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_EQ(seqs[i].id, layout->parts[i].spec.id);
    EXPECT_EQ(seqs[i].range, layout->parts[i].spec.range);
    EXPECT_EQ(seqs[i].seq, layout->parts[i].db->Stats().last_seq);
    EXPECT_EQ(seqs[i].seq, snap->partition(i).seq());
    max_seq = std::max(max_seq, seqs[i].seq);
  }
  EXPECT_EQ(snap->seq(), max_seq);
  if (c.partitions == 1) {
    EXPECT_EQ(snap->seq(), osnap->seq());
  }

  // Writes after the snapshot, among them a box across partitions of a
  // material no other write uses.
  // Around the low corner of the second partition's first chunk: the
  // chunks below it on an axis are in an earlier partition.
  const ChunkCoord corner = layout->parts.size() > 1
                                ? MortonDecode(layout->parts[1].spec.range.begin)
                                : ChunkCoord{1, 1, 1};
  const auto low = [](uint32_t v) { return v == 0 ? 0 : v * kEdge - 20; };
  const VoxelBox late{{low(corner.x), low(corner.y), low(corner.z)},
                      {corner.x * kEdge + 20, corner.y * kEdge + 20, corner.z * kEdge + 20}};
  ASSERT_OK(node->WriteBoxAndWait(late, std::vector<uint8_t>(late.volume(), 250)).status);
  ASSERT_OK(oracle->WriteBoxAndWait(late, std::vector<uint8_t>(late.volume(), 250)).status);
  for (int i = 0; i < 40; ++i) {
    RandomWrite(*node, *oracle, r);
    if (HasFatalFailure()) return;
  }
  std::vector<ChunkKey> late_keys;
  const ChunkBox lc = ChunksCovering(node->frame(), late);
  for (uint32_t z = lc.lo.z; z <= lc.hi.z; ++z) {
    for (uint32_t y = lc.lo.y; y <= lc.hi.y; ++y) {
      for (uint32_t x = lc.lo.x; x <= lc.hi.x; ++x)
        late_keys.push_back(ChunkKey::FromCoord({x, y, z}));
    }
  }
  if (c.partitions > 1) {
    EXPECT_GT(node->layout()->ranges.Meeting(lc).size(), 1u) << "the late box crosses no border";
  }
  for (const Read& read : ReadChunks(*snap, late_keys)) {
    ASSERT_OK(read.status);
    EXPECT_EQ(std::count(read.dense.begin(), read.dense.end(), 250), 0)
        << "a write after the snapshot is in it";
  }
  for (const Read& read : ReadChunks(*node, late_keys)) {
    EXPECT_GT(std::count(read.dense.begin(), read.dense.end(), 250), 0) << "the live node has it";
  }
  // Writes after the snapshot change nothing in it: it still reads as the
  // oracle's, taken at the same point.
  ExpectSameView(*snap, *osnap, r, c.partitions == 1, late_keys);
}

INSTANTIATE_TEST_SUITE_P(Partitions, NodeSnapshotModelTest,
                         ::testing::Values(Case{1, 4, 8}, Case{8, 4, 32}, Case{200, 0, 8}),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           return absl::StrFormat("P%u", p.param.partitions);
                         });

// A snapshot of a region covers the partitions the region meets, and says
// NOT_FOUND for chunks of the others.
TEST(NodeSnapshotTest, ARegionCoversItsPartitionsOnly) {
  TempDir dir;
  std::mt19937_64 rng(3);
  const auto specs = RandomPartitions(dir.path(), 30, 0, 512, rng);
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(specs, TestNodeOptions(0)));
  ASSERT_OK_AND_ASSIGN(auto oracle, Database::Open(dir.Sub("oracle"), testing::TestOptions()));
  Rand r(8, 4);
  for (int i = 0; i < 60; ++i) {
    RandomWrite(*node, *oracle, r);
    if (HasFatalFailure()) return;
  }
  const ChunkBox region{{1, 1, 1}, {2, 2, 2}};
  ASSERT_OK_AND_ASSIGN(auto snap, SnapshotOf(*node, region));
  ASSERT_OK_AND_ASSIGN(auto osnap, oracle->Snapshot());
  const auto layout = node->layout();
  const std::vector<size_t> meeting = layout->ranges.Meeting(region);
  ASSERT_EQ(snap->partition_count(), meeting.size());
  ASSERT_LT(meeting.size(), layout->parts.size());
  for (size_t i = 0; i < meeting.size(); ++i) {
    EXPECT_EQ(snap->seqs()[i].id, layout->parts[meeting[i]].spec.id);
  }
  std::vector<ChunkKey> keys;
  for (uint32_t code = 0; code < 512; code += 3) keys.push_back(ChunkKey::FromCode(code));
  // Out of the world: OUT_OF_BOUNDS, as a Database says.
  keys.push_back(ChunkKey::FromCoord({0, 0, node->frame().chunks_z()}));
  const std::vector<Read> a = ReadChunks(*snap, keys);
  const std::vector<Read> b = ReadChunks(*osnap, keys);
  size_t covered = 0, outside = 0;
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    SCOPED_TRACE("chunk " + keys[i].ToString());
    const bool in = std::find(meeting.begin(), meeting.end(),
                              layout->ranges.Find(keys[i].code())) != meeting.end();
    ASSERT_EQ(snap->Covers(keys[i]), in);
    if (in) {
      ++covered;
      ASSERT_OK(a[i].status);
      ASSERT_TRUE(a[i].dense == b[i].dense);
    } else {
      ++outside;
      ASSERT_TRUE(absl::IsNotFound(a[i].status)) << a[i].status;
    }
  }
  EXPECT_GT(covered, 0u);
  EXPECT_GT(outside, 0u);
  EXPECT_TRUE(IsOutOfBounds(a.back().status)) << a.back().status;
  EXPECT_TRUE(IsOutOfBounds(b.back().status)) << b.back().status;
  // A scan lists the chunks of its partitions only.
  const ChunkBox all{{0, 0, 0}, {7, 7, 7}};
  std::vector<uint64_t> want;
  for (uint64_t code : Codes(Scan(*osnap, all))) {
    if (snap->Covers(ChunkKey::FromCode(code))) want.push_back(code);
  }
  EXPECT_FALSE(want.empty());
  EXPECT_EQ(Codes(Scan(*snap, all)), want);

  EXPECT_TRUE(absl::IsInvalidArgument(SnapshotOf(*node, ChunkBox{{2, 0, 0}, {1, 0, 0}}).status()));
  EXPECT_TRUE(IsOutOfBounds(
      SnapshotOf(*node, ChunkBox{{0, 0, 0}, {0, 0, node->frame().chunks_z()}}).status()));
}

// When a partition cannot give its snapshot (every LMDB reader slot held),
// SnapshotOf fails with its error, ends the snapshots it took of the
// others and lets writes go on.
TEST(NodeSnapshotTest, AFailedPartitionFailsTheSnapshotAndReleasesTheRest) {
  TempDir dir;
  std::vector<PartitionSpec> specs;
  for (uint64_t i = 0; i < 4; ++i) {
    specs.push_back(PartitionSpec{i,
                                  {i * 8, i < 3 ? (i + 1) * 8 : MortonRange::All().end},
                                  absl::StrFormat("%s/p%u", dir.path(), i)});
  }
  NodeOptions options = TestNodeOptions(0);
  options.database.store.max_readers = 4;
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(specs, options));
  // A voxel in each partition.
  std::vector<VoxelEdit> edits;
  for (uint64_t i = 0; i < 4; ++i) {
    const VoxelCoord o = node->frame().ChunkOrigin(MortonDecode(i * 8));
    edits.push_back({{o.x + 1, o.y + 2, o.z + 3}, static_cast<uint8_t>(10 + i)});
  }
  ASSERT_OK(node->SetVoxelsAndWait(edits).status);
  std::vector<std::unique_ptr<DatabaseSnapshot>> held;
  for (int i = 0; i < 16; ++i) {
    auto s = node->layout()->parts[2].db->Snapshot();
    if (!s.ok()) break;
    held.push_back(std::move(*s));
  }
  ASSERT_FALSE(held.empty());
  // More attempts than partition 0 has reader slots: each ended what it took.
  for (int i = 0; i < 10; ++i) {
    const auto failed = SnapshotOf(*node, std::nullopt);
    ASSERT_FALSE(failed.ok());
    EXPECT_TRUE(IsBusy(failed.status())) << failed.status();
  }
  // Writes were not left paused.
  for (VoxelEdit& e : edits) e.material += 10;
  ASSERT_OK(node->SetVoxelsAndWait(edits).status);
  // A region without partition 2 needs none of its slots.
  const ChunkCoord c0 = MortonDecode(0);
  ASSERT_OK_AND_ASSIGN(auto part0, SnapshotOf(*node, ChunkBox{c0, c0}));
  EXPECT_EQ(part0->partition_count(), 1u);
  part0.reset();
  held.clear();
  ASSERT_OK_AND_ASSIGN(auto snap, SnapshotOf(*node, std::nullopt));
  std::vector<ChunkKey> keys;
  for (uint64_t i = 0; i < 4; ++i) keys.push_back(ChunkKey::FromCode(i * 8));
  const std::vector<Read> reads = ReadChunks(*snap, keys);
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_OK(reads[i].status);
    EXPECT_EQ(VoxelOf(reads[i].dense, edits[i].at), 20 + i);
  }
}

// After a split both children hold a fill made before it; a later fill of
// the first child over part of it must still win there, though the second
// child (later in code order) holds the older fill too.
TEST(NodeSnapshotTest, FillsListInheritedFillsOnceAndInOrder) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(dir.path(), TestNodeOptions(4)));
  // Chunks 0..31 on x: codes below 4096 are x, y, z < 16.
  const VoxelBox wide{{0, 0, 0}, {32 * kEdge, 10, 10}};
  ASSERT_OK(node->FillBoxAndWait(wide, 1).status);
  ASSERT_OK(node->Split(0, 4096).status());
  ASSERT_EQ(node->partition_count(), 2u);
  const VoxelBox own{{5, 0, 0}, {15, 10, 10}};  // in the first child
  ASSERT_OK(node->FillBoxAndWait(own, 2).status);
  ASSERT_OK_AND_ASSIGN(auto snap, SnapshotOf(*node, std::nullopt));
  const std::vector<Fill> fills = snap->FillsMeeting(wide);
  size_t wide_count = 0;
  for (const Fill& f : fills) wide_count += f.box.lo == wide.lo && f.box.hi == wide.hi;
  EXPECT_EQ(wide_count, 1u) << "the inherited fill is listed once";
  EXPECT_EQ(FillsAt(fills, {1, 1, 1}), 1);
  EXPECT_EQ(FillsAt(fills, {7, 1, 1}), 2);
  EXPECT_EQ(FillsAt(fills, {20 * kEdge, 1, 1}), 1);
  // As the chunks read.
  const std::vector<Read> reads = ReadChunks(*snap, {ChunkKey::FromCoord({0, 0, 0})});
  ASSERT_OK(reads[0].status);
  EXPECT_EQ(VoxelOf(reads[0].dense, {7, 1, 1}), 2);
  EXPECT_EQ(VoxelOf(reads[0].dense, {1, 1, 1}), 1);
}

// Writers write boxes across partition borders, each box always whole with
// one material, a new one each time, while snapshots are taken: every
// snapshot holds each box in one material (never part of a write), and at
// least the write acknowledged last before it was taken.
TEST(NodeSnapshotTest, WritesAcrossPartitionsAreAllOrNothing) {
  TempDir dir;
  std::mt19937_64 rng(11);
  // Codes below 64: a cube of 4^3 chunks, in 24 partitions.
  const auto specs = RandomPartitions(dir.path(), 24, 0, 64, rng);
  NodeOptions options = TestNodeOptions(0);
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(specs, options));
  // A slot: a box around a point where 8 chunks meet.
  std::vector<VoxelBox> slots;
  for (uint64_t z = 1; z < 2; ++z) {
    for (uint64_t y = 1; y < 4; ++y) {
      for (uint64_t x = 1; x < 4; ++x) {
        const VoxelCoord c{x * kEdge, y * kEdge, z * kEdge};
        slots.push_back({{c.x - 3, c.y - 3, c.z - 3}, {c.x + 3, c.y + 3, c.z + 3}});
      }
    }
  }
  size_t crossing = 0;
  for (const VoxelBox& s : slots) {
    if (node->layout()->ranges.Meeting(ChunksCovering(node->frame(), s)).size() > 1) ++crossing;
  }
  ASSERT_GT(crossing, slots.size() / 2);
  // The n-th write of a slot (from 1) writes material 1 + (n - 1) % 255.
  const auto material = [](uint64_t n) {
    return static_cast<uint8_t>(n == 0 ? 0 : 1 + (n - 1) % 255);
  };
  std::vector<std::atomic<uint64_t>> acked(slots.size()), started(slots.size());
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  // Joined however the test ends (a failed ASSERT returns early).
  Finally join_writers([&] {
    stop = true;
    for (std::thread& t : writers) t.join();
  });
  constexpr size_t kWriters = 3;
  for (size_t w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      while (!stop.load()) {
        for (size_t s = w; s < slots.size(); s += kWriters) {
          const uint64_t n = started[s].load() + 1;
          started[s].store(n);
          const std::vector<uint8_t> v(slots[s].volume(), material(n));
          ASSERT_OK(node->WriteBoxAndWait(slots[s], v).status);
          acked[s].store(n);
        }
      }
    });
  }
  // The chunks of the slots (z 0 and 1): keys[index[code]].
  std::vector<ChunkKey> keys;
  std::map<uint64_t, size_t> index;
  for (uint32_t z = 0; z < 2; ++z) {
    for (uint32_t y = 0; y < 4; ++y) {
      for (uint32_t x = 0; x < 4; ++x) {
        index[ChunkKey::FromCoord({x, y, z}).code()] = keys.size();
        keys.push_back(ChunkKey::FromCoord({x, y, z}));
      }
    }
  }
  constexpr int kSnapshots = 15;
  int snapshots = 0;
  uint64_t seen_writes = 0;
  for (; snapshots < kSnapshots && !HasFatalFailure(); ++snapshots) {
    std::vector<uint64_t> before(slots.size());
    for (size_t s = 0; s < slots.size(); ++s) before[s] = acked[s].load();
    ASSERT_OK_AND_ASSIGN(auto snap, SnapshotOf(*node, std::nullopt));
    std::vector<uint64_t> after(slots.size());
    for (size_t s = 0; s < slots.size(); ++s) after[s] = started[s].load();
    const std::vector<Read> reads = ReadChunks(*snap, keys);
    for (size_t s = 0; s < slots.size(); ++s) {
      std::set<uint8_t> values;
      const VoxelBox& b = slots[s];
      for (uint64_t z = b.lo.z; z < b.hi.z; ++z) {
        for (uint64_t y = b.lo.y; y < b.hi.y; ++y) {
          for (uint64_t x = b.lo.x; x < b.hi.x; ++x) {
            const Read& read =
                reads[index.at(ChunkKey::FromCoord(node->frame().ChunkOf({x, y, z})).code())];
            ASSERT_OK(read.status);
            values.insert(VoxelOf(read.dense, {x, y, z}));
          }
        }
      }
      ASSERT_EQ(values.size(), 1u)
          << "snapshot " << snapshots << " holds part of a write to slot " << s;
      // Some write from the last acknowledged before to the last started
      // after (fewer than 255 apart, so the material names it).
      ASSERT_LT(after[s] - before[s], 255u);
      bool found = false;
      for (uint64_t n = before[s]; n <= after[s]; ++n) found |= material(n) == *values.begin();
      ASSERT_TRUE(found) << "slot " << s << " holds " << int{*values.begin()} << ", acknowledged "
                         << before[s] << ", started " << after[s];
    }
    seen_writes = 0;
    for (size_t s = 0; s < slots.size(); ++s) seen_writes += before[s];
  }
  join_writers.Run();
  EXPECT_EQ(snapshots, kSnapshots);
  EXPECT_GT(seen_writes, slots.size()) << "the writers hardly ran";
}

// Snapshots taken while a split runs read the node as it was; one taken of
// the old layout keeps reading its Databases after the split replaced them.
TEST(NodeSnapshotTest, ASnapshotTakenDuringASplitReadsTheNode) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(data, TestNodeOptions(4)));
  ASSERT_OK_AND_ASSIGN(auto oracle, Database::Open(dir.Sub("oracle"), testing::TestOptions()));
  Rand r(32, 8);  // codes below 8 * 4096
  for (int i = 0; i < 80; ++i) {
    RandomWrite(*node, *oracle, r);
    if (HasFatalFailure()) return;
  }
  ASSERT_OK_AND_ASSIGN(auto osnap, oracle->Snapshot());
  const ChunkBox whole{{0, 0, 0}, {31, 31, 31}};
  const std::vector<uint64_t> oracle_codes = Codes(Scan(*osnap, whole));
  std::atomic<int> splits_done{0}, taken{0};
  std::atomic<bool> quit{false};
  std::thread splitter;
  Finally join_splitter([&] {
    quit = true;
    if (splitter.joinable()) splitter.join();
  });
  splitter = std::thread([&] {
    for (const uint64_t at : {4 * 4096, 2 * 4096, 6 * 4096}) {
      // Snapshots go on meanwhile.
      for (const int t = taken.load(); taken.load() < t + 2 && !quit.load();) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      StatusOr<LayoutChangeReport> rep = node->Split(PartitionHolding(*node, at), at);
      EXPECT_OK(rep.status());
      // The snapshots of the old layout ended within the minute it waits.
      if (rep.ok()) EXPECT_OK(rep->cleanup);
      ++splits_done;
    }
  });
  int across = 0;
  while (splits_done.load() < 3 && !HasFatalFailure()) {
    ASSERT_OK_AND_ASSIGN(auto snap, SnapshotOf(*node, std::nullopt));
    ++taken;
    ASSERT_EQ(Codes(Scan(*snap, whole)), oracle_codes);
    // Taken of a layout that is gone since: its Databases still read.
    if (snap->partition_count() != node->partition_count()) {
      ++across;
      ExpectSameView(*snap, *osnap, r, false, {});
    }
  }
  join_splitter.Run();
  if (HasFatalFailure()) return;
  ASSERT_EQ(node->partition_count(), 4u);
  EXPECT_GE(taken.load(), 6);
  // The last layout, too.
  {
    ASSERT_OK_AND_ASSIGN(auto snap, SnapshotOf(*node, std::nullopt));
    EXPECT_EQ(snap->partition_count(), 4u);
    ExpectSameView(*snap, *osnap, r, false, {});
  }
  // A snapshot held across a split: it goes on reading the old partition.
  ASSERT_OK_AND_ASSIGN(auto held, SnapshotOf(*node, std::nullopt));
  std::thread late_split;
  std::atomic<bool> late_done{false};
  Finally join_late_split([&] {
    held.reset();
    if (late_split.joinable()) late_split.join();
  });
  late_split = std::thread([&] {
    StatusOr<LayoutChangeReport> rep = node->Split(PartitionHolding(*node, 7 * 4096), 7 * 4096);
    EXPECT_OK(rep.status());
    // It waited for the snapshot to end, then removed the old environment.
    if (rep.ok()) EXPECT_OK(rep->cleanup);
    late_done = true;
  });
  while (node->partition_count() != 5 && !late_done.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(node->partition_count(), 5u);
  EXPECT_EQ(held->partition_count(), 4u);
  ExpectSameView(*held, *osnap, r, false, {});
  join_late_split.Run();  // ends the snapshot, which the split's cleanup waits for
  RecordProperty("snapshots_across_a_split", across);
  // Writes and fills after the splits: the children's own fills come after
  // those they inherited, and the fills of the view still rasterise as the
  // oracle's.
  for (int i = 0; i < 60; ++i) {
    RandomWrite(*node, *oracle, r);
    if (HasFatalFailure()) return;
  }
  ASSERT_OK_AND_ASSIGN(auto after, SnapshotOf(*node, std::nullopt));
  ASSERT_OK_AND_ASSIGN(auto oafter, oracle->Snapshot());
  ExpectSameView(*after, *oafter, r, false, {});
}

}  // namespace
}  // namespace voxdb::engine
