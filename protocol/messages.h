// Request and reply payloads of the voxdb wire protocol, version 1
// (protocol/PROTOCOL.md, "Requests"). Every Decode is bounds-checked and
// refuses a malformed payload with INVALID; counts are checked against the
// payload's size before anything is allocated.
//
// Thread-safety: value types and pure functions.
#ifndef VOXDB_PROTOCOL_MESSAGES_H_
#define VOXDB_PROTOCOL_MESSAGES_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "protocol/frame.h"
#include "protocol/opcodes.h"

namespace voxdb::protocol {

// Opcode, Role and what each opcode needs: protocol/opcodes.h.

struct Voxel3 {
  uint64_t x = 0, y = 0, z = 0;
  friend bool operator==(const Voxel3&, const Voxel3&) = default;
};
struct Box {
  Voxel3 lo, hi;  // hi exclusive
  friend bool operator==(const Box&, const Box&) = default;
};

// What a request's header must hold beyond what FrameDecoder checks
// (PROTOCOL.md, "Framing"): neither the reply nor the push flag, and status
// 0. INVALID otherwise (the connection stays).
absl::Status CheckRequestHeader(const FrameHeader& header);
// The requests whose payload is empty (FLUSH, STATS, REINDEX, LOD_REBUILD,
// SNAPSHOT_OPEN, STREAM_CLOSE, LOD_SYNC, PARTITIONS): INVALID when `payload` is not. OK for every
// other opcode (their Decode checks their payload).
absl::Status CheckEmptyPayload(Opcode op, std::span<const uint8_t> payload);

struct HelloRequest {
  // The protocol versions the client speaks; min_version > max_version is
  // INVALID.
  uint8_t min_version = 1, max_version = 1;
  std::string token;   // empty: none
  std::string client;  // free text, for logs
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<HelloRequest> Decode(std::span<const uint8_t> p);
};
struct HelloReply {
  uint8_t version = 1;
  std::vector<uint8_t> world_frame;  // the 56-byte record of engine/FORMAT.md
  std::string server_version;
  uint32_t max_payload = 0;     // largest frame payload accepted
  uint32_t max_batch = 0;       // most items in one GET_CHUNKS / GET_VOXELS / SET_VOXELS
  uint64_t max_box_voxels = 0;  // largest READ_BOX / WRITE_BOX
  uint8_t role = 0;             // the connection's Role after this HELLO
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<HelloReply> Decode(std::span<const uint8_t> p);
};

struct GetChunksRequest {
  std::vector<uint64_t> codes;  // chunk Morton codes (level > 0: LOD node codes)
  uint8_t level = 0;            // 0: the chunks; l >= 1: LOD level l
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<GetChunksRequest> Decode(std::span<const uint8_t> p);
};
struct ChunkResult {
  uint16_t status = 0;  // WireStatus
  uint64_t version = 0;
  std::vector<uint8_t> bytes;  // OK: the chunk record; else the error message
};
// A ChunkResult on the wire: status u16, version u64, length u32, then the
// bytes.
inline constexpr size_t kChunkResultHeaderBytes = 14;
// Appends one ChunkResult to a GET_CHUNKS reply being built in place (a
// FrameWriter with a count prefix), without copying the record first.
void AppendChunkResult(FrameWriter& out, WireStatus status, uint64_t version,
                       std::span<const uint8_t> bytes);
struct GetChunksReply {
  std::vector<ChunkResult> results;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<GetChunksReply> Decode(std::span<const uint8_t> p);
};

struct PutChunkRequest {
  uint64_t code = 0;
  std::optional<uint64_t> expected_version;
  std::vector<uint8_t> record;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<PutChunkRequest> Decode(std::span<const uint8_t> p);
};

struct GetVoxelsRequest {
  std::vector<Voxel3> at;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<GetVoxelsRequest> Decode(std::span<const uint8_t> p);
};

struct SetVoxelsRequest {
  struct Edit {
    Voxel3 at;
    uint8_t material = 0;
    friend bool operator==(const Edit&, const Edit&) = default;
  };
  std::vector<Edit> edits;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<SetVoxelsRequest> Decode(std::span<const uint8_t> p);
};

struct BoxRequest {  // READ_BOX (no voxels), WRITE_BOX (voxels), FILL_BOX (material)
  Box box;
  std::vector<uint8_t> voxels;
  uint8_t material = 0;
  std::vector<uint8_t> EncodeReadBox() const;
  std::vector<uint8_t> EncodeWriteBox() const;
  std::vector<uint8_t> EncodeFillBox() const;
  static absl::StatusOr<BoxRequest> DecodeReadBox(std::span<const uint8_t> p);
  static absl::StatusOr<BoxRequest> DecodeWriteBox(std::span<const uint8_t> p);
  static absl::StatusOr<BoxRequest> DecodeFillBox(std::span<const uint8_t> p);
};

// QUERY_RADIUS, QUERY_CELL, QUERY_RECT, QUERY_BOX (PROTOCOL.md, "Queries"):
// one struct for the four; `kind` says which region fields count. Floats
// travel as the IEEE-754 bits of a double in a u64; Decode refuses
// non-finite ones. Ranges (latitudes, limit) are the server's to check.
enum class QueryKind : uint8_t { kRadius, kCell, kRect, kBox };
// The most chunks one query reply may carry (its `limit`).
inline constexpr uint32_t kMaxQueryLimit = 65536;
// The opcode of a kind of query, and the kind of a query opcode (nullopt
// for other opcodes).
Opcode QueryOpcode(QueryKind kind);
std::optional<QueryKind> QueryKindOf(Opcode op);

struct AltitudeBand {
  double min_m = 0, max_m = 0;  // metres above sea level, inclusive
  friend bool operator==(const AltitudeBand&, const AltitudeBand&) = default;
};
struct LatLngRect {
  double lat_lo = 0, lon_lo = 0, lat_hi = 0, lon_hi = 0;  // degrees
  friend bool operator==(const LatLngRect&, const LatLngRect&) = default;
};

struct QueryRequest {
  QueryKind kind = QueryKind::kRadius;
  double lat = 0, lon = 0, radius = 0;  // kRadius: centre (degrees) and metres
  uint64_t cell = 0;                    // kCell: an S2 cell id
  LatLngRect rect;                      // kRect: lon_lo > lon_hi crosses the antimeridian
  Box box;                              // kBox
  std::optional<AltitudeBand> band;
  uint32_t limit = 1000;        // chunks per page
  std::vector<uint8_t> cursor;  // empty: the first page
  uint8_t level = 0;            // l >= 1: the LOD nodes of level l over the answer
  friend bool operator==(const QueryRequest&, const QueryRequest&) = default;

  // The payload of QueryOpcode(kind).
  std::vector<uint8_t> Encode() const;
  // `op` must be one of the four query opcodes (else INVALID).
  static absl::StatusOr<QueryRequest> Decode(Opcode op, std::span<const uint8_t> p);
};

struct QueryChunk {
  uint64_t code = 0;  // Morton code
  uint64_t version = 0;
  friend bool operator==(const QueryChunk&, const QueryChunk&) = default;
};
struct QueryFill {
  uint64_t seq = 0;
  Box box;
  uint8_t material = 0;
  friend bool operator==(const QueryFill&, const QueryFill&) = default;
};
struct QueryReply {
  std::vector<QueryChunk> chunks;
  std::vector<QueryFill> fills;      // the first page only
  std::vector<uint8_t> next_cursor;  // empty: the last page
  friend bool operator==(const QueryReply&, const QueryReply&) = default;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<QueryReply> Decode(std::span<const uint8_t> p);
};

// PARTITIONS' reply (PROTOCOL.md, "Partitions"): the partitions the node
// holds now, in range order.
struct PartitionInfo {
  uint64_t id = 0;
  uint64_t begin = 0, end = 0;  // its range of chunk codes, [begin, end)
  // Its environment's directory: relative to the data directory ("." for
  // the root partition), or absolute when it lives outside it.
  std::string dir;
  // The store's figures; false when they could not be read (every LMDB
  // reader slot taken): the five below are then 0.
  bool has_store = false;
  uint64_t chunks = 0, chunk_bytes = 0, used_bytes = 0, map_size = 0, max_map_size = 0;
  uint64_t last_seq = 0;  // the last sequence number its journal gave
  uint64_t epoch = 0;     // its current epoch
  friend bool operator==(const PartitionInfo&, const PartitionInfo&) = default;
};
struct PartitionsReply {
  std::vector<PartitionInfo> partitions;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<PartitionsReply> Decode(std::span<const uint8_t> p);
};

// SNAPSHOT_OPEN / SNAPSHOT_SCAN / SNAPSHOT_GET / SNAPSHOT_CLOSE
// (PROTOCOL.md, "Snapshots"). SNAPSHOT_OPEN's reply: the snapshot id and
// the sequence number of the newest write it holds.
struct SnapshotOpenReply {
  uint64_t snapshot = 0;
  uint64_t seq = 0;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<SnapshotOpenReply> Decode(std::span<const uint8_t> p);
};
// The chunks with a record in the snapshot inside `box`, in Morton order, a
// page at a time (QueryReply; fills meeting the box on the first page).
struct SnapshotScanRequest {
  uint64_t snapshot = 0;
  Box box;
  uint32_t limit = 1000;
  std::vector<uint8_t> cursor;  // empty: the first page
  friend bool operator==(const SnapshotScanRequest&, const SnapshotScanRequest&) = default;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<SnapshotScanRequest> Decode(std::span<const uint8_t> p);
};
// GET_CHUNKS in a snapshot (GetChunksReply).
struct SnapshotGetRequest {
  uint64_t snapshot = 0;
  std::vector<uint64_t> codes;
  friend bool operator==(const SnapshotGetRequest&, const SnapshotGetRequest&) = default;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<SnapshotGetRequest> Decode(std::span<const uint8_t> p);
};

// SUBSCRIBE (PROTOCOL.md, "Subscriptions"): the region is a query's
// (`kind` and its fields, and the optional band; limit, cursor and level are
// not sent), then what each event carries and where to resume.
enum class EventDetail : uint8_t {
  kNone = 0,     // chunk key and version only
  kVoxels = 1,   // also the changed voxels: SET_VOXELS edits, the WRITE_BOX box
  kRecords = 2,  // also the chunk record at that version, while it is current
};
// A range of chunk codes [begin, end) and a sequence number in it: where a
// subscription on a server of several partitions starts or resumes.
struct RangeSeq {
  uint64_t begin = 0, end = 0;
  uint64_t seq = 0;
  friend bool operator==(const RangeSeq&, const RangeSeq&) = default;
};
// The most resume points one SUBSCRIBE may carry.
inline constexpr size_t kMaxResumeRanges = 4096;
struct SubscribeRequest {
  QueryRequest region;  // kind, its region fields and band
  EventDetail detail = EventDetail::kNone;
  std::optional<uint64_t> from_seq;  // resume (has_from 1): every change after it
  // Resume per range (has_from 2; set with from_seq unset): sorted by
  // begin, each non-empty and inside the key space, disjoint.
  std::optional<std::vector<RangeSeq>> from_ranges;
  friend bool operator==(const SubscribeRequest&, const SubscribeRequest&) = default;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<SubscribeRequest> Decode(std::span<const uint8_t> p);
};
struct SubscribeReply {
  uint64_t subscription = 0;  // its id on this connection (the request id of its EVENTS)
  uint64_t seq = 0;           // events follow for every change after this
  // A server of several partitions: the range of each partition the region
  // meets and the seq its events follow (`seq` is then the highest). Empty
  // from a server of one partition (the reply is then 16 bytes).
  std::vector<RangeSeq> ranges = {};
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<SubscribeReply> Decode(std::span<const uint8_t> p);
};

// One change of an EVENTS frame.
enum class EventKind : uint8_t {
  kChunk = 1,  // a chunk changed: its new version is `seq`
  kFill = 2,   // FILL_BOX: every chunk of `box` not listed reads as it now
};
enum class EventDetailKind : uint8_t { kNone = 0, kEdits = 1, kBox = 2, kRecord = 3 };
struct ChangeEvent {
  uint64_t seq = 0;
  EventKind kind = EventKind::kChunk;
  // kChunk:
  uint64_t chunk = 0;    // Morton code
  bool present = false;  // false: it reads as the fills (deleted, or filled whole)
  EventDetailKind detail = EventDetailKind::kNone;
  std::vector<uint32_t> edits;  // kEdits: (local index | material << 21), in order
  std::vector<uint8_t> record;  // kRecord: the chunk record at version `seq`
  // kFill: the fill's box; kChunk with kBox: the written box within the chunk.
  Box box;
  uint8_t material = 0;  // kFill
  friend bool operator==(const ChangeEvent&, const ChangeEvent&) = default;
  void EncodeTo(std::vector<uint8_t>* out) const;
};
// The payload of an EVENTS push: n u32, then the events.
struct EventsPush {
  std::vector<ChangeEvent> events;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<EventsPush> Decode(std::span<const uint8_t> p);
};

// STREAM_UPDATE (PROTOCOL.md, "Streaming"): opens or updates the
// connection's stream.
struct Viewer {
  uint32_t id = 0;
  double x = 0, y = 0, z = 0;     // position, in voxels
  double vx = 0, vy = 0, vz = 0;  // velocity, voxels per second
  double view_distance_m = 0;
  friend bool operator==(const Viewer&, const Viewer&) = default;
};
struct StreamUpdateRequest {
  uint64_t budget_bytes_per_s = 0;  // 0: as fast as the connection takes
  uint32_t window_bytes = 0;        // 0: the server's default
  double lod_distance_m = 0;        // level-0 chunks within this; 0: level 0 only
  std::vector<Viewer> viewers;
  friend bool operator==(const StreamUpdateRequest&, const StreamUpdateRequest&) = default;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<StreamUpdateRequest> Decode(std::span<const uint8_t> p);
};
// One item of a STREAM_DATA push.
struct StreamItem {
  enum class Kind : uint8_t { kChunk = 1, kUnload = 2 } kind = Kind::kChunk;
  uint8_t level = 0;  // 0: a chunk; l >= 1: a LOD node of level l
  uint64_t code = 0;
  uint64_t version = 0;         // kChunk
  std::vector<uint8_t> record;  // kChunk: a chunk record
  friend bool operator==(const StreamItem&, const StreamItem&) = default;
  void EncodeTo(std::vector<uint8_t>* out) const;

  // What comes before an item's record: kind u8, level u8, code u64,
  // version u64, record length u32. EncodeHead writes it to `out`
  // (kHeadBytes), for a writer that appends the record itself.
  static constexpr size_t kHeadBytes = 22;
  static void EncodeHead(Kind kind, uint8_t level, uint64_t code, uint64_t version,
                         uint32_t record_bytes, uint8_t* out);
};
struct StreamDataPush {
  std::vector<StreamItem> items;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<StreamDataPush> Decode(std::span<const uint8_t> p);
};

// PARTITION_SPLIT: split partition `id` at chunk code `at`.
struct PartitionSplitRequest {
  uint64_t id = 0, at = 0;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<PartitionSplitRequest> Decode(std::span<const uint8_t> p);
};
// PARTITION_MOVE: move partition `id` to directory `dir` (absolute, at most
// kMaxDirBytes bytes; the server checks the rest).
struct PartitionMoveRequest {
  static constexpr size_t kMaxDirBytes = 4096;
  uint64_t id = 0;
  std::string dir;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<PartitionMoveRequest> Decode(std::span<const uint8_t> p);
};
// The OK reply of PARTITION_SPLIT and PARTITION_MOVE: what the layout change
// copied, how long the partition's writes waited, the partitions it made.
struct PartitionChangeReply {
  uint64_t chunks = 0, bytes = 0;
  uint64_t pause_us = 0;
  std::vector<uint64_t> new_ids;
  std::vector<uint8_t> Encode() const;
  static absl::StatusOr<PartitionChangeReply> Decode(std::span<const uint8_t> p);
};

// Single u64 payloads: DELETE_CHUNK requests (a chunk code), the replies of
// writes (the new version) and of REINDEX (the index entries).
std::vector<uint8_t> EncodeU64(uint64_t v);
absl::StatusOr<uint64_t> DecodeU64(std::span<const uint8_t> p);

}  // namespace voxdb::protocol

#endif  // VOXDB_PROTOCOL_MESSAGES_H_
