// Streaming sessions through voxdbd (STREAM_UPDATE / STREAM_CLOSE and
// pushed STREAM_DATA), against the real voxdbd binary: a scripted viewer
// walks and flies through a generated world; what it is sent is checked
// against the rules of PROTOCOL.md, "Streaming", computed here on their own.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/morton.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/stats.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using protocol::Client;
using protocol::StreamItem;
using testing::DaemonProcess;
using testing::kEdge;
using testing::TempDir;

constexpr double kVoxelM = 0.25;
// The world: chunks [kCx, kCx + kSide) x [kCy, kCy + kSide) x [kCz, kCz + 2),
// one voxel set in each. kCx, kCy, kCz are multiples of 8: LOD nodes align.
constexpr uint32_t kCx = 1'000'000, kCy = 400'000, kCz = 312'496, kSide = 24;

struct Node {
  uint8_t level;
  uint64_t code;
  friend auto operator<=>(const Node&, const Node&) = default;
};

// Distance in metres from a position (voxels) to the nearest point of a
// node's box.
double Distance(double x, double y, double z, const Node& n) {
  const engine::ChunkCoord c = engine::MortonDecode(n.code);
  const double edge = static_cast<double>(kEdge << n.level);
  auto axis = [&](double p, uint32_t k) {
    return std::max({0.0, k * edge - p, p - (k + 1) * edge});
  };
  return std::hypot(axis(x, c.x), axis(y, c.y), axis(z, c.z)) * kVoxelM;
}

// Whether any written chunk lies under the node.
bool Exists(const Node& n) {
  const engine::ChunkCoord c = engine::MortonDecode(n.code);
  auto meets = [&](uint64_t lo_node, uint64_t lo, uint64_t count) {
    const uint64_t a = lo_node << n.level, b = (lo_node + 1) << n.level;
    return a < lo + count && lo < b;
  };
  return meets(c.x, kCx, kSide) && meets(c.y, kCy, kSide) && meets(c.z, kCz, 2);
}

// The nodes a viewer at (x, y, z) needs, by the rules: from the top level
// down, a level-l node (l >= 1) closer than lod_m 2^(l-1) is split into its
// children; a node not split is wanted within the view distance, if any
// written chunk lies under it.
void Visit(double x, double y, double z, double view_m, double lod_m, const Node& n,
           std::set<Node>* out) {
  const double d = Distance(x, y, z, n);
  if (n.level > 0 && d < lod_m * std::ldexp(1.0, n.level - 1)) {
    const engine::ChunkCoord c = engine::MortonDecode(n.code);
    for (uint32_t k = 0; k < 8; ++k) {
      Visit(x, y, z, view_m, lod_m,
            {static_cast<uint8_t>(n.level - 1),
             engine::MortonEncode(2 * c.x + (k & 1), 2 * c.y + (k >> 1 & 1), 2 * c.z + (k >> 2))},
            out);
    }
    return;
  }
  if (d <= view_m && Exists(n)) out->insert(n);
}
std::set<Node> Expected(double x, double y, double z, double view_m, double lod_m, int levels) {
  std::set<Node> out;
  // Every top-level node over the world (and more around it).
  for (uint32_t cz = (kCz >> levels) - 1; cz <= ((kCz + 2) >> levels) + 1; ++cz) {
    for (uint32_t cy = (kCy >> levels) - 1; cy <= ((kCy + kSide) >> levels) + 1; ++cy) {
      for (uint32_t cx = (kCx >> levels) - 1; cx <= ((kCx + kSide) >> levels) + 1; ++cx) {
        Visit(x, y, z, view_m, lod_m,
              {static_cast<uint8_t>(levels), engine::MortonEncode(cx, cy, cz)}, &out);
      }
    }
  }
  return out;
}

class DaemonStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"),
                                              std::vector<std::string>{"--lod-levels", "3"});
    writer_ = Connect();
  }
  std::unique_ptr<Client> Connect() {
    return testing::ConnectWithHello(daemon_->port(), "", std::chrono::seconds(30));
  }
  uint64_t Stat(const std::string& name) { return testing::Stat(*writer_, name); }
  // One voxel in every chunk of the world; returns each chunk's version.
  std::map<uint64_t, uint64_t> WriteWorld() {
    std::map<uint64_t, uint64_t> versions;
    for (uint32_t cz = kCz; cz < kCz + 2; ++cz) {
      protocol::SetVoxelsRequest req;
      for (uint32_t cy = kCy; cy < kCy + kSide; ++cy) {
        for (uint32_t cx = kCx; cx < kCx + kSide; ++cx) {
          req.edits.push_back({{cx * kEdge + 5, cy * kEdge + 6, cz * kEdge + 7}, 3});
        }
      }
      auto v = writer_->SetVoxels(req);
      EXPECT_OK(v.status());
      for (uint32_t cy = kCy; cy < kCy + kSide; ++cy) {
        for (uint32_t cx = kCx; cx < kCx + kSide; ++cx) {
          versions[engine::MortonEncode(cx, cy, cz)] = v.value_or(0);
        }
      }
    }
    EXPECT_OK(writer_->Flush());
    EXPECT_OK(writer_->LodSync());
    EXPECT_EQ(Stat("lod_dirty"), 0u);
    return versions;
  }
  // Every item pushed until nothing came for `quiet` (scaled: a slow build
  // pauses longer between frames).
  static std::vector<StreamItem> Drain(Client& c, std::chrono::milliseconds quiet) {
    std::vector<StreamItem> items;
    for (;;) {
      auto frame = c.ReceivePush(testing::Scaled(quiet));
      if (absl::IsDeadlineExceeded(frame.status())) return items;
      EXPECT_OK(frame.status());
      if (!frame.ok()) return items;
      EXPECT_EQ(frame->header.opcode, static_cast<uint8_t>(protocol::Opcode::kStreamData));
      auto push = protocol::StreamDataPush::Decode(frame->payload);
      EXPECT_OK(push.status());
      if (!push.ok()) return items;
      for (auto& i : push->items) items.push_back(std::move(i));
    }
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<Client> writer_;
};

TEST_F(DaemonStreamTest, AViewerGetsEveryNodeInRangeAtItsLevelNearestFirstAndUnloadsBehindIt) {
  const std::map<uint64_t, uint64_t> versions = WriteWorld();
  auto shard = Connect();
  constexpr double kView = 160, kLod = 24;  // metres: levels 0..3
  protocol::Viewer v{1,    (kCx + 4.5) * kEdge, (kCy + 6.5) * kEdge, (kCz + 1.0) * kEdge, 0, 0, 0,
                     kView};
  protocol::StreamUpdateRequest update;
  update.lod_distance_m = kLod;
  update.viewers = {v};
  ASSERT_OK(shard->StreamUpdate(update));
  std::vector<StreamItem> items = Drain(*shard, std::chrono::milliseconds(500));

  const std::set<Node> want = Expected(v.x, v.y, v.z, kView, kLod, 3);
  std::set<Node> got;
  std::map<Node, uint64_t> have;  // what the shard holds
  double last = 0;
  for (const StreamItem& i : items) {
    ASSERT_EQ(i.kind, StreamItem::Kind::kChunk);
    const Node n{i.level, i.code};
    EXPECT_TRUE(got.insert(n).second) << "sent twice: level " << int{i.level} << " " << i.code;
    have[n] = i.version;
    const double d = Distance(v.x, v.y, v.z, n);
    EXPECT_GE(d, last - 1e-9) << "not nearest first";  // the viewer is still: by distance
    last = d;
    if (i.level == 0) {
      EXPECT_EQ(i.version, versions.at(i.code));
    } else {
      EXPECT_GT(i.version, 0u);  // a built LOD node
    }
    EXPECT_FALSE(i.record.empty());
  }
  EXPECT_EQ(got, want);
  ASSERT_GT(want.size(), 20u);
  std::set<int> levels;
  for (const Node& n : want) levels.insert(n.level);
  EXPECT_EQ(levels, (std::set<int>{0, 1, 2, 3}));

  // Walking: a small step sends only what is new in range, nothing twice.
  const protocol::Viewer walked{1, v.x + 40, v.y, v.z, 0, 0, 0, kView};
  update.viewers = {walked};
  ASSERT_OK(shard->StreamUpdate(update));
  for (const StreamItem& i : Drain(*shard, std::chrono::milliseconds(500))) {
    const Node n{i.level, i.code};
    if (i.kind == StreamItem::Kind::kUnload) {
      EXPECT_GT(Distance(walked.x, walked.y, walked.z, n), 1.5 * kView);
      EXPECT_EQ(have.erase(n), 1u);
      continue;
    }
    EXPECT_EQ(have.count(n), 0u) << "sent again at the same version";
    have[n] = i.version;
  }
  for (const Node& n : Expected(walked.x, walked.y, walked.z, kView, kLod, 3)) {
    EXPECT_EQ(have.count(n), 1u);
  }

  // Flying fast along x: what lies ahead comes before what lies behind.
  // 50 m/s: it will be 100 m ahead in the look-ahead time.
  const protocol::Viewer flying{1, (kCx + 12.5) * kEdge, v.y, v.z, 200, 0, 0, kView};
  update.viewers = {flying};
  ASSERT_OK(shard->StreamUpdate(update));
  items = Drain(*shard, std::chrono::milliseconds(500));
  double ahead_first = -1, behind_first = -1;
  for (size_t k = 0; k < items.size(); ++k) {
    const StreamItem& i = items[k];
    const Node n{i.level, i.code};
    if (i.kind == StreamItem::Kind::kUnload) {
      // Everything beyond 1.5x the view distance goes.
      EXPECT_GT(Distance(flying.x, flying.y, flying.z, n), 1.5 * kView);
      EXPECT_EQ(have.erase(n), 1u);
      continue;
    }
    EXPECT_EQ(have.count(n), 0u);
    have[n] = i.version;
    const double cx =
        (engine::MortonDecode(i.code).x + 0.5) * static_cast<double>(kEdge << i.level);
    if (cx > flying.x + kEdge && ahead_first < 0) ahead_first = static_cast<double>(k);
    if (cx < flying.x - kEdge && behind_first < 0) behind_first = static_cast<double>(k);
  }
  ASSERT_GE(ahead_first, 0);
  ASSERT_GE(behind_first, 0);
  EXPECT_LT(ahead_first, behind_first);
  for (const auto& [n, version] : have) {
    EXPECT_LE(Distance(flying.x, flying.y, flying.z, n), 1.5 * kView) << "no unload hint";
  }
  for (const Node& n : Expected(flying.x, flying.y, flying.z, kView, kLod, 3)) {
    EXPECT_EQ(have.count(n), 1u);
  }

  // A change in range is pushed at its new version.
  const uint64_t code = engine::MortonEncode(kCx + 12, kCy + 6, kCz + 1);
  ASSERT_TRUE(have.count({0, code}));
  ASSERT_OK_AND_ASSIGN(
      uint64_t v2,
      writer_->SetVoxels({{{{(kCx + 12) * kEdge, (kCy + 6) * kEdge, (kCz + 1) * kEdge}, 9}}}));
  items = Drain(*shard, std::chrono::milliseconds(500));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].code, code);
  EXPECT_EQ(items[0].level, 0);
  EXPECT_EQ(items[0].version, v2);

  EXPECT_EQ(Stat("streams_open"), 1u);
  ASSERT_OK(shard->StreamClose());
  EXPECT_EQ(Stat("streams_open"), 0u);
  ASSERT_OK(
      writer_->SetVoxels({{{{(kCx + 12) * kEdge + 1, (kCy + 6) * kEdge, (kCz + 1) * kEdge}, 9}}})
          .status());
  EXPECT_TRUE(Drain(*shard, std::chrono::milliseconds(300)).empty());
  EXPECT_EQ(protocol::ServerStatusOf(shard->StreamClose()), protocol::WireStatus::kNotFound);
}

TEST_F(DaemonStreamTest, TheBudgetIsHonouredAndAStalledShardSlowsOnlyItsOwnStream) {
  // Chunks of noise: about 128 KiB a record.
  std::vector<uint8_t> noise(kEdge * kEdge * 8);
  uint32_t x = 7;
  for (uint32_t cy = kCy; cy < kCy + 4; ++cy) {
    for (uint32_t cx = kCx; cx < kCx + 8; ++cx) {
      for (auto& b : noise) {
        x = x * 1664525u + 1013904223u;
        b = static_cast<uint8_t>(x >> 24);
      }
      const protocol::Box box{{cx * kEdge, cy * kEdge, kCz * kEdge},
                              {(cx + 1) * kEdge, (cy + 1) * kEdge, kCz * kEdge + 8}};
      ASSERT_OK(writer_->WriteBox(box, noise).status());
    }
  }
  protocol::StreamUpdateRequest update;
  update.viewers = {{1, (kCx + 4.0) * kEdge, (kCy + 2.0) * kEdge, kCz * kEdge * 1.0, 0, 0, 0, 200}};
  // Budgeted: ~32 chunks x 128 KiB = 4 MiB at 1 MiB/s.
  constexpr uint64_t kBudget = 1 << 20;
  update.budget_bytes_per_s = kBudget;
  auto shard = Connect();
  // A second shard that never reads, with the smallest window.
  auto stalled = Connect();
  protocol::StreamUpdateRequest stalled_update = update;
  stalled_update.budget_bytes_per_s = 0;
  stalled_update.window_bytes = 64 << 10;
  ASSERT_OK(stalled->StreamUpdate(stalled_update));

  const auto start = std::chrono::steady_clock::now();
  ASSERT_OK(shard->StreamUpdate(update));
  uint64_t bytes = 0;
  double seconds = 0;
  while (seconds < 2.5) {
    auto frame = shard->ReceivePush(testing::Scaled(std::chrono::seconds(5)));
    ASSERT_OK(frame.status());
    bytes += protocol::kHeaderSize + frame->payload.size();
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  const double rate = static_cast<double>(bytes) / seconds;
  // The bucket's burst is a frame (256 KiB) or 1/20 s of budget.
  EXPECT_LE(rate, kBudget * 1.05 + (256 << 10) / seconds) << rate;
  EXPECT_GE(rate, kBudget * 0.9) << rate;
  // The stalled shard held the server to its window, not its 4 MiB.
  EXPECT_LT(Stat("unsent_bytes"), uint64_t{1} << 20);
  // Unbudgeted, the rest comes at once.
  update.budget_bytes_per_s = 0;
  ASSERT_OK(shard->StreamUpdate(update));
  const auto rest = Drain(*shard, std::chrono::milliseconds(500));
  EXPECT_FALSE(rest.empty());
  EXPECT_GE(Stat("stream_chunks"), 32u);
}

// Changes dropped from the change window before the stream saw them make it
// read every node again: still nothing the shard has is sent twice.
TEST_F(DaemonStreamTest, AfterMissedChangesNothingIsSentTwice) {
  daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("gap"),
                                            std::vector<std::string>{"--change-window", "2"});
  writer_ = Connect();
  protocol::SetVoxelsRequest world;
  for (uint32_t cx = kCx; cx < kCx + 4; ++cx) {
    world.edits.push_back({{cx * kEdge, kCy * kEdge, kCz * kEdge}, 3});
  }
  ASSERT_OK(writer_->SetVoxels(world).status());
  auto shard = Connect();
  protocol::StreamUpdateRequest update;
  update.viewers = {{1, (kCx + 2.0) * kEdge, kCy * kEdge + 64.0, kCz * kEdge + 64.0, 0, 0, 0, 100}};
  ASSERT_OK(shard->StreamUpdate(update));
  EXPECT_EQ(Drain(*shard, std::chrono::milliseconds(300)).size(), 4u);
  // Far away, many at once: the stream's cursor falls out of the window.
  std::vector<protocol::Request> far;
  for (uint64_t i = 0; i < 20; ++i) {
    far.push_back(
        {protocol::Opcode::kSetVoxels,
         protocol::SetVoxelsRequest{{{{(kCx + 100) * kEdge + i, kCy * kEdge, kCz * kEdge}, 1}}}
             .Encode()});
  }
  for (const auto& r : writer_->CallBatch(far)) ASSERT_OK(r.status());
  EXPECT_TRUE(Drain(*shard, std::chrono::milliseconds(300)).empty());
  // A change in range still comes, once.
  ASSERT_OK_AND_ASSIGN(uint64_t v,
                       writer_->SetVoxels({{{{kCx * kEdge + 1, kCy * kEdge, kCz * kEdge}, 4}}}));
  const auto items = Drain(*shard, std::chrono::milliseconds(300));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].version, v);
}

// Chunks only (LOD distance 0): a chunk exactly at the view distance, on
// either side, is in view; one farther is not.
TEST_F(DaemonStreamTest, ChunksAtExactlyTheViewDistanceAreInView) {
  protocol::SetVoxelsRequest row;
  for (uint32_t cx = kCx - 3; cx <= kCx + 2; ++cx) {
    row.edits.push_back({{cx * kEdge + 64, kCy * kEdge + 64, kCz * kEdge + 64}, 3});
  }
  ASSERT_OK(writer_->SetVoxels(row).status());
  auto shard = Connect();
  protocol::StreamUpdateRequest update;
  // On the boundary of chunks kCx - 1 and kCx; 32 m is one chunk.
  update.viewers = {{1, kCx * 1.0 * kEdge, kCy * kEdge + 64.0, kCz * kEdge + 64.0, 0, 0, 0, 32}};
  ASSERT_OK(shard->StreamUpdate(update));
  std::set<uint64_t> got;
  for (const StreamItem& i : Drain(*shard, std::chrono::milliseconds(300))) got.insert(i.code);
  std::set<uint64_t> want;
  for (uint32_t cx = kCx - 2; cx <= kCx + 1; ++cx) want.insert(engine::MortonEncode(cx, kCy, kCz));
  EXPECT_EQ(got, want);
}

TEST_F(DaemonStreamTest, BadUpdatesAreRefusedAndTheConnectionStays) {
  auto c = Connect();
  protocol::StreamUpdateRequest update;
  update.viewers = {{1, 0, 0, 0, 0, 0, 0, 0}};  // no view distance
  EXPECT_EQ(protocol::ServerStatusOf(c->StreamUpdate(update)), protocol::WireStatus::kInvalid);
  update.viewers[0].view_distance_m = 1e9;
  EXPECT_EQ(protocol::ServerStatusOf(c->StreamUpdate(update)), protocol::WireStatus::kInvalid);
  update.viewers[0].view_distance_m = 100;
  update.lod_distance_m = -1;
  EXPECT_EQ(protocol::ServerStatusOf(c->StreamUpdate(update)), protocol::WireStatus::kInvalid);
  update.viewers[0].view_distance_m = 8000;
  update.lod_distance_m = 4000;  // 8 million chunk positions within it
  auto far = c->StreamUpdate(update);
  EXPECT_EQ(protocol::ServerStatusOf(far), protocol::WireStatus::kInvalid);
  EXPECT_NE(far.message().find("plans too many chunks"), std::string::npos) << far;
  update.lod_distance_m = 1000;  // fine
  EXPECT_OK(c->StreamUpdate(update));
  update.viewers[0].view_distance_m = 100;
  update.lod_distance_m = 0;
  update.window_bytes = 100;
  EXPECT_EQ(protocol::ServerStatusOf(c->StreamUpdate(update)), protocol::WireStatus::kInvalid);
  update.window_bytes = 128u << 20;
  EXPECT_EQ(protocol::ServerStatusOf(c->StreamUpdate(update)), protocol::WireStatus::kInvalid);
  update.window_bytes = 0;
  EXPECT_OK(c->StreamUpdate(update));  // an empty world: nothing to send
  EXPECT_TRUE(Drain(*c, std::chrono::milliseconds(200)).empty());
  EXPECT_EQ(protocol::ServerStatusOf(c->Call(protocol::Opcode::kStreamData, {}).status()),
            protocol::WireStatus::kInvalid);
  EXPECT_OK(c->Ping());
}

}  // namespace
}  // namespace voxdb
