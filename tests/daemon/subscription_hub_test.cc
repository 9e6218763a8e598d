// Tests of SubscriptionHub (daemon/subscriptions.h) on a real Database,
// with a fake PushTarget in place of a connection: that seam is what lets
// the hub be tested without Asio. The fake records what the hub pushes and
// lets a test hold back its "socket" (the backlog).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/subscriptions.h"
#include "engine/database.h"
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

class SubscriptionHubTest : public ::testing::Test {
 protected:
  void Open(size_t retained = 100'000, SubscriptionOptions options = {}) {
    engine::DatabaseOptions o = testing::TestOptions();
    o.changes.max_records = retained;
    ASSERT_OK_AND_ASSIGN(db_, engine::Database::Open(dir_.path(), o));
    hub_ = std::make_unique<SubscriptionHub>(db_.get(), options, nullptr);
  }
  void TearDown() override {
    if (hub_) hub_->Stop();
    hub_.reset();
    db_.reset();
  }
  // The region: chunks [from, to) along x from the standard region.
  static index::Region Row(uint64_t from, uint64_t to) {
    const protocol::Box b = testing::ChunkRow(from, to);
    return index::BoxRegion{{{b.lo.x, b.lo.y, b.lo.z}, {b.hi.x, b.hi.y, b.hi.z}}};
  }
  // One voxel in chunk dx; returns the write's version.
  uint64_t Write(uint64_t dx, uint8_t material = 5) {
    const protocol::Voxel3 v = testing::VoxelOf(dx);
    const engine::VoxelEdit edit{{v.x, v.y, v.z}, material};
    const engine::WriteResult w = db_->SetVoxelsAndWait({&edit, 1});
    EXPECT_OK(w.status);
    return w.version;
  }
  StatusOr<uint64_t> Subscribe(const std::shared_ptr<FakeTarget>& target, uint64_t id,
                               const index::Region& region,
                               std::optional<uint64_t> from = std::nullopt,
                               protocol::EventDetail detail = protocol::EventDetail::kNone) {
    return hub_->Add(target, id, region, std::nullopt, detail, from);
  }
  // Waits (scaled) until `target` holds `n` events of subscription `id`.
  std::vector<ChangeEvent> AwaitEvents(const FakeTarget& target, uint64_t id, size_t n) {
    EXPECT_TRUE(testing::WaitUntil([&] { return target.Events(id).size() >= n; }, 20s))
        << "got " << target.Events(id).size() << " of " << n << " events";
    return target.Events(id);
  }

  testing::TempDir dir_;
  std::unique_ptr<engine::Database> db_;
  std::unique_ptr<SubscriptionHub> hub_;
};

// Each change in the region once, in commit order; changes outside it are
// not sent; a fill over the region is an event of its own.
TEST_F(SubscriptionHubTest, ChangesInTheRegionArriveInCommitOrderOnce) {
  Open();
  auto target = std::make_shared<FakeTarget>();
  ASSERT_OK_AND_ASSIGN(uint64_t start, Subscribe(target, 7, Row(0, 2)));
  EXPECT_EQ(start, db_->changes().last_seq());
  const uint64_t a = Write(0), outside = Write(5), b = Write(1), again = Write(0, 9);
  const protocol::Box box = testing::ChunkRow(0, 1);
  const engine::WriteResult fill =
      db_->FillBoxAndWait({{box.lo.x, box.lo.y, box.lo.z}, {box.hi.x, box.hi.y, box.hi.z}}, 3);
  ASSERT_OK(fill.status);
  const std::vector<ChangeEvent> events = AwaitEvents(*target, 7, 4);
  ASSERT_GE(events.size(), 4u);
  std::vector<uint64_t> seqs, chunks;
  for (const ChangeEvent& e : events) {
    seqs.push_back(e.seq);
    if (e.kind == EventKind::kChunk) chunks.push_back(e.chunk);
  }
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  EXPECT_EQ(std::vector<uint64_t>(seqs.begin(), seqs.begin() + 3),
            (std::vector<uint64_t>{a, b, again}));
  EXPECT_EQ(std::vector<uint64_t>(chunks.begin(), chunks.begin() + 3),
            (std::vector<uint64_t>{Code(0), Code(1), Code(0)}));
  for (const ChangeEvent& e : events) EXPECT_NE(e.seq, outside);
  bool fill_seen = false;
  for (const ChangeEvent& e : events) {
    if (e.kind == EventKind::kFill) {
      fill_seen = true;
      EXPECT_EQ(e.seq, fill.version);
      EXPECT_EQ(e.material, 3);
      EXPECT_EQ(e.box, box);
    }
  }
  EXPECT_TRUE(fill_seen);
  const SubscriptionStats stats = hub_->stats();
  EXPECT_EQ(stats.subscribers, 1u);
  EXPECT_GE(stats.events_pushed, events.size());
  EXPECT_EQ(stats.frames_pushed, target->frame_count());
}

// With voxel detail, a SET_VOXELS event carries its packed edits.
TEST_F(SubscriptionHubTest, VoxelDetailCarriesTheEdits) {
  Open();
  auto target = std::make_shared<FakeTarget>();
  ASSERT_OK(Subscribe(target, 1, Row(0, 1), std::nullopt, protocol::EventDetail::kVoxels).status());
  Write(0, 42);
  const std::vector<ChangeEvent> events = AwaitEvents(*target, 1, 1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].detail, protocol::EventDetailKind::kEdits);
  ASSERT_EQ(events[0].edits.size(), 1u);
  EXPECT_EQ(events[0].edits[0] >> 21, 42u);
}

// A connection with pushed bytes not yet written gets nothing more; the
// hub asks to be woken and serves it once it has drained.
TEST_F(SubscriptionHubTest, ABackloggedTargetWaitsUntilItDrains) {
  Open();
  auto slow = std::make_shared<FakeTarget>();
  auto fast = std::make_shared<FakeTarget>();
  slow->set_backlog(1);
  ASSERT_OK(Subscribe(slow, 1, Row(0, 1)).status());
  ASSERT_OK(Subscribe(fast, 2, Row(0, 1)).status());
  const uint64_t v = Write(0);
  // The pass that served `fast` passed `slow` over.
  AwaitEvents(*fast, 2, 1);
  ASSERT_TRUE(testing::WaitUntil([&] { return slow->wake_requests() > 0; }, 20s));
  EXPECT_EQ(slow->frame_count(), 0u);
  slow->set_backlog(0);
  hub_->Wake();
  const std::vector<ChangeEvent> events = AwaitEvents(*slow, 1, 1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].seq, v);
}

// A resume point gets the retained changes after it; one past the newest
// change is INVALID; one older than the feed retains is OUT_OF_RANGE
// (RESYNC on the wire).
TEST_F(SubscriptionHubTest, AResumePointReplaysWhatTheFeedRetains) {
  Open(/*retained=*/4);
  const uint64_t first = Write(0);
  const uint64_t second = Write(0, 6);
  auto target = std::make_shared<FakeTarget>();
  ASSERT_OK_AND_ASSIGN(uint64_t start, Subscribe(target, 1, Row(0, 1), first));
  EXPECT_EQ(start, first);
  const std::vector<ChangeEvent> events = AwaitEvents(*target, 1, 1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].seq, second);

  auto other = std::make_shared<FakeTarget>();
  auto past = Subscribe(other, 1, Row(0, 1), db_->changes().last_seq() + 1);
  EXPECT_TRUE(absl::IsInvalidArgument(past.status())) << past.status();
  for (int i = 0; i < 8; ++i) Write(3);  // outside the region; pushes `first` out
  ASSERT_GT(db_->changes().resume_floor(), first);
  auto old = Subscribe(other, 1, Row(0, 1), first);
  EXPECT_TRUE(IsResync(old.status())) << old.status();
}

// A subscriber that falls behind what the feed retains is cut off and its
// subscription dropped.
TEST_F(SubscriptionHubTest, ASubscriberBehindTheFeedIsCutOff) {
  Open(/*retained=*/4);
  auto stuck = std::make_shared<FakeTarget>();
  stuck->set_backlog(1);  // never drains
  ASSERT_OK(Subscribe(stuck, 9, Row(0, 1)).status());
  for (int i = 0; i < 12; ++i) Write(0, static_cast<uint8_t>(1 + i));
  ASSERT_GT(db_->changes().resume_floor(), 0u);
  hub_->Wake();
  ASSERT_TRUE(testing::WaitUntil([&] { return stuck->cut_off().has_value(); }, 20s));
  EXPECT_NE(stuck->cut_off()->find("fell behind"), std::string::npos) << *stuck->cut_off();
  EXPECT_EQ(stuck->frame_count(), 0u);
  EXPECT_EQ(hub_->stats().cut_off, 1u);
  EXPECT_EQ(hub_->stats().subscribers, 0u);
  EXPECT_FALSE(hub_->Remove(stuck.get(), 9));
}

// At most max_per_connection subscriptions per target; Remove and
// RemoveAll stop the events.
TEST_F(SubscriptionHubTest, SubscriptionsAreLimitedAndRemovable) {
  SubscriptionOptions options;
  options.max_per_connection = 2;
  Open(100'000, options);
  auto a = std::make_shared<FakeTarget>();
  auto b = std::make_shared<FakeTarget>();
  ASSERT_OK(Subscribe(a, 1, Row(0, 1)).status());
  ASSERT_OK(Subscribe(a, 2, Row(0, 1)).status());
  auto third = Subscribe(a, 3, Row(0, 1));
  EXPECT_TRUE(absl::IsInvalidArgument(third.status())) << third.status();
  ASSERT_OK(Subscribe(b, 1, Row(0, 1)).status());  // another connection's own limit
  EXPECT_EQ(hub_->stats().subscribers, 3u);

  EXPECT_TRUE(hub_->Remove(a.get(), 2));
  EXPECT_FALSE(hub_->Remove(a.get(), 2));
  EXPECT_FALSE(hub_->Remove(a.get(), 77));
  hub_->RemoveAll(a.get());
  EXPECT_EQ(hub_->stats().subscribers, 1u);
  Write(0);
  // One pass serves every subscription: once b has its event, a would
  // have had its own.
  AwaitEvents(*b, 1, 1);
  EXPECT_EQ(a->frame_count(), 0u);
}

}  // namespace
}  // namespace voxdb::daemon
