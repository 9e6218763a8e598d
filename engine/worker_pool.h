// WorkerPool: a fixed number of threads running posted tasks, first come
// first served, and timers. The Databases of a node (NodeResources) run
// their group committers and flushers on such pools instead of threads of
// their own: each component posts a task when it has work and keeps a
// "scheduled" flag of its own, so that at most one task of a component runs
// at a time.
//
// A timer belongs to a PoolToken: it runs its function under the token's
// lock, and only while the token is alive. A component kills its token
// when it stops (PoolToken::Kill), after which none of its timers calls it.
//
// Locks: mu_ (the queue and the timers) is a leaf. A timer's function runs
// under its token's lock and may take the component's locks and post.
//
// Thread-safety: thread-safe. Tasks must not block on other tasks of the
// same pool (the pool may be too small to run both).
#ifndef VOXDB_ENGINE_WORKER_POOL_H_
#define VOXDB_ENGINE_WORKER_POOL_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "engine/mutex.h"

namespace voxdb::engine {

// The life of a component that sets timers.
class PoolToken {
 public:
  // Runs fn() under the token's lock if it is alive.
  void RunIfAlive(const std::function<void()>& fn) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock l(&mu_);
    if (alive_) fn();
  }
  // From now on no timer of this token runs; waits for one running.
  void Kill() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock l(&mu_);
    alive_ = false;
  }

 private:
  Mutex mu_;
  bool alive_ ABSL_GUARDED_BY(mu_) = true;
};

class WorkerPool {
 public:
  // Starts `threads` threads (at least one), named `name` for debuggers.
  WorkerPool(int threads, std::string name);
  // Runs the tasks already posted, then joins the threads. Timers not yet
  // due are dropped.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Post(std::function<void()> task) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs `fn` (under the token's lock, if it is still alive) at `when`.
  void PostAt(std::chrono::steady_clock::time_point when, std::shared_ptr<PoolToken> token,
              std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_);
  int threads() const { return static_cast<int>(threads_.size()); }

 private:
  void Run() ABSL_LOCKS_EXCLUDED(mu_);

  const std::string name_;
  Mutex mu_;
  CondVar cv_{&mu_};
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  std::multimap<std::chrono::steady_clock::time_point,
                std::pair<std::shared_ptr<PoolToken>, std::function<void()>>>
      timers_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_WORKER_POOL_H_
