#include "daemon/subscriptions.h"

#include <algorithm>
#include <chrono>
#include <unordered_map>
#include <variant>

#include "absl/strings/str_format.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "engine/coding.h"
#include "engine/status.h"
#include "engine/voxel_box.h"
#include "protocol/frame.h"

namespace voxdb::daemon {
namespace {

// Records read from the feed per subscription per pass.
constexpr size_t kRecordsPerPass = 4096;
// Frames are cut between writes; within one write that changed many chunks,
// chunk records stop being attached past this size (those events carry no
// detail: read the chunk), so that a frame stays well under the frame limit.
constexpr size_t kMaxRecordFrameBytes = size_t{32} << 20;

protocol::Box FromBox(const engine::VoxelBox& b) {
  return {{b.lo.x, b.lo.y, b.lo.z}, {b.hi.x, b.hi.y, b.hi.z}};
}

}  // namespace

// A subscription's place in one partition's feed.
struct SubscriptionHub::Cursor {
  uint64_t part_id = 0;
  engine::MortonRange range;
  // Held while the subscription follows it (a split or move that replaces
  // it cuts the subscription off, letting go of it).
  std::shared_ptr<engine::Database> db;
  std::atomic<uint64_t> seq{0};  // the last seq looked at; written by the dispatcher
};

struct SubscriptionHub::Subscription {
  explicit Subscription(index::RegionMatcher m) : matcher(std::move(m)) {}
  std::weak_ptr<PushTarget> target;
  const PushTarget* key = nullptr;
  uint64_t id = 0;
  index::Region region;
  std::optional<index::AltitudeBand> band;
  index::RegionMatcher matcher;
  protocol::EventDetail detail = protocol::EventDetail::kNone;
  std::vector<std::unique_ptr<Cursor>> cursors;  // set before it is added, in code order
  std::atomic<bool> removed{false};
};

void SubscriptionHub::Signal::Notify() {
  {
    std::lock_guard<std::mutex> l(mu);
    wake = true;
  }
  cv.notify_one();
}

SubscriptionHub::SubscriptionHub(engine::Node* node, const SubscriptionOptions& options,
                                 Metrics* metrics)
    : layout_of_([node] { return node->layout(); }),
      frame_(&node->frame()),
      options_(options),
      metrics_(metrics) {
  Follow();
  thread_ = std::thread([this] { Run(); });
}

SubscriptionHub::SubscriptionHub(engine::Database* db, const SubscriptionOptions& options,
                                 Metrics* metrics)
    : frame_(&db->frame()), options_(options), metrics_(metrics) {
  engine::Node::Part part;
  part.db = std::shared_ptr<engine::Database>(db, [](engine::Database*) {});  // not owned
  auto layout = std::make_shared<const engine::Node::Layout>(
      engine::Node::Layout{engine::PartitionRanges::Whole(), {std::move(part)}});
  layout_of_ = [layout] { return layout; };
  Follow();
  thread_ = std::thread([this] { Run(); });
}

SubscriptionHub::~SubscriptionHub() { Stop(); }

void SubscriptionHub::Stop() {
  {
    std::lock_guard<std::mutex> l(signal_->mu);
    signal_->stop = true;
  }
  signal_->cv.notify_one();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> l(mu_);
  stopped_ = true;
  for (auto& [key, sub] : subs_) sub->removed = true;
  subs_.clear();
  followed_.reset();
}

std::shared_ptr<const engine::Node::Layout> SubscriptionHub::Follow() {
  std::shared_ptr<const engine::Node::Layout> layout = layout_of_();
  std::lock_guard<std::mutex> l(mu_);
  if (layout == followed_ || stopped_) return layout;
  for (const engine::Node::Part& part : layout->parts) {
    bool known = false;
    if (followed_) {
      for (const engine::Node::Part& old : followed_->parts) known |= old.db == part.db;
    }
    if (!known) part.db->changes().AddListener([signal = signal_] { signal->Notify(); });
  }
  followed_ = layout;
  return layout;
}

StatusOr<SubscriptionStart> SubscriptionHub::Add(
    const std::shared_ptr<PushTarget>& target, uint64_t id, const index::Region& region,
    const std::optional<index::AltitudeBand>& band, protocol::EventDetail detail,
    std::optional<uint64_t> from_seq,
    const std::optional<std::vector<protocol::RangeSeq>>& from_ranges) {
  auto sub = std::make_shared<Subscription>(index::RegionMatcher(region, band));
  sub->target = target;
  sub->key = target.get();
  sub->id = id;
  sub->region = region;
  sub->band = band;
  sub->detail = detail;
  // Listening before reading each feed's newest seq: no publish after it
  // goes unnoticed.
  const std::shared_ptr<const engine::Node::Layout> layout = Follow();
  const bool several = layout->parts.size() > 1;
  if (several && from_seq) {
    return absl::InvalidArgumentError(
        "this server has several partitions, each numbering its own writes: resume with "
        "per-range points (has_from 2) from the ranges of the SUBSCRIBE reply");
  }
  // The partitions the region meets: those of a box's chunks; every one for
  // the other kinds (a partition none of whose chunks is in the region
  // sends nothing).
  std::vector<size_t> parts;
  if (const auto* box = std::get_if<index::BoxRegion>(&region)) {
    parts = layout->ranges.Meeting(engine::ChunksCovering(*frame_, box->box));
  } else {
    for (size_t p = 0; p < layout->parts.size(); ++p) parts.push_back(p);
  }
  SubscriptionStart start;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopped_) return ClosingError("the server is stopping");
    const auto first = subs_.lower_bound({target.get(), 0});
    size_t mine = 0;
    for (auto it = first; it != subs_.end() && it->first.first == target.get(); ++it) ++mine;
    if (mine >= options_.max_per_connection) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "this connection has %u subscriptions, the most it may have: UNSUBSCRIBE one first",
          options_.max_per_connection));
    }
    for (size_t p : parts) {
      const engine::Node::Part& part = layout->parts[p];
      const engine::MortonRange range = layout->ranges.range(p);
      engine::ChangeFeed& feed = part.db->changes();
      const uint64_t last = feed.last_seq();
      std::optional<uint64_t> from = from_seq;
      if (from_ranges) {
        for (const protocol::RangeSeq& rs : *from_ranges) {
          if (rs.begin <= range.begin && range.end <= rs.end) from = rs.seq;
        }
        if (!from) {
          return ResyncError(absl::StrFormat(
              "no resume range holds the partition of chunk codes [%u, %u): read the region "
              "again and subscribe without a resume point",
              range.begin, range.end));
        }
      }
      if (from) {
        if (*from < feed.resume_floor()) {
          if (several) {
            return ResyncError(absl::StrFormat(
                "the changes of chunk codes [%u, %u) after %u are no longer retained (the server "
                "keeps those after %u): read the region again and subscribe without a resume "
                "point",
                range.begin, range.end, *from, feed.resume_floor()));
          }
          return ResyncError(absl::StrFormat(
              "the changes after %u are no longer retained (the server keeps those after %u): "
              "read the region again and subscribe without a resume point",
              *from, feed.resume_floor()));
        }
        if (*from > last) {
          return absl::InvalidArgumentError(
              absl::StrFormat("resume point %u is past the newest change, %u", *from, last));
        }
      }
      auto cursor = std::make_unique<Cursor>();
      cursor->part_id = part.spec.id;
      cursor->range = range;
      cursor->db = part.db;
      cursor->seq = from.value_or(last);
      start.seq = std::max(start.seq, cursor->seq.load());
      if (several) start.ranges.push_back({range.begin, range.end, cursor->seq});
      sub->cursors.push_back(std::move(cursor));
    }
    subs_[{target.get(), id}] = sub;
  }
  // Owed the retained changes now; or, when the layout changed meanwhile,
  // to be cut off.
  signal_->Notify();
  return start;
}

StatusOr<uint64_t> SubscriptionHub::Add(const std::shared_ptr<PushTarget>& target, uint64_t id,
                                        const index::Region& region,
                                        const std::optional<index::AltitudeBand>& band,
                                        protocol::EventDetail detail,
                                        std::optional<uint64_t> from_seq) {
  StatusOr<SubscriptionStart> start = Add(target, id, region, band, detail, from_seq, std::nullopt);
  if (!start.ok()) return start.status();
  return start->seq;
}

bool SubscriptionHub::Remove(const PushTarget* target, uint64_t id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = subs_.find({target, id});
  if (it == subs_.end()) return false;
  it->second->removed = true;
  subs_.erase(it);
  return true;
}

void SubscriptionHub::RemoveAll(const PushTarget* target) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = subs_.lower_bound({target, 0});
  while (it != subs_.end() && it->first.first == target) {
    it->second->removed = true;
    it = subs_.erase(it);
  }
}

void SubscriptionHub::Wake() { signal_->Notify(); }

SubscriptionStats SubscriptionHub::stats() const {
  SubscriptionStats s;
  s.events_pushed = events_;
  s.frames_pushed = frames_;
  s.cut_off = cut_off_;
  std::lock_guard<std::mutex> l(mu_);
  s.subscribers = subs_.size();
  for (const auto& [key, sub] : subs_) {
    for (const auto& c : sub->cursors) {
      const uint64_t last = c->db->changes().last_seq();
      s.lag = std::max(s.lag, last - std::min(last, c->seq.load()));
    }
  }
  return s;
}

void SubscriptionHub::CutOff(Subscription& sub, PushTarget& target, const std::string& why) {
  cut_off_++;
  Remove(sub.key, sub.id);
  target.CutOff(why);
}

void SubscriptionHub::Run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> l(signal_->mu);
      // The timeout is a safety net only: the feed and draining
      // connections wake the dispatcher.
      signal_->cv.wait_for(l, std::chrono::milliseconds(200),
                           [&] { return signal_->wake || signal_->stop; });
      if (signal_->stop) return;
      signal_->wake = false;
    }
    while (Pass()) {
      std::lock_guard<std::mutex> l(signal_->mu);
      if (signal_->stop) return;
    }
  }
}

// One change of a pass, shared by every subscription: the chunk's facts
// for the region tests and its event without detail, encoded once.
struct SubscriptionHub::PassChunk {
  PassChunk(const engine::WorldFrame& frame, const engine::ChangeRecord& rec,
            const engine::ChangedChunk& c)
      : chunk(&c), facts(frame, engine::ChunkKey::FromCode(c.code)) {
    protocol::ChangeEvent e;
    e.seq = rec.seq;
    e.kind = protocol::EventKind::kChunk;
    e.chunk = c.code;
    e.present = c.present;
    e.EncodeTo(&plain);
  }
  const engine::ChangedChunk* chunk;
  index::ChunkFacts facts;
  std::vector<uint8_t> plain;  // the event with detail none
};

bool SubscriptionHub::Pass() {
  const std::shared_ptr<const engine::Node::Layout> layout = Follow();
  std::vector<std::shared_ptr<Subscription>> subs;
  {
    std::lock_guard<std::mutex> l(mu_);
    subs.reserve(subs_.size());
    for (const auto& [key, sub] : subs_) subs.push_back(sub);
  }
  // Who is served this pass: not those over their window, nor (to gather
  // events into fewer frames) those whose connection is still writing.
  struct Ready {
    Subscription* sub;
    std::shared_ptr<PushTarget> target;
  };
  std::vector<Ready> ready;
  std::vector<uint64_t> from(layout->parts.size(), UINT64_MAX);  // per partition
  std::vector<size_t> part_of;  // each ready cursor's partition, in order
  for (const auto& sub : subs) {
    std::shared_ptr<PushTarget> target = sub->target.lock();
    if (!target || sub->removed) continue;
    std::string why;
    const size_t mark = part_of.size();
    for (const auto& c : sub->cursors) {
      size_t p = 0;
      while (p < layout->parts.size() && layout->parts[p].db != c->db) ++p;
      if (p == layout->parts.size()) {
        why = absl::StrFormat(
            "subscription %u follows partition %u (chunk codes [%u, %u)), which a split or move "
            "replaced: resume from the ranges it was sent",
            sub->id, c->part_id, c->range.begin, c->range.end);
        break;
      }
      const uint64_t floor = c->db->changes().resume_floor();
      if (c->seq < floor) {
        why = absl::StrFormat(
            "subscription %u fell behind the retained changes (it was sent up to %u; the server "
            "keeps those after %u)",
            sub->id, c->seq.load(), floor);
        break;
      }
      part_of.push_back(p);
    }
    if (!why.empty()) {
      part_of.resize(mark);
      CutOff(*sub, *target, why);
      continue;
    }
    if (target->PushBacklog() > 0) {
      target->WakeWhenDrained();
      // If it drained before the flag was set, no drain will wake us: look
      // again (both sides are sequentially consistent atomics).
      if (target->PushBacklog() > 0) {
        part_of.resize(mark);
        continue;
      }
    }
    for (size_t k = 0; k < sub->cursors.size(); ++k) {
      from[part_of[mark + k]] = std::min(from[part_of[mark + k]], sub->cursors[k]->seq.load());
    }
    ready.push_back({sub.get(), std::move(target)});
  }
  if (ready.empty()) return false;

  bool more = false;
  const engine::WorldFrame& frame = *frame_;
  for (size_t p = 0; p < layout->parts.size(); ++p) {
    if (from[p] == UINT64_MAX) continue;
    std::vector<std::shared_ptr<const engine::ChangeRecord>> records;
    // A concurrent drop past `from` is caught by the next pass's floor check.
    if (!layout->parts[p].db->changes().Read(from[p], kRecordsPerPass, &records) ||
        records.empty()) {
      continue;
    }
    more |= records.size() == kRecordsPerPass;
    std::vector<std::vector<PassChunk>> chunks(records.size());  // built when first needed
    std::vector<bool> built(records.size(), false);
    auto chunks_of = [&](size_t r) -> const std::vector<PassChunk>& {
      if (!built[r]) {
        chunks[r].reserve(records[r]->chunks.size());
        for (const auto& c : records[r]->chunks) chunks[r].emplace_back(frame, *records[r], c);
        built[r] = true;
      }
      return chunks[r];
    };
    size_t at = 0;  // into part_of, walking the ready subscriptions' cursors
    for (Ready& r : ready) {
      for (const auto& c : r.sub->cursors) {
        if (part_of[at++] == p) more |= Serve(*r.sub, *c, *r.target, records, chunks_of);
      }
    }
  }
  return more;
}

bool SubscriptionHub::Serve(Subscription& sub, Cursor& at, PushTarget& target,
                            const std::vector<std::shared_ptr<const engine::ChangeRecord>>& records,
                            const std::function<const std::vector<PassChunk>&(size_t)>& chunks_of) {
  const engine::WorldFrame& frame = *frame_;
  const uint64_t cursor = at.seq;
  size_t first = 0;
  while (first < records.size() && records[first]->seq <= cursor) ++first;
  if (first == records.size()) return false;

  // The frame: header, then n u32 and the events.
  protocol::FrameWriter writer(4096 - protocol::kHeaderSize - 4, /*count_prefix=*/true);
  std::vector<uint8_t>& out = *writer.buffer();  // the encoders append to it
  uint32_t n = 0;
  uint64_t done = cursor;
  std::optional<std::chrono::steady_clock::time_point> oldest;  // of the events sent
  bool more = false;
  protocol::ChangeEvent event;
  for (size_t r = first; r < records.size(); ++r) {
    const engine::ChangeRecord& rec = *records[r];
    if (out.size() >= options_.max_frame_bytes) {
      more = true;
      break;
    }
    done = rec.seq;
    const size_t before = n;
    if (rec.op == engine::JournalOp::kFillBox) {
      const engine::Fill fill{rec.seq, rec.box, rec.material};
      if (index::FillInRegion(frame, fill, sub.region, sub.band)) {
        event = {};
        event.seq = rec.seq;
        event.kind = protocol::EventKind::kFill;
        event.box = FromBox(rec.box);
        event.material = rec.material;
        event.EncodeTo(&out);
        ++n;
      }
    }
    for (const PassChunk& pc : chunks_of(r)) {
      if (!sub.matcher.Contains(pc.facts)) continue;
      ++n;
      const engine::ChangedChunk& c = *pc.chunk;
      const engine::ChunkKey key = engine::ChunkKey::FromCode(c.code);
      event = {};
      if (sub.detail == protocol::EventDetail::kVoxels) {
        if (rec.op == engine::JournalOp::kSetVoxels) {
          event.detail = protocol::EventDetailKind::kEdits;
          event.edits = c.edits;
        } else if (rec.op == engine::JournalOp::kWriteBox) {
          event.detail = protocol::EventDetailKind::kBox;
          event.box = FromBox(engine::Intersect(rec.box, frame.VoxelsOfChunk(key.coord())));
        }
      } else if (sub.detail == protocol::EventDetail::kRecords && c.present &&
                 out.size() < kMaxRecordFrameBytes) {
        // The record while this version is still current; a newer version
        // has its own event, which carries its record.
        (void)at.db->GetChunks({&key, 1}, [&](size_t, const engine::ChunkRead& read) {
          if (read.status.ok() && read.version == rec.seq) {
            event.detail = protocol::EventDetailKind::kRecord;
            event.record.assign(read.record.begin(), read.record.end());
          }
        });
      }
      if (event.detail == protocol::EventDetailKind::kNone) {
        out.insert(out.end(), pc.plain.begin(), pc.plain.end());
      } else {
        event.seq = rec.seq;
        event.kind = protocol::EventKind::kChunk;
        event.chunk = c.code;
        event.present = c.present;
        event.EncodeTo(&out);
      }
    }
    if (n > before && !oldest) oldest = rec.durable;
  }
  at.seq = done;
  if (n == 0) return more;
  writer.set_count(n);
  events_ += n;
  ++frames_;
  if (metrics_ != nullptr) metrics_->OnEventDelay(std::chrono::steady_clock::now() - *oldest);
  target.Push(writer.Seal(static_cast<uint8_t>(protocol::Opcode::kEvents), sub.id,
                          protocol::kFlagPush, protocol::WireStatus::kOk));
  return more;
}

}  // namespace voxdb::daemon
