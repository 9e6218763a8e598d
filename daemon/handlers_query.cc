// QUERY_RADIUS, QUERY_CELL, QUERY_RECT, QUERY_BOX and the LOD reads:
// GET_CHUNKS at a level >= 1 and queries at a level (daemon/dispatch.h).
#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "daemon/dispatch.h"
#include "daemon/metrics.h"
#include "engine/chunk_codec.h"
#include "engine/status.h"
#include "index/node_query.h"

namespace voxdb::daemon {
namespace {

using protocol::Opcode;
using protocol::WireStatus;

absl::StatusOr<std::vector<uint8_t>> EncodeQuery(absl::StatusOr<index::QueryResult> result) {
  if (!result.ok()) return result.status();
  protocol::QueryReply reply;
  reply.chunks.reserve(result->chunks.size());
  for (const index::ChunkHit& c : result->chunks) {
    reply.chunks.push_back({c.key.code(), c.version});
  }
  reply.fills.reserve(result->fills.size());
  for (const engine::Fill& f : result->fills) {
    reply.fills.push_back({f.seq, FromBox(f.box), f.material});
  }
  reply.next_cursor = std::move(result->next_cursor);
  return reply.Encode();
}

// The record of a LOD node never built: air.
const std::vector<uint8_t>& AirRecord() {
  static const std::vector<uint8_t> air = engine::EncodeChunk(engine::Chunk(0), 0, 0);
  return air;
}

}  // namespace

absl::Status Server::Handlers::CheckLodLevel(const Server& server, int level) {
  const engine::LodPyramid* lod = server.lod();
  if (lod == nullptr) {
    if (const size_t n = server.node_->partition_count(); n > 1) {
      return UnsupportedError(absl::StrFormat(
          "LOD levels are not kept yet on a node of several partitions (%u): level 0 only", n));
    }
    return UnsupportedError("this server keeps no LOD pyramid (lod-levels = 0)");
  }
  if (level < 1 || level > lod->levels()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "LOD level %d is not kept (this server keeps levels 1..%d)", level, lod->levels()));
  }
  return absl::OkStatus();
}

// One page of the index.
void Server::Handlers::Query(Connection& c, Request& r) {
  Server& server = c.server();
  auto req = protocol::QueryRequest::Decode(static_cast<Opcode>(r.op), r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  auto region = ToRegion(*req);
  if (!region.ok()) return c.Reply(r.op, r.id, region.status());
  index::QueryOptions options;
  if (req->band) options.band = index::AltitudeBand{req->band->min_m, req->band->max_m};
  options.limit = req->limit;
  options.cursor = std::move(req->cursor);
  if (req->level != 0) {
    // Evaluates the whole level-0 answer: off the I/O threads.
    OnePartitionUse use(server);
    if (!use.ok()) return c.Reply(r.op, r.id, RelayoutBusy());
    if (absl::Status s = CheckLodLevel(server, req->level); !s.ok()) {
      return c.Reply(r.op, r.id, s);
    }
    engine::Database* db = server.db_.load();
    engine::LodPyramid* lod = server.lod();
    Server* s = &server;
    return c.RunOnWorker(r.op, r.id,
                         [s, db, lod, level = req->level, region = *region,
                          options = std::move(options)]() -> absl::StatusOr<std::vector<uint8_t>> {
                           // A split or move ran on the worker meanwhile.
                           if (s->lod() != lod || s->db_.load() != db) return RelayoutBusy();
                           return EncodeQuery(index::QueryLod(*db, *lod, level, region, options));
                         });
  }
  auto reply = EncodeQuery(index::Query(*server.node_, *region, options));
  if (!reply.ok()) return c.Reply(r.op, r.id, reply.status());
  c.Reply(r.op, r.id, WireStatus::kOk, std::move(*reply));
}

// GET_CHUNKS at LOD level >= 1: the last built record of each node, its
// version the newest of the chunks under it when built. A node never
// built reads as air, version 0, like a chunk never written.
void Server::Handlers::GetLodChunks(Connection& c, const Request& r,
                                    const protocol::GetChunksRequest& req) {
  const ServerOptions& options = c.server().options_;
  OnePartitionUse use(c.server());
  if (!use.ok()) return c.Reply(r.op, r.id, RelayoutBusy());
  engine::LodPyramid* lod = c.server().lod();
  if (absl::Status s = CheckLodLevel(c.server(), req.level); !s.ok()) {
    return c.Reply(r.op, r.id, s);
  }
  const uint64_t max_node = engine::ChunkKey::kMaxCode >> (3 * req.level);
  for (uint64_t code : req.codes) {
    if (code > max_node) {
      return c.Reply(r.op, r.id,
                     absl::InvalidArgumentError(absl::StrFormat(
                         "node %u does not exist at LOD level %u", code, req.level)));
    }
  }
  protocol::FrameWriter out(
      std::min<size_t>(4 + req.codes.size() * (48 << 10), options.max_frame_payload),
      /*count_prefix=*/true);
  out.set_count(static_cast<uint32_t>(req.codes.size()));
  const size_t limit = protocol::kHeaderSize + options.max_frame_payload;
  for (uint64_t code : req.codes) {
    auto read = lod->GetLod(req.level, code);
    WireStatus wire = WireStatus::kOk;
    uint64_t version = 0;
    std::vector<uint8_t> bytes;
    if (read.ok()) {
      version = read->version;
      bytes = std::move(read->record);
    } else if (absl::IsNotFound(read.status())) {
      bytes = AirRecord();
    } else {
      wire = protocol::ToWireStatus(read.status());
      const absl::string_view m = read.status().message();
      bytes.assign(m.begin(), m.end());
      if (options.metrics != nullptr) options.metrics->OnError(wire);
    }
    if (wire == WireStatus::kOk &&
        out.size() + protocol::kChunkResultHeaderBytes + bytes.size() > limit) {
      wire = WireStatus::kTooLarge;  // as at level 0: ask for it again
      bytes.clear();
    }
    protocol::AppendChunkResult(out, wire, version, bytes);
  }
  c.Enqueue(out.Seal(r.op, r.id, protocol::kFlagReply, WireStatus::kOk));
}

}  // namespace voxdb::daemon
