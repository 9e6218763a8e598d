// kill -9 during online splits and moves (engine/node.h): each round forks
// a child that opens the node, writes fresh voxels from two threads
// (reporting each acknowledged write over a pipe) and splits or moves
// partitions back to back; the parent kills it at a random moment, opens
// the node itself and checks that every acknowledged write of every round
// is there, and that the layout is whole (the manifest's partitions open,
// nothing else is left under partitions/).
//
// Environment: VOXDB_CRASH_ROUNDS=N runs N rounds per test instead of 30.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/node.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_database.h"
#include "tests/testing/wait.h"

namespace voxdb::engine {
namespace {

using Clock = std::chrono::steady_clock;

int RoundsFromEnv(int default_rounds) {
  const char* s = std::getenv("VOXDB_CRASH_ROUNDS");
  if (s == nullptr || *s == '\0') return default_rounds;
  return std::max(1, std::atoi(s));
}

// Write n sets one voxel, its own: one of 512 chunks spread over chunks
// 0..31 on each axis (the codes below 8 * 8^4), and in it a voxel chosen
// by a bijection of n / 512 onto the chunk's 2^21 voxels.
VoxelCoord VoxelOf(uint64_t n) {
  const uint64_t chunk = n % 512;
  const uint64_t inner = ((n / 512) * 0x9E3779B1u) & ((uint64_t{1} << 21) - 1);
  return VoxelCoord{(chunk & 7) * 4 * 128 + (inner & 127),
                    ((chunk >> 3) & 7) * 4 * 128 + ((inner >> 7) & 127),
                    (chunk >> 6) * 4 * 128 + (inner >> 14)};
}
// The region's codes, and the alignment of the split test's partitions
// (8^2 chunks: many more splits than the 8 units of the default 8^4).
constexpr uint64_t kRegionCodes = 8 * 4096;
constexpr int kSplitAlign = 2;
constexpr uint64_t kUnit = uint64_t{1} << (3 * kSplitAlign);
uint8_t ValueOf(uint64_t n) { return static_cast<uint8_t>(1 + n % 250); }

enum MsgType : uint32_t { kReady = 1, kAck = 2, kChangeBegin = 3, kChangeEnd = 4, kFailed = 5 };
struct Msg {
  uint32_t type = 0;
  uint32_t pad = 0;
  uint64_t n = 0;
};

void Send(int fd, const Msg& m) {
  // Smaller than PIPE_BUF: written whole even when threads race.
  for (;;) {
    const ssize_t w = write(fd, &m, sizeof(m));
    if (w == static_cast<ssize_t>(sizeof(m))) return;
    if (w < 0 && errno == EINTR) continue;
    _exit(3);
  }
}

NodeOptions CrashOptions() {
  NodeOptions o;
  o.align_levels = kSplitAlign;         // a new node's; the manifest keeps it
  o.database = testing::TestOptions();  // no fsync: a kill -9 keeps the page cache
  o.database.cache_bytes = size_t{64} << 20;
  o.database.dirty_bytes = size_t{16} << 20;
  return o;
}

enum class Change { kSplit, kMove };

[[noreturn]] void RunChild(const std::string& data, const std::string& elsewhere, int round,
                           Change change, int fd) {
  auto opened = Node::Open(data, CrashOptions());
  if (!opened.ok()) {
    std::fprintf(stderr, "child: open failed: %s\n", opened.status().ToString().c_str());
    Send(fd, Msg{kFailed, 0, 0});
    _exit(2);
  }
  std::unique_ptr<Node> node = std::move(*opened);
  Send(fd, Msg{kReady, 0, 0});
  std::atomic<uint64_t> next{uint64_t(round) * 10'000'000};
  std::atomic<int> in_flight{0};
  auto write_loop = [&] {
    for (;;) {
      while (in_flight.load() >= 16) std::this_thread::sleep_for(std::chrono::microseconds(200));
      const uint64_t n = next++;
      ++in_flight;
      const VoxelEdit e{VoxelOf(n), ValueOf(n)};
      node->SetVoxels(std::span<const VoxelEdit>(&e, 1), [&, n](const WriteResult& r) {
        if (r.status.ok()) Send(fd, Msg{kAck, 0, n});
        --in_flight;
      });
    }
  };
  std::thread w1(write_loop), w2(write_loop);
  std::mt19937_64 rng(round * 7919 + 1);
  for (int k = 0;; ++k) {
    const std::shared_ptr<const Node::Layout> layout = node->layout();
    Send(fd, Msg{kChangeBegin, 0, 0});
    if (change == Change::kSplit) {
      // A partition meeting the written region that can still be split.
      std::vector<size_t> candidates;
      for (size_t i = 0; i < layout->parts.size(); ++i) {
        const MortonRange r = layout->ranges.range(i);
        if (r.begin < kRegionCodes && r.end - r.begin > kUnit) candidates.push_back(i);
      }
      if (candidates.empty()) _exit(0);  // split down to the units: nothing left to do
      const MortonRange r = layout->ranges.range(candidates[rng() % candidates.size()]);
      const uint64_t units = (std::min(r.end, kRegionCodes) - r.begin) / kUnit;
      const uint64_t at = r.begin + kUnit * (1 + rng() % std::max<uint64_t>(1, units - 1));
      const size_t i = layout->ranges.Find(r.begin);
      if (at < r.end) (void)node->Split(layout->parts[i].spec.id, at);
    } else {
      const Node::Part& p = layout->parts[rng() % layout->parts.size()];
      (void)node->Move(p.spec.id, absl::StrFormat("%s/r%d-%d", elsewhere, round, k));
    }
    Send(fd, Msg{kChangeEnd, 0, 0});
  }
}

struct Totals {
  int rounds = 0;
  int mid_change_kills = 0;
  uint64_t acked = 0;
};

void RunRounds(Change change, int default_rounds) {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string elsewhere = std::filesystem::path(dir.Sub("disk2")).lexically_normal().string();
  std::filesystem::create_directories(elsewhere);
  if (change == Change::kMove) {
    // Moves start from a few partitions.
    ASSERT_OK_AND_ASSIGN(auto node, Node::Open(data, CrashOptions()));
    ASSERT_OK(node->Split(0, kRegionCodes / 2).status());
    ASSERT_OK(node->Split(1, kRegionCodes / 4).status());
  }
  std::vector<uint64_t> acked;
  Totals totals;
  std::mt19937_64 rng(change == Change::kSplit ? 11 : 12);
  const int rounds = RoundsFromEnv(default_rounds);
  for (int round = 0; round < rounds; ++round) {
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      RunChild(data, elsewhere, round, change, fds[1]);
    }
    close(fds[1]);
    bool ready = false, failed = false, exited = false;
    int changing = 0;
    std::vector<uint64_t> round_acks;
    auto drain = [&](int timeout_ms) {
      pollfd p{fds[0], POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0) return false;
      Msg m;
      const ssize_t r = read(fds[0], &m, sizeof(m));
      if (r != static_cast<ssize_t>(sizeof(m))) {
        exited = true;
        return false;
      }
      if (m.type == kReady) ready = true;
      if (m.type == kFailed) failed = true;
      if (m.type == kAck) round_acks.push_back(m.n);
      if (m.type == kChangeBegin) ++changing;
      if (m.type == kChangeEnd) --changing;
      return true;
    };
    const Clock::time_point open_deadline =
        Clock::now() + testing::Scaled(std::chrono::seconds(60));
    while (!ready && !failed && !exited && Clock::now() < open_deadline) drain(100);
    ASSERT_TRUE(ready) << "round " << round << ": the child did not open the node";
    const Clock::time_point kill_at = Clock::now() + std::chrono::milliseconds(20 + rng() % 400);
    while (!exited && Clock::now() < kill_at) drain(1);
    const bool mid_change = changing > 0;
    kill(pid, SIGKILL);
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    while (drain(0)) {
    }
    close(fds[0]);
    if (exited && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
      // Split down to the units before the kill: the layout is final.
    } else if (mid_change) {
      ++totals.mid_change_kills;
    }
    ++totals.rounds;
    acked.insert(acked.end(), round_acks.begin(), round_acks.end());

    // The parent's view: the node opens, every acknowledged write is there.
    auto node = Node::Open(data, CrashOptions());
    SCOPED_TRACE(absl::StrFormat("round %d", round));
    ASSERT_OK(node.status());
    std::vector<VoxelCoord> at;
    for (uint64_t n : acked) at.push_back(VoxelOf(n));
    std::vector<uint8_t> got(at.size());
    ASSERT_OK((*node)->GetVoxels(at, got.data()));
    for (size_t i = 0; i < acked.size(); ++i) {
      ASSERT_EQ(got[i], ValueOf(acked[i]))
          << "round " << round << ": acknowledged write " << acked[i] << " lost";
    }
    // Nothing but the listed partitions under partitions/.
    std::set<std::string> listed;
    for (const Node::Part& p : (*node)->layout()->parts) {
      listed.insert(std::filesystem::path(p.spec.dir).lexically_normal().string());
    }
    if (std::filesystem::exists(data + "/partitions")) {
      for (const auto& e : std::filesystem::directory_iterator(data + "/partitions")) {
        EXPECT_TRUE(listed.count(e.path().lexically_normal().string()))
            << "round " << round << ": leftover " << e.path();
      }
    }
  }
  totals.acked = acked.size();
  std::printf("%d rounds, %d killed during a %s, %llu acknowledged writes checked\n", totals.rounds,
              totals.mid_change_kills, change == Change::kSplit ? "split" : "move",
              static_cast<unsigned long long>(totals.acked));
  EXPECT_GT(totals.acked, 0u);
  EXPECT_GT(totals.mid_change_kills, 0) << "no kill landed during a layout change";
}

TEST(NodeCrashTest, KillDuringSplitsLosesNoAcknowledgedWrite) { RunRounds(Change::kSplit, 30); }

TEST(NodeCrashTest, KillDuringMovesLosesNoAcknowledgedWrite) { RunRounds(Change::kMove, 30); }

}  // namespace
}  // namespace voxdb::engine
