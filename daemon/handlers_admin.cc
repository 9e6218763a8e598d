// HELLO, PING, STATS, FLUSH, BACKUP, REINDEX and LOD_REBUILD (daemon/dispatch.h).
#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/str_format.h"
#include "daemon/dispatch.h"
#include "daemon/hello_throttle.h"
#include "daemon/log.h"
#include "daemon/stats_table.h"
#include "engine/status.h"
#include "index/node_query.h"
#include "protocol/version.h"

namespace voxdb::daemon {

using protocol::Role;
using protocol::WireStatus;

void Server::Handlers::Hello(Connection& c, Request& r) {
  Server& server = c.server();
  const ServerOptions& options = server.options_;
  auto fail = [&](const absl::Status& s) { c.Reply(r.op, r.id, s); };
  auto req = protocol::HelloRequest::Decode(r.payload);
  if (!req.ok()) return fail(req.status());
  if (req->min_version > protocol::kProtocolVersion ||
      req->max_version < protocol::kProtocolVersion) {
    return fail(UnsupportedError(absl::StrFormat("this server speaks protocol version %u only",
                                                 protocol::kProtocolVersion)));
  }
  if (!options.tokens.empty()) {
    HelloThrottle& throttle = *server.hello_throttle_;
    if (throttle.Busy(c.peer_address())) {
      // Refused before its token is checked (see HelloThrottle).
      ++server.auth_failures_;
      LogLimited(LogLevel::kWarn, "failed HELLOs", c.peer_address(),
                 "auth: HELLO from %s refused unchecked, closing: %d failed HELLOs from its "
                 "address are still to be answered",
                 c.peer(), HelloThrottle::kMaxPending);
      c.CloseAfterReplies();
      return fail(BusyError(absl::StrFormat(
          "%d failed HELLOs from this address are still to be answered (each failure "
          "slows the next, up to %d ms); retry later",
          HelloThrottle::kMaxPending, static_cast<int>(HelloThrottle::kMaxDelay.count()))));
    }
    const Role granted = server.Authenticate(req->token);
    if (granted == Role::kNone) {
      ++server.auth_failures_;
      const std::chrono::milliseconds delay = throttle.Failed(c.peer_address());
      LogLimited(LogLevel::kWarn, "failed HELLOs", c.peer_address(),
                 "auth: %s token from %s, closing (reply delayed %d ms)",
                 req->token.empty() ? "no" : "wrong", c.peer(), static_cast<int>(delay.count()));
      c.CloseAfterReplies();
      const absl::Status refused = absl::UnauthenticatedError(
          req->token.empty() ? "this server needs a token" : "wrong token");
      if (delay.count() == 0) return fail(refused);
      return c.ReplyAfter(r.op, r.id, delay, refused,
                          [&throttle, address = c.peer_address()] { throttle.Answered(address); });
    }
    c.GrantRole(granted);
  }
  protocol::HelloReply reply;
  reply.version = protocol::kProtocolVersion;
  reply.world_frame = server.node_->frame().Encode();
  reply.server_version = kServerVersion;
  reply.max_payload = options.max_frame_payload;
  reply.max_batch = options.max_batch;
  reply.max_box_voxels = server.node_->max_box_voxels();
  reply.role = static_cast<uint8_t>(c.role());
  c.Reply(r.op, r.id, WireStatus::kOk, reply.Encode());
}

void Server::Handlers::Ping(Connection& c, Request& r) {
  c.Reply(r.op, r.id, WireStatus::kOk, std::move(r.payload));
}

// Flush waits on the disk: on the worker.
absl::StatusOr<std::vector<uint8_t>> Server::Handlers::Flush(engine::Node& node, const Request&) {
  const absl::Status s = node.Flush();
  if (!s.ok()) {
    Log(LogLevel::kError, "flush failed: %s", s.ToString());
    return s;
  }
  return std::vector<uint8_t>();
}

// Copies the whole node (engine::Node::Backup): on the worker.
absl::StatusOr<std::vector<uint8_t>> Server::Handlers::Backup(engine::Node& node,
                                                              const Request& r) {
  const std::string dest(r.payload.begin(), r.payload.end());
  uint64_t bytes = 0;
  const absl::Status s = node.Backup(dest, &bytes);
  Log(s.ok() ? LogLevel::kInfo : LogLevel::kError, "backup to %s: %s, %u bytes", dest, s.ToString(),
      bytes);
  if (!s.ok()) return s;
  return protocol::EncodeU64(bytes);
}

// One write transaction over every chunk of each partition in turn: on
// the worker.
absl::StatusOr<std::vector<uint8_t>> Server::Handlers::Reindex(engine::Node& node, const Request&) {
  uint64_t entries = 0;
  const absl::Status s = index::Rebuild(&node, &entries);
  Log(s.ok() ? LogLevel::kInfo : LogLevel::kError, "reindex: %s, %u entries", s.ToString(),
      entries);
  if (!s.ok()) return s;
  return protocol::EncodeU64(entries);
}

// LOD_REBUILD: the worker drops the records and marks the nodes (one scan
// of the stored chunks' keys); the LOD builder thread builds them in passes
// that yield to shutdown, and the reply goes out once what it marked is
// built (LodPyramid::WhenSynced: later writes' marks are not waited for),
// so the shared worker is not held. On shutdown the reply is UNAVAILABLE and what
// is left stays marked, built after the restart.
void Server::Handlers::LodRebuild(Connection& c, Request& r) {
  Server& server = c.server();
  if (absl::Status s = CheckLodLevel(server, 1); !s.ok()) return c.Reply(r.op, r.id, s);
  engine::LodPyramid* lod = server.lod();
  auto self = c.shared_from_this();
  const Clock::time_point start = c.BeginAsync();
  const auto t0 = Clock::now();
  auto answer = [self, op = r.op, id = r.id, start, t0](const absl::Status& s) {
    Log(s.ok() ? LogLevel::kInfo : LogLevel::kError, "LOD rebuild: %s in %.1f s", s.ToString(),
        std::chrono::duration<double>(Clock::now() - t0).count());
    asio::post(self->executor(), [self, op, id, start, s] {
      self->EndAsync(start);
      self->Reply(op, id, s);
    });
  };
  c.RunInBackground([self, lod, answer] {
    if (self->server().stopping_) {
      return answer(ClosingError("voxdbd is stopping: LOD_REBUILD was not run"));
    }
    // A split or move ran on the worker meanwhile: its pyramid is stopped.
    if (self->server().lod() != lod) return answer(RelayoutBusy());
    const absl::Status s = lod->MarkAllForRebuild();
    if (!s.ok()) return answer(s);
    lod->WhenSynced(answer);  // the nodes it marked, and their parents, built
    // A stop that came meanwhile may have missed this waiter.
    if (self->server().stopping_) {
      lod->CancelWaiters(
          ClosingError("voxdbd is stopping: the LOD rebuild goes on after the restart"));
    }
  });
}

// LOD_SYNC: the reply goes out when the LOD builder has built every node
// marked before the request; the builder's thread calls back, so no worker
// is held meanwhile. On shutdown the waiter is cancelled (the server's stop
// cancels every LOD waiter) and the reply is UNAVAILABLE.
void Server::Handlers::LodSync(Connection& c, Request& r) {
  Server& server = c.server();
  if (absl::Status s = CheckLodLevel(server, 1); !s.ok()) return c.Reply(r.op, r.id, s);
  engine::LodPyramid* lod = server.lod();
  auto self = c.shared_from_this();
  const Clock::time_point start = c.BeginAsync();
  lod->WhenSynced([self, op = r.op, id = r.id, start](const absl::Status& s) {
    asio::post(self->executor(), [self, op, id, start, s] {
      self->EndAsync(start);
      self->Reply(op, id, s);
    });
  });
  // A stop that came meanwhile may have missed this waiter.
  if (server.stopping_) lod->CancelWaiters(ClosingError("voxdbd is stopping"));
}

void Server::Handlers::Stats(Connection& c, Request& r) {
  const Server& server = c.server();
  const std::string text = StatsText(ReadStats(server.stats(), *server.node_));
  c.Reply(r.op, r.id, WireStatus::kOk, std::vector<uint8_t>(text.begin(), text.end()));
}

// Like STATS, bounded work on the I/O thread: one LMDB read transaction
// per partition.
void Server::Handlers::Partitions(Connection& c, Request& r) {
  const Server& server = c.server();
  protocol::PartitionsReply reply;
  for (const PartitionFigures& f : ReadPartitions(*server.node_)) {
    protocol::PartitionInfo& p = reply.partitions.emplace_back();
    p.id = f.id;
    p.begin = f.range.begin;
    p.end = f.range.end;
    p.dir = f.dir;
    if (f.store) {
      p.has_store = true;
      p.chunks = f.store->chunk_count;
      p.chunk_bytes = f.store->chunk_bytes;
      p.used_bytes = f.store->used_bytes;
      p.map_size = f.store->map_size;
      p.max_map_size = f.store->max_map_size;
    }
    p.last_seq = f.last_seq;
    p.epoch = f.epoch;
  }
  c.Reply(r.op, r.id, WireStatus::kOk, reply.Encode());
}

}  // namespace voxdb::daemon
