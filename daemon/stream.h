// Streaming sessions (protocol/PROTOCOL.md, "Streaming"): the server sends
// a shard the chunks around its viewers, nearest and most approached
// first, at a LOD chosen by distance, within a byte budget and a window.
//
// StreamPlan is the geometry: which nodes (level, code) each viewer needs
// and in which order. Distances are Euclidean in the voxel grid, in metres
// (voxel size of the world frame), from a viewer to the nearest point of a
// node's box (0 inside it):
//   - levels, top-down from the pyramid's top level (lod_distance 0 or no
//     pyramid: level 0 only): a node of level l >= 1 closer than
//     lod_distance * 2^(l-1) is replaced by its 8 children, so the nodes
//     chosen tile space, fine near the viewer and coarse far away;
//   - a chosen node is wanted while its distance is <= the view distance;
//   - priority: min(d, d') where d' is the distance from the position the
//     viewer will have in kLookAheadSeconds at its velocity, so what a
//     viewer approaches comes before what it leaves behind;
//   - a node sent earlier is to be unloaded once every viewer is farther
//     than 1.5 x its view distance from it.
//
// Stream is one connection's session: it reads the planned nodes (chunks
// from the database, LOD nodes from the pyramid), skips those that do not
// exist (version 0) and those the shard has at that version already, and
// queues STREAM_DATA frames while (a) the connection's unsent bytes are
// under the window and (b) a token bucket of budget bytes per second has
// tokens. Changes come from the change feed: a changed chunk the shard was
// sent, or needs, is sent again at its new version; a changed chunk's LOD
// ancestors are re-read once the pyramid has rebuilt them.
//
// Thread-safety: StreamPlan is a value type. A Stream is used on its
// connection's strand only.
#ifndef VOXDB_DAEMON_STREAM_H_
#define VOXDB_DAEMON_STREAM_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "daemon/asio.h"
#include "engine/database.h"
#include "engine/lod.h"
#include "protocol/messages.h"

namespace voxdb::daemon {

// A node of the LOD pyramid; level 0 is a chunk.
struct NodeKey {
  uint8_t level = 0;
  uint64_t code = 0;
  friend auto operator<=>(const NodeKey&, const NodeKey&) = default;
};
struct NodeKeyHash {
  size_t operator()(const NodeKey& k) const {
    // Morton codes of nearby nodes differ in their low bits: mix them all.
    const uint64_t h = (k.code ^ (uint64_t{k.level} << 58)) * 0x9E3779B97F4A7C15u;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

class StreamPlan {
 public:
  static constexpr double kLookAheadSeconds = 2.0;
  static constexpr double kUnloadFactor = 1.5;

  StreamPlan(const engine::WorldFrame& frame, int lod_levels);
  void Set(const std::vector<protocol::Viewer>& viewers, double lod_distance_m);

  struct Want {
    NodeKey key;
    double priority_m = 0;  // smaller first
  };
  // Lists the chunks with data (a record or a fill) that meet a voxel box:
  // fn(code) for each, at least once; false if it could not.
  using ChunkLister = std::function<bool(const engine::VoxelBox& box,
                                         const std::function<void(uint64_t code)>& fn)>;
  // Every node some viewer needs, each once (at each level it is needed
  // at), in priority order (ties: by level, then code). With chunks only
  // (no LOD levels in play) and a `lister`, the chunks come from it rather
  // than from every chunk position in the view (mostly sky and rock).
  std::vector<Want> Wanted(const ChunkLister* lister = nullptr) const;
  // Where level `level` starts: nodes of that level closer than this are
  // split (0 for level 0).
  double LevelStart(int level) const;
  // Distance in metres from a viewer to the nearest point of `key`'s box.
  double Distance(const protocol::Viewer& v, const NodeKey& key) const;
  // Whether every viewer is beyond kUnloadFactor x its view distance.
  bool ShouldUnload(const NodeKey& key) const;
  const std::vector<protocol::Viewer>& viewers() const { return viewers_; }

 private:
  double Distance(double x, double y, double z, const NodeKey& key) const;
  engine::WorldFrame frame_;
  int lod_levels_;
  double lod_distance_m_ = 0;
  std::vector<protocol::Viewer> viewers_;
};

struct StreamOptions {
  uint32_t default_window_bytes = 4u << 20;
  // A STREAM_DATA payload, about: of 256 KiB, 512 KiB and 1 MiB, 512 KiB
  // streamed fastest (tests/bench/stream_bench.sh).
  size_t max_frame_bytes = 512u << 10;
  std::chrono::milliseconds tick{50};  // changes and LOD rebuilds are looked at this often
  size_t max_viewers = 64;
  double max_planned_chunks = 262144;  // level-0 positions within a viewer's LOD distance
  double max_view_distance_m = 8000;
};

// Frame buffers for reuse. A stream's frames are about max_frame_bytes
// each; allocating every one anew costs the allocator's work and, when it
// has handed the memory back to the system in between, page faults on
// every page. A connection returns the frames it has written (Put), a
// stream takes one per frame (Get). Thread-safe.
class FrameBuffers {
 public:
  // Kept: buffers of kMinBytes..kMaxBytes (a big reply's buffer would hold
  // its memory for good), at most kMaxKept of them.
  static constexpr size_t kMinBytes = 64u << 10;
  static constexpr size_t kMaxBytes = 2u << 20;
  static constexpr size_t kMaxKept = 16;
  // An empty buffer, with the capacity of one put back if there is one.
  std::vector<uint8_t> Get();
  // Keeps the buffer (its capacity) if its size is right and there is room.
  void Put(std::vector<uint8_t> buffer);

 private:
  std::mutex mu_;
  std::vector<std::vector<uint8_t>> kept_;  // GUARDED_BY(mu_)
};

struct StreamCounters {
  std::atomic<uint64_t> open{0}, chunks{0}, bytes{0}, unloads{0};
};

class FrameBuilder;  // stream.cc

class Stream : public std::enable_shared_from_this<Stream> {
 public:
  // `executor` is the connection's strand, `pool` where reads run (the I/O
  // threads). `send` queues a whole frame on the connection; `unsent` says
  // how many bytes the connection has queued and not written. `lod` may be
  // null.
  Stream(asio::any_io_executor executor, asio::any_io_executor pool, engine::Database* db,
         engine::LodPyramid* lod, const StreamOptions& options, StreamCounters* counters,
         FrameBuffers* buffers, std::function<void(std::vector<uint8_t>)> send,
         std::function<uint64_t()> unsent);
  ~Stream();

  // STREAM_UPDATE: validates and applies (call Pump() after); INVALID for
  // bad values.
  absl::Status Update(const protocol::StreamUpdateRequest& request);
  // Sends what it can now (the connection calls it again when it drained).
  void Pump();
  // STREAM_CLOSE or the connection's end: no frame after this.
  void Stop();
  // True when the last Pump() stopped at the window.
  bool waiting_drain() const { return waiting_drain_; }
  uint64_t window() const { return window_; }

 private:
  // Pump() again after `delay` (or sooner, if already armed sooner).
  void Arm(std::chrono::milliseconds delay);
  void Replan();
  void TakeChanges();
  struct Job;
  // Makes the next batch of nodes to read and starts reading it off the
  // strand; false if there is nothing to send.
  bool StartJob();
  // On the pool: reads the batch's nodes (the chunks in one call) and adds
  // an item for each that exists and the shard lacks at this version, or
  // that the shard has and that is gone. Touches only the job and the
  // (thread-safe) database and pyramid.
  void Read(Job* job) const;
  // On the strand: sends the frames of the batches read, in order.
  void Finish();

  asio::steady_timer timer_;
  asio::any_io_executor pool_;
  engine::Database* db_;
  engine::LodPyramid* lod_;
  const StreamOptions options_;
  StreamCounters* counters_;
  FrameBuffers* buffers_;
  std::function<void(std::vector<uint8_t>)> send_;
  std::function<uint64_t()> unsent_;
  StreamPlan plan_;
  uint64_t budget_ = 0;  // bytes per second; 0: none
  uint64_t window_ = 0;
  double tokens_ = 0;
  std::chrono::steady_clock::time_point refilled_;
  bool stopped_ = false;
  bool armed_ = false;
  std::chrono::steady_clock::time_point armed_deadline_;
  bool waiting_drain_ = false;

  std::vector<StreamPlan::Want> queue_;  // the plan, in order
  size_t next_ = 0;
  // Looked up for every node sent: hashed.
  std::unordered_set<NodeKey, NodeKeyHash> wanted_;
  std::vector<NodeKey> urgent_;  // changed nodes to read first
  std::unordered_map<NodeKey, uint64_t, NodeKeyHash>
      known_;                              // version read (0: absent); sent if > 0
  std::map<NodeKey, uint64_t> stale_lod_;  // LOD nodes to re-read, and the version they need
  std::vector<NodeKey> unloads_;           // to tell the shard
  uint64_t feed_cursor_ = 0;
  size_t average_item_ = 0;                             // bytes of the items sent, a moving average
  std::deque<std::shared_ptr<Job>> jobs_;               // batches being read, oldest first
  std::unordered_set<NodeKey, NodeKeyHash> reading_;    // their nodes
  std::unordered_set<NodeKey, NodeKeyHash> cancelled_;  // of which unloaded meanwhile
};

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_STREAM_H_
