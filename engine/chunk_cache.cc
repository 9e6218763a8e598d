#include "engine/chunk_cache.h"

#include <algorithm>

#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "engine/format.h"
#include "engine/group_committer.h"

namespace voxdb::engine {

ChunkCache::ChunkCache(const DatabaseOptions& options, ChunkStore* store, const CurrentFills* fills)
    : options_(options),
      node_(options.node.get()),
      store_(store),
      fills_(fills),
      shards_(static_cast<size_t>(std::max(1, options.cache_shards))) {
  if (node_) {
    last_active_us_ = SteadyMicros();
    node_->RegisterCache(this);
  }
}

ChunkCache::~ChunkCache() {
  if (!node_) return;
  // Waits for a MakeRoom evicting from us; then our memory leaves the node.
  node_->UnregisterCache(this);
  node_->AddBytes(-cache_bytes_.load(), -dirty_bytes_.load());
}

void ChunkCache::NoteActiveSlow() {
  const int64_t now = SteadyMicros();
  // Written at most once a millisecond: readers of many threads share it.
  if (now - last_active_us_.load(std::memory_order_relaxed) >= 1000) {
    last_active_us_.store(now, std::memory_order_relaxed);
  }
}

Status ChunkCache::LoadFromStore(uint64_t code, ChunkRef* out, Need need) {
  const ChunkCoord c = MortonDecode(code);
  // The fills first: a fill applied after this reads as newer (its writer
  // updates the cached entry under the shard lock, or the chunk is loaded
  // again).
  out->fills = fills_->Get();
  VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
  auto got = snap->GetChunk(ChunkKey::FromCode(code));
  if (absl::IsNotFound(got.status())) {
    out->chunk = nullptr;
    out->virtual_chunk = true;
    out->version = out->fills->VersionOf(frame(), c);
    return absl::OkStatus();
  }
  VOXDB_RETURN_IF_ERROR(got.status());
  auto parsed = ParseChunkRecord(*got);
  if (!parsed.ok() && need == Need::kNothing) {
    // Being replaced whole: a corrupt record does not stand in the way.
    out->chunk = nullptr;
    out->virtual_chunk = true;
    out->version = 0;
    return absl::OkStatus();
  }
  VOXDB_RETURN_IF_ERROR(parsed.status());
  const ChunkRecordView view = *parsed;
  if (view.header.encoding == ChunkEncoding::kFills) {
    out->chunk = nullptr;
    out->virtual_chunk = true;
    out->version = std::max(view.header.version, out->fills->VersionOf(frame(), c));
    return absl::OkStatus();
  }
  if (need != Need::kContent) {  // about to be replaced whole: the version is enough
    out->chunk = nullptr;
    out->virtual_chunk = true;
    out->version = view.header.version;
    return absl::OkStatus();
  }
  VOXDB_ASSIGN_OR_RETURN(Chunk chunk, DecodeChunk(*got));
  out->chunk = std::make_shared<Chunk>(std::move(chunk));
  out->virtual_chunk = false;
  out->version = view.header.version;
  return absl::OkStatus();
}

void ChunkCache::TouchLocked(Shard& shard, Entry& e) {
  if (e.in_lru) shard.lru.splice(shard.lru.begin(), shard.lru, e.lru);
}

bool ChunkCache::MarkCleanLocked(Shard& shard, uint64_t code, Entry& e) {
  if (!e.chunk) {  // virtual and clean: not cached
    AddBytes(-static_cast<int64_t>(e.bytes), 0);
    shard.map.erase(code);
    return false;
  }
  shard.lru.push_front(code);
  e.lru = shard.lru.begin();
  e.in_lru = true;
  return true;
}

void ChunkCache::InsertClean(Shard& shard, uint64_t code, ChunkRef ref, uint64_t epoch) {
  if (ref.virtual_chunk) return;  // fills change; virtual entries are not cached clean
  {
    MutexLock l(&shard.mu);
    if (shard.epoch != epoch || shard.map.count(code)) return;
    Entry& e = shard.map[code];
    e.chunk = std::const_pointer_cast<Chunk>(ref.chunk);
    e.version = ref.version;
    e.bytes = EntryBytes(e.chunk);
    e.readers_may_hold = true;  // the reader keeps its reference
    AddBytes(static_cast<int64_t>(e.bytes), 0);
    MarkCleanLocked(shard, code, e);
  }
  MaybeEvict();
}

void ChunkCache::MaybeEvict(size_t headroom) {
  if (node_) {
    node_->MakeRoom(this, headroom);
    return;
  }
  const int64_t budget =
      static_cast<int64_t>(options_.cache_bytes) - static_cast<int64_t>(headroom);
  for (size_t tries = 0; cache_bytes_.load() > budget && tries < shards_.size(); ++tries) {
    Shard& shard = shards_[evict_cursor_++ % shards_.size()];
    MutexLock l(&shard.mu);
    while (cache_bytes_.load() > budget && !shard.lru.empty()) {
      const uint64_t code = shard.lru.back();
      shard.lru.pop_back();
      auto it = shard.map.find(code);
      VOXDB_CHECK(it != shard.map.end() && !it->second.dirty && !it->second.pinned);
      cache_bytes_ -= static_cast<int64_t>(it->second.bytes);
      shard.map.erase(it);
      ++shard.epoch;
      ++evictions_;
    }
  }
}

size_t ChunkCache::Evict(size_t bytes) {
  size_t freed = 0;
  // The shards in turn, each's oldest first: about LRU order overall.
  for (size_t tries = 0; freed < bytes && tries < shards_.size(); ++tries) {
    Shard& shard = shards_[evict_cursor_++ % shards_.size()];
    MutexLock l(&shard.mu);
    while (freed < bytes && !shard.lru.empty()) {
      const uint64_t code = shard.lru.back();
      shard.lru.pop_back();
      auto it = shard.map.find(code);
      VOXDB_CHECK(it != shard.map.end() && !it->second.dirty && !it->second.pinned);
      AddBytes(-static_cast<int64_t>(it->second.bytes), 0);
      freed += it->second.bytes;
      shard.map.erase(it);
      ++shard.epoch;
      ++evictions_;
    }
  }
  return freed;
}

void ChunkCache::Clear() {
  if (!node_) {
    for (Shard& shard : shards_) {
      MutexLock l(&shard.mu);
      shard.map.clear();
      shard.lru.clear();
      ++shard.epoch;
    }
    cache_bytes_ = 0;
    dirty_bytes_ = 0;
    return;
  }
  // The node's totals lose exactly what leaves, shard by shard.
  for (Shard& shard : shards_) {
    MutexLock l(&shard.mu);
    int64_t bytes = 0, dirty = 0;
    for (const auto& [code, e] : shard.map) {
      bytes += static_cast<int64_t>(e.bytes);
      if (e.dirty) dirty += static_cast<int64_t>(e.bytes);
    }
    AddBytes(-bytes, -dirty);
    shard.map.clear();
    shard.lru.clear();
    ++shard.epoch;
  }
}

Status ChunkCache::Read(uint64_t code, ChunkRef* out) {
  NoteActive();
  Shard& shard = ShardOf(code);
  uint64_t epoch;
  {
    MutexLock l(&shard.mu);
    auto it = shard.map.find(code);
    if (it != shard.map.end()) {
      ++hits_;
      out->chunk = it->second.chunk;
      out->fills = it->second.fills;
      it->second.readers_may_hold = true;
      out->version = it->second.version;
      out->virtual_chunk = it->second.chunk == nullptr;
      if (out->virtual_chunk && !out->fills) out->fills = fills_->Get();
      TouchLocked(shard, it->second);
      return absl::OkStatus();
    }
    epoch = shard.epoch;
  }
  ++misses_;
  ChunkRef ref;
  VOXDB_RETURN_IF_ERROR(LoadFromStore(code, &ref));
  InsertClean(shard, code, ref, epoch);
  *out = std::move(ref);
  return absl::OkStatus();
}

bool ChunkCache::ReadDirty(uint64_t code, const std::shared_ptr<const FillSet>& fills,
                           ChunkRef* out) {
  Shard& shard = ShardOf(code);
  MutexLock l(&shard.mu);
  auto it = shard.map.find(code);
  if (it == shard.map.end() || !it->second.dirty) return false;
  out->chunk = it->second.chunk;
  // (A chunk with voxels does not use its fills: the caller's will do.)
  out->fills = it->second.fills ? it->second.fills : fills;
  it->second.readers_may_hold = true;
  out->version = it->second.version;
  ++hits_;
  return true;
}

bool ChunkCache::ReadVoxelInPlace(uint64_t code, ChunkCoord offset, uint8_t* voxel,
                                  uint64_t* version) {
  NoteActive();
  Shard& shard = ShardOf(code);
  MutexLock l(&shard.mu);
  auto e = shard.map.find(code);
  if (e == shard.map.end() || !e->second.chunk) return false;
  ++hits_;
  TouchLocked(shard, e->second);
  *voxel = e->second.chunk->Get(offset.x, offset.y, offset.z);
  *version = e->second.version;
  return true;
}

bool ChunkCache::Share(uint64_t code, std::shared_ptr<const Chunk>* chunk, uint64_t* version) {
  Shard& shard = ShardOf(code);
  MutexLock l(&shard.mu);
  auto it = shard.map.find(code);
  if (it == shard.map.end()) return false;
  it->second.readers_may_hold = true;
  *chunk = it->second.chunk;
  *version = it->second.version;
  return true;
}

bool ChunkCache::Peek(uint64_t code, uint64_t* version, bool* present) const {
  const Shard& shard = ShardOf(code);
  MutexLock l(&shard.mu);
  auto it = shard.map.find(code);
  if (it == shard.map.end()) return false;
  *version = it->second.version;
  *present = it->second.chunk != nullptr;
  return true;
}

Status ChunkCache::PinForWrite(uint64_t code, Entry** out, Need need) {
  NoteActive();
  Shard& shard = ShardOf(code);
  {
    MutexLock l(&shard.mu);
    auto it = shard.map.find(code);
    if (it != shard.map.end()) {
      Entry& e = it->second;
      if (e.in_lru) {
        shard.lru.erase(e.lru);
        e.in_lru = false;
      }
      e.pinned = true;
      if (!e.dirty) ++hits_;
      *out = &e;
      return absl::OkStatus();
    }
  }
  ++misses_;
  ChunkRef ref;
  VOXDB_RETURN_IF_ERROR(LoadFromStore(code, &ref, need));
  MutexLock l(&shard.mu);
  auto [it, inserted] = shard.map.try_emplace(code);
  Entry& e = it->second;
  if (inserted) {
    e.chunk = std::const_pointer_cast<Chunk>(ref.chunk);
    if (!e.chunk) e.fills = ref.fills;
    e.version = ref.version;
    e.bytes = EntryBytes(e.chunk);
    AddBytes(static_cast<int64_t>(e.bytes), 0);
  } else if (e.in_lru) {  // a reader cached it meanwhile: the same stored state
    shard.lru.erase(e.lru);
    e.in_lru = false;
  }
  e.pinned = true;
  *out = &e;
  return absl::OkStatus();
}

void ChunkCache::Unpin(uint64_t code, Entry* e) {
  Shard& shard = ShardOf(code);
  MutexLock l(&shard.mu);
  e->pinned = false;
  if (!e->dirty && !MarkCleanLocked(shard, code, *e)) ++shard.epoch;
}

Chunk& ChunkCache::MutableChunk(uint64_t code, Entry* e) {
  if (!e->chunk) {
    const std::shared_ptr<const FillSet> fills = e->fills ? e->fills : fills_->Get();
    e->chunk = std::make_shared<Chunk>(fills->Rasterise(frame(), MortonDecode(code), nullptr));
  } else if (e->readers_may_hold) {
    // A reader or the flusher may hold this state: copy on write. (The flag,
    // not use_count(), orders their reads before our writes.)
    e->chunk = std::make_shared<Chunk>(*e->chunk);
  }
  e->readers_may_hold = false;
  return *e->chunk;
}

size_t ChunkCache::DirtyCost(uint64_t code, std::unique_ptr<ChunkStore::Snapshot>* snap) {
  {
    Shard& shard = ShardOf(code);
    MutexLock l(&shard.mu);
    auto it = shard.map.find(code);
    if (it != shard.map.end()) return it->second.dirty ? 0 : it->second.bytes;
  }
  if (!*snap) {
    auto opened = store_->BeginRead();
    if (!opened.ok()) return kVirtualEntryBytes;
    *snap = std::move(*opened);
  }
  auto got = (*snap)->GetChunk(ChunkKey::FromCode(code));
  const auto header = got.ok() ? PeekChunkHeader(*got) : std::nullopt;
  if (!header || header->encoding != ChunkEncoding::kBricks || got->size() < kChunkHeaderSize + 4) {
    return kVirtualEntryBytes + sizeof(Chunk);
  }
  // The brick stream's size is about the bricks' memory.
  return DecodeFixed32(got->data() + kChunkHeaderSize) + sizeof(Brick) * kBricksPerChunk +
         kVirtualEntryBytes;
}

void ChunkCache::TakeForFlush(uint64_t code, std::shared_ptr<const Chunk>* chunk, uint64_t* version,
                              size_t* bytes) {
  Shard& shard = ShardOf(code);
  MutexLock l(&shard.mu);
  Entry& e = shard.map.at(code);
  *chunk = e.chunk;
  *version = e.version;
  e.readers_may_hold = true;
  *bytes += e.bytes;
}

void ChunkCache::MarkClean(uint64_t code) {
  Shard& shard = ShardOf(code);
  MutexLock l(&shard.mu);
  Entry& e = shard.map.at(code);
  e.dirty = false;
  AddBytes(0, -static_cast<int64_t>(e.bytes));
  ++shard.epoch;
  if (!e.pinned) MarkCleanLocked(shard, code, e);
}

uint64_t ChunkCache::CountEntries() const {
  uint64_t n = 0;
  for (const Shard& shard : shards_) {
    MutexLock l(&shard.mu);
    n += shard.map.size();
  }
  return n;
}

}  // namespace voxdb::engine
