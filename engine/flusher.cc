#include "engine/flusher.h"

#include <algorithm>
#include <chrono>
#include <string_view>

#include "engine/chunk_cache.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "engine/format.h"
#include "engine/group_committer.h"
#include "engine/journal.h"
#include "engine/node_resources.h"
#include "engine/write_admission.h"

namespace voxdb::engine {
Flusher::Flusher(const DatabaseOptions& options, ChunkStore* store, ChunkCache* cache,
                 const CurrentFills* fills, GroupCommitter* committer, WriteAdmission* admission,
                 Mutex* edit_mu, Mutex* store_write_mu, const std::atomic<uint64_t>* last_seq)
    : options_(options),
      node_(options.node.get()),
      pool_(options.node ? options.node->flush_pool() : nullptr),
      store_(store),
      cache_(cache),
      fills_(fills),
      committer_(committer),
      admission_(admission),
      edit_mu_(edit_mu),
      store_write_mu_(store_write_mu),
      last_seq_(last_seq) {}

void Flusher::Start() {
  if (pool_) {
    MutexLock l(&flush_mu_);
    ArmTickLocked();
  } else {
    thread_ = std::thread([this] { FlusherLoop(); });
  }
  if (node_) node_->RegisterFlusher(this);
}

void Flusher::Stop() {
  // Waits for a WakeFlushers calling us to finish.
  if (node_) node_->UnregisterFlusher(this);
  // No tick timer calls us from here on (it might post a task after the
  // last one has run).
  if (pool_) token_->Kill();
  {
    MutexLock l(&flush_mu_);
    stop_flusher_ = true;
    if (pool_) {
      // The last FlushTask serves the requests still pending, then
      // unschedules.
      KickLocked();
      while (flush_scheduled_) flushed_cv_.Wait();
    }
  }
  if (pool_) return;
  flush_cv_.SignalAll();
  thread_.join();
}

// --- The dirty set ------------------------------------------------------------

void Flusher::NoteDirty(uint64_t code, uint64_t seq) {
  auto [it, inserted] = dirty_.try_emplace(code);
  DirtyInfo& d = it->second;
  if (inserted) {
    d.first_seq = d.last_seq = seq;
    d.since_us = SteadyMicros();
    dirty_order_.insert({seq, code});
    ++dirty_chunks_;
  } else {
    d.last_seq = seq;
    if (d.in_flight && d.pending_first == 0) d.pending_first = seq;
  }
}

void Flusher::AddFill(const Fill& fill) { unpersisted_fills_.push_back(fill); }

std::optional<int64_t> Flusher::OldestDirtySinceUs() const {
  if (dirty_order_.empty()) return std::nullopt;
  int64_t oldest = INT64_MAX;
  for (const auto& [code, d] : dirty_) oldest = std::min(oldest, d.since_us);
  return oldest;
}

void Flusher::Clear() {
  dirty_.clear();
  dirty_order_.clear();
  dirty_chunks_ = 0;
  unpersisted_fills_.clear();
}

// --- Flush requests and the thread ------------------------------------------------

Status Flusher::Flush(uint64_t target) {
  MutexLock l(&flush_mu_);
  const uint64_t generation = ++flush_requested_;
  flush_target_ = std::max(flush_target_, target);
  KickLocked();
  flush_cv_.SignalAll();
  while (flush_served_ < generation) flushed_cv_.Wait();
  return flush_status_;
}

bool Flusher::HoldsDirty() const { return cache_->dirty_bytes() > 0; }

bool Flusher::OverHighWater() const {
  if (node_) return node_->FlushWanted() && cache_->dirty_bytes() > 0;
  const int64_t high_water =
      static_cast<int64_t>(options_.flush_high_water * static_cast<double>(options_.dirty_bytes));
  return cache_->dirty_bytes() > high_water ||
         (admission_->waiting_writers() > 0 && cache_->dirty_bytes() > 0);
}

std::chrono::milliseconds Flusher::Tick() const {
  return std::chrono::milliseconds(
      std::clamp<int64_t>(options_.max_dirty_age.count() / 4, 10, 1000));
}

Status Flusher::FlushDue() {
  Status status;
  bool more = true;
  // Oldest first, until below the high-water mark, or further while
  // writers wait for room.
  while (more && status.ok() && OverHighWater()) {
    status = FlushBatch(UINT64_MAX, INT64_MAX, options_.flush_batch_bytes, &more);
  }
  // Then anything older than the maximum age.
  const int64_t cutoff = SteadyMicros() - options_.max_dirty_age.count() * 1000;
  more = true;
  while (more && status.ok()) {
    status = FlushBatch(UINT64_MAX, cutoff, options_.flush_batch_bytes, &more);
  }
  return status;
}

void Flusher::KickLocked() {
  if (!pool_ || flush_scheduled_) return;
  flush_scheduled_ = true;
  pool_->Post([this] { FlushTask(); });
}

void Flusher::ArmTickLocked() {
  if (tick_armed_ || stop_flusher_) return;
  tick_armed_ = true;
  pool_->PostAt(std::chrono::steady_clock::now() + Tick(), token_, [this] {
    MutexLock l(&flush_mu_);
    tick_armed_ = false;
    tick_due_ = true;
    KickLocked();
  });
}

void Flusher::FlushTask() {
  uint64_t target = 0, generation = 0;
  bool requested = false;
  {
    MutexLock l(&flush_mu_);
    if (flush_requested_ > flush_served_) {
      requested = true;
      generation = flush_requested_;
      target = flush_target_;
    } else if (stop_flusher_ ||
               !(tick_due_ ||
                 (OverHighWater() && std::chrono::steady_clock::now() >= backoff_until_))) {
      // Nothing to do until woken or the next tick.
      flush_scheduled_ = false;
      flushed_cv_.SignalAll();  // Stop waits for the last task
      ArmTickLocked();
      return;
    }
    tick_due_ = false;
  }
  Status status;
  if (requested) {
    // Everything dirty at the time of the request.
    bool more = true;
    while (more && status.ok()) {
      status = FlushBatch(target, INT64_MAX, options_.flush_batch_bytes, &more);
    }
    MutexLock l(&flush_mu_);
    flush_served_ = generation;
    flush_status_ = status;
    flushed_cv_.SignalAll();
  } else if (!(status = FlushDue()).ok()) {
    // Storage full or an I/O error: back off one tick; writers meet
    // back-pressure.
    MutexLock l(&flush_mu_);
    backoff_until_ = std::chrono::steady_clock::now() + Tick();
  }
  // Again, behind the other databases' tasks: it finds out whether there is
  // more to do.
  pool_->Post([this] { FlushTask(); });
}

void Flusher::FlusherLoop() {
  const auto tick = Tick();
  for (;;) {
    uint64_t target = 0, generation = 0;
    bool requested = false;
    {
      MutexLock l(&flush_mu_);
      const auto deadline = std::chrono::steady_clock::now() + tick;
      while (!stop_flusher_ && flush_requested_ <= flush_served_ && !OverHighWater()) {
        if (!flush_cv_.WaitUntil(deadline)) break;
      }
      if (stop_flusher_ && flush_requested_ <= flush_served_) return;
      if (flush_requested_ > flush_served_) {
        requested = true;
        generation = flush_requested_;
        target = flush_target_;
      }
    }
    Status status;
    bool more = true;
    if (requested) {
      // Everything dirty at the time of the request.
      while (more && status.ok()) {
        status = FlushBatch(target, INT64_MAX, options_.flush_batch_bytes, &more);
      }
      MutexLock l(&flush_mu_);
      flush_served_ = generation;
      flush_status_ = status;
      flushed_cv_.SignalAll();
      continue;
    }
    status = FlushDue();
    if (!status.ok()) {
      // Storage full or an I/O error: back off; writers meet back-pressure.
      MutexLock l(&flush_mu_);
      const auto deadline = std::chrono::steady_clock::now() + tick;
      while (!stop_flusher_ && flush_requested_ <= flush_served_) {
        if (!flush_cv_.WaitUntil(deadline)) break;
      }
    }
  }
}

// --- One flush batch ------------------------------------------------------------

Status Flusher::FlushBatch(uint64_t max_first_seq, int64_t dirty_before_us, size_t max_bytes,
                           bool* more) {
  const auto start = std::chrono::steady_clock::now();
  Batch b;
  *more = PickBatch(max_first_seq, dirty_before_us, max_bytes, &b);
  if (!AwaitJournal(&b)) {
    *more = true;
    return absl::OkStatus();
  }
  if (b.items.empty() && b.fills_to_persist.empty() && b.low_water <= b.journal_floor) {
    return absl::OkStatus();
  }
  uint64_t bytes = 0;
  const WriteBatch batch = BuildWriteBatch(b, &bytes);
  Status s;
  if (!WriteAndRetire(b, batch, &s)) {
    *more = true;
    return absl::OkStatus();
  }
  if (s.ok()) {
    ++flushes_;
    flushed_chunks_ += b.items.size();
    flushed_bytes_ += bytes;
    if (options_.on_flush) {
      options_.on_flush(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
          b.items.size(), bytes);
    }
  }
  admission_->WakeWriters();
  cache_->MaybeEvict();
  return s;
}

bool Flusher::PickBatch(uint64_t max_first_seq, int64_t dirty_before_us, size_t max_bytes,
                        Batch* b) {
  bool more = false;
  MutexLock lock(edit_mu_);
  b->epoch = committer_->epoch();
  size_t bytes = 0;
  const uint64_t next_seq = last_seq_->load() + 1;
  b->low_water = std::min(committer_->committed_seq() + 1, next_seq);
  for (const auto& [first_seq, code] : dirty_order_) {
    DirtyInfo& d = dirty_[code];
    const bool eligible = first_seq <= max_first_seq && d.since_us <= dirty_before_us;
    if (!eligible || bytes >= max_bytes) {
      // dirty_order_ is by first_seq: everything from here stays dirty.
      b->low_water = std::min(b->low_water, first_seq);
      more = eligible;
      break;
    }
    Batch::Item& item = b->items.emplace_back();
    item.code = code;
    cache_->TakeForFlush(code, &item.chunk, &item.version, &bytes);
    d.in_flight = true;
    d.snapshot_seq = d.last_seq;
    d.pending_first = 0;
  }
  b->fills = fills_->Get();
  b->last_seq = next_seq - 1;
  b->journal_floor = journal_floor_;
  return more;
}

bool Flusher::AwaitJournal(Batch* b) {
  // The snapshots may include edits whose journal records are not durable
  // yet. Write nothing before they are: a flushed state must never be ahead
  // of the journal (a fill's chunk deletes without the fill, a write box
  // half on disk), nor hold a write whose commit could still fail. Then
  // every fill up to there is durable too. If a failed commit rolled writes
  // back meanwhile, the snapshots may hold them: start again.
  uint64_t included = 0;
  for (const Batch::Item& it : b->items) included = std::max(included, it.version);
  included = std::max(included, b->fills->last_seq());
  if (!committer_->WaitDurable(included, b->epoch, /*any_mode=*/true)) return false;
  MutexLock lock(edit_mu_);
  if (committer_->epoch() != b->epoch) return false;
  for (const Fill& f : unpersisted_fills_) {
    if (f.seq <= included) b->fills_to_persist.push_back(f);
  }
  return true;
}

WriteBatch Flusher::BuildWriteBatch(const Batch& b, uint64_t* bytes) const {
  WriteBatch batch;
  std::vector<FlushedChunk> flushed;  // for the observers
  // The chunks, then at most one operation per chunk and observer, the
  // fills, last_seq and the journal range.
  batch.Reserve(b.items.size() * (1 + options_.observers.size()) + b.fills_to_persist.size() + 2);
  if (!options_.observers.empty()) flushed.reserve(b.items.size());
  const CodecOptions codec{options_.zstd_level};
  const WorldFrame& frame = store_->frame();
  const int64_t now = NowMicros();
  for (const Batch::Item& it : b.items) {
    const ChunkKey key = ChunkKey::FromCode(it.code);
    if (!it.chunk) {
      // A deleted chunk: a marker keeps its version when that is newer than
      // the fills it reads as; otherwise nothing needs storing.
      if (it.version > b.fills->VersionOf(frame, key.coord())) {
        batch.PutChunk(key, EncodeFillsMarker(it.version, now));
      } else {
        batch.DeleteChunk(key);
      }
      if (!options_.observers.empty()) flushed.push_back({key, it.version, false});
      continue;
    }
    Chunk compact = *it.chunk;
    compact.Compact();
    std::vector<uint8_t> rec = EncodeChunk(compact, it.version, now, codec);
    *bytes += rec.size();
    batch.PutChunk(key, std::move(rec));
    if (!options_.observers.empty()) flushed.push_back({key, it.version, true});
  }
  if (!flushed.empty()) {
    for (ChunkObserver* o : options_.observers) {
      WriteBatch observed;  // applied in key order
      o->OnFlush(flushed, &observed);
      batch.AppendSorted(std::move(observed));
    }
  }
  for (const Fill& f : b.fills_to_persist) {
    batch.Put(Table::kFills, JournalKey(f.seq), f.Encode());
  }
  // The newest sequence number the flush covers (database.cc reads it at
  // open).
  std::vector<uint8_t> last(8);
  EncodeFixed64(last.data(), b.last_seq);
  batch.Put(Table::kMeta, AsBytes(kMetaLastSeq), std::move(last));
  // The journal records every flushed state covers, in the same transaction.
  batch.DeleteRange(Table::kJournal, JournalKey(0), JournalKey(b.low_water));
  return batch;
}

bool Flusher::WriteAndRetire(const Batch& b, const WriteBatch& batch, Status* status) {
  // Held until the chunks are marked clean: no rollback in between.
  MutexLock write_lock(store_write_mu_);
  if (committer_->epoch() != b.epoch) return false;
  *status = store_->Write(batch);
  if (status->ok()) flush_generation_.fetch_add(1, std::memory_order_release);
  MutexLock lock(edit_mu_);
  RetireLocked(b, status->ok());
  return true;
}

void Flusher::RetireLocked(const Batch& b, bool written) {
  if (written) {
    for (const Fill& f : b.fills_to_persist) {
      std::erase_if(unpersisted_fills_, [&](const Fill& u) { return u.seq == f.seq; });
    }
  }
  for (const Batch::Item& it : b.items) {
    auto dit = dirty_.find(it.code);
    DirtyInfo& d = dit->second;
    d.in_flight = false;
    if (!written) continue;  // stays dirty; the next flush retries
    dirty_order_.erase({d.first_seq, it.code});
    if (d.last_seq == d.snapshot_seq) {
      dirty_.erase(dit);
      --dirty_chunks_;
      cache_->MarkClean(it.code);
    } else {
      d.first_seq = d.pending_first;
      d.since_us = SteadyMicros();
      d.pending_first = 0;
      dirty_order_.insert({d.first_seq, it.code});
    }
  }
  if (written) journal_floor_ = b.low_water;
}

}  // namespace voxdb::engine
