#include "engine/lod.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"

namespace voxdb::engine {

namespace {

constexpr int kHalf = kChunkEdge / 2;
constexpr int kNodeShift = 7;  // log2 of kChunkEdge
static_assert(kChunkEdge == 1 << kNodeShift);

// Tokens of dirty markers: unique within a process and growing across
// restarts (seeded with the clock), so a marker rewritten during a build
// never holds the token the builder read. Because they grow, WhenSynced
// tells the markers written before a point (a token below PeekToken() read
// then) from later ones.
std::atomic<uint64_t>& TokenCounter() {
  static std::atomic<uint64_t> next{static_cast<uint64_t>(NowMicros()) << 10};
  return next;
}
std::vector<uint8_t> NextToken() {
  std::vector<uint8_t> token(8);
  EncodeFixed64(token.data(), TokenCounter().fetch_add(1));
  return token;
}
// The token the next marker will get: every marker written so far holds a
// smaller one.
uint64_t PeekToken() { return TokenCounter().load(); }

// Fills octant `octant` of the dense parent with one material.
void FillOctant(uint8_t material, int octant, uint8_t* parent) {
  const int ox = (octant & 1) * kHalf, oy = ((octant >> 1) & 1) * kHalf,
            oz = ((octant >> 2) & 1) * kHalf;
  for (int z = 0; z < kHalf; ++z) {
    for (int y = 0; y < kHalf; ++y) {
      std::memset(parent + ox + kChunkEdge * ((oy + y) + size_t{kChunkEdge} * (oz + z)), material,
                  kHalf);
    }
  }
}

// Downsamples one child record into its octant of the parent.
Status AddChild(std::span<const uint8_t> record, int octant, uint8_t* parent,
                std::vector<uint8_t>* scratch, uint64_t* version) {
  VOXDB_ASSIGN_OR_RETURN(ChunkRecordView view, ParseChunkRecord(record));
  *version = std::max(*version, view.header.version);
  if (view.header.encoding == ChunkEncoding::kUniform && !view.payload.empty()) {
    FillOctant(view.payload[0], octant, parent);
    return absl::OkStatus();
  }
  scratch->resize(kChunkVoxels);
  VOXDB_RETURN_IF_ERROR(DecodeChunkToDense(record, scratch->data()));
  LodDownsampleOctant(scratch->data(), octant, parent);
  return absl::OkStatus();
}

// The voxels of level-`level` node `node` (not clipped to the world: a node
// past the world's edge is never inside a fill).
VoxelBox NodeBox(int level, uint64_t node) {
  const ChunkCoord c = MortonDecode(node);
  const int shift = kNodeShift + level;
  const VoxelCoord lo{uint64_t{c.x} << shift, uint64_t{c.y} << shift, uint64_t{c.z} << shift};
  const uint64_t side = uint64_t{1} << shift;
  return VoxelBox{lo, {lo.x + side, lo.y + side, lo.z + side}};
}

// Per axis, the level nodes a half-open voxel range [lo, hi) touches
// (a0..a1) and those it covers wholly (i0..i1; none when i0 > i1).
struct AxisNodes {
  uint64_t a0, a1, i0, i1;
  AxisNodes(uint64_t lo, uint64_t hi, int shift)
      : a0(lo >> shift),
        a1((hi - 1) >> shift),
        i0((lo + (uint64_t{1} << shift) - 1) >> shift),
        i1(hi >> shift) {  // one past the last covered wholly, for now
    if (i1 == 0 || i0 > i1 - 1) {
      i0 = 1;
      i1 = 0;
    } else {
      --i1;
    }
  }
  bool Inside(uint64_t n) const { return i0 <= i1 && n >= i0 && n <= i1; }
  uint64_t count() const { return a1 - a0 + 1; }
  uint64_t inside() const { return i0 <= i1 ? i1 - i0 + 1 : 0; }
};

}  // namespace

std::array<uint8_t, 9> LodRecordKey(int level, uint64_t node) {
  std::array<uint8_t, 9> key;
  key[0] = static_cast<uint8_t>(level);
  EncodeFixed64(key.data() + 1, node);
  return key;
}

std::array<uint8_t, 10> LodDirtyKey(int level, uint64_t node) {
  std::array<uint8_t, 10> key;
  key[0] = kLodDirtyPrefix;
  key[1] = static_cast<uint8_t>(level);
  EncodeFixed64(key.data() + 2, node);
  return key;
}

uint8_t LodMode8(const uint8_t* v) {
  uint8_t best = v[0];
  int best_count = 0;
  for (int i = 0; i < 8; ++i) {
    const uint8_t m = v[i];
    int count = 0;
    for (int j = 0; j < 8; ++j) count += v[j] == m;
    bool better = count > best_count;
    if (count == best_count) {
      // Ties: non-air beats air; among non-air the smaller id.
      better = (best == 0 && m != 0) || (m != 0 && best != 0 && m < best);
    }
    if (better) {
      best = m;
      best_count = count;
    }
  }
  return best;
}

void LodDownsampleOctant(const uint8_t* child, int octant, uint8_t* parent) {
  const int ox = (octant & 1) * kHalf, oy = ((octant >> 1) & 1) * kHalf,
            oz = ((octant >> 2) & 1) * kHalf;
  constexpr size_t kRow = kChunkEdge, kPlane = size_t{kChunkEdge} * kChunkEdge;
  for (int z = 0; z < kHalf; ++z) {
    for (int y = 0; y < kHalf; ++y) {
      const uint8_t* c = child + 2 * y * kRow + 2 * z * kPlane;
      uint8_t* out = parent + ox + kRow * (oy + y) + kPlane * (oz + z);
      for (int x = 0; x < kHalf; ++x, c += 2) {
        const uint8_t v[8] = {c[0],      c[1],          c[kRow],          c[kRow + 1],
                              c[kPlane], c[kPlane + 1], c[kPlane + kRow], c[kPlane + kRow + 1]};
        const bool same = v[0] == v[1] && v[0] == v[2] && v[0] == v[3] && v[0] == v[4] &&
                          v[0] == v[5] && v[0] == v[6] && v[0] == v[7];
        out[x] = same ? v[0] : LodMode8(v);
      }
    }
  }
}

void LodObserver::OnFlush(std::span<const FlushedChunk> chunks, WriteBatch* batch) {
  std::vector<uint64_t> nodes;
  nodes.reserve(chunks.size());
  for (const FlushedChunk& c : chunks) nodes.push_back(c.key.OctreeNode(1));
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  for (uint64_t node : nodes) batch->Put(Table::kLod, LodDirtyKey(1, node), NextToken());
}

LodPyramid::LodPyramid(Database* db, const LodOptions& options) : db_(db), options_(options) {}

LodPyramid::~LodPyramid() { Stop(); }

void LodPyramid::Start() {
  MutexLock lock(&mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void LodPyramid::Stop() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
  CancelWaiters(ClosingError(
      "the LOD builder stopped; the nodes left stay marked and are built after a restart"));
}

void LodPyramid::WhenSynced(std::function<void(const Status&)> done) {
  {
    MutexLock lock(&mu_);
    if (!stop_) {
      syncs_.push_back(SyncWaiter{passes_, 0, 0, std::move(done)});
      cv_.SignalAll();
      return;
    }
  }
  done(ClosingError("the LOD builder is stopped"));
}

Status LodPyramid::WaitIdle(std::chrono::steady_clock::duration timeout) {
  // The promise is shared: on a timeout the callback may still come later.
  auto done = std::make_shared<std::promise<Status>>();
  std::future<Status> synced = done->get_future();
  WhenSynced([done](const Status& s) { done->set_value(s); });
  if (timeout == std::chrono::steady_clock::duration::max()) return synced.get();
  if (synced.wait_for(timeout) != std::future_status::ready) {
    return BusyError(
        absl::StrFormat("the LOD builder did not catch up within %.1f s (%d nodes dirty)",
                        std::chrono::duration<double>(timeout).count(), DirtyCount()));
  }
  return synced.get();
}

void LodPyramid::CancelWaiters(const Status& why) {
  std::vector<SyncWaiter> syncs;
  {
    MutexLock lock(&mu_);
    syncs.swap(syncs_);
  }
  for (SyncWaiter& w : syncs) w.done(why);
}

std::vector<uint64_t> LodPyramid::OldestTokens() {
  std::vector<uint64_t> oldest(options_.levels + 1, UINT64_MAX);
  auto snapshot = db_->store().BeginRead();
  if (!snapshot.ok()) return std::vector<uint64_t>(options_.levels + 1, 0);
  const std::array<uint8_t, 1> begin{kLodDirtyPrefix};
  const Status s = (*snapshot)->Scan(
      Table::kLod, begin, {}, [&](std::span<const uint8_t> key, std::span<const uint8_t> value) {
        if (key.size() != 10 || key[1] < 1 || key[1] > options_.levels) return true;  // stray
        // A token of another size is older than any this process hands out.
        const uint64_t token = value.size() == 8 ? DecodeFixed64(value.data()) : 0;
        oldest[key[1]] = std::min(oldest[key[1]], token);
        return true;
      });
  if (!s.ok()) return std::vector<uint64_t>(options_.levels + 1, 0);  // try again next pass
  return oldest;
}

std::vector<LodPyramid::SyncWaiter> LodPyramid::AdvanceSyncs(uint64_t pass, bool busy,
                                                             const Status& pass_status) {
  std::vector<SyncWaiter> fire;
  bool any_due = false;
  for (const SyncWaiter& w : syncs_) any_due |= w.after < pass;
  if (!any_due) return fire;
  // The check scans every marker: while the builder is busy, at most every
  // 50 ms, so that waiting costs a long rebuild little.
  const auto t = std::chrono::steady_clock::now();
  if (!busy || t - last_sync_check_ >= std::chrono::milliseconds(50)) {
    last_sync_check_ = t;
  } else {
    return fire;
  }
  // Read before the scan: a marker with a smaller token was written before
  // the scan began, by this thread's passes or by a flush that committed.
  mu_.Unlock();
  const uint64_t now = PeekToken();
  const std::vector<uint64_t> oldest = pass_status.ok() ? OldestTokens() : std::vector<uint64_t>();
  mu_.Lock();
  for (auto it = syncs_.begin(); it != syncs_.end();) {
    SyncWaiter& w = *it;
    if (w.after >= pass) {  // registered during this pass: the next one serves it
      ++it;
      continue;
    }
    if (pass_status.ok()) {
      if (w.level == 0) {  // the first pass begun after the call marked its fills
        w.level = 1;
        w.below = now;
      }
      // A level is done when no marker older than its bound is left; the
      // next level's bound is then taken, which covers the parents that
      // those builds marked.
      while (w.level <= options_.levels && oldest[w.level] >= w.below) {
        ++w.level;
        w.below = now;
      }
      if (w.level <= options_.levels) {
        ++it;
        continue;
      }
    }
    fire.push_back(std::move(w));
    it = syncs_.erase(it);
  }
  return fire;
}

void LodPyramid::Run() {
  MutexLock lock(&mu_);
  while (!stop_) {
    const uint64_t pass = ++passes_;
    mu_.Unlock();
    bool did_work = false;
    Status s = BuildDirty(&did_work);
    mu_.Lock();
    if (!s.ok()) last_error_ = s;
    if (!syncs_.empty()) {
      std::vector<SyncWaiter> synced = AdvanceSyncs(pass, did_work && s.ok(), s);
      if (!synced.empty()) {
        mu_.Unlock();
        for (SyncWaiter& w : synced) w.done(s);
        mu_.Lock();
      }
    }
    if (did_work && s.ok()) continue;
    // Nothing left (or an error): poll again shortly (at once for a new
    // waiter).
    const size_t waiting = syncs_.size();
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(s.ok() ? 20 : 500);
    while (!stop_ && syncs_.size() == waiting) {
      if (!cv_.WaitUntil(until)) break;
    }
  }
}

Status LodPyramid::ForEachFillBoundaryNode(const Fill& fill,
                                           const std::function<void(int, uint64_t)>& fn) const {
  if (fill.box.empty()) return absl::OkStatus();
  // Count first: a fill's boundary is about its surface, but a thin slab is
  // all boundary.
  uint64_t total = 0;
  for (int level = 1; level <= options_.levels; ++level) {
    const int shift = kNodeShift + level;
    const AxisNodes x(fill.box.lo.x, fill.box.hi.x, shift), y(fill.box.lo.y, fill.box.hi.y, shift),
        z(fill.box.lo.z, fill.box.hi.z, shift);
    total += x.count() * y.count() * z.count() - x.inside() * y.inside() * z.inside();
  }
  if (total > options_.max_rebuild_nodes) {
    return TooLargeError(
        absl::StrFormat("fill %d has %d LOD nodes on its boundary, more than the limit %d",
                        fill.seq, total, options_.max_rebuild_nodes));
  }
  for (int level = 1; level <= options_.levels; ++level) {
    const int shift = kNodeShift + level;
    const AxisNodes x(fill.box.lo.x, fill.box.hi.x, shift), y(fill.box.lo.y, fill.box.hi.y, shift),
        z(fill.box.lo.z, fill.box.hi.z, shift);
    for (uint64_t nz = z.a0; nz <= z.a1; ++nz) {
      for (uint64_t ny = y.a0; ny <= y.a1; ++ny) {
        const bool skip = z.Inside(nz) && y.Inside(ny) && x.inside() > 0;
        for (uint64_t nx = x.a0; nx <= x.a1; ++nx) {
          if (skip && nx == x.i0) {
            nx = x.i1;  // the nodes between are inside the fill
            continue;
          }
          fn(level, MortonEncode(static_cast<uint32_t>(nx), static_cast<uint32_t>(ny),
                                 static_cast<uint32_t>(nz)));
        }
      }
    }
  }
  return absl::OkStatus();
}

StatusOr<LodRead> LodPyramid::ReadNode(const ChunkStore::Snapshot& snapshot, const FillSet& fills,
                                       int level, uint64_t node) const {
  auto record = snapshot.Get(Table::kLod, LodRecordKey(level, node));
  if (!record.ok() && !absl::IsNotFound(record.status())) return record.status();
  LodRead read;
  if (record.ok()) {
    read.record.assign(record->begin(), record->end());
    VOXDB_ASSIGN_OR_RETURN(ChunkRecordView view, ParseChunkRecord(read.record));
    read.version = view.header.version;
  }
  // The newest fill covering the node wholly: if it is newer than the
  // record, every chunk under the node reads as it (its stored chunks were
  // rewritten by it, and any newer write or partial fill marked the node).
  const VoxelBox box = NodeBox(level, node);
  const FillList all = fills.fills();
  for (size_t i = all.size(); i-- > 0;) {
    const Fill& f = all[i];
    if (f.seq <= read.version) break;
    if (BoxContains(f.box, box)) {
      read.version = f.seq;
      read.record = EncodeChunk(Chunk(f.material), f.seq, 0);
      return read;
    }
  }
  if (!record.ok()) return record.status();
  return read;
}

Status LodPyramid::MarkNewFills() {
  const std::shared_ptr<const FillSet> fills = db_->Fills();
  if (fills->size() == 0) return absl::OkStatus();
  const uint64_t newest = fills->fills().back().seq;
  const std::array<uint8_t, 1> cursor_key{kLodFillCursorKey};
  uint64_t cursor = 0;
  {
    VOXDB_ASSIGN_OR_RETURN(auto snapshot, db_->store().BeginRead());
    auto value = snapshot->Get(Table::kLod, cursor_key);
    if (value.ok() && value->size() == 8) {
      cursor = DecodeFixed64(value->data());
    } else if (!value.ok() && !absl::IsNotFound(value.status())) {
      return value.status();
    }
  }
  if (newest <= cursor) return absl::OkStatus();
  WriteBatch batch;
  std::set<std::pair<int, uint64_t>> nodes;
  for (const Fill& fill : fills->fills()) {
    if (fill.seq <= cursor) continue;
    // A fill with too large a boundary is skipped (LOD_REBUILD skips it too):
    // the nodes it covers wholly still read as it.
    (void)ForEachFillBoundaryNode(fill, [&](int level, uint64_t node) {
      nodes.insert({level, node});
    });
  }
  for (const auto& [level, node] : nodes) {
    batch.Put(Table::kLod, LodDirtyKey(level, node), NextToken());
  }
  std::vector<uint8_t> value(8);
  EncodeFixed64(value.data(), newest);
  batch.Put(Table::kLod, cursor_key, std::move(value));
  return db_->store().Write(batch);
}

Status LodPyramid::BuildDirty(bool* did_work) {
  while (markers_waiting_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  MutexLock build_lock(&build_mu_);
  *did_work = false;
  VOXDB_RETURN_IF_ERROR(MarkNewFills());
  std::vector<Marker> markers;
  std::vector<std::vector<uint8_t>> stray;  // markers of levels not kept
  {
    VOXDB_ASSIGN_OR_RETURN(auto snapshot, db_->store().BeginRead());
    const std::array<uint8_t, 1> begin{kLodDirtyPrefix};
    VOXDB_RETURN_IF_ERROR(snapshot->Scan(
        Table::kLod, begin, {}, [&](std::span<const uint8_t> key, std::span<const uint8_t> value) {
          if (key.size() != 10) {
            stray.emplace_back(key.begin(), key.end());
            return true;
          }
          const int level = key[1];
          if (level < 1 || level > options_.levels) {
            stray.emplace_back(key.begin(), key.end());
            return true;
          }
          if (!markers.empty() && markers.front().level != level) return false;
          markers.push_back(
              Marker{level, DecodeFixed64(key.data() + 2), {value.begin(), value.end()}});
          return static_cast<int>(markers.size()) < options_.nodes_per_write;
        }));
  }
  if (markers.empty() && stray.empty()) return absl::OkStatus();
  *did_work = true;
  std::vector<Built> built;
  for (const Marker& m : markers) {
    Built b{m.level, m.node, {}};
    VOXDB_RETURN_IF_ERROR(BuildNode(m.level, m.node, &b.record));
    built.push_back(std::move(b));
  }
  return db_->RebuildFromStore(
      [&](const ChunkStore::Snapshot& snapshot, WriteBatch* batch) -> Status {
        for (const auto& key : stray) batch->Delete(Table::kLod, key);
        for (size_t i = 0; i < built.size(); ++i) {
          const Marker& m = markers[i];
          batch->Put(Table::kLod, LodRecordKey(m.level, m.node), std::move(built[i].record));
          if (m.level < options_.levels) {
            batch->Put(Table::kLod, LodDirtyKey(m.level + 1, m.node >> 3), NextToken());
          }
          const auto dirty_key = LodDirtyKey(m.level, m.node);
          auto now = snapshot.Get(Table::kLod, dirty_key);
          if (now.ok() && std::equal(now->begin(), now->end(), m.token.begin(), m.token.end())) {
            batch->Delete(Table::kLod, dirty_key);
          } else if (!now.ok() && !absl::IsNotFound(now.status())) {
            return now.status();
          }
        }
        return absl::OkStatus();
      });
}

Status LodPyramid::BuildNode(int level, uint64_t node, std::vector<uint8_t>* out) {
  std::vector<uint8_t> dense(kChunkVoxels, 0);
  uint64_t version = 0;
  if (level == 1) {
    VOXDB_RETURN_IF_ERROR(BuildLevel1(node, dense.data(), &version));
  } else {
    VOXDB_RETURN_IF_ERROR(BuildUpper(level, node, dense.data(), &version));
  }
  Chunk chunk = Chunk::FromDense(dense);
  chunk.Compact();
  CodecOptions codec;
  codec.zstd_level = options_.zstd_level;
  *out = EncodeChunk(chunk, version, NowMicros(), codec);
  return absl::OkStatus();
}

Status LodPyramid::BuildLevel1(uint64_t node, uint8_t* dense, uint64_t* version) {
  std::array<ChunkKey, 8> keys;
  for (int i = 0; i < 8; ++i) keys[i] = ChunkKey::FromCode((node << 3) | uint64_t(i));
  std::vector<uint8_t> scratch;
  Status first_error;
  VOXDB_RETURN_IF_ERROR(db_->GetChunks(keys, [&](size_t i, const ChunkRead& read) {
    if (!first_error.ok()) return;
    if (absl::IsNotFound(read.status) || IsOutOfBounds(read.status)) return;  // air
    if (!read.status.ok()) {
      first_error = read.status;
      return;
    }
    if (read.record.empty()) return;
    first_error = AddChild(read.record, static_cast<int>(i), dense, &scratch, version);
  }));
  return first_error;
}

Status LodPyramid::BuildUpper(int level, uint64_t node, uint8_t* dense, uint64_t* version) {
  const std::shared_ptr<const FillSet> fills = db_->Fills();
  VOXDB_ASSIGN_OR_RETURN(auto snapshot, db_->store().BeginRead());
  std::vector<uint8_t> scratch;
  for (int i = 0; i < 8; ++i) {
    auto child = ReadNode(*snapshot, *fills, level - 1, (node << 3) | uint64_t(i));
    if (absl::IsNotFound(child.status())) continue;  // never built: air
    if (!child.ok()) return child.status();
    VOXDB_RETURN_IF_ERROR(AddChild(child->record, i, dense, &scratch, version));
  }
  return absl::OkStatus();
}

StatusOr<LodRead> LodPyramid::GetLod(int level, uint64_t node_code) {
  if (level < 1 || level > options_.levels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("LOD level %d is outside 1..%d", level, options_.levels));
  }
  const std::shared_ptr<const FillSet> fills = db_->Fills();
  VOXDB_ASSIGN_OR_RETURN(auto snapshot, db_->store().BeginRead());
  VOXDB_ASSIGN_OR_RETURN(LodRead read, ReadNode(*snapshot, *fills, level, node_code));
  read.dirty = snapshot->Get(Table::kLod, LodDirtyKey(level, node_code)).ok();
  return read;
}

Status LodPyramid::RebuildAll() {
  VOXDB_RETURN_IF_ERROR(MarkAllForRebuild());
  for (;;) {
    bool did_work = false;
    VOXDB_RETURN_IF_ERROR(BuildDirty(&did_work));
    if (!did_work) return absl::OkStatus();
  }
}

Status LodPyramid::MarkAllForRebuild() {
  ++markers_waiting_;
  MutexLock build_lock(&build_mu_);
  --markers_waiting_;
  std::set<uint64_t> nodes;  // level-1 nodes with stored or dirty chunks under them
  auto add = [&](uint64_t node) -> Status {
    nodes.insert(node);
    if (nodes.size() > options_.max_rebuild_nodes) {
      return TooLargeError(absl::StrFormat("the LOD rebuild would build more than %u level-1 nodes",
                                           options_.max_rebuild_nodes));
    }
    return absl::OkStatus();
  };
  {
    VOXDB_ASSIGN_OR_RETURN(auto snapshot, db_->store().BeginRead());
    Status error;
    VOXDB_RETURN_IF_ERROR(
        snapshot->ScanChunks(MortonRange::All(), [&](ChunkKey key, std::span<const uint8_t>) {
          error = add(key.OctreeNode(1));
          return error.ok();
        }));
    VOXDB_RETURN_IF_ERROR(error);
  }
  for (const auto& dirty : db_->DirtyChunks()) VOXDB_RETURN_IF_ERROR(add(dirty.key.OctreeNode(1)));
  // The fills' boundaries (what they cover wholly reads as them). A fill
  // with too large a boundary is skipped, as by the builder.
  std::set<std::pair<int, uint64_t>> boundary;
  const std::shared_ptr<const FillSet> fills = db_->Fills();
  for (const Fill& fill : fills->fills()) {
    (void)ForEachFillBoundaryNode(fill, [&](int level, uint64_t node) {
      if (level > 1 || nodes.count(node) == 0) boundary.insert({level, node});
    });
  }
  WriteBatch batch;  // records go; the fill cursor and markers stay
  const std::array<uint8_t, 1> begin{0}, end{kLodFillCursorKey};
  batch.DeleteRange(Table::kLod, begin, end);
  for (uint64_t node : nodes) batch.Put(Table::kLod, LodDirtyKey(1, node), NextToken());
  for (const auto& [level, node] : boundary) {
    batch.Put(Table::kLod, LodDirtyKey(level, node), NextToken());
  }
  std::vector<uint8_t> cursor(8);  // these fills are marked now
  EncodeFixed64(cursor.data(), fills->last_seq());
  batch.Put(Table::kLod, std::array<uint8_t, 1>{kLodFillCursorKey}, std::move(cursor));
  return db_->store().Write(batch);
}

uint64_t LodPyramid::DirtyCount() {
  auto snapshot = db_->store().BeginRead();
  if (!snapshot.ok()) return 0;
  uint64_t count = 0;
  const std::array<uint8_t, 1> begin{kLodDirtyPrefix};
  (void)(*snapshot)->Scan(Table::kLod, begin, {},
                          [&](std::span<const uint8_t>, std::span<const uint8_t>) {
                            ++count;
                            return true;
                          });
  return count;
}

}  // namespace voxdb::engine
