// Subscriptions (protocol/PROTOCOL.md, "Subscriptions"): one dispatcher
// thread follows the database's change feed (engine/change_feed.h) and
// pushes an EVENTS frame to each subscription with the changes in its
// region, in commit order, each change once.
//
// Every subscription has a cursor: the last sequence number it was sent.
// The dispatcher wakes when the feed publishes (or a connection drains),
// reads the records after each cursor, keeps those in the region, and
// queues them on the connection as one frame. A connection with bytes not
// yet written (PushTarget::PushBacklog) gets nothing more until they are
// written, and the changes of the meantime gather into its next frame: a
// slow subscriber holds about one frame (max_frame_bytes) in the server,
// plus its share of the feed, which is bounded for everyone. A connection
// wakes the dispatcher once its backlog is below half of
// `push_window_bytes`. When the feed
// has dropped changes a subscription was not sent yet, the subscriber is
// cut off (its connection closed); it resumes from its last sequence number
// if that is still retained, else gets RESYNC and reads the region anew.
//
// Thread-safety: thread-safe. PushTarget methods are called from the
// dispatcher thread.
#ifndef VOXDB_DAEMON_SUBSCRIPTIONS_H_
#define VOXDB_DAEMON_SUBSCRIPTIONS_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "engine/database.h"
#include "index/s2_index.h"
#include "protocol/messages.h"

namespace voxdb::daemon {

class Metrics;

// The connection side of a subscription (daemon/connection.h).
class PushTarget {
 public:
  virtual ~PushTarget() = default;
  // Queues a whole pushed frame (header included) for the socket.
  virtual void Push(std::vector<uint8_t> frame) = 0;
  // Pushed bytes queued and not yet written to the socket.
  virtual uint64_t PushBacklog() const = 0;
  // Asks for SubscriptionHub::Wake() once the backlog has drained.
  virtual void WakeWhenDrained() = 0;
  // The subscriber fell behind what the feed retains: close the
  // connection (`why` is for the log).
  virtual void CutOff(const std::string& why) = 0;
};

struct SubscriptionOptions {
  size_t max_per_connection = 16;
  uint64_t push_window_bytes = uint64_t{8} << 20;
  size_t max_frame_bytes = size_t{1} << 20;  // an EVENTS frame's payload, about
};

struct SubscriptionStats {
  uint64_t subscribers = 0;    // subscriptions open
  uint64_t events_pushed = 0;  // events queued on connections since start
  uint64_t frames_pushed = 0;  // EVENTS frames
  uint64_t cut_off = 0;        // subscribers closed for falling behind the feed
  uint64_t lag = 0;            // newest seq minus the furthest-behind cursor
};

class SubscriptionHub {
 public:
  // `metrics` (may be null) is told each frame's delay. `db` null: a node
  // of several partitions, where SUBSCRIBE is not served yet (daemon/
  // dispatch.h, Spans): the hub then runs no thread and counts nothing.
  SubscriptionHub(engine::Database* db, const SubscriptionOptions& options, Metrics* metrics);
  ~SubscriptionHub();  // Stop()s
  // Stops the dispatcher (it reads the database): before the database goes.
  void Stop();
  // Serves the partition `db` from now on (nullptr: none), after a split or
  // move (Server::ChangeLayout): waits out the dispatcher's pass, cuts off
  // every subscriber left (its connection closes: the client subscribes
  // again, resuming with from_seq or told RESYNC) and starts the
  // dispatcher if it was not running.
  void Rebind(engine::Database* db);

  // Adds subscription `id` of `target` (an id the caller keeps unique per
  // target). REQUIRES: index::CheckRegionAndBand(region, band) is OK.
  // Returns the sequence number after which its events follow: from_seq
  // when given, else the newest published. OUT_OF_RANGE (RESYNC on the
  // wire) when from_seq is older than the feed retains, and only then;
  // INVALID for a from_seq past the newest change or too many
  // subscriptions on `target`.
  StatusOr<uint64_t> Add(const std::shared_ptr<PushTarget>& target, uint64_t id,
                         const index::Region& region,
                         const std::optional<index::AltitudeBand>& band,
                         protocol::EventDetail detail, std::optional<uint64_t> from_seq);
  // False if there was no such subscription.
  bool Remove(const PushTarget* target, uint64_t id);
  // Every subscription of `target` (its connection closed).
  void RemoveAll(const PushTarget* target);
  // Look at every subscription again (a connection drained).
  void Wake();

  SubscriptionStats stats() const;

 private:
  struct Subscription;
  struct PassChunk;
  void Run();
  // Reads the feed once for every subscription ready for more and serves
  // them; true if some are owed more.
  bool Pass();
  // Pushes what `sub` is owed of `records`, up to one frame; true if it is
  // owed more.
  bool Serve(Subscription& sub, PushTarget& target,
             const std::vector<std::shared_ptr<const engine::ChangeRecord>>& records,
             const std::function<const std::vector<PassChunk>&(size_t)>& chunks_of);

  // Held through each dispatcher pass, stats() and Add(), and by Rebind.
  mutable std::mutex db_mu_;
  engine::Database* db_;  // GUARDED_BY(db_mu_)
  std::mutex thread_mu_;  // Stop's join against Rebind's start
  const SubscriptionOptions options_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  std::map<std::pair<const PushTarget*, uint64_t>, std::shared_ptr<Subscription>> subs_;  // mu_
  // The dispatcher's wake-up, shared with the feed's listener (which may
  // outlive the hub).
  struct Signal {
    std::mutex mu;
    std::condition_variable cv;
    bool wake = false;  // GUARDED_BY(mu)
    bool stop = false;  // GUARDED_BY(mu)
    void Notify();
  };
  std::shared_ptr<Signal> signal_ = std::make_shared<Signal>();
  std::atomic<uint64_t> events_{0}, frames_{0}, cut_off_{0};
  std::thread thread_;
};

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_SUBSCRIPTIONS_H_
