#include "engine/lod.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"

namespace voxdb::engine {

namespace {

constexpr int kHalf = kChunkEdge / 2;

// Tokens of dirty markers: unique within a process and growing across
// restarts (seeded with the clock), so a marker rewritten during a build
// never holds the token the builder read.
std::vector<uint8_t> NextToken() {
  static std::atomic<uint64_t> next{static_cast<uint64_t>(NowMicros()) << 10};
  std::vector<uint8_t> token(8);
  EncodeFixed64(token.data(), next.fetch_add(1));
  return token;
}

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
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void LodPyramid::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LodPyramid::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    bool did_work = false;
    Status s = BuildDirty(&did_work);
    lock.lock();
    if (!s.ok()) last_error_ = s;
    if (did_work && s.ok()) continue;
    // Nothing to do (or an error): poll again shortly.
    cv_.wait_for(lock, std::chrono::milliseconds(s.ok() ? 20 : 500), [this] { return stop_; });
  }
}

Status LodPyramid::ForEachFillNode(const Fill& fill,
                                   const std::function<Status(uint64_t)>& fn) const {
  if (fill.box.empty()) return absl::OkStatus();
  const WorldFrame& frame = db_->frame();
  const ChunkCoord lo = frame.ChunkOf(fill.box.lo);
  const ChunkCoord hi =
      frame.ChunkOf(VoxelCoord{fill.box.hi.x - 1, fill.box.hi.y - 1, fill.box.hi.z - 1});
  const uint64_t count = uint64_t{(hi.x >> 1) - (lo.x >> 1) + 1} * ((hi.y >> 1) - (lo.y >> 1) + 1) *
                         ((hi.z >> 1) - (lo.z >> 1) + 1);
  if (count > options_.max_rebuild_nodes) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("fill %d covers %d LOD nodes, more than the limit %d", fill.seq, count,
                        options_.max_rebuild_nodes));
  }
  for (uint32_t z = lo.z >> 1; z <= hi.z >> 1; ++z) {
    for (uint32_t y = lo.y >> 1; y <= hi.y >> 1; ++y) {
      for (uint32_t x = lo.x >> 1; x <= hi.x >> 1; ++x) {
        VOXDB_RETURN_IF_ERROR(fn(MortonEncode(x, y, z)));
      }
    }
  }
  return absl::OkStatus();
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
  std::set<uint64_t> nodes;
  for (const Fill& fill : fills->fills()) {
    if (fill.seq <= cursor) continue;
    // A fill too large to mark is skipped (RebuildAll refuses it too).
    (void)ForEachFillNode(fill, [&](uint64_t node) {
      nodes.insert(node);
      return absl::OkStatus();
    });
  }
  for (uint64_t node : nodes) batch.Put(Table::kLod, LodDirtyKey(1, node), NextToken());
  std::vector<uint8_t> value(8);
  EncodeFixed64(value.data(), newest);
  batch.Put(Table::kLod, cursor_key, std::move(value));
  return db_->store().Write(batch);
}

Status LodPyramid::BuildDirty(bool* did_work) {
  std::lock_guard<std::mutex> build_lock(build_mu_);
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
    if (absl::IsNotFound(read.status) || absl::IsOutOfRange(read.status)) return;  // air
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
  VOXDB_ASSIGN_OR_RETURN(auto snapshot, db_->store().BeginRead());
  std::vector<uint8_t> scratch;
  for (int i = 0; i < 8; ++i) {
    auto record = snapshot->Get(Table::kLod, LodRecordKey(level - 1, (node << 3) | uint64_t(i)));
    if (absl::IsNotFound(record.status())) continue;  // never built: air
    if (!record.ok()) return record.status();
    VOXDB_RETURN_IF_ERROR(AddChild(*record, i, dense, &scratch, version));
  }
  return absl::OkStatus();
}

StatusOr<LodRead> LodPyramid::GetLod(int level, uint64_t node_code) {
  if (level < 1 || level > options_.levels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("LOD level %d is outside 1..%d", level, options_.levels));
  }
  VOXDB_ASSIGN_OR_RETURN(auto snapshot, db_->store().BeginRead());
  VOXDB_ASSIGN_OR_RETURN(std::span<const uint8_t> record,
                         snapshot->Get(Table::kLod, LodRecordKey(level, node_code)));
  LodRead read;
  read.record.assign(record.begin(), record.end());
  VOXDB_ASSIGN_OR_RETURN(ChunkRecordView view, ParseChunkRecord(read.record));
  read.version = view.header.version;
  read.dirty = snapshot->Get(Table::kLod, LodDirtyKey(level, node_code)).ok();
  return read;
}

Status LodPyramid::RebuildAll() {
  std::lock_guard<std::mutex> build_lock(build_mu_);
  std::set<uint64_t> nodes;  // level-1 nodes with something under them
  auto add = [&](uint64_t node) -> Status {
    nodes.insert(node);
    if (nodes.size() > options_.max_rebuild_nodes) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the LOD rebuild would build more than %u level-1 nodes", options_.max_rebuild_nodes));
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
  for (const Fill& fill : db_->Fills()->fills()) {
    VOXDB_RETURN_IF_ERROR(ForEachFillNode(fill, add));
  }
  {
    WriteBatch clear;  // records only: the fill cursor and markers stay
    const std::array<uint8_t, 1> begin{0}, end{kLodFillCursorKey};
    clear.DeleteRange(Table::kLod, begin, end);
    VOXDB_RETURN_IF_ERROR(db_->store().Write(clear));
  }
  for (int level = 1; level <= options_.levels && !nodes.empty(); ++level) {
    WriteBatch batch;
    std::set<uint64_t> parents;
    for (uint64_t node : nodes) {
      std::vector<uint8_t> record;
      VOXDB_RETURN_IF_ERROR(BuildNode(level, node, &record));
      batch.Put(Table::kLod, LodRecordKey(level, node), std::move(record));
      parents.insert(node >> 3);
      if (static_cast<int>(batch.size()) >= options_.nodes_per_write) {
        VOXDB_RETURN_IF_ERROR(db_->store().Write(batch));
        batch.Clear();
      }
    }
    if (!batch.empty()) VOXDB_RETURN_IF_ERROR(db_->store().Write(batch));
    nodes = std::move(parents);
  }
  return absl::OkStatus();
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

Status LodPyramid::WaitIdle() {
  {
    std::lock_guard<std::mutex> build_lock(build_mu_);
    VOXDB_RETURN_IF_ERROR(MarkNewFills());
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (DirtyCount() != 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::lock_guard<std::mutex> lock(mu_);
      return last_error_.ok() ? BusyError("the LOD builder did not finish") : last_error_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return absl::OkStatus();
}

}  // namespace voxdb::engine
