// The opcodes of the voxdb wire protocol, version 1, as one table
// (protocol/PROTOCOL.md, "Requests" and "Authentication"): each row is an
// opcode's value, its name on the wire and in logs and metrics, the least
// role a connection needs to send it, and whether clients send it (a
// request) or only the server does (a push, with kFlagPush).
//
// Every fact about an opcode that is not its payload lives here:
// OpcodeName(), RequiredRole(), the daemon's gate and its per-opcode metric
// rows all read this table, and tests/daemon/dispatch_test.cc checks it
// against PROTOCOL.md. Adding an opcode is one row here, its payload in
// protocol/messages.h and its handler in daemon/dispatch.cc.
//
// Thread-safety: constants and pure functions.
#ifndef VOXDB_PROTOCOL_OPCODES_H_
#define VOXDB_PROTOCOL_OPCODES_H_

#include <array>
#include <cstdint>

namespace voxdb::protocol {

// What a token allows (PROTOCOL.md, "Authentication"); each role includes
// the ones below it. kNone: a connection that has not authenticated.
enum class Role : uint8_t { kNone = 0, kRead = 1, kWrite = 2, kAdmin = 3 };

// Who sends an opcode's frames.
enum class OpcodeKind : uint8_t {
  kRequest,  // the client; the server replies with kFlagReply
  kPush,     // only the server, unasked (kFlagPush); a client sending it gets INVALID
};

// X(enumerator, value, name, role, kind). Pushes need no role: a client
// sending one is answered INVALID whatever its role.
#define VOXDB_PROTOCOL_OPCODES(X)                             \
  X(kHello, 1, "HELLO", kNone, kRequest)                      \
  X(kPing, 2, "PING", kNone, kRequest)                        \
  X(kGetChunks, 3, "GET_CHUNKS", kRead, kRequest)             \
  X(kPutChunk, 4, "PUT_CHUNK", kWrite, kRequest)              \
  X(kDeleteChunk, 5, "DELETE_CHUNK", kWrite, kRequest)        \
  X(kGetVoxels, 6, "GET_VOXELS", kRead, kRequest)             \
  X(kSetVoxels, 7, "SET_VOXELS", kWrite, kRequest)            \
  X(kReadBox, 8, "READ_BOX", kRead, kRequest)                 \
  X(kWriteBox, 9, "WRITE_BOX", kWrite, kRequest)              \
  X(kFillBox, 10, "FILL_BOX", kWrite, kRequest)               \
  X(kFlush, 11, "FLUSH", kAdmin, kRequest)                    \
  X(kStats, 12, "STATS", kRead, kRequest)                     \
  X(kQueryRadius, 13, "QUERY_RADIUS", kRead, kRequest)        \
  X(kQueryCell, 14, "QUERY_CELL", kRead, kRequest)            \
  X(kQueryRect, 15, "QUERY_RECT", kRead, kRequest)            \
  X(kQueryBox, 16, "QUERY_BOX", kRead, kRequest)              \
  X(kReindex, 17, "REINDEX", kAdmin, kRequest)                \
  X(kBackup, 18, "BACKUP", kAdmin, kRequest)                  \
  X(kLodRebuild, 19, "LOD_REBUILD", kAdmin, kRequest)         \
  X(kSnapshotOpen, 20, "SNAPSHOT_OPEN", kRead, kRequest)      \
  X(kSnapshotScan, 21, "SNAPSHOT_SCAN", kRead, kRequest)      \
  X(kSnapshotGet, 22, "SNAPSHOT_GET", kRead, kRequest)        \
  X(kSnapshotClose, 23, "SNAPSHOT_CLOSE", kRead, kRequest)    \
  X(kSubscribe, 24, "SUBSCRIBE", kRead, kRequest)             \
  X(kUnsubscribe, 25, "UNSUBSCRIBE", kRead, kRequest)         \
  X(kEvents, 26, "EVENTS", kNone, kPush)                      \
  X(kStreamUpdate, 27, "STREAM_UPDATE", kRead, kRequest)      \
  X(kStreamClose, 28, "STREAM_CLOSE", kRead, kRequest)        \
  X(kStreamData, 29, "STREAM_DATA", kNone, kPush)             \
  X(kLodSync, 30, "LOD_SYNC", kWrite, kRequest)               \
  X(kPartitions, 31, "PARTITIONS", kRead, kRequest)           \
  X(kPartitionSplit, 32, "PARTITION_SPLIT", kAdmin, kRequest) \
  X(kPartitionMove, 33, "PARTITION_MOVE", kAdmin, kRequest)

enum class Opcode : uint8_t {
#define VOXDB_PROTOCOL_OPCODE_ENUM(id, value, name, role, kind) id = value,
  VOXDB_PROTOCOL_OPCODES(VOXDB_PROTOCOL_OPCODE_ENUM)
#undef VOXDB_PROTOCOL_OPCODE_ENUM
};

struct OpcodeInfo {
  Opcode op;
  const char* name;  // as in PROTOCOL.md: "GET_CHUNKS"
  Role role;         // the least role that may send it
  OpcodeKind kind;
};

// Every opcode, in the order of their values.
inline constexpr OpcodeInfo kOpcodes[] = {
#define VOXDB_PROTOCOL_OPCODE_ROW(id, value, name, role, kind) \
  {Opcode::id, name, Role::role, OpcodeKind::kind},
    VOXDB_PROTOCOL_OPCODES(VOXDB_PROTOCOL_OPCODE_ROW)
#undef VOXDB_PROTOCOL_OPCODE_ROW
};

namespace opcodes_internal {
// kOpcodes' row of each byte value, -1 for none.
inline constexpr std::array<int8_t, 256> kRowOf = [] {
  std::array<int8_t, 256> rows{};
  rows.fill(-1);
  for (size_t i = 0; i < std::size(kOpcodes); ++i) {
    rows[static_cast<uint8_t>(kOpcodes[i].op)] = static_cast<int8_t>(i);
  }
  return rows;
}();
}  // namespace opcodes_internal

// The row of `op`, or nullptr for a value that is no opcode.
constexpr const OpcodeInfo* FindOpcode(uint8_t op) {
  const int row = opcodes_internal::kRowOf[op];
  return row < 0 ? nullptr : &kOpcodes[row];
}
constexpr const OpcodeInfo* FindOpcode(Opcode op) { return FindOpcode(static_cast<uint8_t>(op)); }

// "GET_CHUNKS", ...; "UNKNOWN" for a value that is no opcode.
constexpr const char* OpcodeName(Opcode op) {
  const OpcodeInfo* info = FindOpcode(op);
  return info == nullptr ? "UNKNOWN" : info->name;
}

// The least role a request needs; kNone for a push (a client sending one
// is answered INVALID) and for a value that is no opcode (UNSUPPORTED).
constexpr Role RequiredRole(Opcode op) {
  const OpcodeInfo* info = FindOpcode(op);
  return info == nullptr ? Role::kNone : info->role;
}

// Whether clients send `op` (false for pushes and unknown values).
constexpr bool IsRequest(Opcode op) {
  const OpcodeInfo* info = FindOpcode(op);
  return info != nullptr && info->kind == OpcodeKind::kRequest;
}

// "none", "read", "write", "admin" (the words of `token = ROLE:SECRET`);
// "unknown" otherwise.
constexpr const char* RoleName(Role role) {
  constexpr const char* kNames[] = {"none", "read", "write", "admin"};
  const auto i = static_cast<size_t>(role);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

}  // namespace voxdb::protocol

#endif  // VOXDB_PROTOCOL_OPCODES_H_
