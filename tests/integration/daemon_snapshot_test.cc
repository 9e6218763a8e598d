// Snapshots through voxdbd (SNAPSHOT_OPEN / SCAN / GET / CLOSE): a
// point-in-time view read in many requests while writes and flushes go on,
// against the real voxdbd binary.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/chunk_codec.h"
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

using engine::ChunkKey;
using protocol::Box;
using protocol::Client;
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

class DaemonSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"));
    client_ = Connect();
  }
  std::unique_ptr<Client> Connect() { return testing::ConnectWithHello(daemon_->port()); }
  // version and decoded voxels of each result.
  static std::vector<std::pair<uint64_t, std::vector<uint8_t>>> Decode(
      const protocol::GetChunksReply& reply) {
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> out;
    for (const auto& r : reply.results) {
      EXPECT_EQ(r.status, 0);
      std::vector<uint8_t> dense(kEdge * kEdge * kEdge);
      EXPECT_OK(engine::DecodeChunkToDense(r.bytes, dense.data()));
      out.emplace_back(r.version, std::move(dense));
    }
    return out;
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(DaemonSnapshotTest, ReadsOneMomentWhileWritesAndFlushesGoOn) {
  Client& c = *client_;
  // Chunk 0 stored, chunk 1 dirty, a fill over chunk 2 (unstored).
  ASSERT_OK(c.SetVoxels({{{VoxelOf(0), 5}}}).status());
  ASSERT_OK(c.Flush());
  ASSERT_OK(c.SetVoxels({{{VoxelOf(1), 6}}}).status());
  ASSERT_OK_AND_ASSIGN(uint64_t vf,
                       c.FillBox({{(kCx + 2) * kEdge, kCy * kEdge, kCz * kEdge},
                                  {(kCx + 2) * kEdge + 10, kCy * kEdge + 10, kCz * kEdge + 10}},
                                 9));
  const std::vector<uint64_t> codes = {Code(0), Code(1), Code(2), Code(3)};
  ASSERT_OK_AND_ASSIGN(protocol::GetChunksReply live_before, c.GetChunks(codes));
  const auto before = Decode(live_before);

  ASSERT_OK_AND_ASSIGN(protocol::SnapshotOpenReply snap, c.SnapshotOpen());
  EXPECT_EQ(snap.seq, vf);
  EXPECT_EQ(Stat(c, "snapshots_open"), 1u);

  // Another client changes everything, and it is flushed.
  auto other = Connect();
  ASSERT_OK(other->SetVoxels({{{VoxelOf(0), 50}, {VoxelOf(1), 60}, {VoxelOf(3), 70}}}).status());
  ASSERT_OK(other->DeleteChunk(Code(0)).status());
  ASSERT_OK(other
                ->FillBox({{kCx * kEdge, kCy * kEdge, kCz * kEdge},
                           {(kCx + 8) * kEdge, kCy * kEdge + 1, kCz * kEdge + 1}},
                          1)
                .status());
  ASSERT_OK(other->Flush());
  ASSERT_OK_AND_ASSIGN(protocol::GetChunksReply live_after, c.GetChunks(codes));
  EXPECT_NE(Decode(live_after), before);

  // The snapshot still reads the moment it was opened.
  ASSERT_OK_AND_ASSIGN(protocol::GetChunksReply in_snap, c.SnapshotGet(snap.snapshot, codes));
  EXPECT_EQ(Decode(in_snap), before);

  // Its scan: the chunks with a record then (0 and 1; 2 only reads as the
  // fill, 3 did not exist), one a page, and the fill on the first page.
  protocol::SnapshotScanRequest scan;
  scan.snapshot = snap.snapshot;
  scan.box = ChunkRow(0, 8);
  scan.limit = 1;
  std::vector<protocol::QueryChunk> chunks;
  std::vector<protocol::QueryFill> fills;
  for (int page = 0; page < 5; ++page) {
    ASSERT_OK_AND_ASSIGN(protocol::QueryReply r, c.SnapshotScan(scan));
    chunks.insert(chunks.end(), r.chunks.begin(), r.chunks.end());
    fills.insert(fills.end(), r.fills.begin(), r.fills.end());
    if (r.next_cursor.empty()) break;
    scan.cursor = r.next_cursor;
  }
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].code, std::min(Code(0), Code(1)));
  EXPECT_EQ(chunks[1].code, std::max(Code(0), Code(1)));
  for (const auto& ch : chunks) {
    EXPECT_EQ(ch.version, ch.code == Code(0) ? before[0].first : before[1].first);
  }
  ASSERT_EQ(fills.size(), 1u);
  EXPECT_EQ(fills[0].seq, vf);
  EXPECT_EQ(fills[0].material, 9);

  // Closing it: the handle is gone.
  ASSERT_OK(c.SnapshotClose(snap.snapshot));
  EXPECT_EQ(Stat(c, "snapshots_open"), 0u);
  EXPECT_TRUE(absl::IsNotFound(c.SnapshotGet(snap.snapshot, codes).status()));
  EXPECT_TRUE(absl::IsNotFound(c.SnapshotClose(snap.snapshot)));
}

TEST_F(DaemonSnapshotTest, LimitsErrorsAndTheEndOfTheConnection) {
  Client& c = *client_;
  std::vector<uint64_t> handles;
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(protocol::SnapshotOpenReply s, c.SnapshotOpen());
    handles.push_back(s.snapshot);
  }
  // A fifth is refused (BUSY) until one is closed.
  EXPECT_TRUE(IsBusy(c.SnapshotOpen().status()));
  ASSERT_OK(c.SnapshotClose(handles.back()));
  handles.pop_back();
  ASSERT_OK_AND_ASSIGN(protocol::SnapshotOpenReply fifth, c.SnapshotOpen());
  handles.push_back(fifth.snapshot);
  // Pipelined opens cannot pass the limit together: of 8 sent at once, the
  // connection (holding 4) gets none.
  ASSERT_OK(c.SnapshotClose(handles.back()));
  handles.pop_back();
  std::vector<protocol::Request> opens(8, {protocol::Opcode::kSnapshotOpen, {}});
  int granted = 0;
  for (const auto& r : c.CallBatch(opens)) {
    if (r.ok()) {
      ++granted;
      ASSERT_OK_AND_ASSIGN(protocol::SnapshotOpenReply s, protocol::SnapshotOpenReply::Decode(*r));
      handles.push_back(s.snapshot);
    } else {
      EXPECT_TRUE(IsBusy(r.status())) << r.status();
    }
  }
  EXPECT_EQ(granted, 1);
  // Handles are the connection's own.
  auto other = Connect();
  const uint64_t code = Code(0);
  EXPECT_TRUE(absl::IsNotFound(other->SnapshotGet(handles[0], {&code, 1}).status()));
  // Bad requests: a cursor, a box outside the world, a limit.
  protocol::SnapshotScanRequest scan;
  scan.snapshot = handles[0];
  scan.box = ChunkRow(0, 8);
  scan.cursor = {1, 2, 3};
  EXPECT_TRUE(absl::IsInvalidArgument(c.SnapshotScan(scan).status()));
  scan.cursor.clear();
  scan.limit = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(c.SnapshotScan(scan).status()));
  scan.limit = 10;
  scan.box.hi.z = ~uint64_t{0};
  EXPECT_TRUE(IsOutOfBounds(c.SnapshotScan(scan).status()));
  EXPECT_EQ(Stat(*other, "snapshots_open"), 4u);
  // The server's own limit (32 by default): 8 more connections of 4 each
  // reach it; the next is refused.
  std::vector<std::unique_ptr<Client>> more;
  int opened = 0;
  for (int i = 0; i < 8; ++i) {
    more.push_back(Connect());
    for (int j = 0; j < 4; ++j) {
      auto s = more.back()->SnapshotOpen();
      if (s.ok()) {
        ++opened;
      } else {
        EXPECT_TRUE(IsBusy(s.status())) << s.status();
      }
    }
  }
  EXPECT_EQ(opened, 28);
  EXPECT_EQ(Stat(*other, "snapshots_open"), 32u);
  more.clear();
  testing::WaitUntil([&] { return Stat(*other, "snapshots_open") == 4; }, std::chrono::seconds(5));
  EXPECT_EQ(Stat(*other, "snapshots_open"), 4u);
  // A cursor past the box is an empty last page.
  protocol::SnapshotScanRequest past;
  past.snapshot = handles[0];
  past.box = ChunkRow(0, 8);
  past.cursor = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0};
  ASSERT_OK_AND_ASSIGN(protocol::QueryReply empty, c.SnapshotScan(past));
  EXPECT_TRUE(empty.chunks.empty() && empty.next_cursor.empty());
  // The end of the connection closes its snapshots.
  client_.reset();
  testing::WaitUntil([&] { return Stat(*other, "snapshots_open") == 0; }, std::chrono::seconds(5));
  EXPECT_EQ(Stat(*other, "snapshots_open"), 0u);
}

// SIGTERM while a client holds snapshots: voxdbd ends them before it closes
// the database, and exits 0 with everything flushed.
TEST_F(DaemonSnapshotTest, StopsCleanlyWithSnapshotsOpen) {
  ASSERT_OK(client_->SetVoxels({{{VoxelOf(0), 5}}}).status());
  ASSERT_OK(client_->SnapshotOpen().status());
  ASSERT_OK(client_->SnapshotOpen().status());
  const int status = daemon_->StopWith(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // Restarted, the write is there.
  client_.reset();
  daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"));
  client_ = Connect();
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> got, client_->GetVoxels({{VoxelOf(0)}}));
  EXPECT_EQ(got, std::vector<uint8_t>{5});
}

}  // namespace
}  // namespace voxdb
