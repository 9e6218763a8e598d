// A node of several partitions seen from outside, against the real voxdbd:
// /metrics labels a few gauges by partition, `voxdb info` (PARTITIONS)
// lists the partitions, and after the layout changes offline (`voxdb
// partition split|move`) and voxdbd restarts, both follow the new layout:
// no series of a partition that went away.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <csignal>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli/json.h"
#include "engine/morton.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/metrics_page.h"
#include "tests/testing/run_process.h"
#include "tests/testing/stats.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using cli::Json;
using testing::DaemonProcess;
using testing::TempDir;

testing::ProcessResult RunCli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {VOXDB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::RunProcess(argv, {"VOXDB_ADDRESS", "VOXDB_TOKEN"});
}

// Two chunks side by side, in two units of 8^4 codes: kBorder starts the
// second one.
constexpr engine::ChunkCoord kOrigin{1'000'000, 400'000, 312'496};
const uint64_t kUnit = engine::MortonEncode(kOrigin.x, kOrigin.y, kOrigin.z);
const uint64_t kBorder = kUnit + 4096;
constexpr uint64_t kBorderX = (kOrigin.x + 16) * 128;
constexpr uint64_t kY = kOrigin.y * 128 + 5, kZ = kOrigin.z * 128 + 7;
const uint64_t kEnd = engine::MortonRange::All().end;

std::string Series(const std::string& family, uint64_t partition) {
  return absl::StrCat(family, "{partition=\"", partition, "\"}");
}

// The page's samples, after promtool found nothing to say about it.
std::map<std::string, double> Scrape(const DaemonProcess& d, const TempDir& dir) {
  const testing::HttpReply reply = testing::HttpGet(d.metrics_port(), "/metrics");
  EXPECT_NE(reply.status_line.find(" 200"), std::string::npos) << reply.status_line;
  const auto [status, findings] = testing::RunWithInput("promtool check metrics", reply.body, dir);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << findings;
  EXPECT_EQ(findings, "");
  return testing::ParseSamples(reply.body);
}

// The partitions labelled on the page, per family.
std::map<std::string, std::vector<std::string>> Labelled(
    const std::map<std::string, double>& samples) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [series, value] : samples) {
    const size_t brace = series.find("{partition=\"");
    if (brace == std::string::npos) continue;
    const size_t start = brace + 12;
    out[series.substr(0, brace)].push_back(series.substr(start, series.find('"', start) - start));
  }
  return out;
}

// One partition as `voxdb info --json` lists it.
struct Listed {
  uint64_t id, begin, end, chunks, last_seq, epoch;
  std::string dir;
};
std::vector<Listed> ListedPartitions(const std::string& address) {
  testing::ProcessResult r = RunCli({"--address", address, "--json", "info"});
  EXPECT_EQ(r.exit_code, 0) << r;
  auto j = Json::Parse(r.out);
  EXPECT_TRUE(j.ok()) << r;
  std::vector<Listed> out;
  if (!j.ok() || !(*j)["partitions"].is_array()) {
    ADD_FAILURE() << "no partitions array in " << r;
    return out;
  }
  for (const Json& p : (*j)["partitions"].items()) {
    out.push_back({p["id"].u64(), p["begin"].u64(), p["end"].u64(), p["chunks"].u64(),
                   p["last_seq"].u64(), p["epoch"].u64(), p["dir"].str()});
    EXPECT_GT(p["max_map_size_bytes"].u64(), 0u);
  }
  return out;
}

std::string Address(const DaemonProcess& d) { return "127.0.0.1:" + std::to_string(d.port()); }

TEST(PartitionInfoTest, MetricsAndInfoFollowTheLayout) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  const protocol::Box box{{kBorderX - 40, kY, kZ}, {kBorderX + 40, kY + 30, kZ + 20}};
  const std::vector<uint8_t> voxels((box.hi.x - box.lo.x) * 30 * 20, 5);

  // One partition: the root, id 0, every code, in DATA itself.
  {
    DaemonProcess d(VOXDBD_PATH, data);
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    ASSERT_OK(c->WriteBox(box, voxels).status());
    ASSERT_OK(c->Flush());
    const auto m = Scrape(d, dir);
    EXPECT_EQ(m.at("voxdb_partitions"), 1);
    EXPECT_EQ(m.at(Series("voxdb_partition_stored_chunks", 0)), 2);
    EXPECT_EQ(m.at(Series("voxdb_partition_stored_chunks", 0)), m.at("voxdb_stored_chunks"));
    EXPECT_EQ(m.at(Series("voxdb_partition_lmdb_used_bytes", 0)), m.at("voxdb_lmdb_used_bytes"));
    EXPECT_EQ(m.at(Series("voxdb_partition_lmdb_map_size_bytes", 0)),
              m.at("voxdb_lmdb_map_size_bytes"));
    EXPECT_EQ(m.at(Series("voxdb_partition_lmdb_max_map_size_bytes", 0)),
              double(uint64_t{1} << 40));
    EXPECT_EQ(m.at(Series("voxdb_partition_last_sequence", 0)),
              m.at("voxdb_journal_last_sequence"));
    EXPECT_EQ(m.at(Series("voxdb_partition_epoch", 0)), 0);
    const auto listed = ListedPartitions(Address(d));
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].id, 0u);
    EXPECT_EQ(listed[0].begin, 0u);
    EXPECT_EQ(listed[0].end, kEnd);
    EXPECT_EQ(listed[0].dir, ".");
    EXPECT_EQ(listed[0].chunks, 2u);
    EXPECT_EQ(listed[0].last_seq, 1u);
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }

  // Split at the border: partitions 1 and 2, one chunk each.
  testing::ProcessResult split =
      RunCli({"partition", "split", "0", std::to_string(kBorder), "--data", data});
  ASSERT_EQ(split.exit_code, 0) << split;
  {
    DaemonProcess d(VOXDBD_PATH, data);
    auto c = testing::ConnectWithHello(d.port());
    ASSERT_NE(c, nullptr);
    // A write to partition 2 only: its sequence moves, 1's does not.
    protocol::SetVoxelsRequest set;
    set.edits = {{{kBorderX, kY, kZ}, 9}};
    ASSERT_OK(c->SetVoxels(set).status());
    ASSERT_OK(c->Flush());
    const auto m = Scrape(d, dir);
    EXPECT_EQ(m.at("voxdb_partitions"), 2);
    EXPECT_EQ(m.at("voxdb_stored_chunks"), 2);
    EXPECT_EQ(m.at(Series("voxdb_partition_stored_chunks", 1)), 1);
    EXPECT_EQ(m.at(Series("voxdb_partition_stored_chunks", 2)), 1);
    EXPECT_EQ(m.at(Series("voxdb_partition_last_sequence", 1)), 1);
    EXPECT_EQ(m.at(Series("voxdb_partition_last_sequence", 2)), 2);
    EXPECT_EQ(m.at(Series("voxdb_partition_lmdb_used_bytes", 1)) +
                  m.at(Series("voxdb_partition_lmdb_used_bytes", 2)),
              m.at("voxdb_lmdb_used_bytes"));
    for (const auto& [family, partitions] : Labelled(m)) {
      EXPECT_EQ(partitions, (std::vector<std::string>{"1", "2"})) << family;
    }
    EXPECT_EQ(Labelled(m).size(), 7u);

    const std::string address = Address(d);
    testing::ProcessResult text = RunCli({"--address", address, "info"});
    ASSERT_EQ(text.exit_code, 0) << text;
    const size_t at = text.out.find("\n# partitions\n");
    ASSERT_NE(at, std::string::npos) << text;
    EXPECT_EQ(text.out.substr(at + 14),
              absl::StrCat("1 range=[0,", kBorder, ") dir=partitions/1 chunks=1 bytes=",
                           uint64_t(m.at(Series("voxdb_partition_stored_chunk_bytes", 1))),
                           " last_seq=1 epoch=0\n", "2 range=[", kBorder, ",", kEnd,
                           ") dir=partitions/2 chunks=1 bytes=",
                           uint64_t(m.at(Series("voxdb_partition_stored_chunk_bytes", 2))),
                           " last_seq=2 epoch=0\n"))
        << text;
    const auto listed = ListedPartitions(address);
    ASSERT_EQ(listed.size(), 2u);
    EXPECT_EQ(listed[0].id, 1u);
    EXPECT_EQ(listed[0].end, kBorder);
    EXPECT_EQ(listed[0].dir, "partitions/1");
    EXPECT_EQ(listed[1].id, 2u);
    EXPECT_EQ(listed[1].begin, kBorder);
    EXPECT_EQ(listed[1].end, kEnd);
    EXPECT_EQ(listed[1].last_seq, 2u);
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }

  // Partition 1 split again (into 3 and 4), partition 2 moved out of DATA.
  split = RunCli({"partition", "split", "1", "4096", "--data", data});
  ASSERT_EQ(split.exit_code, 0) << split;
  const std::string elsewhere = std::filesystem::absolute(dir.Sub("disk2/p2")).string();
  testing::ProcessResult moved = RunCli({"partition", "move", "2", elsewhere, "--data", data});
  ASSERT_EQ(moved.exit_code, 0) << moved;
  {
    DaemonProcess d(VOXDBD_PATH, data);
    const auto m = Scrape(d, dir);
    EXPECT_EQ(m.at("voxdb_partitions"), 3);
    for (const auto& [family, partitions] : Labelled(m)) {
      EXPECT_EQ(partitions, (std::vector<std::string>{"2", "3", "4"})) << family;
    }
    EXPECT_EQ(m.at(Series("voxdb_partition_stored_chunks", 3)), 0);
    EXPECT_EQ(m.at(Series("voxdb_partition_stored_chunks", 4)), 1);
    EXPECT_EQ(m.at(Series("voxdb_partition_stored_chunks", 2)), 1);
    EXPECT_EQ(m.count(Series("voxdb_partition_stored_chunks", 1)), 0u);
    const auto listed = ListedPartitions(Address(d));
    ASSERT_EQ(listed.size(), 3u);
    EXPECT_EQ(listed[0].id, 3u);
    EXPECT_EQ(listed[0].end, 4096u);
    EXPECT_EQ(listed[0].dir, "partitions/3");
    EXPECT_EQ(listed[1].id, 4u);
    EXPECT_EQ(listed[1].begin, 4096u);
    EXPECT_EQ(listed[1].chunks, 1u);
    EXPECT_EQ(listed[2].id, 2u);
    EXPECT_EQ(listed[2].dir, elsewhere);
    EXPECT_EQ(listed[2].last_seq, 2u);
    ASSERT_EQ(d.StopWith(SIGTERM), 0);
  }
}

// PARTITIONS is a read request: a read token lists them; a payload is
// refused.
TEST(PartitionInfoTest, PartitionsNeedsTheReadRoleAndNoPayload) {
  TempDir dir;
  DaemonProcess d(VOXDBD_PATH, dir.Sub("data"),
                  {"--token", "read:partition-info-read-secret-0123"});
  ASSERT_OK_AND_ASSIGN(auto c, protocol::Client::Connect("127.0.0.1", d.port()));
  // Not authenticated yet.
  const auto refused = c->Partitions();
  EXPECT_TRUE(absl::IsUnauthenticated(refused.status())) << refused.status();
  ASSERT_OK(c->Hello("partition-info-read-secret-0123").status());
  ASSERT_OK_AND_ASSIGN(protocol::PartitionsReply reply, c->Partitions());
  ASSERT_EQ(reply.partitions.size(), 1u);
  EXPECT_EQ(reply.partitions[0].dir, ".");
  EXPECT_TRUE(reply.partitions[0].has_store);
  EXPECT_GT(reply.partitions[0].max_map_size, 0u);
  auto raw = c->Call(protocol::Opcode::kPartitions, std::vector<uint8_t>{1});
  EXPECT_TRUE(absl::IsInvalidArgument(raw.status())) << raw.status();
}

}  // namespace
}  // namespace voxdb
