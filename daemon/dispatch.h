// The requests voxdbd answers: the gate every request passes and the table
// of their handlers.
//
// The gate (Server::Handlers::Dispatch) refuses a request whose header has
// the reply or push flag or a status, every request once the server is
// stopping, a request the connection's role does not allow (the role comes
// from protocol/opcodes.h) and a non-empty payload where none is taken;
// then it runs the request's row of HandlerTable(). An opcode with no row is
// UNSUPPORTED; a push sent by a client is INVALID.
//
// The handlers live by area: daemon/handlers_chunks.cc (GET_CHUNKS,
// GET_VOXELS, READ_BOX, the writes), handlers_query.cc (the queries, LOD),
// handlers_snapshot.cc (SNAPSHOT_*), handlers_push.cc (SUBSCRIBE,
// UNSUBSCRIBE, STREAM_*), handlers_admin.cc (HELLO, PING, FLUSH, STATS,
// BACKUP, REINDEX, LOD_REBUILD) and handlers_partition.cc (PARTITION_SPLIT,
// PARTITION_MOVE).
//
// Thread-safety: Dispatch and the kIoThread handlers run on the request's
// connection's strand; kWorker handlers on the server's worker thread.
#ifndef VOXDB_DAEMON_DISPATCH_H_
#define VOXDB_DAEMON_DISPATCH_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/connection.h"
#include "daemon/server.h"
#include "engine/database.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "protocol/opcodes.h"

namespace voxdb::daemon {

// Where a handler runs.
enum class Runs : uint8_t {
  // On the connection's strand. The handler answers, now or later; it may
  // hand the slow part on itself (SNAPSHOT_OPEN and LOD_REBUILD to the
  // worker, a large READ_BOX to the read pool, a LOD query to the worker, a
  // write under back-pressure to the worker).
  kIoThread,
  // Wholly on the server's worker (it waits on the disk or runs long): its
  // value is the OK reply's payload, its error the reply's status.
  kWorker,
};

// A request, as its handler gets it.
struct Request {
  uint8_t op = 0;
  uint64_t id = 0;
  std::vector<uint8_t> payload;
};

using IoHandler = void (*)(Server::Connection& c, Request& r);
using WorkerHandler = absl::StatusOr<std::vector<uint8_t>> (*)(engine::Node& node,
                                                               const Request& r);

// Whether a request is served on a node of several partitions
// (engine/node.h). Those that are not yet answer UNSUPPORTED there; on a
// node of one partition (every data directory never split) all are.
enum class Spans : uint8_t { kPartitions, kOnePartition };

struct HandlerRow {
  protocol::Opcode op;
  Runs runs;
  IoHandler on_io = nullptr;          // kIoThread
  WorkerHandler on_worker = nullptr;  // kWorker
  Spans spans = Spans::kPartitions;
};

// One row per request opcode of protocol/opcodes.h, in opcode order.
std::span<const HandlerRow> HandlerTable();
// The row of `op`; nullptr for a push or a value that is no opcode.
const HandlerRow* FindHandler(uint8_t op);

// The gate and the handlers; static members so that they reach the server's
// shared state (a nested class of Server).
struct Server::Handlers {
  // Runs `frame`'s request: the checks above, then its handler.
  static void Dispatch(Connection& c, protocol::Frame frame);

  // handlers_admin.cc
  static void Hello(Connection& c, Request& r);
  static void Ping(Connection& c, Request& r);
  static void Stats(Connection& c, Request& r);
  static void Partitions(Connection& c, Request& r);
  static void LodRebuild(Connection& c, Request& r);
  static void LodSync(Connection& c, Request& r);
  static absl::StatusOr<std::vector<uint8_t>> Flush(engine::Node& node, const Request& r);
  static absl::StatusOr<std::vector<uint8_t>> Backup(engine::Node& node, const Request& r);
  static absl::StatusOr<std::vector<uint8_t>> Reindex(engine::Node& node, const Request& r);

  // handlers_partition.cc
  static void PartitionSplit(Connection& c, Request& r);
  static void PartitionMove(Connection& c, Request& r);

  // handlers_chunks.cc
  static void GetChunks(Connection& c, Request& r);
  static void GetVoxels(Connection& c, Request& r);
  static void ReadBox(Connection& c, Request& r);
  static void SetVoxels(Connection& c, Request& r);
  static void WriteBox(Connection& c, Request& r);
  static void FillBox(Connection& c, Request& r);
  static void PutChunk(Connection& c, Request& r);
  static void DeleteChunk(Connection& c, Request& r);

  // handlers_query.cc
  static void Query(Connection& c, Request& r);  // QUERY_RADIUS, _CELL, _RECT, _BOX

  // handlers_snapshot.cc
  static void SnapshotOpen(Connection& c, Request& r);
  static void SnapshotScan(Connection& c, Request& r);
  static void SnapshotGet(Connection& c, Request& r);
  static void SnapshotClose(Connection& c, Request& r);

  // handlers_push.cc
  static void Subscribe(Connection& c, Request& r);
  static void Unsubscribe(Connection& c, Request& r);
  static void StreamUpdate(Connection& c, Request& r);
  static void StreamClose(Connection& c, Request& r);

  // --- Shared by the handlers ---

  // Reads chunks (the database's GetChunks, or a snapshot's).
  using ChunkReader =
      std::function<absl::Status(std::span<const engine::ChunkKey>,
                                 const std::function<void(size_t, const engine::ChunkRead&)>&)>;
  // Builds a GET_CHUNKS reply in place from `read(keys, fn)`: records past
  // the frame limit go out as TOO_LARGE, with no message (handlers_chunks.cc).
  static void ReplyChunks(Connection& c, const Request& r, std::span<const engine::ChunkKey> keys,
                          const ChunkReader& read);
  // GET_CHUNKS at a LOD level >= 1 (handlers_query.cc).
  static void GetLodChunks(Connection& c, const Request& r, const protocol::GetChunksRequest& req);
  // UNSUPPORTED without a LOD pyramid, INVALID for a level it does not keep
  // (handlers_query.cc).
  static absl::Status CheckLodLevel(const Server& server, int level);
};

// Between the wire's types and the engine's and the index's.
inline engine::VoxelCoord ToVoxel(const protocol::Voxel3& v) { return {v.x, v.y, v.z}; }
inline engine::VoxelBox ToBox(const protocol::Box& b) { return {ToVoxel(b.lo), ToVoxel(b.hi)}; }
inline protocol::Voxel3 FromVoxel(const engine::VoxelCoord& v) { return {v.x, v.y, v.z}; }
inline protocol::Box FromBox(const engine::VoxelBox& b) {
  return {FromVoxel(b.lo), FromVoxel(b.hi)};
}
// A QUERY_* request (or a SUBSCRIBE's region) as the index's region. The
// index builds S2 regions only from values s2geometry takes (its
// constructors CHECK their angles).
StatusOr<index::Region> ToRegion(const protocol::QueryRequest& q);
// The chunk keys of `codes`; INVALID ("bad chunk key") for a code past
// ChunkKey::kMaxCode.
absl::StatusOr<std::vector<engine::ChunkKey>> ToChunkKeys(std::span<const uint64_t> codes);

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_DISPATCH_H_
