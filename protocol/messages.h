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

namespace voxdb::protocol {

enum class Opcode : uint8_t {
  kHello = 1,
  kPing = 2,
  kGetChunks = 3,
  kPutChunk = 4,
  kDeleteChunk = 5,
  kGetVoxels = 6,
  kSetVoxels = 7,
  kReadBox = 8,
  kWriteBox = 9,
  kFillBox = 10,
  kFlush = 11,
  kStats = 12,
  kQueryRadius = 13,
  kQueryCell = 14,
  kQueryRect = 15,
  kQueryBox = 16,
  kReindex = 17,
  kBackup = 18,
  kLodRebuild = 19,
  kSnapshotOpen = 20,
  kSnapshotScan = 21,
  kSnapshotGet = 22,
  kSnapshotClose = 23,
};
const char* OpcodeName(Opcode op);  // "GET_CHUNKS", ...; "UNKNOWN" otherwise

struct Voxel3 {
  uint64_t x = 0, y = 0, z = 0;
  friend bool operator==(const Voxel3&, const Voxel3&) = default;
};
struct Box {
  Voxel3 lo, hi;  // hi exclusive
  friend bool operator==(const Box&, const Box&) = default;
};

// What a token allows (PROTOCOL.md, "Authentication"); each role includes
// the ones below it.
enum class Role : uint8_t { kNone = 0, kRead = 1, kWrite = 2, kAdmin = 3 };
const char* RoleName(Role role);  // "none", "read", "write", "admin"
// The least role a request needs.
Role RequiredRole(Opcode op);

struct HelloRequest {
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

// Single u64 payloads: DELETE_CHUNK requests (a chunk code), the replies of
// writes (the new version) and of REINDEX (the index entries).
std::vector<uint8_t> EncodeU64(uint64_t v);
absl::StatusOr<uint64_t> DecodeU64(std::span<const uint8_t> p);

}  // namespace voxdb::protocol

#endif  // VOXDB_PROTOCOL_MESSAGES_H_
