#include "daemon/stream.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/fills.h"
#include "engine/voxel_box.h"
#include "index/s2_index.h"
#include "protocol/frame.h"

namespace voxdb::daemon {
namespace {

using Clock = std::chrono::steady_clock;

// The voxels of a node (its chunks' boxes), not clipped to the world.
engine::VoxelBox NodeBox(const NodeKey& key) {
  const engine::ChunkCoord n = engine::MortonDecode(key.code);
  const uint64_t edge = uint64_t{engine::kChunkEdge} << key.level;
  return {{n.x * edge, n.y * edge, n.z * edge},
          {(n.x + uint64_t{1}) * edge, (n.y + uint64_t{1}) * edge, (n.z + uint64_t{1}) * edge}};
}

}  // namespace

// --- StreamPlan -------------------------------------------------------------------

StreamPlan::StreamPlan(const engine::WorldFrame& frame, int lod_levels)
    : frame_(frame), lod_levels_(lod_levels) {}

void StreamPlan::Set(const std::vector<protocol::Viewer>& viewers, double lod_distance_m) {
  viewers_ = viewers;
  lod_distance_m_ = lod_distance_m;
}

double StreamPlan::LevelStart(int level) const {
  return level == 0 ? 0 : lod_distance_m_ * std::ldexp(1.0, level - 1);
}

double StreamPlan::Distance(double x, double y, double z, const NodeKey& key) const {
  // From the point to the nearest point of the node's box.
  const engine::ChunkCoord n = engine::MortonDecode(key.code);
  const double edge = static_cast<double>(uint64_t{engine::kChunkEdge} << key.level);
  auto axis = [edge](double p, uint32_t c) {
    const double lo = c * edge, hi = lo + edge;
    return p < lo ? lo - p : p > hi ? p - hi : 0.0;
  };
  const double dx = axis(x, n.x), dy = axis(y, n.y), dz = axis(z, n.z);
  return std::sqrt(dx * dx + dy * dy + dz * dz) * frame_.voxel_size_m();
}

double StreamPlan::Distance(const protocol::Viewer& v, const NodeKey& key) const {
  return Distance(v.x, v.y, v.z, key);
}

bool StreamPlan::ShouldUnload(const NodeKey& key) const {
  for (const protocol::Viewer& v : viewers_) {
    if (Distance(v, key) <= kUnloadFactor * v.view_distance_m) return false;
  }
  return true;
}

std::vector<StreamPlan::Want> StreamPlan::Wanted(const ChunkLister* lister) const {
  std::unordered_map<NodeKey, double, NodeKeyHash> best;
  const int top = lod_distance_m_ > 0 ? lod_levels_ : 0;
  for (const protocol::Viewer& v : viewers_) {
    const double ax = v.x + v.vx * kLookAheadSeconds, ay = v.y + v.vy * kLookAheadSeconds,
                 az = v.z + v.vz * kLookAheadSeconds;
    auto want = [&](const NodeKey& key, double d) {
      const double p = std::min(d, Distance(ax, ay, az, key));
      auto [it, inserted] = best.try_emplace(key, p);
      if (!inserted) it->second = std::min(it->second, p);
    };
    if (top == 0 && lister != nullptr) {
      // Chunks only: those with data within reach of the viewer.
      const double r = v.view_distance_m / frame_.voxel_size_m();
      const engine::VoxelBox world = frame_.Bounds();
      auto clip = [](double p, uint64_t lo, uint64_t hi) {
        return static_cast<uint64_t>(
            std::clamp(p, static_cast<double>(lo), static_cast<double>(hi)));
      };
      const engine::VoxelBox box{
          // A chunk ending where the view ends (hi exclusive) is in it.
          {clip(v.x - r - 1, world.lo.x, world.hi.x), clip(v.y - r - 1, world.lo.y, world.hi.y),
           clip(v.z - r - 1, world.lo.z, world.hi.z)},
          {clip(v.x + r + 1, world.lo.x, world.hi.x), clip(v.y + r + 1, world.lo.y, world.hi.y),
           clip(v.z + r + 1, world.lo.z, world.hi.z)}};
      if (box.lo.x >= box.hi.x || box.lo.y >= box.hi.y || box.lo.z >= box.hi.z) continue;
      const bool listed = (*lister)(box, [&](uint64_t code) {
        const NodeKey key{0, code};
        const double d = Distance(v, key);
        if (d <= v.view_distance_m) want(key, d);
      });
      if (listed) continue;  // else every position, below
    }
    // Top-down: a node closer than its level's start is replaced by its
    // eight children, so the chosen nodes tile the space without overlap.
    std::function<void(int, uint32_t, uint32_t, uint32_t)> visit = [&](int l, uint32_t x,
                                                                       uint32_t y, uint32_t z) {
      if (!frame_.ContainsChunk({x << l, y << l, z << l})) return;
      const NodeKey key{static_cast<uint8_t>(l), engine::MortonEncode(x, y, z)};
      const double d = Distance(v, key);
      if (l > 0 && d < LevelStart(l)) {
        for (uint32_t c = 0; c < 8; ++c)
          visit(l - 1, 2 * x + (c & 1), 2 * y + (c >> 1 & 1), 2 * z + (c >> 2));
        return;
      }
      if (d > v.view_distance_m) return;
      want(key, d);
    };
    // The top-level nodes around the viewer: every node whose centre is
    // within the view distance, or whose children's may be.
    const double edge = static_cast<double>(uint64_t{engine::kChunkEdge} << top);
    const double reach = v.view_distance_m / frame_.voxel_size_m() + edge;
    const double last = static_cast<double>(engine::kMaxChunkAxis >> top);
    uint32_t lo[3], hi[3];
    bool empty = false;
    const double p[3] = {v.x, v.y, v.z};
    for (int a = 0; a < 3; ++a) {
      const double first = std::floor((p[a] - reach) / edge),
                   end = std::floor((p[a] + reach) / edge);
      if (end < 0 || first > last) empty = true;
      lo[a] = static_cast<uint32_t>(std::clamp(first, 0.0, last));
      hi[a] = static_cast<uint32_t>(std::clamp(end, 0.0, last));
    }
    if (empty) continue;
    for (uint32_t z = lo[2]; z <= hi[2]; ++z) {
      for (uint32_t y = lo[1]; y <= hi[1]; ++y) {
        for (uint32_t x = lo[0]; x <= hi[0]; ++x) visit(top, x, y, z);
      }
    }
  }
  std::vector<Want> out;
  out.reserve(best.size());
  for (const auto& [key, p] : best) out.push_back({key, p});
  std::sort(out.begin(), out.end(), [](const Want& a, const Want& b) {
    return a.priority_m != b.priority_m ? a.priority_m < b.priority_m : a.key < b.key;
  });
  return out;
}

// --- FrameBuffers -----------------------------------------------------------------

std::vector<uint8_t> FrameBuffers::Get() {
  std::lock_guard<std::mutex> l(mu_);
  if (kept_.empty()) return {};
  std::vector<uint8_t> buffer = std::move(kept_.back());  // the last written: warmest
  kept_.pop_back();
  return buffer;
}

void FrameBuffers::Put(std::vector<uint8_t> buffer) {
  if (buffer.capacity() < kMinBytes || buffer.capacity() > kMaxBytes) return;
  std::lock_guard<std::mutex> l(mu_);
  if (kept_.size() < kMaxKept) kept_.push_back(std::move(buffer));
}

// --- Stream -----------------------------------------------------------------------

Stream::Stream(asio::any_io_executor executor, asio::any_io_executor pool, engine::Database* db,
               engine::LodPyramid* lod, const StreamOptions& options, StreamCounters* counters,
               FrameBuffers* buffers, std::function<void(std::vector<uint8_t>)> send,
               std::function<uint64_t()> unsent)
    : timer_(executor),
      pool_(std::move(pool)),
      db_(db),
      lod_(lod),
      options_(options),
      counters_(counters),
      buffers_(buffers),
      send_(std::move(send)),
      unsent_(std::move(unsent)),
      plan_(db->frame(), lod == nullptr ? 0 : lod->levels()),
      window_(options.default_window_bytes),
      refilled_(Clock::now()),
      feed_cursor_(db->changes().last_seq()) {
  ++counters_->open;
}

Stream::~Stream() {
  if (!stopped_) --counters_->open;
}

void Stream::Stop() {
  if (stopped_) return;
  stopped_ = true;
  --counters_->open;
  timer_.cancel();
}

absl::Status Stream::Update(const protocol::StreamUpdateRequest& r) {
  if (r.viewers.size() > options_.max_viewers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a stream has at most %u viewers", options_.max_viewers));
  }
  for (const protocol::Viewer& v : r.viewers) {
    if (!(v.view_distance_m > 0 && v.view_distance_m <= options_.max_view_distance_m)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("viewer %u: the view distance must be in (0, %g] metres", v.id,
                          options_.max_view_distance_m));
    }
  }
  if (r.lod_distance_m < 0) {
    return absl::InvalidArgumentError("the LOD distance must be >= 0 (0: level 0 everywhere)");
  }
  if (lod_ != nullptr && r.lod_distance_m > 0) {
    // The chunks within the LOD distance are planned one by one (a chunks-only
    // stream plans from the chunks that exist instead): bound their number.
    const double chunk_m = engine::kChunkEdge * db_->frame().voxel_size_m();
    for (const protocol::Viewer& v : r.viewers) {
      const double reach = std::min(v.view_distance_m, r.lod_distance_m) / chunk_m + 1;
      if (4.19 * reach * reach * reach > options_.max_planned_chunks) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "viewer %u: a LOD distance of %g m plans too many chunks: use at most about %g m, or 0 "
            "for chunks only",
            v.id, std::min(v.view_distance_m, r.lod_distance_m),
            (std::cbrt(options_.max_planned_chunks / 4.19) - 1) * chunk_m));
      }
    }
  }
  if (r.window_bytes != 0 && (r.window_bytes < (64u << 10) || r.window_bytes > (64u << 20))) {
    return absl::InvalidArgumentError("the window must be in 64 KiB..64 MiB (0: the default)");
  }
  if (r.budget_bytes_per_s != budget_) {  // a new budget starts from an empty bucket
    tokens_ = 0;
    refilled_ = Clock::now();
  }
  budget_ = r.budget_bytes_per_s;
  window_ = r.window_bytes != 0 ? r.window_bytes : options_.default_window_bytes;
  plan_.Set(r.viewers, r.lod_distance_m);
  Replan();
  return absl::OkStatus();
}

void Stream::Replan() {
  // The chunks with data in a box: the chunks a box query finds (stored
  // and written ones, listed without reading their records) and the chunks
  // of the fills that meet the box.
  const StreamPlan::ChunkLister lister = [this](const engine::VoxelBox& box,
                                                const std::function<void(uint64_t)>& fn) {
    const engine::WorldFrame& frame = db_->frame();
    const engine::ChunkBox chunks = engine::ChunksCovering(frame, box);
    const auto list = [&](engine::ChunkKey key) { fn(key.code()); };
    if (!index::ForEachChunkInBox(*db_, chunks, list).ok()) return false;
    for (const engine::Fill& fill : db_->Fills()->fills()) {
      const engine::VoxelBox part = engine::Intersect(fill.box, box);
      if (part.empty()) continue;
      const engine::ChunkBox covered = engine::ChunksCovering(frame, part);
      for (uint32_t z = covered.lo.z; z <= covered.hi.z; ++z) {
        for (uint32_t y = covered.lo.y; y <= covered.hi.y; ++y) {
          for (uint32_t x = covered.lo.x; x <= covered.hi.x; ++x) fn(engine::MortonEncode(x, y, z));
        }
      }
    }
    return true;
  };
  queue_ = plan_.Wanted(&lister);
  next_ = 0;
  wanted_.clear();
  wanted_.reserve(queue_.size());
  for (const auto& w : queue_) wanted_.insert(w.key);
  for (auto it = known_.begin(); it != known_.end();) {
    if (wanted_.count(it->first) == 0 && plan_.ShouldUnload(it->first)) {
      if (it->second > 0) unloads_.push_back(it->first);
      if (reading_.count(it->first) > 0) cancelled_.insert(it->first);
      stale_lod_.erase(it->first);
      it = known_.erase(it);
    } else {
      ++it;
    }
  }
}

void Stream::TakeChanges() {
  std::vector<std::shared_ptr<const engine::ChangeRecord>> records;
  if (!db_->changes().Read(feed_cursor_, 4096, &records)) {
    // Changes were dropped before this stream saw them: check everything.
    for (const auto& [key, version] : known_) urgent_.push_back(key);
    feed_cursor_ = db_->changes().last_seq();
    return;
  }
  const int levels = lod_ == nullptr ? 0 : lod_->levels();
  auto concerns = [&](const NodeKey& k) { return wanted_.count(k) > 0 || known_.count(k) > 0; };
  for (const auto& rec : records) {
    feed_cursor_ = rec->seq;
    for (const engine::ChangedChunk& c : rec->chunks) {
      const NodeKey k0{0, c.code};
      if (concerns(k0)) urgent_.push_back(k0);
      for (int l = 1; l <= levels; ++l) {
        const NodeKey k{static_cast<uint8_t>(l), c.code >> (3 * l)};
        if (concerns(k)) stale_lod_[k] = std::max(stale_lod_[k], rec->seq);
      }
    }
    if (rec->op == engine::JournalOp::kFillBox) {
      // The chunks that only read as the fill changed too.
      std::set<NodeKey> touched;
      for (const NodeKey& k : wanted_) {
        if (engine::Meets(NodeBox(k), rec->box)) touched.insert(k);
      }
      for (const auto& [k, version] : known_) {
        if (engine::Meets(NodeBox(k), rec->box)) touched.insert(k);
      }
      for (const NodeKey& k : touched) {
        if (k.level == 0) {
          urgent_.push_back(k);
        } else {
          stale_lod_[k] = std::max(stale_lod_[k], rec->seq);
        }
      }
    }
  }
  // LOD nodes rebuilt since: read them again.
  // NOT_FOUND is final only once the builder has nothing left to do (else
  // the node's first build may be pending).
  const bool lod_idle = stale_lod_.empty() || lod_->DirtyCount() == 0;
  for (auto it = stale_lod_.begin(); it != stale_lod_.end();) {
    auto read = lod_->GetLod(it->first.level, it->first.code);
    if ((read.ok() && read->version < it->second) ||
        (absl::IsNotFound(read.status()) && !lod_idle)) {
      ++it;  // not rebuilt yet
      continue;
    }
    urgent_.push_back(it->first);
    it = stale_lod_.erase(it);
  }
}

// A STREAM_DATA frame built in place: header, n u32, then the items, each
// record copied once, from the store (or the cache) into the frame.
class FrameBuilder {
 public:
  // Starts over in `buffer`, with room for about `bytes` of items so that
  // the frame is not regrown.
  void Start(std::vector<uint8_t> buffer, size_t bytes) {
    writer_ = protocol::FrameWriter(std::move(buffer), bytes, /*count_prefix=*/true);
  }
  void Add(protocol::StreamItem::Kind kind, const NodeKey& key, uint64_t version,
           std::span<const uint8_t> record) {
    uint8_t head[protocol::StreamItem::kHeadBytes];
    protocol::StreamItem::EncodeHead(kind, key.level, key.code, version,
                                     static_cast<uint32_t>(record.size()), head);
    writer_.Append(head, sizeof head);
    writer_.Append(record);
    ++n_;
  }
  uint32_t items() const { return n_; }
  size_t size() const { return writer_.size(); }
  std::vector<uint8_t> Seal() {
    writer_.set_count(n_);
    return writer_.Seal(static_cast<uint8_t>(protocol::Opcode::kStreamData), 0, protocol::kFlagPush,
                        protocol::WireStatus::kOk);
  }

 private:
  protocol::FrameWriter writer_{0, /*count_prefix=*/true};
  uint32_t n_ = 0;
};

// A batch of nodes read off the connection's strand: what the shard has of
// each when the batch was made, and after the read, the frame and what the
// shard has then (nullopt: the node could not be read, it is left as it was).
struct Stream::Job {
  std::vector<NodeKey> keys;
  std::vector<uint64_t> have;
  std::vector<NodeKey> unloads;  // sent first
  std::vector<std::optional<uint64_t>> now;
  FrameBuilder frame;
  uint64_t chunks = 0, item_bytes = 0;
  bool done = false;
};

void Stream::Read(Job* job) const {
  for (const NodeKey& k : job->unloads)
    job->frame.Add(protocol::StreamItem::Kind::kUnload, k, 0, {});
  job->now.assign(job->keys.size(), std::nullopt);
  auto consider = [&](size_t i, const absl::Status& status, uint64_t version,
                      std::span<const uint8_t> record) {
    // A node that cannot be read now (CORRUPT, an I/O error) is left as the
    // shard has it; the next change or plan reads it again.
    if (!status.ok()) return;
    job->now[i] = version;
    if (version == job->have[i]) return;  // absent still, or the shard has this version
    const NodeKey& key = job->keys[i];
    if (version == 0) {
      // It was sent and is gone now (deleted): the shard should drop it.
      job->frame.Add(protocol::StreamItem::Kind::kUnload, key, 0, {});
      return;
    }
    job->frame.Add(protocol::StreamItem::Kind::kChunk, key, version, record);
    ++job->chunks;
    job->item_bytes += record.size() + 22;
  };
  // In the batch's order (nearest first): each run of chunks in one read
  // transaction, LOD nodes one by one.
  std::vector<engine::ChunkKey> chunks;
  for (size_t i = 0; i < job->keys.size();) {
    const NodeKey& k = job->keys[i];
    if (k.level != 0) {
      if (lod_ != nullptr) {
        auto read = lod_->GetLod(k.level, k.code);
        if (read.ok()) {
          consider(i, absl::OkStatus(), read->version, read->record);
        } else {
          consider(i, absl::IsNotFound(read.status()) ? absl::OkStatus() : read.status(), 0, {});
        }
      }
      ++i;
      continue;
    }
    const size_t first = i;
    chunks.clear();
    for (; i < job->keys.size() && job->keys[i].level == 0; ++i) {
      chunks.push_back(engine::ChunkKey::FromCode(job->keys[i].code));
    }
    (void)db_->GetChunks(chunks, [&](size_t j, const engine::ChunkRead& read) {
      consider(first + j, read.status, read.status.ok() ? read.version : 0, read.record);
    });
  }
}

bool Stream::StartJob() {
  constexpr size_t kMaxBatch = 64;
  auto job = std::make_shared<Job>();
  job->unloads = std::move(unloads_);
  unloads_.clear();
  counters_->unloads += job->unloads.size();
  // As many nodes as a frame has room for, at the items' average size.
  // Under a budget, frames of 1/20 s of it (smoother pacing), else of
  // max_frame_bytes.
  const size_t target = budget_ > 0
                            ? std::clamp<size_t>(budget_ / 20, 16 << 10, options_.max_frame_bytes)
                            : options_.max_frame_bytes;
  const size_t want =
      average_item_ == 0
          ? 4  // nothing sent yet: a few, to learn their size
          : std::clamp<size_t>(target / std::max<size_t>(average_item_, 1024), 1, kMaxBatch);
  std::vector<NodeKey> later;  // urgent, but being read already: after this batch
  while (job->keys.size() < want) {
    NodeKey k;
    if (!urgent_.empty()) {
      k = urgent_.back();
      urgent_.pop_back();
      if (wanted_.count(k) == 0 && known_.count(k) == 0) continue;  // unloaded since
      if (reading_.count(k) > 0) {
        later.push_back(k);
        continue;
      }
    } else if (next_ < queue_.size()) {
      k = queue_[next_++].key;
      if (known_.count(k) > 0 || reading_.count(k) > 0) continue;  // changes come as urgent
    } else {
      break;
    }
    if (!reading_.insert(k).second) continue;  // twice in this batch
    const auto it = known_.find(k);
    job->keys.push_back(k);
    job->have.push_back(it == known_.end() ? 0 : it->second);
  }
  urgent_.insert(urgent_.end(), later.begin(), later.end());
  if (job->keys.empty() && job->unloads.empty()) return false;
  job->frame.Start(buffers_->Get(), target + target / 4);  // only for a frame that will go
  jobs_.push_back(job);
  // Off the strand (the other I/O thread): the reads and the copies into
  // the frame; the strand meanwhile writes the frames before.
  asio::post(pool_, [self = shared_from_this(), job] {
    self->Read(job.get());
    asio::post(self->timer_.get_executor(), [self, job] {
      job->done = true;
      self->Finish();
    });
  });
  return true;
}

void Stream::Finish() {
  // Frames go out in the order their batches were made.
  while (!jobs_.empty() && jobs_.front()->done) {
    std::shared_ptr<Job> job = std::move(jobs_.front());
    jobs_.pop_front();
    for (size_t i = 0; i < job->keys.size(); ++i) {
      reading_.erase(job->keys[i]);
      // Unloaded while it was read: the unload follows this frame.
      if (cancelled_.erase(job->keys[i]) > 0) continue;
      if (job->now[i]) known_[job->keys[i]] = *job->now[i];
    }
    if (stopped_ || job->frame.items() == 0) continue;
    counters_->chunks += job->chunks;
    if (job->chunks > 0) {
      average_item_ = (average_item_ + job->item_bytes / job->chunks) / 2;
    }
    std::vector<uint8_t> bytes = job->frame.Seal();
    if (budget_ > 0) tokens_ -= static_cast<double>(bytes.size());
    counters_->bytes += bytes.size();
    send_(std::move(bytes));
  }
  Pump();
}

void Stream::Pump() {
  if (stopped_) return;
  TakeChanges();
  const auto now = Clock::now();
  if (budget_ > 0) {
    constexpr double kMinBurstBytes = 256 << 10;
    const double burst = std::max(static_cast<double>(budget_) / 20, kMinBurstBytes);
    tokens_ = std::min(burst, tokens_ + static_cast<double>(budget_) *
                                            std::chrono::duration<double>(now - refilled_).count());
  }
  refilled_ = now;
  constexpr size_t kMaxJobs = 4;  // being read while the ones before are written
  while (jobs_.size() < kMaxJobs) {
    if (unsent_() + jobs_.size() * options_.max_frame_bytes >= window_) {
      waiting_drain_ = true;
      return;  // the connection calls Pump() when it has written
    }
    waiting_drain_ = false;
    if (budget_ > 0 && tokens_ <= 0) {
      const double wait_s = (1 - tokens_) / static_cast<double>(budget_);
      Arm(std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::duration<double>(wait_s)) +
          std::chrono::milliseconds(1));
      return;
    }
    if (budget_ > 0 && !jobs_.empty()) return;  // one frame at a time under a budget
    if (!StartJob()) {
      if (jobs_.empty()) Arm(options_.tick);  // idle: look for changes now and then
      return;
    }
  }
}

void Stream::Arm(std::chrono::milliseconds delay) {
  const auto deadline = Clock::now() + delay;
  if (armed_ && deadline >= armed_deadline_) return;
  armed_ = true;
  armed_deadline_ = deadline;
  timer_.expires_at(deadline);
  timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec) return;  // replaced by a sooner deadline, or stopped
    self->armed_ = false;
    self->Pump();
  });
}

}  // namespace voxdb::daemon
