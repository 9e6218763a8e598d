#include "engine/node.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/chunk_store.h"
#include "engine/format.h"
#include "engine/node_resources.h"
#include "engine/partition_copy.h"
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

// Writes to one partition pass it while they are submitted (not while they
// wait for their commit: a snapshot taken after Close covers every write
// submitted before, Database::Snapshot). A split or move closes it to pause
// them and retires it once the new partitions serve the range: writers
// waiting then route again on the new layout.
class Node::Gate {
 public:
  // Waits while closed; false once retired (nothing entered); the error
  // once failed (nothing entered).
  StatusOr<bool> Enter() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return closers_ == 0 || retired_ || !failed_.ok(); });
    if (!failed_.ok()) return failed_;
    if (retired_) return false;
    ++inside_;
    return true;
  }
  // Every write waiting or to come gets `why` (the partition cannot be
  // served until the node restarts).
  void Fail(const Status& why) {
    std::lock_guard<std::mutex> lock(mu_);
    failed_ = why;
    cv_.notify_all();
  }
  void Leave() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--inside_ == 0) cv_.notify_all();
  }
  // Stops new writes and waits for those inside to be submitted. Closes
  // nest (a split's pause and a snapshot's); each is undone by Reopen.
  // False (nothing closed) once retired.
  bool Close() {
    std::unique_lock<std::mutex> lock(mu_);
    if (retired_) return false;
    ++closers_;
    cv_.wait(lock, [&] { return inside_ == 0; });
    return true;
  }
  void Reopen() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--closers_ == 0) cv_.notify_all();
  }
  void Retire() {
    std::lock_guard<std::mutex> lock(mu_);
    retired_ = true;
    cv_.notify_all();
  }
  bool closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closers_ > 0;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int inside_ = 0;
  int closers_ = 0;
  bool retired_ = false;
  Status failed_;
};

Node::Node(std::string data_dir, std::optional<DirectoryLock> lock, const NodeOptions& options)
    : data_dir_(std::move(data_dir)), lock_(std::move(lock)), options_(options) {}

namespace {

// The options with the node's shared budgets and threads: the Databases'
// cache_bytes, dirty_bytes and flush_high_water become the node's
// (engine/node_resources.h), unless the caller set resources of its own.
// A node opened with one partition keeps a committer, acker and flusher
// thread of its own, as a single database always had (the pools pay off
// with several partitions; a partition split from it later runs its own
// threads too, until the node opens again).
StatusOr<NodeOptions> WithResources(const NodeOptions& options, size_t partitions) {
  NodeOptions o = options;
  if (o.database.node == nullptr) {
    NodeResourcesOptions r;
    r.cache_bytes = o.database.cache_bytes;
    r.dirty_bytes = o.database.dirty_bytes;
    r.flush_high_water = o.database.flush_high_water;
    if (partitions == 1) r.commit_threads = r.flush_threads = 0;
    VOXDB_ASSIGN_OR_RETURN(o.database.node, NodeResources::Create(r));
  }
  return o;
}

}  // namespace

// The partitions close first (members go in reverse order of declaration,
// and layout_ is declared after lock_), then the node's lock goes.
Node::~Node() = default;

std::shared_ptr<const Node::Layout> Node::layout() const {
  std::lock_guard<std::mutex> lock(layout_mu_);
  return layout_;
}

size_t MaxMapSizePerPartition(const NodeOptions& options, size_t partitions,
                              std::optional<size_t> configured) {
  const size_t want = configured.value_or(options.database.store.max_map_size);
  const uint64_t share = options.map_budget_bytes / std::max<size_t>(partitions, 1);
  const uint64_t cap = std::max<uint64_t>(share, options.database.store.initial_map_size);
  return static_cast<size_t>(std::min<uint64_t>(want, cap));
}

size_t Node::MaxMapSizePerPartition(size_t configured) const {
  return engine::MaxMapSizePerPartition(options_, partition_count(), configured);
}

DatabaseOptions Node::PartitionOptions(const PartitionSpec& spec, uint64_t parent,
                                       size_t partitions) const {
  DatabaseOptions o = options_.database;
  o.partition = PartitionIdentity{spec.id, spec.range, parent};
  o.store.max_map_size = engine::MaxMapSizePerPartition(options_, partitions);
  return o;
}

namespace {

// Opens the partitions' Databases in order; the first error names the
// partition.
StatusOr<std::vector<Node::Part>> OpenParts(
    const std::vector<PartitionSpec>& specs,
    const std::function<DatabaseOptions(const PartitionSpec&)>& options_of) {
  std::vector<Node::Part> parts;
  parts.reserve(specs.size());
  for (const PartitionSpec& spec : specs) {
    StatusOr<std::unique_ptr<Database>> db = Database::Open(spec.dir, options_of(spec));
    if (!db.ok()) {
      return Status(db.status().code(), absl::StrFormat("partition %u (%s): %s", spec.id, spec.dir,
                                                        db.status().message()));
    }
    parts.push_back(Node::Part{spec, std::shared_ptr<Database>(std::move(*db)),
                               std::make_shared<Node::Gate>()});
  }
  return parts;
}

}  // namespace

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
  VOXDB_ASSIGN_OR_RETURN(const NodeOptions with_resources, WithResources(options, specs.size()));
  auto node = std::unique_ptr<Node>(new Node("", std::nullopt, with_resources));
  auto parts = OpenParts(specs, [&](const PartitionSpec& spec) {
    return node->PartitionOptions(spec, 0, specs.size());
  });
  if (!parts.ok()) return parts.status();
  node->frame_ = parts->front().db->frame();
  node->layout_ = std::make_shared<Layout>(Layout{std::move(*ranges), std::move(*parts)});
  return node;
}

StatusOr<std::unique_ptr<Node>> Node::Open(const std::string& data_dir,
                                           const NodeOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return IoError(
        absl::StrFormat("cannot create the data directory %s: %s", data_dir, ec.message()));
  }
  VOXDB_ASSIGN_OR_RETURN(NodeManifest manifest, ReadNodeManifest(data_dir));
  // A node without a manifest yet (one partition) takes the alignment of
  // the options; once written, the manifest's holds.
  if (!std::filesystem::exists(std::filesystem::path(data_dir) / kNodeManifestFile, ec)) {
    manifest.align_levels = options.align_levels;
  }
  // One process per data directory. Each partition's exclusive open takes
  // its environment's locks (DIR/LOCK and the lock on its data.mdb, which
  // holds even when LOCK is deleted: ChunkStore); the root's are DATA's.
  // A node whose root was split away takes DATA/LOCK itself. Leftovers are
  // removed only once every listed partition is held, so that a second
  // process never removes what the first is building.
  std::optional<DirectoryLock> lock;
  const bool has_root =
      std::any_of(manifest.partitions.begin(), manifest.partitions.end(),
                  [](const PartitionEntry& e) { return e.dir == kRootPartitionDir; });
  if (!has_root) {
    VOXDB_ASSIGN_OR_RETURN(DirectoryLock l, ChunkStore::LockDirectory(data_dir));
    lock.emplace(std::move(l));
  }
  std::vector<PartitionSpec> specs;
  for (const PartitionEntry& e : manifest.partitions) {
    specs.push_back(PartitionSpec{e.id, e.range, PartitionDir(data_dir, e)});
  }
  VOXDB_ASSIGN_OR_RETURN(NodeOptions o, WithResources(options, manifest.partitions.size()));
  o.align_levels = manifest.align_levels;
  auto node = std::unique_ptr<Node>(new Node(data_dir, std::move(lock), o));
  auto parts = OpenParts(specs, [&](const PartitionSpec& spec) {
    return node->PartitionOptions(spec, 0, specs.size());
  });
  if (!parts.ok()) return parts.status();
  std::vector<std::string> removed;
  VOXDB_RETURN_IF_ERROR(RemoveLeftovers(data_dir, manifest, &removed));
  if (options.on_removed) {
    for (const std::string& path : removed) options.on_removed(path);
  }
  node->frame_ = parts->front().db->frame();
  node->layout_ = std::make_shared<Layout>(Layout{manifest.Ranges(), std::move(*parts)});
  node->manifest_ = std::move(manifest);
  return node;
}

std::vector<VoxelBox> Node::ClipToRange(const VoxelBox& box, const MortonRange& range) const {
  std::vector<VoxelBox> out;
  for (const ChunkBox& piece : ClipBoxToRange(ChunksCovering(frame(), box), range)) {
    out.push_back(Intersect(box, VoxelsOfChunks(frame(), piece)));
  }
  return out;
}

std::vector<std::pair<size_t, VoxelBox>> Node::BoxPieces(const Layout& layout,
                                                         const std::vector<size_t>& parts,
                                                         const VoxelBox& box) const {
  std::vector<std::pair<size_t, VoxelBox>> pieces;
  for (size_t p : parts) {
    for (const VoxelBox& piece : ClipToRange(box, layout.ranges.range(p))) {
      pieces.emplace_back(p, piece);
    }
  }
  return pieces;
}

void Node::Route(const std::function<std::vector<size_t>(const Layout&)>& pick,
                 const std::function<void(const Layout&, const std::vector<size_t>&)>& submit,
                 WriteDone& done) {
  for (;;) {
    const std::shared_ptr<const Layout> layout = this->layout();
    const std::vector<size_t> parts = pick(*layout);  // increasing
    size_t entered = 0;
    StatusOr<bool> in = true;
    while (entered < parts.size() && (in = layout->parts[parts[entered]].gate->Enter()).ok() &&
           *in) {
      ++entered;
    }
    const bool all_in = entered == parts.size();
    if (all_in) submit(*layout, parts);
    for (size_t k = 0; k < entered; ++k) layout->parts[parts[k]].gate->Leave();
    if (all_in) return;
    if (!in.ok()) {
      if (done) done({in.status(), 0});
      return;
    }
    // A partition was replaced meanwhile: again, on the new layout.
  }
}

bool Node::WithWritesPaused(const Layout& layout, const std::vector<size_t>& parts,
                            const std::function<void()>& fn) {
  size_t closed = 0;
  bool replaced = false;
  for (; closed < parts.size(); ++closed) {
    if (!layout.parts[parts[closed]].gate->Close()) {
      replaced = true;
      break;
    }
  }
  if (!replaced) fn();
  for (size_t k = 0; k < closed; ++k) layout.parts[parts[k]].gate->Reopen();
  return !replaced;
}

bool Node::WritesWouldWait() const {
  for (const Part& part : layout()->parts) {
    if (part.gate->closed() || part.db->WritesWouldWait()) return true;
  }
  return false;
}

// --- Reads ---------------------------------------------------------------------------

Status Node::GetChunks(std::span<const ChunkKey> keys,
                       const std::function<void(size_t, const ChunkRead&)>& fn) {
  const std::shared_ptr<const Layout> layout = this->layout();
  if (layout->parts.size() == 1) return layout->parts[0].db->GetChunks(keys, fn);
  // Runs of consecutive keys in one partition, so that fn still sees the
  // keys in order.
  for (size_t begin = 0; begin < keys.size();) {
    const size_t p = layout->ranges.Find(keys[begin].code());
    const MortonRange r = layout->ranges.range(p);
    size_t end = begin + 1;
    while (end < keys.size() && r.Contains(keys[end].code())) ++end;
    Status s = layout->parts[p].db->GetChunks(
        keys.subspan(begin, end - begin),
        [&](size_t i, const ChunkRead& read) { fn(begin + i, read); });
    if (!s.ok()) return s;
    begin = end;
  }
  return absl::OkStatus();
}

Status Node::GetVoxels(std::span<const VoxelCoord> at, uint8_t* out) {
  const std::shared_ptr<const Layout> layout = this->layout();
  if (layout->parts.size() == 1) return layout->parts[0].db->GetVoxels(at, out);
  for (const VoxelCoord& v : at) {
    if (!frame().Contains(v)) return frame().CheckVoxel(v);
  }
  std::vector<std::vector<size_t>> by_part(layout->parts.size());
  for (size_t i = 0; i < at.size(); ++i) {
    const ChunkCoord c = frame().ChunkOf(at[i]);
    by_part[layout->ranges.Find(MortonEncode(c.x, c.y, c.z))].push_back(i);
  }
  std::vector<VoxelCoord> coords;
  std::vector<uint8_t> values;
  for (size_t p = 0; p < by_part.size(); ++p) {
    if (by_part[p].empty()) continue;
    coords.clear();
    for (size_t i : by_part[p]) coords.push_back(at[i]);
    values.resize(coords.size());
    if (Status s = layout->parts[p].db->GetVoxels(coords, values.data()); !s.ok()) return s;
    for (size_t k = 0; k < coords.size(); ++k) out[by_part[p][k]] = values[k];
  }
  return absl::OkStatus();
}

Status Node::CheckBoxLimits(const VoxelBox& box) const {
  return engine::CheckBoxLimits(frame(), box, options_.database.max_box_voxels,
                                options_.database.max_box_chunks);
}

uint64_t Node::max_box_voxels() const { return layout()->parts.front().db->max_box_voxels(); }

Status Node::ReadBox(const VoxelBox& box, uint8_t* out, const std::atomic<bool>* cancel) {
  const std::shared_ptr<const Layout> layout = this->layout();
  if (layout->parts.size() == 1) return layout->parts[0].db->ReadBox(box, out, cancel);
  if (Status s = CheckBoxLimits(box); !s.ok()) return s;
  const std::vector<size_t> meeting = layout->ranges.Meeting(ChunksCovering(frame(), box));
  if (meeting.size() == 1) return layout->parts[meeting[0]].db->ReadBox(box, out, cancel);
  const std::span<uint8_t> dst(out, box.volume());
  std::vector<uint8_t> buf;
  for (size_t p : meeting) {
    for (const VoxelBox& piece : ClipToRange(box, layout->ranges.range(p))) {
      buf.resize(piece.volume());
      if (Status s = layout->parts[p].db->ReadBox(piece, buf.data(), cancel); !s.ok()) return s;
      CopySubBox(piece, piece, buf, box, dst);
    }
  }
  return absl::OkStatus();
}

// --- Writes --------------------------------------------------------------------------

void Node::SetVoxels(std::span<const VoxelEdit> edits, WriteDone done) {
  // Checked whole before any part is applied.
  for (const VoxelEdit& e : edits) {
    if (!frame().Contains(e.at)) {
      if (done) done({frame().CheckVoxel(e.at), 0});
      return;
    }
  }
  std::vector<std::vector<VoxelEdit>> by_part;
  Route(
      [&](const Layout& layout) {
        by_part.assign(layout.parts.size(), {});
        for (const VoxelEdit& e : edits) {
          const ChunkCoord c = frame().ChunkOf(e.at);
          // In order: a later edit of a voxel wins.
          by_part[layout.ranges.Find(MortonEncode(c.x, c.y, c.z))].push_back(e);
        }
        std::vector<size_t> parts;
        for (size_t p = 0; p < by_part.size(); ++p) {
          if (!by_part[p].empty()) parts.push_back(p);
        }
        if (parts.empty()) parts.push_back(0);  // no edits: the partition says INVALID
        return parts;
      },
      [&](const Layout& layout, const std::vector<size_t>& parts) {
        if (parts.size() == 1) return layout.parts[parts[0]].db->SetVoxels(edits, std::move(done));
        std::vector<WriteDone> each = Join::Split(parts.size(), std::move(done));
        for (size_t k = 0; k < parts.size(); ++k) {
          layout.parts[parts[k]].db->SetVoxels(by_part[parts[k]], std::move(each[k]));
        }
      },
      done);
}

void Node::WriteBox(const VoxelBox& box, std::span<const uint8_t> voxels, WriteDone done) {
  Status s = CheckBoxLimits(box);
  if (s.ok() && voxels.size() != box.volume()) {
    s = absl::InvalidArgumentError(absl::StrFormat("box holds %u voxels but %u bytes were given",
                                                   box.volume(), voxels.size()));
  }
  if (!s.ok()) {
    if (done) done({s, 0});
    return;
  }
  const ChunkBox chunks = ChunksCovering(frame(), box);
  Route([&](const Layout& layout) { return layout.ranges.Meeting(chunks); },
        [&](const Layout& layout, const std::vector<size_t>& parts) {
          if (parts.size() == 1) {
            return layout.parts[parts[0]].db->WriteBox(box, voxels, std::move(done));
          }
          const std::vector<std::pair<size_t, VoxelBox>> pieces = BoxPieces(layout, parts, box);
          std::vector<WriteDone> each = Join::Split(pieces.size(), std::move(done));
          std::vector<uint8_t> buf;
          for (size_t k = 0; k < pieces.size(); ++k) {
            const auto& [p, piece] = pieces[k];
            buf.resize(piece.volume());
            CopySubBox(piece, box, voxels, piece, buf);
            layout.parts[p].db->WriteBox(piece, buf, std::move(each[k]));  // copies what it keeps
          }
        },
        done);
}

void Node::FillBox(const VoxelBox& box, uint8_t material, WriteDone done) {
  if (Status s = frame().CheckBox(box); !s.ok()) {
    if (done) done({s, 0});
    return;
  }
  const ChunkBox chunks = ChunksCovering(frame(), box);
  std::lock_guard<std::mutex> lock(fill_mu_);
  Route([&](const Layout& layout) { return layout.ranges.Meeting(chunks); },
        [&](const Layout& layout, const std::vector<size_t>& parts) {
          if (parts.size() == 1) {
            return layout.parts[parts[0]].db->FillBox(box, material, std::move(done));
          }
          const std::vector<std::pair<size_t, VoxelBox>> pieces = BoxPieces(layout, parts, box);
          std::vector<WriteDone> each = Join::Split(pieces.size(), std::move(done));
          for (size_t k = 0; k < pieces.size(); ++k) {
            layout.parts[pieces[k].first].db->FillBox(pieces[k].second, material,
                                                      std::move(each[k]));
          }
        },
        done);
}

void Node::PutChunk(ChunkKey key, std::span<const uint8_t> record,
                    std::optional<uint64_t> expected_version, WriteDone done) {
  Route([&](const Layout& layout) { return std::vector<size_t>{layout.ranges.Find(key.code())}; },
        [&](const Layout& layout, const std::vector<size_t>& parts) {
          layout.parts[parts[0]].db->PutChunk(key, record, expected_version, std::move(done));
        },
        done);
}

void Node::DeleteChunk(ChunkKey key, WriteDone done) {
  Route([&](const Layout& layout) { return std::vector<size_t>{layout.ranges.Find(key.code())}; },
        [&](const Layout& layout, const std::vector<size_t>& parts) {
          layout.parts[parts[0]].db->DeleteChunk(key, std::move(done));
        },
        done);
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
  for (const Part& part : layout()->parts) first.Update(part.db->Flush());
  return first;
}

DatabaseStats Node::Stats() const {
  DatabaseStats sum;
  for (const Part& part : layout()->parts) {
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

// --- Layout changes ------------------------------------------------------------------

StatusOr<LayoutChangeReport> Node::Split(uint64_t id, uint64_t at) {
  if (data_dir_.empty()) {
    return absl::InvalidArgumentError("a node opened without a manifest cannot split");
  }
  std::lock_guard<std::mutex> lock(change_mu_);
  VOXDB_ASSIGN_OR_RETURN(NodeManifest next, ManifestAfterSplit(manifest_, id, at));
  std::vector<PartitionSpec> specs;
  for (uint64_t child : {manifest_.next_id, manifest_.next_id + 1}) {
    const PartitionEntry* e = next.Find(child);
    specs.push_back(PartitionSpec{e->id, e->range, PartitionDir(data_dir_, *e)});
  }
  return Replace(id, specs, next);
}

StatusOr<LayoutChangeReport> Node::Move(uint64_t id, const std::string& dir) {
  if (data_dir_.empty()) {
    return absl::InvalidArgumentError("a node opened without a manifest cannot move");
  }
  std::lock_guard<std::mutex> lock(change_mu_);
  VOXDB_ASSIGN_OR_RETURN(NodeManifest next, ManifestAfterMove(manifest_, id, dir));
  const PartitionEntry* e = next.Find(id);
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_empty(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not empty: a move goes to a new directory (a move interrupted by a crash leaves "
        "its partial copy there, which nothing references: remove it first)",
        dir));
  }
  return Replace(id, {PartitionSpec{id, e->range, PartitionDir(data_dir_, *e)}}, next);
}

Status Node::Backup(const std::string& dest, uint64_t* bytes) {
  *bytes = 0;
  if (data_dir_.empty()) {
    return absl::InvalidArgumentError("a node opened without a manifest has no backup");
  }
  VOXDB_RETURN_IF_ERROR(ChunkStore::CheckBackupDestination(dest));
  std::lock_guard<std::mutex> lock(change_mu_);
  const std::shared_ptr<const Layout> layout = this->layout();
  if (manifest_.partitions.size() == 1 && manifest_.partitions[0].dir == ".") {
    // Never split or moved: the backup is a single database, as before
    // partitions.
    return layout->parts[0].db->Backup(dest, bytes);
  }
  const std::string tmp = dest + ".partial";
  std::error_code ec;
  if (!std::filesystem::create_directory(tmp, ec)) {
    if (!ec) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s exists (left by an interrupted backup, or not a backup at all): BACKUP deletes "
          "nothing it did not create; remove it, or choose another destination",
          tmp));
    }
    return LmdbStatus(ec.value(), "create backup directory " + tmp);
  }
  std::filesystem::permissions(tmp, std::filesystem::perms::owner_all, ec);
  NodeManifest copy = manifest_;
  Status s = absl::OkStatus();
  for (PartitionEntry& e : copy.partitions) {
    e.dir = absl::StrFormat("%s/%u", kPartitionsDir, e.id);
    const std::string parts = tmp + "/" + kPartitionsDir;
    if (std::filesystem::create_directory(parts, ec); ec) {
      s = LmdbStatus(ec.value(), "create backup directory " + parts);
      break;
    }
    std::filesystem::permissions(parts, std::filesystem::perms::owner_all, ec);
    auto part = std::find_if(layout->parts.begin(), layout->parts.end(),
                             [&](const Part& p) { return p.spec.id == e.id; });
    if (part == layout->parts.end()) {
      s = absl::InternalError(absl::StrFormat("partition %u is not in the layout", e.id));
      break;
    }
    uint64_t n = 0;
    s = part->db->Backup(tmp + "/" + e.dir, &n);
    if (!s.ok()) break;
    *bytes += n;
  }
  if (s.ok()) s = WriteNodeManifest(tmp, copy);
  if (s.ok() && ::rename(tmp.c_str(), dest.c_str()) != 0) {
    s = LmdbStatus(errno, "rename " + tmp + " to " + dest);
  }
  if (s.ok()) {
    return FsyncDirectory(std::filesystem::path(dest).parent_path().string());
  }
  // Only what this call made: DEST.partial did not exist before it.
  std::filesystem::remove_all(tmp, ec);
  *bytes = 0;
  return s;
}

StatusOr<LayoutChangeReport> Node::Replace(uint64_t id, const std::vector<PartitionSpec>& next,
                                           const NodeManifest& manifest) {
  using Clock = std::chrono::steady_clock;
  std::shared_ptr<const Layout> before = layout();
  size_t index = before->parts.size();
  for (size_t i = 0; i < before->parts.size(); ++i) {
    if (before->parts[i].spec.id == id) index = i;
  }
  if (index == before->parts.size()) {
    return absl::NotFoundError(absl::StrFormat("no partition %u on this node", id));
  }
  const Part& old = before->parts[index];
  const size_t partitions_after = before->parts.size() - 1 + next.size();
  LayoutChangeReport report;
  std::vector<CopyTarget> targets;
  // A split's children name their parent; a moved partition keeps its
  // own. Both inherit the epochs (fencing goes on across the change).
  const uint64_t parent = next.size() > 1 ? id : old.db->partition().parent;
  for (const PartitionSpec& spec : next) {
    targets.push_back(
        CopyTarget{spec.range, spec.dir, {spec.id, spec.range, parent}, old.db->epoch_history()});
    report.new_ids.push_back(spec.id);
  }
  // The new environments go in directories that do not exist (a split's,
  // under partitions/: the node removed its leftovers when it opened) or
  // are empty (a move's destination, checked by Move).
  std::vector<bool> existed;
  for (const PartitionSpec& spec : next) {
    std::error_code ec;
    const bool exists = std::filesystem::exists(spec.dir, ec);
    if (exists && (next.size() > 1 || !std::filesystem::is_empty(spec.dir, ec))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s exists and is no partition of this node: move it away first", spec.dir));
    }
    existed.push_back(exists);
  }
  // Whatever goes wrong before the manifest names the new environments,
  // what this made of them is removed, and the partition goes on as it was.
  auto abandon = [&](const Status& why) -> Status {
    for (size_t i = 0; i < next.size(); ++i) {
      std::error_code ec;
      if (!existed[i]) {
        std::filesystem::remove_all(next[i].dir, ec);
        continue;
      }
      for (const char* name : {kDataFile, kLmdbLockFile, kLockFile}) {
        std::filesystem::remove(std::filesystem::path(next[i].dir) / name, ec);
      }
    }
    return why;
  };
  DatabaseOptions store_from = PartitionOptions(old.spec, 0, partitions_after);
  auto copy = PartitionCopy::Create(targets, frame(), store_from.store);
  if (!copy.ok()) return abandon(copy.status());

  // Pass 1, writes going on.
  const Clock::time_point copy_start = Clock::now();
  {
    auto first = old.db->Snapshot();
    if (!first.ok()) return abandon(first.status());
    if (Status s = (*copy)->Copy(**first); !s.ok()) return abandon(s);
  }
  report.copy_seconds = std::chrono::duration<double>(Clock::now() - copy_start).count();
  const uint64_t first_chunks = (*copy)->progress().chunks;

  // Pass 2, the partition's writes paused.
  const Clock::time_point pause_start = Clock::now();
  if (!old.gate->Close()) return abandon(absl::InternalError("the partition was replaced"));
  Status s;
  {
    auto last = old.db->Snapshot();
    s = last.status();
    if (s.ok()) s = (*copy)->CatchUp(**last);
  }
  const CopyProgress progress = (*copy)->progress();
  copy->reset();                                           // closes the new environments
  if (s.ok()) s = WriteNodeManifest(data_dir_, manifest);  // the commit point
  if (!s.ok()) {
    old.gate->Reopen();
    return abandon(s);
  }
  manifest_ = manifest;
  report.chunks = progress.chunks;
  report.bytes = progress.bytes;
  report.caught_up_chunks = progress.chunks - first_chunks + progress.deleted;
  // The new layout: the new partitions in place of the old one.
  auto opened = OpenParts(next, [&](const PartitionSpec& spec) {
    return PartitionOptions(spec, parent, partitions_after);
  });
  if (!opened.ok()) {
    // The manifest names them: their range takes no write until the node
    // restarts and opens them (or says why it cannot); reads go on from
    // the old partition, which holds the same.
    const Status failed(opened.status().code(),
                        absl::StrFormat("the layout changed but its new partitions did not "
                                        "open (restart voxdbd): %s",
                                        opened.status().message()));
    old.gate->Fail(failed);
    return failed;
  }
  std::vector<Part> parts;
  for (size_t i = 0; i < before->parts.size(); ++i) {
    if (i != index) {
      parts.push_back(before->parts[i]);
    } else {
      for (Part& p : *opened) parts.push_back(std::move(p));
    }
  }
  std::vector<uint64_t> starts;
  for (const Part& p : parts) starts.push_back(p.spec.range.begin);
  StatusOr<PartitionRanges> ranges = PartitionRanges::FromStarts(starts, manifest.align_levels);
  if (!ranges.ok()) return ranges.status();  // the manifest was validated: cannot happen
  std::shared_ptr<Database> old_db = old.db;
  const std::shared_ptr<Gate> old_gate = old.gate;
  const PartitionSpec old_spec = old.spec;
  {
    std::lock_guard<std::mutex> lock(layout_mu_);
    layout_ = std::make_shared<Layout>(Layout{std::move(*ranges), std::move(parts)});
  }
  old_gate->Retire();  // paused writers route again, to the new partitions
  // The partitions kept share the address-space budget with one more now
  // (a split): their maps may grow to the new share only. A map already
  // past it (SetMaxMapSize refuses: a map does not shrink while open) keeps
  // its maximum until the node opens again, which caps it.
  const size_t cap = engine::MaxMapSizePerPartition(options_, partitions_after);
  for (const Part& p : layout()->parts) {
    if (p.db->store().max_map_size() > cap) (void)p.db->store().SetMaxMapSize(cap);
  }
  report.pause_seconds = std::chrono::duration<double>(Clock::now() - pause_start).count();

  // The old environment, once no reader holds it any more: closed, then
  // removed with the other leftovers (or at the next start, if a reader
  // holds it for longer than a minute).
  before.reset();
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(60);
  while (old_db.use_count() > 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (old_db.use_count() == 1) {
    old_db.reset();
    std::vector<std::string> removed;
    report.cleanup = RemoveLeftovers(data_dir_, manifest_, &removed);
    // An environment outside DATA (moved there before) is not searched by
    // RemoveLeftovers: its files go here, and the directory if then empty.
    const std::filesystem::path old_dir = std::filesystem::path(old_spec.dir).lexically_normal();
    const std::filesystem::path data = std::filesystem::path(data_dir_).lexically_normal();
    if (old_dir.lexically_relative(data).empty() ||
        *old_dir.lexically_relative(data).begin() == "..") {
      for (const char* name : {kDataFile, kLmdbLockFile, kLockFile}) {
        std::error_code ec;
        if (std::filesystem::remove(old_dir / name, ec))
          removed.push_back((old_dir / name).string());
      }
      std::error_code ec;
      std::filesystem::remove(old_dir, ec);  // only when empty
    }
    // The replaced environment's own files: what a layout change removes,
    // not leftovers of a crash, so not told to on_removed.
  } else {
    report.cleanup = BusyError(
        "a reader held the old partition for a minute: its files go at "
        "the next start");
  }
  return report;
}

}  // namespace voxdb::engine
