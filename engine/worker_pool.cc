#include "engine/worker_pool.h"

#include <pthread.h>

#include <algorithm>

namespace voxdb::engine {

WorkerPool::WorkerPool(int threads, std::string name) : name_(std::move(name)) {
  for (int i = 0; i < std::max(1, threads); ++i) {
    threads_.emplace_back([this] { Run(); });
    // Linux limits thread names to 15 characters.
    pthread_setname_np(threads_.back().native_handle(), name_.substr(0, 15).c_str());
  }
}

WorkerPool::~WorkerPool() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  for (std::thread& t : threads_) t.join();
}

void WorkerPool::Post(std::function<void()> task) {
  {
    MutexLock l(&mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.Signal();
}

void WorkerPool::PostAt(std::chrono::steady_clock::time_point when,
                        std::shared_ptr<PoolToken> token, std::function<void()> fn) {
  {
    MutexLock l(&mu_);
    timers_.emplace(when, std::make_pair(std::move(token), std::move(fn)));
  }
  // A worker may be sleeping until a later timer.
  cv_.SignalAll();
}

void WorkerPool::Run() {
  for (;;) {
    std::function<void()> task;
    {
      MutexLock l(&mu_);
      for (;;) {
        const auto now = std::chrono::steady_clock::now();
        // Due timers become tasks, in time order.
        while (!timers_.empty() && timers_.begin()->first <= now) {
          auto node = timers_.extract(timers_.begin());
          tasks_.push_back(
              [timer = std::move(node.mapped())] { timer.first->RunIfAlive(timer.second); });
        }
        if (!tasks_.empty()) break;
        if (stop_) return;
        if (timers_.empty()) {
          cv_.Wait();
        } else {
          cv_.WaitUntil(timers_.begin()->first);
        }
      }
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace voxdb::engine
