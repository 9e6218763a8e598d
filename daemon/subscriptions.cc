#include "daemon/subscriptions.h"

#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "absl/strings/str_format.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
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
  std::weak_ptr<PushTarget> target;
  const PushTarget* key = nullptr;
  uint64_t id = 0;
  index::Region region;
  std::optional<index::AltitudeBand> band;
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
  if (thread_.joinable()) thread_.join();
}

StatusOr<uint64_t> SubscriptionHub::Add(const std::shared_ptr<PushTarget>& target, uint64_t id,
                                        const index::Region& region,
                                        const std::optional<index::AltitudeBand>& band,
                                        protocol::EventDetail detail,
                                        std::optional<uint64_t> from_seq) {
  auto sub = std::make_shared<Subscription>();
  sub->target = target;
  sub->key = target.get();
  sub->id = id;
  sub->region = region;
  sub->band = band;
  sub->detail = detail;
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
        return absl::OutOfRangeError(absl::StrFormat(
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
    bool more = true;
    while (more) {
      more = false;
      std::vector<std::shared_ptr<Subscription>> subs;
      {
        std::lock_guard<std::mutex> l(mu_);
        subs.reserve(subs_.size());
        for (const auto& [key, sub] : subs_) subs.push_back(sub);
      }
      for (const auto& sub : subs) more |= Serve(*sub);
      std::lock_guard<std::mutex> l(signal_->mu);
      if (signal_->stop) return;
    }
  }
}

bool SubscriptionHub::Serve(Subscription& sub) {
  std::shared_ptr<PushTarget> target = sub.target.lock();
  if (!target || sub.removed) return false;
  const engine::WorldFrame& frame = db_->frame();
  engine::ChangeFeed& feed = db_->changes();
  std::vector<std::shared_ptr<const engine::ChangeRecord>> records;
  const uint64_t cursor = sub.cursor;
  // A subscriber over its window only needs to know whether it fell out of
  // the feed (no copying of records it cannot take).
  const bool blocked = target->PushBacklog() >= options_.push_window_bytes;
  if (blocked) target->WakeWhenDrained();
  if (blocked ? cursor < feed.resume_floor() : !feed.Read(cursor, kRecordsPerPass, &records)) {
    cut_off_++;
    const std::string why = absl::StrFormat(
        "subscription %u fell behind the retained changes (it was sent up to %u; the server "
        "keeps those after %u)",
        sub.id, cursor, feed.resume_floor());
    Remove(sub.key, sub.id);
    target->CutOff(why);
    return false;
  }
  if (blocked || records.empty()) return false;

  // The frame: header, then n u32 and the events.
  std::vector<uint8_t> out(protocol::kHeaderSize + 4);
  uint32_t n = 0;
  uint64_t done = cursor;
  std::optional<std::chrono::steady_clock::time_point> oldest;  // of the events sent
  bool more = records.size() == kRecordsPerPass;
  protocol::ChangeEvent event;
  for (const auto& rec : records) {
    if (out.size() >= options_.max_frame_bytes) {
      more = true;
      break;
    }
    done = rec->seq;
    if (rec->op == engine::JournalOp::kFillBox) {
      const engine::Fill fill{rec->seq, rec->box, rec->material};
      if (index::FillInRegion(frame, fill, sub.region, sub.band)) {
        event = {};
        event.seq = rec->seq;
        event.kind = protocol::EventKind::kFill;
        event.box = FromBox(rec->box);
        event.material = rec->material;
        event.EncodeTo(&out);
        ++n;
        if (!oldest) oldest = rec->durable;
      }
    }
    for (const engine::ChangedChunk& c : rec->chunks) {
      const engine::ChunkKey key = engine::ChunkKey::FromCode(c.code);
      if (!index::ChunkInRegion(frame, key, sub.region, sub.band)) continue;
      event = {};
      event.seq = rec->seq;
      event.kind = protocol::EventKind::kChunk;
      event.chunk = c.code;
      event.present = c.present;
      if (sub.detail == protocol::EventDetail::kVoxels) {
        if (rec->op == engine::JournalOp::kSetVoxels) {
          event.detail = protocol::EventDetailKind::kEdits;
          event.edits = c.edits;
        } else if (rec->op == engine::JournalOp::kWriteBox) {
          event.detail = protocol::EventDetailKind::kBox;
          event.box = FromBox(engine::Intersect(rec->box, frame.ChunkBox(key.coord())));
        }
      } else if (sub.detail == protocol::EventDetail::kRecords && c.present &&
                 out.size() < kMaxRecordFrameBytes) {
        // The record while this version is still current; a newer version
        // has its own event, which carries its record.
        (void)db_->GetChunks({&key, 1}, [&](size_t, const engine::ChunkRead& read) {
          if (read.status.ok() && read.version == rec->seq) {
            event.detail = protocol::EventDetailKind::kRecord;
            event.record.assign(read.record.begin(), read.record.end());
          }
        });
      }
      event.EncodeTo(&out);
      ++n;
      if (!oldest) oldest = rec->durable;
    }
  }
  sub.cursor = done;
  if (n == 0) return more;
  for (int i = 0; i < 4; ++i) out[protocol::kHeaderSize + i] = static_cast<uint8_t>(n >> (8 * i));
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(protocol::Opcode::kEvents);
  h.flags = protocol::kFlagPush;
  h.request_id = sub.id;
  protocol::EncodeHeader(h, static_cast<uint32_t>(out.size() - protocol::kHeaderSize), out.data());
  events_ += n;
  ++frames_;
  if (metrics_ != nullptr) metrics_->OnEventDelay(std::chrono::steady_clock::now() - *oldest);
  target->Push(std::move(out));
  return more;
}

}  // namespace voxdb::daemon
