// voxdbd's limits, authentication and behaviour under many clients, against
// the real binary on an ephemeral loopback port.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

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
using protocol::WireStatus;
using testing::Connect;
using testing::DaemonProcess;
using testing::kX;
using testing::kY;
using testing::kZ;
using testing::RssBytes;
using testing::Secret;
using testing::TempDir;
using namespace std::chrono_literals;

const std::string kReadToken = "read:rrrrrrrrrrrrrrrrrrrr";
const std::string kWriteToken = "write:wwwwwwwwwwwwwwwwwwww";
const std::string kAdminToken = "admin:aaaaaaaaaaaaaaaaaaaa";

// STATS as name → value.
std::map<std::string, double> Stats(Client* c) {
  std::map<std::string, double> out;
  auto text = c->Call(Opcode::kStats, {});
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return out;
  std::istringstream in(std::string(text->begin(), text->end()));
  std::string name;
  double value;
  while (in >> name >> value) out[name] = value;
  return out;
}

// True once the server has closed `c`'s connection (reads until EOF/error,
// discarding replies), false if it is still open after `within` (scaled).
bool ClosedWithin(Client* c, std::chrono::milliseconds within) {
  within = testing::Scaled(within);
  timeval tv{};
  tv.tv_sec = within.count() / 1000;
  tv.tv_usec = (within.count() % 1000) * 1000;
  setsockopt(c->fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const auto deadline = std::chrono::steady_clock::now() + within;
  char buf[65536];
  while (std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = recv(c->fd(), buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
  }
  return false;
}

TEST(DaemonAuthTest, TokensGrantRolesAndFailuresAreCounted) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"),
                       {"--token", kReadToken, "--token", kWriteToken, "--token", kAdminToken});
  protocol::SetVoxelsRequest set{{{{kX, kY, kZ}, 5}}};
  {
    // Before HELLO: PING works, data requests are refused, the connection stays.
    auto c = Connect(daemon.port());
    EXPECT_OK(c->Call(Opcode::kPing, {}));
    auto r = c->GetVoxels({{{kX, kY, kZ}}});
    EXPECT_TRUE(absl::IsUnauthenticated(r.status())) << r.status();
    EXPECT_NE(r.status().message().find("HELLO"), std::string::npos) << r.status();
    EXPECT_OK(c->Call(Opcode::kPing, {}));
    // A frame over the unauthenticated limit closes the connection.
    auto big = c->Call(Opcode::kPing, std::vector<uint8_t>(8192, 1));
    EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument) << big.status();
    EXPECT_NE(big.status().message().find("authenticat"), std::string::npos) << big.status();
    EXPECT_TRUE(ClosedWithin(c.get(), 5s));
  }
  {
    auto c = Connect(daemon.port());  // a wrong token: refused, then closed
    auto r = c->Hello("wwwwwwwwwwwwwwwwwwwx");
    EXPECT_TRUE(absl::IsUnauthenticated(r.status())) << r.status();
    EXPECT_TRUE(ClosedWithin(c.get(), 5s));
  }
  {
    auto c = Connect(daemon.port());  // no token at all
    EXPECT_TRUE(absl::IsUnauthenticated(c->Hello("").status()));
  }
  {
    auto c = Connect(daemon.port());
    ASSERT_OK_AND_ASSIGN(auto hello, c->Hello(Secret(kReadToken)));
    EXPECT_EQ(hello.role, static_cast<uint8_t>(protocol::Role::kRead));
    EXPECT_OK(c->GetVoxels({{{kX, kY, kZ}}}));
    auto w = c->SetVoxels(set);
    EXPECT_TRUE(absl::IsPermissionDenied(w.status())) << w.status();
    EXPECT_NE(w.status().message().find("'read'"), std::string::npos) << w.status();
    EXPECT_TRUE(absl::IsPermissionDenied(c->Call(Opcode::kFlush, {}).status()));
  }
  {
    auto c = Connect(daemon.port());
    ASSERT_OK_AND_ASSIGN(auto hello, c->Hello(Secret(kWriteToken)));
    EXPECT_EQ(hello.role, static_cast<uint8_t>(protocol::Role::kWrite));
    EXPECT_OK(c->SetVoxels(set));
    EXPECT_TRUE(absl::IsPermissionDenied(c->Call(Opcode::kFlush, {}).status()));
    // Authenticated frames may be large.
    EXPECT_OK(c->Call(Opcode::kPing, std::vector<uint8_t>(1 << 20, 1)));
  }
  auto admin = Connect(daemon.port());
  ASSERT_OK_AND_ASSIGN(auto hello, admin->Hello(Secret(kAdminToken)));
  EXPECT_EQ(hello.role, static_cast<uint8_t>(protocol::Role::kAdmin));
  EXPECT_OK(admin->Call(Opcode::kFlush, {}));
  ASSERT_OK_AND_ASSIGN(auto got, admin->GetVoxels({{{kX, kY, kZ}}}));
  EXPECT_EQ(got[0], 5);
  auto stats = Stats(admin.get());
  EXPECT_EQ(stats["auth_failures"], 3);  // GET_VOXELS before HELLO, wrong token, no token
  EXPECT_EQ(stats["permission_denied"], 3);
  EXPECT_EQ(stats["protocol_errors"], 1);  // the oversized unauthenticated frame
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

// Runs voxdbd with `args`; returns its exit status and output.
std::pair<int, std::string> RunDaemon(const std::string& args) {
  FILE* p = popen((std::string(VOXDBD_PATH) + " " + args + " 2>&1").c_str(), "r");
  std::string out;
  char buf[512];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  return {WEXITSTATUS(pclose(p)), out};
}

TEST(DaemonAuthTest, RefusesToServeBeyondLoopbackWithoutATokenOrWithAWeakOne) {
  TempDir dir;
  auto [status, out] = RunDaemon("--data " + dir.Sub("a") + " --listen 0.0.0.0:0");
  EXPECT_EQ(status, 2);
  EXPECT_NE(out.find("--listen"), std::string::npos) << out;
  EXPECT_NE(out.find("token"), std::string::npos) << out;
  std::tie(status, out) = RunDaemon("--data " + dir.Sub("b") + " --token admin:short");
  EXPECT_EQ(status, 2);
  EXPECT_NE(out.find("--token"), std::string::npos) << out;
  std::tie(status, out) =
      RunDaemon("--data " + dir.Sub("c") + " --token root:aaaaaaaaaaaaaaaaaaaa");
  EXPECT_EQ(status, 2);
  EXPECT_NE(out.find("--token"), std::string::npos) << out;
  std::tie(status, out) = RunDaemon("--data " + dir.Sub("d") + " --idle-timeout 5 parsecs");
  EXPECT_EQ(status, 2);
  // One secret for two roles: HELLO would get the higher one. (The data
  // "directory" is a file, so that a daemon that accepted the tokens would
  // exit 1 rather than serve.)
  std::ofstream(dir.Sub("e")) << "not a directory";
  std::tie(status, out) =
      RunDaemon("--data " + dir.Sub("e") + " --token read:" + Secret(kAdminToken) + " --token " +
                kAdminToken);
  EXPECT_EQ(status, 2);
  EXPECT_NE(out.find("twice"), std::string::npos) << out;
}

// A client that sends one byte every 100 ms never completes a request: the
// idle timeout closes it, and nobody else notices.
TEST(DaemonLimitsTest, TricklingClientIsClosedByTheIdleTimeout) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--idle-timeout", "1s"});
  auto healthy = Connect(daemon.port());
  auto slow = Connect(daemon.port());
  protocol::HelloRequest hello;
  std::vector<uint8_t> frame;
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kHello);
  protocol::EncodeFrame(h, hello.Encode(), &frame);
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  for (size_t i = 0; i < frame.size() && !closed; ++i) {
    if (send(slow->fd(), &frame[i], 1, MSG_NOSIGNAL) != 1) closed = true;
    ASSERT_OK(healthy->Call(Opcode::kPing, {}));
    std::this_thread::sleep_for(100ms);
    char c;
    if (recv(slow->fd(), &c, 1, MSG_DONTWAIT) == 0) closed = true;
  }
  // The frame has 30+ bytes: at 100 ms each the timeout comes first.
  EXPECT_TRUE(closed || ClosedWithin(slow.get(), 3s));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 4s);
  EXPECT_EQ(Stats(healthy.get())["idle_closed"], 1);
  auto fresh = Connect(daemon.port());
  EXPECT_OK(fresh->Call(Opcode::kPing, {}));
}

// A client that sends many large-reply requests and never reads: the server
// stops reading it at max-buffered-bytes, cuts it off after send-timeout,
// its memory stays bounded, and other clients are served throughout.
TEST(DaemonLimitsTest, ClientThatNeverReadsIsCutOffWithBoundedMemory) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"),
                       {"--send-timeout", "1s", "--max-buffered-bytes", "2MiB"});
  auto healthy = Connect(daemon.port());
  ASSERT_OK(healthy->Call(Opcode::kPing, {}));
  const uint64_t rss_before = RssBytes(daemon.pid());
  auto greedy = Connect(daemon.port());
  // 100,000 requests (7 MB, more than the kernel's socket buffers hold) for
  // 1 MiB each: 100 GiB of replies if nothing held back.
  protocol::BoxRequest box;
  box.box = {{kX, kY, kZ}, {kX + 128, kY + 128, kZ + 64}};
  std::vector<uint8_t> request;
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kReadBox);
  protocol::EncodeFrame(h, box.EncodeReadBox(), &request);
  std::vector<uint8_t> all;
  for (int i = 0; i < 100'000; ++i) all.insert(all.end(), request.begin(), request.end());
  size_t sent = 0;
  const auto deadline = testing::DeadlineIn(10s);
  while (sent < all.size() && std::chrono::steady_clock::now() < deadline) {
    const ssize_t n =
        send(greedy->fd(), all.data() + sent, all.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      break;  // cut off
    } else {
      ASSERT_OK(healthy->Call(Opcode::kPing, {}));
      std::this_thread::sleep_for(20ms);
    }
  }
  // The server stopped reading long before it had all the requests.
  EXPECT_LT(sent, all.size());
  // Cut off within the send timeout (plus slack).
  const auto cut_deadline = testing::DeadlineIn(5s);
  double slow_closed = 0;
  while (std::chrono::steady_clock::now() < cut_deadline) {
    slow_closed = Stats(healthy.get())["slow_closed"];
    if (slow_closed > 0) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(slow_closed, 1);
  const uint64_t rss_after = RssBytes(daemon.pid());
  EXPECT_LT(rss_after, rss_before + (64u << 20)) << rss_before << " -> " << rss_after;
  ASSERT_OK(healthy->Call(Opcode::kPing, {}));
}

TEST(DaemonLimitsTest, ConnectionsOverTheLimitAreRefusedWithBusy) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--max-connections", "4"});
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(Connect(daemon.port()));
    ASSERT_OK(clients.back()->Call(Opcode::kPing, {}));
  }
  auto extra = Connect(daemon.port());
  ASSERT_OK_AND_ASSIGN(protocol::Frame f, extra->Receive());
  EXPECT_EQ(f.header.status, static_cast<uint16_t>(WireStatus::kBusy));
  EXPECT_NE(std::string(f.payload.begin(), f.payload.end()).find("too many connections"),
            std::string::npos);
  EXPECT_TRUE(ClosedWithin(extra.get(), 5s));
  EXPECT_EQ(Stats(clients[0].get())["connections_rejected"], 1);
  clients.pop_back();  // one leaves; a newcomer gets in (the close is asynchronous)
  std::unique_ptr<Client> newcomer;
  testing::WaitUntil(
      [&] {
        newcomer = Connect(daemon.port());
        if (newcomer != nullptr && newcomer->Call(Opcode::kPing, {}).ok()) return true;
        newcomer.reset();
        return false;
      },
      2s, 20ms);
  ASSERT_NE(newcomer, nullptr);
  EXPECT_OK(clients[0]->Call(Opcode::kPing, {}));
}

TEST(DaemonLimitsTest, TruncatedAndLyingFramesCloseOnlyTheirConnection) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--idle-timeout", "1s"});
  // A healthy client pings every 100 ms throughout (so it is never idle).
  std::atomic<bool> done{false};
  std::atomic<int> healthy_failures{0}, healthy_pings{0};
  std::thread healthy([&] {
    auto c = Connect(daemon.port());
    while (!done) {
      if (c->Call(Opcode::kPing, {}).ok()) {
        ++healthy_pings;
      } else {
        ++healthy_failures;
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  std::vector<uint8_t> ping;
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kPing);
  h.request_id = 9;
  protocol::EncodeFrame(h, std::vector<uint8_t>{1, 2, 3, 4}, &ping);
  {
    auto c = Connect(daemon.port());  // a truncated header, then the client goes away
    send(c->fd(), ping.data(), 10, MSG_NOSIGNAL);
  }
  {
    auto c = Connect(daemon.port());  // a length that promises more than comes: idle timeout
    std::vector<uint8_t> lie = ping;
    lie[20] = 100;
    send(c->fd(), lie.data(), lie.size(), MSG_NOSIGNAL);
    EXPECT_TRUE(ClosedWithin(c.get(), 4s));
  }
  {
    auto c = Connect(daemon.port());  // a length shorter than the payload: the rest is not a frame
    std::vector<uint8_t> lie = ping;
    lie[20] = 1;
    send(c->fd(), lie.data(), lie.size(), MSG_NOSIGNAL);
    ASSERT_OK_AND_ASSIGN(protocol::Frame f, c->Receive());  // the 1-byte PING
    EXPECT_EQ(f.header.status, 0);
    EXPECT_EQ(f.payload, std::vector<uint8_t>{1});
    EXPECT_TRUE(ClosedWithin(c.get(), 4s));  // bad magic after it
  }
  done = true;
  healthy.join();
  EXPECT_EQ(healthy_failures.load(), 0);
  EXPECT_GT(healthy_pings.load(), 10);
  auto fresh = Connect(daemon.port());
  EXPECT_OK(fresh->Call(Opcode::kPing, {}));
}

// With dirty data at its budget, writes would wait for the flusher: the
// server hands them to its worker instead of blocking an I/O thread, so
// readers are still served, and every write lands.
TEST(DaemonLimitsTest, WritesUnderBackPressureDoNotBlockReaders) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"),
                       {"--dirty-bytes", "2MiB", "--cache-bytes", "64MiB"});
  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, read_errors{0}, write_errors{0};
  std::thread reader([&] {
    auto c = Connect(daemon.port());
    while (!done) {
      if (c->GetVoxels({{{kX, kY, kZ}}}).ok()) {
        ++reads;
      } else {
        ++read_errors;
      }
    }
  });
  constexpr int kWriters = 4, kBoxes = 12;
  auto box_of = [](int w, int i) {
    const uint64_t x = kX + 128 * static_cast<uint64_t>(i), y = kY + 128 * static_cast<uint64_t>(w);
    return protocol::Box{{x, y, kZ}, {x + 128, y + 128, kZ + 16}};
  };
  auto voxels_of = [](int w, int i) {
    std::mt19937 rng(w * 1000 + i);
    std::vector<uint8_t> v(128 * 128 * 16);
    for (auto& b : v) b = static_cast<uint8_t>(rng() % 200 + 1);  // barely compressible
    return v;
  };
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      auto c = Connect(daemon.port());
      for (int i = 0; i < kBoxes; ++i) {
        protocol::BoxRequest b;
        b.box = box_of(w, i);
        b.voxels = voxels_of(w, i);
        if (!c->Call(Opcode::kWriteBox, b.EncodeWriteBox()).ok()) ++write_errors;
      }
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  reader.join();
  EXPECT_EQ(write_errors.load(), 0);
  EXPECT_EQ(read_errors.load(), 0);
  EXPECT_GT(reads.load(), 0);
  auto c = Connect(daemon.port());
  EXPECT_GT(Stats(c.get())["deferred_writes"], 0);
  for (int w = 0; w < kWriters; ++w) {
    protocol::BoxRequest b;
    b.box = box_of(w, kBoxes - 1);
    ASSERT_OK_AND_ASSIGN(auto got, c->Call(Opcode::kReadBox, b.EncodeReadBox()));
    EXPECT_TRUE(got == voxels_of(w, kBoxes - 1)) << w;
  }
}

// 64 clients mix reads and writes on one small shared region. Every write's
// reply carries its version (the global commit order), so the final state
// must equal the writes applied in version order; and so it must after a
// restart.
TEST(DaemonConcurrencyTest, SixtyFourClientsMatchAModelOfTheirWrites) {
  TempDir dir;
  constexpr uint64_t kW = 160, kH = 24, kD = 6;  // spans two chunks in x
  const uint64_t x0 = kX - 16;
  struct Write {
    uint64_t version;
    std::vector<std::pair<uint64_t, uint8_t>> cells;  // index into the region, material
  };
  std::mutex mu;
  std::vector<Write> writes;
  std::atomic<int> errors{0};
  auto index = [&](uint64_t x, uint64_t y, uint64_t z) {
    return (z - kZ) * kW * kH + (y - kY) * kW + (x - x0);
  };
  std::vector<uint8_t> region_before_restart;
  {
    DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
    std::vector<std::thread> threads;
    for (int t = 0; t < 64; ++t) {
      threads.emplace_back([&, t] {
        auto c = Client::Connect("127.0.0.1", daemon.port());
        if (!c.ok()) return void(++errors);
        std::mt19937_64 rng(t);
        std::vector<Write> mine;
        for (int op = 0; op < 40; ++op) {
          const uint64_t x = x0 + rng() % (kW - 4), y = kY + rng() % (kH - 4),
                         z = kZ + rng() % (kD - 2);
          const uint8_t m = static_cast<uint8_t>(1 + rng() % 250);
          Write w;
          absl::StatusOr<std::vector<uint8_t>> reply;
          switch (rng() % 4) {
            case 0: {  // two single voxels
              protocol::SetVoxelsRequest set{{{{x, y, z}, m}, {{x + 3, y + 1, z}, uint8_t(m + 1)}}};
              w.cells = {{index(x, y, z), m}, {index(x + 3, y + 1, z), uint8_t(m + 1)}};
              reply = (*c)->Call(Opcode::kSetVoxels, set.Encode());
              break;
            }
            case 1: {  // a 4x2x2 box
              protocol::BoxRequest b;
              b.box = {{x, y, z}, {x + 4, y + 2, z + 2}};
              for (uint64_t k = 0; k < 16; ++k) {
                b.voxels.push_back(static_cast<uint8_t>(m + k));
                w.cells.push_back({index(x + k % 4, y + k / 4 % 2, z + k / 8), uint8_t(m + k)});
              }
              reply = (*c)->Call(Opcode::kWriteBox, b.EncodeWriteBox());
              break;
            }
            case 2: {  // a 3x3x1 fill
              protocol::BoxRequest b;
              b.box = {{x, y, z}, {x + 3, y + 3, z + 1}};
              b.material = m;
              for (uint64_t k = 0; k < 9; ++k)
                w.cells.push_back({index(x + k % 3, y + k / 3, z), m});
              reply = (*c)->Call(Opcode::kFillBox, b.EncodeFillBox());
              break;
            }
            default: {  // a read: never fails, never sees a material nobody wrote
              auto got = (*c)->GetVoxels({{{x, y, z}}});
              if (!got.ok()) ++errors;
              continue;
            }
          }
          if (!reply.ok()) {
            ++errors;
            continue;
          }
          auto version = protocol::DecodeU64(*reply);
          if (!version.ok()) {
            ++errors;
            continue;
          }
          w.version = *version;
          mine.push_back(std::move(w));
        }
        std::lock_guard<std::mutex> l(mu);
        for (auto& w : mine) writes.push_back(std::move(w));
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(errors.load(), 0);
    auto c = Connect(daemon.port());
    protocol::BoxRequest all;
    all.box = {{x0, kY, kZ}, {x0 + kW, kY + kH, kZ + kD}};
    ASSERT_OK_AND_ASSIGN(region_before_restart, c->Call(Opcode::kReadBox, all.EncodeReadBox()));
    EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
  }
  std::sort(writes.begin(), writes.end(),
            [](const Write& a, const Write& b) { return a.version < b.version; });
  for (size_t i = 1; i < writes.size(); ++i) {
    ASSERT_NE(writes[i].version, writes[i - 1].version) << "two writes with one version";
  }
  std::vector<uint8_t> model(kW * kH * kD, 0);
  for (const Write& w : writes) {
    for (auto [i, m] : w.cells) model[i] = m;
  }
  EXPECT_EQ(writes.size() > 64 * 20, true) << writes.size();
  EXPECT_TRUE(region_before_restart == model) << "the region differs from the model";
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  auto c = Connect(daemon.port());
  protocol::BoxRequest all;
  all.box = {{x0, kY, kZ}, {x0 + kW, kY + kH, kZ + kD}};
  ASSERT_OK_AND_ASSIGN(auto after, c->Call(Opcode::kReadBox, all.EncodeReadBox()));
  EXPECT_TRUE(after == model) << "after a restart the region differs from the model";
}

// SIGTERM while clients are writing: the daemon answers what is in flight,
// flushes and exits 0; every write it acknowledged is there after a restart.
// kill -9 (sync durability): the same, without the clean exit.
void ExpectAcknowledgedWritesSurviveUnderLoad(int signal) {
  TempDir dir;
  std::mutex mu;
  std::vector<protocol::SetVoxelsRequest::Edit> acked;
  {
    DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
    std::atomic<bool> go{true};
    std::vector<std::thread> writers;
    for (int t = 0; t < 8; ++t) {
      writers.emplace_back([&, t] {
        testing::WritePipelined(
            daemon.port(), 16, go,
            [t](uint64_t i) {
              return testing::Edit{{kX + i, kY + 7 + uint64_t(t), kZ}, uint8_t(i % 200 + 1)};
            },
            [&](const testing::Edit& e) {
              std::lock_guard<std::mutex> l(mu);
              acked.push_back(e);
            });
      });
    }
    std::this_thread::sleep_for(500ms);
    const int status = daemon.StopWith(signal);
    go = false;
    for (auto& w : writers) w.join();
    if (signal == SIGTERM) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    }
  }
  ASSERT_GT(acked.size(), 100u);
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  auto c = Connect(daemon.port());
  size_t lost = 0;
  for (size_t from = 0; from < acked.size(); from += 50'000) {  // under max_batch
    const size_t to = std::min(acked.size(), from + 50'000);
    protocol::GetVoxelsRequest get;
    for (size_t i = from; i < to; ++i) get.at.push_back(acked[i].at);
    ASSERT_OK_AND_ASSIGN(auto got, c->GetVoxels(get));
    for (size_t i = from; i < to; ++i) lost += got[i - from] != acked[i].material;
  }
  EXPECT_EQ(lost, 0u) << "of " << acked.size() << " acknowledged writes";
}

TEST(DaemonShutdownTest, SigtermDuringWritesExitsCleanlyKeepingEveryAcknowledgedWrite) {
  ExpectAcknowledgedWritesSurviveUnderLoad(SIGTERM);
}

TEST(DaemonShutdownTest, KillNineDuringWritesKeepsEveryAcknowledgedWrite) {
  ExpectAcknowledgedWritesSurviveUnderLoad(SIGKILL);
}

// Whether this machine can bind the IPv6 loopback.
bool HaveIpv6Loopback() {
  const int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// Runs voxdbd with `args` until its "listening on [HOST]:PORT" line; returns
// the port (0 if it did not get there).
uint16_t StartListening(testing::ChildProcess* d) {
  while (auto line = d->ReadLine(testing::ChildProcess::kOut, 30s)) {
    const size_t at = line->find("listening on [");
    if (at == std::string::npos) continue;
    const size_t colon = line->find("]:", at);
    return colon == std::string::npos ? 0
                                      : static_cast<uint16_t>(std::atoi(line->c_str() + colon + 2));
  }
  return 0;
}

// --listen takes an IPv6 address in brackets: [::1] is loopback (no token
// needed), [::] is not (a token is), and both serve.
TEST(DaemonAuthTest, ListensOnBracketedIpv6Addresses) {
  if (!HaveIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  TempDir dir;
  {
    testing::ChildProcess d(
        {VOXDBD_PATH, "--data", dir.Sub("a"), "--listen", "[::1]:0", "--metrics-listen", "off"});
    const uint16_t port = StartListening(&d);
    ASSERT_NE(port, 0);
    auto c = Client::Connect("::1", port);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_OK((*c)->Hello("").status());
    EXPECT_OK((*c)->Call(Opcode::kStats, {}).status());  // no token needed on loopback
    d.Signal(SIGTERM);
    EXPECT_EQ(d.Wait(30s).exit_code, 0);
  }
  {
    auto r = testing::RunProcess(
        {VOXDBD_PATH, "--data", dir.Sub("b"), "--listen", "[::]:0", "--metrics-listen", "off"});
    EXPECT_EQ(r.exit_code, 2) << r;
    EXPECT_NE(r.err.find("token"), std::string::npos) << r;
  }
  {
    testing::ChildProcess d({VOXDBD_PATH, "--data", dir.Sub("c"), "--listen", "[::]:0",
                             "--metrics-listen", "off", "--token", kAdminToken});
    const uint16_t port = StartListening(&d);
    ASSERT_NE(port, 0);
    auto c = Client::Connect("::1", port);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(absl::IsUnauthenticated((*c)->Call(Opcode::kStats, {}).status()));
    ASSERT_OK_AND_ASSIGN(auto hello, (*c)->Hello(Secret(kAdminToken)));
    EXPECT_EQ(hello.role, static_cast<uint8_t>(protocol::Role::kAdmin));
    d.Signal(SIGTERM);
    EXPECT_EQ(d.Wait(30s).exit_code, 0);
  }
  // Without brackets an IPv6 address is refused with a hint.
  auto r = testing::RunProcess({VOXDBD_PATH, "--data", dir.Sub("d"), "--listen", "::1:0"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("[ADDRESS]:PORT"), std::string::npos) << r;
}

}  // namespace
}  // namespace voxdb
