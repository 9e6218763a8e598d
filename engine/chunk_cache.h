// ChunkCache: the database's cache of chunks, clean and dirty, in shards
// (each its own lock and LRU list) keyed by Morton code. A clean chunk is
// one the store holds as it is; it sits on its shard's LRU list and may be
// evicted. A dirty chunk has changes the flusher has not written back yet;
// it stays until the flusher marks it clean (MarkClean).
//
// Entries are copy-on-write: a reader (or the flusher, or a snapshot) takes
// a reference to an entry's chunk under the shard lock and sets
// `readers_may_hold`; the next writer then copies the chunk instead of
// changing it in place (MutableChunk). A virtual entry holds no chunk: the
// chunk reads as the fills it keeps (those of the moment it took its
// version). Clean virtual entries are not cached (the fills change).
//
// Writers pin the entries they are about to change (PinForWrite: loaded
// from the store on a miss), then change them under the shard lock
// (MarkDirty), which also unpins them, or give up (Unpin). Pinned and dirty
// entries are never evicted.
//
// Also here: CurrentFills, the database's current (immutable) fill set.
//
// With a NodeResources (DatabaseOptions::node) the cache registers itself
// with it and keeps the node's totals in step with its own; room is then
// made against the node's cache budget (NodeResources::MakeRoom), which may
// evict from this cache on another database's behalf (Evict).
//
// Locks: each shard's `mu` guards its map, LRU list and epoch, and the
// fields of its entries. Under it the cache takes only CurrentFills' lock
// (a leaf). The database calls PinForWrite, Unpin and MarkDirty with its
// edit lock held, and the flusher MarkClean and TakeForFlush with it held;
// nothing here needs it. No store read transaction is held under a shard
// lock. The cache calls into its NodeResources only with no shard lock held
// (MaybeEvict); the node calls Evict with its registry lock held, and Evict
// takes the shard locks one at a time.
//
// Thread-safety: thread-safe. A writer's Entry* stays valid while it is
// pinned (the map is node-based and pinned entries are never erased).
#ifndef VOXDB_ENGINE_CHUNK_CACHE_H_
#define VOXDB_ENGINE_CHUNK_CACHE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/change_feed.h"
#include "engine/chunk.h"
#include "engine/chunk_store.h"
#include "engine/database.h"
#include "engine/fills.h"
#include "engine/morton.h"
#include "engine/mutex.h"
#include "engine/node_resources.h"
#include "engine/status.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

// Memory charged for a cache entry that holds no chunk (reads as fills).
inline constexpr size_t kVirtualEntryBytes = 64;

// The current fill set: an immutable snapshot, replaced on every FILL_BOX.
// Thread-safe; its lock is a leaf.
class CurrentFills {
 public:
  std::shared_ptr<const FillSet> Get() const ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock l(&mu_);
    return fills_;
  }
  void Set(std::shared_ptr<const FillSet> fills) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock l(&mu_);
    fills_ = std::move(fills);
  }

 private:
  mutable Mutex mu_;
  std::shared_ptr<const FillSet> fills_ ABSL_GUARDED_BY(mu_) = std::make_shared<FillSet>();
};

class ChunkCache {
 public:
  struct Entry {
    std::shared_ptr<Chunk> chunk;  // null: the chunk reads as the fills
    // With chunk null: the fills it reads as (those of the moment it took
    // `version`), so that its voxels and version always go together.
    std::shared_ptr<const FillSet> fills;
    uint64_t version = 0;
    size_t bytes = kVirtualEntryBytes;
    bool dirty = false;
    bool pinned = false;  // held by a writer between load and apply
    bool in_lru = false;
    // A reader, a snapshot or the flusher took a reference to `chunk`
    // (under the shard lock): the next writer copies it instead of
    // mutating in place.
    bool readers_may_hold = false;
    std::list<uint64_t>::iterator lru;
  };
  // A chunk as read: the cached/stored chunk, or null for "reads as fills".
  struct ChunkRef {
    std::shared_ptr<const Chunk> chunk;
    std::shared_ptr<const FillSet> fills;  // virtual: the fills it reads as
    uint64_t version = 0;
    bool virtual_chunk = false;
    // The chunk's voxels: `chunk`, or the fills rasterised.
    std::shared_ptr<const Chunk> Materialise(const WorldFrame& frame, uint64_t code) const {
      if (chunk) return chunk;
      return std::make_shared<Chunk>(fills->Rasterise(frame, MortonDecode(code), nullptr));
    }
  };
  // What a writer needs of the chunk it is about to change.
  enum class Need { kContent, kVersion, kNothing };

  // Neither is owned; both must outlive the cache.
  ChunkCache(const DatabaseOptions& options, ChunkStore* store, const CurrentFills* fills);
  ~ChunkCache();
  ChunkCache(const ChunkCache&) = delete;
  ChunkCache& operator=(const ChunkCache&) = delete;

  // --- Reads ---
  // Cache first, then the store; caches what it decoded (marking it held
  // by readers).
  Status Read(uint64_t code, ChunkRef* out);
  // A dirty chunk, as of one moment (its chunk, fills and version; `fills`
  // stands in for a chunk with voxels), marked held by readers. False when
  // the chunk is not dirty.
  bool ReadDirty(uint64_t code, const std::shared_ptr<const FillSet>& fills, ChunkRef* out);
  // The voxel at `offset` of a cached chunk with voxels, read in place
  // under its shard lock (writers change chunks only under it), without
  // marking it held: taking a reference would make the next write copy the
  // whole chunk. False when the chunk is not cached with voxels.
  bool ReadVoxelInPlace(uint64_t code, ChunkCoord offset, uint8_t* voxel, uint64_t* version);
  // A dirty chunk's chunk (null: reads as the fills) and version, marked
  // held by readers; false when it is not cached. For snapshots.
  bool Share(uint64_t code, std::shared_ptr<const Chunk>* chunk, uint64_t* version);
  // A cached chunk's version and whether it has voxels; false when it is
  // not cached.
  bool Peek(uint64_t code, uint64_t* version, bool* present) const;

  // --- Writes (the database's edit lock held) ---
  // Loads and pins the entry for `code`.
  Status PinForWrite(uint64_t code, Entry** out, Need need = Need::kContent);
  void Unpin(uint64_t code, Entry* e);
  // Gives the entry a private, materialised chunk to mutate. Only inside
  // MarkDirty's `mutate` (the shard lock held).
  Chunk& MutableChunk(uint64_t code, Entry* e);
  // Changes a pinned entry: mutate(*e) runs under its shard's lock, and the
  // entry takes its new version, byte count and dirty state under the same
  // lock, so that readers see voxels and version of one moment. Then the
  // entry is unpinned. Returns what the change feed records of it.
  template <typename F>
  ChangedChunk MarkDirty(uint64_t code, Entry* e, uint64_t seq, F&& mutate);
  // What making `code` dirty costs in memory on top of today: 0 if it is
  // dirty, its size if cached clean, else an estimate from its stored
  // record (read through *snap, opened on first use).
  size_t DirtyCost(uint64_t code, std::unique_ptr<ChunkStore::Snapshot>* snap);

  // --- The flusher (the database's edit lock held) ---
  // A dirty chunk's state to write back, marked held by readers; adds its
  // bytes to *bytes.
  void TakeForFlush(uint64_t code, std::shared_ptr<const Chunk>* chunk, uint64_t* version,
                    size_t* bytes);
  // The flusher wrote the dirty chunk back: it turns clean.
  void MarkClean(uint64_t code);

  // Evicts clean chunks until the cache, plus `headroom` bytes about to be
  // added, fits cache_bytes (or nothing clean is left). With a node: until
  // the node's caches fit its budget (NodeResources::MakeRoom).
  // REQUIRES: no shard lock held.
  void MaybeEvict(size_t headroom = 0);
  // Evicts the oldest clean chunks, about `bytes` of them, or all there are.
  // Returns the bytes freed. For NodeResources::MakeRoom.
  size_t Evict(size_t bytes);
  // Forgets every entry, dirty or not (a rollback).
  void Clear();

  int64_t dirty_bytes() const { return dirty_bytes_.load(); }
  int64_t cache_bytes() const { return cache_bytes_.load(); }
  uint64_t hits() const { return hits_.load(); }
  uint64_t misses() const { return misses_.load(); }
  uint64_t evictions() const { return evictions_.load(); }
  // With a node: when the cache was last read or written (SteadyMicros).
  int64_t last_active_us() const { return last_active_us_.load(std::memory_order_relaxed); }
  // Entries cached now (takes each shard's lock in turn).
  uint64_t CountEntries() const;

 private:
  struct Shard {
    mutable Mutex mu;
    // Node-based: Entry* stay valid.
    std::unordered_map<uint64_t, Entry> map ABSL_GUARDED_BY(mu);
    // Clean, unpinned entries; front = newest.
    std::list<uint64_t> lru ABSL_GUARDED_BY(mu);
    // Bumps when an entry leaves or turns clean.
    uint64_t epoch ABSL_GUARDED_BY(mu) = 0;
  };

  Shard& ShardOf(uint64_t code) {
    return shards_[(code * 0x9E3779B97F4A7C15ull >> 32) % shards_.size()];
  }
  const Shard& ShardOf(uint64_t code) const {
    return shards_[(code * 0x9E3779B97F4A7C15ull >> 32) % shards_.size()];
  }
  const WorldFrame& frame() const { return store_->frame(); }

  // Reads the chunk from the store (not the cache). Virtual for a chunk
  // that is not stored or is a kFills marker. With kVersion only the
  // header is read; with kNothing a corrupt record is read as a virtual
  // version 0.
  Status LoadFromStore(uint64_t code, ChunkRef* out, Need need = Need::kContent);
  // Caches what a reader loaded, unless the shard changed since `epoch`.
  void InsertClean(Shard& shard, uint64_t code, ChunkRef ref, uint64_t epoch)
      ABSL_LOCKS_EXCLUDED(shard.mu);
  void TouchLocked(Shard& shard, Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // The one place an entry turns clean (or is cached clean) while not
  // pinned: one with a chunk joins the LRU as its newest; a virtual one
  // leaves the cache (the fills it reads as change). False when it left.
  bool MarkCleanLocked(Shard& shard, uint64_t code, Entry& e)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Every change of the byte counts goes through here: with a node, its
  // totals follow.
  void AddBytes(int64_t cache_delta, int64_t dirty_delta) {
    if (cache_delta != 0) cache_bytes_ += cache_delta;
    if (dirty_delta != 0) dirty_bytes_ += dirty_delta;
    if (node_) node_->AddBytes(cache_delta, dirty_delta);
  }
  // With a node: notes that the cache is in use (see
  // NodeResourcesOptions::idle_after).
  void NoteActive() {
    if (node_) NoteActiveSlow();
  }
  void NoteActiveSlow();
  static size_t EntryBytes(const std::shared_ptr<Chunk>& chunk) {
    return chunk ? chunk->MemoryUsage() + kVirtualEntryBytes : kVirtualEntryBytes;
  }

  const DatabaseOptions& options_;
  NodeResources* const node_;  // null: the database's own budget
  ChunkStore* const store_;
  const CurrentFills* const fills_;
  std::vector<Shard> shards_;
  std::atomic<int64_t> cache_bytes_{0};
  std::atomic<int64_t> dirty_bytes_{0};
  std::atomic<uint64_t> hits_{0}, misses_{0}, evictions_{0};
  std::atomic<size_t> evict_cursor_{0};
  std::atomic<int64_t> last_active_us_{0};
};

template <typename F>
ChangedChunk ChunkCache::MarkDirty(uint64_t code, Entry* e, uint64_t seq, F&& mutate) {
  Shard& shard = ShardOf(code);
  MutexLock l(&shard.mu);
  mutate(*e);
  if (e->chunk) e->fills.reset();
  const size_t bytes = EntryBytes(e->chunk);
  const int64_t delta = static_cast<int64_t>(bytes) - static_cast<int64_t>(e->bytes);
  if (e->dirty) {
    AddBytes(delta, delta);
  } else {
    AddBytes(delta, static_cast<int64_t>(bytes));
    e->dirty = true;
  }
  e->bytes = bytes;
  e->version = seq;
  e->pinned = false;
  return ChangedChunk{code, e->chunk != nullptr, {}};
}

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_CHUNK_CACHE_H_
