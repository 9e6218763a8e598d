// engine::PartitionIdentity: which part of the key space a Database holds
// (the shared SCALE-OUT design, §4.2): its id, its Morton range of chunk
// codes, the partition it was split from, and its epoch history, the
// (epoch, first sequence number) pairs a fencing owner adopted, as in
// Kafka's leader-epoch checkpoint. All of it lives in the meta table
// (engine/FORMAT.md, "meta"); this header holds the value types and their
// encodings, engine/database.h what a Database does with them.
//
// Example:
//   DatabaseOptions options;
//   options.partition = {.id = 3, .range = {0, uint64_t{1} << 60}, .parent = 0};
//   VOXDB_ASSIGN_OR_RETURN(auto db, Database::Open(dir, options));
//   uint64_t e = EpochOfSeq(db->epoch_history(), seq);  // the epoch seq was written in
//
// Thread-safety: value types and pure functions.
#ifndef VOXDB_ENGINE_PARTITION_H_
#define VOXDB_ENGINE_PARTITION_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/morton.h"
#include "engine/status.h"

namespace voxdb::engine {

struct PartitionIdentity {
  // 0: the root, a database never split; children of a split get ids from 1.
  uint64_t id = 0;
  // The chunk codes it holds; writes and reads of others are WRONG_PARTITION.
  MortonRange range = MortonRange::All();
  // The partition it was split from; 0: none.
  uint64_t parent = 0;
  friend bool operator==(const PartitionIdentity&, const PartitionIdentity&) = default;
};

// INVALID unless the range is non-empty and inside the key space.
Status CheckPartitionIdentity(const PartitionIdentity& p);
// "partition 3 (chunk codes [0, 1152921504606846976))", for messages.
std::string DescribePartition(const PartitionIdentity& p);

// An epoch and the first sequence number handed out in it.
struct EpochStart {
  uint64_t epoch = 0;
  uint64_t first_seq = 0;
  friend bool operator==(const EpochStart&, const EpochStart&) = default;
};
// Oldest first: epochs strictly increasing, first_seq never decreasing. The
// current epoch is the last one's; an empty history is epoch 0.
using EpochHistory = std::vector<EpochStart>;

// The epoch sequence number `seq` was handed out in: the last entry whose
// first_seq is at most seq; 0 before the first.
uint64_t EpochOfSeq(const EpochHistory& history, uint64_t seq);

// The meta values (engine/FORMAT.md): a range is begin, end (u64 each); a
// history is its entries, epoch then first_seq (u64 each). The decoders
// answer CORRUPT for a value of the wrong size or out of order.
std::vector<uint8_t> EncodeMortonRange(const MortonRange& r);
StatusOr<MortonRange> DecodeMortonRange(std::span<const uint8_t> value);
std::vector<uint8_t> EncodeEpochHistory(const EpochHistory& history);
StatusOr<EpochHistory> DecodeEpochHistory(std::span<const uint8_t> value);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_PARTITION_H_
