// What voxdbd's connections do when it stops (SIGTERM), and its server-wide
// bound on partly received requests, against the real binary over raw
// loopback sockets (so that a reset is seen as such).
#include <arpa/inet.h>
#include <errno.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "protocol/client.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using protocol::Opcode;
using protocol::WireStatus;
using testing::DaemonProcess;
using testing::kX;
using testing::kY;
using testing::kZ;
using testing::RssBytes;
using testing::TempDir;
using namespace std::chrono_literals;

int ConnectRaw(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void AppendFrame(Opcode op, uint64_t id, std::span<const uint8_t> payload,
                 std::vector<uint8_t>* out) {
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(op);
  h.request_id = id;
  protocol::EncodeFrame(h, payload, out);
}

bool SendAll(int fd, const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads replies until EOF or an error, counting them by request id.
struct ReplyLog {
  std::map<uint64_t, std::vector<uint16_t>> statuses;  // by request id
  std::atomic<size_t> replies{0};
  bool eof = false;
  int error = 0;  // errno of a failed recv (ECONNRESET...)
};

void ReadReplies(int fd, ReplyLog* log) {
  protocol::FrameDecoder decoder(size_t{1} << 31);
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n == 0) {
      log->eof = true;
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      log->error = errno;
      return;
    }
    std::span<const uint8_t> in(buf.data(), static_cast<size_t>(n));
    while (!in.empty()) {
      size_t used = 0;
      protocol::Frame frame;
      const auto r = decoder.Feed(in, &used, &frame);
      in = in.subspan(used);
      if (r == protocol::FrameDecoder::Result::kError) {
        log->error = -1;
        return;
      }
      if (r == protocol::FrameDecoder::Result::kFrame) {
        log->statuses[frame.header.request_id].push_back(frame.header.status);
        ++log->replies;
      }
    }
  }
}

// Clients pipeline bursts of writes with 16 MiB READ_BOXes among them (they
// run on the I/O thread), SIGTERM arrives while they are in flight: every
// request gets exactly one reply, OK or UNAVAILABLE; the connection ends
// with a FIN after them, never a reset; every write answered OK is there
// after a restart.
TEST(DaemonShutdownTest, SigtermAnswersEveryRequestOnceAndEndsWithAFin) {
  TempDir dir;
  constexpr int kClients = 4, kWritesPerRun = 1000, kRuns = 6;
  struct Sent {
    bool write = false;
    protocol::SetVoxelsRequest::Edit edit;
  };
  std::vector<std::map<uint64_t, Sent>> sent(kClients);
  std::vector<ReplyLog> logs(kClients);
  {
    DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--slow-request", "0"});
    std::vector<int> fds;
    std::vector<std::thread> readers;
    for (int c = 0; c < kClients; ++c) {
      fds.push_back(ConnectRaw(daemon.port()));
      ASSERT_GE(fds.back(), 0);
    }
    for (int c = 0; c < kClients; ++c) {
      readers.emplace_back([&, c] { ReadReplies(fds[c], &logs[c]); });
    }
    std::vector<std::vector<uint8_t>> bursts(kClients);
    for (int c = 0; c < kClients; ++c) {
      uint64_t id = 1;
      for (int run = 0; run < kRuns; ++run) {
        protocol::BoxRequest box;
        box.box = {{kX, kY, kZ}, {kX + 512, kY + 512, kZ + 64}};  // 16 MiB
        AppendFrame(Opcode::kReadBox, id, box.EncodeReadBox(), &bursts[c]);
        sent[c][id++] = Sent{};
        for (int i = 0; i < kWritesPerRun; ++i) {
          const uint64_t n = run * kWritesPerRun + i;
          Sent s{true, {{kX + n, kY + 1000 + uint64_t(c), kZ + 3}, uint8_t(n % 200 + 1)}};
          AppendFrame(Opcode::kSetVoxels, id, protocol::SetVoxelsRequest{{s.edit}}.Encode(),
                      &bursts[c]);
          sent[c][id++] = s;
        }
      }
    }
    for (int c = 0; c < kClients; ++c) ASSERT_TRUE(SendAll(fds[c], bursts[c]));
    // SIGTERM once some are answered, while most are in flight or not read yet.
    testing::WaitUntil([&] { return logs[0].replies >= 500; }, 10s, 1ms);
    const int status = daemon.StopWith(SIGTERM);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    for (auto& r : readers) r.join();
    for (int fd : fds) close(fd);
  }
  size_t ok = 0, unavailable = 0;
  std::vector<protocol::SetVoxelsRequest::Edit> applied;
  for (int c = 0; c < kClients; ++c) {
    EXPECT_TRUE(logs[c].eof) << "client " << c;
    EXPECT_EQ(logs[c].error, 0) << "client " << c << ": " << std::strerror(logs[c].error);
    for (const auto& [id, s] : sent[c]) {
      auto it = logs[c].statuses.find(id);
      if (it == logs[c].statuses.end()) {
        ADD_FAILURE() << "client " << c << ": request " << id << " got no reply";
        continue;
      }
      ASSERT_EQ(it->second.size(), 1u) << "client " << c << ": request " << id;
      const auto st = static_cast<WireStatus>(it->second[0]);
      if (st == WireStatus::kOk) {
        ++ok;
        if (s.write) applied.push_back(s.edit);
      } else {
        EXPECT_EQ(st, WireStatus::kUnavailable) << "client " << c << ": request " << id;
        ++unavailable;
      }
    }
    EXPECT_EQ(logs[c].statuses.size(), sent[c].size()) << "replies to requests never sent";
  }
  std::printf("%zu requests answered OK, %zu UNAVAILABLE\n", ok, unavailable);
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  auto client = protocol::Client::Connect("127.0.0.1", daemon.port());
  ASSERT_TRUE(client.ok()) << client.status();
  protocol::GetVoxelsRequest get;
  for (const auto& e : applied) get.at.push_back(e.at);
  ASSERT_OK_AND_ASSIGN(auto got, (*client)->GetVoxels(get));
  size_t lost = 0;
  for (size_t i = 0; i < applied.size(); ++i) lost += got[i] != applied[i].material;
  EXPECT_EQ(lost, 0u) << "of " << applied.size() << " writes answered OK";
}

uint64_t StatOf(protocol::Client* c, const std::string& name) {
  auto text = c->Call(Opcode::kStats, {});
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return 0;
  std::istringstream in(std::string(text->begin(), text->end()));
  std::string key;
  double value;
  while (in >> key >> value) {
    if (key == name) return static_cast<uint64_t>(value);
  }
  ADD_FAILURE() << "STATS has no " << name;
  return 0;
}

// Twelve connections each send most of a 16 MiB frame and stop: the bytes
// the server holds for them stay within max-request-buffer-bytes (plus one
// frame that may go on past it, and 128 KiB a connection), small requests
// are still served, and a large frame waiting for the budget completes once
// the stalled senders go.
TEST(DaemonLimitsTest, PartlyReceivedRequestsStayWithinTheServerWideBudget) {
  TempDir dir;
  constexpr uint64_t kBudget = 8u << 20, kFrame = 16u << 20;
  constexpr int kStalled = 12;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"),
                       {"--max-request-buffer-bytes", "8MiB", "--idle-timeout", "0"});
  auto admin = protocol::Client::Connect("127.0.0.1", daemon.port());
  ASSERT_TRUE(admin.ok()) << admin.status();
  const uint64_t rss_before = RssBytes(daemon.pid());
  std::vector<uint8_t> frame;
  AppendFrame(Opcode::kPing, 1, std::vector<uint8_t>(kFrame, 7), &frame);
  std::vector<int> fds;
  std::vector<std::thread> senders;
  for (int i = 0; i < kStalled; ++i) {
    const int fd = ConnectRaw(daemon.port());
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    // All but the last byte, until the server stops reading.
    senders.emplace_back([fd, &frame] {
      timeval tv{0, 500'000};
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      size_t done = 0;
      while (done < frame.size() - 1) {
        const ssize_t n = send(fd, frame.data() + done, frame.size() - 1 - done, MSG_NOSIGNAL);
        if (n <= 0) break;  // stalled for 0.5 s (or closed)
        done += static_cast<size_t>(n);
      }
    });
  }
  for (auto& t : senders) t.join();
  const uint64_t held = StatOf(admin->get(), "request_buffer_bytes");
  const uint64_t rss_after = RssBytes(daemon.pid());
  // Two I/O threads may each read 64 KiB past the budget at once.
  const uint64_t bound = kBudget + kFrame + kStalled * (128u << 10) + (1u << 20);
  std::printf("request_buffer_bytes %llu, RSS grew by %lld bytes\n", (unsigned long long)held,
              (long long)(rss_after - rss_before));
  EXPECT_GT(held, kBudget);
  EXPECT_LE(held, bound);
#if !defined(__SANITIZE_THREAD__)  // ThreadSanitizer's shadow memory grows the RSS too
  EXPECT_LT(rss_after, rss_before + bound + (32u << 20)) << rss_before;
#endif
  EXPECT_GT(StatOf(admin->get(), "request_buffer_waits"), 0u);
  // Small requests go on, on old connections and new ones.
  EXPECT_OK((*admin)->Ping(std::vector<uint8_t>(1000, 1)));
  auto fresh = protocol::Client::Connect("127.0.0.1", daemon.port());
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_OK((*fresh)->Ping(std::vector<uint8_t>(1000, 2)));
  // A whole large frame waits while the stalled senders hold the budget,
  // and completes once they are gone.
  std::atomic<bool> big_done{false};
  absl::Status big_status;
  std::thread big([&] {
    auto c = protocol::Client::Connect("127.0.0.1", daemon.port());
    big_status = c.ok() ? (*c)->Ping(std::vector<uint8_t>(kFrame, 3)) : c.status();
    big_done = true;
  });
  std::this_thread::sleep_for(300ms);
  for (int fd : fds) close(fd);
  big.join();
  EXPECT_OK(big_status);
  testing::WaitUntil([&] { return StatOf(admin->get(), "request_buffer_bytes") == 0; }, 5s);
  EXPECT_EQ(StatOf(admin->get(), "request_buffer_bytes"), 0u);
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

}  // namespace
}  // namespace voxdb
