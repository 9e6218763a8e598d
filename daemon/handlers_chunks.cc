// GET_CHUNKS, GET_VOXELS, READ_BOX and the writes: PUT_CHUNK, DELETE_CHUNK,
// SET_VOXELS, WRITE_BOX, FILL_BOX (daemon/dispatch.h).
#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "daemon/dispatch.h"
#include "daemon/metrics.h"
#include "engine/voxel_box.h"

namespace voxdb::daemon {
namespace {

using protocol::WireStatus;

// A READ_BOX across more than this many chunks runs on the read pool, not
// on the I/O thread (up to max_box_chunks chunks to load and decode).
constexpr uint64_t kInlineReadChunks = 16;

}  // namespace

// GET_CHUNKS: the reply is built in place. A reply that would pass the
// frame limit carries TOO_LARGE for the chunks that did not fit, so one
// request cannot make the server buffer more than a frame.
void Server::Handlers::GetChunks(Connection& c, Request& r) {
  auto req = protocol::GetChunksRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  if (req->codes.size() > c.server().options_.max_batch) {
    return c.Reply(r.op, r.id, absl::InvalidArgumentError("too many chunks in one GET_CHUNKS"));
  }
  if (req->level != 0) return GetLodChunks(c, r, *req);
  auto keys = ToChunkKeys(req->codes);
  if (!keys.ok()) return c.Reply(r.op, r.id, keys.status());
  engine::Node* node = c.server().node_;
  ReplyChunks(c, r, *keys,
              [node](std::span<const engine::ChunkKey> k,
                     const std::function<void(size_t, const engine::ChunkRead&)>& fn) {
                return node->GetChunks(k, fn);
              });
}

void Server::Handlers::ReplyChunks(Connection& c, const Request& r,
                                   std::span<const engine::ChunkKey> keys,
                                   const ChunkReader& read_chunks) {
  const ServerOptions& options = c.server().options_;
  protocol::FrameWriter out(
      std::min<size_t>(4 + keys.size() * (48 << 10), options.max_frame_payload),
      /*count_prefix=*/true);
  out.set_count(static_cast<uint32_t>(keys.size()));
  const size_t limit = protocol::kHeaderSize + options.max_frame_payload;
  absl::Status s = read_chunks(keys, [&](size_t, const engine::ChunkRead& read) {
    WireStatus wire = protocol::ToWireStatus(read.status);
    if (wire != WireStatus::kOk && options.metrics != nullptr) options.metrics->OnError(wire);
    std::span<const uint8_t> bytes = read.record;
    if (!read.status.ok()) {
      const absl::string_view m = read.status.message();
      bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(m.data()), m.size());
    } else if (out.size() + protocol::kChunkResultHeaderBytes + bytes.size() > limit) {
      wire = WireStatus::kTooLarge;  // no message: a bare header per chunk left out
      bytes = {};
    }
    protocol::AppendChunkResult(out, wire, read.version, bytes);
  });
  if (!s.ok()) return c.Reply(r.op, r.id, s);
  c.Enqueue(out.Seal(r.op, r.id, protocol::kFlagReply, WireStatus::kOk));
}

void Server::Handlers::GetVoxels(Connection& c, Request& r) {
  auto req = protocol::GetVoxelsRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  if (req->at.size() > c.server().options_.max_batch) {
    return c.Reply(r.op, r.id, absl::InvalidArgumentError("too many voxels in one GET_VOXELS"));
  }
  std::vector<engine::VoxelCoord> at;
  at.reserve(req->at.size());
  for (const auto& v : req->at) at.push_back(ToVoxel(v));
  std::vector<uint8_t> out(at.size());
  if (absl::Status s = c.server().node_->GetVoxels(at, out.data()); !s.ok()) {
    return c.Reply(r.op, r.id, s);
  }
  c.Reply(r.op, r.id, WireStatus::kOk, std::move(out));
}

// READ_BOX: on the I/O thread when it covers a few chunks; else on the read
// pool, where it stops early (its reply then goes nowhere) once the
// connection has closed.
void Server::Handlers::ReadBox(Connection& c, Request& r) {
  engine::Node* node = c.server().node_;
  const uint32_t max_payload = c.server().options_.max_frame_payload;
  auto req = protocol::BoxRequest::DecodeReadBox(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  const engine::VoxelBox box = ToBox(req->box);
  // Every limit before the reply's buffer is allocated.
  if (absl::Status s = node->CheckBoxLimits(box); !s.ok()) return c.Reply(r.op, r.id, s);
  if (box.volume() > max_payload) {
    return c.Reply(r.op, r.id,
                   TooLargeError(absl::StrFormat(
                       "the box holds %u voxels, more than the largest frame (%u bytes)",
                       box.volume(), max_payload)));
  }
  const engine::ChunkBox covered = engine::ChunksCovering(node->frame(), box);
  const uint64_t chunks = uint64_t{covered.hi.x - covered.lo.x + 1} *
                          (covered.hi.y - covered.lo.y + 1) * (covered.hi.z - covered.lo.z + 1);
  if (chunks > kInlineReadChunks) {
    return c.RunOnReadPool(r.op, r.id,
                           [node, box, op = r.op, id = r.id,
                            gone = c.gone()]() -> absl::StatusOr<std::vector<uint8_t>> {
                             protocol::FrameWriter out(box.volume());
                             absl::Status s =
                                 node->ReadBox(box, out.Extend(box.volume()), gone.get());
                             if (!s.ok()) return s;
                             return out.Seal(op, id, protocol::kFlagReply, WireStatus::kOk);
                           });
  }
  protocol::FrameWriter out(box.volume());
  if (absl::Status s = node->ReadBox(box, out.Extend(box.volume())); !s.ok()) {
    return c.Reply(r.op, r.id, s);
  }
  c.Enqueue(out.Seal(r.op, r.id, protocol::kFlagReply, WireStatus::kOk));
}

void Server::Handlers::SetVoxels(Connection& c, Request& r) {
  auto req = protocol::SetVoxelsRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  if (req->edits.size() > c.server().options_.max_batch) {
    return c.Reply(r.op, r.id, absl::InvalidArgumentError("too many edits in one SET_VOXELS"));
  }
  auto edits = std::make_shared<std::vector<engine::VoxelEdit>>();
  edits->reserve(req->edits.size());
  for (const auto& e : req->edits) edits->push_back({ToVoxel(e.at), e.material});
  engine::Node* node = c.server().node_;
  c.SubmitWrite([node, edits, done = c.WriteDone(r.op, r.id)] { node->SetVoxels(*edits, done); });
}

void Server::Handlers::WriteBox(Connection& c, Request& r) {
  auto req = protocol::BoxRequest::DecodeWriteBox(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  auto box = std::make_shared<protocol::BoxRequest>(std::move(*req));
  engine::Node* node = c.server().node_;
  c.SubmitWrite([node, box, done = c.WriteDone(r.op, r.id)] {
    node->WriteBox(ToBox(box->box), box->voxels, done);
  });
}

void Server::Handlers::FillBox(Connection& c, Request& r) {
  auto req = protocol::BoxRequest::DecodeFillBox(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  const engine::VoxelBox box = ToBox(req->box);
  const uint8_t material = req->material;
  engine::Node* node = c.server().node_;
  c.SubmitWrite([node, box, material, done = c.WriteDone(r.op, r.id)] {
    node->FillBox(box, material, done);
  });
}

void Server::Handlers::PutChunk(Connection& c, Request& r) {
  auto req = protocol::PutChunkRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  if (req->code > engine::ChunkKey::kMaxCode) {
    return c.Reply(r.op, r.id, absl::InvalidArgumentError("bad chunk key"));
  }
  auto put = std::make_shared<protocol::PutChunkRequest>(std::move(*req));
  engine::Node* node = c.server().node_;
  c.SubmitWrite([node, put, done = c.WriteDone(r.op, r.id)] {
    node->PutChunk(engine::ChunkKey::FromCode(put->code), put->record, put->expected_version, done);
  });
}

void Server::Handlers::DeleteChunk(Connection& c, Request& r) {
  auto code = protocol::DecodeU64(r.payload);
  if (!code.ok()) return c.Reply(r.op, r.id, code.status());
  if (*code > engine::ChunkKey::kMaxCode) {
    return c.Reply(r.op, r.id, absl::InvalidArgumentError("bad chunk key"));
  }
  const engine::ChunkKey key = engine::ChunkKey::FromCode(*code);
  engine::Node* node = c.server().node_;
  c.SubmitWrite([node, key, done = c.WriteDone(r.op, r.id)] { node->DeleteChunk(key, done); });
}

}  // namespace voxdb::daemon
