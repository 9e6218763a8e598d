// The upgrade of a data directory written by voxdb 0.1 before partitions
// (tests/data/format-0.1: made by its make.sh with that build, killed with
// SIGKILL so that journal records were not flushed yet). This build opens it
// as a one-partition node, replays the journal, reads back what the old build
// read back (expected.txt), keeps the versions growing, passes `voxdb verify`,
// and can split it.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/morton.h"
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

const std::string kFixture = std::string(VOXDB_TEST_DATA_DIR) + "/format-0.1";

testing::ProcessResult RunCli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {VOXDB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::RunProcess(argv, {"VOXDB_ADDRESS", "VOXDB_TOKEN"});
}

uint64_t Number(const std::string& s) {
  uint64_t v = 0;
  EXPECT_TRUE(absl::SimpleAtoi(s, &v)) << s;
  return v;
}

// Checks every line of expected.txt against the server on `port`.
void ExpectWhatTheOldBuildRead(int port, const std::string& scratch) {
  auto c = testing::ConnectWithHello(port);
  ASSERT_NE(c, nullptr);
  std::ifstream in(kFixture + "/expected.txt");
  ASSERT_TRUE(in) << kFixture;
  std::string line;
  int voxels = 0, chunks = 0, boxes = 0;
  while (std::getline(in, line)) {
    SCOPED_TRACE(line);
    const std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    ASSERT_FALSE(f.empty());
    if (f[0] == "voxel") {
      ASSERT_EQ(f.size(), 5u);
      protocol::GetVoxelsRequest get;
      get.at = {{Number(f[1]), Number(f[2]), Number(f[3])}};
      auto got = c->GetVoxels(get);
      ASSERT_OK(got.status());
      EXPECT_EQ(*got, std::vector<uint8_t>{static_cast<uint8_t>(Number(f[4]))});
      ++voxels;
    } else if (f[0] == "chunk") {
      ASSERT_EQ(f.size(), 3u);
      const std::vector<std::string> xyz = absl::StrSplit(f[1], ',');
      ASSERT_EQ(xyz.size(), 3u);
      const uint64_t code = engine::MortonEncode(Number(xyz[0]), Number(xyz[1]), Number(xyz[2]));
      auto got = c->GetChunks(std::vector<uint64_t>{code});
      ASSERT_OK(got.status());
      ASSERT_EQ(got->results.size(), 1u);
      EXPECT_EQ(got->results[0].version, Number(f[2]));
      ++chunks;
    } else if (f[0] == "box") {
      ASSERT_EQ(f.size(), 8u);
      const std::string file = scratch + "/box.raw";
      testing::ProcessResult read = RunCli({"read-box", f[1], f[2], f[3], f[4], f[5], f[6], file,
                                            "--address", "127.0.0.1:" + std::to_string(port)});
      ASSERT_EQ(read.exit_code, 0) << read;
      testing::ProcessResult sum = testing::RunProcess({"/bin/sh", "-c", "sha256sum \"$0\"", file});
      ASSERT_EQ(sum.exit_code, 0) << sum;
      EXPECT_TRUE(absl::StartsWith(sum.out, f[7] + " ")) << sum;
      ++boxes;
    } else {
      ADD_FAILURE() << "unknown line";
    }
  }
  EXPECT_EQ(voxels, 11);
  EXPECT_EQ(chunks, 5);
  EXPECT_EQ(boxes, 1);
}

TEST(UpgradeTest, ADataDirectoryOfVersion01OpensReplaysAndSplits) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  std::filesystem::create_directories(data);
  testing::ProcessResult untar = testing::RunProcess(
      {"/bin/sh", "-c", "tar -C \"$0\" -xzf \"$1\"", data, kFixture + "/datadir.tar.gz"});
  ASSERT_EQ(untar.exit_code, 0) << untar;

  // Chunks A = (1000000, 400000, 312500) and B = A + 16 in x lie in two
  // neighbouring units of 8^4 codes; B's unit starts at the split point.
  const uint64_t border = engine::MortonEncode(1'000'016, 400'000, 312'496);
  ASSERT_EQ(border % 4096, 0u);
  // Voxels of chunks (1000000, 400000, 312507) and (1000016, 400000,
  // 312507), in A's and B's units, which expected.txt does not read.
  constexpr protocol::Voxel3 kOutsideA{128'000'002, 51'200'000, 40'001'000};
  constexpr protocol::Voxel3 kOutsideB{128'002'050, 51'200'000, 40'001'000};
  uint64_t first_new = 0;
  {
    DaemonProcess d(VOXDBD_PATH, data);
    ExpectWhatTheOldBuildRead(d.port(), dir.path());
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(testing::Stat(*c, "partitions"), 1u);
    // Versions go on after the old build's last write (10), past the block
    // of numbers it had reserved since it did not close cleanly
    // (FORMAT.md, `seq_reserved`). The chunk written is outside what
    // expected.txt reads.
    protocol::SetVoxelsRequest set;
    set.edits = {{kOutsideA, 77}};
    auto version = c->SetVoxels(set);
    ASSERT_OK(version.status());
    first_new = *version;
    EXPECT_EQ(first_new, 65'537u);
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
  testing::ProcessResult verify = RunCli({"verify", "--data", data});
  EXPECT_EQ(verify.exit_code, 0) << verify;
  EXPECT_TRUE(absl::StrContains(verify.out, "ok: no problems")) << verify;

  testing::ProcessResult split =
      RunCli({"partition", "split", "0", std::to_string(border), "--data", data});
  ASSERT_EQ(split.exit_code, 0) << split;
  EXPECT_EQ(split.err, "") << "the split's own removals are not leftovers of a crash";
  // The offline tools go through every partition.
  verify = RunCli({"verify", "--data", data});
  EXPECT_EQ(verify.exit_code, 0) << verify;
  EXPECT_TRUE(absl::StrContains(verify.out, "partition 1 [0, " + std::to_string(border) + ")"))
      << verify;
  EXPECT_TRUE(absl::StrContains(verify.out, "partition 2 [" + std::to_string(border) + ", "))
      << verify;
  EXPECT_TRUE(absl::StrContains(verify.out, "ok: 0 problems in 2 partitions")) << verify;
  verify = RunCli({"verify", "--data", data, "--json"});
  EXPECT_EQ(verify.exit_code, 0) << verify;
  EXPECT_TRUE(absl::StartsWith(verify.out, R"({"command":"verify","data":")")) << verify;
  EXPECT_TRUE(absl::StrContains(verify.out, R"("ok":true,"partitions":[{"partition":1,)"))
      << verify;
  EXPECT_EQ(std::count(verify.out.begin(), verify.out.end(), '\n'), 1) << "one object";
  testing::ProcessResult compact = RunCli({"compact", "--data", data});
  EXPECT_EQ(compact.exit_code, 0) << compact;
  EXPECT_TRUE(absl::StrContains(compact.out, "compacted partition 2 [")) << compact;
  testing::ProcessResult recover = RunCli({"recover", "--data", data, "--json"});
  EXPECT_EQ(recover.exit_code, 0) << recover;
  EXPECT_TRUE(absl::StrContains(recover.out, R"("damaged":false,"partitions":[)")) << recover;
  {
    DaemonProcess d(VOXDBD_PATH, data);
    ExpectWhatTheOldBuildRead(d.port(), dir.path());
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(testing::Stat(*c, "partitions"), 2u);
    protocol::GetVoxelsRequest get;
    get.at = {kOutsideA};
    auto got = c->GetVoxels(get);
    ASSERT_OK(got.status());
    EXPECT_EQ(*got, std::vector<uint8_t>{77});
    // Both children continue the parent's versions.
    protocol::SetVoxelsRequest set;
    set.edits = {{kOutsideA, 78}};
    auto left = c->SetVoxels(set);
    set.edits = {{kOutsideB, 79}};
    auto right = c->SetVoxels(set);
    ASSERT_OK(left.status());
    ASSERT_OK(right.status());
    EXPECT_EQ(*left, first_new + 1);
    EXPECT_EQ(*right, first_new + 1);
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
  // A partition's environment gone: the tools say which.
  std::filesystem::remove_all(data + "/partitions/2");
  verify = RunCli({"verify", "--data", data});
  EXPECT_EQ(verify.exit_code, 1) << verify;
  EXPECT_TRUE(absl::StrContains(verify.err, "NOT_FOUND")) << verify;
  EXPECT_TRUE(absl::StrContains(verify.err, "partitions/2")) << verify;
}

}  // namespace
}  // namespace voxdb
