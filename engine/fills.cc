#include "engine/fills.h"

#include <algorithm>
#include <bit>

#include "engine/coding.h"

namespace voxdb::engine {

std::vector<uint8_t> Fill::Encode() const {
  std::vector<uint8_t> out;
  out.reserve(kEncodedSize);
  for (uint64_t v : {box.lo.x, box.lo.y, box.lo.z, box.hi.x, box.hi.y, box.hi.z}) {
    PutFixed64(out, v);
  }
  out.push_back(material);
  return out;
}

StatusOr<Fill> Fill::Decode(uint64_t seq, std::span<const uint8_t> value) {
  if (value.size() != kEncodedSize) return CorruptError("fill record has the wrong size");
  Fill f;
  f.seq = seq;
  const uint8_t* p = value.data();
  f.box.lo = {DecodeFixed64(p), DecodeFixed64(p + 8), DecodeFixed64(p + 16)};
  f.box.hi = {DecodeFixed64(p + 24), DecodeFixed64(p + 32), DecodeFixed64(p + 40)};
  f.material = p[48];
  if (f.box.empty()) return CorruptError("fill record has an empty box");
  return f;
}

// --- FillList ---------------------------------------------------------------------

struct FillList::Node {
  std::vector<Fill> fills;                        // a leaf: up to 32 fills
  std::vector<std::shared_ptr<const Node>> kids;  // an inner node: up to 32 subtries
};

namespace {

using ListNodePtr = std::shared_ptr<const FillList::Node>;

}  // namespace

const Fill* FillList::Leaf(size_t i) const {
  const Node* node = root_.get();
  for (int shift = shift_; shift > 0; shift -= kBits) node = node->kids[(i >> shift) & kMask].get();
  return node->fills.data();
}

FillList FillList::PushBack(const Fill& fill) const {
  // Copies the rightmost path, adding what is missing of it.
  struct Rec {
    static ListNodePtr Push(const Node* node, int shift, size_t i, const Fill& f) {
      auto copy = node ? std::make_shared<Node>(*node) : std::make_shared<Node>();
      if (shift == 0) {
        copy->fills.push_back(f);
      } else {
        const size_t k = (i >> shift) & kMask;
        if (k < copy->kids.size()) {
          copy->kids[k] = Push(copy->kids[k].get(), shift - kBits, i, f);
        } else {
          copy->kids.push_back(Push(nullptr, shift - kBits, i, f));
        }
      }
      return copy;
    }
  };
  FillList out = *this;
  if (out.size_ > 0 && out.size_ == size_t{1} << (out.shift_ + kBits)) {  // full: grow a level
    auto root = std::make_shared<Node>();
    root->kids.push_back(out.root_);
    out.root_ = std::move(root);
    out.shift_ += kBits;
  }
  out.root_ = Rec::Push(out.root_.get(), out.shift_, out.size_, fill);
  ++out.size_;
  return out;
}

FillList FillList::Set(size_t i, const Fill& fill) const {
  struct Rec {
    static ListNodePtr Set(const Node* node, int shift, size_t i, const Fill& f) {
      auto copy = std::make_shared<Node>(*node);
      if (shift == 0) {
        copy->fills[i & kMask] = f;
      } else {
        const size_t k = (i >> shift) & kMask;
        copy->kids[k] = Set(copy->kids[k].get(), shift - kBits, i, f);
      }
      return copy;
    }
  };
  FillList out = *this;
  out.root_ = Rec::Set(root_.get(), shift_, i, fill);
  return out;
}

FillList FillList::FromVector(const std::vector<Fill>& fills) {
  FillList out;
  for (const Fill& f : fills) out = out.PushBack(f);
  return out;
}

size_t FillList::Find(uint64_t seq) const {
  size_t lo = 0, hi = size_;  // lower bound of seq
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if ((*this)[mid].seq < seq) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < size_ && (*this)[lo].seq == seq ? lo : size_;
}

FillList FillList::Upsert(const Fill& fill) const {
  if (empty() || back().seq < fill.seq) return PushBack(fill);
  const size_t i = Find(fill.seq);
  if (i < size_) return Set(i, fill);
  std::vector<Fill> all(begin(), end());  // an older fill, not there: rebuild
  all.insert(std::lower_bound(all.begin(), all.end(), fill.seq,
                              [](const Fill& f, uint64_t seq) { return f.seq < seq; }),
             fill);
  return FromVector(all);
}

FillList FillList::Erase(uint64_t seq) const {
  if (Find(seq) == size_) return *this;
  std::vector<Fill> rest;
  rest.reserve(size_ - 1);
  for (const Fill& f : *this) {
    if (f.seq != seq) rest.push_back(f);
  }
  return FromVector(rest);
}

// --- FillSet's index ---------------------------------------------------------------

// A node of a hash array mapped trie from node keys to fill lists: 5 bits of
// the key's hash per level, a bitmap of the slots in use and only those.
struct FillSet::IndexNode {
  struct Slot {
    uint64_t key = 0;
    FillList list;                           // when !child
    std::shared_ptr<const IndexNode> child;  // a subtrie, for keys whose hashes share this slot
  };
  uint32_t bitmap = 0;
  std::vector<Slot> slots;
};

namespace {

using IndexNode = FillSet::IndexNode;
using IndexPtr = std::shared_ptr<const IndexNode>;

constexpr int kChunkBits = 7;  // log2 of the chunk edge
static_assert(kChunkEdge == 1 << kChunkBits);
constexpr int kGridBits = FillSet::kLevels - 1;  // chunk coordinates: 21 bits per axis
constexpr uint64_t kGrid = uint64_t{1} << kGridBits;
constexpr uint64_t kOverflowKey = 0;  // fills outside the 21-bit grid: every lookup reads them
constexpr uint32_t kOverflowBit = uint32_t{1} << FillSet::kLevels;

// A bijection (the splitmix64 finaliser): distinct keys get distinct hashes,
// so two keys always part within 64 bits of hash.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

uint32_t SlotBit(uint64_t hash, int shift) {
  return uint32_t{1} << (shift < 64 ? (hash >> shift) & 31 : 0);
}

const FillList* IndexFind(const IndexNode* node, uint64_t key) {
  const uint64_t h = Mix(key);
  for (int shift = 0; node != nullptr; shift += 5) {
    const uint32_t bit = SlotBit(h, shift);
    if ((node->bitmap & bit) == 0) return nullptr;
    const IndexNode::Slot& slot = node->slots[std::popcount(node->bitmap & (bit - 1))];
    if (!slot.child) return slot.key == key ? &slot.list : nullptr;
    node = slot.child.get();
  }
  return nullptr;
}

// The trie with key -> list, copying one path.
IndexPtr IndexPut(const IndexNode* node, int shift, uint64_t key, uint64_t h,
                  const FillList& list) {
  auto copy = node ? std::make_shared<IndexNode>(*node) : std::make_shared<IndexNode>();
  const uint32_t bit = SlotBit(h, shift);
  const size_t at = std::popcount(copy->bitmap & (bit - 1));
  if ((copy->bitmap & bit) == 0) {
    copy->bitmap |= bit;
    copy->slots.insert(copy->slots.begin() + static_cast<std::ptrdiff_t>(at),
                       IndexNode::Slot{key, list, nullptr});
    return copy;
  }
  IndexNode::Slot& slot = copy->slots[at];
  if (slot.child) {
    slot.child = IndexPut(slot.child.get(), shift + 5, key, h, list);
  } else if (slot.key == key) {
    slot.list = list;
  } else {  // two keys in one slot: push both down
    IndexPtr sub = IndexPut(nullptr, shift + 5, slot.key, Mix(slot.key), slot.list);
    sub = IndexPut(sub.get(), shift + 5, key, h, list);
    slot = IndexNode::Slot{0, FillList(), std::move(sub)};
  }
  return copy;
}

// Where a fill is filed: its octree level (kLevels for the overflow list)
// and node key, and its extent in chunks per axis.
struct Placement {
  int level = FillSet::kLevels;
  uint64_t key = kOverflowKey;
  uint64_t extent[3] = {0, 0, 0};
};

// The key of node n (per-axis node coordinates) of level L: a marker bit
// above the 3 * (21 - L) bits of n, so that keys of different levels differ.
uint64_t NodeKey(int level, uint64_t nx, uint64_t ny, uint64_t nz) {
  const int bits = kGridBits - level;
  return (uint64_t{1} << (3 * bits)) | (nx << (2 * bits)) | (ny << bits) | nz;
}

Placement PlaceFill(const Fill& f) {
  Placement p;
  if (f.box.empty()) return p;
  const uint64_t lo[3] = {f.box.lo.x >> kChunkBits, f.box.lo.y >> kChunkBits,
                          f.box.lo.z >> kChunkBits};
  const uint64_t hi[3] = {(f.box.hi.x - 1) >> kChunkBits, (f.box.hi.y - 1) >> kChunkBits,
                          (f.box.hi.z - 1) >> kChunkBits};
  int level = 0;
  for (int a = 0; a < 3; ++a) {
    p.extent[a] = hi[a] - lo[a] + 1;
    level = std::max(level, static_cast<int>(std::bit_width(p.extent[a] - 1)));
    if (lo[a] >= kGrid) level = FillSet::kLevels;
  }
  if (level >= FillSet::kLevels) return p;
  p.level = level;
  p.key = NodeKey(level, lo[0] >> level, lo[1] >> level, lo[2] >> level);
  return p;
}

bool Touches(const Fill& f, const VoxelBox& b) { return !Intersect(f.box, b).empty(); }

}  // namespace

FillSet::FillSet() = default;

void FillSet::IndexAdd(const Fill& fill) {
  const Placement p = PlaceFill(fill);
  const FillList* list = IndexFind(index_.get(), p.key);
  const FillList next = list ? list->Upsert(fill) : FillList().Upsert(fill);
  index_ = IndexPut(index_.get(), 0, p.key, Mix(p.key), next);
  if (p.level == kLevels) {
    level_mask_ |= kOverflowBit;
    return;
  }
  level_mask_ |= uint32_t{1} << p.level;
  for (int a = 0; a < 3; ++a) {
    levels_[p.level].max_extent[a] = std::max(levels_[p.level].max_extent[a], p.extent[a]);
  }
}

void FillSet::IndexErase(const Fill& fill) {
  const uint64_t key = PlaceFill(fill).key;
  const FillList* list = IndexFind(index_.get(), key);
  if (list) index_ = IndexPut(index_.get(), 0, key, Mix(key), list->Erase(fill.seq));
}

void FillSet::Add(const Fill& fill) {
  if (!all_.empty() && fill.seq <= all_.back().seq) {
    const size_t i = all_.Find(fill.seq);
    // Replay replaces a fill with itself: its node's list is updated in
    // place below. One that moves to another node leaves the old one.
    if (i < all_.size() && PlaceFill(all_[i]).key != PlaceFill(fill).key) IndexErase(all_[i]);
  }
  all_ = all_.Upsert(fill);
  IndexAdd(fill);
}

template <typename Fn>
void FillSet::ForEachCandidateList(const ChunkCoord& c, Fn&& fn) const {
  const uint64_t cc[3] = {c.x, c.y, c.z};
  if (cc[0] >= kGrid || cc[1] >= kGrid || cc[2] >= kGrid) {  // outside any world: read all
    fn(all_);
    return;
  }
  if (level_mask_ & kOverflowBit) {
    if (const FillList* list = IndexFind(index_.get(), kOverflowKey)) fn(*list);
  }
  for (uint32_t mask = level_mask_ & (kOverflowBit - 1); mask != 0; mask &= mask - 1) {
    const int level = std::countr_zero(mask);
    // A fill of this level lies within twice the node size from its node's
    // low corner: c's node, or the node below it on an axis when a fill of
    // the level is long enough to reach c from there.
    uint64_t n[3][2];
    int count[3];
    for (int a = 0; a < 3; ++a) {
      const uint64_t n0 = cc[a] >> level;
      const uint64_t off = cc[a] - (n0 << level);
      n[a][0] = n0;
      count[a] = 1;
      if (n0 > 0 && levels_[level].max_extent[a] >= off + 2) n[a][count[a]++] = n0 - 1;
    }
    for (int i = 0; i < count[0]; ++i) {
      for (int j = 0; j < count[1]; ++j) {
        for (int k = 0; k < count[2]; ++k) {
          const uint64_t key = NodeKey(level, n[0][i], n[1][j], n[2][k]);
          if (const FillList* list = IndexFind(index_.get(), key)) fn(*list);
        }
      }
    }
  }
}

Chunk FillSet::Rasterise(const WorldFrame& frame, const ChunkCoord& c, uint64_t* version) const {
  const VoxelBox chunk_box = frame.VoxelsOfChunk(c);
  const VoxelCoord origin = frame.ChunkOrigin(c);
  std::vector<const Fill*> hits;
  ForEachCandidateList(c, [&](const FillList& list) {
    for (const Fill& f : list) {
      if (Touches(f, chunk_box)) hits.push_back(&f);
    }
  });
  std::sort(hits.begin(), hits.end(), [](const Fill* a, const Fill* b) { return a->seq < b->seq; });
  Chunk chunk(0);
  uint64_t newest = 0;
  for (const Fill* f : hits) {
    const VoxelBox part = Intersect(f->box, chunk_box);
    newest = f->seq;
    LocalBox local{
        {static_cast<uint32_t>(part.lo.x - origin.x), static_cast<uint32_t>(part.lo.y - origin.y),
         static_cast<uint32_t>(part.lo.z - origin.z)},
        {static_cast<uint32_t>(part.hi.x - origin.x), static_cast<uint32_t>(part.hi.y - origin.y),
         static_cast<uint32_t>(part.hi.z - origin.z)}};
    // Past the world's edge stays 0 (engine/FORMAT.md, "Chunks at the
    // world's edge").
    chunk.FillBox(local, f->material);
  }
  chunk.Compact();
  if (version) *version = newest;
  return chunk;
}

uint64_t FillSet::VersionOf(const WorldFrame& frame, const ChunkCoord& c) const {
  const VoxelBox chunk_box = frame.VoxelsOfChunk(c);
  uint64_t newest = 0;
  ForEachCandidateList(c, [&](const FillList& list) {
    if (list.empty() || list.back().seq <= newest) return;
    for (const Fill& f : list) {
      if (f.seq > newest && Touches(f, chunk_box)) newest = f.seq;
    }
  });
  return newest;
}

}  // namespace voxdb::engine
