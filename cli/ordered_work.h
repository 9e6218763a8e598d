// OrderedWork: a few worker threads that run tasks and hand their results
// back in submission order, for the CLI's per-chunk work (Zarr export and
// import: decoding, compressing, chunk files).
//
// Thread-safety: see the class comment.
#ifndef VOXDB_CLI_ORDERED_WORK_H_
#define VOXDB_CLI_ORDERED_WORK_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace voxdb::cli {

// Worker threads for the per-chunk work (decoding, compressing, files), so
// that it runs on every core while the calling thread keeps the Client,
// which only one thread may use, busy. The results come back in the order
// the tasks were submitted: import sends its writes in file order, and both
// directions stop at the first error in that order, as a plain loop would.
// At most `window` tasks are submitted and not yet retired, which bounds
// the memory waiting in results (up to a chunk each).
//
// REQUIRES: Result can be made from an absl::Status (an exception that a
// task throws becomes its INTERNAL error).
//
// Thread-safety: Submit, Retire, pending and full are for the one thread
// that owns the object.
template <typename Result>
class OrderedWork {
 public:
  // REQUIRES: threads >= 1, window >= 1.
  OrderedWork(size_t threads, size_t window) : slots_(window) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  }
  // Tasks not started yet are dropped; those running finish first (they may
  // use whatever the caller declared before this object).
  ~OrderedWork() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    ready_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  OrderedWork(const OrderedWork&) = delete;
  OrderedWork& operator=(const OrderedWork&) = delete;

  size_t pending() const { return submitted_ - retired_; }
  bool full() const { return pending() == slots_.size(); }

  // REQUIRES: !full().
  void Submit(std::function<Result()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      slots_[submitted_ % slots_.size()].task = std::move(task);
      ++submitted_;
    }
    ready_.notify_one();
  }

  // The result of the oldest task not retired yet, once it has run.
  // REQUIRES: pending() > 0.
  Result Retire() {
    std::unique_lock<std::mutex> lock(mu_);
    Slot& slot = slots_[retired_ % slots_.size()];
    done_.wait(lock, [&] { return slot.result.has_value(); });
    Result result = std::move(*slot.result);
    slot.result.reset();
    ++retired_;
    return result;
  }

 private:
  struct Slot {
    std::function<Result()> task;
    std::optional<Result> result;
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      ready_.wait(lock, [&] { return stop_ || started_ < submitted_; });
      if (stop_) return;
      // The slot stays ours until the owner retires it, which waits for the
      // result: Submit only reuses a slot after that.
      Slot& slot = slots_[started_++ % slots_.size()];
      std::function<Result()> task = std::move(slot.task);
      lock.unlock();
      // An exception would end the program from this thread: it becomes
      // the task's error instead.
      std::optional<Result> result;
      try {
        result.emplace(task());
      } catch (const std::exception& e) {
        result.emplace(absl::InternalError(absl::StrCat("unexpected error: ", e.what())));
      }
      lock.lock();
      slot.result.emplace(std::move(*result));
      done_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable ready_;  // a task was submitted, or stop_
  std::condition_variable done_;   // a result was stored
  std::vector<Slot> slots_;        // task seq lives in slots_[seq % size]
  uint64_t submitted_ = 0;         // written by the owner under mu_
  uint64_t retired_ = 0;           // written by the owner under mu_
  uint64_t started_ = 0;           // tasks taken by a worker
  bool stop_ = false;
  std::vector<std::thread> threads_;  // last: started after the rest exists
};

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_ORDERED_WORK_H_
