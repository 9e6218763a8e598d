#include "engine/node_snapshot.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace voxdb::engine {
namespace {

// How often SnapshotOf takes the new layout when a split or move replaced
// one of its partitions while it waited: each replacement is a whole
// layout change, so more than a few in a row means they keep coming.
constexpr int kMaxLayoutRetries = 8;

Status CheckRegion(const WorldFrame& frame, const ChunkBox& region) {
  if (region.lo.x > region.hi.x || region.lo.y > region.hi.y || region.lo.z > region.hi.z) {
    return absl::InvalidArgumentError("the snapshot's region has a low corner above its high one");
  }
  VOXDB_RETURN_IF_ERROR(frame.CheckChunk(region.lo));
  return frame.CheckChunk(region.hi);
}

}  // namespace

StatusOr<std::unique_ptr<NodeSnapshot>> SnapshotOf(Node& node, std::optional<ChunkBox> region) {
  if (region) VOXDB_RETURN_IF_ERROR(CheckRegion(node.frame(), *region));
  for (int attempt = 0; attempt < kMaxLayoutRetries; ++attempt) {
    const std::shared_ptr<const Node::Layout> layout = node.layout();
    std::vector<size_t> indices;
    if (region) {
      indices = layout->ranges.Meeting(*region);
    } else {
      for (size_t i = 0; i < layout->parts.size(); ++i) indices.push_back(i);
    }
    auto snap = std::unique_ptr<NodeSnapshot>(new NodeSnapshot(node.frame(), region));
    Status status;
    // Only the Database snapshots are taken while writes wait (each returns
    // once the writes submitted before it are durable: about one commit).
    const bool taken = node.WithWritesPaused(*layout, indices, [&] {
      for (size_t i : indices) {
        const Node::Part& part = layout->parts[i];
        StatusOr<std::unique_ptr<DatabaseSnapshot>> s = part.db->Snapshot();
        if (!s.ok()) {
          status = s.status();
          return;
        }
        snap->parts_.push_back(NodeSnapshot::Part{part.spec, part.db, std::move(*s)});
      }
    });
    if (!taken) continue;  // a partition was replaced: the new layout
    if (!status.ok()) return status;
    return snap;
  }
  return BusyError(absl::StrFormat(
      "the node's layout changed %d times while a snapshot was taken: try again later",
      kMaxLayoutRetries));
}

NodeSnapshot::~NodeSnapshot() = default;

std::vector<NodeSnapshot::PartitionSeq> NodeSnapshot::seqs() const {
  std::vector<PartitionSeq> out;
  out.reserve(parts_.size());
  for (const Part& p : parts_) out.push_back({p.spec.id, p.spec.range, p.snapshot->seq()});
  return out;
}

uint64_t NodeSnapshot::seq() const {
  uint64_t seq = 0;
  for (const Part& p : parts_) seq = std::max(seq, p.snapshot->seq());
  return seq;
}

size_t NodeSnapshot::Find(uint64_t code) const {
  // The last part starting at or before `code`.
  auto it = std::upper_bound(parts_.begin(), parts_.end(), code,
                             [](uint64_t c, const Part& p) { return c < p.spec.range.begin; });
  if (it == parts_.begin()) return parts_.size();
  --it;
  return it->spec.range.Contains(code) ? static_cast<size_t>(it - parts_.begin()) : parts_.size();
}

bool NodeSnapshot::Covers(ChunkKey key) const { return Find(key.code()) < parts_.size(); }

Status NodeSnapshot::GetChunks(std::span<const ChunkKey> keys,
                               const std::function<void(size_t, const ChunkRead&)>& fn) const {
  // Runs of consecutive keys in one partition, so that fn still sees the
  // keys in order.
  for (size_t begin = 0; begin < keys.size();) {
    const size_t p = Find(keys[begin].code());
    if (p == parts_.size()) {
      ChunkRead read;
      read.key = keys[begin];
      read.status = frame_.CheckChunk(keys[begin].coord());
      if (read.status.ok()) {
        read.status = absl::NotFoundError(
            absl::StrCat("chunk ", keys[begin].ToString(), " (code ", keys[begin].code(),
                         ") is outside the partitions of this snapshot's region"));
      }
      fn(begin, read);
      ++begin;
      continue;
    }
    const MortonRange r = parts_[p].spec.range;
    size_t end = begin + 1;
    while (end < keys.size() && r.Contains(keys[end].code())) ++end;
    VOXDB_RETURN_IF_ERROR(parts_[p].snapshot->GetChunks(
        keys.subspan(begin, end - begin),
        [&](size_t i, const ChunkRead& read) { fn(begin + i, read); }));
    begin = end;
  }
  return absl::OkStatus();
}

Status NodeSnapshot::ScanChunks(const ChunkBox& box, uint64_t from,
                                const std::function<bool(ChunkKey, uint64_t)>& fn) const {
  // Partitions are contiguous code ranges in order: their scans, one after
  // the other, are in Morton order.
  bool stopped = false;
  const auto go_on = [&](ChunkKey key, uint64_t version) {
    stopped = !fn(key, version);
    return !stopped;
  };
  for (const Part& p : parts_) {
    if (stopped || from > box.MaxCode() || p.spec.range.begin > box.MaxCode()) break;
    if (p.spec.range.end <= from || !BoxMeetsRange(box, p.spec.range)) continue;
    VOXDB_RETURN_IF_ERROR(p.snapshot->ScanChunks(box, std::max(from, p.spec.range.begin), go_on));
  }
  return absl::OkStatus();
}

Status NodeSnapshot::ScanRecords(
    const MortonRange& range,
    const std::function<bool(ChunkKey, uint64_t, const DatabaseSnapshot::RecordFn&)>& fn) const {
  bool stopped = false;
  const auto go_on = [&](ChunkKey key, uint64_t version, const DatabaseSnapshot::RecordFn& rec) {
    stopped = !fn(key, version, rec);
    return !stopped;
  };
  for (const Part& p : parts_) {
    if (stopped) break;
    const MortonRange part{std::max(range.begin, p.spec.range.begin),
                           std::min(range.end, p.spec.range.end)};
    if (part.begin >= part.end) continue;
    VOXDB_RETURN_IF_ERROR(p.snapshot->ScanRecords(part, go_on));
  }
  return absl::OkStatus();
}

std::vector<Fill> NodeSnapshot::FillsMeeting(const VoxelBox& box) const {
  std::vector<Fill> out;
  for (const Part& p : parts_) {
    for (const Fill& f : p.snapshot->fills().fills()) {
      if (Meets(f.box, box)) out.push_back(f);
    }
  }
  // A fill a split's children inherited is in each of them: once. Two
  // pieces of one sequence number from different partitions are different
  // fills (each partition numbers its own writes) in different chunks.
  const auto key = [](const Fill& f) {
    return std::make_tuple(f.seq, f.box.lo.x, f.box.lo.y, f.box.lo.z, f.box.hi.x, f.box.hi.y,
                           f.box.hi.z, f.material);
  };
  std::sort(out.begin(), out.end(), [&](const Fill& a, const Fill& b) { return key(a) < key(b); });
  out.erase(std::unique(out.begin(), out.end(),
                        [&](const Fill& a, const Fill& b) { return key(a) == key(b); }),
            out.end());
  return out;
}

}  // namespace voxdb::engine
