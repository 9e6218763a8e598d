// Subscriptions on a node of several partitions, against the real voxdbd
// serving a data directory split offline with `voxdb partition split`: a
// region across the border gets every change once, in each partition's
// commit order with that partition's sequence numbers; a subscriber resumes
// with per-range points; and bad resume points are refused as the protocol
// says (PROTOCOL.md, "Subscriptions").
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/morton.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/run_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using protocol::Box;
using protocol::ChangeEvent;
using protocol::Client;
using protocol::EventKind;
using protocol::RangeSeq;
using protocol::WireStatus;
using testing::ChunkRow;
using testing::Code;
using testing::DaemonProcess;
using testing::kCx;
using testing::kCy;
using testing::kCz;
using testing::kEdge;
using testing::TempDir;
using testing::VoxelOf;

// The standard region's chunks dx in [0, 16) are one 16^3-chunk cube (8^4
// codes); dx in [16, 32) the next one along x: the split puts the border
// between chunks 15 and 16.
const uint64_t kBorder = (Code(0) & ~uint64_t{4095}) + 4096;
constexpr uint64_t kBorderX = (kCx + 16) * kEdge;
// The subscribed region: chunks [10, 22), six on each side.
constexpr uint64_t kFrom = 10, kTo = 22;

protocol::SubscribeRequest RowSubscription(uint64_t from = kFrom, uint64_t to = kTo) {
  protocol::SubscribeRequest s;
  s.region.kind = protocol::QueryKind::kBox;
  s.region.box = ChunkRow(from, to);
  return s;
}

// A box across the border in chunks 15 and 16, `w` voxels on each side.
Box AcrossTheBorder(uint64_t w) {
  return {{kBorderX - w, kCy * kEdge + 3, kCz * kEdge + 5},
          {kBorderX + w, kCy * kEdge + 9, kCz * kEdge + 8}};
}

uint64_t CodeOfVoxel(const protocol::Voxel3& v) {
  return engine::MortonEncode(static_cast<uint32_t>(v.x / kEdge),
                              static_cast<uint32_t>(v.y / kEdge),
                              static_cast<uint32_t>(v.z / kEdge));
}

// The partition (0: below the border, 1: from it) of an event.
size_t PartOf(const ChangeEvent& e) {
  const uint64_t code = e.kind == EventKind::kChunk ? e.chunk : CodeOfVoxel(e.box.lo);
  return code < kBorder ? 0 : 1;
}

class DaemonSubscribePartitionTest : public ::testing::Test {
 protected:
  // A data directory of two partitions split at kBorder, served by voxdbd
  // started with `args`.
  void StartSplit(const std::vector<std::string>& args = {}) {
    {
      DaemonProcess d(VOXDBD_PATH, data_);
      auto c = Connect(d);
      ASSERT_NE(c, nullptr);
      ASSERT_OK(c->SetVoxels({{{VoxelOf(3), 1}}}).status());
      ASSERT_OK(c->SetVoxels({{{VoxelOf(20), 2}}}).status());
      ASSERT_OK(c->Flush());
      ASSERT_EQ(d.StopWith(SIGTERM), 0);
    }
    testing::ProcessResult split = testing::RunProcess(
        {VOXDB_CLI_PATH, "partition", "split", "0", std::to_string(kBorder), "--data", data_},
        {"VOXDB_ADDRESS", "VOXDB_TOKEN"});
    ASSERT_EQ(split.exit_code, 0) << split;
    Restart(args);
  }
  void Restart(const std::vector<std::string>& args = {}) {
    daemon_.reset();
    daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, data_, args);
  }
  static std::unique_ptr<Client> Connect(DaemonProcess& d) {
    return testing::ConnectWithHello(d.port(), "", std::chrono::seconds(30));
  }
  std::unique_ptr<Client> Connect() { return Connect(*daemon_); }

  // Pushed events of `sub` until nothing more comes for a while (or 20 s,
  // scaled).
  static std::vector<ChangeEvent> ReceiveUntilQuiet(Client& c, uint64_t sub) {
    std::vector<ChangeEvent> events;
    const auto deadline = testing::DeadlineIn(std::chrono::seconds(20));
    while (std::chrono::steady_clock::now() < deadline) {
      auto frame = c.ReceivePush(std::chrono::milliseconds(700));
      if (absl::IsDeadlineExceeded(frame.status())) break;
      EXPECT_OK(frame.status());
      if (!frame.ok()) break;
      EXPECT_EQ(frame->header.request_id, sub);
      auto push = protocol::EventsPush::Decode(frame->payload);
      EXPECT_OK(push.status());
      if (!push.ok()) break;
      for (auto& e : push->events) events.push_back(std::move(e));
    }
    return events;
  }

  // SUBSCRIBE's raw reply status for `payload`.
  static std::optional<WireStatus> RawSubscribe(Client& c, const std::vector<uint8_t>& payload) {
    auto reply = c.Call(protocol::Opcode::kSubscribe, payload);
    return protocol::ServerStatusOf(reply.status());
  }

  TempDir dir_;
  const std::string data_ = dir_.Sub("data");
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(DaemonSubscribePartitionTest, ARegionAcrossTheBorderGetsEveryChangeOnceInPartitionOrder) {
  StartSplit();
  auto sub_client = Connect();
  auto writer = Connect();
  ASSERT_NE(sub_client, nullptr);
  ASSERT_NE(writer, nullptr);
  ASSERT_OK_AND_ASSIGN(auto sub, sub_client->Subscribe(RowSubscription()));
  ASSERT_EQ(sub.ranges.size(), 2u);
  EXPECT_EQ(sub.ranges[0].end, kBorder);
  EXPECT_EQ(sub.ranges[1].begin, kBorder);
  EXPECT_LE(sub.ranges[0].begin, Code(kFrom));
  EXPECT_EQ(sub.seq, std::max(sub.ranges[0].seq, sub.ranges[1].seq));

  // Random writes: single voxels in chunks [8, 24) (some outside the
  // region), boxes and fills across the border.
  std::mt19937 rng(18);
  std::set<std::pair<uint64_t, uint64_t>> single;  // (seq, chunk) of single-chunk writes
  std::vector<uint64_t> box_versions;
  std::vector<Box> fills;
  for (int i = 0; i < 240; ++i) {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 7) {
      const uint64_t dx = 8 + rng() % 16;
      ASSERT_OK_AND_ASSIGN(
          uint64_t v, writer->SetVoxels({{{VoxelOf(dx, rng() % 1000), uint8_t(1 + rng() % 9)}}}));
      if (dx >= kFrom && dx < kTo) single.insert({v, Code(dx)});
    } else if (kind < 9) {
      const Box b = AcrossTheBorder(1 + rng() % 20);
      std::vector<uint8_t> voxels((b.hi.x - b.lo.x) * (b.hi.y - b.lo.y) * (b.hi.z - b.lo.z),
                                  uint8_t(1 + rng() % 9));
      ASSERT_OK_AND_ASSIGN(uint64_t v, writer->WriteBox(b, voxels));
      box_versions.push_back(v);
    } else {
      const Box b = AcrossTheBorder(1 + rng() % 30);
      ASSERT_OK(writer->FillBox(b, uint8_t(1 + rng() % 9)).status());
      fills.push_back(b);
    }
  }
  const std::vector<ChangeEvent> events = ReceiveUntilQuiet(*sub_client, sub.subscription);

  std::set<std::pair<uint64_t, uint64_t>> chunk_events;  // (seq, chunk)
  std::map<uint64_t, uint64_t> last_of;                  // chunk -> its last event's seq
  uint64_t last_seq[2] = {sub.ranges[0].seq, sub.ranges[1].seq};
  std::vector<ChangeEvent> fill_events[2];
  for (const ChangeEvent& e : events) {
    const size_t p = PartOf(e);
    // In commit order within the partition: a write's events share a seq.
    EXPECT_GE(e.seq, last_seq[p]);
    EXPECT_GT(e.seq, sub.ranges[p].seq) << "an event from before the subscription";
    last_seq[p] = e.seq;
    if (e.kind == EventKind::kFill) {
      fill_events[p].push_back(e);
      continue;
    }
    EXPECT_GE(e.chunk, Code(kFrom));
    EXPECT_TRUE(chunk_events.insert({e.seq, e.chunk}).second)
        << "chunk " << e.chunk << " at " << e.seq << " twice";
    last_of[e.chunk] = e.seq;
  }
  // Every single-chunk write in the region, with its partition's seq.
  for (const auto& w : single) EXPECT_EQ(chunk_events.count(w), 1u) << w.first << " " << w.second;
  // A box across the border is a write in each partition: its version is
  // the highest of the two, one of them (both, when the partitions' numbers
  // happen to agree).
  for (uint64_t v : box_versions) {
    EXPECT_GE(chunk_events.count({v, Code(15)}) + chunk_events.count({v, Code(16)}), 1u) << v;
  }
  // Nothing else: every chunk event is a write of the region.
  size_t box_events = 0;
  for (const auto& [seq, chunk] : chunk_events) {
    if (single.count({seq, chunk}) == 0) {
      EXPECT_TRUE(chunk == Code(15) || chunk == Code(16)) << chunk;
      ++box_events;
    }
  }
  EXPECT_GE(box_events, 2 * box_versions.size());
  // Each chunk's last event is its version now.
  for (const auto& [chunk, seq] : last_of) {
    const uint64_t codes[] = {chunk};
    ASSERT_OK_AND_ASSIGN(auto got, writer->GetChunks(codes));
    ASSERT_EQ(got.results.size(), 1u);
    if (got.results[0].status == 0) {
      EXPECT_EQ(got.results[0].version, seq) << chunk;
    }
  }
  // A fill across the border: one fill event in each partition, its box
  // clipped at the border, in the order of the fills.
  ASSERT_EQ(fill_events[0].size(), fills.size());
  ASSERT_EQ(fill_events[1].size(), fills.size());
  for (size_t i = 0; i < fills.size(); ++i) {
    const Box& a = fill_events[0][i].box;
    const Box& b = fill_events[1][i].box;
    EXPECT_EQ(a.lo, fills[i].lo);
    EXPECT_EQ(a.hi.x, kBorderX);
    EXPECT_EQ(b.lo.x, kBorderX);
    EXPECT_EQ(b.hi, fills[i].hi);
    EXPECT_EQ(a.hi.y, fills[i].hi.y);
    EXPECT_EQ(b.lo.y, fills[i].lo.y);
  }
}

TEST_F(DaemonSubscribePartitionTest, PerRangePointsResumeWithExactlyTheMissedChanges) {
  StartSplit();
  auto writer = Connect();
  ASSERT_NE(writer, nullptr);
  std::vector<RangeSeq> points;
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    ASSERT_OK_AND_ASSIGN(auto sub, c->Subscribe(RowSubscription()));
    points = sub.ranges;
    ASSERT_EQ(points.size(), 2u);
    // Seen before the disconnection.
    ASSERT_OK(writer->SetVoxels({{{VoxelOf(12), 3}}}).status());
    ASSERT_OK(writer->SetVoxels({{{VoxelOf(18), 4}}}).status());
    for (const ChangeEvent& e : ReceiveUntilQuiet(*c, sub.subscription)) {
      points[PartOf(e)].seq = e.seq;
    }
    EXPECT_GT(points[0].seq, sub.ranges[0].seq);
    EXPECT_GT(points[1].seq, sub.ranges[1].seq);
  }
  // Missed while disconnected.
  std::set<std::pair<uint64_t, uint64_t>> missed;
  for (uint64_t i = 0; i < 30; ++i) {
    const uint64_t dx = kFrom + i % (kTo - kFrom);
    ASSERT_OK_AND_ASSIGN(uint64_t v, writer->SetVoxels({{{VoxelOf(dx, i), uint8_t(1 + i % 7)}}}));
    missed.insert({v, Code(dx)});
  }
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  protocol::SubscribeRequest resume = RowSubscription();
  resume.from_ranges = points;
  ASSERT_OK_AND_ASSIGN(auto sub, c->Subscribe(resume));
  ASSERT_EQ(sub.ranges.size(), 2u);
  EXPECT_EQ(sub.ranges[0].seq, points[0].seq);
  EXPECT_EQ(sub.ranges[1].seq, points[1].seq);
  std::set<std::pair<uint64_t, uint64_t>> got;
  for (const ChangeEvent& e : ReceiveUntilQuiet(*c, sub.subscription)) {
    EXPECT_TRUE(got.insert({e.seq, e.chunk}).second);
  }
  EXPECT_EQ(got, missed);

  // One range holding both partitions resumes each from its seq.
  resume.from_ranges = {
      {0, engine::ChunkKey::kMaxCode + 1, std::min(points[0].seq, points[1].seq)}};
  ASSERT_OK(c->Subscribe(resume).status());

  // A partition no range holds: RESYNC.
  resume.from_ranges = {points[0]};
  auto partial = c->Subscribe(resume);
  EXPECT_EQ(protocol::ServerStatusOf(partial.status()), WireStatus::kResync) << partial.status();
  // A range that only holds part of a partition does not hold it.
  resume.from_ranges = {points[0], {kBorder, kBorder + 4096, points[1].seq}};
  partial = c->Subscribe(resume);
  EXPECT_EQ(protocol::ServerStatusOf(partial.status()), WireStatus::kResync) << partial.status();
  // Past the newest change: INVALID.
  resume.from_ranges = {points[0], {points[1].begin, points[1].end, points[1].seq + 1'000'000}};
  auto past = c->Subscribe(resume);
  EXPECT_EQ(protocol::ServerStatusOf(past.status()), WireStatus::kInvalid) << past.status();
  // A single from_seq means nothing across partitions: INVALID, saying so.
  protocol::SubscribeRequest single = RowSubscription();
  single.from_seq = points[0].seq;
  auto one = c->Subscribe(single);
  EXPECT_EQ(protocol::ServerStatusOf(one.status()), WireStatus::kInvalid) << one.status();
  EXPECT_NE(one.status().message().find("per-range"), std::string::npos) << one.status();
  // A region inside one partition gets one range.
  ASSERT_OK_AND_ASSIGN(auto inside, c->Subscribe(RowSubscription(kTo, kTo + 2)));
  ASSERT_EQ(inside.ranges.size(), 1u);
  EXPECT_EQ(inside.ranges[0].begin, kBorder);
}

TEST_F(DaemonSubscribePartitionTest, APointBelowTheFeedsFloorIsResync) {
  StartSplit({"--change-window", "4"});
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_OK_AND_ASSIGN(auto sub, c->Subscribe(RowSubscription()));
  ASSERT_OK(c->Unsubscribe(sub.subscription));
  for (uint64_t i = 0; i < 10; ++i) {
    ASSERT_OK(c->SetVoxels({{{VoxelOf(17, i), 5}}}).status());  // partition 1 only
  }
  protocol::SubscribeRequest resume = RowSubscription();
  resume.from_ranges = sub.ranges;
  auto r = c->Subscribe(resume);
  EXPECT_EQ(protocol::ServerStatusOf(r.status()), WireStatus::kResync) << r.status();
  // Partition 0 alone still retains everything after its point.
  resume = RowSubscription(kFrom, 16);
  resume.from_ranges = {sub.ranges[0]};
  EXPECT_OK(c->Subscribe(resume).status());
}

TEST_F(DaemonSubscribePartitionTest, MalformedResumeRangesAreInvalid) {
  StartSplit();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  protocol::SubscribeRequest s = RowSubscription();
  s.from_ranges = std::vector<RangeSeq>{};
  const std::vector<uint8_t> base = s.Encode();  // ends with n = 0
  ASSERT_EQ(base[base.size() - 2], 0);
  // n announces more ranges than the payload holds (or than allowed).
  for (uint16_t n : {uint16_t{1}, uint16_t{4097}, uint16_t{65535}}) {
    std::vector<uint8_t> p(base.begin(), base.end() - 2);
    engine::PutFixed16(p, n);
    EXPECT_EQ(RawSubscribe(*c, p), WireStatus::kInvalid) << n;
  }
  // A range's bytes cut short, or trailing bytes.
  s.from_ranges = {{0, kBorder, 1}};
  std::vector<uint8_t> p = s.Encode();
  p.pop_back();
  EXPECT_EQ(RawSubscribe(*c, p), WireStatus::kInvalid);
  p = s.Encode();
  p.push_back(0);
  EXPECT_EQ(RawSubscribe(*c, p), WireStatus::kInvalid);
  // Empty, out of order, overlapping, or past the key space.
  for (const std::vector<RangeSeq>& bad :
       std::vector<std::vector<RangeSeq>>{{{5, 5, 0}},
                                          {{kBorder, kBorder + 4096, 0}, {0, kBorder, 0}},
                                          {{0, kBorder + 1, 0}, {kBorder, kBorder + 4096, 0}},
                                          {{0, engine::ChunkKey::kMaxCode + 2, 0}}}) {
    s.from_ranges = bad;
    EXPECT_EQ(RawSubscribe(*c, s.Encode()), WireStatus::kInvalid);
  }
  // has_from 3 is no value.
  p = RowSubscription().Encode();
  p[p.size() - 9] = 3;
  EXPECT_EQ(RawSubscribe(*c, p), WireStatus::kInvalid);
  // The connection still serves.
  EXPECT_OK(c->Subscribe(RowSubscription()).status());
}

// A server of one partition: the reply is as before (no ranges), and a
// per-range point holding its one partition resumes it.
TEST_F(DaemonSubscribePartitionTest, OnOnePartitionARangeHoldingItResumes) {
  Restart();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_OK_AND_ASSIGN(auto sub, c->Subscribe(RowSubscription()));
  EXPECT_TRUE(sub.ranges.empty());
  auto raw = c->Call(protocol::Opcode::kSubscribe, RowSubscription().Encode());
  ASSERT_OK(raw.status());
  EXPECT_EQ(raw->size(), 16u);
  ASSERT_OK_AND_ASSIGN(uint64_t v1, c->SetVoxels({{{VoxelOf(12), 3}}}));
  ASSERT_OK_AND_ASSIGN(uint64_t v2, c->SetVoxels({{{VoxelOf(18), 4}}}));
  auto other = Connect();
  ASSERT_NE(other, nullptr);
  protocol::SubscribeRequest resume = RowSubscription();
  resume.from_ranges = {{0, engine::ChunkKey::kMaxCode + 1, v1}};
  ASSERT_OK_AND_ASSIGN(auto resumed, other->Subscribe(resume));
  EXPECT_EQ(resumed.seq, v1);
  EXPECT_TRUE(resumed.ranges.empty());
  const std::vector<ChangeEvent> events = ReceiveUntilQuiet(*other, resumed.subscription);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].seq, v2);
  EXPECT_EQ(events[0].chunk, Code(18));
  // A range that does not hold the whole key space: RESYNC.
  resume.from_ranges = {{0, kBorder, v1}};
  auto r = other->Subscribe(resume);
  EXPECT_EQ(protocol::ServerStatusOf(r.status()), WireStatus::kResync) << r.status();
}

// `voxdb watch` on a node of several partitions: it says where it stopped
// per range, and `--from` with that resumes with exactly the changes after.
TEST_F(DaemonSubscribePartitionTest, WatchPrintsAndTakesPerRangeResumePoints) {
  StartSplit();
  auto writer = Connect();
  ASSERT_NE(writer, nullptr);
  const protocol::Box row = ChunkRow(kFrom, kTo);
  const std::vector<std::string> watch = {VOXDB_CLI_PATH,
                                          "watch",
                                          "box",
                                          std::to_string(row.lo.x),
                                          std::to_string(row.lo.y),
                                          std::to_string(row.lo.z),
                                          std::to_string(row.hi.x),
                                          std::to_string(row.hi.y),
                                          std::to_string(row.hi.z),
                                          "--address",
                                          "127.0.0.1:" + std::to_string(daemon_->port())};
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = watch;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return testing::RunProcess(argv, {"VOXDB_ADDRESS", "VOXDB_TOKEN"});
  };
  // One change on each side, then the watcher stops after both.
  testing::ChildProcess first(
      [&] {
        std::vector<std::string> argv = watch;
        argv.insert(argv.end(), {"--count", "2"});
        return argv;
      }(),
      {"VOXDB_ADDRESS", "VOXDB_TOKEN"});
  ASSERT_TRUE(first.ReadLine(testing::ChildProcess::kErr, std::chrono::seconds(30)).has_value());
  ASSERT_OK_AND_ASSIGN(const uint64_t left, writer->SetVoxels({{{VoxelOf(12), 3}}}));
  ASSERT_OK_AND_ASSIGN(const uint64_t right, writer->SetVoxels({{{VoxelOf(18), 4}}}));
  testing::ProcessResult r = first.Wait(std::chrono::seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find(absl::StrFormat("seq %u chunk", left)), std::string::npos) << r;
  EXPECT_NE(r.out.find(absl::StrFormat("seq %u chunk", right)), std::string::npos) << r;
  // Missed meanwhile: one change on each side.
  ASSERT_OK_AND_ASSIGN(const uint64_t left2, writer->SetVoxels({{{VoxelOf(13), 5}}}));
  ASSERT_OK_AND_ASSIGN(const uint64_t right2, writer->SetVoxels({{{VoxelOf(19), 6}}}));
  const std::string from = absl::StrFormat("0-%u:%u,%u-%u:%u", kBorder, left, kBorder,
                                           engine::ChunkKey::kMaxCode + 1, right);
  r = run({"--from", from, "--timeout", "700ms"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, absl::StrFormat("seq %u chunk %u,%u,%u key %u changed\n"
                                   "seq %u chunk %u,%u,%u key %u changed\n",
                                   left2, kCx + 13, kCy, kCz, Code(13), right2, kCx + 19, kCy, kCz,
                                   Code(19)))
      << r;
  EXPECT_NE(r.err.find("watching box "), std::string::npos) << r;
  EXPECT_NE(r.err.find("after " + from + "\n"), std::string::npos) << r;
  EXPECT_NE(r.err.find(absl::StrFormat("resume with --from 0-%u:%u,%u-%u:%u\n", kBorder, left2,
                                       kBorder, engine::ChunkKey::kMaxCode + 1, right2)),
            std::string::npos)
      << r;
  // A single --from means nothing across partitions; a malformed list is a
  // usage error.
  r = run({"--from", std::to_string(left), "--timeout", "1"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_NE(r.err.find("per-range"), std::string::npos) << r;
  r = run({"--from", "5-:7", "--timeout", "1"});
  EXPECT_EQ(r.exit_code, 2) << r;
}

}  // namespace
}  // namespace voxdb
