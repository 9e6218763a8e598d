// Subscriptions (protocol/PROTOCOL.md, "Subscriptions"): one dispatcher
// thread follows the change feed (engine/change_feed.h) of every partition
// of the node and pushes an EVENTS frame to each subscription with the
// changes in its region, in commit order within each partition, each
// change once.
//
// Every subscription has a cursor per partition its region meets: the last
// sequence number of that partition it was sent (each partition numbers
// its own writes). The dispatcher wakes when a feed publishes (or a
// connection drains), reads the records after each cursor, keeps those in
// the region, and queues them on the connection as one frame; the events of
// different partitions interleave in any order. When a split or move
// replaces a partition a subscription follows, the subscription is cut off
// (its connection closed) and resumes with per-range points from the new
// partitions, whose sequence numbers continue the replaced one's. A connection with bytes not
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
#include "engine/node.h"
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
  // The most, over subscriptions and their partitions, of the partition's
  // newest seq minus the subscription's cursor in it.
  uint64_t lag = 0;
};

// Where a subscription starts: after `seq` (one partition), or on a node
// of several partitions after each range's seq.
struct SubscriptionStart {
  uint64_t seq = 0;                        // the highest of `ranges`' on several
  std::vector<protocol::RangeSeq> ranges;  // empty on a node of one partition
};

class SubscriptionHub {
 public:
  // `metrics` (may be null) is told each frame's delay.
  SubscriptionHub(engine::Node* node, const SubscriptionOptions& options, Metrics* metrics);
  // Follows one Database, as a node of that one partition (tests).
  SubscriptionHub(engine::Database* db, const SubscriptionOptions& options, Metrics* metrics);
  ~SubscriptionHub();  // Stop()s
  // Stops the dispatcher and lets go of the partitions (it reads them):
  // before the node goes.
  void Stop();

  // Adds subscription `id` of `target` (an id the caller keeps unique per
  // target). REQUIRES: index::CheckRegionAndBand(region, band) is OK;
  // at most one of from_seq and from_ranges. Returns where its events
  // follow: per partition the seq of the resume point (from_seq on one
  // partition; on several, that of the range of from_ranges holding the
  // partition's range), else the newest published. OUT_OF_RANGE (RESYNC
  // on the wire) when a resume point is older than its feed retains or no
  // range of from_ranges holds a partition's; INVALID for a point past the
  // newest change, from_seq on a node of several partitions, or too many
  // subscriptions on `target`.
  StatusOr<SubscriptionStart> Add(
      const std::shared_ptr<PushTarget>& target, uint64_t id, const index::Region& region,
      const std::optional<index::AltitudeBand>& band, protocol::EventDetail detail,
      std::optional<uint64_t> from_seq,
      const std::optional<std::vector<protocol::RangeSeq>>& from_ranges);
  // The same without per-range points: where events follow (the highest
  // of the ranges' on several partitions).
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
  struct Cursor;
  struct PassChunk;
  void Run();
  // Listens to the feed of every partition of the node's current layout
  // (new ones after a split or move); returns it.
  std::shared_ptr<const engine::Node::Layout> Follow();
  // Reads the feed once for every subscription ready for more and serves
  // them; true if some are owed more.
  bool Pass();
  // Cuts `sub` off (its connection closed), for `why`.
  void CutOff(Subscription& sub, PushTarget& target, const std::string& why);
  // Pushes what `cursor` of `sub` is owed of `records` (of its partition),
  // up to one frame; true if it is owed more.
  bool Serve(Subscription& sub, Cursor& cursor, PushTarget& target,
             const std::vector<std::shared_ptr<const engine::ChangeRecord>>& records,
             const std::function<const std::vector<PassChunk>&(size_t)>& chunks_of);

  // The partitions now (a node's layout(), or one Database's), and their
  // frame.
  std::function<std::shared_ptr<const engine::Node::Layout>()> layout_of_;
  const engine::WorldFrame* frame_;
  const SubscriptionOptions options_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  std::map<std::pair<const PushTarget*, uint64_t>, std::shared_ptr<Subscription>> subs_;  // mu_
  // The layout whose partitions' feeds the hub listens to (mu_). Holding
  // it keeps them open until the hub looks at the next one, so no new
  // partition shares an address with one of it.
  std::shared_ptr<const engine::Node::Layout> followed_;
  bool stopped_ = false;  // mu_
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
