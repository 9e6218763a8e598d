#include "daemon/subscriptions.h"

#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "absl/strings/str_format.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "engine/coding.h"
#include "engine/status.h"
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

struct SubscriptionHub::Subscription {
  explicit Subscription(index::RegionMatcher m) : matcher(std::move(m)) {}
  std::weak_ptr<PushTarget> target;
  const PushTarget* key = nullptr;
  uint64_t id = 0;
  index::Region region;
  std::optional<index::AltitudeBand> band;
  index::RegionMatcher matcher;
  protocol::EventDetail detail = protocol::EventDetail::kNone;
  std::atomic<uint64_t> cursor{0};  // the last seq looked at; written by the dispatcher
  std::atomic<bool> removed{false};
};

void SubscriptionHub::Signal::Notify() {
  {
    std::lock_guard<std::mutex> l(mu);
    wake = true;
  }
  cv.notify_one();
}

SubscriptionHub::SubscriptionHub(engine::Database* db, const SubscriptionOptions& options,
                                 Metrics* metrics)
    : db_(db), options_(options), metrics_(metrics) {
  if (db_ == nullptr) return;  // no subscriptions on this node (yet): see the header
  db_->changes().AddListener([signal = signal_] { signal->Notify(); });
  thread_ = std::thread([this] { Run(); });
}

SubscriptionHub::~SubscriptionHub() { Stop(); }

void SubscriptionHub::Stop() {
  {
    std::lock_guard<std::mutex> l(signal_->mu);
    signal_->stop = true;
  }
  signal_->cv.notify_one();
  std::lock_guard<std::mutex> l(thread_mu_);
  if (thread_.joinable()) thread_.join();
}

void SubscriptionHub::Rebind(engine::Database* db) {
  std::lock_guard<std::mutex> pass(db_mu_);
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [key, sub] : subs_) {
      sub->removed = true;
      if (auto target = sub->target.lock()) {
        target->CutOff("the partition was split or moved: subscribe again (from_seq resumes)");
      }
    }
    subs_.clear();
  }
  db_ = db;
  if (db_ == nullptr) return;
  db_->changes().AddListener([signal = signal_] { signal->Notify(); });
  std::lock_guard<std::mutex> t(thread_mu_);
  {
    std::lock_guard<std::mutex> l(signal_->mu);
    if (signal_->stop) return;
  }
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
}

StatusOr<uint64_t> SubscriptionHub::Add(const std::shared_ptr<PushTarget>& target, uint64_t id,
                                        const index::Region& region,
                                        const std::optional<index::AltitudeBand>& band,
                                        protocol::EventDetail detail,
                                        std::optional<uint64_t> from_seq) {
  auto sub = std::make_shared<Subscription>(index::RegionMatcher(region, band));
  sub->target = target;
  sub->key = target.get();
  sub->id = id;
  sub->region = region;
  sub->band = band;
  sub->detail = detail;
  std::lock_guard<std::mutex> db_lock(db_mu_);
  if (db_ == nullptr) return BusyError("subscriptions are being moved to another partition");
  engine::ChangeFeed& feed = db_->changes();
  uint64_t start = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    const auto first = subs_.lower_bound({target.get(), 0});
    size_t mine = 0;
    for (auto it = first; it != subs_.end() && it->first.first == target.get(); ++it) ++mine;
    if (mine >= options_.max_per_connection) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "this connection has %u subscriptions, the most it may have: UNSUBSCRIBE one first",
          options_.max_per_connection));
    }
    const uint64_t last = feed.last_seq();
    if (from_seq) {
      if (*from_seq < feed.resume_floor()) {
        return ResyncError(absl::StrFormat(
            "the changes after %u are no longer retained (the server keeps those after %u): "
            "read the region again and subscribe without a resume point",
            *from_seq, feed.resume_floor()));
      }
      if (*from_seq > last) {
        return absl::InvalidArgumentError(
            absl::StrFormat("resume point %u is past the newest change, %u", *from_seq, last));
      }
    }
    start = from_seq.value_or(last);
    sub->cursor = start;
    subs_[{target.get(), id}] = sub;
  }
  if (from_seq) signal_->Notify();  // owed the retained changes now
  return start;
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
  std::lock_guard<std::mutex> db_lock(db_mu_);
  if (db_ == nullptr) return s;
  const uint64_t last = db_->changes().last_seq();
  std::lock_guard<std::mutex> l(mu_);
  s.subscribers = subs_.size();
  for (const auto& [key, sub] : subs_)
    s.lag = std::max(s.lag, last - std::min(last, sub->cursor.load()));
  return s;
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
  std::lock_guard<std::mutex> db_lock(db_mu_);
  if (db_ == nullptr) return false;
  std::vector<std::shared_ptr<Subscription>> subs;
  {
    std::lock_guard<std::mutex> l(mu_);
    subs.reserve(subs_.size());
    for (const auto& [key, sub] : subs_) subs.push_back(sub);
  }
  engine::ChangeFeed& feed = db_->changes();
  const uint64_t floor = feed.resume_floor();
  // Who is served this pass: not those over their window, nor (to gather
  // events into fewer frames) those whose connection is still writing.
  struct Ready {
    Subscription* sub;
    std::shared_ptr<PushTarget> target;
  };
  std::vector<Ready> ready;
  uint64_t from = UINT64_MAX;
  for (const auto& sub : subs) {
    std::shared_ptr<PushTarget> target = sub->target.lock();
    if (!target || sub->removed) continue;
    const uint64_t cursor = sub->cursor;
    if (cursor < floor) {
      cut_off_++;
      const std::string why = absl::StrFormat(
          "subscription %u fell behind the retained changes (it was sent up to %u; the server "
          "keeps those after %u)",
          sub->id, cursor, floor);
      Remove(sub->key, sub->id);
      target->CutOff(why);
      continue;
    }
    if (target->PushBacklog() > 0) {
      target->WakeWhenDrained();
      // If it drained before the flag was set, no drain will wake us: look
      // again (both sides are sequentially consistent atomics).
      if (target->PushBacklog() > 0) continue;
    }
    from = std::min(from, cursor);
    ready.push_back({sub.get(), std::move(target)});
  }
  if (ready.empty()) return false;
  std::vector<std::shared_ptr<const engine::ChangeRecord>> records;
  // A concurrent drop past `from` is caught by the next pass's floor check.
  if (!feed.Read(from, kRecordsPerPass, &records) || records.empty()) return false;
  bool more = records.size() == kRecordsPerPass;

  const engine::WorldFrame& frame = db_->frame();
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
  for (Ready& r : ready) more |= Serve(*r.sub, *r.target, records, chunks_of);
  return more;
}

bool SubscriptionHub::Serve(Subscription& sub, PushTarget& target,
                            const std::vector<std::shared_ptr<const engine::ChangeRecord>>& records,
                            const std::function<const std::vector<PassChunk>&(size_t)>& chunks_of) {
  const engine::WorldFrame& frame = db_->frame();
  const uint64_t cursor = sub.cursor;
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
        (void)db_->GetChunks({&key, 1}, [&](size_t, const engine::ChunkRead& read) {
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
  sub.cursor = done;
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
