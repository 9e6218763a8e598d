#include "daemon/stream.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
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

bool Meets(const engine::VoxelBox& a, const engine::VoxelBox& b) {
  return a.lo.x < b.hi.x && b.lo.x < a.hi.x && a.lo.y < b.hi.y && b.lo.y < a.hi.y &&
         a.lo.z < b.hi.z && b.lo.z < a.hi.z;
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

std::vector<StreamPlan::Want> StreamPlan::Wanted() const {
  std::map<NodeKey, double> best;
  const int top = lod_distance_m_ > 0 ? lod_levels_ : 0;
  for (const protocol::Viewer& v : viewers_) {
    const double ax = v.x + v.vx * kLookAheadSeconds, ay = v.y + v.vy * kLookAheadSeconds,
                 az = v.z + v.vz * kLookAheadSeconds;
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
      const double p = std::min(d, Distance(ax, ay, az, key));
      auto [it, inserted] = best.try_emplace(key, p);
      if (!inserted) it->second = std::min(it->second, p);
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
  std::stable_sort(out.begin(), out.end(),
                   [](const Want& a, const Want& b) { return a.priority_m < b.priority_m; });
  return out;
}

// --- Stream -----------------------------------------------------------------------

Stream::Stream(asio::any_io_executor executor, engine::Database* db, engine::LodPyramid* lod,
               const StreamOptions& options, StreamCounters* counters,
               std::function<void(std::vector<uint8_t>)> send, std::function<uint64_t()> unsent)
    : timer_(executor),
      db_(db),
      lod_(lod),
      options_(options),
      counters_(counters),
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
  queue_ = plan_.Wanted();
  next_ = 0;
  wanted_.clear();
  for (const auto& w : queue_) wanted_.insert(w.key);
  for (auto it = known_.begin(); it != known_.end();) {
    if (wanted_.count(it->first) == 0 && plan_.ShouldUnload(it->first)) {
      if (it->second > 0) unloads_.push_back(it->first);
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
        if (Meets(NodeBox(k), rec->box)) touched.insert(k);
      }
      for (const auto& [k, version] : known_) {
        if (Meets(NodeBox(k), rec->box)) touched.insert(k);
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

void Stream::Read(const NodeKey& key, protocol::StreamDataPush* push, size_t* bytes) {
  uint64_t version = 0;
  std::vector<uint8_t> record;
  absl::Status status;
  if (key.level == 0) {
    const engine::ChunkKey k = engine::ChunkKey::FromCode(key.code);
    status = db_->GetChunks({&k, 1}, [&](size_t, const engine::ChunkRead& read) {
      if (!read.status.ok()) {
        status = read.status;
        return;
      }
      if (read.version == 0) return;
      version = read.version;
      record.assign(read.record.begin(), read.record.end());
    });
  } else if (lod_ != nullptr) {
    auto read = lod_->GetLod(key.level, key.code);
    if (read.ok()) {
      version = read->version;
      record = std::move(read->record);
    } else if (!absl::IsNotFound(read.status())) {
      status = read.status();
    }
  }
  // A node that cannot be read now (CORRUPT, an I/O error) is left as the
  // shard has it; the next change or plan reads it again.
  if (!status.ok()) return;
  uint64_t& have = known_[key];
  if (version == have) return;  // absent still, or the shard has this version
  have = version;
  if (version == 0) {
    // It was sent and is gone now (deleted): the shard should drop it.
    push->items.push_back({protocol::StreamItem::Kind::kUnload, key.level, key.code, 0, {}});
    *bytes += 22;
    return;
  }
  *bytes += 22 + record.size();
  push->items.push_back(
      {protocol::StreamItem::Kind::kChunk, key.level, key.code, version, std::move(record)});
}

void Stream::Pump() {
  if (stopped_) return;
  TakeChanges();
  const auto now = Clock::now();
  if (budget_ > 0) {
    const double burst =
        std::max(static_cast<double>(budget_) / 20, static_cast<double>(options_.max_frame_bytes));
    tokens_ = std::min(burst, tokens_ + static_cast<double>(budget_) *
                                            std::chrono::duration<double>(now - refilled_).count());
  }
  refilled_ = now;
  for (;;) {
    if (unsent_() >= window_) {
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
    protocol::StreamDataPush push;
    size_t bytes = 0;
    for (const NodeKey& k : unloads_) {
      push.items.push_back({protocol::StreamItem::Kind::kUnload, k.level, k.code, 0, {}});
      bytes += 22;
    }
    counters_->unloads += unloads_.size();
    unloads_.clear();
    while (bytes < options_.max_frame_bytes) {
      NodeKey k;
      if (!urgent_.empty()) {
        k = urgent_.back();
        urgent_.pop_back();
        if (wanted_.count(k) == 0 && known_.count(k) == 0) continue;  // unloaded since
      } else if (next_ < queue_.size()) {
        k = queue_[next_++].key;
        if (known_.count(k) > 0) continue;  // read before: changes come as urgent
      } else {
        break;
      }
      const size_t before = push.items.size();
      Read(k, &push, &bytes);
      if (push.items.size() > before &&
          push.items.back().kind == protocol::StreamItem::Kind::kChunk) {
        ++counters_->chunks;
      }
    }
    if (push.items.empty()) {
      Arm(options_.tick);  // idle: look for changes now and then
      return;
    }
    std::vector<uint8_t> frame(protocol::kHeaderSize);
    const std::vector<uint8_t> payload = push.Encode();
    frame.insert(frame.end(), payload.begin(), payload.end());
    protocol::FrameHeader h;
    h.opcode = static_cast<uint8_t>(protocol::Opcode::kStreamData);
    h.flags = protocol::kFlagPush;
    protocol::EncodeHeader(h, static_cast<uint32_t>(payload.size()), frame.data());
    if (budget_ > 0) tokens_ -= static_cast<double>(frame.size());
    counters_->bytes += frame.size();
    send_(std::move(frame));
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
