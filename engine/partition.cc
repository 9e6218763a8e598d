#include "engine/partition.h"

#include "absl/strings/str_format.h"
#include "engine/coding.h"

namespace voxdb::engine {

Status CheckPartitionIdentity(const PartitionIdentity& p) {
  if (p.range.empty() || p.range.end > ChunkKey::kMaxCode + 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the partition's range [%u, %u) must be non-empty and inside the key space [0, %u)",
        p.range.begin, p.range.end, ChunkKey::kMaxCode + 1));
  }
  return absl::OkStatus();
}

std::string DescribePartition(const PartitionIdentity& p) {
  return absl::StrFormat("partition %u (chunk codes [%u, %u))", p.id, p.range.begin, p.range.end);
}

uint64_t EpochOfSeq(const EpochHistory& history, uint64_t seq) {
  uint64_t epoch = 0;
  for (const EpochStart& e : history) {
    if (e.first_seq > seq) break;
    epoch = e.epoch;
  }
  return epoch;
}

std::vector<uint8_t> EncodeMortonRange(const MortonRange& r) {
  std::vector<uint8_t> out;
  PutFixed64(out, r.begin);
  PutFixed64(out, r.end);
  return out;
}

StatusOr<MortonRange> DecodeMortonRange(std::span<const uint8_t> value) {
  if (value.size() != 16) {
    return CorruptError(absl::StrFormat("a partition range has %u bytes, not 16", value.size()));
  }
  return MortonRange{DecodeFixed64(value.data()), DecodeFixed64(value.data() + 8)};
}

std::vector<uint8_t> EncodeEpochHistory(const EpochHistory& history) {
  std::vector<uint8_t> out;
  out.reserve(16 * history.size());
  for (const EpochStart& e : history) {
    PutFixed64(out, e.epoch);
    PutFixed64(out, e.first_seq);
  }
  return out;
}

StatusOr<EpochHistory> DecodeEpochHistory(std::span<const uint8_t> value) {
  if (value.size() % 16 != 0) {
    return CorruptError(
        absl::StrFormat("an epoch history has %u bytes, not a multiple of 16", value.size()));
  }
  EpochHistory history;
  for (size_t i = 0; i < value.size(); i += 16) {
    const EpochStart e{DecodeFixed64(value.data() + i), DecodeFixed64(value.data() + i + 8)};
    if (!history.empty() &&
        (e.epoch <= history.back().epoch || e.first_seq < history.back().first_seq)) {
      return CorruptError(
          absl::StrFormat("the epoch history is out of order: (%u, %u) after (%u, %u)", e.epoch,
                          e.first_seq, history.back().epoch, history.back().first_seq));
    }
    history.push_back(e);
  }
  return history;
}

}  // namespace voxdb::engine
