// The names engine/FORMAT.md gives, declared once: the keys of the meta
// table, the files of a database directory, and a cheap look at a chunk
// record's header. Code that reads the store directly (index/, cli/, the
// daemon, the engine's own tools) takes them from here instead of spelling
// them again; changing an on-disk name means changing this file and
// FORMAT.md.
//
// The byte layout of a chunk record stays with its codec
// (engine/chunk_codec.{h,cc}); PeekChunkHeader is the codec's unchecked
// reading of it, for callers that only need to tell a fills marker or a
// version from a record.
//
// Example:
//   auto v = snapshot->Get(Table::kMeta, AsBytes(kMetaLastSeq));
//   const std::string data = dir + "/" + kDataFile;
//   if (auto h = PeekChunkHeader(record); h && h->encoding != ChunkEncoding::kFills) ...
//
// Thread-safety: constants and pure functions.
#ifndef VOXDB_ENGINE_FORMAT_H_
#define VOXDB_ENGINE_FORMAT_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "engine/chunk_codec.h"
#include "engine/coding.h"

namespace voxdb::engine {

// --- The meta table (FORMAT.md, "meta") ------------------------------------
// Keys are these ASCII names; AsBytes (engine/coding.h) makes them keys.

// u32: the store format (kStoreFormatVersion); written by ChunkStore.
inline constexpr std::string_view kMetaFormatVersion = "format_version";
// The world frame record (WorldFrame::Encode); written by ChunkStore.
inline constexpr std::string_view kMetaWorldFrame = "world_frame";
// i64: creation time in microseconds; written by ChunkStore.
inline constexpr std::string_view kMetaCreated = "created_us";
// u64: the highest sequence number handed out before the last flush;
// written by Database.
inline constexpr std::string_view kMetaLastSeq = "last_seq";
// u64: no sequence number above it has been handed out; written by
// Database.
inline constexpr std::string_view kMetaSeqReserved = "seq_reserved";
// u32: the S2 index's format, once built; written by index/.
inline constexpr std::string_view kMetaIndexFormat = "s2index_format";
// The partition's identity (engine/partition.h), written by Database at the
// first open that finds none: u64 id; begin, end (u64 each); u64 parent.
inline constexpr std::string_view kMetaPartitionId = "partition_id";
inline constexpr std::string_view kMetaPartitionRange = "partition_range";
inline constexpr std::string_view kMetaPartitionParent = "partition_parent";
// (epoch, first_seq) pairs (u64 each), oldest first; written by
// Database::AdoptEpoch. Absent: epoch 0.
inline constexpr std::string_view kMetaEpochHistory = "epoch_history";

// Every meta key this build writes (anything else is unknown).
inline constexpr std::string_view kMetaKeys[] = {
    kMetaFormatVersion,   kMetaWorldFrame,  kMetaCreated,     kMetaLastSeq,
    kMetaSeqReserved,     kMetaIndexFormat, kMetaPartitionId, kMetaPartitionRange,
    kMetaPartitionParent, kMetaEpochHistory};

// --- The database directory (FORMAT.md, "The database directory") ----------

// The LMDB environment: all the data.
inline constexpr char kDataFile[] = "data.mdb";
// LMDB's reader table: no data; recreated by the next open.
inline constexpr char kLmdbLockFile[] = "lock.mdb";
// flocked by the owner (ChunkStore::Open, exclusive; voxdb compact through
// ChunkStore::LockDirectory); holds the owner's pid, for information.
inline constexpr char kLockFile[] = "LOCK";

// --- Chunk records (FORMAT.md, "chunks") -----------------------------------

// The header of a chunk record as its bytes say, without the checksum or
// any other check: the encoding may be a value this build does not know,
// and the fields may be damage. nullopt when the record is shorter than a
// header. ParseChunkRecord (engine/chunk_codec.h) is the checked read;
// this is for scans that must not pay for a CRC per record. Defined in
// engine/chunk_codec.cc, next to the layout.
std::optional<ChunkRecordHeader> PeekChunkHeader(std::span<const uint8_t> record);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_FORMAT_H_
