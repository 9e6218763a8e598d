#include "engine/partition_copy.h"

#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/fills.h"
#include "engine/format.h"
#include "engine/journal.h"
#include "engine/partition_range.h"
#include "engine/voxel_box.h"
#include "engine/world_frame.h"

namespace voxdb::engine {
namespace {

// Encoded bytes per write transaction of a copy.
constexpr size_t kBatchBytes = size_t{16} << 20;

}  // namespace

PartitionCopy::PartitionCopy(std::vector<Target> targets, const WorldFrame& frame)
    : targets_(std::move(targets)), frame_(frame) {}

PartitionCopy::~PartitionCopy() = default;

StatusOr<std::unique_ptr<PartitionCopy>> PartitionCopy::Create(std::vector<CopyTarget> specs,
                                                               const WorldFrame& frame,
                                                               const StoreOptions& store) {
  std::vector<Target> targets;
  for (CopyTarget& spec : specs) {
    struct stat st;
    if (::stat((spec.dir + "/data.mdb").c_str(), &st) == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s already holds a database: a copy only goes to a new one", spec.dir));
    }
    StoreOptions o = store;
    o.frame = frame;
    o.create_if_missing = true;
    VOXDB_ASSIGN_OR_RETURN(auto opened, ChunkStore::Open(spec.dir, o));
    targets.push_back(Target{std::move(spec), std::move(opened), {}, 0});
  }
  return std::unique_ptr<PartitionCopy>(new PartitionCopy(std::move(targets), frame));
}

Status PartitionCopy::CopyChunks(const DatabaseSnapshot& snap, Target& t,
                                 const std::vector<uint64_t>& keys) {
  // The records are read again by key: ScanRecords' spans end with its
  // callback, and holding a whole batch of them would mean copying anyway.
  WriteBatch batch;
  size_t bytes = 0;
  Status status;
  for (size_t begin = 0; begin < keys.size() && status.ok();) {
    const size_t end = std::min(keys.size(), begin + 256);
    const MortonRange r{keys[begin], keys[end - 1] + 1};
    size_t next = begin;
    VOXDB_RETURN_IF_ERROR(
        snap.ScanRecords(r, [&](ChunkKey key, uint64_t, const DatabaseSnapshot::RecordFn& record) {
          while (next < end && keys[next] < key.code()) ++next;
          if (next == end) return false;
          if (keys[next] != key.code()) return true;
          const std::span<const uint8_t> rec = record();
          bytes += rec.size();
          progress_.bytes += rec.size();
          ++progress_.chunks;
          batch.PutChunk(key, std::vector<uint8_t>(rec.begin(), rec.end()));
          return true;
        }));
    begin = end;
    if (bytes >= kBatchBytes) {
      status = t.store->Write(batch);
      batch.Clear();
      bytes = 0;
    }
  }
  if (status.ok() && bytes > 0) status = t.store->Write(batch);
  return status;
}

Status PartitionCopy::CopyFillsAndSeq(const DatabaseSnapshot& snap, Target& t) {
  WriteBatch batch;
  for (const Fill& f : snap.fills().fills()) {
    if (f.seq <= t.fill_seq) continue;
    if (!BoxMeetsRange(ChunksCovering(frame_, f.box), t.spec.range)) continue;
    batch.Put(Table::kFills, JournalKey(f.seq), f.Encode());
    ++progress_.fills;
  }
  t.fill_seq = std::max(t.fill_seq, snap.fills().last_seq());
  // The new environment numbers its writes after every version it holds.
  std::vector<uint8_t> last(8);
  EncodeFixed64(last.data(), snap.seq());
  batch.Put(Table::kMeta, AsBytes(kMetaLastSeq), last);
  const PartitionIdentity& p = t.spec.identity;
  EncodeFixed64(last.data(), p.id);
  batch.Put(Table::kMeta, AsBytes(kMetaPartitionId), last);
  batch.Put(Table::kMeta, AsBytes(kMetaPartitionRange), EncodeMortonRange(p.range));
  EncodeFixed64(last.data(), p.parent);
  batch.Put(Table::kMeta, AsBytes(kMetaPartitionParent), std::move(last));
  if (!t.spec.epochs.empty()) {
    batch.Put(Table::kMeta, AsBytes(kMetaEpochHistory), EncodeEpochHistory(t.spec.epochs));
  }
  return t.store->Write(batch);
}

Status PartitionCopy::Copy(const DatabaseSnapshot& first) {
  first_seq_ = first.seq();
  for (Target& t : targets_) {
    std::vector<uint64_t> keys;
    VOXDB_RETURN_IF_ERROR(first.ScanRecords(
        t.spec.range, [&](ChunkKey key, uint64_t version, const DatabaseSnapshot::RecordFn&) {
          t.copied.emplace_back(key.code(), version);
          keys.push_back(key.code());
          return true;
        }));
    VOXDB_RETURN_IF_ERROR(CopyChunks(first, t, keys));
    VOXDB_RETURN_IF_ERROR(CopyFillsAndSeq(first, t));
  }
  return absl::OkStatus();
}

Status PartitionCopy::CatchUp(const DatabaseSnapshot& last) {
  for (Target& t : targets_) {
    // Merge the versions now against those copied: new or changed chunks
    // are copied again, chunks without a record now are deleted.
    std::vector<uint64_t> changed;
    WriteBatch deletes;
    size_t i = 0;
    VOXDB_RETURN_IF_ERROR(last.ScanRecords(
        t.spec.range, [&](ChunkKey key, uint64_t version, const DatabaseSnapshot::RecordFn&) {
          for (; i < t.copied.size() && t.copied[i].first < key.code(); ++i) {
            deletes.DeleteChunk(ChunkKey::FromCode(t.copied[i].first));
            ++progress_.deleted;
          }
          if (i < t.copied.size() && t.copied[i].first == key.code()) {
            if (t.copied[i].second != version) changed.push_back(key.code());
            ++i;
          } else {
            changed.push_back(key.code());
          }
          return true;
        }));
    for (; i < t.copied.size(); ++i) {
      deletes.DeleteChunk(ChunkKey::FromCode(t.copied[i].first));
      ++progress_.deleted;
    }
    VOXDB_RETURN_IF_ERROR(t.store->Write(deletes));
    VOXDB_RETURN_IF_ERROR(CopyChunks(last, t, changed));
    VOXDB_RETURN_IF_ERROR(CopyFillsAndSeq(last, t));
    VOXDB_RETURN_IF_ERROR(t.store->Sync());
  }
  return absl::OkStatus();
}

}  // namespace voxdb::engine
