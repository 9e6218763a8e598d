// voxdbd's log: one line per event on stderr, a slow-request log, and the
// level changed by SIGHUP without a restart.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace voxdb {
namespace {

using protocol::Client;
using protocol::Opcode;
using testing::DaemonProcess;
using testing::TempDir;
using namespace std::chrono_literals;

// Starts voxdbd with its stderr going to `log_path`.
std::unique_ptr<DaemonProcess> StartLogging(const std::string& data, const std::string& log_path,
                                            const std::vector<std::string>& args) {
  const int saved = dup(STDERR_FILENO);
  const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  EXPECT_GE(fd, 0);
  dup2(fd, STDERR_FILENO);
  auto d = std::make_unique<DaemonProcess>(VOXDBD_PATH, data, args);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  return d;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

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
  auto daemon = StartLogging(dir.Sub("data"), log, {"--config", conf});
  auto c = Client::Connect("127.0.0.1", daemon->port());
  ASSERT_TRUE(c.ok());
  SlowRequest(c->get());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(Count(ReadFile(log), "slow request"), 0u) << ReadFile(log);  // warn < error

  std::ofstream(conf) << "log-level = warn\nslow-request = 1ms\n";
  ASSERT_EQ(kill(daemon->pid(), SIGHUP), 0);
  std::string text;
  for (int i = 0; i < 100 && Count(text, "log level is now warn") == 0; ++i) {
    std::this_thread::sleep_for(20ms);
    text = ReadFile(log);
  }
  ASSERT_EQ(Count(text, "log level is now warn"), 1u) << text;
  SlowRequest(c->get());
  for (int i = 0; i < 100 && Count(text, "slow request") == 0; ++i) {
    std::this_thread::sleep_for(20ms);
    text = ReadFile(log);
  }
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
