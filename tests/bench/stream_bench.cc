// stream_bench: streaming sessions of voxdbd (protocol/PROTOCOL.md,
// "Streaming"; daemon/stream.h): time to a viewer's complete initial view,
// chunks/s and MB/s streamed, how closely a budget is held, and the
// unbudgeted rate against the loopback bandwidth.
//
//   stream_bench --voxdbd build/daemon/voxdbd [--side 70] [--view-m 1000]
//                [--lod-m 64] [--lod-levels 4] [--runs 5] [--budgets 2,8,32]
//                [--budget-view-m 1200] [--budget-skip 0.5] [--budget-seconds 3]
//                [--dense-side 14] [--loopback-mb-s X]
//   stream_bench --smoke --voxdbd build/daemon/voxdbd
//   tests/bench/stream_bench.sh build [options]   # iperf3's loopback bandwidth too
//
// Starts the given voxdbd (a temporary data directory under $TMPDIR, async
// durability, --lod-levels) and loads a generated world:
//   - terrain: every surface chunk (tests/testing/terrain.h) of --side x
//     --side chunk columns (32 m each; 70: a 2.24 km square) around the
//     terrain's sample surface column, generated and encoded on every core
//     (--threads) and written with pipelined PUT_CHUNK. The viewer stands
//     2 m above the ground at the centre of the square.
//   - a dense block (--dense-side, 0: none), 64 km away: a cube of
//     --dense-side^3 chunks, every one a copy of a terrain chunk's record,
//     its viewer at the centre with a view of (--dense-side / 2 - 1) chunks,
//     so that every node the view plans exists. It tells the cost of the
//     data path (read, frame, send) from the cost of the plan, which on
//     terrain is mostly sky and rock that is not stored.
// then FLUSHes and waits for the LOD pyramid (STATS lod_dirty 0).
//
// Each stream on a new connection, read with recv() calls of 256 KiB into
// one buffer, walking the frame and item headers and skipping the records
// (about what iperf3's receiver does):
//   1. initial view: one STREAM_UPDATE (the viewer, velocity 0, --view-m,
//      budget 0, default window) with --lod-m, then with LOD distance 0
//      (level 0 everywhere); the view is complete at the last item
//      received before --quiet-ms without a byte. Time from sending the
//      request to that last item, items/s (nodes of any level) and MB/s
//      (10^6 bytes of whole frames, headers included, over that time; also
//      from the first frame to the last); --runs runs, first and median.
//      What was received is checked against the nodes the rules of
//      PROTOCOL.md give for the stored chunks: every one, once.
//   2. budget precision: LOD distance 0, view --budget-view-m (default
//      1200 m: 143 MB of the default world, so that 32 MB/s does not run
//      dry), each budget of --budgets (MB/s): the bytes of the frames that
//      arrive in (--budget-skip, --budget-skip + --budget-seconds] after the
//      first item, over the time between the first and the last of those
//      arrivals: achieved / budget (target: within 5%).
//   3. unbudgeted rate: the MB/s of the LOD-0 initial view (and of the dense
//      block's) against the loopback bandwidth: --loopback-mb-s (iperf3's,
//      one stream, from tests/bench/stream_bench.sh) or else a plain TCP
//      transfer measured here (one thread writing 256 KiB send() calls, one
//      reading like the stream reader) (target: >= 70%).
//
// Output: human-readable lines, a markdown table for docs/BENCHMARKS.md and one
// machine-readable line "SUMMARY stream_bench key=value ...". Exit status 1
// on any protocol error, and with --smoke on a failed check.
//
// --smoke: a 6 x 6 column world and a 4^3 dense block, 100 m view, 2 LOD
// levels, short runs; checks the views and a budget (stream_bench_smoke).
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/morton.h"
#include "protocol/client.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/flags.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"

namespace voxdb::bench {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::Opcode;

constexpr double kVoxelM = 0.25;  // the default world frame's voxel size
constexpr uint64_t kEdge = engine::kChunkEdge;
constexpr double kChunkM = kEdge * kVoxelM;
constexpr double kMB = 1e6;

struct Flags {
  std::string voxdbd;
  bool smoke = false;
  int side = 70;
  uint64_t seed = 1;
  int lod_levels = 4;
  double view_m = 1000;
  double lod_m = 64;
  int runs = 5;
  double quiet_ms = 300;
  std::vector<double> budgets_mb = {2, 8, 32};
  double budget_view_m = 1200;
  double budget_skip_s = 0.5;
  double budget_seconds = 3;
  int dense_side = 14;
  double loopback_mb_s = 0;  // iperf3's, from the script; 0: none
  double tcp_seconds = 2;
  uint32_t window = 0;
  int threads = 0;  // generator threads; 0: every core
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "stream_bench: %s\n"
               "usage: stream_bench --voxdbd PATH [--side N] [--seed S] [--lod-levels L]\n"
               "                    [--view-m M] [--lod-m M] [--runs R] [--quiet-ms MS]\n"
               "                    [--budgets MB,MB,...] [--budget-view-m M]\n"
               "                    [--budget-skip S] [--budget-seconds S] [--dense-side N]\n"
               "                    [--loopback-mb-s X] [--tcp-seconds S] [--window BYTES]\n"
               "                    [--threads T]\n"
               "       stream_bench --smoke --voxdbd PATH\n",
               why.c_str());
  std::exit(2);
}

double ParseNumber(const std::string& name, const std::string& value, double lo, double hi) {
  char* end = nullptr;
  const double v = std::strtod(value.c_str(), &end);
  if (end == value.c_str() || *end != '\0' || !(v >= lo && v <= hi)) {
    Usage(absl::StrFormat("--%s must be a number in [%g, %g]", name, lo, hi));
  }
  return v;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--smoke") f.smoke = true;
  }
  if (f.smoke) {  // the defaults of a smoke run; options still apply
    f.side = 6;
    f.lod_levels = 2;
    f.view_m = 100;
    f.lod_m = 16;
    f.runs = 2;
    f.budgets_mb = {0.5};
    f.budget_view_m = 150;
    f.budget_skip_s = 0.2;
    f.budget_seconds = 1;
    f.dense_side = 4;
    f.tcp_seconds = 0.3;
  }
  testing::ForEachFlag(
      argc, argv, {"help", "smoke"}, Usage, [&](const std::string& name, const std::string& value) {
        if (name == "help") Usage("streaming benchmark of voxdbd");
        if (name == "smoke") return;
        if (name == "voxdbd") {
          f.voxdbd = value;
        } else if (name == "side") {
          f.side = static_cast<int>(ParseNumber(name, value, 1, 1000));
        } else if (name == "seed") {
          f.seed = static_cast<uint64_t>(ParseNumber(name, value, 0, 1e9));
        } else if (name == "lod-levels") {
          f.lod_levels = static_cast<int>(ParseNumber(name, value, 0, 16));
        } else if (name == "view-m") {
          f.view_m = ParseNumber(name, value, 1, 8000);
        } else if (name == "lod-m") {
          f.lod_m = ParseNumber(name, value, 0, 1e6);
        } else if (name == "runs") {
          f.runs = static_cast<int>(ParseNumber(name, value, 1, 100));
        } else if (name == "quiet-ms") {
          f.quiet_ms = ParseNumber(name, value, 10, 60000);
        } else if (name == "budgets") {
          f.budgets_mb.clear();
          size_t at = 0;
          while (at <= value.size()) {
            const size_t comma = std::min(value.find(',', at), value.size());
            if (comma > at) {
              f.budgets_mb.push_back(ParseNumber(name, value.substr(at, comma - at), 0.01, 1e5));
            }
            at = comma + 1;
          }
        } else if (name == "budget-view-m") {
          f.budget_view_m = ParseNumber(name, value, 1, 8000);
        } else if (name == "budget-skip") {
          f.budget_skip_s = ParseNumber(name, value, 0, 60);
        } else if (name == "budget-seconds") {
          f.budget_seconds = ParseNumber(name, value, 0.1, 600);
        } else if (name == "dense-side") {
          f.dense_side = static_cast<int>(ParseNumber(name, value, 0, 64));
          if (f.dense_side == 1 || f.dense_side == 2) Usage("--dense-side must be 0 or at least 3");
        } else if (name == "loopback-mb-s") {
          f.loopback_mb_s = ParseNumber(name, value, 0, 1e6);
        } else if (name == "tcp-seconds") {
          f.tcp_seconds = ParseNumber(name, value, 0, 60);
        } else if (name == "window") {
          f.window = static_cast<uint32_t>(ParseNumber(name, value, 0, 1u << 31));
        } else if (name == "threads") {
          f.threads = static_cast<int>(ParseNumber(name, value, 0, 256));
        } else {
          Usage("unknown option --" + name);
        }
      });
  if (f.voxdbd.empty()) Usage("--voxdbd is required");
  if (f.threads == 0) {
    f.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  return f;
}

double SecondsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double LoadAverage() {
  double l = 0;
  if (FILE* p = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(p, "%lf", &l) != 1) l = 0;
    std::fclose(p);
  }
  return l;
}

// Ends the process should the benchmark hang (a daemon that stops sending).
void StartWatchdog(double seconds) {
  std::thread([seconds] {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    std::fprintf(stderr, "stream_bench: watchdog: still running after %.0f s\n", seconds);
    std::_Exit(1);
  }).detach();
}

absl::StatusOr<std::unique_ptr<protocol::Client>> ConnectClient(uint16_t port) {
  protocol::ClientOptions o;
  o.io_timeout = std::chrono::seconds(120);
  auto client = protocol::Client::Connect("127.0.0.1", port, o);
  if (!client.ok()) return client.status();
  if (auto hello = (*client)->Hello("", "stream_bench"); !hello.ok()) return hello.status();
  return client;
}

absl::StatusOr<uint64_t> Stat(protocol::Client* client, const std::string& name) {
  auto text = client->Stats();
  if (!text.ok()) return text.status();
  size_t at = 0;
  while (at < text->size()) {
    size_t end = text->find('\n', at);
    if (end == std::string::npos) end = text->size();
    const std::string line = text->substr(at, end - at);
    if (line.rfind(name + " ", 0) == 0) {
      return std::strtoull(line.c_str() + name.size() + 1, nullptr, 10);
    }
    at = end + 1;
  }
  return absl::NotFoundError("no " + name + " in STATS");
}

// --- The world --------------------------------------------------------------------

// A viewer's position, in voxels.
struct Point {
  double x = 0, y = 0, z = 0;
};

struct World {
  std::vector<uint64_t> terrain;                 // the terrain's chunks
  std::vector<uint64_t> dense;                   // the dense block's
  std::unordered_map<uint64_t, uint64_t> sizes;  // chunk -> record bytes written
  uint64_t terrain_bytes = 0, dense_bytes = 0;   // of the records written
  Point viewer, dense_viewer;
  double dense_view_m = 0;
  double load_s = 0, dense_s = 0, flush_s = 0, lod_s = 0;
};

// A node of the LOD pyramid (level 0: a chunk), as daemon/stream.h.
struct Node {
  uint8_t level = 0;
  uint64_t code = 0;
  friend auto operator<=>(const Node&, const Node&) = default;
};
struct NodeHash {
  size_t operator()(const Node& n) const {
    return std::hash<uint64_t>()(n.code * 0x9E3779B97F4A7C15ull ^ n.level);
  }
};

// PUT_CHUNKs `batch`, pipelined; appends the chunks to `codes`.
absl::Status PutBatch(protocol::Client* client,
                      std::vector<std::pair<uint64_t, std::vector<uint8_t>>>* batch,
                      std::vector<uint64_t>* codes, World* w, uint64_t* bytes) {
  std::vector<protocol::Request> requests;
  for (auto& [code, record] : *batch) {
    protocol::PutChunkRequest put;
    put.code = code;
    put.record = std::move(record);
    *bytes += put.record.size();
    w->sizes[code] = put.record.size();
    codes->push_back(code);
    requests.push_back({Opcode::kPutChunk, put.Encode()});
  }
  batch->clear();
  for (const auto& r : client->CallBatch(requests)) {
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<World> LoadWorld(const Flags& f, uint16_t port) {
  World w;
  testing::TerrainOptions options;
  options.seed = f.seed;
  const testing::TerrainGenerator gen(options);
  const std::array<uint32_t, 3> centre = testing::SampleSurfaceChunkCoords(f.seed);
  const uint32_t cx0 = centre[0] - static_cast<uint32_t>(f.side / 2),
                 cy0 = centre[1] - static_cast<uint32_t>(f.side / 2);
  const uint64_t vx = uint64_t{centre[0]} * kEdge + kEdge / 2,
                 vy = uint64_t{centre[1]} * kEdge + kEdge / 2;
  const int64_t ground = gen.SurfaceZ(vx, vy);
  w.viewer = {static_cast<double>(vx) + 0.5, static_cast<double>(vy) + 0.5,
              static_cast<double>(ground) + 8.5};  // 2 m above the ground

  auto client = ConnectClient(port);
  if (!client.ok()) return client.status();

  // Generators: a column at a time, records into a bounded queue; this
  // thread sends them, pipelined.
  using Item = std::pair<uint64_t, std::vector<uint8_t>>;
  std::mutex mu;
  std::condition_variable cv_put, cv_take;
  std::deque<Item> queue;
  int producing = f.threads;
  std::atomic<bool> abandon{false};  // after an error: stop generating
  constexpr size_t kQueueMax = 256;
  std::atomic<size_t> next_column{0};
  const size_t side = static_cast<size_t>(f.side), columns = side * side;
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < f.threads; ++t) {
    threads.emplace_back([&] {
      for (size_t i; !abandon && (i = next_column++) < columns;) {
        const uint32_t cx = cx0 + static_cast<uint32_t>(i % side),
                       cy = cy0 + static_cast<uint32_t>(i / side);
        const auto [lo, hi] = gen.VariedChunkZRange(cx, cy);
        for (uint32_t cz = lo; cz <= hi; ++cz) {
          if (gen.Classify(cx, cy, cz) != testing::TerrainGenerator::ChunkKind::kSurface) continue;
          Item item{engine::MortonEncode(cx, cy, cz),
                    engine::EncodeChunk(engine::Chunk::FromDense(gen.Chunk(cx, cy, cz)), 0,
                                        engine::NowMicros())};
          std::unique_lock<std::mutex> lock(mu);
          cv_put.wait(lock, [&] { return queue.size() < kQueueMax || abandon.load(); });
          if (abandon) break;
          queue.push_back(std::move(item));
          cv_take.notify_one();
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      --producing;
      cv_take.notify_one();
    });
  }
  absl::Status error;
  std::vector<std::vector<uint8_t>> samples;  // records for the dense block
  size_t last_report = 0;
  while (error.ok()) {
    std::vector<Item> batch;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv_take.wait(lock, [&] { return !queue.empty() || producing == 0; });
      if (queue.empty()) break;
      while (!queue.empty() && batch.size() < 64) {
        batch.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      cv_put.notify_all();
    }
    for (const Item& item : batch) {
      if (samples.size() < 64) samples.push_back(item.second);
    }
    error = PutBatch(client->get(), &batch, &w.terrain, &w, &w.terrain_bytes);
    if (w.terrain.size() >= last_report + 1000) {
      last_report = w.terrain.size();
      std::fprintf(stderr, "  %zu chunks written (%.0f s)\n", w.terrain.size(),
                   SecondsBetween(start, Clock::now()));
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    abandon = true;  // after an error
    cv_put.notify_all();
  }
  for (auto& t : threads) t.join();
  if (!error.ok()) return error;
  w.load_s = SecondsBetween(start, Clock::now());

  if (f.dense_side > 0 && !samples.empty()) {
    // 64 km east, aligned to the top LOD level: copies of terrain records.
    const Clock::time_point t = Clock::now();
    const uint32_t n = static_cast<uint32_t>(f.dense_side);
    const uint32_t bx = (cx0 + 2048) & ~15u, by = cy0 & ~15u,
                   bz = static_cast<uint32_t>(ground / static_cast<int64_t>(kEdge)) & ~15u;
    std::vector<Item> batch;
    size_t i = 0;
    for (uint32_t z = 0; z < n && error.ok(); ++z) {
      for (uint32_t y = 0; y < n && error.ok(); ++y) {
        for (uint32_t x = 0; x < n && error.ok(); ++x) {
          batch.emplace_back(engine::MortonEncode(bx + x, by + y, bz + z),
                             samples[i++ % samples.size()]);
          if (batch.size() == 64)
            error = PutBatch(client->get(), &batch, &w.dense, &w, &w.dense_bytes);
        }
      }
    }
    if (error.ok() && !batch.empty()) {
      error = PutBatch(client->get(), &batch, &w.dense, &w, &w.dense_bytes);
    }
    if (!error.ok()) return error;
    w.dense_viewer = {static_cast<double>((uint64_t{bx} * 2 + n) * kEdge / 2),
                      static_cast<double>((uint64_t{by} * 2 + n) * kEdge / 2),
                      static_cast<double>((uint64_t{bz} * 2 + n) * kEdge / 2)};
    w.dense_view_m = (n / 2 - 1) * kChunkM;
    w.dense_s = SecondsBetween(t, Clock::now());
  }

  Clock::time_point t = Clock::now();
  if (absl::Status s = (*client)->Flush(); !s.ok()) return s;
  w.flush_s = SecondsBetween(t, Clock::now());
  t = Clock::now();
  if (f.lod_levels > 0) {
    // The builder works off the markers the flush wrote.
    int zero = 0;
    while (zero < 2) {
      auto dirty = Stat(client->get(), "lod_dirty");
      if (!dirty.ok()) return dirty.status();
      zero = *dirty == 0 ? zero + 1 : 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(zero ? 20 : 100));
    }
  }
  w.lod_s = SecondsBetween(t, Clock::now());
  return w;
}

// --- What the rules give (PROTOCOL.md, "Streaming") --------------------------------

// Distance in metres from p (voxels) to the nearest point of the node's
// box, computed as daemon/stream.cc does.
double Distance(const Point& p, const Node& n) {
  const engine::ChunkCoord c = engine::MortonDecode(n.code);
  const double edge = static_cast<double>(kEdge << n.level);
  auto axis = [edge](double v, uint32_t k) {
    const double lo = k * edge, hi = lo + edge;
    return v < lo ? lo - v : v > hi ? v - hi : 0.0;
  };
  const double dx = axis(p.x, c.x), dy = axis(p.y, c.y), dz = axis(p.z, c.z);
  return std::sqrt(dx * dx + dy * dy + dz * dz) * kVoxelM;
}

// The nodes a viewer at p needs with that view and LOD distance: from the
// top level down, a level-l node (l >= 1) closer than lod_m 2^(l-1) is
// split into its children; a node not split is wanted within the view
// distance, and sent if a stored chunk lies under it.
std::set<Node> Expected(const World& w, const Point& p, int levels, double view_m, double lod_m) {
  const int top = lod_m > 0 ? levels : 0;
  std::vector<std::set<uint64_t>> exists(static_cast<size_t>(top) + 1);
  for (const auto* codes : {&w.terrain, &w.dense}) {
    for (uint64_t code : *codes) {
      for (int l = 0; l <= top; ++l) exists[static_cast<size_t>(l)].insert(code >> (3 * l));
    }
  }
  std::set<Node> out;
  std::function<void(const Node&)> visit = [&](const Node& n) {
    const double d = Distance(p, n);
    if (n.level > 0 && d < lod_m * std::ldexp(1.0, n.level - 1)) {
      for (uint64_t k = 0; k < 8; ++k) {
        const Node child{static_cast<uint8_t>(n.level - 1), n.code << 3 | k};
        if (exists[child.level].count(child.code)) visit(child);
      }
      return;
    }
    if (d <= view_m) out.insert(n);
  };
  for (uint64_t code : exists[static_cast<size_t>(top)]) visit({static_cast<uint8_t>(top), code});
  return out;
}

// How many nodes the server's plan holds for that view, stored or not (it
// looks every one up): the same rules over every node around p.
uint64_t PlannedNodes(const Point& p, int levels, double view_m, double lod_m) {
  const int top = lod_m > 0 ? levels : 0;
  uint64_t count = 0;
  std::function<void(const Node&)> visit = [&](const Node& n) {
    const double d = Distance(p, n);
    if (n.level > 0 && d < lod_m * std::ldexp(1.0, n.level - 1)) {
      for (uint64_t k = 0; k < 8; ++k) visit({static_cast<uint8_t>(n.level - 1), n.code << 3 | k});
      return;
    }
    count += d <= view_m;
  };
  const double edge = static_cast<double>(kEdge << top);
  const double reach = view_m / kVoxelM + edge;
  const double c[3] = {p.x, p.y, p.z};
  uint32_t lo[3], hi[3];
  for (int a = 0; a < 3; ++a) {
    lo[a] = static_cast<uint32_t>(std::max(0.0, std::floor((c[a] - reach) / edge)));
    hi[a] = static_cast<uint32_t>(std::floor((c[a] + reach) / edge));
  }
  for (uint32_t z = lo[2]; z <= hi[2]; ++z) {
    for (uint32_t y = lo[1]; y <= hi[1]; ++y) {
      for (uint32_t x = lo[0]; x <= hi[0]; ++x) {
        visit({static_cast<uint8_t>(top), engine::MortonEncode(x, y, z)});
      }
    }
  }
  return count;
}

// --- The stream reader ------------------------------------------------------------

struct Arrival {
  Clock::time_point at;
  uint64_t bytes;  // whole frames completed by one recv()
};

struct StreamRun {
  Clock::time_point sent, replied, first_item, last_item, last_frame, last_byte;
  uint64_t frames = 0, wire_bytes = 0, items = 0, unloads = 0, record_bytes = 0;
  uint64_t by_level[17] = {};
  uint64_t repeats = 0;  // an item at a version already received
  std::vector<Arrival> arrivals;
  std::unordered_map<Node, uint64_t, NodeHash> received;  // node -> version
  double view_s() const { return items ? SecondsBetween(sent, last_item) : 0; }
  double total_mb_s() const { return items ? wire_bytes / kMB / view_s() : 0; }
};

absl::Status WriteAllFd(int fd, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes = bytes.subspan(static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 1000);
    } else {
      return absl::UnavailableError(absl::StrFormat("send: %s", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t LoadU64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Walks the frames of a stream as their bytes arrive, without keeping
// them: headers are staged in a small buffer, records skipped (so that the
// reader, like iperf3's, reads into one small buffer that stays in cache).
class StreamParser {
 public:
  explicit StreamParser(StreamRun* run) : run_(run) {}
  bool replied() const { return replied_; }

  // The bytes of one recv() that returned at `at`.
  absl::Status Feed(const uint8_t* p, size_t n, Clock::time_point at) {
    uint64_t completed = 0;
    while (n > 0) {
      if (state_ == State::kRecord) {
        const size_t take = std::min<size_t>(n, record_left_);
        p += take;
        n -= take;
        record_left_ -= static_cast<uint32_t>(take);
        frame_left_ -= static_cast<uint32_t>(take);
        if (record_left_ == 0) {
          if (absl::Status s = EndItem(at, &completed); !s.ok()) return s;
        }
        continue;
      }
      if (state_ == State::kReply) {
        const size_t take = std::min<size_t>(n, frame_left_);
        reply_.append(reinterpret_cast<const char*>(p), take);
        p += take;
        n -= take;
        frame_left_ -= static_cast<uint32_t>(take);
        if (frame_left_ == 0) {
          if (absl::Status s = EndReply(at); !s.ok()) return s;
        }
        continue;
      }
      const size_t take = std::min(n, need_ - have_);
      std::memcpy(stage_ + have_, p, take);
      have_ += take;
      p += take;
      n -= take;
      if (have_ < need_) break;
      have_ = 0;
      if (absl::Status s = Staged(at, &completed); !s.ok()) return s;
    }
    if (completed > 0) run_->arrivals.push_back({at, completed});
    return absl::OkStatus();
  }

 private:
  enum class State { kHeader, kReply, kCount, kItem, kRecord };

  void Expect(State state, size_t bytes) {
    state_ = state;
    need_ = bytes;
    have_ = 0;
  }

  absl::Status Staged(Clock::time_point at, uint64_t* completed) {
    switch (state_) {
      case State::kHeader: {
        if (LoadU32(stage_) != protocol::kMagic) return absl::DataLossError("bad frame magic");
        op_ = stage_[5];
        uint16_t flags;
        std::memcpy(&flags, stage_ + 6, 2);
        std::memcpy(&status_, stage_ + 16, 2);
        frame_len_ = frame_left_ = LoadU32(stage_ + 20);
        if (flags & protocol::kFlagReply) {
          if (op_ != static_cast<uint8_t>(Opcode::kStreamUpdate) || LoadU64(stage_ + 8) != 1000) {
            return absl::DataLossError("an unexpected reply");
          }
          reply_.clear();
          state_ = State::kReply;
          return frame_left_ == 0 ? EndReply(at) : absl::OkStatus();
        }
        if (op_ != static_cast<uint8_t>(Opcode::kStreamData) || !(flags & protocol::kFlagPush)) {
          return absl::DataLossError(absl::StrFormat("unexpected frame, opcode %u", op_));
        }
        if (!replied_) return absl::DataLossError("STREAM_DATA before the STREAM_UPDATE reply");
        if (frame_left_ < 4) return absl::DataLossError("short STREAM_DATA");
        Expect(State::kCount, 4);
        return absl::OkStatus();
      }
      case State::kCount:
        items_left_ = LoadU32(stage_);
        frame_left_ -= 4;
        if (items_left_ == 0) return EndFrame(at, completed);
        Expect(State::kItem, 22);
        return absl::OkStatus();
      case State::kItem:
        if (frame_left_ < 22) return absl::DataLossError("truncated STREAM_DATA item");
        frame_left_ -= 22;
        kind_ = stage_[0];
        level_ = stage_[1];
        code_ = LoadU64(stage_ + 2);
        version_ = LoadU64(stage_ + 10);
        record_left_ = record_len_ = LoadU32(stage_ + 18);
        if (record_left_ > frame_left_) return absl::DataLossError("truncated item record");
        if (level_ > 16) return absl::DataLossError("item level above 16");
        if (kind_ != 1 && kind_ != 2) return absl::DataLossError("unknown item kind");
        if (record_left_ == 0) return EndItem(at, completed);
        state_ = State::kRecord;
        return absl::OkStatus();
      default:
        return absl::InternalError("parser state");
    }
  }

  absl::Status EndReply(Clock::time_point at) {
    if (status_ != 0) {
      return absl::Status(
          protocol::FromWireStatus(static_cast<protocol::WireStatus>(status_), "").code(),
          "STREAM_UPDATE: " + reply_);
    }
    replied_ = true;
    run_->replied = at;
    Expect(State::kHeader, protocol::kHeaderSize);
    return absl::OkStatus();
  }

  absl::Status EndItem(Clock::time_point at, uint64_t* completed) {
    if (kind_ == 1) {
      if (run_->items == 0) run_->first_item = at;
      run_->last_item = at;
      ++run_->items;
      ++run_->by_level[level_];
      run_->record_bytes += record_len_;
      uint64_t& v = run_->received[{level_, code_}];
      if (v == version_) ++run_->repeats;
      v = version_;
    } else {
      ++run_->unloads;
    }
    if (--items_left_ == 0) return EndFrame(at, completed);
    Expect(State::kItem, 22);
    return absl::OkStatus();
  }

  absl::Status EndFrame(Clock::time_point at, uint64_t* completed) {
    if (frame_left_ != 0) return absl::DataLossError("trailing bytes in STREAM_DATA");
    ++run_->frames;
    run_->wire_bytes += protocol::kHeaderSize + frame_len_;
    *completed += protocol::kHeaderSize + frame_len_;
    run_->last_frame = at;
    Expect(State::kHeader, protocol::kHeaderSize);
    return absl::OkStatus();
  }

  StreamRun* run_;
  State state_ = State::kHeader;
  uint8_t stage_[protocol::kHeaderSize] = {};
  size_t need_ = protocol::kHeaderSize, have_ = 0;
  bool replied_ = false;
  std::string reply_;
  uint8_t op_ = 0;
  uint16_t status_ = 0;
  uint32_t frame_len_ = 0, frame_left_ = 0, items_left_ = 0, record_len_ = 0, record_left_ = 0;
  uint8_t kind_ = 0, level_ = 0;
  uint64_t code_ = 0, version_ = 0;
};

// recv() size of the stream reader and of the plain TCP reference (iperf3
// reads 128 KiB at a time).
constexpr size_t kRecvBytes = 256u << 10;

// Opens a stream on a new connection with `request` and reads it: until
// `quiet` without a byte after the first item (quiet > 0), else for
// `duration` after the first item.
absl::StatusOr<StreamRun> RunStream(uint16_t port, const protocol::StreamUpdateRequest& request,
                                    std::chrono::duration<double> quiet,
                                    std::chrono::duration<double> duration) {
  auto client = ConnectClient(port);
  if (!client.ok()) return client.status();
  const int fd = (*client)->fd();  // the client reads nothing more: it is ours now
  std::vector<uint8_t> out;
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kStreamUpdate);
  h.request_id = 1000;
  protocol::EncodeFrame(h, request.Encode(), &out);

  StreamRun run;
  StreamParser parser(&run);
  std::vector<uint8_t> buf(kRecvBytes);
  run.sent = Clock::now();
  run.last_frame = run.last_byte = run.sent;
  if (absl::Status s = WriteAllFd(fd, out); !s.ok()) return s;
  const auto first_deadline = run.sent + std::chrono::seconds(60);
  for (;;) {
    const Clock::time_point now = Clock::now();
    const Clock::time_point deadline =
        run.items == 0 ? first_deadline
        : quiet.count() > 0
            ? run.last_byte + std::chrono::duration_cast<Clock::duration>(quiet)
            : run.first_item + std::chrono::duration_cast<Clock::duration>(duration);
    if (now >= deadline) {
      if (run.items == 0) return absl::DeadlineExceededError("no STREAM_DATA item within 60 s");
      break;
    }
    // Read while there is data; wait only when there is none.
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n > 0) {
      run.last_byte = Clock::now();
      if (absl::Status s = parser.Feed(buf.data(), static_cast<size_t>(n), run.last_byte);
          !s.ok()) {
        return s;
      }
      continue;
    }
    if (n == 0) return absl::UnavailableError("the server closed the connection");
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return absl::UnavailableError(absl::StrFormat("recv: %s", std::strerror(errno)));
    }
    pollfd p{fd, POLLIN, 0};
    const int ms = static_cast<int>(
        std::ceil(std::chrono::duration<double, std::milli>(deadline - now).count()));
    if (::poll(&p, 1, std::max(ms, 1)) < 0 && errno != EINTR) {
      return absl::InternalError("poll failed");
    }
  }
  if (!parser.replied()) return absl::DeadlineExceededError("no reply to STREAM_UPDATE");
  return run;
}

// What was received against what the rules give.
struct Check {
  size_t expected = 0, missing = 0, extra = 0;
  bool ok() const { return missing == 0 && extra == 0; }
};
Check CheckView(const StreamRun& run, const std::set<Node>& expected) {
  Check c;
  c.expected = expected.size();
  for (const Node& n : expected) c.missing += run.received.count(n) == 0;
  for (const auto& [n, v] : run.received) c.extra += expected.count(n) == 0;
  return c;
}

// --- Plain TCP over loopback ------------------------------------------------------

// One thread writes 256 KiB send() calls for `seconds`; this one reads
// them with recv() calls of kRecvBytes, like the stream reader. MB/s from
// the first byte to the last.
absl::StatusOr<double> PlainTcpMbS(double seconds) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) return absl::InternalError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) {
    ::close(listener);
    return absl::InternalError("bind/listen on loopback");
  }
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    const int s = ::accept(listener, nullptr, nullptr);
    if (s < 0) return;
    std::vector<uint8_t> block(256u << 10, 0x5a);
    while (!stop.load(std::memory_order_relaxed)) {
      if (::send(s, block.data(), block.size(), MSG_NOSIGNAL) <= 0) break;
    }
    ::close(s);
  });
  const int c = ::socket(AF_INET, SOCK_STREAM, 0);
  if (c < 0 || ::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    stop = true;
    ::close(listener);
    writer.join();
    return absl::InternalError("connect on loopback");
  }
  std::vector<uint8_t> buf(kRecvBytes);
  uint64_t bytes = 0;
  Clock::time_point first{}, last{};
  const Clock::time_point start = Clock::now();
  while (SecondsBetween(start, Clock::now()) < seconds) {
    const ssize_t n = ::recv(c, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    last = Clock::now();
    if (bytes == 0) first = last;
    bytes += static_cast<uint64_t>(n);
  }
  stop = true;
  ::shutdown(c, SHUT_RDWR);
  ::close(c);
  writer.join();
  ::close(listener);
  if (bytes == 0 || last <= first) return absl::InternalError("nothing came over loopback");
  return bytes / kMB / SecondsBetween(first, last);
}

// --- The benchmark ----------------------------------------------------------------

struct ViewResult {
  std::string name;
  double view_m = 0, lod_m = 0;
  uint64_t planned = 0;  // nodes the server plans (looks up)
  std::vector<double> seconds, items_s, mb_s, steady_mb_s;
  std::vector<double> reply_s;  // request to the STREAM_UPDATE reply (the server planned)
  uint64_t items = 0, bytes = 0, record_bytes = 0, levels[17] = {};
  uint64_t repeats = 0;
  bool all_complete = true;
};

int failures = 0;
#define SMOKE_CHECK(cond, ...)                            \
  do {                                                    \
    if (!(cond)) {                                        \
      std::fprintf(stderr, "CHECK FAILED: " __VA_ARGS__); \
      std::fprintf(stderr, "\n");                         \
      ++failures;                                         \
    }                                                     \
  } while (0)

absl::StatusOr<ViewResult> InitialView(const Flags& f, uint16_t port, const World& w,
                                       const std::string& name, const Point& p, double view_m,
                                       double lod_m) {
  protocol::StreamUpdateRequest req;
  req.lod_distance_m = lod_m;
  req.window_bytes = f.window;
  req.viewers.push_back({1, p.x, p.y, p.z, 0, 0, 0, view_m});
  const std::set<Node> expected = Expected(w, p, f.lod_levels, view_m, lod_m);
  ViewResult r;
  r.name = name;
  r.view_m = view_m;
  r.lod_m = lod_m;
  r.planned = PlannedNodes(p, f.lod_levels, view_m, lod_m);
  std::printf(
      "%s: %.0f m view, LOD distance %g m%s, budget 0: %zu nodes to send of %llu "
      "planned; %d runs\n",
      name.c_str(), view_m, lod_m, lod_m == 0 ? " (level 0 only)" : "", expected.size(),
      static_cast<unsigned long long>(r.planned), f.runs);
  for (int i = 0; i < f.runs; ++i) {
    auto run = RunStream(port, req, std::chrono::duration<double>(f.quiet_ms / 1000), {});
    if (!run.ok()) return run.status();
    Check c = CheckView(*run, expected);
    const double s = run->view_s();
    const double steady =
        run->arrivals.size() > 2
            ? (run->wire_bytes - run->arrivals.front().bytes) / kMB /
                  SecondsBetween(run->arrivals.front().at, run->arrivals.back().at)
            : 0;
    r.seconds.push_back(s);
    r.items_s.push_back(run->items / s);
    r.mb_s.push_back(run->total_mb_s());
    r.steady_mb_s.push_back(steady);
    r.reply_s.push_back(SecondsBetween(run->sent, run->replied));
    r.items = run->items;
    r.bytes = run->wire_bytes;
    r.record_bytes = run->record_bytes;
    std::copy(std::begin(run->by_level), std::end(run->by_level), std::begin(r.levels));
    r.repeats += run->repeats;
    r.all_complete = r.all_complete && c.ok();
    std::printf(
        "  run %d: %7.1f ms to the last of %llu items (%s; the reply after %.1f ms, the first "
        "item after %.1f ms), %.1f MB in %llu frames: %.0f items/s, %.0f MB/s (first to last "
        "frame: %.0f MB/s)\n",
        i + 1, s * 1e3, static_cast<unsigned long long>(run->items),
        c.ok() ? "complete"
               : absl::StrFormat("INCOMPLETE: %zu expected, %zu missing, %zu extra", c.expected,
                                 c.missing, c.extra)
                     .c_str(),
        r.reply_s.back() * 1e3, SecondsBetween(run->sent, run->first_item) * 1e3,
        run->wire_bytes / kMB, static_cast<unsigned long long>(run->frames), run->items / s,
        run->total_mb_s(), steady);
    std::fflush(stdout);
  }
  std::printf("  items by level:");
  for (int l = 0; l <= f.lod_levels; ++l) {
    std::printf(" L%d %llu", l, static_cast<unsigned long long>(r.levels[l]));
  }
  std::printf("; records %.1f MB\n", r.record_bytes / kMB);
  SMOKE_CHECK(r.all_complete, "%s: the view is not what the rules give", name.c_str());
  SMOKE_CHECK(r.repeats == 0, "%s: a node was sent twice at one version", name.c_str());
  SMOKE_CHECK(r.items > 0, "%s: no item streamed", name.c_str());
  return r;
}

struct BudgetResult {
  double budget_mb = 0, achieved_mb = 0, ratio = 0, window_s = 0, first_item_s = 0;
  bool shortened = false;
};

absl::StatusOr<BudgetResult> Budget(const Flags& f, uint16_t port, const World& w,
                                    double budget_mb) {
  uint64_t available_bytes = 0;  // about: the records as written
  for (const Node& n : Expected(w, w.viewer, f.lod_levels, f.budget_view_m, 0)) {
    available_bytes += 22 + w.sizes.at(n.code);
  }
  BudgetResult r;
  r.budget_mb = budget_mb;
  const double budget = budget_mb * kMB;
  double window = f.budget_seconds;
  // The stream must not run dry before the window ends.
  const double lasts_s = available_bytes / budget * 0.9;
  if (lasts_s < f.budget_skip_s + window) {
    window = lasts_s - f.budget_skip_s;
    r.shortened = true;
    if (window < 0.2) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the view holds %.1f MB: too little for %.2f MB/s (a larger --side or --budget-view-m)",
          available_bytes / kMB, budget_mb));
    }
  }
  protocol::StreamUpdateRequest req;
  req.budget_bytes_per_s = static_cast<uint64_t>(budget);
  req.window_bytes = f.window;
  req.lod_distance_m = 0;
  req.viewers.push_back({1, w.viewer.x, w.viewer.y, w.viewer.z, 0, 0, 0, f.budget_view_m});
  auto run =
      RunStream(port, req, {}, std::chrono::duration<double>(f.budget_skip_s + window + 0.05));
  if (!run.ok()) return run.status();
  r.first_item_s = SecondsBetween(run->sent, run->first_item);
  // From the first arrival after the skip to the last one within the
  // window: the bytes that came after the first, over that time.
  const Clock::time_point lo =
                              run->first_item + std::chrono::duration_cast<Clock::duration>(
                                                    std::chrono::duration<double>(f.budget_skip_s)),
                          hi = lo + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(window));
  std::optional<Clock::time_point> first, last;
  uint64_t bytes = 0;
  for (const Arrival& a : run->arrivals) {
    if (a.at <= lo || a.at > hi) continue;
    if (!first) {
      first = a.at;
    } else {
      bytes += a.bytes;
      last = a.at;
    }
  }
  if (!last) return absl::InternalError("fewer than two arrivals in the budget window");
  r.window_s = SecondsBetween(*first, *last);
  r.achieved_mb = bytes / kMB / r.window_s;
  r.ratio = r.achieved_mb / budget_mb;
  std::printf(
      "  budget %6.2f MB/s: %7.3f MB/s over %.2f s (%llu frames in all, of a view of %.0f MB; "
      "first item after %.0f ms): %.3fx%s\n",
      budget_mb, r.achieved_mb, r.window_s, static_cast<unsigned long long>(run->frames),
      available_bytes / kMB, r.first_item_s * 1e3, r.ratio,
      r.shortened ? " (window shortened: the view holds too little data)" : "");
  std::fflush(stdout);
  return r;
}

int Main(int argc, char** argv) {
  const Flags f = ParseFlags(argc, argv);
  StartWatchdog(f.smoke ? 110 : 3600);
  const double load_before = LoadAverage();

  testing::TempDir dir;
  testing::DaemonProcess daemon(
      f.voxdbd, dir.Sub("data"),
      {"--durability", "async", "--lod-levels", std::to_string(f.lod_levels)});
  std::printf("stream_bench: voxdbd on 127.0.0.1:%u, data in %s, --lod-levels %d\n", daemon.port(),
              dir.path().c_str(), f.lod_levels);
  std::printf(
      "loading the surface chunks of %d x %d chunk columns (a %.2f km square), %d "
      "generator threads\n",
      f.side, f.side, f.side * kChunkM / 1000, f.threads);
  std::fflush(stdout);
  auto world = LoadWorld(f, daemon.port());
  if (!world.ok()) {
    std::fprintf(stderr, "stream_bench: load: %s\n", world.status().ToString().c_str());
    return 1;
  }
  const World& w = *world;
  std::printf(
      "terrain: %zu chunks, %.1f MB of records (%.1f KB mean), generated and put in "
      "%.1f s\n",
      w.terrain.size(), w.terrain_bytes / kMB,
      w.terrain_bytes / 1e3 / std::max<size_t>(1, w.terrain.size()), w.load_s);
  if (!w.dense.empty()) {
    std::printf("dense block: %d^3 = %zu chunks, %.1f MB of records, put in %.1f s\n", f.dense_side,
                w.dense.size(), w.dense_bytes / kMB, w.dense_s);
  }
  std::printf("flushed in %.1f s, LOD pyramid built in %.1f s after\n", w.flush_s, w.lod_s);
  std::printf("terrain viewer at voxel (%.1f, %.1f, %.1f)\n", w.viewer.x, w.viewer.y, w.viewer.z);
  std::fflush(stdout);

  std::vector<ViewResult> views;
  auto view = [&](const std::string& name, const Point& p, double view_m, double lod_m) {
    auto v = InitialView(f, daemon.port(), w, name, p, view_m, lod_m);
    if (!v.ok()) {
      std::fprintf(stderr, "stream_bench: %s: %s\n", name.c_str(), v.status().ToString().c_str());
      std::exit(1);
    }
    views.push_back(std::move(*v));
  };
  if (f.lod_m > 0) view("terrain", w.viewer, f.view_m, f.lod_m);
  view("terrain", w.viewer, f.view_m, 0);
  const ViewResult lod0 = views.back();
  std::optional<ViewResult> dense;
  if (!w.dense.empty()) {
    view("dense block", w.dense_viewer, w.dense_view_m, 0);
    dense = views.back();
  }

  std::vector<BudgetResult> budgets;
  if (!f.budgets_mb.empty()) {
    std::printf(
        "budgets: terrain, %.0f m view, LOD distance 0, %.1f s measured %.1f s after the "
        "first item:\n",
        f.budget_view_m, f.budget_seconds, f.budget_skip_s);
  }
  for (double b : f.budgets_mb) {
    auto r = Budget(f, daemon.port(), w, b);
    if (!r.ok()) {
      std::fprintf(stderr, "stream_bench: budget %g MB/s: %s\n", b, r.status().ToString().c_str());
      return 1;
    }
    SMOKE_CHECK(r->ratio > 0.5 && r->ratio < 1.5, "budget %g MB/s: achieved %.3f MB/s", b,
                r->achieved_mb);
    budgets.push_back(*r);
  }

  double tcp_mb_s = 0;
  if (f.tcp_seconds > 0) {
    auto tcp = PlainTcpMbS(f.tcp_seconds);
    if (tcp.ok()) {
      tcp_mb_s = *tcp;
      std::printf(
          "plain TCP over loopback (256 KiB send()s and recv()s, this process): %.0f MB/s\n",
          tcp_mb_s);
    } else {
      std::printf("plain TCP over loopback: %s\n", tcp.status().ToString().c_str());
    }
  }
  if (auto client = ConnectClient(daemon.port()); client.ok()) {
    auto chunks = Stat(client->get(), "stream_chunks");
    auto bytes = Stat(client->get(), "stream_bytes");
    if (chunks.ok() && bytes.ok()) {
      std::printf("server counters: stream_chunks %llu, stream_bytes %llu\n",
                  static_cast<unsigned long long>(*chunks),
                  static_cast<unsigned long long>(*bytes));
    }
  }
  const double load_after = LoadAverage();

  // --- Summary ---
  const double reference = f.loopback_mb_s > 0 ? f.loopback_mb_s : tcp_mb_s;
  const std::string reference_name =
      f.loopback_mb_s > 0
          ? absl::StrFormat(
                "iperf3 (1 stream) %.0f MB/s%s", f.loopback_mb_s,
                tcp_mb_s > 0 ? absl::StrFormat("; plain TCP here %.0f MB/s", tcp_mb_s) : "")
          : absl::StrFormat("plain TCP %.0f MB/s (no iperf3)", tcp_mb_s);
  auto pct = [&](double mb_s) { return reference > 0 ? mb_s / reference * 100 : 0.0; };
  std::printf(
      "\n%u cores, load average %.2f before and %.2f after; terrain: %zu surface chunks "
      "in %d x %d columns, the viewer 2 m above the centre; medians of %d runs, a new "
      "connection each; MB = 10^6 bytes of frames\n\n",
      std::thread::hardware_concurrency(), load_before, load_after, w.terrain.size(), f.side,
      f.side, f.runs);
  std::printf("| measurement | result | target |\n|---|---:|---|\n");
  for (const ViewResult& v : views) {
    std::string levels;
    for (int l = 0; l <= f.lod_levels; ++l) {
      if (v.levels[l] == 0) continue;
      levels += absl::StrFormat("%s%llu L%d", levels.empty() ? "" : ", ",
                                static_cast<unsigned long long>(v.levels[l]), l);
    }
    std::printf(
        "| initial view, %s, %.0f m, LOD distance %s: %llu nodes (%s) of %llu planned, %.1f MB "
        "| **%.0f ms** (first run %.0f ms; reply after %.0f ms): %.0f nodes/s, %.0f MB/s | %s "
        "|\n",
        v.name.c_str(), v.view_m, v.lod_m > 0 ? absl::StrFormat("%g m", v.lod_m).c_str() : "0",
        static_cast<unsigned long long>(v.items), levels.c_str(),
        static_cast<unsigned long long>(v.planned), v.bytes / kMB, Median(v.seconds) * 1e3,
        v.seconds.front() * 1e3, Median(v.reply_s) * 1e3, Median(v.items_s), Median(v.mb_s),
        v.all_complete ? "complete, each node once" : "**incomplete**");
  }
  bool budgets_met = true;
  for (const BudgetResult& b : budgets) {
    const bool met = std::abs(b.ratio - 1) <= 0.05;
    budgets_met = budgets_met && met;
    std::printf(
        "| budget %g MB/s (terrain, %.0f m, LOD 0; %.1f s%s) | %.3f MB/s: %.1f%% | within "
        "5%%: %s |\n",
        b.budget_mb, f.budget_view_m, b.window_s, b.shortened ? ", shortened" : "", b.achieved_mb,
        b.ratio * 100, met ? "**met**" : "missed");
  }
  const double ratio = pct(Median(lod0.mb_s)) / 100;
  std::printf(
      "| unbudgeted, terrain LOD 0 view (request to last item; first to last frame) | "
      "%.0f MB/s; %.0f MB/s | %.0f%%; %.0f%% of %s: %s |\n",
      Median(lod0.mb_s), Median(lod0.steady_mb_s), pct(Median(lod0.mb_s)),
      pct(Median(lod0.steady_mb_s)), reference_name.c_str(),
      reference <= 0 ? "-"
      : ratio >= 0.7 ? "**met**"
                     : "missed");
  if (dense) {
    std::printf(
        "| unbudgeted, dense block (every planned node stored) | %.0f MB/s; %.0f MB/s | "
        "%.0f%%; %.0f%% (for information) |\n",
        Median(dense->mb_s), Median(dense->steady_mb_s), pct(Median(dense->mb_s)),
        pct(Median(dense->steady_mb_s)));
  }

  std::printf("\nSUMMARY stream_bench chunks=%zu side=%d view_m=%g lod_levels=%d", w.terrain.size(),
              f.side, f.view_m, f.lod_levels);
  for (const ViewResult& v : views) {
    const std::string k =
        absl::StrFormat("%s_lod%g", v.name == "terrain" ? "view" : "dense", v.lod_m);
    absl::PrintF(
        " %s_items=%llu %s_planned=%llu %s_mb=%.2f %s_ms_first=%.1f %s_ms=%.1f %s_items_s=%.0f "
        "%s_mb_s=%.1f %s_steady_mb_s=%.1f %s_reply_ms=%.1f %s_complete=%d",
        k, static_cast<unsigned long long>(v.items), k, static_cast<unsigned long long>(v.planned),
        k, v.bytes / kMB, k, v.seconds.front() * 1e3, k, Median(v.seconds) * 1e3, k,
        Median(v.items_s), k, Median(v.mb_s), k, Median(v.steady_mb_s), k, Median(v.reply_s) * 1e3,
        k, v.all_complete ? 1 : 0);
  }
  for (const BudgetResult& b : budgets) {
    std::printf(" budget%g_mb_s=%.3f budget%g_ratio=%.4f", b.budget_mb, b.achieved_mb, b.budget_mb,
                b.ratio);
  }
  std::printf(
      " tcp_mb_s=%.0f iperf3_mb_s=%.0f loopback_ratio=%.3f budgets_met=%d "
      "loopback_met=%d load_s=%.1f flush_s=%.1f lod_s=%.1f load_avg=%.2f\n",
      tcp_mb_s, f.loopback_mb_s, ratio, budgets_met ? 1 : 0, ratio >= 0.7 ? 1 : 0, w.load_s,
      w.flush_s, w.lod_s, load_after);
  std::fflush(stdout);
  if (f.smoke && failures > 0) return 1;
  return 0;
}

}  // namespace
}  // namespace voxdb::bench

int main(int argc, char** argv) { return voxdb::bench::Main(argc, argv); }
