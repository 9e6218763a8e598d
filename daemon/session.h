// What one connection holds on the server's side beyond its transport: the
// snapshots it opened, the subscriptions it made and its stream. The
// handlers (daemon/handlers.h) keep it; the connection (daemon/connection.h)
// owns it and lets it all go when it closes.
//
// Thread-safety: used on its connection's strand only.
#ifndef VOXDB_DAEMON_SESSION_H_
#define VOXDB_DAEMON_SESSION_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>

#include "daemon/stream.h"
#include "engine/database.h"

namespace voxdb::daemon {

struct Session {
  // Open snapshots, by the handle SNAPSHOT_OPEN gave. Each holds one of
  // LMDB's reader slots, hence a limit per connection.
  static constexpr size_t kMaxSnapshots = 4;
  std::map<uint64_t, std::shared_ptr<const engine::DatabaseSnapshot>> snapshots;
  size_t opening_snapshots = 0;  // SNAPSHOT_OPENs on the worker
  uint64_t next_snapshot = 1;

  std::set<uint64_t> subscriptions;  // ids this connection subscribed
  uint64_t next_subscription = 1;

  std::shared_ptr<Stream> stream;  // STREAM_UPDATE opened it
};

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_SESSION_H_
