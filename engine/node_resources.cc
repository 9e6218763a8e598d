#include "engine/node_resources.h"

#include <algorithm>
#include <utility>

#include "engine/chunk_cache.h"
#include "engine/flusher.h"
#include "engine/group_committer.h"

namespace voxdb::engine {

StatusOr<std::shared_ptr<NodeResources>> NodeResources::Create(
    const NodeResourcesOptions& options) {
  if (options.dirty_bytes == 0 || options.dirty_bytes > options.cache_bytes) {
    return absl::InvalidArgumentError("node dirty_bytes must be in (0, cache_bytes]");
  }
  if (!(options.flush_high_water > 0 && options.flush_high_water <= 1)) {
    return absl::InvalidArgumentError("node flush_high_water must be in (0, 1]");
  }
  if (options.commit_threads < 0 || options.flush_threads < 0 ||
      (options.commit_threads == 0) != (options.flush_threads == 0)) {
    return absl::InvalidArgumentError(
        "node commit_threads and flush_threads must be both 0 or both positive");
  }
  return std::make_shared<NodeResources>(options);
}

NodeResources::NodeResources(const NodeResourcesOptions& options)
    : options_(options), cache_budget_(options.cache_bytes), dirty_budget_(options.dirty_bytes) {
  if (options.commit_threads > 0 && options.flush_threads > 0) {
    commit_pool_ = std::make_unique<WorkerPool>(options.commit_threads, "voxdb-commit");
    flush_pool_ = std::make_unique<WorkerPool>(options.flush_threads, "voxdb-flush");
  }
}

NodeResources::~NodeResources() {
  MutexLock l(&registry_mu_);
  VOXDB_CHECK(caches_.empty() && flushers_.empty());
}

void NodeResources::set_dirty_budget(size_t bytes) {
  dirty_budget_.store(bytes, std::memory_order_relaxed);
  WakeWriters();
}

size_t NodeResources::caches() const {
  MutexLock l(&registry_mu_);
  return caches_.size();
}

size_t NodeResources::flushers() const {
  MutexLock l(&registry_mu_);
  return flushers_.size();
}

// --- The cache budget ---------------------------------------------------------

void NodeResources::RegisterCache(ChunkCache* cache) {
  MutexLock l(&registry_mu_);
  caches_.push_back(cache);
}

void NodeResources::UnregisterCache(ChunkCache* cache) {
  MutexLock l(&registry_mu_);
  std::erase(caches_, cache);
}

void NodeResources::MakeRoom(ChunkCache* self, size_t headroom) {
  const int64_t budget = static_cast<int64_t>(cache_budget()) - static_cast<int64_t>(headroom);
  if (cache_bytes() <= budget) return;
  // Held throughout: no cache leaves while we evict from it.
  MutexLock l(&registry_mu_);
  const int64_t now = SteadyMicros();
  const int64_t idle_us =
      std::chrono::duration_cast<std::chrono::microseconds>(options_.idle_after).count();
  auto idle = [&](const ChunkCache* c) {
    return c != self && now - c->last_active_us() >= idle_us;
  };
  int64_t active = 0;
  for (const ChunkCache* c : caches_) active += idle(c) ? 0 : 1;
  const int64_t fair = std::max<int64_t>(budget, 0) / std::max<int64_t>(active, 1);
  int64_t over = cache_bytes() - budget;
  // The cache that needs the room gives up its own clean chunks while it
  // holds more than its share: a hot partition does not crowd out the
  // others that are in use too.
  if (over > 0 && self->cache_bytes() > fair) {
    over -= static_cast<int64_t>(
        self->Evict(static_cast<size_t>(std::min(over, self->cache_bytes() - fair))));
  }
  if (over <= 0) return;
  // Then the others, those furthest above their share first; an idle
  // cache's share is nothing, so a cold partition does not keep its memory
  // while a hot one thrashes.
  std::vector<std::pair<int64_t, ChunkCache*>> victims;
  for (ChunkCache* c : caches_) {
    if (c == self || c->cache_bytes() - c->dirty_bytes() <= 0) continue;
    victims.emplace_back(c->cache_bytes() - (idle(c) ? 0 : fair), c);
  }
  std::sort(victims.begin(), victims.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [excess, c] : victims) {
    if (over <= 0 || excess <= 0) break;
    const size_t freed = c->Evict(static_cast<size_t>(std::min(over, excess)));
    cross_evicted_bytes_ += freed;
    over -= static_cast<int64_t>(freed);
  }
  // Everyone is within their share: whoever has clean chunks left.
  for (const auto& [excess, c] : victims) {
    if (over <= 0) break;
    const size_t freed = c->Evict(static_cast<size_t>(over));
    cross_evicted_bytes_ += freed;
    over -= static_cast<int64_t>(freed);
  }
  if (over > 0) self->Evict(static_cast<size_t>(over));
}

// --- The dirty budget -----------------------------------------------------------

void NodeResources::RegisterFlusher(Flusher* flusher) {
  MutexLock l(&registry_mu_);
  flushers_.push_back(flusher);
}

void NodeResources::UnregisterFlusher(Flusher* flusher) {
  MutexLock l(&registry_mu_);
  std::erase(flushers_, flusher);
}

bool NodeResources::FitsLocked(int64_t want) const {
  const int64_t budget = static_cast<int64_t>(dirty_budget());
  const int64_t used = dirty_bytes() + reserved_;
  // A write larger than the whole budget goes alone.
  return used + want <= budget || (used <= 0 && reserved_ == 0);
}

bool NodeResources::ReserveDirty(int64_t want, std::chrono::steady_clock::time_point deadline,
                                 std::atomic<uint64_t>* waits) {
  MutexLock l(&room_mu_);
  if (!FitsLocked(want)) {
    ++*waits;
    ++waiting_writers_;
    while (!FitsLocked(want)) {
      if (std::chrono::steady_clock::now() >= deadline) {
        --waiting_writers_;
        return false;
      }
      // The room may be held by any partition: every flusher with dirty
      // chunks writes its own back while writers wait.
      WakeFlushers();
      room_cv_.WaitFor(std::chrono::milliseconds(5));
    }
    --waiting_writers_;
  }
  reserved_ += want;
  return true;
}

void NodeResources::ReleaseDirty(int64_t want) {
  {
    MutexLock l(&room_mu_);
    reserved_ -= want;
  }
  room_cv_.SignalAll();
  if (dirty_bytes() > high_water()) WakeFlushers();
}

void NodeResources::WakeFlushers() {
  // Hundreds of flushers: not for every write.
  const int64_t now = SteadyMicros();
  int64_t last = last_flusher_wake_us_.load(std::memory_order_relaxed);
  if (now - last < 1000 ||
      !last_flusher_wake_us_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    return;
  }
  MutexLock l(&registry_mu_);
  // Those with nothing dirty have nothing to write back.
  for (Flusher* f : flushers_) {
    if (f->HoldsDirty()) f->Wake();
  }
}

}  // namespace voxdb::engine
