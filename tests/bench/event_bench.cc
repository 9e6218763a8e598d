// event_bench: subscription events under a durable write load.
//
//   event_bench --voxdbd build/daemon/voxdbd [--writers 64] [--subscribers 100]
//               [--seconds 5] [--warmup 1] [--chunks 10] [--regions all|split|both]
//               [--writer-threads 2] [--subscriber-threads 2] [--seed 1]
//               [--rate WRITES_PER_S] [--stats-ms MS] [--read-via-client]
//   event_bench --smoke --voxdbd build/daemon/voxdbd
//
// For each region layout it starts the given voxdbd (default options: sync
// durability) on an ephemeral loopback port with a fresh data directory
// under $TMPDIR, then opens
//   - --subscribers connections, each with one SUBSCRIBE (a box, detail
//     none): with --regions all, a box over the --chunks chunks the writers
//     write (every write fans out to every subscriber); with split,
//     subscriber i watches only chunk i mod --chunks (a write fans out to
//     subscribers / chunks of them);
//   - --writers connections, each sending single-voxel SET_VOXELS to random
//     voxels of those chunks (a row along x from the terrain generator's
//     sample surface chunk), one request outstanding, for --warmup +
//     --seconds seconds, spread over --writer-threads epoll loops: in a
//     closed loop (the next write as soon as the last is acknowledged), or
//     with --rate, paced at that many writes per second in all (on the
//     connections idle at the time).
// Subscribers are read by --subscriber-threads epoll loops. Connections are
// set up with protocol::Client (HELLO, SUBSCRIBE) and writes sent with it;
// replies and EVENTS frames are read straight from the sockets with a
// protocol::FrameDecoder, or with --read-via-client through
// Client::Receive/ReceivePush (which costs this process more CPU, taken from
// voxdbd on a small machine).
//
// Every acknowledged write is recorded under its version (the sequence
// number its events carry) with the times it was sent and acknowledged;
// every event is timed when its EVENTS frame is read from the socket. All
// times are one steady clock in this process. For the writes sent after the
// warm-up, it reports per (write, subscriber):
//   - ack→event: event time - acknowledgement time. The server publishes a
//     write's events once its journal commit is durable, before it sends the
//     acknowledgement, so this can be negative: the distribution reported is
//     of max(0, ·), next to the fraction of events that came before the ack;
//   - send→event: event time - send time, which includes the write and its
//     commit (an upper bound of commit→event).
// Throughput: events taken by all subscribers per second of the measured
// window, and writes acknowledged per second. --stats-ms samples the
// server's subscription lag and unsent bytes during the run (to stderr).
//
// Correctness, checked on every run: each subscriber gets the event of every
// acknowledged write in its region exactly once (and of nothing else), in
// increasing sequence order, and no subscriber is cut off; the daemon exits
// cleanly on SIGTERM. Any violation is printed and makes the exit status 1.
//
// Output: a few human lines per layout, then one machine-readable line:
//
//   RESULT event_bench regions=all writers=64 subscribers=100 chunks=10 fanout=100.0
//     writes_s=... events_s=... ack_event_p50_us=... ack_event_p99_us=...
//     ack_event_max_us=... send_event_p50_us=... send_event_p99_us=...
//     send_event_max_us=... before_ack=... send_ack_p50_us=... ... violations=0
//
// --smoke: 4 writers, 5 subscribers, 1 s after 0.2 s, both layouts, through
// the socket and through the client (the event_bench_smoke test). A watchdog
// ends the process should a run overrun its time by 60 s.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/morton.h"
#include "protocol/client.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/flags.h"
#include "tests/testing/histogram.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"

namespace voxdb::bench {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::Opcode;
using testing::Histogram;

constexpr int64_t kDrainNs = 10'000'000'000;     // answers and events after the end, at most
constexpr int64_t kResolveEveryNs = 20'000'000;  // subscribers match events to acks
constexpr size_t kMaxWrites = size_t{1} << 25;   // the write log's capacity

struct Flags {
  std::string voxdbd;
  bool smoke = false;
  int writers = 64;
  int subscribers = 100;
  double seconds = 5;
  double warmup = 1;
  int chunks = 10;
  std::string regions = "both";
  int writer_threads = 2;
  int subscriber_threads = 2;
  uint64_t seed = 1;
  int stats_ms = 0;  // > 0: sample the server's STATS this often
  double rate = 0;   // > 0: writes per second in all, paced; 0: closed loop
  bool read_via_client = false;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "event_bench: %s\n"
               "usage: event_bench --voxdbd PATH [--writers W] [--subscribers S] [--seconds S]\n"
               "                   [--warmup S] [--chunks N] [--regions all|split|both]\n"
               "                   [--writer-threads T] [--subscriber-threads T] [--seed S]\n"
               "                   [--rate WRITES_PER_S] [--stats-ms MS] [--read-via-client]\n"
               "       event_bench --smoke --voxdbd PATH\n",
               why.c_str());
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  bool smoke = false;
  testing::ForEachFlag(
      argc, argv, {"help", "smoke", "read-via-client"}, Usage,
      [&](const std::string& name, const std::string& value) {
        if (name == "help") Usage("subscription events under a durable write load");
        if (name == "smoke") {
          smoke = true;
          return;
        }
        if (name == "read-via-client") {
          f.read_via_client = true;
          return;
        }
        char* end = nullptr;
        const double number = std::strtod(value.c_str(), &end);
        const bool numeric = end != value.c_str() && *end == '\0' && std::isfinite(number);
        auto need_int = [&](int lo, int hi) {
          if (!numeric || number != std::floor(number) || number < lo || number > hi) {
            Usage(absl::StrFormat("--%s must be an integer in %d..%d", name, lo, hi));
          }
          return static_cast<int>(number);
        };
        if (name == "voxdbd") {
          f.voxdbd = value;
        } else if (name == "writers") {
          f.writers = need_int(1, 1000);
        } else if (name == "subscribers") {
          f.subscribers = need_int(0, 1000);
        } else if (name == "seconds") {
          if (!numeric || number <= 0 || number > 3600) Usage("--seconds must be in (0, 3600]");
          f.seconds = number;
        } else if (name == "warmup") {
          if (!numeric || number < 0 || number > 60) Usage("--warmup must be in [0, 60]");
          f.warmup = number;
        } else if (name == "chunks") {
          f.chunks = need_int(1, 1000);
        } else if (name == "regions") {
          if (value != "all" && value != "split" && value != "both") {
            Usage("--regions must be all, split or both");
          }
          f.regions = value;
        } else if (name == "writer-threads") {
          f.writer_threads = need_int(1, 64);
        } else if (name == "subscriber-threads") {
          f.subscriber_threads = need_int(1, 64);
        } else if (name == "rate") {
          if (!numeric || number < 0 || number > 1e7) Usage("--rate must be in [0, 10^7]");
          f.rate = number;
        } else if (name == "stats-ms") {
          f.stats_ms = need_int(0, 60'000);
        } else if (name == "seed") {
          f.seed = static_cast<uint64_t>(need_int(0, 1 << 30));
        } else {
          Usage("unknown option --" + name);
        }
      });
  if (f.voxdbd.empty()) Usage("--voxdbd is required");
  if (smoke) {
    f.smoke = true;
    f.writers = 4;
    f.subscribers = 5;
    f.seconds = 1;
    f.warmup = 0.2;
    f.regions = "both";
    f.writer_threads = 1;
    f.subscriber_threads = 1;
  }
  f.writer_threads = std::min(f.writer_threads, f.writers);
  f.subscriber_threads = std::min(f.subscriber_threads, f.subscribers);
  return f;
}

// --- Shared state of a run ------------------------------------------------------

// Times are nanoseconds since the run's start, on the steady clock.
struct Timeline {
  Clock::time_point t0 = Clock::now();
  int64_t begin_ns = 0;  // end of the warm-up
  int64_t end_ns = 0;    // no write is sent after this

  int64_t Now() const {
    return std::max<int64_t>(
        1, std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  }
  bool InWindow(int64_t t) const { return t >= begin_ns && t <= end_ns; }
};

// The chunks written: a row along x from the sample surface chunk.
struct Chunks {
  std::vector<engine::ChunkCoord> coords;
  std::vector<uint64_t> codes;

  explicit Chunks(const Flags& f) {
    const std::array<uint32_t, 3> base = testing::SampleSurfaceChunkCoords(f.seed);
    for (int i = 0; i < f.chunks; ++i) {
      coords.push_back({base[0] + static_cast<uint32_t>(i), base[1], base[2]});
      codes.push_back(engine::ChunkKey::FromCoord(coords.back()).code());
    }
  }
  int IndexOf(uint64_t code) const {
    for (size_t i = 0; i < codes.size(); ++i) {
      if (codes[i] == code) return static_cast<int>(i);
    }
    return -1;
  }
  // Chunks [lo, hi) as a voxel box.
  protocol::Box Box(int lo, int hi) const {
    const uint64_t e = engine::kChunkEdge;
    const engine::ChunkCoord& a = coords[static_cast<size_t>(lo)];
    const engine::ChunkCoord& b = coords[static_cast<size_t>(hi - 1)];
    return {{a.x * e, a.y * e, a.z * e}, {(b.x + 1) * e, (b.y + 1) * e, (b.z + 1) * e}};
  }
};

// Violations of the delivery guarantees (or failures of the run), counted,
// with the first few kept for the report.
class Violations {
 public:
  void Add(const std::string& what) {
    std::lock_guard<std::mutex> l(mu_);
    if (count_++ < 10) first_.push_back(what);
  }
  uint64_t count() const {
    std::lock_guard<std::mutex> l(mu_);
    return count_;
  }
  void Print() const {
    std::lock_guard<std::mutex> l(mu_);
    for (const std::string& s : first_)
      std::fprintf(stderr, "event_bench: VIOLATION: %s\n", s.c_str());
    if (count_ > first_.size()) {
      std::fprintf(stderr, "event_bench: ... %llu violations in all\n",
                   static_cast<unsigned long long>(count_));
    }
  }

 private:
  mutable std::mutex mu_;
  uint64_t count_ = 0;
  std::vector<std::string> first_;
};

// Every acknowledged write by its sequence number minus the run's base: when
// it was sent and acknowledged and which chunk it wrote. Lazily zeroed
// anonymous memory, so that only the slots used cost memory. Writers record,
// subscribers look up concurrently (the ack time publishes the slot).
class WriteLog {
 public:
  struct Slot {
    int64_t send_ns = 0;
    int64_t ack_ns = 0;  // 0: not acknowledged (yet)
    uint32_t chunk = 0;
    uint32_t unused = 0;
  };

  WriteLog() {
    void* p = mmap(nullptr, kMaxWrites * sizeof(Slot), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("event_bench: mmap");
      std::abort();
    }
    slots_ = static_cast<Slot*>(p);
  }
  ~WriteLog() { munmap(slots_, kMaxWrites * sizeof(Slot)); }
  WriteLog(const WriteLog&) = delete;
  WriteLog& operator=(const WriteLog&) = delete;

  // False when `index` is out of range or recorded already.
  bool Record(uint64_t index, int64_t send_ns, int64_t ack_ns, uint32_t chunk) {
    if (index == 0 || index >= kMaxWrites) return false;
    Slot& s = slots_[index];
    std::atomic_ref<int64_t>(s.send_ns).store(send_ns, std::memory_order_relaxed);
    std::atomic_ref<uint32_t>(s.chunk).store(chunk, std::memory_order_relaxed);
    int64_t expected = 0;
    return std::atomic_ref<int64_t>(s.ack_ns).compare_exchange_strong(expected, ack_ns,
                                                                      std::memory_order_release);
  }
  // The slot of `index`; ack_ns 0 when not recorded.
  Slot Get(uint64_t index) const {
    Slot out;
    if (index == 0 || index >= kMaxWrites) return out;
    Slot& s = slots_[index];
    out.ack_ns = std::atomic_ref<int64_t>(s.ack_ns).load(std::memory_order_acquire);
    if (out.ack_ns == 0) return out;
    out.send_ns = std::atomic_ref<int64_t>(s.send_ns).load(std::memory_order_relaxed);
    out.chunk = std::atomic_ref<uint32_t>(s.chunk).load(std::memory_order_relaxed);
    return out;
  }

 private:
  Slot* slots_ = nullptr;
};

// What the subscribers are owed once the writers have stopped: per chunk,
// the newest sequence number written and the number of writes.
struct Owed {
  std::vector<uint64_t> last_seq, writes;
  std::atomic<bool> ready{false};
};

// One thread's epoll set of connections; each registration carries a pointer.
class Epoll {
 public:
  Epoll() : fd_(epoll_create1(EPOLL_CLOEXEC)) {
    if (fd_ < 0) {
      std::perror("event_bench: epoll_create1");
      std::abort();
    }
  }
  ~Epoll() { ::close(fd_); }
  Epoll(const Epoll&) = delete;
  Epoll& operator=(const Epoll&) = delete;

  void Add(int fd, void* ptr) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = ptr;
    epoll_ctl(fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  void Remove(int fd) { epoll_ctl(fd_, EPOLL_CTL_DEL, fd, nullptr); }
  // The pointers of the ready connections (none after timeout_ns).
  const std::vector<void*>& Wait(int64_t timeout_ns) {
    ready_.clear();
    epoll_event events[128];
    const timespec timeout{static_cast<time_t>(timeout_ns / 1'000'000'000),
                           static_cast<long>(timeout_ns % 1'000'000'000)};
    const int n = epoll_pwait2(fd_, events, 128, &timeout, nullptr);
    for (int i = 0; i < n; ++i) ready_.push_back(events[i].data.ptr);
    return ready_;
  }

 private:
  int fd_;
  std::vector<void*> ready_;
};

// Takes the frames that have arrived on a connection set up by a
// protocol::Client. Straight from its socket with a FrameDecoder of our own,
// by default: the client's buffers are empty once the setup calls are
// answered (nothing is pushed or answered before the writes start, and a
// writer's one small request in flight never waits for room to send, which
// is when the client would read). With --read-via-client, through the
// client: ReceivePush for pushed frames, else Receive.
class FrameReader {
 public:
  FrameReader(protocol::Client* client, bool via_client, bool pushed)
      : client_(client), via_client_(via_client), pushed_(pushed) {}

  // Calls on_frame(frame, time taken) for each whole frame readable now.
  // False, with *error, when the connection is lost or its stream is not
  // frames.
  template <typename Fn>
  bool ReadReady(const Timeline& tl, Fn&& on_frame, std::string* error) {
    if (via_client_) return ReadViaClient(tl, on_frame, error);
    thread_local std::vector<uint8_t> buf(64 * 1024);
    for (;;) {
      const ssize_t n = ::recv(client_->fd(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      if (n <= 0) {
        *error = n == 0 ? "the server closed the connection" : std::strerror(errno);
        return false;
      }
      const int64_t now = tl.Now();
      std::span<const uint8_t> in(buf.data(), static_cast<size_t>(n));
      while (!in.empty()) {
        size_t used = 0;
        protocol::Frame frame;
        const auto r = decoder_.Feed(in, &used, &frame);
        in = in.subspan(used);
        if (r == protocol::FrameDecoder::Result::kError) {
          *error = "a malformed frame: " + decoder_.error().ToString();
          return false;
        }
        if (r == protocol::FrameDecoder::Result::kFrame) on_frame(frame, now);
      }
      if (static_cast<size_t>(n) < buf.size()) return true;  // drained, most likely
    }
  }

 private:
  template <typename Fn>
  bool ReadViaClient(const Timeline& tl, Fn& on_frame, std::string* error) {
    if (!pushed_) {  // one reply is awaited: it is there, or on its way
      auto frame = client_->Receive();
      if (!frame.ok()) {
        *error = frame.status().ToString();
        return false;
      }
      on_frame(*frame, tl.Now());
      return true;
    }
    for (bool first = true;; first = false) {
      // A zero timeout only looks at what the client has buffered; the
      // first call (the socket is readable) reads the socket. Not with 1 ms:
      // the client rounds the time left down to whole milliseconds, so 1 ms
      // is 0 by the time it would wait, and it gives up without reading.
      auto frame = client_->ReceivePush(std::chrono::milliseconds(first ? 2 : 0));
      if (!frame.ok()) {
        if (absl::IsDeadlineExceeded(frame.status())) return true;
        *error = frame.status().ToString();
        return false;
      }
      on_frame(*frame, tl.Now());
    }
  }

  protocol::Client* client_;
  const bool via_client_, pushed_;
  protocol::FrameDecoder decoder_{size_t{64} << 20};
};

absl::StatusOr<std::unique_ptr<protocol::Client>> ConnectClient(uint16_t port) {
  protocol::ClientOptions options;
  options.connect_timeout = std::chrono::seconds(10);
  options.io_timeout = std::chrono::seconds(10);
  auto client = protocol::Client::Connect("127.0.0.1", port, options);
  if (!client.ok()) return client.status();
  if (auto hello = (*client)->Hello("", "event_bench"); !hello.ok()) return hello.status();
  return client;
}

// --- Writers ------------------------------------------------------------------

struct Writer {
  std::unique_ptr<protocol::Client> client;
  std::unique_ptr<FrameReader> reader;
  uint64_t request = 0;
  int64_t sent_ns = 0;
  uint32_t chunk = 0;
  bool busy = false;
  bool dead = false;
};

struct WriterStats {
  uint64_t writes = 0;            // acknowledged, all
  uint64_t writes_in_window = 0;  // acknowledged in the window
  uint64_t max_index = 0;         // newest seq - base
  Histogram send_ack;             // writes sent in the window
};

struct RunContext {
  const Flags& flags;
  const Chunks& chunks;
  const Timeline& timeline;
  WriteLog& log;
  Violations& violations;
  Owed& owed;
  uint64_t base = 0;  // the newest seq before the writes
};

void RunWriters(const RunContext& ctx, std::vector<Writer*> writers, uint64_t seed,
                WriterStats* stats) {
  const Timeline& tl = ctx.timeline;
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> payload;
  auto send = [&](Writer& w) {
    const uint32_t chunk = static_cast<uint32_t>(rng() % ctx.chunks.coords.size());
    const engine::ChunkCoord& c = ctx.chunks.coords[chunk];
    const uint64_t e = engine::kChunkEdge;
    protocol::SetVoxelsRequest req;
    req.edits.push_back({{c.x * e + rng() % e, c.y * e + rng() % e, c.z * e + rng() % e},
                         static_cast<uint8_t>(1 + rng() % 12)});
    payload = req.Encode();
    w.sent_ns = tl.Now();
    auto id = w.client->Send(Opcode::kSetVoxels, payload);
    if (!id.ok()) {
      ctx.violations.Add("writer: sending SET_VOXELS: " + id.status().ToString());
      w.dead = true;
      return;
    }
    w.request = *id;
    w.chunk = chunk;
    w.busy = true;
  };
  // --rate: this thread's writes are due every `interval` ns, each on an
  // idle connection (late when none is idle: then they go out together as
  // connections free up, at most 1 ms of them).
  const bool paced = ctx.flags.rate > 0;
  const int64_t interval =
      paced ? static_cast<int64_t>(1e9 * ctx.flags.writer_threads / ctx.flags.rate) : 0;
  int64_t next_due = tl.Now();
  std::vector<Writer*> idle;
  Epoll epoll;
  for (Writer* w : writers) {
    epoll.Add(w->client->fd(), w);
    if (paced) {
      idle.push_back(w);
    } else {
      send(*w);
    }
  }
  auto kill = [&](Writer& w, const std::string& why) {
    ctx.violations.Add("writer: " + why);
    w.dead = true;
    epoll.Remove(w.client->fd());
  };
  auto on_reply = [&](Writer& w, const protocol::Frame& frame, int64_t acked) {
    if (w.dead) return;
    if (!w.busy || frame.header.request_id != w.request || frame.header.status != 0) {
      return kill(w, absl::StrFormat("reply to request %u (status %u: %s) while %s is in flight",
                                     frame.header.request_id, frame.header.status,
                                     std::string(frame.payload.begin(), frame.payload.end()),
                                     w.busy ? std::to_string(w.request) : std::string("none")));
    }
    w.busy = false;
    auto version = protocol::DecodeU64(frame.payload);
    if (!version.ok() || *version <= ctx.base ||
        !ctx.log.Record(*version - ctx.base, w.sent_ns, acked, w.chunk)) {
      return kill(
          w, absl::StrFormat(
                 "version %s is not new (base %u; a version given twice or too many writes)",
                 version.ok() ? std::to_string(*version) : version.status().ToString(), ctx.base));
    }
    ++stats->writes;
    stats->max_index = std::max(stats->max_index, *version - ctx.base);
    if (tl.InWindow(acked)) ++stats->writes_in_window;
    if (tl.InWindow(w.sent_ns)) stats->send_ack.Add(static_cast<uint64_t>(acked - w.sent_ns));
    if (paced) {
      idle.push_back(&w);
    } else if (acked < tl.end_ns) {
      send(w);
    }
  };
  for (;;) {
    const int64_t now = tl.Now();
    int64_t timeout = 10'000'000;
    if (paced && now < tl.end_ns) {
      next_due = std::max(next_due, now - 1'000'000);
      while (!idle.empty() && next_due <= now) {
        send(*idle.back());
        idle.pop_back();
        next_due += interval;
      }
      if (!idle.empty()) timeout = std::clamp<int64_t>(next_due - now, 0, timeout);
    }
    size_t busy = 0, live = 0;
    for (const Writer* w : writers) {
      busy += w->busy && !w->dead;
      live += !w->dead;
    }
    if (live == 0 || (busy == 0 && now >= tl.end_ns)) break;  // every write answered
    if (now > tl.end_ns + kDrainNs) {
      ctx.violations.Add(absl::StrFormat("%u writes still unanswered 10 s after the end", busy));
      break;
    }
    for (void* ready : epoll.Wait(timeout)) {
      Writer& w = *static_cast<Writer*>(ready);
      if (w.dead) continue;
      std::string error;
      if (!w.reader->ReadReady(
              tl, [&](const protocol::Frame& f, int64_t t) { on_reply(w, f, t); }, &error)) {
        kill(w, error);
      }
    }
  }
}

// --- Subscribers ---------------------------------------------------------------

struct Subscriber {
  int index = 0;
  std::unique_ptr<protocol::Client> client;
  std::unique_ptr<FrameReader> reader;
  uint64_t id = 0;  // its subscription
  int chunk = -1;   // the chunk it watches; -1: all of them
  uint64_t last_seq = 0;
  uint64_t events = 0;
  bool dead = false;
  struct Pending {
    uint64_t seq;
    int64_t at_ns;
    uint32_t chunk;
  };
  std::vector<Pending> pending;  // events not matched with their write yet
};

struct SubscriberStats {
  uint64_t events = 0;            // taken, all
  uint64_t events_in_window = 0;  // taken in the window
  uint64_t frames = 0;
  uint64_t samples = 0;     // events of writes sent in the window
  uint64_t before_ack = 0;  // of them, taken before the write's ack
  int64_t earliest_ns = 0;  // the most negative ack→event
  Histogram ack_event;      // max(0, event - ack)
  Histogram send_event;     // event - send
};

// Matches the events of `sub` with their writes' records; those whose
// write is not acknowledged yet wait, unless `final`.
void Resolve(const RunContext& ctx, Subscriber& sub, bool final, SubscriberStats* stats) {
  size_t keep = 0;
  for (const Subscriber::Pending& p : sub.pending) {
    const WriteLog::Slot s = ctx.log.Get(p.seq - ctx.base);
    if (s.ack_ns == 0) {
      if (final) {
        ctx.violations.Add(
            absl::StrFormat("subscriber %d: an event for seq %u, which no writer had acknowledged",
                            sub.index, p.seq));
      } else {
        sub.pending[keep++] = p;
      }
      continue;
    }
    if (s.chunk != p.chunk) {
      ctx.violations.Add(absl::StrFormat(
          "subscriber %d: the event of seq %u names chunk %u, the write was to chunk %u", sub.index,
          p.seq, p.chunk, s.chunk));
    }
    if (!ctx.timeline.InWindow(s.send_ns)) continue;
    ++stats->samples;
    const int64_t d = p.at_ns - s.ack_ns;
    if (d < 0) {
      ++stats->before_ack;
      stats->earliest_ns = std::min(stats->earliest_ns, d);
    }
    stats->ack_event.Add(static_cast<uint64_t>(std::max<int64_t>(0, d)));
    stats->send_event.Add(static_cast<uint64_t>(std::max<int64_t>(0, p.at_ns - s.send_ns)));
  }
  sub.pending.resize(keep);
}

// Takes every pushed frame `sub` has buffered or readable.
void OnEvents(const RunContext& ctx, Subscriber& sub, const protocol::Frame& frame, int64_t now,
              SubscriberStats* stats) {
  const protocol::FrameHeader& h = frame.header;
  if (h.opcode != static_cast<uint8_t>(Opcode::kEvents) || !h.is_push() || h.request_id != sub.id) {
    ctx.violations.Add(absl::StrFormat(
        "subscriber %d: a frame of opcode %u for request %u (its subscription is %u)", sub.index,
        h.opcode, h.request_id, sub.id));
    return;
  }
  auto push = protocol::EventsPush::Decode(frame.payload);
  if (!push.ok()) {
    ctx.violations.Add(absl::StrFormat("subscriber %d: a malformed EVENTS frame: %s", sub.index,
                                       push.status().ToString()));
    return;
  }
  ++stats->frames;
  for (const protocol::ChangeEvent& e : push->events) {
    const int chunk = ctx.chunks.IndexOf(e.chunk);
    if (e.kind != protocol::EventKind::kChunk || chunk < 0 ||
        (sub.chunk >= 0 && chunk != sub.chunk)) {
      ctx.violations.Add(
          absl::StrFormat("subscriber %d: an event (seq %u, kind %d, chunk %x) outside its region",
                          sub.index, e.seq, static_cast<int>(e.kind), e.chunk));
      continue;
    }
    if (e.seq <= sub.last_seq) {
      ctx.violations.Add(absl::StrFormat(
          "subscriber %d: the event of seq %u after that of seq %u (out of order or twice)",
          sub.index, e.seq, sub.last_seq));
      continue;
    }
    sub.last_seq = e.seq;
    ++sub.events;
    ++stats->events;
    if (ctx.timeline.InWindow(now)) ++stats->events_in_window;
    sub.pending.push_back({e.seq, now, static_cast<uint32_t>(chunk)});
  }
}

// Takes every EVENTS frame `sub` has readable.
void Drain(const RunContext& ctx, Subscriber& sub, SubscriberStats* stats) {
  std::string error;
  if (!sub.reader->ReadReady(
          ctx.timeline,
          [&](const protocol::Frame& frame, int64_t now) { OnEvents(ctx, sub, frame, now, stats); },
          &error)) {
    ctx.violations.Add(
        absl::StrFormat("subscriber %d lost its connection (cut off?): %s", sub.index, error));
    sub.dead = true;
  }
}

// The newest seq `sub` is owed (REQUIRES: owed.ready).
uint64_t LastOwed(const Owed& owed, const Subscriber& sub) {
  if (sub.chunk >= 0) return owed.last_seq[static_cast<size_t>(sub.chunk)];
  return *std::max_element(owed.last_seq.begin(), owed.last_seq.end());
}

void RunSubscribers(const RunContext& ctx, std::vector<Subscriber*> subs, SubscriberStats* stats) {
  const Timeline& tl = ctx.timeline;
  Epoll epoll;
  for (Subscriber* s : subs) epoll.Add(s->client->fd(), s);
  size_t live = subs.size();
  int64_t next_resolve = 0;
  int64_t owed_deadline = -1;
  for (;;) {
    const int64_t now = tl.Now();
    if (owed_deadline < 0 && ctx.owed.ready.load(std::memory_order_acquire)) {
      owed_deadline = now + kDrainNs;
    }
    if (owed_deadline >= 0) {
      size_t waiting = 0;
      for (const Subscriber* s : subs) {
        if (!s->dead && s->last_seq < LastOwed(ctx.owed, *s)) ++waiting;
      }
      if (waiting == 0) break;
      if (now > owed_deadline) {
        for (const Subscriber* s : subs) {
          if (s->dead || s->last_seq >= LastOwed(ctx.owed, *s)) continue;
          ctx.violations.Add(absl::StrFormat(
              "subscriber %d: no event after seq %u within 10 s of the end, owed up to %u",
              s->index, s->last_seq, LastOwed(ctx.owed, *s)));
        }
        break;
      }
    }
    if (now >= next_resolve) {
      for (Subscriber* s : subs) Resolve(ctx, *s, /*final=*/false, stats);
      next_resolve = now + kResolveEveryNs;
    }
    if (live == 0) break;
    for (void* ready : epoll.Wait(5'000'000)) {
      Subscriber& s = *static_cast<Subscriber*>(ready);
      if (s.dead) continue;
      Drain(ctx, s, stats);
      if (s.dead) {
        epoll.Remove(s.client->fd());
        --live;
      }
    }
  }
  for (Subscriber* s : subs) Resolve(ctx, *s, /*final=*/true, stats);
}

// --- One run -----------------------------------------------------------------------

// The STATS counters, by name (empty when unavailable).
std::vector<std::pair<std::string, double>> ServerStats(protocol::Client& client) {
  std::vector<std::pair<std::string, double>> out;
  auto text = client.Stats();
  if (!text.ok()) return out;
  for (size_t at = 0; at < text->size();) {
    size_t end = text->find('\n', at);
    if (end == std::string::npos) end = text->size();
    const std::string line = text->substr(at, end - at);
    const size_t space = line.find(' ');
    if (space != std::string::npos) {
      out.emplace_back(line.substr(0, space), std::atof(line.c_str() + space + 1));
    }
    at = end + 1;
  }
  return out;
}

double StatOf(const std::vector<std::pair<std::string, double>>& stats, const std::string& name) {
  for (const auto& [n, v] : stats) {
    if (n == name) return v;
  }
  return 0;
}

// --stats-ms: prints the server's subscription lag (newest seq minus the
// furthest-behind subscription's cursor), its bytes not yet written to
// sockets and the events pushed, every `ms` until `stop`.
void SampleStats(uint16_t port, int ms, const Timeline& tl, const std::atomic<bool>& stop) {
  auto client = ConnectClient(port);
  if (!client.ok()) return;
  double last_events = 0;
  int64_t last_t = tl.Now();
  while (!stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    const auto stats = ServerStats(**client);
    const int64_t t = tl.Now();
    const double events = StatOf(stats, "subscription_events");
    std::fprintf(stderr, "stats t=%.2fs lag=%.0f unsent_bytes=%.0f events_s=%.0f\n",
                 static_cast<double>(t) / 1e9, StatOf(stats, "subscription_lag"),
                 StatOf(stats, "unsent_bytes"),
                 (events - last_events) / (static_cast<double>(t - last_t) / 1e9));
    last_events = events;
    last_t = t;
  }
}

// A whole number with thousands separators (x >= 0).
std::string Thousands(double x) {
  const std::string digits = absl::StrFormat("%.0f", x);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// Runs one region layout (split: each subscriber watches one chunk) against
// a fresh voxdbd; returns the number of violations.
uint64_t RunLayout(const Flags& f, bool split) {
  Violations violations;
  testing::TempDir dir;
  testing::DaemonProcess daemon(f.voxdbd, dir.Sub("data"));
  const Chunks chunks(f);
  Timeline tl;
  WriteLog log;
  Owed owed;
  RunContext ctx{f, chunks, tl, log, violations, owed};

  // Subscribers first, then writers: every write is after every SUBSCRIBE.
  std::vector<std::unique_ptr<Subscriber>> subs;
  uint64_t base = 0;
  for (int i = 0; i < f.subscribers; ++i) {
    auto sub = std::make_unique<Subscriber>();
    sub->index = i;
    sub->chunk = split ? i % f.chunks : -1;
    auto client = ConnectClient(daemon.port());
    if (!client.ok()) {
      violations.Add(absl::StrFormat("subscriber %d: %s", i, client.status().ToString()));
      break;
    }
    sub->client = std::move(*client);
    protocol::SubscribeRequest req;
    req.region.kind = protocol::QueryKind::kBox;
    req.region.box = split ? chunks.Box(sub->chunk, sub->chunk + 1) : chunks.Box(0, f.chunks);
    req.detail = protocol::EventDetail::kNone;
    auto reply = sub->client->Subscribe(req);
    if (!reply.ok()) {
      violations.Add(absl::StrFormat("SUBSCRIBE %d: %s", i, reply.status().ToString()));
      break;
    }
    sub->id = reply->subscription;
    sub->reader = std::make_unique<FrameReader>(sub->client.get(), f.read_via_client, true);
    sub->last_seq = reply->seq;
    if (i > 0 && reply->seq != base) {
      violations.Add(absl::StrFormat("SUBSCRIBE %d: seq %u, the others %u, with no write between",
                                     i, reply->seq, base));
    }
    base = reply->seq;
    subs.push_back(std::move(sub));
  }
  ctx.base = base;
  std::vector<std::unique_ptr<Writer>> writers;
  for (int i = 0; i < f.writers && violations.count() == 0; ++i) {
    auto client = ConnectClient(daemon.port());
    if (!client.ok()) {
      violations.Add(absl::StrFormat("writer %d: %s", i, client.status().ToString()));
      break;
    }
    writers.push_back(std::make_unique<Writer>());
    writers.back()->client = std::move(*client);
    writers.back()->reader =
        std::make_unique<FrameReader>(writers.back()->client.get(), f.read_via_client, false);
  }
  if (violations.count() > 0) {
    violations.Print();
    return violations.count();
  }

  const int64_t start = tl.Now();
  tl.begin_ns = start + static_cast<int64_t>(f.warmup * 1e9);
  tl.end_ns = tl.begin_ns + static_cast<int64_t>(f.seconds * 1e9);
  std::vector<SubscriberStats> sub_stats(static_cast<size_t>(f.subscriber_threads));
  std::vector<WriterStats> writer_stats(static_cast<size_t>(f.writer_threads));
  std::vector<std::thread> sub_threads, writer_threads;
  for (int t = 0; t < f.subscriber_threads; ++t) {
    std::vector<Subscriber*> mine;
    for (size_t i = static_cast<size_t>(t); i < subs.size(); i += f.subscriber_threads) {
      mine.push_back(subs[i].get());
    }
    sub_threads.emplace_back(RunSubscribers, std::cref(ctx), std::move(mine),
                             &sub_stats[static_cast<size_t>(t)]);
  }
  for (int t = 0; t < f.writer_threads; ++t) {
    std::vector<Writer*> mine;
    for (size_t i = static_cast<size_t>(t); i < writers.size(); i += f.writer_threads) {
      mine.push_back(writers[i].get());
    }
    writer_threads.emplace_back(RunWriters, std::cref(ctx), std::move(mine),
                                f.seed * 1000 + static_cast<uint64_t>(t) + 1,
                                &writer_stats[static_cast<size_t>(t)]);
  }
  std::atomic<bool> stop_sampling{false};
  std::thread sampler;
  if (f.stats_ms > 0) {
    sampler = std::thread(SampleStats, daemon.port(), f.stats_ms, std::cref(tl),
                          std::cref(stop_sampling));
  }
  for (auto& t : writer_threads) t.join();
  const int64_t writes_done = tl.Now();

  // What each chunk's subscribers are owed.
  WriterStats w;
  for (const WriterStats& s : writer_stats) {
    w.writes += s.writes;
    w.writes_in_window += s.writes_in_window;
    w.max_index = std::max(w.max_index, s.max_index);
    w.send_ack.Merge(s.send_ack);
  }
  owed.last_seq.assign(chunks.codes.size(), base);
  owed.writes.assign(chunks.codes.size(), 0);
  uint64_t holes = 0;
  for (uint64_t i = 1; i <= w.max_index; ++i) {
    const WriteLog::Slot s = log.Get(i);
    if (s.ack_ns == 0) {
      ++holes;
      continue;
    }
    owed.last_seq[s.chunk] = base + i;
    ++owed.writes[s.chunk];
  }
  if (holes > 0) {
    violations.Add(absl::StrFormat("%u sequence numbers up to %u were no acknowledged write", holes,
                                   base + w.max_index));
  }
  owed.ready.store(true, std::memory_order_release);
  for (auto& t : sub_threads) t.join();
  stop_sampling = true;
  if (sampler.joinable()) sampler.join();
  const double drain_s = static_cast<double>(tl.Now() - writes_done) / 1e9;

  SubscriberStats s;
  s.earliest_ns = 0;
  for (const SubscriberStats& o : sub_stats) {
    s.events += o.events;
    s.events_in_window += o.events_in_window;
    s.frames += o.frames;
    s.samples += o.samples;
    s.before_ack += o.before_ack;
    s.earliest_ns = std::min(s.earliest_ns, o.earliest_ns);
    s.ack_event.Merge(o.ack_event);
    s.send_event.Merge(o.send_event);
  }
  // Exactly once: each subscriber's events are increasing, each the event of
  // an acknowledged write to a chunk it watches, and as many as those writes.
  uint64_t owed_events = 0;
  for (const auto& sub : subs) {
    uint64_t expected = 0;
    for (size_t c = 0; c < chunks.codes.size(); ++c) {
      if (sub->chunk < 0 || static_cast<size_t>(sub->chunk) == c) expected += owed.writes[c];
    }
    owed_events += expected;
    if (sub->events != expected && !sub->dead) {
      violations.Add(absl::StrFormat("subscriber %d: %u events for %u writes in its region",
                                     sub->index, sub->events, expected));
    }
  }
  std::vector<std::pair<std::string, double>> server;
  if (auto client = ConnectClient(daemon.port()); client.ok()) server = ServerStats(**client);
  subs.clear();
  writers.clear();
  const int status = daemon.StopWith(SIGTERM);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    violations.Add(absl::StrFormat("voxdbd did not stop cleanly (wait status %d)", status));
  }

  const double fanout =
      w.writes > 0 ? static_cast<double>(owed_events) / static_cast<double>(w.writes) : 0;
  const double writes_s = static_cast<double>(w.writes_in_window) / f.seconds;
  const double events_s = static_cast<double>(s.events_in_window) / f.seconds;
  const double before =
      s.samples > 0 ? static_cast<double>(s.before_ack) / static_cast<double>(s.samples) : 0;
  const double server_events = StatOf(server, "subscription_events");
  const double server_frames = StatOf(server, "subscription_frames");
  const double commits = StatOf(server, "journal_commits");
  const double cut_off = StatOf(server, "subscribers_cut_off");
  const char* layout = split ? "split" : "all";
  if (f.smoke && (w.writes == 0 || s.samples == 0)) {
    violations.Add("smoke: no write acknowledged or no event of a measured write");
  }
  const char* read = f.read_via_client ? "client" : "socket";
  std::printf(
      "== regions=%s: %d writers (%s), %d subscribers (%s), fan-out %.1f, %.1f s after %.1f s, "
      "read through the %s\n",
      layout, f.writers,
      f.rate > 0 ? absl::StrFormat("paced at %.0f writes/s", f.rate).c_str() : "closed loop",
      f.subscribers,
      split ? absl::StrFormat("each watches 1 of %d chunks", f.chunks).c_str()
            : absl::StrFormat("each watches all %d chunks", f.chunks).c_str(),
      fanout, f.seconds, f.warmup, read);
  std::printf("  writes/s               %s (send→ack p50/p99 %.0f/%.0f us)\n",
              Thousands(writes_s).c_str(), w.send_ack.QuantileUs(0.5), w.send_ack.QuantileUs(0.99));
  std::printf("  events/s delivered     %s (total over the subscribers)\n",
              Thousands(events_s).c_str());
  std::printf(
      "  ack→event p50/p99/max  %.0f / %.0f / %.0f us (max(0, ·); %.1f%% before the ack, "
      "by up to %.0f us)\n",
      s.ack_event.QuantileUs(0.5), s.ack_event.QuantileUs(0.99), s.ack_event.MaxUs(), before * 100,
      static_cast<double>(-s.earliest_ns) / 1000.0);
  std::printf("  send→event p50/p99/max %.0f / %.0f / %.0f us\n", s.send_event.QuantileUs(0.5),
              s.send_event.QuantileUs(0.99), s.send_event.MaxUs());
  std::printf(
      "  %.1f events per EVENTS frame (server: %.1f), %.1f writes per journal commit, "
      "drain %.2f s\n",
      s.frames > 0 ? static_cast<double>(s.events) / static_cast<double>(s.frames) : 0,
      server_frames > 0 ? server_events / server_frames : 0,
      commits > 0 ? static_cast<double>(w.writes) / commits : 0, drain_s);
  std::printf("  delivery: %s\n",
              violations.count() == 0
                  ? "OK (every subscriber got every write's event once, in order)"
                  : "VIOLATIONS");
  std::printf(
      "RESULT event_bench regions=%s writers=%d subscribers=%d chunks=%d rate=%.0f read=%s "
      "fanout=%.1f writes_s=%.0f "
      "events_s=%.0f ack_event_p50_us=%.0f ack_event_p99_us=%.0f ack_event_max_us=%.0f "
      "send_event_p50_us=%.0f send_event_p99_us=%.0f send_event_max_us=%.0f before_ack=%.4f "
      "send_ack_p50_us=%.0f send_ack_p99_us=%.0f events_per_frame=%.2f writes_per_commit=%.2f "
      "samples=%llu cut_off=%.0f violations=%llu\n",
      layout, f.writers, f.subscribers, f.chunks, f.rate, read, fanout, writes_s, events_s,
      s.ack_event.QuantileUs(0.5), s.ack_event.QuantileUs(0.99), s.ack_event.MaxUs(),
      s.send_event.QuantileUs(0.5), s.send_event.QuantileUs(0.99), s.send_event.MaxUs(), before,
      w.send_ack.QuantileUs(0.5), w.send_ack.QuantileUs(0.99),
      s.frames > 0 ? static_cast<double>(s.events) / static_cast<double>(s.frames) : 0,
      commits > 0 ? static_cast<double>(w.writes) / commits : 0,
      static_cast<unsigned long long>(s.samples), cut_off,
      static_cast<unsigned long long>(violations.count()));
  std::fflush(stdout);
  violations.Print();
  return violations.count();
}

// Ends the process should a run overrun its time (a server that stops
// answering must not hang the benchmark).
void StartWatchdog(double seconds) {
  std::thread([seconds] {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    std::fprintf(stderr, "event_bench: watchdog: still running after %.0f s, giving up\n", seconds);
    std::_Exit(3);
  }).detach();
}

int Main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  const Flags f = ParseFlags(argc, argv);
  std::vector<bool> layouts;
  if (f.regions != "split") layouts.push_back(false);
  if (f.regions != "all") layouts.push_back(true);
  const size_t runs = layouts.size() + (f.smoke ? 1 : 0);
  StartWatchdog(static_cast<double>(runs) * (f.warmup + f.seconds + 2 * 10 + 30) + 60);
  uint64_t violations = 0;
  for (bool split : layouts) violations += RunLayout(f, split);
  if (f.smoke) {  // the client's own reading too
    Flags via_client = f;
    via_client.read_via_client = true;
    violations += RunLayout(via_client, /*split=*/false);
  }
  if (violations > 0) {
    std::fprintf(stderr, "event_bench: FAILED: %llu violations\n",
                 static_cast<unsigned long long>(violations));
    return 1;
  }
  if (f.smoke) std::printf("event_bench smoke: OK\n");
  return 0;
}

}  // namespace
}  // namespace voxdb::bench

int main(int argc, char** argv) { return voxdb::bench::Main(argc, argv); }
