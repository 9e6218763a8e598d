// engine/node.h: a node of 1, 8 and 200 partitions against one Database
// holding everything (the oracle), under a random model of voxel edits,
// boxes and fills across partition borders, deletes and whole chunks put;
// reads of every kind must agree, before and after the node reopens.
#include "engine/node.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
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

class NodeModel {
 public:
  NodeModel(uint64_t region_chunks, uint64_t seed) : region_(region_chunks * kEdge), rng_(seed) {}

  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  // A coordinate near a chunk border inside the region (where partitions
  // meet), or anywhere in it.
  uint64_t Coord() {
    if (Rand(3) == 0) return Rand(region_);
    const uint64_t border = (1 + Rand(region_ / kEdge - 1)) * kEdge;
    return border - 24 + Rand(48);
  }
  VoxelCoord Voxel() { return {Coord(), Coord(), Coord()}; }
  VoxelBox Box(uint64_t max_side) {
    VoxelBox b;
    b.lo = Voxel();
    b.hi = {std::min(region_, b.lo.x + 1 + Rand(max_side)),
            std::min(region_, b.lo.y + 1 + Rand(max_side)),
            std::min(region_, b.lo.z + 1 + Rand(max_side))};
    return b;
  }
  ChunkKey Chunk() {
    const uint32_t n = static_cast<uint32_t>(region_ / kEdge);
    return ChunkKey::FromCoord({static_cast<uint32_t>(Rand(n)), static_cast<uint32_t>(Rand(n)),
                                static_cast<uint32_t>(Rand(n))});
  }
  uint8_t Material() { return static_cast<uint8_t>(1 + Rand(6)); }

 private:
  uint64_t region_;
  std::mt19937_64 rng_;
};

// Both answer the same to reads of boxes, voxels and chunks.
// `written`: boxes the model wrote lately, read back first.
void ExpectSameReads(Node& node, Database& oracle, NodeModel& m, const std::string& where,
                     std::vector<VoxelBox> written = {}) {
  for (int i = 0; i < 3; ++i) written.push_back(m.Box(96));
  for (const VoxelBox& box : written) {
    std::vector<uint8_t> a(box.volume()), b(box.volume());
    ASSERT_OK(node.ReadBox(box, a.data()));
    ASSERT_OK(oracle.ReadBox(box, b.data()));
    ASSERT_TRUE(a == b) << where << ": ReadBox " << box.lo.ToString() << "-" << box.hi.ToString();
  }
  std::vector<VoxelCoord> at;
  for (int i = 0; i < 200; ++i) at.push_back(m.Voxel());
  std::vector<uint8_t> a(at.size()), b(at.size());
  ASSERT_OK(node.GetVoxels(at, a.data()));
  ASSERT_OK(oracle.GetVoxels(at, b.data()));
  ASSERT_EQ(a, b) << where << ": GetVoxels";

  std::vector<ChunkKey> keys;
  for (int i = 0; i < 6; ++i) keys.push_back(m.Chunk());
  std::vector<std::vector<uint8_t>> dense_a(keys.size()), dense_b(keys.size());
  std::vector<size_t> order;
  auto decode = [&](std::vector<std::vector<uint8_t>>* out, bool node_side) {
    return [out, node_side, &order](size_t i, const ChunkRead& r) {
      if (node_side) order.push_back(i);
      ASSERT_OK(r.status);
      if (r.record.empty()) return;
      (*out)[i].resize(kEdge * kEdge * kEdge);
      ASSERT_OK(DecodeChunkToDense(r.record, (*out)[i].data()));
    };
  };
  ASSERT_OK(node.GetChunks(keys, decode(&dense_a, true)));
  ASSERT_OK(oracle.GetChunks(keys, decode(&dense_b, false)));
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_EQ(order[i], i) << where << ": GetChunks calls back in key order";
    ASSERT_TRUE(dense_a[i] == dense_b[i]) << where << ": chunk " << keys[i].ToString();
  }
}

struct ModelCase {
  size_t partitions;
  int align_levels;
  uint64_t region_chunks;  // per axis
  int ops;
};

class NodeModelTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(NodeModelTest, AgreesWithOneDatabase) {
  const ModelCase c = GetParam();
  TempDir dir;
  std::mt19937_64 rng(c.partitions * 1000 + 17);
  const uint64_t limit = c.region_chunks * c.region_chunks * c.region_chunks;
  const std::vector<PartitionSpec> specs =
      c.partitions == 1 ? std::vector<PartitionSpec>{{0, MortonRange::All(), dir.Sub("p0")}}
                        : RandomPartitions(dir.path(), c.partitions, c.align_levels, limit, rng);
  ASSERT_EQ(specs.size(), c.partitions);
  const NodeOptions options = TestNodeOptions(c.align_levels);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Node> node, Node::Open(specs, options));
  ASSERT_OK_AND_ASSIGN(auto oracle, Database::Open(dir.Sub("oracle"), testing::TestOptions()));
  NodeModel m(c.region_chunks, c.partitions);

  size_t crossing = 0;
  std::vector<VoxelBox> written;
  for (int op = 0; op < c.ops; ++op) {
    const std::string where = absl::StrFormat("op %d", op);
    SCOPED_TRACE(where);
    switch (m.Rand(10)) {
      case 0:
      case 1:
      case 2: {
        std::vector<VoxelEdit> edits;
        const uint64_t n = 1 + m.Rand(40);
        for (uint64_t i = 0; i < n; ++i) edits.push_back({m.Voxel(), m.Material()});
        const WriteResult a = node->SetVoxelsAndWait(edits);
        ASSERT_OK(a.status);
        ASSERT_OK(oracle->SetVoxelsAndWait(edits).status);
        EXPECT_GT(a.version, 0u);
        break;
      }
      case 3:
      case 4:
      case 5: {
        const VoxelBox box = m.Box(80);
        std::vector<uint8_t> v(box.volume());
        for (uint8_t& x : v) x = static_cast<uint8_t>(m.Rand(4) == 0 ? m.Material() : 0);
        if (node->layout()->ranges.Meeting(ChunksCovering(node->frame(), box)).size() > 1)
          ++crossing;
        ASSERT_OK(node->WriteBoxAndWait(box, v).status);
        ASSERT_OK(oracle->WriteBoxAndWait(box, v).status);
        written.push_back(box);
        break;
      }
      case 6:
      case 7: {
        const VoxelBox box = m.Box(300);
        const uint8_t mat = m.Material();
        ASSERT_OK(node->FillBoxAndWait(box, mat).status);
        ASSERT_OK(oracle->FillBoxAndWait(box, mat).status);
        written.push_back(box);
        break;
      }
      case 8: {
        const ChunkKey k = m.Chunk();
        ASSERT_OK(node->DeleteChunkAndWait(k).status);
        ASSERT_OK(oracle->DeleteChunkAndWait(k).status);
        break;
      }
      case 9: {
        // A whole chunk, copied from another one (when that one is stored).
        const ChunkKey from = m.Chunk(), to = m.Chunk();
        std::vector<uint8_t> rec;
        ASSERT_OK(
            oracle->GetChunks(std::span<const ChunkKey>(&from, 1), [&](size_t, const ChunkRead& r) {
              if (r.status.ok() && r.source != ChunkRead::Source::kFills)
                rec.assign(r.record.begin(), r.record.end());
            }));
        if (rec.empty()) break;
        ASSERT_OK(node->PutChunkAndWait(to, rec, std::nullopt).status);
        ASSERT_OK(oracle->PutChunkAndWait(to, rec, std::nullopt).status);
        break;
      }
    }
    if (op % 10 == 9) {
      ExpectSameReads(*node, *oracle, m, where, std::move(written));
      written.clear();
    }
    if (HasFatalFailure()) return;
  }
  if (c.partitions > 1) {
    EXPECT_GT(crossing, 0u) << "no box crossed a partition border";
  }

  // Everything is durable in each partition: the reopened node agrees too.
  node.reset();
  ASSERT_OK_AND_ASSIGN(node, Node::Open(specs, options));
  for (int i = 0; i < 5; ++i) ExpectSameReads(*node, *oracle, m, "after reopening");
}

INSTANTIATE_TEST_SUITE_P(Partitions, NodeModelTest,
                         ::testing::Values(ModelCase{1, 4, 8, 120}, ModelCase{8, 4, 32, 160},
                                           ModelCase{200, 0, 8, 160}),
                         [](const ::testing::TestParamInfo<ModelCase>& p) {
                           return absl::StrFormat("P%u", p.param.partitions);
                         });

// Splits and moves while a writer goes on: every write lands once, in the
// partition that serves its chunk at the time, and the node keeps agreeing
// with one Database that saw the same writes in the same order.
TEST(NodeLayoutTest, SplitsAndMovesOnlineAgreeWithOneDatabase) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  NodeOptions options = TestNodeOptions(4);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Node> node, Node::Open(data, options));
  ASSERT_EQ(node->partition_count(), 1u);
  ASSERT_OK_AND_ASSIGN(auto oracle, Database::Open(dir.Sub("oracle"), testing::TestOptions()));
  NodeModel m(32, 99);  // codes below 8 * 4096: eight aligned units

  // The writer edits 64 chunks spread over the eight units, so that each
  // can be compared whole at the end.
  std::mt19937_64 rng(5);
  std::vector<ChunkKey> hot;
  for (int i = 0; i < 64; ++i) {
    hot.push_back(
        ChunkKey::FromCoord({static_cast<uint32_t>(rng() % 32), static_cast<uint32_t>(rng() % 32),
                             static_cast<uint32_t>(rng() % 32)}));
  }
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0};
  std::thread writer([&] {
    NodeModel w(32, 7);
    while (!stop.load()) {
      const ChunkCoord c = hot[w.Rand(hot.size())].coord();
      const VoxelCoord o{c.x * kEdge, c.y * kEdge, c.z * kEdge};
      if (w.Rand(4) == 0) {
        const VoxelBox box{
            {o.x + w.Rand(100), o.y + w.Rand(100), o.z + w.Rand(100)},
            {o.x + 100 + w.Rand(60), o.y + 100 + w.Rand(60), o.z + 100 + w.Rand(60)}};
        std::vector<uint8_t> v(box.volume(), w.Material());
        ASSERT_OK(node->WriteBoxAndWait(box, v).status);
        ASSERT_OK(oracle->WriteBoxAndWait(box, v).status);
      } else {
        std::vector<VoxelEdit> edits;
        for (int i = 0; i < 20; ++i) {
          edits.push_back(
              {{o.x + w.Rand(kEdge), o.y + w.Rand(kEdge), o.z + w.Rand(kEdge)}, w.Material()});
        }
        ASSERT_OK(node->SetVoxelsAndWait(edits).status);
        ASSERT_OK(oracle->SetVoxelsAndWait(edits).status);
      }
      ++writes;
    }
  });
  auto expect_same_chunks = [&](const std::string& where) {
    std::vector<std::vector<uint8_t>> a(hot.size()), b(hot.size());
    auto decode = [](std::vector<std::vector<uint8_t>>* out) {
      return [out](size_t i, const ChunkRead& r) {
        ASSERT_OK(r.status);
        (*out)[i].resize(kEdge * kEdge * kEdge);
        ASSERT_OK(DecodeChunkToDense(r.record, (*out)[i].data()));
      };
    };
    ASSERT_OK(node->GetChunks(hot, decode(&a)));
    ASSERT_OK(oracle->GetChunks(hot, decode(&b)));
    for (size_t i = 0; i < hot.size(); ++i) {
      ASSERT_TRUE(a[i] == b[i]) << where << ": chunk " << hot[i].ToString();
    }
  };
  // Split the whole space down to four units of 4096 codes (and the rest),
  // then move two partitions to another directory.
  const uint64_t unit = 4096;
  std::vector<std::pair<uint64_t, uint64_t>> splits;  // (id to split, at)
  uint64_t next_id = 1;
  int during = 0;  // writes acknowledged while a split ran
  auto split = [&](uint64_t id, uint64_t at) -> uint64_t {
    while (writes.load() < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const int before = writes.load();
    StatusOr<LayoutChangeReport> r = node->Split(id, at);
    during += writes.load() - before;
    EXPECT_OK(r.status());
    if (!r.ok()) return 0;
    EXPECT_OK(r->cleanup);
    EXPECT_EQ(r->new_ids, (std::vector<uint64_t>{next_id, next_id + 1}));
    next_id += 2;
    return r->new_ids[1];
  };
  uint64_t right = split(0, 4 * unit);  // [0, 4u) = 1, [4u, end) = 2
  right = split(right, 8 * unit);       // [4u, 8u) = 3, [8u, end) = 4
  split(1, 2 * unit);                   // [0, 2u) = 5, [2u, 4u) = 6
  split(3, 5 * unit);                   // [4u, 5u) = 7, [5u, 8u) = 8
  ASSERT_EQ(node->partition_count(), 5u);
  EXPECT_GT(during, 0) << "no write went on during the splits";
  ASSERT_OK_AND_ASSIGN(LayoutChangeReport moved, node->Move(5, dir.Sub("disk2/p5")));
  EXPECT_OK(moved.cleanup);
  EXPECT_GT(moved.chunks, 0u);
  ASSERT_OK(node->Move(8, dir.Sub("disk2/p8")).status());
  // Moved again: the environment it leaves outside DATA goes too.
  ASSERT_OK(node->Move(5, dir.Sub("disk2/p5b")).status());
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("disk2/p5")));
  while (writes.load() < 50) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  writer.join();
  if (HasFatalFailure()) return;

  expect_same_chunks("after the changes");
  for (int i = 0; i < 10; ++i) ExpectSameReads(*node, *oracle, m, "after the changes");
  // Only the partitions listed remain on disk.
  std::set<std::string> dirs;
  for (const auto& e : std::filesystem::directory_iterator(data + "/partitions")) {
    dirs.insert(e.path().filename().string());
  }
  EXPECT_EQ(dirs, (std::set<std::string>{"4", "6", "7"}));
  EXPECT_FALSE(std::filesystem::exists(data + "/data.mdb")) << "the root was split away";

  node.reset();
  ASSERT_OK_AND_ASSIGN(node, Node::Open(data, options));
  EXPECT_EQ(node->partition_count(), 5u);
  expect_same_chunks("after reopening");
  for (int i = 0; i < 10; ++i) ExpectSameReads(*node, *oracle, m, "after reopening");
}

// A chunk's version keeps growing across a split: the children number
// their writes after every version they inherited.
TEST(NodeLayoutTest, VersionsKeepGrowingAcrossASplit) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(dir.path(), TestNodeOptions(4)));
  const VoxelCoord v{10, 10, 10};
  for (int i = 0; i < 20; ++i) ASSERT_OK(node->SetVoxelsAndWait({{{v, 3}}}).status);
  ASSERT_OK(node->layout()->parts[0].db->AdoptEpoch(5));
  const WriteResult last = node->SetVoxelsAndWait({{{v, 4}}});
  ASSERT_OK(last.status);
  ASSERT_OK(node->Split(0, 4096).status());
  // The children know what they are, and keep the parent's epochs.
  for (const Node::Part& p : node->layout()->parts) {
    EXPECT_EQ(p.db->partition().id, p.spec.id);
    EXPECT_EQ(p.db->partition().range, p.spec.range);
    EXPECT_EQ(p.db->partition().parent, 0u);
    EXPECT_EQ(p.db->epoch(), 5u);
  }
  EXPECT_EQ(node->layout()->parts[1].db->partition().range,
            (MortonRange{4096, MortonRange::All().end}));
  const WriteResult after = node->SetVoxelsAndWait({{{v, 5}}});
  ASSERT_OK(after.status);
  EXPECT_GT(after.version, last.version);
  const ChunkKey key = ChunkKey::FromCoord({0, 0, 0});
  ASSERT_OK(node->GetChunks(std::span<const ChunkKey>(&key, 1), [&](size_t, const ChunkRead& r) {
    EXPECT_EQ(r.version, after.version);
  }));
}

// A backup of a split node is a node: it opens with the same layout and
// contents. Its refusals touch nothing.
TEST(NodeLayoutTest, ABackupOfASplitNodeIsANode) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(data, TestNodeOptions(4)));
  const VoxelCoord a{1, 1, 1}, b{16 * 128 + 1, 1, 1};  // chunk codes 0 and 4096
  ASSERT_OK(node->SetVoxelsAndWait({{{a, 3}, {b, 4}}}).status);
  uint64_t bytes = 0;
  // Never split: a single database, as before partitions.
  ASSERT_OK(node->Backup(dir.Sub("one"), &bytes));
  EXPECT_TRUE(std::filesystem::exists(dir.Sub("one/data.mdb")));
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("one/node.manifest")));
  ASSERT_OK(node->Split(0, 4096).status());
  ASSERT_OK(node->SetVoxelsAndWait({{{b, 5}}}).status);
  // An existing DEST.partial is not the backup's: refused and kept.
  std::filesystem::create_directories(dir.Sub("busy.partial"));
  { std::ofstream(dir.Sub("busy.partial/keep")) << "not voxdb's"; }
  EXPECT_TRUE(absl::IsInvalidArgument(node->Backup(dir.Sub("busy"), &bytes)));
  EXPECT_TRUE(std::filesystem::exists(dir.Sub("busy.partial/keep")));
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("busy")));
  EXPECT_TRUE(absl::IsInvalidArgument(node->Backup("relative", &bytes)));
  EXPECT_TRUE(absl::IsInvalidArgument(node->Backup(dir.Sub("one"), &bytes)));

  ASSERT_OK(node->Backup(dir.Sub("two"), &bytes));
  EXPECT_GT(bytes, 0u);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("two.partial")));
  node.reset();
  ASSERT_OK_AND_ASSIGN(auto copy, Node::Open(dir.Sub("two"), TestNodeOptions(4)));
  ASSERT_EQ(copy->partition_count(), 2u);
  EXPECT_EQ(copy->layout()->parts[1].spec.range.begin, 4096u);
  uint8_t got[2] = {0, 0};
  const VoxelCoord at[2] = {a, b};
  ASSERT_OK(copy->GetVoxels(at, got));
  EXPECT_EQ(got[0], 3);
  EXPECT_EQ(got[1], 5);
  ASSERT_OK_AND_ASSIGN(auto one, Node::Open(dir.Sub("one"), TestNodeOptions(4)));
  ASSERT_OK(one->GetVoxels(at, got));
  EXPECT_EQ(got[1], 4);
}

// A split at a code that is not aligned, outside the range, or of a
// partition that does not exist changes nothing.
TEST(NodeLayoutTest, ABadSplitOrMoveChangesNothing) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(dir.path(), TestNodeOptions(4)));
  ASSERT_OK(node->SetVoxelsAndWait({{{{1, 1, 1}, 9}}}).status);
  EXPECT_TRUE(absl::IsInvalidArgument(node->Split(0, 4096 + 8).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(node->Split(0, 0).status()));
  EXPECT_FALSE(node->Split(7, 4096).ok());
  EXPECT_FALSE(node->Move(0, "relative/dir").ok());
  std::filesystem::create_directories(dir.Sub("full"));
  { std::ofstream(dir.Sub("full/x")) << "x"; }
  EXPECT_TRUE(absl::IsInvalidArgument(node->Move(0, dir.Sub("full")).status()));
  // A directory in the way of a split's new partition is not the node's:
  // refused, and left as it was.
  std::filesystem::create_directories(dir.Sub("partitions/1"));
  { std::ofstream(dir.Sub("partitions/1/keep")) << "not voxdb's"; }
  EXPECT_TRUE(absl::IsInvalidArgument(node->Split(0, 4096).status()));
  EXPECT_TRUE(std::filesystem::exists(dir.Sub("partitions/1/keep")));
  std::filesystem::remove_all(dir.Sub("partitions"));
  EXPECT_EQ(node->partition_count(), 1u);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("node.manifest")));
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("partitions")) &&
               !std::filesystem::is_empty(dir.Sub("partitions")));
  uint8_t got = 0;
  const VoxelCoord at{1, 1, 1};
  ASSERT_OK(node->GetVoxels(std::span<const VoxelCoord>(&at, 1), &got));
  EXPECT_EQ(got, 9);
}

// One process per data directory, even with DATA/LOCK deleted: a second
// open is refused (BUSY) before it removes anything, so it never deletes
// what the first is building.
TEST(NodeLayoutTest, ASecondOpenIsRefusedBeforeItRemovesAnything) {
  TempDir dir;
  for (bool split : {false, true}) {
    const std::string data = dir.Sub(split ? "split" : "root");
    ASSERT_OK_AND_ASSIGN(auto node, Node::Open(data, TestNodeOptions(4)));
    if (split) ASSERT_OK(node->Split(0, 4096).status());
    // What a split in progress looks like: a directory the manifest does
    // not name yet.
    std::filesystem::create_directories(data + "/partitions/99");
    { std::ofstream(data + "/partitions/99/data.mdb") << "being built"; }
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (attempt == 1) std::filesystem::remove(data + "/LOCK");
      auto second = Node::Open(data, TestNodeOptions(4));
      EXPECT_TRUE(IsBusy(second.status())) << second.status();
      EXPECT_TRUE(std::filesystem::exists(data + "/partitions/99/data.mdb"));
    }
    ASSERT_OK(node->SetVoxelsAndWait({{{{1, 1, 1}, 9}}}).status);
  }
}

TEST(NodeTest, RangesMustTileTheKeySpace) {
  TempDir dir;
  const NodeOptions o = TestNodeOptions(4);
  // A gap.
  EXPECT_TRUE(absl::IsInvalidArgument(
      Node::Open({{0, {0, 4096}, dir.Sub("a")}, {1, {8192, MortonRange::All().end}, dir.Sub("b")}},
                 o)
          .status()));
  // Not aligned to 8^4.
  EXPECT_TRUE(absl::IsInvalidArgument(
      Node::Open({{0, {0, 512}, dir.Sub("a")}, {1, {512, MortonRange::All().end}, dir.Sub("b")}}, o)
          .status()));
  // Two ids alike.
  EXPECT_TRUE(absl::IsInvalidArgument(
      Node::Open({{3, {0, 4096}, dir.Sub("a")}, {3, {4096, MortonRange::All().end}, dir.Sub("b")}},
                 o)
          .status()));
}

// Each partition's map may grow to its share of the node's address-space
// budget, never below the initial map, and never past max-map-size; a
// split lowers the shares of the partitions kept.
TEST(NodeTest, EachPartitionsMapIsCappedToItsShareOfTheBudget) {
  NodeOptions o = TestNodeOptions(4);
  o.database.store.initial_map_size = size_t{1} << 20;
  o.database.store.max_map_size = size_t{64} << 20;
  o.map_budget_bytes = uint64_t{128} << 20;
  EXPECT_EQ(MaxMapSizePerPartition(o, 1), size_t{64} << 20);  // max-map-size is below
  EXPECT_EQ(MaxMapSizePerPartition(o, 4), size_t{32} << 20);
  EXPECT_EQ(MaxMapSizePerPartition(o, 1000), size_t{1} << 20);  // the initial map at least
  EXPECT_EQ(MaxMapSizePerPartition(o, 4, size_t{16} << 20), size_t{16} << 20);
  // The default budget leaves the default 1 TiB alone up to 64 partitions.
  NodeOptions d;
  EXPECT_EQ(MaxMapSizePerPartition(d, 1), size_t{1} << 40);
  EXPECT_EQ(MaxMapSizePerPartition(d, 64), size_t{1} << 40);
  EXPECT_EQ(MaxMapSizePerPartition(d, 256), size_t{256} << 30);

  TempDir dir;
  const uint64_t end = MortonRange::All().end;
  {
    ASSERT_OK_AND_ASSIGN(auto node, Node::Open({{0, {0, 4096}, dir.Sub("a")},
                                                {1, {4096, 8192}, dir.Sub("b")},
                                                {2, {8192, 12288}, dir.Sub("c")},
                                                {3, {12288, end}, dir.Sub("d")}},
                                               o));
    for (const Node::Part& p : node->layout()->parts) {
      EXPECT_EQ(p.db->store().max_map_size(), size_t{32} << 20) << p.spec.id;
      ASSERT_OK_AND_ASSIGN(StoreStats st, p.db->store().Stats());
      EXPECT_EQ(st.max_map_size, uint64_t{32} << 20);
    }
    EXPECT_EQ(node->MaxMapSizePerPartition(size_t{1} << 40), size_t{32} << 20);
    EXPECT_EQ(node->MaxMapSizePerPartition(size_t{8} << 20), size_t{8} << 20);
  }
  // A node in a data directory: one partition keeps max-map-size; split in
  // two, each gets half the budget, the partition kept included.
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open(dir.Sub("node"), o));
  EXPECT_EQ(node->layout()->parts[0].db->store().max_map_size(), size_t{64} << 20);
  ASSERT_OK_AND_ASSIGN(LayoutChangeReport r, node->Split(0, end / 8 / 4096 * 4096));
  ASSERT_OK(node->Split(r.new_ids[0], 4096).status());
  ASSERT_EQ(node->partition_count(), 3u);
  for (const Node::Part& p : node->layout()->parts) {
    EXPECT_EQ(p.db->store().max_map_size(), (size_t{128} << 20) / 3) << p.spec.id;
  }
}

// A request checked whole before any part is applied: an edit outside the
// world, a box over the limit or of the wrong size change nothing anywhere.
TEST(NodeTest, AMalformedWriteAcrossPartitionsChangesNothing) {
  TempDir dir;
  NodeOptions o = TestNodeOptions(4);
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open({{0, {0, 4096}, dir.Sub("a")},
                                              {1, {4096, MortonRange::All().end}, dir.Sub("b")}},
                                             o));
  // Voxel 2048 on x is chunk 16: code 4096, the second partition.
  const VoxelCoord a{2047, 0, 0}, b{2048, 0, 0};
  ASSERT_EQ(node->layout()->ranges.Find(MortonEncode(15, 0, 0)), 0u);
  ASSERT_EQ(node->layout()->ranges.Find(MortonEncode(16, 0, 0)), 1u);
  const std::vector<VoxelEdit> bad{{a, 5}, {b, 5}, {{node->frame().extent_x(), 0, 0}, 5}};
  EXPECT_TRUE(IsOutOfBounds(node->SetVoxelsAndWait(bad).status));
  const VoxelBox box{{2040, 0, 0}, {2056, 4, 4}};
  std::vector<uint8_t> v(box.volume() - 1, 7);
  EXPECT_TRUE(absl::IsInvalidArgument(node->WriteBoxAndWait(box, v).status));
  std::vector<uint8_t> out(box.volume(), 0xff);
  ASSERT_OK(node->ReadBox(box, out.data()));
  EXPECT_EQ(std::count(out.begin(), out.end(), 0), static_cast<long>(out.size()));
  EXPECT_EQ(node->layout()->parts[0].db->Stats().last_seq, 0u);
  EXPECT_EQ(node->layout()->parts[1].db->Stats().last_seq, 0u);

  // A good one lands in both, each numbering its own part.
  v.push_back(7);
  const WriteResult r = node->WriteBoxAndWait(box, v);
  ASSERT_OK(r.status);
  EXPECT_EQ(node->layout()->parts[0].db->Stats().last_seq, 1u);
  EXPECT_EQ(node->layout()->parts[1].db->Stats().last_seq, 1u);
  EXPECT_EQ(r.version, 1u);
  ASSERT_OK(node->ReadBox(box, out.data()));
  EXPECT_EQ(out, v);
}

// Two fills that overlap across a border end the same way on both sides:
// the later one wins in every partition.
TEST(NodeTest, FillsEnterEveryPartitionInOneOrder) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto node, Node::Open({{0, {0, 4096}, dir.Sub("a")},
                                              {1, {4096, MortonRange::All().end}, dir.Sub("b")}},
                                             TestNodeOptions(4)));
  const VoxelBox box{{1900, 0, 0}, {2200, 100, 100}};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        node->FillBox(box, static_cast<uint8_t>(1 + t),
                      [](const WriteResult& r) { EXPECT_OK(r.status); });
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_OK(node->Flush());
  // Each fill is one piece in each partition: their materials come in the
  // same order on both sides.
  std::vector<uint8_t> order[2];
  for (size_t p = 0; p < 2; ++p) {
    for (const Fill& f : node->layout()->parts[p].db->Fills()->fills())
      order[p].push_back(f.material);
  }
  EXPECT_EQ(order[0].size(), 2400u);
  EXPECT_EQ(order[0], order[1]) << "the two partitions applied the fills in different orders";
}

}  // namespace
}  // namespace voxdb::engine
