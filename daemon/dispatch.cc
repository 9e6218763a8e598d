#include "daemon/dispatch.h"

#include <array>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "daemon/log.h"
#include "engine/status.h"

namespace voxdb::daemon {
namespace {

using protocol::Opcode;
using protocol::Role;
using H = Server::Handlers;

constexpr HandlerRow Io(Opcode op, IoHandler fn, Spans spans = Spans::kPartitions) {
  return {op, Runs::kIoThread, fn, nullptr, spans};
}
constexpr HandlerRow Worker(Opcode op, WorkerHandler fn, Spans spans = Spans::kPartitions) {
  return {op, Runs::kWorker, nullptr, fn, spans};
}
constexpr Spans kOne = Spans::kOnePartition;

constexpr HandlerRow kHandlers[] = {
    Io(Opcode::kHello, &H::Hello),
    Io(Opcode::kPing, &H::Ping),
    Io(Opcode::kGetChunks, &H::GetChunks),
    Io(Opcode::kPutChunk, &H::PutChunk),
    Io(Opcode::kDeleteChunk, &H::DeleteChunk),
    Io(Opcode::kGetVoxels, &H::GetVoxels),
    Io(Opcode::kSetVoxels, &H::SetVoxels),
    Io(Opcode::kReadBox, &H::ReadBox),
    Io(Opcode::kWriteBox, &H::WriteBox),
    Io(Opcode::kFillBox, &H::FillBox),
    Worker(Opcode::kFlush, &H::Flush),
    Io(Opcode::kStats, &H::Stats),
    // A read of the index and the cache: on the I/O thread (a LOD level
    // goes to the worker).
    Io(Opcode::kQueryRadius, &H::Query),
    Io(Opcode::kQueryCell, &H::Query),
    Io(Opcode::kQueryRect, &H::Query),
    Io(Opcode::kQueryBox, &H::Query),
    Worker(Opcode::kReindex, &H::Reindex),
    Worker(Opcode::kBackup, &H::Backup),
    Io(Opcode::kLodRebuild, &H::LodRebuild, kOne),
    Io(Opcode::kLodSync, &H::LodSync, kOne),
    Io(Opcode::kSnapshotOpen, &H::SnapshotOpen, kOne),
    Io(Opcode::kSnapshotScan, &H::SnapshotScan, kOne),
    Io(Opcode::kSnapshotGet, &H::SnapshotGet, kOne),
    Io(Opcode::kSnapshotClose, &H::SnapshotClose, kOne),
    Io(Opcode::kSubscribe, &H::Subscribe),
    Io(Opcode::kUnsubscribe, &H::Unsubscribe),
    Io(Opcode::kStreamUpdate, &H::StreamUpdate, kOne),
    Io(Opcode::kStreamClose, &H::StreamClose, kOne),
    Io(Opcode::kPartitions, &H::Partitions),
    // Checked on the I/O thread, run on the worker (Server::ChangeLayout).
    Io(Opcode::kPartitionSplit, &H::PartitionSplit),
    Io(Opcode::kPartitionMove, &H::PartitionMove),
};

// kHandlers' row of each byte value, -1 for none.
constexpr std::array<int8_t, 256> kHandlerOf = [] {
  std::array<int8_t, 256> rows{};
  rows.fill(-1);
  for (size_t i = 0; i < std::size(kHandlers); ++i) {
    rows[static_cast<uint8_t>(kHandlers[i].op)] = static_cast<int8_t>(i);
  }
  return rows;
}();

}  // namespace

std::span<const HandlerRow> HandlerTable() { return kHandlers; }

const HandlerRow* FindHandler(uint8_t op) {
  const int row = kHandlerOf[op];
  return row < 0 ? nullptr : &kHandlers[row];
}

void Server::Handlers::Dispatch(Connection& c, protocol::Frame frame) {
  Server& server = c.server();
  const uint8_t op = frame.header.opcode;
  const uint64_t id = frame.header.request_id;
  auto fail = [&](const absl::Status& s) { c.Reply(op, id, s); };
  if (absl::Status s = protocol::CheckRequestHeader(frame.header); !s.ok()) return fail(s);
  if (server.stopping_) {
    // Read after the stop: not run (PROTOCOL.md, "Errors and connection
    // state"); the connection closes once nothing more is readable.
    return fail(ClosingError("voxdbd is shutting down: this request was not run"));
  }
  const Role need = protocol::RequiredRole(static_cast<Opcode>(op));
  if (c.role() < need) {
    const char* name = protocol::OpcodeName(static_cast<Opcode>(op));
    if (c.role() == Role::kNone) {
      ++server.auth_failures_;
      LogLimited(LogLevel::kWarn, "unauthenticated requests", c.peer_address(),
                 "auth: %s sent %s before authenticating", c.peer(), name);
      return fail(absl::UnauthenticatedError(
          absl::StrFormat("%s needs authentication: send HELLO with a token first", name)));
    }
    ++server.permission_denied_;
    LogLimited(LogLevel::kWarn, "requests denied by role", c.peer_address(),
               "auth: %s (role %s) may not %s", c.peer(), protocol::RoleName(c.role()), name);
    return fail(absl::PermissionDeniedError(
        absl::StrFormat("this token's role '%s' may not %s (needs '%s')",
                        protocol::RoleName(c.role()), name, protocol::RoleName(need))));
  }
  if (absl::Status s = protocol::CheckEmptyPayload(static_cast<Opcode>(op), frame.payload);
      !s.ok()) {
    return fail(s);
  }
  const HandlerRow* row = FindHandler(op);
  if (row == nullptr) {
    if (protocol::FindOpcode(op) != nullptr) {
      return fail(absl::InvalidArgumentError(absl::StrFormat(
          "%s is pushed by the server, not a request", protocol::OpcodeName(Opcode(op)))));
    }
    return fail(UnsupportedError(absl::StrFormat("unknown opcode %u", op)));
  }
  // Held while a kOnePartition handler runs here: a split or move waits for
  // it before it detaches the partition (Server::ChangeLayout).
  std::optional<OnePartitionUse> use;
  if (row->spans == Spans::kOnePartition) {
    use.emplace(server);
    if (!use->ok()) return fail(RelayoutBusy());
    if (server.db_.load() == nullptr) {
      return fail(UnsupportedError(absl::StrFormat(
          "%s is not served yet on a node of several partitions (this one has %u)",
          protocol::OpcodeName(static_cast<Opcode>(op)), server.node_->partition_count())));
    }
  }
  Request request{op, id, std::move(frame.payload)};
  if (row->runs == Runs::kIoThread) return row->on_io(c, request);
  engine::Node* node = server.node_;
  c.RunOnWorker(op, id, [node, fn = row->on_worker, request = std::move(request)] {
    return fn(*node, request);
  });
}

StatusOr<index::Region> ToRegion(const protocol::QueryRequest& q) {
  switch (q.kind) {
    case protocol::QueryKind::kRadius:
      return index::MakeRadiusRegion(q.lat, q.lon, q.radius);
    case protocol::QueryKind::kCell:
      return index::MakeCellRegion(q.cell);
    case protocol::QueryKind::kRect:
      return index::MakeRectRegion(q.rect.lat_lo, q.rect.lon_lo, q.rect.lat_hi, q.rect.lon_hi);
    case protocol::QueryKind::kBox:
      return index::BoxRegion{ToBox(q.box)};
  }
  return absl::InvalidArgumentError("unknown kind of query");
}

absl::StatusOr<std::vector<engine::ChunkKey>> ToChunkKeys(std::span<const uint64_t> codes) {
  std::vector<engine::ChunkKey> keys;
  keys.reserve(codes.size());
  for (uint64_t c : codes) {
    if (c > engine::ChunkKey::kMaxCode) return absl::InvalidArgumentError("bad chunk key");
    keys.push_back(engine::ChunkKey::FromCode(c));
  }
  return keys;
}

}  // namespace voxdb::daemon
