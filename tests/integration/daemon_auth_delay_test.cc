// Failed HELLOs slow down the next failures from the same address
// (PROTOCOL.md, "Authentication"), against the real voxdbd on loopback: token
// guessing falls from thousands a second to about one, while good HELLOs,
// other requests and shutdown are not held up.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <thread>

#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using protocol::Client;
using protocol::Opcode;
using protocol::WireStatus;
using testing::Connect;
using testing::DaemonProcess;
using testing::TempDir;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kSecret = "aaaaaaaaaaaaaaaaaaaa";
const std::string kWrong = "aaaaaaaaaaaaaaaaaaab";

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::vector<uint8_t> HelloPayload(const std::string& token) {
  protocol::HelloRequest req;
  req.token = token;
  req.client = "guesser";
  return req.Encode();
}

int64_t AuthFailures(Client* admin) {
  auto text = admin->Stats();
  EXPECT_TRUE(text.ok()) << text.status();
  std::istringstream in(text.ok() ? *text : "");
  std::string name;
  int64_t value;
  while (in >> name >> value) {
    if (name == "auth_failures") return value;
  }
  return -1;
}

// Waits (up to 10 s, scaled) until the server has counted `n` auth failures.
void AwaitAuthFailures(Client* admin, int64_t n) {
  testing::WaitUntil([&] { return AuthFailures(admin) >= n; }, 10s);
  ASSERT_EQ(AuthFailures(admin), n);
}

TEST(DaemonAuthDelayTest, FailedHellosSlowDownAndOthersAreNotDelayed) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--token", "admin:" + kSecret});
  // Failures in a row, each on its own connection (a failed HELLO closes it):
  // the first is answered at once, then 100 ms doubling up to 1 s.
  constexpr int kGuesses = 10;
  const auto t0 = Clock::now();
  for (int i = 0; i < kGuesses; ++i) {
    auto c = Connect(daemon.port());
    auto r = c->Hello(kWrong);
    ASSERT_TRUE(absl::IsUnauthenticated(r.status())) << i << ": " << r.status();
  }
  const double took = Seconds(Clock::now() - t0);
  std::printf("%d failed HELLOs in a row took %.2f s: %.1f guesses/s\n", kGuesses, took,
              kGuesses / took);
  // 0 + 0.1 + 0.2 + 0.4 + 0.8 + 5 x 1 s = 6.5 s; without the delay, milliseconds.
  EXPECT_GT(took, 5.0);

  // A failure now waits 1 s. Meanwhile a good HELLO and a PING from the same
  // address, on other connections, are answered at once.
  auto guesser = Connect(daemon.port());
  const auto sent = Clock::now();
  ASSERT_OK(guesser->Send(Opcode::kHello, HelloPayload(kWrong)).status());
  std::this_thread::sleep_for(50ms);  // the server has it
  {
    auto good = Connect(daemon.port());
    const auto h0 = Clock::now();
    ASSERT_OK_AND_ASSIGN(auto hello, good->Hello(kSecret));
    EXPECT_EQ(hello.role, static_cast<uint8_t>(protocol::Role::kAdmin));
    EXPECT_OK(good->Ping());
    EXPECT_LT(Seconds(Clock::now() - h0), 0.5);
    auto other = Connect(daemon.port());
    const auto p0 = Clock::now();
    EXPECT_OK(other->Ping());
    EXPECT_LT(Seconds(Clock::now() - p0), 0.5);
  }
  auto reply = guesser->Receive();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->header.status, static_cast<uint16_t>(WireStatus::kUnauthenticated));
  EXPECT_GT(Seconds(Clock::now() - sent), 0.9);
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

// Guessing on many connections at once gains nothing: with 4 delayed failure
// replies pending for an address, its next HELLOs are refused (BUSY) at once
// without their token being checked.
TEST(DaemonAuthDelayTest, ParallelGuessesAreRefusedUnchecked) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--token", "admin:" + kSecret});
  auto admin = Connect(daemon.port());
  ASSERT_OK(admin->Hello(kSecret).status());
  {
    auto c = Connect(daemon.port());  // the first failure: answered at once
    ASSERT_TRUE(absl::IsUnauthenticated(c->Hello(kWrong).status()));
  }
  std::vector<std::unique_ptr<Client>> pending;
  for (int i = 0; i < 4; ++i) {  // 100, 200, 400, 800 ms
    pending.push_back(Connect(daemon.port()));
    ASSERT_OK(pending.back()->Send(Opcode::kHello, HelloPayload(kWrong)).status());
    AwaitAuthFailures(admin.get(), 2 + i);
  }
  // Even the right token is not checked now.
  for (const std::string& token : {kWrong, kSecret}) {
    auto c = Connect(daemon.port());
    const auto t0 = Clock::now();
    auto r = c->Hello(token);
    EXPECT_EQ(protocol::ServerStatusOf(r.status()), WireStatus::kBusy) << r.status();
    EXPECT_NE(r.status().message().find("retry later"), std::string::npos) << r.status();
    EXPECT_LT(Seconds(Clock::now() - t0), 0.5);
  }
  for (auto& c : pending) {
    auto reply = c->Receive();
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->header.status, static_cast<uint16_t>(WireStatus::kUnauthenticated));
  }
  // Answered: HELLOs are checked again (and a good one is not delayed).
  auto c = Connect(daemon.port());
  EXPECT_OK(c->Hello(kSecret).status());
  EXPECT_EQ(AuthFailures(admin.get()), 7);
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

// SIGTERM answers a delayed HELLO failure at once (it counts as in flight;
// the drain does not wait out its delay), and voxdbd exits cleanly.
TEST(DaemonAuthDelayTest, ShutdownAnswersADelayedHelloAtOnce) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--token", "admin:" + kSecret});
  for (int i = 0; i < 5; ++i) {  // 0, 100, 200, 400, 800 ms: the next waits 1 s
    auto c = Connect(daemon.port());
    ASSERT_TRUE(absl::IsUnauthenticated(c->Hello(kWrong).status()));
  }
  auto guesser = Connect(daemon.port());
  const auto sent = Clock::now();
  ASSERT_OK(guesser->Send(Opcode::kHello, HelloPayload(kWrong)).status());
  std::this_thread::sleep_for(50ms);
  std::thread stop([&] { EXPECT_EQ(daemon.StopWith(SIGTERM), 0); });
  auto reply = guesser->Receive();
  const double took = Seconds(Clock::now() - sent);
  stop.join();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->header.status, static_cast<uint16_t>(WireStatus::kUnauthenticated));
  EXPECT_LT(took, 0.7);  // not the 1 s delay
  std::printf("a delayed HELLO failure was answered %.3f s after it was sent, on SIGTERM\n", took);
}

}  // namespace
}  // namespace voxdb
