// PARTITION_SPLIT and PARTITION_MOVE through the real voxdbd, driven by
// `voxdb partition split|move` without --data: the layout changes while a
// writer writes on both sides of the border and a reader reads; every
// acknowledged write is there after (and after a restart), versions never
// go backwards, a moved single partition keeps serving LOD, queries and
// subscriptions, and bad requests change nothing.
#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "engine/morton.h"
#include "engine/status.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/run_process.h"
#include "tests/testing/stats.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using testing::DaemonProcess;
using testing::TempDir;

testing::ProcessResult Cli(uint16_t port, std::vector<std::string> args,
                           const std::string& token = "") {
  std::vector<std::string> argv = {VOXDB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--address");
  argv.push_back("127.0.0.1:" + std::to_string(port));
  if (!token.empty()) {
    argv.push_back("--token");
    argv.push_back(token);
  }
  return testing::RunProcess(argv, {"VOXDB_ADDRESS", "VOXDB_TOKEN"});
}

// As cli_partition_test.cc: the 16^3-chunk cube of kOrigin is one unit of
// 8^4 codes, and the cube next to it on x starts at kBorder.
constexpr engine::ChunkCoord kOrigin{1'000'000, 400'000, 312'496};
const uint64_t kUnit = engine::MortonEncode(kOrigin.x, kOrigin.y, kOrigin.z);
const uint64_t kBorder = kUnit + 4096;
constexpr uint64_t kBorderX = (kOrigin.x + 16) * 128;
constexpr uint64_t kY = kOrigin.y * 128 + 5, kZ = kOrigin.z * 128 + 7;
// The chunks on either side of the border the writer writes in.
const uint64_t kLeftChunk = engine::MortonEncode(kOrigin.x + 15, kOrigin.y, kOrigin.z);
const uint64_t kRightChunk = engine::MortonEncode(kOrigin.x + 16, kOrigin.y, kOrigin.z);

using Voxel = std::tuple<uint64_t, uint64_t, uint64_t>;

// Writes random voxels on both sides of the border until told to stop,
// remembering the last acknowledged material of each voxel (one writer:
// acknowledged in order).
struct Writer {
  explicit Writer(uint16_t port) : client(testing::ConnectWithHello(port)) {}
  void Run() {
    std::mt19937_64 rng(7);
    while (!stop) {
      protocol::SetVoxelsRequest set;
      std::map<Voxel, uint8_t> batch;
      for (int i = 0; i < 8; ++i) {
        const bool right = rng() % 2;
        const uint64_t x = right ? kBorderX + rng() % 50 : kBorderX - 1 - rng() % 50;
        const Voxel v{x, kY + rng() % 20, kZ + rng() % 20};
        const uint8_t m = static_cast<uint8_t>(1 + rng() % 250);
        set.edits.push_back({{std::get<0>(v), std::get<1>(v), std::get<2>(v)}, m});
        batch[v] = m;
      }
      auto version = client->SetVoxels(set);
      if (version.ok()) {
        for (const auto& [v, m] : batch) acked[v] = m;
        ++writes;
      } else {
        ++failures;
        last_error = version.status();
      }
    }
  }
  std::unique_ptr<protocol::Client> client;
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0}, failures{0};
  absl::Status last_error;
  std::map<Voxel, uint8_t> acked;
};

// Reads the two chunks until told to stop; counts versions that went back.
struct Reader {
  explicit Reader(uint16_t port) : client(testing::ConnectWithHello(port)) {}
  void Run() {
    const std::vector<uint64_t> codes = {kLeftChunk, kRightChunk};
    std::vector<uint64_t> seen(2, 0);
    while (!stop) {
      auto reply = client->GetChunks(codes);
      if (!reply.ok() || reply->results.size() != 2) {
        ++failures;
        continue;
      }
      for (size_t i = 0; i < 2; ++i) {
        if (reply->results[i].version < seen[i]) ++backwards;
        seen[i] = std::max(seen[i], reply->results[i].version);
      }
      ++reads;
    }
  }
  std::unique_ptr<protocol::Client> client;
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, failures{0}, backwards{0};
};

void ExpectAcked(protocol::Client& c, const std::map<Voxel, uint8_t>& acked) {
  protocol::GetVoxelsRequest get;
  std::vector<uint8_t> want;
  for (const auto& [v, m] : acked) {
    get.at.push_back({std::get<0>(v), std::get<1>(v), std::get<2>(v)});
    want.push_back(m);
  }
  auto got = c.GetVoxels(get);
  ASSERT_OK(got.status());
  size_t wrong = 0;
  for (size_t i = 0; i < want.size(); ++i) wrong += (*got)[i] != want[i];
  EXPECT_EQ(wrong, 0u) << "of " << want.size() << " acknowledged voxels";
}

TEST(DaemonPartitionTest, SplitOnlineWhileWritesAndReadsGoOn) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  std::map<Voxel, uint8_t> acked;
  {
    DaemonProcess d(VOXDBD_PATH, data);
    Writer writer(d.port());
    Reader reader(d.port());
    ASSERT_NE(writer.client, nullptr);
    ASSERT_NE(reader.client, nullptr);
    // A subscriber: its connection is closed by the change.
    auto sub = testing::ConnectWithHello(d.port());
    ASSERT_NE(sub, nullptr);
    protocol::SubscribeRequest req;
    req.region.kind = protocol::QueryKind::kBox;
    req.region.box = {{kBorderX - 128, kY, kZ}, {kBorderX + 128, kY + 32, kZ + 32}};
    ASSERT_OK(sub->Subscribe(req).status());
    // A stream over the written chunks whose client never reads: its
    // connection is closed too, and its stream lets go at once.
    auto streamer = testing::ConnectWithHello(d.port());
    ASSERT_NE(streamer, nullptr);
    protocol::StreamUpdateRequest update;
    update.viewers = {{1, static_cast<double>(kBorderX), static_cast<double>(kY),
                       static_cast<double>(kZ), 0, 0, 0, 500}};
    update.window_bytes = 64 << 10;
    ASSERT_OK(streamer->StreamUpdate(update));

    std::thread w([&] { writer.Run(); });
    std::thread r([&] { reader.Run(); });
    while (writer.writes < 50) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    ASSERT_OK(c->Flush());  // something for the copy's first pass
    testing::ProcessResult split =
        Cli(d.port(), {"partition", "split", "0", std::to_string(kBorder)});
    const int writes_at_split = writer.writes;
    while (writer.writes < writes_at_split + 50) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    writer.stop = reader.stop = true;
    w.join();
    r.join();
    ASSERT_EQ(split.exit_code, 0) << split;
    EXPECT_TRUE(absl::StartsWith(split.out, "ok split partition 0 into 1, 2: ")) << split;
    EXPECT_EQ(writer.failures, 0) << writer.last_error;
    EXPECT_EQ(reader.failures, 0);
    EXPECT_EQ(reader.backwards, 0);
    EXPECT_GT(reader.reads, 0);
    EXPECT_EQ(testing::Stat(*c, "partitions"), 2u);
    ExpectAcked(*c, writer.acked);
    acked = writer.acked;
    // The subscriber's connection was closed; subscribing again follows both
    // partitions, with a resume point for each.
    EXPECT_FALSE(sub->Ping().ok());
    EXPECT_FALSE(streamer->Ping().ok());
    auto again = c->Subscribe(req);
    ASSERT_OK(again.status());
    EXPECT_EQ(again->ranges.size(), 2u);
    // LOD levels are not kept on a node of several partitions yet: said so.
    auto lod = c->GetChunks(std::vector<uint64_t>{kLeftChunk}, 1);
    EXPECT_TRUE(IsUnsupported(lod.status())) << lod.status();
    EXPECT_TRUE(absl::StrContains(lod.status().message(), "several partitions")) << lod.status();
    // The new partitions are indexed: a query finds both chunks.
    protocol::QueryRequest q;
    q.kind = protocol::QueryKind::kBox;
    q.box = req.region.box;
    auto page = c->Query(q);
    ASSERT_OK(page.status());
    std::vector<uint64_t> codes;
    for (const auto& ch : page->chunks) codes.push_back(ch.code);
    std::sort(codes.begin(), codes.end());
    EXPECT_EQ(codes, (std::vector<uint64_t>{std::min(kLeftChunk, kRightChunk),
                                            std::max(kLeftChunk, kRightChunk)}));
    testing::ProcessResult list = Cli(d.port(), {"partition", "list"});
    EXPECT_EQ(list.exit_code, 0) << list;
    EXPECT_TRUE(absl::StartsWith(list.out, "partition 1 [0, ")) << list;
    EXPECT_TRUE(absl::StrContains(list.out, "\npartition 2 [")) << list;
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
  EXPECT_TRUE(std::filesystem::exists(data + "/node.manifest"));
  EXPECT_FALSE(std::filesystem::exists(data + "/data.mdb")) << "the root was split away";
  DaemonProcess d(VOXDBD_PATH, data);
  auto c = testing::ConnectWithHello(d.port());
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(testing::Stat(*c, "partitions"), 2u);
  ExpectAcked(*c, acked);
}

TEST(DaemonPartitionTest, MoveTheOnlyPartitionOnlineKeepsLodAndQueries) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string elsewhere = std::filesystem::absolute(dir.Sub("disk2/p0")).string();
  std::map<Voxel, uint8_t> acked;
  {
    DaemonProcess d(VOXDBD_PATH, data);
    Writer writer(d.port());
    ASSERT_NE(writer.client, nullptr);
    // A connection holding a snapshot: closed by the change.
    auto holder = testing::ConnectWithHello(d.port());
    ASSERT_NE(holder, nullptr);
    ASSERT_OK(holder->SnapshotOpen().status());
    // Reads of the LOD pyramid and LOD queries throughout: each answers OK,
    // or BUSY while the partition is detached, and nothing else.
    auto lod_reader = testing::ConnectWithHello(d.port());
    ASSERT_NE(lod_reader, nullptr);
    std::atomic<bool> stop_lod{false};
    std::atomic<int> lod_reads{0}, lod_busy{0}, lod_other{0};
    absl::Status lod_error;
    std::thread l([&] {
      protocol::QueryRequest q;
      q.kind = protocol::QueryKind::kBox;
      q.box = {{kBorderX - 128, kY, kZ}, {kBorderX + 128, kY + 32, kZ + 32}};
      q.level = 1;
      while (!stop_lod) {
        absl::Status s = lod_reader->GetChunks(std::vector<uint64_t>{kRightChunk >> 3}, 1).status();
        if (s.ok()) s = lod_reader->Query(q).status();
        if (s.ok()) {
          ++lod_reads;
        } else if (IsBusy(s)) {
          ++lod_busy;
        } else {
          ++lod_other;
          lod_error = s;
        }
      }
    });
    std::thread w([&] { writer.Run(); });
    while (writer.writes < 50) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    testing::ProcessResult moved = Cli(d.port(), {"partition", "move", "0", elsewhere});
    const int writes_at_move = writer.writes;
    while (writer.writes < writes_at_move + 50) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    writer.stop = true;
    w.join();
    stop_lod = true;
    l.join();
    EXPECT_EQ(lod_other, 0) << lod_error;
    EXPECT_GT(lod_reads, 0);
    ASSERT_EQ(moved.exit_code, 0) << moved;
    EXPECT_TRUE(absl::StartsWith(moved.out, "ok moved partition 0 into 0: ")) << moved;
    EXPECT_EQ(writer.failures, 0) << writer.last_error;
    EXPECT_TRUE(std::filesystem::exists(elsewhere + "/data.mdb"));
    EXPECT_FALSE(std::filesystem::exists(data + "/data.mdb"));

    EXPECT_FALSE(holder->Ping().ok()) << "the snapshot's connection was closed";
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(testing::Stat(*c, "partitions"), 1u);
    ExpectAcked(*c, writer.acked);
    // A snapshot of the moved partition opens and reads what was written.
    auto snap = c->SnapshotOpen();
    ASSERT_OK(snap.status());
    auto got = c->SnapshotGet(snap->snapshot, std::vector<uint64_t>{kRightChunk});
    ASSERT_OK(got.status());
    ASSERT_EQ(got->results.size(), 1u);
    EXPECT_GT(got->results[0].version, 0u);
    ASSERT_OK(c->SnapshotClose(snap->snapshot));
    acked = writer.acked;
    // One partition again: LOD, queries and subscriptions are served, from
    // the new environment (its pyramid rebuilt from the chunks).
    ASSERT_OK(c->Flush());
    ASSERT_OK(c->LodSync());
    const uint64_t node = kRightChunk >> 3;
    auto lod = c->GetChunks(std::vector<uint64_t>{node}, 1);
    ASSERT_OK(lod.status());
    ASSERT_EQ(lod->results.size(), 1u);
    EXPECT_EQ(lod->results[0].status, 0);
    EXPECT_GT(lod->results[0].version, 0u) << "the level-1 node over written chunks was built";
    protocol::QueryRequest q;
    q.kind = protocol::QueryKind::kBox;
    q.box = {{kBorderX - 128, kY, kZ}, {kBorderX + 128, kY + 32, kZ + 32}};
    auto page = c->Query(q);
    ASSERT_OK(page.status());
    EXPECT_EQ(page->chunks.size(), 2u);
    protocol::SubscribeRequest sub;
    sub.region.kind = protocol::QueryKind::kBox;
    sub.region.box = q.box;
    ASSERT_OK(c->Subscribe(sub).status());
    protocol::SetVoxelsRequest set;
    set.edits = {{{kBorderX + 3, kY + 3, kZ + 3}, 9}};
    ASSERT_OK(c->SetVoxels(set).status());
    acked[{kBorderX + 3, kY + 3, kZ + 3}] = 9;
    auto pushed = c->ReceivePush(std::chrono::milliseconds(10'000));
    EXPECT_OK(pushed.status());
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
  DaemonProcess d(VOXDBD_PATH, data);
  auto c = testing::ConnectWithHello(d.port());
  ASSERT_NE(c, nullptr);
  ExpectAcked(*c, acked);
}

TEST(DaemonPartitionTest, BadRequestsAreRefusedAndChangeNothing) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  DaemonProcess d(VOXDBD_PATH, data,
                  {"--token", "admin:the-admin-secret", "--token", "write:the-write-secret"});
  auto c = testing::ConnectWithHello(d.port(), "the-admin-secret");
  ASSERT_NE(c, nullptr);
  protocol::SetVoxelsRequest set;
  set.edits = {{{kBorderX, kY, kZ}, 5}};
  ASSERT_OK(c->SetVoxels(set).status());
  const std::string admin = "the-admin-secret";
  auto refused = [&](std::vector<std::string> args, const std::string& status,
                     const std::string& token) {
    testing::ProcessResult r = Cli(d.port(), args, token);
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_TRUE(absl::StrContains(r.err, status)) << r;
  };
  refused({"partition", "split", "0", std::to_string(kBorder + 8)}, "INVALID", admin);
  refused({"partition", "split", "0", "0"}, "INVALID", admin);
  refused({"partition", "split", "7", std::to_string(kBorder)}, "NOT_FOUND", admin);
  refused({"partition", "move", "7", "/tmp/nowhere"}, "NOT_FOUND", admin);
  refused({"partition", "move", "0", "relative/dir"}, "INVALID", admin);
  refused({"partition", "move", "0", data + "/partitions/9"}, "INVALID", admin);
  refused({"partition", "move", "0", data}, "INVALID", admin);
  refused({"partition", "move", "0", dir.Sub("a") + "/../b"}, "INVALID", admin);
  const std::string full = dir.Sub("full");
  std::filesystem::create_directories(full);
  std::ofstream(full + "/something") << "x";
  refused({"partition", "move", "0", full}, "INVALID", admin);
  refused({"partition", "move", "0", full + "/something"}, "INVALID", admin);
  refused({"partition", "split", "0", std::to_string(kBorder)}, "PERMISSION_DENIED",
          "the-write-secret");
  // An over-long directory is refused by the payload's bound.
  protocol::PartitionMoveRequest move;
  move.dir = "/" + std::string(5000, 'a');
  auto reply = c->Call(protocol::Opcode::kPartitionMove, move.Encode());
  EXPECT_TRUE(absl::IsInvalidArgument(reply.status())) << reply.status();

  EXPECT_FALSE(std::filesystem::exists(data + "/node.manifest"));
  EXPECT_FALSE(std::filesystem::exists(data + "/partitions"));
  EXPECT_EQ(testing::Stat(*c, "partitions"), 1u);
  protocol::GetVoxelsRequest get;
  get.at = {{kBorderX, kY, kZ}};
  auto got = c->GetVoxels(get);
  ASSERT_OK(got.status());
  EXPECT_EQ(*got, std::vector<uint8_t>{5});
  // The connection stays, and a snapshot still opens (nothing detached).
  EXPECT_OK(c->SnapshotOpen().status());
}

}  // namespace
}  // namespace voxdb
