// voxdbd's log: one line per event on stderr, a slow-request log, and the
// level changed by SIGHUP without a restart.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"

namespace voxdb {
namespace {

using protocol::Client;
using protocol::Opcode;
using testing::DaemonProcess;
using testing::ReadFile;
using testing::StartLogging;
using testing::TempDir;
using namespace std::chrono_literals;

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A request that surely takes more than 1 ms: a 16 MiB READ_BOX.
void SlowRequest(Client* c) {
  protocol::BoxRequest box;
  box.box = {{128'000'000, 51'200'000, 40'000'000}, {128'000'512, 51'200'512, 40'000'064}};
  ASSERT_OK(c->Call(Opcode::kReadBox, box.EncodeReadBox()));
}

TEST(DaemonLogTest, SlowRequestsAreLoggedAndSighupChangesTheLevel) {
  TempDir dir;
  const std::string conf = dir.Sub("voxdb.conf"), log = dir.Sub("voxdbd.log");
  std::ofstream(conf) << "log-level = error\nslow-request = 1ms\n";
  auto daemon = StartLogging(VOXDBD_PATH, dir.Sub("data"), log, {"--config", conf});
  auto c = Client::Connect("127.0.0.1", daemon->port());
  ASSERT_TRUE(c.ok());
  SlowRequest(c->get());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(Count(ReadFile(log), "slow request"), 0u) << ReadFile(log);  // warn < error

  std::ofstream(conf) << "log-level = warn\nslow-request = 1ms\n";
  ASSERT_EQ(kill(daemon->pid(), SIGHUP), 0);
  std::string text;
  testing::WaitUntil(
      [&] {
        text = ReadFile(log);
        return Count(text, "log level is now warn") > 0;
      },
      2s, 20ms);
  ASSERT_EQ(Count(text, "log level is now warn"), 1u) << text;
  SlowRequest(c->get());
  testing::WaitUntil(
      [&] {
        text = ReadFile(log);
        return Count(text, "slow request") > 0;
      },
      2s, 20ms);
  EXPECT_EQ(Count(text, "slow request: READ_BOX"), 1u) << text;
  // One line per event: a timestamp, a level, a message.
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    EXPECT_EQ(line.size() > 25 && line[4] == '-' && line[10] == 'T' && line[23] == 'Z', true)
        << line;
  }
  EXPECT_EQ(daemon->StopWith(SIGTERM), 0);
}

// The numbers N of the summary lines "N more <what> not logged in the last
// ..." in `text`.
uint64_t SumSuppressed(const std::string& text, const std::string& what) {
  uint64_t sum = 0;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t at = line.find(" more " + what + " not logged in the last ");
    if (at == std::string::npos) continue;
    const size_t start = line.rfind(' ', at - 1) + 1;
    sum += std::stoull(line.substr(start, at - start));
  }
  return sum;
}

// A client sending requests before authenticating cannot fill the log: the
// lines about them are rate-limited, and summary lines count the rest.
TEST(DaemonLogTest, UnauthenticatedRequestsAreLoggedAtABoundedRate) {
  TempDir dir;
  const std::string log = dir.Sub("voxdbd.log");
  auto daemon =
      StartLogging(VOXDBD_PATH, dir.Sub("data"), log, {"--token", "admin:aaaaaaaaaaaaaaaaaaaa"});
  auto c = Client::Connect("127.0.0.1", daemon->port());
  ASSERT_TRUE(c.ok());
  constexpr size_t kRequests = 20'000;
  protocol::GetVoxelsRequest get{{{128'000'000, 51'200'000, 40'000'000}}};
  const std::vector<protocol::Request> requests(kRequests, {Opcode::kGetVoxels, get.Encode()});
  const auto t0 = std::chrono::steady_clock::now();
  const auto results = (*c)->CallBatch(requests);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(results.size(), kRequests);
  for (const auto& r : results) ASSERT_TRUE(absl::IsUnauthenticated(r.status())) << r.status();

  // Every request is accounted for, by its own line or in a summary
  // (written within a second or so after the lines it counts).
  const std::string line = "before authenticating";
  std::string text;
  for (int i = 0; i < 250; ++i) {
    text = ReadFile(log);
    if (Count(text, line) + SumSuppressed(text, "unauthenticated requests") >= kRequests) break;
    std::this_thread::sleep_for(20ms);
  }
  const size_t logged = Count(text, line);
  EXPECT_EQ(logged + SumSuppressed(text, "unauthenticated requests"), kRequests) << text;
  // A burst of 20, then 5 a second (daemon/log.h), over the run and the wait.
  EXPECT_LE(logged, 100u) << text;
  EXPECT_GE(Count(text, "more unauthenticated requests not logged"), 1u) << text;
  EXPECT_NE(text.find("(from 1 peer address)"), std::string::npos) << text;
  EXPECT_LT(text.size(), 64u << 10);
  std::printf("%zu unauthenticated requests in %.2f s: %zu lines logged, %zu log bytes\n",
              kRequests, took, logged, text.size());
  std::istringstream lines(text);
  for (std::string l; std::getline(lines, l);) {
    if (l.find(" not logged ") != std::string::npos) std::printf("%s\n", l.c_str());
  }
  EXPECT_EQ(daemon->StopWith(SIGTERM), 0);
}

TEST(DaemonLogTest, InvalidLevelExitsTwo) {
  TempDir dir;
  const std::string cmd =
      std::string(VOXDBD_PATH) + " --data " + dir.Sub("d") + " --log-level=loud 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[512] = {};
  const size_t n = fread(buf, 1, sizeof buf - 1, p);
  EXPECT_EQ(WEXITSTATUS(pclose(p)), 2);
  EXPECT_NE(std::string(buf, n).find("--log-level"), std::string::npos);
}

}  // namespace
}  // namespace voxdb
