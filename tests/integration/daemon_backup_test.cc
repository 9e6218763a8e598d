// BACKUP: an online copy taken while writes go on holds every write
// acknowledged before the backup started; restoring is starting voxdbd on
// the copy; LMDB's own tools read it. And the files of a data directory
// under a running voxdbd: its lock, a deleted data.mdb, the map's maximum.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/pipelined_writes.h"
#include "tests/testing/run_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using protocol::Client;
using protocol::Opcode;
using testing::ChildProcess;
using testing::DaemonProcess;
using ::testing::HasSubstr;
using testing::kX;
using testing::kY;
using testing::kZ;
using testing::ReadFile;
using testing::StartLogging;
using testing::TempDir;
using namespace std::chrono_literals;

TEST(DaemonBackupTest, OnlineBackupUnderWritesHoldsEveryEarlierAcknowledgedWrite) {
  TempDir dir;
  const std::string backup = dir.Sub("backup");
  std::mutex mu;
  std::vector<protocol::SetVoxelsRequest::Edit> acked;  // in acknowledgement order
  size_t acked_before_backup = 0;
  {
    DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
    std::atomic<bool> go{true};
    std::vector<std::thread> writers;
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&, t] {
        testing::WritePipelined(
            daemon.port(), 8, go,
            [t](uint64_t i) {
              return testing::Edit{{kX + i, kY + uint64_t(t), kZ}, uint8_t(i % 200 + 1)};
            },
            [&](const testing::Edit& e) {
              std::lock_guard<std::mutex> l(mu);
              acked.push_back(e);
            });
      });
    }
    // Some flushed data too, so the copy has chunks as well as journal.
    auto admin = Client::Connect("127.0.0.1", daemon.port());
    ASSERT_TRUE(admin.ok());
    std::this_thread::sleep_for(200ms);
    ASSERT_OK((*admin)->Flush());
    std::this_thread::sleep_for(200ms);
    {
      std::lock_guard<std::mutex> l(mu);
      acked_before_backup = acked.size();
    }
    ASSERT_OK_AND_ASSIGN(uint64_t bytes, (*admin)->Backup(backup));
    EXPECT_GT(bytes, 0u);
    // A second backup to the same place is refused.
    EXPECT_TRUE(absl::IsInvalidArgument((*admin)->Backup(backup).status()));
    std::this_thread::sleep_for(200ms);  // writes go on after it
    go = false;
    for (auto& w : writers) w.join();
    EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
  }
  ASSERT_GT(acked_before_backup, 100u);
  ASSERT_GT(acked.size(), acked_before_backup);

  // LMDB's tools read the copy.
  const std::string stat = "mdb_stat -a " + backup + " >/dev/null 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(stat.c_str())), 0);

  // voxdb verify finds it whole (checksums, index, fills, journal).
  const std::string verify = std::string(VOXDB_CLI_PATH) + " verify --data " + backup;
  EXPECT_EQ(WEXITSTATUS(std::system(verify.c_str())), 0) << verify;

  // Restore: voxdbd on the copy.
  DaemonProcess restored(VOXDBD_PATH, backup);
  auto c = Client::Connect("127.0.0.1", restored.port());
  ASSERT_TRUE(c.ok());
  // Every write acknowledged before the backup: a later write to the same
  // voxel may have reached the copy too, so compare with the newest write
  // of each voxel acknowledged before the backup, or a later one.
  std::map<std::tuple<uint64_t, uint64_t, uint64_t>, std::vector<uint8_t>> history;
  for (const auto& e : acked) history[{e.at.x, e.at.y, e.at.z}].push_back(e.material);
  size_t missing = 0;
  for (size_t from = 0; from < acked_before_backup; from += 50'000) {
    const size_t to = std::min(acked_before_backup, from + 50'000);
    protocol::GetVoxelsRequest get;
    for (size_t i = from; i < to; ++i) get.at.push_back(acked[i].at);
    ASSERT_OK_AND_ASSIGN(auto got, (*c)->GetVoxels(get));
    for (size_t i = from; i < to; ++i) {
      const auto& h = history[{acked[i].at.x, acked[i].at.y, acked[i].at.z}];
      // Each voxel is written once per pass (its material is i % 200 + 1).
      missing += std::find(h.begin(), h.end(), got[i - from]) == h.end();
    }
  }
  EXPECT_EQ(missing, 0u) << "of " << acked_before_backup;
  EXPECT_EQ(restored.StopWith(SIGTERM), 0);
}

TEST(DaemonBackupTest, NeedsTheAdminRole) {
  TempDir dir;
  DaemonProcess daemon(
      VOXDBD_PATH, dir.Sub("data"),
      {"--token", "write:wwwwwwwwwwwwwwwwwwww", "--token", "admin:aaaaaaaaaaaaaaaaaaaa"});
  auto c = Client::Connect("127.0.0.1", daemon.port());
  ASSERT_TRUE(c.ok());
  ASSERT_OK((*c)->Hello("wwwwwwwwwwwwwwwwwwww"));
  EXPECT_TRUE(absl::IsPermissionDenied((*c)->Backup(dir.Sub("b")).status()));
  auto a = Client::Connect("127.0.0.1", daemon.port());
  ASSERT_OK((*a)->Hello("aaaaaaaaaaaaaaaaaaaa"));
  EXPECT_OK((*a)->Backup(dir.Sub("b")));
}

// Starts a voxdbd that is expected not to start, and returns how it ended
// (a voxdbd that does start is killed after a generous bound).
testing::ProcessResult RunVoxdbdExpectingRefusal(const std::string& data) {
  ChildProcess p(
      {VOXDBD_PATH, "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "off"});
  return p.Wait(std::chrono::seconds(30));
}

TEST(DaemonStorageTest, SecondVoxdbdOnOneDirectoryIsRefusedEvenWithoutTheLockFile) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  DaemonProcess first(VOXDBD_PATH, data);
  const std::string holder = "in use by process " + std::to_string(first.pid());
  testing::ProcessResult second = RunVoxdbdExpectingRefusal(data);
  EXPECT_EQ(second.exit_code, 1) << second;
  EXPECT_THAT(second.err, HasSubstr(holder)) << second;
  // A "stale lock" deleted: still refused, still naming the first.
  ASSERT_EQ(::unlink((data + "/LOCK").c_str()), 0);
  second = RunVoxdbdExpectingRefusal(data);
  EXPECT_EQ(second.exit_code, 1) << second;
  EXPECT_THAT(second.err, HasSubstr(holder)) << second;
  // The first goes on serving, and its writes last.
  auto c = Client::Connect("127.0.0.1", first.port());
  ASSERT_TRUE(c.ok());
  protocol::SetVoxelsRequest set;
  set.edits.push_back({{kX, kY, kZ}, 7});
  ASSERT_OK((*c)->SetVoxels(set).status());
  ASSERT_OK((*c)->Flush());
  c->reset();
  EXPECT_EQ(first.StopWith(SIGTERM), 0);
  DaemonProcess again(VOXDBD_PATH, data);
  auto r = Client::Connect("127.0.0.1", again.port());
  ASSERT_TRUE(r.ok());
  protocol::GetVoxelsRequest get;
  get.at.push_back({kX, kY, kZ});
  ASSERT_OK_AND_ASSIGN(auto got, (*r)->GetVoxels(get));
  EXPECT_EQ(got, std::vector<uint8_t>{7});
  EXPECT_EQ(again.StopWith(SIGTERM), 0);
}

protocol::SetVoxelsRequest OneEdit(uint64_t dx, uint8_t material) {
  protocol::SetVoxelsRequest set;
  set.edits.push_back({{kX + dx, kY, kZ}, material});
  return set;
}

TEST(DaemonStorageTest, DataFileDeletedUnderVoxdbdFailsWritesAndFlushClearly) {
  TempDir dir;
  const std::string data = dir.Sub("data"), log = dir.Sub("voxdbd.log");
  auto daemon = StartLogging(VOXDBD_PATH, data, log);
  auto c = Client::Connect("127.0.0.1", daemon->port());
  ASSERT_TRUE(c.ok());
  ASSERT_OK((*c)->SetVoxels(OneEdit(0, 5)).status());
  ASSERT_OK((*c)->Flush());
  ASSERT_EQ(::unlink((data + "/data.mdb").c_str()), 0);
  const absl::Status write = (*c)->SetVoxels(OneEdit(1, 6)).status();
  EXPECT_TRUE(absl::IsInternal(write)) << write;
  EXPECT_THAT(write.message(), HasSubstr("data.mdb was deleted")) << write;
  const absl::Status flush = (*c)->Flush();
  EXPECT_FALSE(flush.ok());
  EXPECT_THAT(flush.message(), HasSubstr("data.mdb was deleted")) << flush;
  // Reads go on.
  protocol::GetVoxelsRequest get;
  get.at.push_back({kX, kY, kZ});
  ASSERT_OK_AND_ASSIGN(auto got, (*c)->GetVoxels(get));
  EXPECT_EQ(got, std::vector<uint8_t>{5});
  const std::string text = ReadFile(log);
  EXPECT_THAT(text, HasSubstr("ERROR " + data + "/data.mdb was deleted")) << text;
  c->reset();
  EXPECT_EQ(WEXITSTATUS(daemon->StopWith(SIGTERM)), 1);  // its final flush cannot succeed
}

TEST(DaemonStorageTest, FullMapIsExplainedAndSighupRaisesItWithoutARestart) {
  TempDir dir;
  const std::string data = dir.Sub("data"), log = dir.Sub("voxdbd.log");
  const std::string conf = dir.Sub("voxdb.conf");
  std::ofstream(conf) << "max-map-size = 64MiB\n";
  auto daemon = StartLogging(VOXDBD_PATH, data, log, {"--config", conf});
  auto c = Client::Connect("127.0.0.1", daemon->port());
  ASSERT_TRUE(c.ok());
  // Incompressible chunks of 2 MiB until the 64 MiB map is full.
  std::mt19937 rng(7);
  std::vector<uint8_t> voxels(128 * 128 * 128);
  absl::Status full;
  uint64_t written = 0;
  for (; written < 100; ++written) {
    for (uint8_t& v : voxels) v = static_cast<uint8_t>(rng());
    const uint64_t x = kX + 128 * written;
    full = (*c)->WriteBox({{x, kY, kZ}, {x + 128, kY + 128, kZ + 128}}, voxels).status();
    if (!full.ok()) break;
  }
  ASSERT_TRUE(IsStorageFull(full)) << full;
  ASSERT_GT(written, 0u);
  EXPECT_THAT(full.message(), HasSubstr("maximum of 64 MiB")) << full;
  EXPECT_THAT(full.message(), HasSubstr("SIGHUP")) << full;
  const absl::Status flush = (*c)->Flush();
  EXPECT_TRUE(IsStorageFull(flush)) << flush;
  EXPECT_THAT(ReadFile(log), HasSubstr("ERROR the database map is at its maximum of 64 MiB"));

  // Raised in the config file, read on SIGHUP: no restart.
  std::ofstream(conf) << "max-map-size = 1GiB\n";
  ASSERT_EQ(kill(daemon->pid(), SIGHUP), 0);
  std::string text;
  testing::WaitUntil(
      [&] {
        text = ReadFile(log);
        return text.find("max-map-size is now 1GiB") != std::string::npos;
      },
      10s, 20ms);
  ASSERT_THAT(text, HasSubstr("max-map-size is now 1GiB"));
  ASSERT_OK((*c)->Flush());
  const uint64_t x = kX + 128 * written;
  ASSERT_OK((*c)->WriteBox({{x, kY, kZ}, {x + 128, kY + 128, kZ + 128}}, voxels).status());
  ASSERT_OK((*c)->Flush());
  c->reset();
  EXPECT_EQ(daemon->StopWith(SIGTERM), 0);

  // Everything acknowledged is there after a restart.
  DaemonProcess again(VOXDBD_PATH, data, {"--config", conf});
  auto r = Client::Connect("127.0.0.1", again.port());
  ASSERT_TRUE(r.ok());
  ASSERT_OK_AND_ASSIGN(auto back, (*r)->ReadBox({{x, kY, kZ}, {x + 128, kY + 128, kZ + 128}}));
  EXPECT_TRUE(back == voxels);
  EXPECT_EQ(again.StopWith(SIGTERM), 0);
}

TEST(DaemonBackupTest, RefusesNulAndRelativeDestinations) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  auto c = Client::Connect("127.0.0.1", daemon.port());
  ASSERT_TRUE(c.ok());
  // Cut at the NUL, this would be DIR/b.
  const std::string nul = dir.Sub("b") + std::string(1, '\0') + "x";
  absl::Status s = (*c)->Backup(nul).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("NUL")) << s;
  std::error_code ec;
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("b"), ec));
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("b.partial"), ec));
  // Relative to what? voxdbd's working directory, not the caller's: refused.
  s = (*c)->Backup("relative-backup").status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("not an absolute path")) << s;
  s = (*c)->Backup("").status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

TEST(DaemonBackupTest, NeverDeletesAPartialDirectoryItDidNotCreate) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  auto c = Client::Connect("127.0.0.1", daemon.port());
  ASSERT_TRUE(c.ok());
  const std::string dest = dir.Sub("nightly");
  ASSERT_EQ(::mkdir((dest + ".partial").c_str(), 0755), 0);
  std::ofstream(dest + ".partial/precious") << "not a backup";
  const absl::Status s = (*c)->Backup(dest).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("nightly.partial exists")) << s;
  EXPECT_EQ(ReadFile(dest + ".partial/precious"), "not a backup");
  std::error_code ec;
  EXPECT_FALSE(std::filesystem::exists(dest, ec));
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

TEST(DaemonBackupTest, CopyHasTheModesOfTheLiveData) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  DaemonProcess daemon(VOXDBD_PATH, data);
  auto c = Client::Connect("127.0.0.1", daemon.port());
  ASSERT_TRUE(c.ok());
  ASSERT_OK((*c)->SetVoxels(OneEdit(0, 3)).status());
  const std::string dest = dir.Sub("copy");
  ASSERT_OK_AND_ASSIGN(uint64_t bytes, (*c)->Backup(dest));
  struct stat live, file, directory;
  ASSERT_EQ(::stat((data + "/data.mdb").c_str(), &live), 0);
  ASSERT_EQ(::stat((dest + "/data.mdb").c_str(), &file), 0);
  ASSERT_EQ(::stat(dest.c_str(), &directory), 0);
  EXPECT_EQ(bytes, static_cast<uint64_t>(file.st_size));
  EXPECT_EQ(file.st_mode & 0777, live.st_mode & 0660) << std::oct << file.st_mode;
  EXPECT_EQ(file.st_mode & 0007, 0u) << std::oct << file.st_mode;
  EXPECT_EQ(directory.st_mode & 0777, (live.st_mode & 0040) ? 0750u : 0700u)
      << std::oct << directory.st_mode;
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

}  // namespace
}  // namespace voxdb
