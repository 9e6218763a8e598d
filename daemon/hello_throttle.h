// Failed HELLOs by peer address (PROTOCOL.md, "Authentication"): each
// failure from an address slows the next one's reply, so that guessing a
// token is slow, without holding a thread.
//
// The n-th failure in a row from an address (a failure more than
// kQuietPeriod after the last starts again at 1) has its reply delayed by 0
// for the first, then kFirstDelay doubling up to kMaxDelay. While
// kMaxPending delayed failure replies to an address are pending, its HELLOs
// are refused (BUSY) without their token being checked: guessing on many
// connections at once gains nothing, and a client that got its reply at
// once learns nothing from its timing. A good HELLO is never delayed, and
// does not reset the count (a holder of a read token could otherwise reset
// it between guesses of the admin token). At most kMaxAddresses addresses
// are kept, the least recently failed forgotten first.
//
// Thread-safety: any thread.
#ifndef VOXDB_DAEMON_HELLO_THROTTLE_H_
#define VOXDB_DAEMON_HELLO_THROTTLE_H_

#include <algorithm>
#include <chrono>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

namespace voxdb::daemon {

class HelloThrottle {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kFirstDelay = std::chrono::milliseconds(100);
  static constexpr auto kMaxDelay = std::chrono::milliseconds(1000);
  static constexpr auto kQuietPeriod = std::chrono::seconds(60);
  static constexpr int kMaxPending = 4;
  static constexpr size_t kMaxAddresses = 4096;

  // Whether `address` has kMaxPending delayed failure replies pending.
  bool Busy(const std::string& address) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = index_.find(address);
    return it != index_.end() && it->second->pending >= kMaxPending;
  }

  // A HELLO from `address` failed: the delay before its reply. A nonzero
  // delay is pending until Answered().
  std::chrono::milliseconds Failed(const std::string& address) {
    const Clock::time_point now = Clock::now();
    std::lock_guard<std::mutex> l(mu_);
    auto it = index_.find(address);
    if (it == index_.end()) {
      if (index_.size() >= kMaxAddresses) {
        index_.erase(lru_.back().address);
        lru_.pop_back();
      }
      lru_.push_front(Entry{address, 0, now, 0});
      it = index_.emplace(address, lru_.begin()).first;
    } else {
      lru_.splice(lru_.begin(), lru_, it->second);  // the most recent first
    }
    Entry& e = *it->second;
    if (now - e.last > kQuietPeriod) e.failures = 0;
    e.last = now;
    ++e.failures;
    if (e.failures == 1) return std::chrono::milliseconds(0);
    const int doublings = std::min(e.failures - 2, 16);
    const auto delay =
        std::min<std::chrono::milliseconds>(kMaxDelay, kFirstDelay * (1 << doublings));
    ++e.pending;
    return delay;
  }

  // A delayed failure reply to `address` was queued (or its connection
  // closed).
  void Answered(const std::string& address) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = index_.find(address);
    if (it != index_.end() && it->second->pending > 0) --it->second->pending;
  }

 private:
  struct Entry {
    std::string address;
    int failures;
    Clock::time_point last;  // of the last failure
    int pending;             // delayed failure replies not sent yet
  };
  std::mutex mu_;
  std::list<Entry> lru_;                                               // GUARDED_BY(mu_)
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;  // GUARDED_BY(mu_)
};

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_HELLO_THROTTLE_H_
