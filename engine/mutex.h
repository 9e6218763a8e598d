// Mutex, MutexLock and CondVar: std::mutex and std::condition_variable with
// Abseil's thread-safety annotations, so that clang's -Wthread-safety checks
// the locking rules written as ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED
// (leveldb's port::Mutex is the model).
//
// Why not absl::Mutex: Debian's Abseil is not built with ThreadSanitizer, so
// TSan would not see absl::Mutex's synchronisation. These wrappers are
// header-only over the standard library, which TSan understands.
//
// Waits take no predicate (the analysis cannot see into a lambda); write the
// loop instead:
//
//   MutexLock l(&mu_);
//   while (!ready_) ready_cv_.Wait();
//
// Thread-safety: a Mutex is a lock; a CondVar is used with its own Mutex held.
#ifndef VOXDB_ENGINE_MUTEX_H_
#define VOXDB_ENGINE_MUTEX_H_

#include <absl/base/thread_annotations.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace voxdb {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  // Tells the analysis that the caller holds the lock (no run-time check).
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds `mu` for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A condition variable bound to one Mutex, which every call needs held.
// The waits are not annotated ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_): the
// analysis cannot tell that a CondVar's mu_ is the Mutex its owner names,
// so it would reject every correct call (leveldb's port::CondVar is
// unannotated for the same reason).
class CondVar {
 public:
  explicit CondVar(Mutex* mu) : mu_(mu) {}
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Releases the mutex, sleeps until signalled (or spuriously), relocks.
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // As Wait, for at most `timeout`. False if the time ran out.
  template <class Rep, class Period>
  bool WaitFor(std::chrono::duration<Rep, Period> timeout) {
    std::unique_lock<std::mutex> lock(mu_->mu_, std::adopt_lock);
    const bool signalled = cv_.wait_for(lock, timeout) == std::cv_status::no_timeout;
    lock.release();
    return signalled;
  }
  // As Wait, until `deadline`. False if the deadline passed.
  template <class Clock, class Duration>
  bool WaitUntil(std::chrono::time_point<Clock, Duration> deadline) {
    std::unique_lock<std::mutex> lock(mu_->mu_, std::adopt_lock);
    const bool signalled = cv_.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();
    return signalled;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  Mutex* const mu_;
  std::condition_variable cv_;
};

}  // namespace voxdb

#endif  // VOXDB_ENGINE_MUTEX_H_
