#include "engine/change_feed.h"

#include <algorithm>

namespace voxdb::engine {

size_t ChangeRecord::MemoryUsage() const {
  size_t bytes = sizeof(ChangeRecord) + chunks.capacity() * sizeof(ChangedChunk);
  for (const ChangedChunk& c : chunks) bytes += c.edits.capacity() * sizeof(uint32_t);
  return bytes;
}

ChangeFeed::ChangeFeed(const ChangeFeedOptions& options, uint64_t start_seq)
    : options_(options), last_seq_(start_seq), floor_(start_seq) {}

void ChangeFeed::Publish(std::vector<std::shared_ptr<const ChangeRecord>> records) {
  if (records.empty()) return;
  std::vector<std::function<void()>> listeners;
  {
    MutexLock l(&mu_);
    for (auto& r : records) {
      last_seq_ = std::max(last_seq_, r->seq);
      bytes_ += r->MemoryUsage();
      records_.push_back(std::move(r));
    }
    while (!records_.empty() &&
           (records_.size() > options_.max_records || bytes_ > options_.max_bytes)) {
      floor_ = records_.front()->seq;
      bytes_ -= records_.front()->MemoryUsage();
      records_.pop_front();
    }
    listeners = listeners_;
  }
  for (const auto& fn : listeners) fn();
}

bool ChangeFeed::Read(uint64_t after, size_t max_records,
                      std::vector<std::shared_ptr<const ChangeRecord>>* out) const {
  MutexLock l(&mu_);
  if (after < floor_) return false;
  auto it = std::upper_bound(
      records_.begin(), records_.end(), after,
      [](uint64_t seq, const std::shared_ptr<const ChangeRecord>& r) { return seq < r->seq; });
  for (; it != records_.end() && max_records > 0; ++it, --max_records) out->push_back(*it);
  return true;
}

uint64_t ChangeFeed::last_seq() const {
  MutexLock l(&mu_);
  return last_seq_;
}

uint64_t ChangeFeed::resume_floor() const {
  MutexLock l(&mu_);
  return floor_;
}

size_t ChangeFeed::records() const {
  MutexLock l(&mu_);
  return records_.size();
}

size_t ChangeFeed::bytes() const {
  MutexLock l(&mu_);
  return bytes_;
}

void ChangeFeed::AddListener(std::function<void()> listener) {
  MutexLock l(&mu_);
  listeners_.push_back(std::move(listener));
}

}  // namespace voxdb::engine
