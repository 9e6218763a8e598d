// `voxdb partition list|split|move` (offline) and the real voxdbd serving
// the node it leaves: what was written before the split reads back the same
// through the daemon, requests across the new border are split and merged,
// queries and subscriptions span the partitions.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
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

testing::ProcessResult RunCli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {VOXDB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::RunProcess(argv, {"VOXDB_ADDRESS", "VOXDB_TOKEN"});
}

// Chunks around 45.8 N, 6.9 E at sea level: the 16^3-chunk cube of kOrigin
// is one unit of 8^4 codes, the cube next to it on x the next unit.
constexpr engine::ChunkCoord kOrigin{1'000'000, 400'000, 312'496};
const uint64_t kUnit = engine::MortonEncode(kOrigin.x, kOrigin.y, kOrigin.z);
const uint64_t kBorder = kUnit + 4096;  // chunk x = kOrigin.x + 16 starts it
constexpr uint64_t kBorderX = (kOrigin.x + 16) * 128;
constexpr uint64_t kY = kOrigin.y * 128 + 5, kZ = kOrigin.z * 128 + 7;

protocol::Box AcrossTheBorder() {
  return {{kBorderX - 40, kY, kZ}, {kBorderX + 40, kY + 30, kZ + 20}};
}

std::vector<uint8_t> BoxVoxels(uint8_t seed) {
  const protocol::Box b = AcrossTheBorder();
  std::vector<uint8_t> v((b.hi.x - b.lo.x) * (b.hi.y - b.lo.y) * (b.hi.z - b.lo.z));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(1 + (i * 7 + seed) % 9);
  return v;
}

// The chunks of the box's query, as codes.
std::vector<uint64_t> QueryCodes(protocol::Client& c) {
  protocol::QueryRequest q;
  q.kind = protocol::QueryKind::kBox;
  q.box = AcrossTheBorder();
  auto page = c.Query(q);
  EXPECT_TRUE(page.ok()) << page.status();
  std::vector<uint64_t> codes;
  if (page.ok()) {
    for (const auto& ch : page->chunks) codes.push_back(ch.code);
  }
  return codes;
}

TEST(CliPartitionTest, ASplitAndMovedNodeServesWhatItHeld) {
  static_assert(kOrigin.x % 16 == 0 && kOrigin.y % 16 == 0 && kOrigin.z % 16 == 0);
  ASSERT_EQ(kUnit % 4096, 0u);
  TempDir dir;
  const std::string data = dir.Sub("data");
  const std::vector<uint8_t> voxels = BoxVoxels(3);
  std::vector<uint64_t> codes_before;
  {
    DaemonProcess d(VOXDBD_PATH, data);
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    ASSERT_OK(c->WriteBox(AcrossTheBorder(), voxels).status());
    ASSERT_OK(c->Flush());
    codes_before = QueryCodes(*c);
    EXPECT_EQ(testing::Stat(*c, "partitions"), 1u);
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
  ASSERT_EQ(codes_before.size(), 2u) << "the box covers one chunk on each side";

  // A split at a code that is not a multiple of 4096 is refused, whole.
  testing::ProcessResult bad =
      RunCli({"partition", "split", "0", std::to_string(kBorder + 8), "--data", data});
  EXPECT_EQ(bad.exit_code, 1) << bad;
  EXPECT_TRUE(absl::StrContains(bad.err, "INVALID")) << bad;
  EXPECT_FALSE(std::filesystem::exists(data + "/node.manifest"));

  testing::ProcessResult split =
      RunCli({"partition", "split", "0", std::to_string(kBorder), "--data", data});
  ASSERT_EQ(split.exit_code, 0) << split;
  EXPECT_TRUE(absl::StartsWith(split.out, "split partition 0 into 1, 2: 2 chunks")) << split;
  testing::ProcessResult list = RunCli({"partition", "list", "--data", data});
  ASSERT_EQ(list.exit_code, 0) << list;
  const std::vector<std::string> lines = absl::StrSplit(list.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << list;
  EXPECT_TRUE(absl::StartsWith(lines[0], "partition 1 [0, " + std::to_string(kBorder) + ")"))
      << list;
  EXPECT_TRUE(absl::StrContains(lines[1], "partition 2 [" + std::to_string(kBorder) + ", "))
      << list;
  EXPECT_TRUE(absl::StrContains(lines[0], ": 1 chunk,")) << list;
  EXPECT_FALSE(std::filesystem::exists(data + "/data.mdb")) << "the root was split away";

  // The daemon serves both partitions.
  const std::vector<uint8_t> edited = BoxVoxels(5);
  {
    DaemonProcess d(VOXDBD_PATH, data);
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(testing::Stat(*c, "partitions"), 2u);
    EXPECT_EQ(testing::Stat(*c, "chunks_stored"), 2u);
    auto read = c->ReadBox(AcrossTheBorder());
    ASSERT_OK(read.status());
    EXPECT_TRUE(*read == voxels);
    EXPECT_EQ(QueryCodes(*c), codes_before);
    // A write across the border lands in both.
    ASSERT_OK(c->WriteBox(AcrossTheBorder(), edited).status());
    read = c->ReadBox(AcrossTheBorder());
    ASSERT_OK(read.status());
    EXPECT_TRUE(*read == edited);
    protocol::SetVoxelsRequest set;
    set.edits = {{{kBorderX - 1, kY, kZ}, 42}, {{kBorderX, kY, kZ}, 43}};
    ASSERT_OK(c->SetVoxels(set).status());
    protocol::GetVoxelsRequest get;
    get.at = {{kBorderX - 1, kY, kZ}, {kBorderX, kY, kZ}};
    auto got = c->GetVoxels(get);
    ASSERT_OK(got.status());
    EXPECT_EQ(*got, (std::vector<uint8_t>{42, 43}));
    // A subscription across the border follows both partitions.
    protocol::SubscribeRequest sub;
    sub.region.kind = protocol::QueryKind::kBox;
    sub.region.box = AcrossTheBorder();
    auto subscribed = c->Subscribe(sub);
    ASSERT_OK(subscribed.status());
    EXPECT_EQ(subscribed->ranges.size(), 2u);
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }

  // Moved to another directory, it still serves the same.
  const std::string elsewhere = std::filesystem::absolute(dir.Sub("disk2/p2")).string();
  testing::ProcessResult moved = RunCli({"partition", "move", "2", elsewhere, "--data", data});
  ASSERT_EQ(moved.exit_code, 0) << moved;
  EXPECT_FALSE(std::filesystem::exists(data + "/partitions/2"));
  list = RunCli({"partition", "list", "--data", data, "--json"});
  ASSERT_EQ(list.exit_code, 0) << list;
  EXPECT_TRUE(absl::StrContains(list.out, "\"dir\":\"" + elsewhere + "\"")) << list;
  {
    DaemonProcess d(VOXDBD_PATH, data);
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    auto read = c->ReadBox(AcrossTheBorder());
    ASSERT_OK(read.status());
    std::vector<uint8_t> want = edited;
    // The two voxels SET_VOXELS changed, at (kBorderX - 1 or kBorderX, kY, kZ).
    want[(kBorderX - 1) - (kBorderX - 40)] = 42;
    want[kBorderX - (kBorderX - 40)] = 43;
    EXPECT_TRUE(*read == want);
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
}

// BACKUP and REINDEX on a node of several partitions: the backup is a node
// (manifest + one environment per partition) that voxdbd serves as it was.
TEST(CliPartitionTest, BackupAndReindexCoverEveryPartition) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  const std::vector<uint8_t> voxels = BoxVoxels(7);
  {
    DaemonProcess d(VOXDBD_PATH, data);
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    ASSERT_OK(c->WriteBox(AcrossTheBorder(), voxels).status());
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
  ASSERT_EQ(RunCli({"partition", "split", "0", std::to_string(kBorder), "--data", data}).exit_code,
            0);
  const std::string backup = std::filesystem::absolute(dir.Sub("backup")).string();
  std::vector<uint64_t> codes;
  {
    DaemonProcess d(VOXDBD_PATH, data);
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    auto entries = c->Reindex();
    ASSERT_OK(entries.status());
    EXPECT_EQ(*entries, 2u) << "one chunk on each side of the border";
    codes = QueryCodes(*c);
    EXPECT_EQ(codes.size(), 2u);
    // A fill after the reindex: the backup holds it too.
    protocol::SetVoxelsRequest set;
    set.edits = {{{kBorderX, kY, kZ}, 99}};
    ASSERT_OK(c->SetVoxels(set).status());
    auto bytes = c->Backup(backup);
    ASSERT_OK(bytes.status());
    EXPECT_GT(*bytes, 0u);
    // Refused, nothing touched: an existing destination, a relative one.
    EXPECT_TRUE(IsInvalidArgument(c->Backup(backup).status()));
    EXPECT_TRUE(IsInvalidArgument(c->Backup("relative/dir").status()));
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
  EXPECT_TRUE(std::filesystem::exists(backup + "/node.manifest"));
  EXPECT_FALSE(std::filesystem::exists(backup + ".partial"));
  testing::ProcessResult verify = RunCli({"verify", "--data", backup});
  EXPECT_EQ(verify.exit_code, 0) << verify;
  {
    DaemonProcess d(VOXDBD_PATH, backup);
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(testing::Stat(*c, "partitions"), 2u);
    std::vector<uint8_t> want = voxels;
    want[kBorderX - (kBorderX - 40)] = 99;
    auto read = c->ReadBox(AcrossTheBorder());
    ASSERT_OK(read.status());
    EXPECT_TRUE(*read == want);
    EXPECT_EQ(QueryCodes(*c), codes);
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
}

// The offline command refuses to run beside voxdbd, and says how it is used.
TEST(CliPartitionTest, RefusedWhileVoxdbdRunsAndOnBadUsage) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  DaemonProcess d(VOXDBD_PATH, data);
  testing::ProcessResult busy = RunCli({"partition", "list", "--data", data});
  EXPECT_EQ(busy.exit_code, 1) << busy;
  EXPECT_TRUE(absl::StrContains(busy.err, "BUSY")) << busy;
  testing::ProcessResult usage = RunCli({"partition", "split", "0", "--data", data});
  EXPECT_EQ(usage.exit_code, 2) << usage;
  testing::ProcessResult none = RunCli({"partition", "list", "--data", dir.Sub("nothing")});
  EXPECT_EQ(none.exit_code, 1) << none;
  EXPECT_TRUE(absl::StrContains(none.err, "NOT_FOUND")) << none;
}

}  // namespace
}  // namespace voxdb
