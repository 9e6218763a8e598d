#include "engine/group_committer.h"

#include <algorithm>

#include "engine/journal.h"
#include "engine/node_resources.h"

namespace voxdb::engine {

GroupCommitter::GroupCommitter(const DatabaseOptions& options, ChunkStore* store, FailFn fail,
                               CheckFn check)
    : options_(options),
      store_(store),
      fail_(std::move(fail)),
      check_(std::move(check)),
      pool_(options.node ? options.node->commit_pool() : nullptr) {}

void GroupCommitter::Start(uint64_t last_seq) {
  committed_seq_ = last_seq;
  durable_seq_ = last_seq;
  feed_ = std::make_unique<ChangeFeed>(options_.changes, last_seq);
  if (pool_) return;  // tasks are posted when there is work
  committer_ = std::thread([this] { CommitterLoop(); });
  acker_ = std::thread([this] { AckerLoop(); });
}

void GroupCommitter::Stop() {
  // No gathering timer calls us from here on: Stop ends the gathering.
  if (pool_) token_->Kill();
  {
    MutexLock l(&commit_mu_);
    stop_committer_ = true;
    if (pool_) {
      // The last CommitTask commits what is queued, then unschedules.
      KickLocked(/*now=*/true);
      while (commit_scheduled_) committed_cv_.Wait();
    }
  }
  if (!pool_) {
    commit_cv_.SignalAll();
    committer_.join();
  }
  {
    MutexLock l(&durable_mu_);
    committer_stopped_ = true;
  }
  durable_cv_.SignalAll();
  {
    MutexLock l(&ack_mu_);
    stop_acker_ = true;
    if (pool_) {
      while (ack_scheduled_ || !acks_.empty()) ack_cv_.Wait();
    }
  }
  if (!pool_) {
    ack_cv_.SignalAll();
    acker_.join();
  }
}

void GroupCommitter::Enqueue(Pending pending) {
  {
    MutexLock l(&commit_mu_);
    pending_.push_back(std::move(pending));
    KickLocked(/*now=*/false);
  }
  commit_cv_.Signal();
}

void GroupCommitter::KickLocked(bool now) {
  if (!pool_) return;
  if (!commit_scheduled_) {
    commit_scheduled_ = true;
    pool_->Post([this] { CommitTask(); });
  } else if (now && gathering_) {
    // The pending timer finds its generation gone and does nothing.
    gathering_ = false;
    ++gather_gen_;
    pool_->Post([this] { CommitTask(); });
  }
}

void GroupCommitter::CommitTask() {
  const bool async = options_.durability == Durability::kAsync;
  std::vector<Pending> batch;
  {
    MutexLock l(&commit_mu_);
    if (pending_.empty()) {
      if (unacked_.empty()) {
        commit_now_ = false;
        commit_scheduled_ = false;
        committed_cv_.SignalAll();
        return;
      }
      // Idle: make the last commit durable now rather than wait (below,
      // without the lock).
    } else {
      if (async && !stop_committer_ && !commit_now_) {
        // Gather for one interval (a timer: the thread serves others).
        const auto now = std::chrono::steady_clock::now();
        if (!gather_deadline_) gather_deadline_ = now + options_.commit_interval;
        if (now < *gather_deadline_) {
          gathering_ = true;
          const uint64_t gen = ++gather_gen_;
          pool_->PostAt(*gather_deadline_, token_, [this, gen] {
            MutexLock timer_lock(&commit_mu_);
            if (!gathering_ || gather_gen_ != gen) return;
            gathering_ = false;
            pool_->Post([this] { CommitTask(); });
          });
          return;
        }
      }
      gather_deadline_.reset();
      commit_now_ = false;
      batch.swap(pending_);
      inflight_oldest_us_ = batch.front().enqueued_us;
    }
  }
  if (batch.empty()) {
    SyncUnacked(&unacked_);
  } else {
    CommitBatch(std::move(batch), &unacked_);
  }
  // Again, behind the other databases' tasks.
  pool_->Post([this] { CommitTask(); });
}

void GroupCommitter::CommitterLoop() {
  const bool async = options_.durability == Durability::kAsync;
  // With lazy meta sync, a commit is durable once the next commit (or a
  // Sync) returns: its acknowledgements wait in `unacked` until then.
  std::vector<Pending> unacked;
  for (;;) {
    std::vector<Pending> batch;
    {
      MutexLock l(&commit_mu_);
      if (unacked.empty()) {
        while (!stop_committer_ && !commit_now_ && pending_.empty()) commit_cv_.Wait();
      }
      if (pending_.empty()) {
        if (unacked.empty()) {
          commit_now_ = false;
          committed_cv_.SignalAll();
          if (stop_committer_) return;
          continue;
        }
        // Idle: make the last commit durable now rather than wait (below,
        // without the lock).
      } else {
        if (async && !stop_committer_ && !commit_now_) {
          // Gather for one interval: in async mode nobody waits for the commit.
          const auto deadline = std::chrono::steady_clock::now() + options_.commit_interval;
          while (!stop_committer_ && !commit_now_) {
            if (!commit_cv_.WaitUntil(deadline)) break;
          }
        }
        commit_now_ = false;
        batch.swap(pending_);
        inflight_oldest_us_ = batch.front().enqueued_us;
      }
    }
    if (batch.empty()) {
      SyncUnacked(&unacked);
      continue;
    }
    CommitBatch(std::move(batch), &unacked);
  }
}

void GroupCommitter::CommitBatch(std::vector<Pending> batch, std::vector<Pending>* unacked_out) {
  const bool async = options_.durability == Durability::kAsync;
  std::vector<Pending>& unacked = *unacked_out;
  {
    // The fencing check, immediately before the commit: a refused batch
    // fails as a failed commit does (nothing was written), so that its
    // writes and those queued behind it are rolled back.
    if (Status refused = check_ ? check_(batch.front().seq) : absl::OkStatus(); !refused.ok()) {
      if (!unacked.empty()) SyncUnacked(&unacked);
      fail_(refused, std::move(batch), /*written=*/false);
      MutexLock l(&commit_mu_);
      inflight_oldest_us_ = 0;
      return;
    }
    WriteBatch wb;
    uint64_t bytes = 0;
    for (Pending& p : batch) {
      bytes += p.record.size();
      wb.Put(Table::kJournal, JournalKey(p.seq), std::move(p.record));
    }
    const auto commit_start = std::chrono::steady_clock::now();
    Status s = store_->Write(wb);
    const bool written = s.ok();
    if (s.ok() && async) s = store_->Sync();  // durable within the interval
    journal_records_ += batch.size();
    journal_bytes_ += bytes;
    ++journal_commits_;
    if (options_.on_commit) {
      options_.on_commit(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - commit_start).count(),
          batch.size());
    }
    const uint64_t last = batch.back().seq;
    if (!s.ok()) {
      // The batch failed: its writes (and every one queued behind it, which
      // were applied on top of it) are rolled back and answered with the
      // error. An earlier commit still waiting for its meta sync is synced
      // first: it succeeded.
      // (unacked is empty in kAsync, so here the batch's write failed.)
      if (!unacked.empty()) SyncUnacked(&unacked);
      fail_(s, std::move(batch), written);
      MutexLock l(&commit_mu_);
      inflight_oldest_us_ = 0;
      return;
    }
    // This commit's data sync also flushed the previous commit's meta page.
    if (!unacked.empty()) Acknowledge(std::move(unacked));
    unacked.clear();
    if (!options_.store.lazy_meta_sync || async) {
      // Published before committed_seq_ moves: whoever waits for the commit
      // (Flush) then finds the change in the feed.
      Acknowledge(std::move(batch));
    } else {
      unacked = std::move(batch);
    }
    {
      MutexLock l(&commit_mu_);
      committed_seq_ = std::max(committed_seq_.load(), last);
      inflight_oldest_us_ = 0;
    }
    committed_cv_.SignalAll();
  }
}

void GroupCommitter::SyncUnacked(std::vector<Pending>* unacked) {
  if (Status s = store_->Sync(); s.ok()) {
    Acknowledge(std::move(*unacked));
  } else {
    fail_(s, std::move(*unacked), /*written=*/true);
  }
  unacked->clear();
}

void GroupCommitter::Acknowledge(std::vector<Pending> batch) {
  if (batch.empty()) return;
  // Durable now: published, then visible to kSync readers, then answered.
  Publish(batch);
  {
    MutexLock l(&durable_mu_);
    durable_seq_.store(std::max(durable_seq_.load(), batch.back().seq), std::memory_order_release);
  }
  durable_cv_.SignalAll();
  if (std::none_of(batch.begin(), batch.end(), [](const Pending& p) { return bool(p.done); })) {
    return;
  }
  Answer(absl::OkStatus(), std::move(batch));
}

void GroupCommitter::Publish(const std::vector<Pending>& batch) {
  std::vector<std::shared_ptr<const ChangeRecord>> records;
  records.reserve(batch.size());
  const auto now = std::chrono::steady_clock::now();
  for (const Pending& p : batch) {
    if (!p.change) continue;
    p.change->durable = now;  // not shared before this
    records.push_back(p.change);
  }
  feed_->Publish(std::move(records));
}

void GroupCommitter::Answer(Status status, std::vector<Pending> batch) {
  {
    MutexLock l(&ack_mu_);
    acks_.emplace_back(std::move(status), std::move(batch));
    if (pool_ && !ack_scheduled_) {
      ack_scheduled_ = true;
      pool_->Post([this] { AckTask(); });
    }
  }
  ack_cv_.Signal();
}

void GroupCommitter::AckTask() {
  std::vector<std::pair<Status, std::vector<Pending>>> work;
  {
    MutexLock l(&ack_mu_);
    if (acks_.empty()) {
      ack_scheduled_ = false;
      ack_cv_.SignalAll();  // Stop waits for the last answers
      return;
    }
    work.swap(acks_);
  }
  for (auto& [status, batch] : work) {
    for (Pending& p : batch) {
      if (p.done) p.done({status, status.ok() ? p.seq : 0});
    }
  }
  pool_->Post([this] { AckTask(); });
}

void GroupCommitter::AckerLoop() {
  for (;;) {
    std::vector<std::pair<Status, std::vector<Pending>>> work;
    {
      MutexLock l(&ack_mu_);
      while (!stop_acker_ && acks_.empty()) ack_cv_.Wait();
      if (acks_.empty()) return;  // stopping, nothing left
      work.swap(acks_);
    }
    for (auto& [status, batch] : work) {
      for (Pending& p : batch) {
        if (p.done) p.done({status, status.ok() ? p.seq : 0});
      }
    }
  }
}

bool GroupCommitter::IsDurable(uint64_t seq, uint64_t epoch) const {
  // durable_seq_ before reset_epoch_: a rollback bumps the epoch first.
  return durable_seq_.load(std::memory_order_acquire) >= seq &&
         reset_epoch_.load(std::memory_order_acquire) == epoch;
}

bool GroupCommitter::WaitDurable(uint64_t seq, uint64_t epoch, bool any_mode) {
  if (!any_mode && options_.durability != Durability::kSync) return true;
  if (durable_seq_.load(std::memory_order_acquire) >= seq) {
    return reset_epoch_.load(std::memory_order_acquire) == epoch;
  }
  {
    // The committer syncs as soon as it has nothing else to do; ask it to
    // commit now in case it is gathering.
    MutexLock l(&commit_mu_);
    commit_now_ = true;
    KickLocked(/*now=*/true);
  }
  commit_cv_.SignalAll();
  MutexLock l(&durable_mu_);
  while (durable_seq_.load() < seq && reset_epoch_.load() == epoch && !committer_stopped_) {
    durable_cv_.Wait();
  }
  // (Once the committer has stopped nothing more becomes durable: reading
  // again would find the same.)
  return (durable_seq_.load() >= seq || committer_stopped_) && reset_epoch_.load() == epoch;
}

int64_t GroupCommitter::OldestUncommittedLocked() const {
  int64_t t = inflight_oldest_us_;
  if (!pending_.empty() && (t == 0 || pending_.front().enqueued_us < t)) {
    t = pending_.front().enqueued_us;
  }
  return t;
}

bool GroupCommitter::WaitForLag(int64_t bound_us, std::chrono::steady_clock::time_point deadline) {
  MutexLock l(&commit_mu_);
  for (bool counted = false;; counted = true) {
    const int64_t t = OldestUncommittedLocked();
    if (t == 0 || SteadyMicros() - t <= bound_us || stop_committer_) return true;
    if (!counted) ++journal_waits_;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    commit_now_ = true;
    KickLocked(/*now=*/true);
    commit_cv_.SignalAll();
    committed_cv_.WaitFor(std::chrono::milliseconds(2));
  }
}

std::vector<GroupCommitter::Pending> GroupCommitter::TakeQueued() {
  std::vector<Pending> queued;
  MutexLock l(&commit_mu_);
  queued.swap(pending_);
  return queued;
}

void GroupCommitter::MarkRolledBack(uint64_t resolved) {
  ++rollbacks_;
  reset_epoch_.fetch_add(1, std::memory_order_acq_rel);
  {
    MutexLock l(&durable_mu_);
    durable_seq_.store(std::max(durable_seq_.load(), resolved), std::memory_order_release);
  }
  {
    MutexLock l(&commit_mu_);
    committed_seq_ = std::max(committed_seq_.load(), resolved);
  }
}

void GroupCommitter::WakeAfterRollback() {
  durable_cv_.SignalAll();
  committed_cv_.SignalAll();
}

}  // namespace voxdb::engine
