// Subscriptions through voxdbd (SUBSCRIBE / UNSUBSCRIBE and pushed EVENTS),
// against the real voxdbd binary: shards editing a shared border see each
// other's changes in order exactly once, resume after a disconnection, and
// a subscriber that never reads is cut off without holding the others up.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/chunk_codec.h"
#include "engine/journal.h"
#include "engine/morton.h"
#include "engine/world_frame.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/stats.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using engine::ChunkKey;
using protocol::Box;
using protocol::ChangeEvent;
using protocol::Client;
using protocol::EventKind;
using protocol::WireStatus;
using testing::ChunkRow;
using testing::Code;
using testing::DaemonProcess;
using testing::kCx;
using testing::kCy;
using testing::kCz;
using testing::kEdge;
using testing::Stat;
using testing::TempDir;
using testing::VoxelOf;

protocol::SubscribeRequest BoxSubscription(const Box& box) {
  protocol::SubscribeRequest s;
  s.region.kind = protocol::QueryKind::kBox;
  s.region.box = box;
  return s;
}

// (seq, chunk) of a chunk event.
using Change = std::pair<uint64_t, uint64_t>;

class DaemonSubscribeTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& args = {}) {
    daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"), args);
  }
  std::unique_ptr<Client> Connect() {
    return testing::ConnectWithHello(daemon_->port(), "", std::chrono::seconds(30));
  }
  // Reads pushed EVENTS of `sub` until `want` events arrived (or 20 s,
  // scaled).
  static std::vector<ChangeEvent> Receive(Client& c, uint64_t sub, size_t want) {
    std::vector<ChangeEvent> events;
    const auto deadline = testing::DeadlineIn(std::chrono::seconds(20));
    while (events.size() < want && std::chrono::steady_clock::now() < deadline) {
      auto frame = c.ReceivePush(std::chrono::milliseconds(500));
      if (absl::IsDeadlineExceeded(frame.status())) continue;
      EXPECT_OK(frame.status());
      if (!frame.ok()) break;
      EXPECT_EQ(frame->header.opcode, static_cast<uint8_t>(protocol::Opcode::kEvents));
      EXPECT_EQ(frame->header.request_id, sub);  // each test reads one subscription a client
      EXPECT_EQ(frame->header.status, 0);
      auto push = protocol::EventsPush::Decode(frame->payload);
      EXPECT_OK(push.status());
      if (!push.ok()) break;
      for (auto& e : push->events) events.push_back(std::move(e));
    }
    return events;
  }
  // True if nothing more is pushed within `wait`.
  static bool Quiet(Client& c, std::chrono::milliseconds wait) {
    return absl::IsDeadlineExceeded(c.ReceivePush(wait).status());
  }
  static std::vector<Change> ChunkChanges(const std::vector<ChangeEvent>& events) {
    std::vector<Change> out;
    for (const ChangeEvent& e : events) {
      if (e.kind == EventKind::kChunk) out.emplace_back(e.seq, e.chunk);
    }
    return out;
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

// Two shards own chunks [0, 5) and [3, 8) of a row (they share chunks 3
// and 4) and each subscribes to the other's region while both write.
TEST_F(DaemonSubscribeTest, ShardsOnASharedBorderSeeEachOthersChangesInOrderExactlyOnce) {
  Start();
  auto a = Connect(), b = Connect();
  auto a_writer = Connect(), b_writer = Connect();
  ASSERT_OK_AND_ASSIGN(auto sub_a, a->Subscribe(BoxSubscription(ChunkRow(3, 8))));
  ASSERT_OK_AND_ASSIGN(auto sub_b, b->Subscribe(BoxSubscription(ChunkRow(0, 5))));
  EXPECT_EQ(sub_a.seq, 0u);  // nothing written yet

  // Every write's (seq, chunk), from the writers' replies.
  constexpr int kWrites = 300;
  std::vector<Change> written_a, written_b;
  auto write = [&](Client& c, uint64_t first_chunk, std::vector<Change>* out) {
    for (int i = 0; i < kWrites; ++i) {
      const uint64_t dx = first_chunk + static_cast<uint64_t>(i) % 5;
      auto v = c.SetVoxels({{{VoxelOf(dx, static_cast<uint64_t>(i)), static_cast<uint8_t>(i)}}});
      ASSERT_OK(v.status());
      out->emplace_back(*v, Code(dx));
    }
  };
  std::thread ta([&] { write(*a_writer, 0, &written_a); });
  std::thread tb([&] { write(*b_writer, 3, &written_b); });
  ta.join();
  tb.join();
  std::vector<Change> all = written_a;
  all.insert(all.end(), written_b.begin(), written_b.end());
  std::sort(all.begin(), all.end());
  auto inside = [&](uint64_t lo, uint64_t hi) {
    std::vector<Change> out;
    for (const Change& c : all) {
      for (uint64_t dx = lo; dx < hi; ++dx) {
        if (c.second == Code(dx)) out.push_back(c);
      }
    }
    return out;
  };
  const std::vector<Change> want_a = inside(3, 8), want_b = inside(0, 5);
  // Both shards changed the shared chunks.
  ASSERT_GT(want_a.size(), written_b.size());
  ASSERT_GT(want_b.size(), written_a.size());

  const auto got_a = ChunkChanges(Receive(*a, sub_a.subscription, want_a.size()));
  const auto got_b = ChunkChanges(Receive(*b, sub_b.subscription, want_b.size()));
  EXPECT_EQ(got_a, want_a);  // in commit order, each once, nothing outside
  EXPECT_EQ(got_b, want_b);
  EXPECT_TRUE(Quiet(*a, std::chrono::milliseconds(200)));
  EXPECT_EQ(Stat(*a, "subscribers"), 2u);
  EXPECT_GE(Stat(*a, "subscription_events"), want_a.size() + want_b.size());
}

TEST_F(DaemonSubscribeTest, AShardThatReconnectsResumesFromItsLastSequenceNumber) {
  Start();
  auto writer = Connect();
  auto shard = Connect();
  ASSERT_OK_AND_ASSIGN(auto sub, shard->Subscribe(BoxSubscription(ChunkRow(0, 2))));
  std::vector<Change> written;
  auto write = [&](int n) {
    for (int i = 0; i < n; ++i) {
      const uint64_t dx = static_cast<uint64_t>(i) % 3;  // chunk 2 is outside
      auto v = writer->SetVoxels({{{VoxelOf(dx, static_cast<uint64_t>(i)), 1}}});
      ASSERT_OK(v.status());
      if (dx < 2) written.emplace_back(*v, Code(dx));
    }
  };
  write(30);
  auto seen = ChunkChanges(Receive(*shard, sub.subscription, 20));
  ASSERT_EQ(seen.size(), 20u);
  const uint64_t last = seen.back().first;
  shard.reset();  // disconnects
  write(60);      // missed while away
  shard = Connect();
  auto resume = BoxSubscription(ChunkRow(0, 2));
  resume.from_seq = last;
  ASSERT_OK_AND_ASSIGN(auto again, shard->Subscribe(resume));
  EXPECT_EQ(again.seq, last);
  const auto rest = ChunkChanges(Receive(*shard, again.subscription, written.size() - 20));
  seen.insert(seen.end(), rest.begin(), rest.end());
  EXPECT_EQ(seen, written);  // nothing missed, nothing twice
  EXPECT_TRUE(Quiet(*shard, std::chrono::milliseconds(200)));

  // UNSUBSCRIBE: no event after its reply.
  ASSERT_OK(shard->Unsubscribe(again.subscription));
  write(3);
  EXPECT_TRUE(Quiet(*shard, std::chrono::milliseconds(300)));
  auto twice = shard->Unsubscribe(again.subscription);
  EXPECT_EQ(protocol::ServerStatusOf(twice), WireStatus::kNotFound) << twice;
}

TEST_F(DaemonSubscribeTest, AResumePointBeyondTheRetainedWindowNeedsAResync) {
  Start({"--change-window", "10", "--max-subscriptions", "2"});
  auto c = Connect();
  uint64_t last = 0;
  for (int i = 0; i < 30; ++i) {
    ASSERT_OK_AND_ASSIGN(last, c->SetVoxels({{{VoxelOf(0, static_cast<uint64_t>(i)), 1}}}));
  }
  auto old = BoxSubscription(ChunkRow(0, 1));
  old.from_seq = 5;
  auto s = c->Subscribe(old);
  EXPECT_EQ(protocol::ServerStatusOf(s.status()), WireStatus::kResync) << s.status();
  EXPECT_NE(s.status().message().find("no longer retained"), std::string::npos) << s.status();
  old.from_seq = last - 10;  // the oldest still retained
  ASSERT_OK_AND_ASSIGN(auto ok, c->Subscribe(old));
  EXPECT_EQ(ChunkChanges(Receive(*c, ok.subscription, 10)).size(), 10u);
  old.from_seq = last + 1;  // the future
  EXPECT_EQ(protocol::ServerStatusOf(c->Subscribe(old).status()), WireStatus::kInvalid);

  // Limits and bad requests leave the connection usable.
  ASSERT_OK(c->Subscribe(BoxSubscription(ChunkRow(0, 1))).status());
  auto third = c->Subscribe(BoxSubscription(ChunkRow(0, 1)));
  EXPECT_EQ(protocol::ServerStatusOf(third.status()), WireStatus::kInvalid) << third.status();
  auto outside = BoxSubscription({{0, 0, 0}, {1, 1, ~uint64_t{0}}});
  EXPECT_EQ(protocol::ServerStatusOf(c->Subscribe(outside).status()), WireStatus::kOutOfBounds);
  EXPECT_EQ(protocol::ServerStatusOf(c->Call(protocol::Opcode::kEvents, {}).status()),
            WireStatus::kInvalid);
  EXPECT_OK(c->Ping());
}

TEST_F(DaemonSubscribeTest, EventsCarryTheChangedVoxelsRecordsFillsAndDeletes) {
  Start();
  auto writer = Connect(), c = Connect();
  auto voxels = BoxSubscription(ChunkRow(0, 2));
  voxels.detail = protocol::EventDetail::kVoxels;
  ASSERT_OK_AND_ASSIGN(auto sv, c->Subscribe(voxels));

  ASSERT_OK_AND_ASSIGN(uint64_t v1, writer->SetVoxels({{{VoxelOf(0, 5), 7}, {VoxelOf(0, 9), 8}}}));
  const Box box{{kCx * kEdge + 100, kCy * kEdge, kCz * kEdge},
                {kCx * kEdge + 150, kCy * kEdge + 2, kCz * kEdge + 2}};
  ASSERT_OK_AND_ASSIGN(uint64_t v2, writer->WriteBox(box, std::vector<uint8_t>(50 * 2 * 2, 4)));
  const Box fill = ChunkRow(1, 3);  // chunk 1 only reads as it: no chunk event
  ASSERT_OK_AND_ASSIGN(uint64_t v3, writer->FillBox(fill, 6));
  ASSERT_OK_AND_ASSIGN(uint64_t v4, writer->DeleteChunk(Code(0)));

  // voxels: the edits (local index | material << 21), the written box
  // within each chunk, the fill, the delete.
  const std::vector<ChangeEvent> ev = Receive(*c, sv.subscription, 6);
  ASSERT_EQ(ev.size(), 6u);
  EXPECT_EQ(ev[0].seq, v1);
  EXPECT_EQ(ev[0].detail, protocol::EventDetailKind::kEdits);
  EXPECT_EQ(ev[0].edits, (std::vector<uint32_t>{engine::PackEdit(5 | 4 << 14, 7),
                                                engine::PackEdit(9 | 4 << 14, 8)}));
  EXPECT_EQ(ev[1].seq, v2);
  EXPECT_EQ(ev[1].detail, protocol::EventDetailKind::kBox);
  const Box in_chunk1{{(kCx + 1) * kEdge, kCy * kEdge, kCz * kEdge}, box.hi};
  const Box in_chunk0{box.lo, {(kCx + 1) * kEdge, box.hi.y, box.hi.z}};
  EXPECT_TRUE((ev[1].box == in_chunk0 && ev[2].box == in_chunk1) ||
              (ev[1].box == in_chunk1 && ev[2].box == in_chunk0));
  EXPECT_EQ(ev[3].seq, v3);  // the fill, then the chunk it rewrote
  EXPECT_EQ(ev[3].kind, EventKind::kFill);
  EXPECT_EQ(ev[3].box, fill);
  EXPECT_EQ(ev[3].material, 6);
  // The fill covers chunk 1 whole: it now reads as the fill.
  EXPECT_EQ(ev[4].seq, v3);
  EXPECT_EQ(ev[4].chunk, Code(1));
  EXPECT_FALSE(ev[4].present);
  EXPECT_EQ(ev[5].seq, v4);
  EXPECT_EQ(ev[5].chunk, Code(0));
  EXPECT_FALSE(ev[5].present);
}

// A record event carries the chunk at its version, when that is still
// current; a subscriber rebuilding chunks from them matches GET_CHUNKS.
TEST_F(DaemonSubscribeTest, RecordEventsRebuildTheChunks) {
  Start();
  auto writer = Connect(), c = Connect();
  auto records = BoxSubscription(ChunkRow(0, 2));
  records.detail = protocol::EventDetail::kRecords;
  ASSERT_OK_AND_ASSIGN(auto sr, c->Subscribe(records));
  for (uint64_t i = 0; i < 20; ++i) {
    ASSERT_OK(writer->SetVoxels({{{VoxelOf(i % 2, i * 7), static_cast<uint8_t>(i + 1)}}}).status());
    // Without waiting, a later write may supersede a version before its
    // event is built: that event then has no record.
  }
  ASSERT_OK(writer->Flush());
  std::map<uint64_t, std::pair<uint64_t, std::vector<uint8_t>>>
      latest;  // chunk -> (version, record)
  size_t with_record = 0;
  for (const ChangeEvent& e : Receive(*c, sr.subscription, 20)) {
    if (e.detail != protocol::EventDetailKind::kRecord) continue;
    ++with_record;
    latest[e.chunk] = {e.seq, e.record};
  }
  EXPECT_GE(with_record, 2u);
  ASSERT_OK_AND_ASSIGN(auto now, writer->GetChunks(std::vector<uint64_t>{Code(0), Code(1)}));
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(latest.count(Code(i)));
    // The newest version always has its record: nothing superseded it.
    EXPECT_EQ(latest[Code(i)].first, now.results[i].version);
    std::vector<uint8_t> got(kEdge * kEdge * kEdge), want(kEdge * kEdge * kEdge);
    ASSERT_OK(engine::DecodeChunkToDense(latest[Code(i)].second, got.data()));
    ASSERT_OK(engine::DecodeChunkToDense(now.results[i].bytes, want.data()));
    EXPECT_TRUE(got == want);
  }
}

TEST_F(DaemonSubscribeTest, ASubscriberThatNeverReadsIsCutOffWithoutHoldingUpTheOthers) {
  Start({"--change-window", "100", "--push-window", "64KiB"});
  auto writer = Connect(), reader = Connect(), stalled = Connect();
  // Large events: every record, of chunks of noise.
  auto records = BoxSubscription(ChunkRow(0, 4));
  records.detail = protocol::EventDetail::kRecords;
  ASSERT_OK(stalled->Subscribe(records).status());
  ASSERT_OK_AND_ASSIGN(auto sub, reader->Subscribe(BoxSubscription(ChunkRow(0, 4))));
  std::vector<uint8_t> noise(kEdge * kEdge * 8);
  uint32_t x = 1;
  constexpr int kWrites = 400;
  uint64_t max_unsent = 0;
  std::vector<uint64_t> versions;
  for (int i = 0; i < kWrites; ++i) {
    for (auto& v : noise) {
      x = x * 1664525u + 1013904223u;
      v = static_cast<uint8_t>(x >> 24);
    }
    const uint64_t dx = static_cast<uint64_t>(i) % 4;
    const Box box{{(kCx + dx) * kEdge, kCy * kEdge, kCz * kEdge},
                  {(kCx + dx + 1) * kEdge, (kCy + 1) * kEdge, kCz * kEdge + 8}};
    ASSERT_OK_AND_ASSIGN(uint64_t v, writer->WriteBox(box, noise));
    versions.push_back(v);
    if (i % 50 == 0) max_unsent = std::max(max_unsent, Stat(*writer, "unsent_bytes"));
  }
  // The reader got every change, in order.
  const auto got = ChunkChanges(Receive(*reader, sub.subscription, kWrites));
  ASSERT_EQ(got.size(), size_t{kWrites});
  for (int i = 0; i < kWrites; ++i) EXPECT_EQ(got[i].first, versions[i]);
  // The stalled one fell out of the window and was closed: after what was
  // buffered for it, its connection ends.
  EXPECT_EQ(Stat(*writer, "subscribers_cut_off"), 1u);
  EXPECT_EQ(Stat(*writer, "subscribers"), 1u);
  absl::Status end;
  for (int i = 0; i < 1000 && end.ok(); ++i)
    end = stalled->ReceivePush(std::chrono::seconds(5)).status();
  EXPECT_TRUE(IsUnreachable(end)) << end;

  // What the server buffered stayed near the push window, not the ~50 MB
  // of records the stalled subscriber was owed.
  EXPECT_LT(max_unsent, uint64_t{4} << 20);
  EXPECT_GT(kWrites * noise.size(), size_t{40} << 20);
}

// A subscriber waits for changes: the idle timeout does not close it.
TEST_F(DaemonSubscribeTest, AQuietSubscriberIsNotIdle) {
  Start({"--idle-timeout", "300ms"});
  auto quiet = Connect(), plain = Connect();
  ASSERT_OK_AND_ASSIGN(auto sub, quiet->Subscribe(BoxSubscription(ChunkRow(0, 1))));
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_FALSE(plain->Ping().ok());  // idle: closed
  auto writer = Connect();
  ASSERT_OK_AND_ASSIGN(uint64_t v, writer->SetVoxels({{{VoxelOf(0), 1}}}));
  const auto events = ChunkChanges(Receive(*quiet, sub.subscription, 1));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].first, v);
  EXPECT_OK(quiet->Ping());
}

// SIGTERM waits for replies in flight, not for events a client does not read.
TEST_F(DaemonSubscribeTest, UnreadEventsDoNotHoldUpAShutdown) {
  Start({"--shutdown-timeout", "20s"});
  auto writer = Connect(), stalled = Connect();
  auto records = BoxSubscription(ChunkRow(0, 4));
  records.detail = protocol::EventDetail::kRecords;
  ASSERT_OK(stalled->Subscribe(records).status());
  std::vector<uint8_t> noise(kEdge * kEdge * 8);
  uint32_t x = 3;
  for (int i = 0; i < 200; ++i) {  // 26 MB of events: more than the sockets hold
    for (auto& v : noise) {
      x = x * 1664525u + 1013904223u;
      v = static_cast<uint8_t>(x >> 24);
    }
    const uint64_t dx = static_cast<uint64_t>(i) % 4;
    ASSERT_OK(writer
                  ->WriteBox({{(kCx + dx) * kEdge, kCy * kEdge, kCz * kEdge},
                              {(kCx + dx + 1) * kEdge, (kCy + 1) * kEdge, kCz * kEdge + 8}},
                             noise)
                  .status());
  }
  ASSERT_GT(Stat(*writer, "unsent_bytes"), 0u);
  const auto start = std::chrono::steady_clock::now();
  const int status = daemon_->StopWith(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

// A radius subscription open while a fill touching x = 0 (longitude -180)
// happened aborted voxdbd (libs2: s1interval.h: Check failed: is_valid())
// as it checked the fill against the region. Now the fill reaches exactly
// the subscriptions it meets, and voxdbd lives on.
TEST_F(DaemonSubscribeTest, RadiusSubscriptionsSeeFillsTouchingXZero) {
  Start();
  auto writer = Connect(), near = Connect(), far = Connect();
  const engine::WorldFrame frame = engine::WorldFrame::Earth();
  const uint64_t row = kCy * kEdge;
  const double lat = frame.MetresToGeo({0, (row + 0.5) * frame.voxel_size_m(), 0}).lat_deg;
  auto radius = [](double lat_deg, double lon_deg, double metres) {
    protocol::SubscribeRequest s;
    s.region.kind = protocol::QueryKind::kRadius;
    s.region.lat = lat_deg;
    s.region.lon = lon_deg;
    s.region.radius = metres;
    return s;
  };
  ASSERT_OK_AND_ASSIGN(auto sn, near->Subscribe(radius(lat, 180, 100)));
  ASSERT_OK_AND_ASSIGN(auto sf, far->Subscribe(radius(0, 0, 1)));  // voxdb watch radius 0 0 1

  const Box beside{{0, row, 0}, {1, row + 1, 1}};  // at (lat, -180)
  const Box corner{{0, 0, 0}, {1, 1, 1}};          // voxdb fill 0 0 0 1 1 1 0: the south pole
  const Box planet{{0, 0, 5}, {frame.extent_x(), frame.extent_y(), 6}};
  ASSERT_OK_AND_ASSIGN(uint64_t v1, writer->FillBox(beside, 2));
  ASSERT_OK_AND_ASSIGN(uint64_t v2, writer->FillBox(corner, 0));
  ASSERT_OK_AND_ASSIGN(uint64_t v3, writer->FillBox(planet, 3));
  EXPECT_LT(v1, v2);

  const std::vector<ChangeEvent> got_near = Receive(*near, sn.subscription, 2);
  ASSERT_EQ(got_near.size(), 2u);
  EXPECT_EQ(got_near[0].kind, EventKind::kFill);
  EXPECT_EQ(got_near[0].seq, v1);
  EXPECT_EQ(got_near[0].box, beside);
  EXPECT_EQ(got_near[1].kind, EventKind::kFill);
  EXPECT_EQ(got_near[1].seq, v3);
  EXPECT_EQ(got_near[1].box, planet);
  const std::vector<ChangeEvent> got_far = Receive(*far, sf.subscription, 1);
  ASSERT_EQ(got_far.size(), 1u);
  EXPECT_EQ(got_far[0].kind, EventKind::kFill);
  EXPECT_EQ(got_far[0].seq, v3);
  EXPECT_TRUE(Quiet(*near, std::chrono::milliseconds(300)));
  EXPECT_TRUE(Quiet(*far, std::chrono::milliseconds(300)));

  // voxdbd still serves, and stops cleanly.
  EXPECT_OK(writer->Ping());
  EXPECT_OK(near->Ping());
  EXPECT_OK(far->Ping());
  near.reset();
  far.reset();
  writer.reset();
  EXPECT_EQ(daemon_->StopWith(SIGTERM), 0);
}

}  // namespace
}  // namespace voxdb
