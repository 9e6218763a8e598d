// Fills: the procedural base layer (docs/DESIGN.md, section 6).
//
// A fill is an axis-aligned voxel box of one material; newer fills (higher
// sequence numbers) win where fills overlap. A chunk that is not stored reads
// as the fills that intersect it, rasterised, else air; its version is the
// newest intersecting fill's sequence number (0: never written).
//
// Stored form (table `fills`, engine/FORMAT.md): key = sequence number as 8
// bytes big-endian; value = 49 bytes: box lo x, y, z, hi x, y, z (u64 LE
// each, hi exclusive) and the material.
//
// Thread-safety: FillSet is a value type; Database shares immutable
// snapshots of it between threads.
#ifndef VOXDB_ENGINE_FILLS_H_
#define VOXDB_ENGINE_FILLS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <span>
#include <vector>

#include "engine/chunk.h"
#include "engine/status.h"
#include "engine/voxel_box.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

struct Fill {
  uint64_t seq = 0;  // the journal sequence number of the FILL_BOX; its id
  VoxelBox box;
  uint8_t material = 0;

  static constexpr size_t kEncodedSize = 49;
  std::vector<uint8_t> Encode() const;
  // CORRUPT unless the value has the right size.
  static StatusOr<Fill> Decode(uint64_t seq, std::span<const uint8_t> value);
};

// An immutable list of fills in seq order that shares its storage with the
// lists it was made from: a 32-way trie (a persistent vector), so that
// appending, or replacing a fill, copies one path of O(log n) nodes and
// copying the list copies a pointer. Iterating it keeps nothing alive but
// the list itself: keep the list (it is cheap to copy) for as long as its
// fills are referenced.
class FillList {
 public:
  struct Node;  // engine/fills.cc

  class const_iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = Fill;
    using difference_type = std::ptrdiff_t;
    using pointer = const Fill*;
    using reference = const Fill&;
    const_iterator() = default;
    const Fill& operator*() const { return leaf_[i_ & kMask]; }
    const Fill* operator->() const { return &leaf_[i_ & kMask]; }
    const_iterator& operator++() {
      if ((++i_ & kMask) == 0 && i_ < list_->size_) leaf_ = list_->Leaf(i_);
      return *this;
    }
    const_iterator operator++(int) {
      const_iterator old = *this;
      ++*this;
      return old;
    }
    friend bool operator==(const const_iterator& a, const const_iterator& b) {
      return a.i_ == b.i_;
    }

   private:
    friend class FillList;
    const_iterator(const FillList* list, size_t i)
        : list_(list), i_(i), leaf_(i < list->size_ ? list->Leaf(i) : nullptr) {}
    const FillList* list_ = nullptr;
    size_t i_ = 0;
    const Fill* leaf_ = nullptr;  // the leaf holding fill i_
  };

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // REQUIRES: i < size(). O(log n).
  const Fill& operator[](size_t i) const { return Leaf(i)[i & kMask]; }
  const Fill& front() const { return (*this)[0]; }
  const Fill& back() const { return (*this)[size_ - 1]; }
  const_iterator begin() const { return const_iterator(this, 0); }
  const_iterator end() const { return const_iterator(this, size_); }

  // A list with `fill` put in its seq place; one with the same seq is
  // replaced. O(log n) when the fill is the newest or replaces one; O(n)
  // when it goes before newer fills.
  FillList Upsert(const Fill& fill) const;
  // The list without the fill of this seq (if any). O(n).
  FillList Erase(uint64_t seq) const;
  // The position of the fill with this seq, or size() if none. O(log^2 n).
  size_t Find(uint64_t seq) const;

 private:
  static constexpr int kBits = 5;
  static constexpr size_t kMask = (size_t{1} << kBits) - 1;
  // The fills of the leaf holding fill i (REQUIRES: i < size()).
  const Fill* Leaf(size_t i) const;
  FillList PushBack(const Fill& fill) const;
  FillList Set(size_t i, const Fill& fill) const;
  static FillList FromVector(const std::vector<Fill>& fills);

  std::shared_ptr<const Node> root_;
  size_t size_ = 0;
  int shift_ = 0;  // kBits * (height of the trie - 1)
};

// Fills ordered by sequence number, with a spatial index: a persistent value.
// Copying a FillSet copies a few pointers; Add copies only O(log n) nodes,
// so a snapshot taken before an Add is unchanged by it and shares almost
// everything with the set after it.
//
// The index is a loose octree over chunk coordinates: a fill whose chunk
// extent is at most 2^L on every axis (L <= 21) is filed under the level-L
// node holding its low corner, in a persistent hash trie of such nodes (each
// node's fills a FillList). The fills that can touch chunk c are then in at
// most 8 nodes per level in use (c's node and its lower neighbours), so a
// lookup visits only fills near c (within twice their own size), not all.
class FillSet {
 public:
  FillSet();
  // Adds a fill; a fill with the same seq is replaced (idempotent replay).
  void Add(const Fill& fill);
  // Every fill, in seq order (a view sharing the set's storage).
  FillList fills() const { return all_; }
  size_t size() const { return all_.size(); }
  // The newest fill's seq (0 if none).
  uint64_t last_seq() const { return all_.empty() ? 0 : all_.back().seq; }

  // The chunk as the fills make it: air, then every intersecting fill in seq
  // order. *version gets the newest intersecting fill's seq (0 if none).
  Chunk Rasterise(const WorldFrame& frame, const ChunkCoord& c, uint64_t* version) const;
  // The newest seq of a fill intersecting chunk c (0 if none).
  uint64_t VersionOf(const WorldFrame& frame, const ChunkCoord& c) const;

  struct IndexNode;                   // engine/fills.cc
  static constexpr int kLevels = 22;  // octree levels 0 (one chunk) .. 21 (the whole grid)

 private:
  // Calls fn(list) for every node list that may hold a fill touching c.
  template <typename Fn>
  void ForEachCandidateList(const ChunkCoord& c, Fn&& fn) const;
  void IndexAdd(const Fill& fill);
  void IndexErase(const Fill& fill);

  struct Level {
    uint64_t max_extent[3] = {0, 0, 0};  // largest chunk extent of its fills, per axis
  };

  FillList all_;
  std::shared_ptr<const IndexNode> index_;  // node key -> FillList
  uint32_t level_mask_ = 0;                 // bit L: level L may hold fills
  std::array<Level, kLevels> levels_;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_FILLS_H_
