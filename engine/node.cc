#include "engine/node.h"

#include <algorithm>
#include <future>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/voxel_box.h"
#include "engine/world_frame.h"

namespace voxdb::engine {
namespace {

// Completes `done` once every part of a write that spans partitions has
// completed: with the first error of a part, else OK and the highest
// version of the parts.
class Join {
 public:
  // A callback for one part; `parts` of them must be made and called.
  static std::vector<WriteDone> Split(size_t parts, WriteDone done) {
    if (parts == 1) return {std::move(done)};
    auto join = std::make_shared<Join>(parts, std::move(done));
    std::vector<WriteDone> each;
    each.reserve(parts);
    for (size_t i = 0; i < parts; ++i) {
      each.push_back([join](const WriteResult& r) { join->Done(r); });
    }
    return each;
  }

  Join(size_t parts, WriteDone done) : remaining_(parts), done_(std::move(done)) {}

 private:
  void Done(const WriteResult& r) {
    WriteResult result;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!r.status.ok() && result_.status.ok()) result_.status = r.status;
      result_.version = std::max(result_.version, r.version);
      if (--remaining_ > 0) return;
      result = result_;
    }
    if (!result.status.ok()) result.version = 0;
    if (done_) done_(result);
  }

  std::mutex mu_;
  size_t remaining_;
  WriteResult result_;
  WriteDone done_;
};

WriteResult Wait(const std::function<void(WriteDone)>& submit) {
  std::promise<WriteResult> promise;
  std::future<WriteResult> future = promise.get_future();
  submit([&promise](const WriteResult& r) { promise.set_value(r); });
  return future.get();
}

// The voxels of the chunks of `cb`, clipped to the world.
VoxelBox VoxelsOfChunks(const WorldFrame& frame, const ChunkBox& cb) {
  const VoxelBox lo = frame.VoxelsOfChunk(cb.lo);
  const VoxelBox hi = frame.VoxelsOfChunk(cb.hi);
  return VoxelBox{lo.lo, hi.hi};
}

}  // namespace

Node::Node(PartitionRanges ranges, std::vector<Part> parts, int align_levels)
    : ranges_(std::move(ranges)), parts_(std::move(parts)), align_levels_(align_levels) {}

Node::~Node() = default;

StatusOr<std::unique_ptr<Node>> Node::Open(std::vector<PartitionSpec> specs,
                                           const NodeOptions& options) {
  std::sort(specs.begin(), specs.end(), [](const PartitionSpec& a, const PartitionSpec& b) {
    return a.range.begin < b.range.begin;
  });
  std::vector<uint64_t> starts;
  for (size_t i = 0; i < specs.size(); ++i) {
    const MortonRange& r = specs[i].range;
    const uint64_t want_end =
        i + 1 < specs.size() ? specs[i + 1].range.begin : MortonRange::All().end;
    if (r.end != want_end || !IsAlignedRange(r, options.align_levels)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "partition %u's range [%u, %u) does not tile the key space in ranges aligned to 8^%d",
          specs[i].id, r.begin, r.end, options.align_levels));
    }
    for (size_t j = 0; j < i; ++j) {
      if (specs[j].id == specs[i].id) {
        return absl::InvalidArgumentError(
            absl::StrFormat("two partitions have the id %u", specs[i].id));
      }
    }
    starts.push_back(r.begin);
  }
  StatusOr<PartitionRanges> ranges = PartitionRanges::FromStarts(starts, options.align_levels);
  if (!ranges.ok()) return ranges.status();

  std::vector<Part> parts;
  parts.reserve(specs.size());
  for (PartitionSpec& spec : specs) {
    StatusOr<std::unique_ptr<Database>> db = Database::Open(spec.dir, options.database);
    if (!db.ok()) {
      return Status(db.status().code(), absl::StrFormat("partition %u (%s): %s", spec.id, spec.dir,
                                                        db.status().message()));
    }
    parts.push_back(Part{std::move(spec), std::move(*db)});
  }
  return std::unique_ptr<Node>(
      new Node(std::move(*ranges), std::move(parts), options.align_levels));
}

const WorldFrame& Node::frame() const { return parts_.front().db->frame(); }

std::vector<VoxelBox> Node::ClipToPartition(const VoxelBox& box, size_t i) const {
  std::vector<VoxelBox> out;
  for (const ChunkBox& piece : ClipBoxToRange(ChunksCovering(frame(), box), ranges_.range(i))) {
    out.push_back(Intersect(box, VoxelsOfChunks(frame(), piece)));
  }
  return out;
}

// --- Reads ---------------------------------------------------------------------------

Status Node::GetChunks(std::span<const ChunkKey> keys,
                       const std::function<void(size_t, const ChunkRead&)>& fn) {
  if (parts_.size() == 1) return parts_[0].db->GetChunks(keys, fn);
  // Runs of consecutive keys in one partition, so that fn still sees the
  // keys in order.
  for (size_t begin = 0; begin < keys.size();) {
    const size_t p = ranges_.Find(keys[begin].code());
    const MortonRange r = ranges_.range(p);
    size_t end = begin + 1;
    while (end < keys.size() && r.Contains(keys[end].code())) ++end;
    Status s =
        parts_[p].db->GetChunks(keys.subspan(begin, end - begin),
                                [&](size_t i, const ChunkRead& read) { fn(begin + i, read); });
    if (!s.ok()) return s;
    begin = end;
  }
  return absl::OkStatus();
}

Status Node::GetVoxels(std::span<const VoxelCoord> at, uint8_t* out) {
  if (parts_.size() == 1) return parts_[0].db->GetVoxels(at, out);
  for (const VoxelCoord& v : at) {
    if (!frame().Contains(v)) return frame().CheckVoxel(v);
  }
  std::vector<std::vector<size_t>> by_part(parts_.size());
  for (size_t i = 0; i < at.size(); ++i) {
    const ChunkCoord c = frame().ChunkOf(at[i]);
    by_part[ranges_.Find(MortonEncode(c.x, c.y, c.z))].push_back(i);
  }
  std::vector<VoxelCoord> coords;
  std::vector<uint8_t> values;
  for (size_t p = 0; p < parts_.size(); ++p) {
    if (by_part[p].empty()) continue;
    coords.clear();
    for (size_t i : by_part[p]) coords.push_back(at[i]);
    values.resize(coords.size());
    if (Status s = parts_[p].db->GetVoxels(coords, values.data()); !s.ok()) return s;
    for (size_t k = 0; k < coords.size(); ++k) out[by_part[p][k]] = values[k];
  }
  return absl::OkStatus();
}

Status Node::CheckBoxLimits(const VoxelBox& box) const {
  return parts_.front().db->CheckBoxLimits(box);
}

uint64_t Node::max_box_voxels() const { return parts_.front().db->max_box_voxels(); }

Status Node::ReadBox(const VoxelBox& box, uint8_t* out, const std::atomic<bool>* cancel) {
  if (parts_.size() == 1) return parts_[0].db->ReadBox(box, out, cancel);
  if (Status s = CheckBoxLimits(box); !s.ok()) return s;
  const std::vector<size_t> meeting = ranges_.Meeting(ChunksCovering(frame(), box));
  if (meeting.size() == 1) return parts_[meeting[0]].db->ReadBox(box, out, cancel);
  const std::span<uint8_t> dst(out, box.volume());
  std::vector<uint8_t> buf;
  for (size_t p : meeting) {
    for (const VoxelBox& piece : ClipToPartition(box, p)) {
      buf.resize(piece.volume());
      if (Status s = parts_[p].db->ReadBox(piece, buf.data(), cancel); !s.ok()) return s;
      CopySubBox(piece, piece, buf, box, dst);
    }
  }
  return absl::OkStatus();
}

// --- Writes --------------------------------------------------------------------------

void Node::SetVoxels(std::span<const VoxelEdit> edits, WriteDone done) {
  if (parts_.size() == 1) return parts_[0].db->SetVoxels(edits, std::move(done));
  // Checked whole before any part is applied.
  std::vector<std::vector<VoxelEdit>> by_part(parts_.size());
  size_t used = 0, last = 0;
  for (const VoxelEdit& e : edits) {
    if (!frame().Contains(e.at)) {
      if (done) done({frame().CheckVoxel(e.at), 0});
      return;
    }
    const ChunkCoord c = frame().ChunkOf(e.at);
    const size_t p = ranges_.Find(MortonEncode(c.x, c.y, c.z));
    if (by_part[p].empty()) ++used;
    by_part[p].push_back(e);  // in order: a later edit of a voxel wins
    last = p;
  }
  if (used <= 1) return parts_[last].db->SetVoxels(edits, std::move(done));
  std::vector<WriteDone> each = Join::Split(used, std::move(done));
  size_t k = 0;
  for (size_t p = 0; p < parts_.size(); ++p) {
    if (!by_part[p].empty()) parts_[p].db->SetVoxels(by_part[p], std::move(each[k++]));
  }
}

void Node::WriteBox(const VoxelBox& box, std::span<const uint8_t> voxels, WriteDone done) {
  if (parts_.size() == 1) return parts_[0].db->WriteBox(box, voxels, std::move(done));
  Status s = CheckBoxLimits(box);
  if (s.ok() && voxels.size() != box.volume()) {
    s = absl::InvalidArgumentError(absl::StrFormat("box holds %u voxels but %u bytes were given",
                                                   box.volume(), voxels.size()));
  }
  if (!s.ok()) {
    if (done) done({s, 0});
    return;
  }
  const std::vector<size_t> meeting = ranges_.Meeting(ChunksCovering(frame(), box));
  if (meeting.size() == 1) return parts_[meeting[0]].db->WriteBox(box, voxels, std::move(done));
  std::vector<std::pair<size_t, VoxelBox>> pieces;
  for (size_t p : meeting) {
    for (const VoxelBox& piece : ClipToPartition(box, p)) pieces.emplace_back(p, piece);
  }
  std::vector<WriteDone> each = Join::Split(pieces.size(), std::move(done));
  std::vector<uint8_t> buf;
  for (size_t k = 0; k < pieces.size(); ++k) {
    const auto& [p, piece] = pieces[k];
    buf.resize(piece.volume());
    CopySubBox(piece, box, voxels, piece, buf);
    parts_[p].db->WriteBox(piece, buf, std::move(each[k]));  // copies what it keeps
  }
}

void Node::FillBox(const VoxelBox& box, uint8_t material, WriteDone done) {
  if (parts_.size() == 1) return parts_[0].db->FillBox(box, material, std::move(done));
  if (Status s = frame().CheckBox(box); !s.ok()) {
    if (done) done({s, 0});
    return;
  }
  std::vector<std::pair<size_t, VoxelBox>> pieces;
  for (size_t p : ranges_.Meeting(ChunksCovering(frame(), box))) {
    for (const VoxelBox& piece : ClipToPartition(box, p)) pieces.emplace_back(p, piece);
  }
  std::vector<WriteDone> each = Join::Split(pieces.size(), std::move(done));
  std::lock_guard<std::mutex> lock(fill_mu_);
  for (size_t k = 0; k < pieces.size(); ++k) {
    parts_[pieces[k].first].db->FillBox(pieces[k].second, material, std::move(each[k]));
  }
}

void Node::PutChunk(ChunkKey key, std::span<const uint8_t> record,
                    std::optional<uint64_t> expected_version, WriteDone done) {
  PartitionOf(key.code()).PutChunk(key, record, expected_version, std::move(done));
}

void Node::DeleteChunk(ChunkKey key, WriteDone done) {
  PartitionOf(key.code()).DeleteChunk(key, std::move(done));
}

WriteResult Node::SetVoxelsAndWait(std::span<const VoxelEdit> edits) {
  return Wait([&](WriteDone d) { SetVoxels(edits, std::move(d)); });
}
WriteResult Node::WriteBoxAndWait(const VoxelBox& box, std::span<const uint8_t> voxels) {
  return Wait([&](WriteDone d) { WriteBox(box, voxels, std::move(d)); });
}
WriteResult Node::FillBoxAndWait(const VoxelBox& box, uint8_t material) {
  return Wait([&](WriteDone d) { FillBox(box, material, std::move(d)); });
}
WriteResult Node::PutChunkAndWait(ChunkKey key, std::span<const uint8_t> record,
                                  std::optional<uint64_t> expected_version) {
  return Wait([&](WriteDone d) { PutChunk(key, record, expected_version, std::move(d)); });
}
WriteResult Node::DeleteChunkAndWait(ChunkKey key) {
  return Wait([&](WriteDone d) { DeleteChunk(key, std::move(d)); });
}

Status Node::Flush() {
  Status first;
  for (Part& part : parts_) first.Update(part.db->Flush());
  return first;
}

DatabaseStats Node::Stats() const {
  DatabaseStats sum;
  for (const Part& part : parts_) {
    const DatabaseStats s = part.db->Stats();
    sum.cache_hits += s.cache_hits;
    sum.cache_misses += s.cache_misses;
    sum.cache_evictions += s.cache_evictions;
    sum.cache_bytes += s.cache_bytes;
    sum.cache_chunks += s.cache_chunks;
    sum.dirty_bytes += s.dirty_bytes;
    sum.dirty_chunks += s.dirty_chunks;
    sum.oldest_dirty_age_s = std::max(sum.oldest_dirty_age_s, s.oldest_dirty_age_s);
    sum.journal_records += s.journal_records;
    sum.journal_bytes += s.journal_bytes;
    sum.journal_commits += s.journal_commits;
    sum.last_seq = std::max(sum.last_seq, s.last_seq);
    sum.committed_seq = std::max(sum.committed_seq, s.committed_seq);
    sum.durable_seq = std::max(sum.durable_seq, s.durable_seq);
    sum.rollbacks += s.rollbacks;
    sum.journal_waits += s.journal_waits;
    sum.replayed_records += s.replayed_records;
    sum.flushes += s.flushes;
    sum.flushed_chunks += s.flushed_chunks;
    sum.flushed_bytes += s.flushed_bytes;
    sum.write_waits += s.write_waits;
    sum.busy_rejections += s.busy_rejections;
    sum.fills += s.fills;
  }
  return sum;
}

}  // namespace voxdb::engine
