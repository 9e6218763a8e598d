// net_bench: a network load generator for a running voxdbd.
//
//   net_bench --address 127.0.0.1:7390 --mode load [--chunks 64]
//   net_bench --address ... --mode get-chunks --connections 16 --seconds 5
//             [--pipeline 1] [--batch 1] [--client-threads 1] [--verify]
//   net_bench --address ... --mode set-voxels --connections 64 --seconds 5
//   net_bench --address ... --mode ping --connections 64 --seconds 5
//   net_bench --mode smoke --voxdbd build/daemon/voxdbd
//
// "load" writes the first --chunks surface chunks of the terrain generator
// (tests/testing/terrain.h) with PUT_CHUNK, FLUSHes them (so that they are
// served zero-copy from the store in their stored encoding), reads every one
// back and checks that it decodes to the voxels written. The other modes
// derive the same chunk list from --chunks and --seed, so they must match
// the load.
//
// "get-chunks" and "set-voxels" drive --connections connections from
// --client-threads threads (an epoll loop each, like redis-benchmark's event
// loop; --client-threads equal to --connections gives a thread per
// connection), each connection keeping --pipeline requests in flight.
// "set-voxels" sends single-voxel SET_VOXELS to random voxels of the loaded
// chunks (acknowledged after the journal fsync in voxdbd's default sync
// durability) and, on one more connection, a single-voxel GET_VOXELS every
// --probe-interval-us, one at a time, whose latency it reports separately.
//
// After --warmup seconds, replies are counted for --seconds; then no new
// request is sent, the ones in flight are drained and the connections closed.
// Each result is one line:
//
//   RESULT get_chunks conns=16 pipeline=1 batch=1 ops_s=... mb_s=... p50_us=... p99_us=...
//
// ops_s counts chunks (get-chunks) or edits (set-voxels) per second; mb_s is
// reply payload bytes (10^6) per second. Any error reply, malformed reply or
// lost connection makes the exit status 1. A watchdog ends the process
// should it ever overrun its time by 60 s.
//
// "smoke" starts the given voxdbd on an ephemeral loopback port with a
// temporary data directory, and runs every mode briefly with checks (the
// net_bench_smoke test).
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
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
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/morton.h"
#include "engine/world_frame.h"
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

constexpr size_t kMaxReplyPayload = size_t{256} << 20;
constexpr int kMaxChunks = 4096;  // keeps the load's memory bounded
constexpr auto kDrainTimeout = std::chrono::seconds(10);

struct Flags {
  std::string mode;
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  int chunks = 64;
  uint64_t seed = 1;
  int connections = 1;
  int client_threads = 1;
  double seconds = 5;
  double warmup = 0.5;
  int pipeline = 1;
  int batch = 1;
  bool verify = false;
  int probe_interval_us = 500;
  std::string voxdbd;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "net_bench: %s\n"
               "usage: net_bench --mode load|get-chunks|set-voxels|ping --address HOST:PORT\n"
               "                 [--chunks N] [--seed S] [--connections C] [--client-threads T]\n"
               "                 [--seconds S] [--warmup S] [--pipeline P] [--batch B]\n"
               "                 [--verify] [--probe-interval-us U]\n"
               "       net_bench --mode smoke --voxdbd PATH\n",
               why.c_str());
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  testing::ForEachFlag(
      argc, argv, {"help", "verify"}, Usage,
      [&](const std::string& name, const std::string& value) {
        if (name == "help") Usage("a network load generator for voxdbd");
        if (name == "verify") {
          f.verify = true;
          return;
        }
        char* end = nullptr;
        const double number = std::strtod(value.c_str(), &end);
        const bool numeric = end != value.c_str() && *end == '\0' && number >= 0;
        auto need_int = [&](int lo, int hi) {
          if (!numeric || number != std::floor(number) || number < lo || number > hi) {
            Usage(absl::StrFormat("--%s must be an integer in %d..%d", name, lo, hi));
          }
          return static_cast<int>(number);
        };
        if (name == "mode") {
          f.mode = value;
        } else if (name == "address") {
          const size_t colon = value.rfind(':');
          if (colon == std::string::npos) Usage("--address must be HOST:PORT");
          f.host = value.substr(0, colon);
          const int port = std::atoi(value.c_str() + colon + 1);
          if (port <= 0 || port > 65535) Usage("--address has no valid port");
          f.port = static_cast<uint16_t>(port);
        } else if (name == "chunks") {
          f.chunks = need_int(1, kMaxChunks);
        } else if (name == "seed") {
          f.seed = static_cast<uint64_t>(need_int(0, 1 << 30));
        } else if (name == "connections") {
          f.connections = need_int(1, 1000);
        } else if (name == "client-threads") {
          f.client_threads = need_int(1, 1000);
        } else if (name == "seconds") {
          if (!numeric || number <= 0 || number > 3600) Usage("--seconds must be in (0, 3600]");
          f.seconds = number;
        } else if (name == "warmup") {
          if (!numeric || number > 60) Usage("--warmup must be in [0, 60]");
          f.warmup = number;
        } else if (name == "pipeline") {
          f.pipeline = need_int(1, 1024);
        } else if (name == "batch") {
          f.batch = need_int(1, 65536);
        } else if (name == "probe-interval-us") {
          f.probe_interval_us = need_int(0, 1'000'000);
        } else if (name == "voxdbd") {
          f.voxdbd = value;
        } else {
          Usage("unknown option --" + name);
        }
      });
  if (f.mode.empty()) Usage("--mode is required");
  if (f.mode != "smoke" && f.port == 0) Usage("--address is required");
  if (f.mode == "smoke" && f.voxdbd.empty()) Usage("--mode smoke needs --voxdbd");
  f.client_threads = std::min(f.client_threads, f.connections);
  return f;
}

using testing::Histogram;

// --- The chunk set ------------------------------------------------------------

// The first n surface chunks of the terrain (seed), column by column from
// the sample surface chunk's column, rows of 16 columns. Classification only:
// no voxel is generated.
std::vector<engine::ChunkCoord> SurfaceChunkCoords(int n, uint64_t seed) {
  testing::TerrainOptions options;
  options.seed = seed;
  const testing::TerrainGenerator gen(options);
  const std::array<uint32_t, 3> base = testing::SampleSurfaceChunkCoords(seed);
  std::vector<engine::ChunkCoord> out;
  for (uint32_t row = 0; out.size() < static_cast<size_t>(n); ++row) {
    for (uint32_t col = 0; col < 16 && out.size() < static_cast<size_t>(n); ++col) {
      const uint32_t cx = base[0] + col, cy = base[1] + row;
      const auto [lo, hi] = gen.VariedChunkZRange(cx, cy);
      for (uint32_t cz = lo; cz <= hi && out.size() < static_cast<size_t>(n); ++cz) {
        if (gen.Classify(cx, cy, cz) == testing::TerrainGenerator::ChunkKind::kSurface) {
          out.push_back({cx, cy, cz});
        }
      }
    }
  }
  return out;
}

uint64_t HashBytes(std::span<const uint8_t> bytes) {  // FNV-1a over 8-byte words
  uint64_t h = 14695981039346656037ull;
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h = (h ^ w) * 1099511628211ull;
  }
  for (; i < bytes.size(); ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  return h;
}

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

absl::StatusOr<std::unique_ptr<protocol::Client>> ConnectClient(const Flags& f) {
  auto client = protocol::Client::Connect(f.host, f.port);
  if (!client.ok()) return client.status();
  if (auto hello = (*client)->Hello(""); !hello.ok()) return hello.status();
  return client;
}

// Walks a GET_CHUNKS reply without copying: n results, each OK with a chunk
// record (checksum verified when `verify`). Returns the records' bytes.
absl::StatusOr<size_t> CheckChunksReply(std::span<const uint8_t> p, size_t n, bool verify) {
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, p.data() + at, 4);
    return v;
  };
  if (p.size() < 4 || u32(0) != n) return absl::DataLossError("GET_CHUNKS reply: wrong count");
  size_t at = 4, bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    if (p.size() - at < 14) return absl::DataLossError("GET_CHUNKS reply: truncated");
    uint16_t status;
    std::memcpy(&status, p.data() + at, 2);
    const uint32_t len = u32(at + 10);
    at += 14;
    if (p.size() - at < len) return absl::DataLossError("GET_CHUNKS reply: truncated record");
    const std::span<const uint8_t> record = p.subspan(at, len);
    if (status != 0) {
      return absl::InternalError(absl::StrFormat(
          "GET_CHUNKS chunk status %u: %s", status,
          std::string(reinterpret_cast<const char*>(record.data()), record.size())));
    }
    if (len < engine::kChunkHeaderSize) return absl::DataLossError("GET_CHUNKS: short record");
    if (verify) {
      if (auto view = engine::ParseChunkRecord(record); !view.ok()) return view.status();
    }
    at += len;
    bytes += len;
  }
  if (at != p.size()) return absl::DataLossError("GET_CHUNKS reply: trailing bytes");
  return bytes;
}

// --- load -------------------------------------------------------------------------

struct LoadResult {
  int chunks = 0;
  double mean_record_bytes = 0;
};

absl::StatusOr<LoadResult> RunLoad(const Flags& f) {
  const Clock::time_point start = Clock::now();
  const std::vector<engine::ChunkCoord> coords = SurfaceChunkCoords(f.chunks, f.seed);
  testing::TerrainOptions options;
  options.seed = f.seed;
  const testing::TerrainGenerator gen(options);

  // Generate and encode on every core: the records (~40 KB each) and a hash
  // of each chunk's voxels, to check what the daemon serves.
  std::vector<std::vector<uint8_t>> records(coords.size());
  std::vector<uint64_t> hashes(coords.size());
  {
    std::atomic<size_t> next{0};
    std::vector<std::thread> threads;
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned t = 0; t < cores; ++t) {
      threads.emplace_back([&] {
        for (size_t i; (i = next++) < coords.size();) {
          const std::vector<uint8_t> dense = gen.Chunk(coords[i].x, coords[i].y, coords[i].z);
          hashes[i] = HashBytes(dense);
          records[i] = engine::EncodeChunk(engine::Chunk::FromDense(dense), 0, engine::NowMicros());
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  const double generate_s = SecondsSince(start);

  auto client = ConnectClient(f);
  if (!client.ok()) return client.status();
  const Clock::time_point put_start = Clock::now();
  size_t sent_bytes = 0;
  for (size_t i = 0; i < coords.size(); ++i) {
    protocol::PutChunkRequest put;
    put.code = engine::ChunkKey::FromCoord(coords[i]).code();
    put.record = std::move(records[i]);
    sent_bytes += put.record.size();
    auto reply = (*client)->Call(Opcode::kPutChunk, put.Encode());
    if (!reply.ok()) return reply.status();
  }
  records.clear();
  records.shrink_to_fit();
  if (auto flushed = (*client)->Call(Opcode::kFlush, {}); !flushed.ok()) {
    return flushed.status();
  }
  const double put_s = SecondsSince(put_start);

  // Read every chunk back: it must decode to the voxels generated.
  std::vector<uint8_t> dense(engine::kChunkVoxels);
  size_t served_bytes = 0;
  for (size_t i = 0; i < coords.size(); ++i) {
    const uint64_t code = engine::ChunkKey::FromCoord(coords[i]).code();
    auto raw = (*client)->Call(Opcode::kGetChunks, protocol::GetChunksRequest{{code}}.Encode());
    if (!raw.ok()) return raw.status();
    auto reply = protocol::GetChunksReply::Decode(*raw);
    if (!reply.ok()) return reply.status();
    if (reply->results.size() != 1 || reply->results[0].status != 0) {
      return absl::InternalError("load: a chunk just written is not served");
    }
    const std::vector<uint8_t>& record = reply->results[0].bytes;
    if (absl::Status s = engine::DecodeChunkToDense(record, dense.data()); !s.ok()) return s;
    if (HashBytes(dense) != hashes[i]) {
      return absl::DataLossError(absl::StrFormat(
          "load: chunk %s is served with other voxels than written", coords[i].ToString()));
    }
    served_bytes += record.size();
  }
  LoadResult r;
  r.chunks = static_cast<int>(coords.size());
  r.mean_record_bytes = static_cast<double>(served_bytes) / static_cast<double>(coords.size());
  std::printf(
      "RESULT load chunks=%d mean_record_bytes=%.0f sent_bytes=%zu generate_s=%.2f "
      "put_flush_s=%.2f verified=%d\n",
      r.chunks, r.mean_record_bytes, sent_bytes, generate_s, put_s, r.chunks);
  std::fflush(stdout);
  return r;
}

// --- The event-loop load generator ------------------------------------------------

enum class Workload { kGetChunks, kSetVoxels, kPing };

struct RunStats {
  uint64_t ops = 0;       // chunks or edits completed in the window
  uint64_t requests = 0;  // requests completed in the window
  uint64_t bytes = 0;     // reply payload bytes in the window
  uint64_t errors = 0;
  std::string first_error;
  Histogram latency;

  void Error(const std::string& what) {
    if (errors++ == 0) first_error = what;
  }
  void Merge(const RunStats& o) {
    ops += o.ops;
    requests += o.requests;
    bytes += o.bytes;
    if (errors == 0 && o.errors > 0) first_error = o.first_error;
    errors += o.errors;
    latency.Merge(o.latency);
  }
};

struct Window {
  Clock::time_point begin;  // end of the warm-up
  Clock::time_point end;    // no request is sent after this
  bool Contains(Clock::time_point t) const { return t >= begin && t <= end; }
};

absl::StatusOr<int> ConnectSocket(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(absl::StrFormat("cannot resolve %s: %s", host, gai_strerror(rc)));
  }
  int fd = -1, err = 0;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    err = errno;
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrFormat("cannot connect to %s:%u: %s", host, port, std::strerror(err)));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

// One thread's connections, driven by one epoll loop. Requests are framed
// with protocol::EncodeFrame and replies decoded with protocol::FrameDecoder,
// as protocol::Client does, but without blocking, so that one thread serves
// many connections.
class Driver {
 public:
  Driver(const Flags& f, Workload workload, const std::vector<engine::ChunkCoord>& coords,
         uint64_t seed)
      : flags_(f), workload_(workload), coords_(coords), rng_(seed) {}

  RunStats Run(int connections, const Window& window) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    conns_.reserve(static_cast<size_t>(connections));
    for (int i = 0; i < connections; ++i) {
      auto fd = ConnectSocket(flags_.host, flags_.port);
      if (!fd.ok()) {
        stats_.Error(fd.status().ToString());
        break;
      }
      auto c = std::make_unique<Conn>();
      c->fd = *fd;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = c.get();
      epoll_ctl(epoll_, EPOLL_CTL_ADD, c->fd, &ev);
      conns_.push_back(std::move(c));
    }
    for (auto& c : conns_) {
      for (int p = 0; p < flags_.pipeline; ++p) Queue(*c);
      FlushOut(*c);
    }
    epoll_event events[64];
    std::vector<uint8_t> buf(256 * 1024);
    for (;;) {
      const Clock::time_point now = Clock::now();
      if (now > window.end) {
        if (InFlight() == 0) break;
        if (now > window.end + kDrainTimeout) {
          stats_.Error("replies still missing 10 s after the end");
          break;
        }
      }
      const int n = epoll_wait(epoll_, events, 64, 20);
      if (n < 0 && errno != EINTR) {
        stats_.Error(std::string("epoll_wait: ") + std::strerror(errno));
        break;
      }
      for (int i = 0; i < n; ++i) {
        Conn& c = *static_cast<Conn*>(events[i].data.ptr);
        if (c.fd < 0) continue;
        if (events[i].events & EPOLLOUT) FlushOut(c);
        if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ReadReplies(c, buf, window);
        if (c.fd >= 0) FlushOut(c);
      }
    }
    for (auto& c : conns_) Close(*c);
    ::close(epoll_);
    return std::move(stats_);
  }

 private:
  struct Pending {
    uint64_t id;
    Clock::time_point sent;
  };
  struct Conn {
    int fd = -1;
    protocol::FrameDecoder decoder{kMaxReplyPayload};
    std::vector<uint8_t> out;
    size_t out_pos = 0;
    bool want_out = false;
    uint64_t next_id = 1;
    std::vector<Pending> pending;
  };

  size_t InFlight() const {
    size_t n = 0;
    for (const auto& c : conns_) n += c->fd >= 0 ? c->pending.size() : 0;
    return n;
  }

  engine::VoxelCoord RandomVoxel() {
    const engine::ChunkCoord& c = coords_[rng_() % coords_.size()];
    const uint64_t edge = engine::kChunkEdge;
    return {c.x * edge + rng_() % edge, c.y * edge + rng_() % edge, c.z * edge + rng_() % edge};
  }

  void Queue(Conn& c) {
    Opcode op;
    payload_.clear();
    if (workload_ == Workload::kGetChunks) {
      op = Opcode::kGetChunks;
      protocol::GetChunksRequest req;
      for (int i = 0; i < flags_.batch; ++i) {
        req.codes.push_back(engine::ChunkKey::FromCoord(coords_[rng_() % coords_.size()]).code());
      }
      payload_ = req.Encode();
    } else if (workload_ == Workload::kPing) {
      op = Opcode::kPing;
      payload_.push_back(static_cast<uint8_t>(rng_()));
    } else {
      op = Opcode::kSetVoxels;
      const engine::VoxelCoord v = RandomVoxel();
      protocol::SetVoxelsRequest req;
      req.edits.push_back({{v.x, v.y, v.z}, static_cast<uint8_t>(1 + rng_() % 12)});
      payload_ = req.Encode();
    }
    protocol::FrameHeader h;
    h.opcode = static_cast<uint8_t>(op);
    h.request_id = c.next_id++;
    if (c.out_pos == c.out.size()) {
      c.out.clear();
      c.out_pos = 0;
    }
    protocol::EncodeFrame(h, payload_, &c.out);
    c.pending.push_back({h.request_id, Clock::now()});
  }

  void FlushOut(Conn& c) {
    while (c.out_pos < c.out.size()) {
      const ssize_t n =
          ::send(c.fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_pos += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      stats_.Error(std::string("send: ") + std::strerror(errno));
      return Close(c);
    }
    const bool want = c.out_pos < c.out.size();
    if (want != c.want_out) {
      epoll_event ev{};
      ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
      ev.data.ptr = &c;
      epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
      c.want_out = want;
    }
  }

  void ReadReplies(Conn& c, std::vector<uint8_t>& buf, const Window& window) {
    for (;;) {
      const ssize_t n = ::recv(c.fd, buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n <= 0) {
        stats_.Error("the server closed a connection");
        return Close(c);
      }
      std::span<const uint8_t> in(buf.data(), static_cast<size_t>(n));
      while (!in.empty()) {
        size_t used = 0;
        protocol::Frame frame;
        const auto r = c.decoder.Feed(in, &used, &frame);
        in = in.subspan(used);
        if (r == protocol::FrameDecoder::Result::kError) {
          stats_.Error("bad reply frame: " + c.decoder.error().ToString());
          return Close(c);
        }
        if (r == protocol::FrameDecoder::Result::kFrame) OnReply(c, frame, window);
        if (c.fd < 0) return;
      }
      if (static_cast<size_t>(n) < buf.size()) return;  // drained, most likely
    }
  }

  void OnReply(Conn& c, const protocol::Frame& frame, const Window& window) {
    const Clock::time_point now = Clock::now();
    auto it = std::find_if(c.pending.begin(), c.pending.end(),
                           [&](const Pending& p) { return p.id == frame.header.request_id; });
    if (it == c.pending.end() || !frame.header.is_reply()) {
      stats_.Error("a reply to no request in flight");
      return Close(c);
    }
    const Clock::time_point sent = it->sent;
    c.pending.erase(it);
    const std::span<const uint8_t> p = frame.payload;
    size_t ops = 0;
    if (frame.header.status != 0) {
      stats_.Error(absl::StrFormat("%s failed: %s",
                                   protocol::OpcodeName(static_cast<Opcode>(frame.header.opcode)),
                                   std::string(reinterpret_cast<const char*>(p.data()), p.size())));
    } else if (workload_ == Workload::kGetChunks) {
      auto bytes = CheckChunksReply(p, static_cast<size_t>(flags_.batch), flags_.verify);
      if (bytes.ok()) {
        ops = static_cast<size_t>(flags_.batch);
      } else {
        stats_.Error(bytes.status().ToString());
      }
    } else if (workload_ == Workload::kPing) {
      if (p.size() == 1) {
        ops = 1;
      } else {
        stats_.Error("PING: the reply does not echo the payload");
      }
    } else {
      auto version = protocol::DecodeU64(p);
      if (version.ok() && *version > 0) {
        ops = 1;
      } else {
        stats_.Error("SET_VOXELS: bad version reply");
      }
    }
    if (ops > 0 && window.Contains(now)) {
      stats_.ops += ops;
      stats_.requests += 1;
      stats_.bytes += p.size();
      stats_.latency.Add(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent).count()));
    }
    if (now <= window.end) Queue(c);
  }

  void Close(Conn& c) {
    if (c.fd < 0) return;
    epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.fd = -1;
  }

  const Flags& flags_;
  const Workload workload_;
  const std::vector<engine::ChunkCoord>& coords_;
  std::mt19937_64 rng_;
  int epoll_ = -1;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<uint8_t> payload_;
  RunStats stats_;
};

// Spreads the connections over the client threads and merges their stats.
RunStats Drive(const Flags& f, Workload workload, const std::vector<engine::ChunkCoord>& coords,
               const Window& window) {
  const int threads = std::max(1, std::min(f.client_threads, f.connections));
  std::vector<RunStats> stats(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    const int conns = f.connections / threads + (t < f.connections % threads ? 1 : 0);
    pool.emplace_back([&, t, conns] {
      Driver driver(f, workload, coords, f.seed * 1000 + static_cast<uint64_t>(t) + 1);
      stats[static_cast<size_t>(t)] = driver.Run(conns, window);
    });
  }
  for (auto& t : pool) t.join();
  RunStats all;
  for (const auto& s : stats) all.Merge(s);
  return all;
}

Window MakeWindow(const Flags& f) {
  const Clock::time_point now = Clock::now();
  Window w;
  w.begin =
      now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(f.warmup));
  w.end = w.begin +
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(f.seconds));
  return w;
}

void PrintErrors(const char* what, const RunStats& s) {
  if (s.errors > 0) {
    std::fprintf(stderr, "net_bench: %s: %llu errors, the first: %s\n", what,
                 static_cast<unsigned long long>(s.errors), s.first_error.c_str());
  }
}

// --- get-chunks -------------------------------------------------------------------

absl::StatusOr<RunStats> RunGetChunks(const Flags& f) {
  const std::vector<engine::ChunkCoord> coords = SurfaceChunkCoords(f.chunks, f.seed);
  const RunStats s = Drive(f, Workload::kGetChunks, coords, MakeWindow(f));
  std::printf(
      "RESULT get_chunks conns=%d pipeline=%d batch=%d client_threads=%d ops_s=%.0f mb_s=%.1f "
      "p50_us=%.1f p99_us=%.1f errors=%llu\n",
      f.connections, f.pipeline, f.batch, std::min(f.client_threads, f.connections),
      static_cast<double>(s.ops) / f.seconds, static_cast<double>(s.bytes) / f.seconds / 1e6,
      s.latency.QuantileUs(0.5), s.latency.QuantileUs(0.99),
      static_cast<unsigned long long>(s.errors));
  std::fflush(stdout);
  PrintErrors("get-chunks", s);
  if (s.errors > 0) return absl::InternalError(s.first_error);
  return s;
}

// --- ping ------------------------------------------------------------------------

// The request rate of a round trip that does no work: the ceiling of any
// request on this machine at this connection count.
absl::StatusOr<RunStats> RunPing(const Flags& f) {
  const RunStats s = Drive(f, Workload::kPing, {}, MakeWindow(f));
  std::printf(
      "RESULT ping conns=%d client_threads=%d ops_s=%.0f p50_us=%.1f p99_us=%.1f errors=%llu\n",
      f.connections, std::min(f.client_threads, f.connections),
      static_cast<double>(s.ops) / f.seconds, s.latency.QuantileUs(0.5), s.latency.QuantileUs(0.99),
      static_cast<unsigned long long>(s.errors));
  std::fflush(stdout);
  PrintErrors("ping", s);
  if (s.errors > 0) return absl::InternalError(s.first_error);
  return s;
}

// --- set-voxels (+ the GET_VOXELS probe) ---------------------------------------------

struct SetVoxelsResult {
  RunStats writes;
  RunStats probe;
};

// One connection, one GET_VOXELS of one voxel at a time, every
// probe_interval_us (back to back when 0), through the blocking client.
RunStats Probe(const Flags& f, const std::vector<engine::ChunkCoord>& coords,
               const Window& window) {
  RunStats s;
  auto client = ConnectClient(f);
  if (!client.ok()) {
    s.Error(client.status().ToString());
    return s;
  }
  std::mt19937_64 rng(f.seed * 7919 + 17);
  const auto interval = std::chrono::microseconds(f.probe_interval_us);
  Clock::time_point next = Clock::now();
  while (Clock::now() <= window.end) {
    if (interval.count() > 0) {
      next = std::max(next + interval, Clock::now());  // no catching up after a stall
      std::this_thread::sleep_until(next);
    }
    const engine::ChunkCoord& c = coords[rng() % coords.size()];
    const uint64_t edge = engine::kChunkEdge;
    protocol::GetVoxelsRequest req;
    req.at.push_back(
        {c.x * edge + rng() % edge, c.y * edge + rng() % edge, c.z * edge + rng() % edge});
    const Clock::time_point t0 = Clock::now();
    auto reply = (*client)->GetVoxels(req);
    const Clock::time_point t1 = Clock::now();
    if (!reply.ok()) {
      s.Error("GET_VOXELS: " + reply.status().ToString());
      if (absl::IsUnavailable(reply.status())) break;
      continue;
    }
    if (reply->size() != 1 || (*reply)[0] > testing::kClay + 2) {
      s.Error("GET_VOXELS: a malformed reply or an unknown material");
      continue;
    }
    if (window.Contains(t1)) {
      s.ops += 1;
      s.requests += 1;
      s.bytes += reply->size();
      s.latency.Add(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
    }
  }
  return s;
}

// The STATS counters journal_commits and last_seq (0 when unavailable).
std::pair<double, double> CommitCounters(const Flags& f) {
  auto client = ConnectClient(f);
  if (!client.ok()) return {0, 0};
  auto text = (*client)->Call(Opcode::kStats, {});
  if (!text.ok()) return {0, 0};
  std::pair<double, double> out{0, 0};
  const std::string s(text->begin(), text->end());
  for (size_t at = 0; at < s.size();) {
    size_t end = s.find('\n', at);
    if (end == std::string::npos) end = s.size();
    const std::string line = s.substr(at, end - at);
    const size_t space = line.find(' ');
    if (space != std::string::npos) {
      const std::string name = line.substr(0, space);
      const double value = std::atof(line.c_str() + space + 1);
      if (name == "journal_commits") out.first = value;
      if (name == "last_seq") out.second = value;
    }
    at = end + 1;
  }
  return out;
}

absl::StatusOr<SetVoxelsResult> RunSetVoxels(const Flags& f) {
  const std::vector<engine::ChunkCoord> coords = SurfaceChunkCoords(f.chunks, f.seed);
  const auto [commits0, seq0] = CommitCounters(f);
  const Window window = MakeWindow(f);
  SetVoxelsResult r;
  std::thread probe([&] { r.probe = Probe(f, coords, window); });
  r.writes = Drive(f, Workload::kSetVoxels, coords, window);
  probe.join();
  const auto [commits1, seq1] = CommitCounters(f);
  const RunStats& w = r.writes;
  // Group commit: writes per journal commit (fsync) over the whole run.
  const double per_commit = commits1 > commits0 ? (seq1 - seq0) / (commits1 - commits0) : 0;
  std::printf(
      "RESULT set_voxels conns=%d client_threads=%d ops_s=%.0f p50_us=%.1f p99_us=%.1f "
      "writes_per_commit=%.1f commits_s=%.0f errors=%llu\n",
      f.connections, std::min(f.client_threads, f.connections),
      static_cast<double>(w.ops) / f.seconds, w.latency.QuantileUs(0.5), w.latency.QuantileUs(0.99),
      per_commit, (commits1 - commits0) / (f.warmup + f.seconds),
      static_cast<unsigned long long>(w.errors));
  std::printf(
      "RESULT get_voxels_under_writes conns=1 writers=%d interval_us=%d samples=%llu "
      "p50_us=%.1f p99_us=%.1f max_us=%.1f errors=%llu\n",
      f.connections, f.probe_interval_us, static_cast<unsigned long long>(r.probe.ops),
      r.probe.latency.QuantileUs(0.5), r.probe.latency.QuantileUs(0.99),
      r.probe.latency.QuantileUs(1.0), static_cast<unsigned long long>(r.probe.errors));
  std::fflush(stdout);
  PrintErrors("set-voxels", w);
  PrintErrors("get-voxels probe", r.probe);
  if (w.errors > 0) return absl::InternalError(w.first_error);
  if (r.probe.errors > 0) return absl::InternalError(r.probe.first_error);
  return r;
}

// --- smoke ------------------------------------------------------------------------

#define SMOKE_CHECK(cond, ...)                                       \
  do {                                                               \
    if (!(cond)) {                                                   \
      std::fprintf(stderr, "net_bench smoke: FAILED: " __VA_ARGS__); \
      std::fprintf(stderr, "\n");                                    \
      return 1;                                                      \
    }                                                                \
  } while (0)

int RunSmoke(Flags f) {
  testing::TempDir dir;
  testing::DaemonProcess daemon(f.voxdbd, dir.Sub("data"));
  f.host = "127.0.0.1";
  f.port = daemon.port();
  f.chunks = 6;
  f.warmup = 0.2;
  f.seconds = 1;

  auto load = RunLoad(f);  // checks every chunk decodes to what was written
  SMOKE_CHECK(load.ok(), "load: %s", load.status().ToString().c_str());
  SMOKE_CHECK(load->chunks == 6 && load->mean_record_bytes > 1000, "load: %d chunks of %.0f B",
              load->chunks, load->mean_record_bytes);

  f.connections = 2;
  f.client_threads = 2;
  f.pipeline = 2;
  f.batch = 3;
  f.verify = true;  // every record's checksum
  auto gets = RunGetChunks(f);
  SMOKE_CHECK(gets.ok(), "get-chunks: %s", gets.status().ToString().c_str());
  SMOKE_CHECK(gets->ops > 0 && gets->bytes > gets->ops * 1000, "get-chunks: nothing served");

  f.connections = 4;
  f.client_threads = 1;
  f.pipeline = 1;
  f.batch = 1;
  auto pings = RunPing(f);
  SMOKE_CHECK(pings.ok(), "ping: %s", pings.status().ToString().c_str());
  SMOKE_CHECK(pings->ops > 0, "ping: no PING answered");

  auto sets = RunSetVoxels(f);
  SMOKE_CHECK(sets.ok(), "set-voxels: %s", sets.status().ToString().c_str());
  SMOKE_CHECK(sets->writes.ops > 0, "set-voxels: no write acknowledged");
  SMOKE_CHECK(sets->probe.ops > 0, "set-voxels: no GET_VOXELS answered");

  // A write is read back.
  auto client = ConnectClient(f);
  SMOKE_CHECK(client.ok(), "connect: %s", client.status().ToString().c_str());
  const std::vector<engine::ChunkCoord> coords = SurfaceChunkCoords(f.chunks, f.seed);
  const protocol::Voxel3 v{uint64_t{coords[0].x} * engine::kChunkEdge + 5,
                           uint64_t{coords[0].y} * engine::kChunkEdge + 6,
                           uint64_t{coords[0].z} * engine::kChunkEdge + 7};
  SMOKE_CHECK((*client)->SetVoxels({{{v, 42}}}).ok(), "SET_VOXELS");
  auto got = (*client)->GetVoxels({{v}});
  SMOKE_CHECK(got.ok() && *got == std::vector<uint8_t>{42}, "GET_VOXELS does not read the write");
  client->reset();

  const int status = daemon.StopWith(SIGTERM);
  SMOKE_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "voxdbd did not stop cleanly");
  std::printf("net_bench smoke: OK\n");
  return 0;
}

// Ends the process should a run overrun its time (a server that stops
// answering must not hang the benchmark).
void StartWatchdog(double seconds) {
  std::thread([seconds] {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    std::fprintf(stderr, "net_bench: watchdog: still running after %.0f s, giving up\n", seconds);
    std::_Exit(3);
  }).detach();
}

int Main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  const Flags f = ParseFlags(argc, argv);
  if (f.mode == "smoke") {
    StartWatchdog(120);
    return RunSmoke(f);
  }
  StartWatchdog(f.warmup + f.seconds + 60 + (f.mode == "load" ? 600 : 0));
  absl::Status s;
  if (f.mode == "load") {
    s = RunLoad(f).status();
  } else if (f.mode == "get-chunks") {
    s = RunGetChunks(f).status();
  } else if (f.mode == "set-voxels") {
    s = RunSetVoxels(f).status();
  } else if (f.mode == "ping") {
    s = RunPing(f).status();
  } else {
    Usage("unknown --mode " + f.mode);
  }
  if (!s.ok()) {
    std::fprintf(stderr, "net_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace voxdb::bench

int main(int argc, char** argv) { return voxdb::bench::Main(argc, argv); }
