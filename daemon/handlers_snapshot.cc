// SNAPSHOT_OPEN, SNAPSHOT_SCAN, SNAPSHOT_GET and SNAPSHOT_CLOSE
// (PROTOCOL.md, "Snapshots"; daemon/dispatch.h). The handles live in the
// connection's Session.
#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "daemon/dispatch.h"
#include "engine/coding.h"
#include "engine/status.h"
#include "engine/voxel_box.h"

namespace voxdb::daemon {
namespace {

using protocol::WireStatus;

absl::StatusOr<const engine::DatabaseSnapshot*> FindSnapshot(const Session& session,
                                                             uint64_t handle) {
  auto it = session.snapshots.find(handle);
  if (it == session.snapshots.end()) {
    return absl::NotFoundError(
        absl::StrFormat("no snapshot %u on this connection (closed, or never opened)", handle));
  }
  return it->second.get();
}

}  // namespace

// SNAPSHOT_OPEN: taking one waits until every write submitted before it is
// durable and for a flush commit in progress, so it runs on the worker. Each snapshot holds an LMDB
// reader slot: at most Session::kMaxSnapshots per connection (counting those being opened, so that
// pipelined requests cannot pass the check together) and max_snapshots in all.
void Server::Handlers::SnapshotOpen(Connection& c, Request& r) {
  Server& server = c.server();
  Session& session = c.session();
  if (session.snapshots.size() + session.opening_snapshots >= Session::kMaxSnapshots) {
    return c.Reply(r.op, r.id,
                   BusyError(absl::StrFormat(
                       "this connection holds %u snapshots already: close one (SNAPSHOT_CLOSE)",
                       Session::kMaxSnapshots)));
  }
  if (++server.snapshots_open_ > static_cast<int64_t>(server.options_.max_snapshots)) {
    --server.snapshots_open_;
    return c.Reply(
        r.op, r.id,
        BusyError(absl::StrFormat("the server holds %u snapshots, its most: try again later",
                                  server.options_.max_snapshots)));
  }
  ++session.opening_snapshots;
  auto self = c.shared_from_this();
  const Clock::time_point start = c.BeginAsync();
  c.RunInBackground([self, op = r.op, id = r.id, start] {
    // Run after a split or move queued before it: the partition served now.
    engine::Database* db = self->server().db_.load();
    std::shared_ptr<const engine::DatabaseSnapshot> shared;
    absl::Status s =
        UnsupportedError("SNAPSHOT_OPEN is not served on a node of several partitions");
    if (db != nullptr) {
      auto snap = db->Snapshot();
      s = snap.status();
      if (snap.ok()) shared = std::move(*snap);
    }
    asio::post(self->executor(), [self, s, shared, op, id, start] {
      self->EndAsync(start);
      Session& held = self->session();
      --held.opening_snapshots;
      if (!s.ok() || self->closed()) {
        --self->server().snapshots_open_;  // not kept: its reader slot goes now
        self->Reply(op, id, s.ok() ? ClosingError("the connection closed") : s);
        return;
      }
      const uint64_t handle = held.next_snapshot++;
      held.snapshots.emplace(handle, shared);
      protocol::SnapshotOpenReply reply{handle, shared->seq()};
      self->Reply(op, id, WireStatus::kOk, reply.Encode());
    });
  });
}

void Server::Handlers::SnapshotScan(Connection& c, Request& r) {
  auto req = protocol::SnapshotScanRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  auto snap = FindSnapshot(c.session(), req->snapshot);
  if (!snap.ok()) return c.Reply(r.op, r.id, snap.status());
  const engine::WorldFrame& frame = c.server().db_.load()->frame();
  const engine::VoxelBox box = ToBox(req->box);
  if (absl::Status s = frame.CheckBox(box); !s.ok()) return c.Reply(r.op, r.id, s);
  if (req->limit == 0 || req->limit > protocol::kMaxQueryLimit) {
    return c.Reply(r.op, r.id,
                   absl::InvalidArgumentError(absl::StrFormat(
                       "limit %u is not in 1..%u", req->limit, protocol::kMaxQueryLimit)));
  }
  uint64_t from = 0;
  if (!req->cursor.empty()) {
    if (req->cursor.size() != 8) {
      return c.Reply(r.op, r.id, absl::InvalidArgumentError("bad SNAPSHOT_SCAN cursor"));
    }
    from = engine::DecodeBigEndian64(req->cursor.data());
  }
  const engine::ChunkBox chunks = engine::ChunksCovering(frame, box);
  protocol::QueryReply reply;
  absl::Status s = (*snap)->ScanChunks(chunks, from, [&](engine::ChunkKey key, uint64_t version) {
    if (reply.chunks.size() == req->limit) {
      reply.next_cursor.resize(8);
      engine::EncodeBigEndian64(reply.next_cursor.data(), key.code());
      return false;
    }
    reply.chunks.push_back({key.code(), version});
    return true;
  });
  if (!s.ok()) return c.Reply(r.op, r.id, s);
  if (req->cursor.empty()) {
    for (const engine::Fill& f : (*snap)->fills().fills()) {
      if (engine::Meets(f.box, box)) {
        reply.fills.push_back({f.seq, FromBox(f.box), f.material});
      }
    }
  }
  c.Reply(r.op, r.id, WireStatus::kOk, reply.Encode());
}

void Server::Handlers::SnapshotGet(Connection& c, Request& r) {
  auto req = protocol::SnapshotGetRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  auto snap = FindSnapshot(c.session(), req->snapshot);
  if (!snap.ok()) return c.Reply(r.op, r.id, snap.status());
  if (req->codes.size() > c.server().options_.max_batch) {
    return c.Reply(r.op, r.id, absl::InvalidArgumentError("too many chunks in one SNAPSHOT_GET"));
  }
  auto keys = ToChunkKeys(req->codes);
  if (!keys.ok()) return c.Reply(r.op, r.id, keys.status());
  const engine::DatabaseSnapshot* view = *snap;
  ReplyChunks(c, r, *keys,
              [view](std::span<const engine::ChunkKey> k,
                     const std::function<void(size_t, const engine::ChunkRead&)>& fn) {
                return view->GetChunks(k, fn);
              });
}

void Server::Handlers::SnapshotClose(Connection& c, Request& r) {
  auto handle = protocol::DecodeU64(r.payload);
  if (!handle.ok()) return c.Reply(r.op, r.id, handle.status());
  if (absl::Status s = FindSnapshot(c.session(), *handle).status(); !s.ok()) {
    return c.Reply(r.op, r.id, s);
  }
  c.session().snapshots.erase(*handle);
  --c.server().snapshots_open_;
  c.Reply(r.op, r.id, absl::OkStatus());
}

}  // namespace voxdb::daemon
