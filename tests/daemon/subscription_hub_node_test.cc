// SubscriptionHub following an engine::Node (daemon/subscriptions.h): a
// split of a partition a subscription follows cuts the subscriber off, and
// it resumes from the new partitions with the per-range points of what it
// was sent. The fake PushTarget stands in for a connection.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/subscriptions.h"
#include "engine/morton.h"
#include "engine/node.h"
#include "index/s2_index.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "tests/daemon/fake_push_target.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"
#include "tests/testing/wait.h"
#include "tests/testing/world.h"

namespace voxdb::daemon {
namespace {

using namespace std::chrono_literals;
using protocol::ChangeEvent;
using protocol::EventKind;
using testing::Code;

using testing::FakeTarget;

// Chunks dx in [0, 16) of the standard row are one 16^3-chunk cube: the
// split puts the border between chunks 15 and 16.
const uint64_t kBorder = (Code(0) & ~uint64_t{4095}) + 4096;

index::Region Row(uint64_t from, uint64_t to) {
  const protocol::Box b = testing::ChunkRow(from, to);
  return index::BoxRegion{{{b.lo.x, b.lo.y, b.lo.z}, {b.hi.x, b.hi.y, b.hi.z}}};
}

uint64_t Write(engine::Node& node, uint64_t dx, uint8_t material) {
  const protocol::Voxel3 v = testing::VoxelOf(dx);
  const engine::VoxelEdit edit{{v.x, v.y, v.z}, material};
  const engine::WriteResult w = node.SetVoxelsAndWait({&edit, 1});
  EXPECT_OK(w.status);
  return w.version;
}

TEST(SubscriptionHubNodeTest, ASplitCutsTheSubscriberOffAndItResumesPerRange) {
  testing::TempDir dir;
  engine::NodeOptions options;
  options.database = testing::TestOptions();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<engine::Node> node, engine::Node::Open(dir.path(), options));
  SubscriptionHub hub(node.get(), {}, nullptr);

  auto a = std::make_shared<FakeTarget>();
  ASSERT_OK_AND_ASSIGN(SubscriptionStart start,
                       hub.Add(a, 1, Row(10, 22), std::nullopt, protocol::EventDetail::kNone,
                               std::nullopt, std::nullopt));
  EXPECT_TRUE(start.ranges.empty()) << "one partition: no ranges";
  const uint64_t v1 = Write(*node, 12, 3);
  const uint64_t v2 = Write(*node, 18, 4);
  ASSERT_TRUE(testing::WaitUntil([&] { return a->Events(1).size() >= 2; }, 20s));
  const uint64_t seen = a->Events(1).back().seq;
  EXPECT_EQ(seen, v2);
  EXPECT_LT(v1, v2);

  ASSERT_OK_AND_ASSIGN(engine::LayoutChangeReport report, node->Split(0, kBorder));
  // The hub let go of the replaced partition, so the split could remove it.
  EXPECT_OK(report.cleanup);
  ASSERT_EQ(node->partition_count(), 2u);
  hub.Wake();
  ASSERT_TRUE(testing::WaitUntil([&] { return a->cut_off().has_value(); }, 20s));
  EXPECT_NE(a->cut_off()->find("split or move"), std::string::npos) << *a->cut_off();
  EXPECT_EQ(hub.stats().cut_off, 1u);
  EXPECT_EQ(hub.stats().subscribers, 0u);

  // Missed while away, then resumed with the one range it knew.
  const uint64_t w1 = Write(*node, 13, 5);
  const uint64_t w2 = Write(*node, 17, 6);
  auto b = std::make_shared<FakeTarget>();
  const std::vector<protocol::RangeSeq> points = {{0, engine::ChunkKey::kMaxCode + 1, seen}};
  ASSERT_OK_AND_ASSIGN(start, hub.Add(b, 1, Row(10, 22), std::nullopt, protocol::EventDetail::kNone,
                                      std::nullopt, points));
  ASSERT_EQ(start.ranges.size(), 2u);
  EXPECT_EQ(start.ranges[0].end, kBorder);
  EXPECT_EQ(start.ranges[1].begin, kBorder);
  EXPECT_EQ(start.ranges[0].seq, seen);
  EXPECT_EQ(start.ranges[1].seq, seen);
  ASSERT_TRUE(testing::WaitUntil([&] { return b->Events(1).size() >= 2; }, 20s));
  std::vector<std::pair<uint64_t, uint64_t>> got;
  for (const ChangeEvent& e : b->Events(1)) got.emplace_back(e.seq, e.chunk);
  std::sort(got.begin(), got.end());
  std::vector<std::pair<uint64_t, uint64_t>> want = {{w1, Code(13)}, {w2, Code(17)}};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
  EXPECT_FALSE(b->cut_off().has_value());
  // A single from_seq names no place on several partitions.
  auto c = std::make_shared<FakeTarget>();
  EXPECT_TRUE(absl::IsInvalidArgument(
      hub.Add(c, 1, Row(10, 22), std::nullopt, protocol::EventDetail::kNone, seen).status()));
  hub.Stop();
}

}  // namespace
}  // namespace voxdb::daemon
