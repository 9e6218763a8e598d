#include "engine/write_admission.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/chunk_cache.h"
#include "engine/group_committer.h"

namespace voxdb::engine {

WriteAdmission::WriteAdmission(const DatabaseOptions& options, const ChunkCache* cache,
                               GroupCommitter* committer, std::function<void()> wake_flusher)
    : options_(options),
      node_(options.node.get()),
      cache_(cache),
      committer_(committer),
      wake_flusher_(std::move(wake_flusher)) {}

bool WriteAdmission::FitsLocked(int64_t want) const {
  const int64_t budget = static_cast<int64_t>(options_.dirty_bytes);
  const int64_t used = cache_->dirty_bytes() + reserved_;
  // A write larger than the whole budget goes alone.
  return used + want <= budget || (used <= 0 && reserved_ == 0);
}

Status WriteAdmission::ReserveRoom(size_t estimate) {
  const int64_t want = static_cast<int64_t>(estimate);
  if (node_) {
    if (node_->ReserveDirty(want, std::chrono::steady_clock::now() + options_.busy_timeout,
                            &write_waits_)) {
      return absl::OkStatus();
    }
    ++busy_rejections_;
    return BusyError(absl::StrFormat(
        "dirty data of the node is at its budget of %u bytes and the flushers did not make room "
        "within %d ms",
        node_->dirty_budget(), static_cast<int>(options_.busy_timeout.count())));
  }
  MutexLock l(&mu_);
  if (!FitsLocked(want)) {
    ++write_waits_;
    ++waiting_writers_;
    const auto deadline = std::chrono::steady_clock::now() + options_.busy_timeout;
    while (!FitsLocked(want)) {
      if (std::chrono::steady_clock::now() >= deadline) {
        --waiting_writers_;
        ++busy_rejections_;
        return BusyError(absl::StrFormat(
            "dirty data is at its budget of %u bytes and the flusher did not make room within "
            "%d ms",
            options_.dirty_bytes, static_cast<int>(options_.busy_timeout.count())));
      }
      wake_flusher_();
      room_cv_.WaitFor(std::chrono::milliseconds(5));
    }
    --waiting_writers_;
  }
  reserved_ += want;
  return absl::OkStatus();
}

void WriteAdmission::ReleaseRoom(size_t estimate) {
  if (node_) {
    node_->ReleaseDirty(static_cast<int64_t>(estimate));
    return;
  }
  {
    MutexLock l(&mu_);
    reserved_ -= static_cast<int64_t>(estimate);
  }
  room_cv_.SignalAll();
}

int64_t WriteAdmission::AsyncLagBoundMicros() const {
  return 2 * std::chrono::duration_cast<std::chrono::microseconds>(options_.commit_interval)
                 .count() +
         20'000;
}

Status WriteAdmission::WaitForJournal() {
  // kAsync acknowledges before the commit; the journal may fall behind by
  // at most this much before writers wait for it.
  const int64_t bound_us = AsyncLagBoundMicros();
  const auto deadline = std::chrono::steady_clock::now() + options_.busy_timeout;
  if (committer_->WaitForLag(bound_us, deadline)) return absl::OkStatus();
  ++busy_rejections_;
  return BusyError(absl::StrFormat(
      "the journal is more than %d ms behind the acknowledged writes and did not catch up "
      "within %d ms",
      static_cast<int>(bound_us / 1000), static_cast<int>(options_.busy_timeout.count())));
}

bool WriteAdmission::WritesWouldWait() const {
  if (node_) return node_->WritesWouldWait();
  return waiting_writers_.load() > 0 ||
         cache_->dirty_bytes() >= static_cast<int64_t>(options_.dirty_bytes);
}

}  // namespace voxdb::engine
