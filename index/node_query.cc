#include "index/node_query.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <queue>
#include <utility>
#include <vector>

#include "engine/coding.h"
#include "engine/morton_box.h"

namespace voxdb::index {
namespace {

using engine::ChunkKey;
using engine::Node;

using OrderKeyBytes = std::array<uint8_t, kIndexKeySize>;

// A box query over the partitions the box meets, in range order: Morton
// order, so the pages of the partitions follow one another.
StatusOr<QueryResult> QueryBox(const Node::Layout& layout, const Region& region,
                               const engine::ChunkBox& chunks, const QueryOptions& options) {
  QueryResult result;
  std::optional<uint64_t> after;  // the cursor: the last code listed
  if (!options.cursor.empty()) after = engine::DecodeBigEndian64(options.cursor.data());
  QueryOptions o;
  o.band = options.band;
  o.cursor = options.cursor;
  bool more = false;
  for (const size_t p : layout.ranges.Meeting(chunks)) {
    // A partition wholly at or before the cursor has nothing after it.
    if (after && layout.ranges.range(p).end - 1 <= *after) continue;
    engine::Database& db = *layout.parts[p].db;
    if (result.chunks.size() == options.limit) {
      // The page is full: it has a next page if one more chunk follows.
      o.limit = 1;
      VOXDB_ASSIGN_OR_RETURN(QueryResult r, Query(db, region, o));
      if (!r.chunks.empty()) {
        more = true;
        break;
      }
      continue;
    }
    o.limit = options.limit - static_cast<uint32_t>(result.chunks.size());
    VOXDB_ASSIGN_OR_RETURN(QueryResult r, Query(db, region, o));
    result.chunks.insert(result.chunks.end(), r.chunks.begin(), r.chunks.end());
    if (!r.next_cursor.empty()) {  // it filled the page and has more
      more = true;
      break;
    }
  }
  if (more) {
    result.next_cursor.resize(8);
    engine::EncodeBigEndian64(result.next_cursor.data(), result.chunks.back().key.code());
  }
  return result;
}

// One partition's answer to a cell-ordered query, read `batch` hits at a
// time.
struct Stream {
  engine::Database* db = nullptr;
  std::vector<ChunkHit> hits;
  std::vector<OrderKeyBytes> keys;  // of hits
  size_t at = 0;                    // the next hit
  std::vector<uint8_t> cursor;      // the partition's next page; empty: none
};

// Reads the stream's next batch: the hits after o.cursor, o.limit of them.
Status Fetch(const engine::WorldFrame& frame, const Region& region, const QueryOptions& o,
             Stream* s) {
  VOXDB_ASSIGN_OR_RETURN(QueryResult r, Query(*s->db, region, o));
  s->hits = std::move(r.chunks);
  s->keys.clear();
  s->keys.reserve(s->hits.size());
  for (const ChunkHit& h : s->hits) s->keys.push_back(OrderKey(ChunkCell(frame, h.key), h.key));
  s->at = 0;
  s->cursor = std::move(r.next_cursor);
  return absl::OkStatus();
}

// A radius, cell or rect query: every partition's answer, merged by order
// key.
StatusOr<QueryResult> QueryCells(const engine::WorldFrame& frame, const Node::Layout& layout,
                                 const Region& region, const QueryOptions& options,
                                 uint32_t batch) {
  QueryOptions o;
  o.band = options.band;
  o.limit = std::min(batch, options.limit);
  std::vector<Stream> streams(layout.parts.size());
  auto later = [&](size_t a, size_t b) {  // a's next hit after b's: a min-heap
    return std::memcmp(streams[a].keys[streams[a].at].data(), streams[b].keys[streams[b].at].data(),
                       kIndexKeySize) > 0;
  };
  std::priority_queue<size_t, std::vector<size_t>, decltype(later)> heap(later);
  for (size_t p = 0; p < streams.size(); ++p) {
    streams[p].db = layout.parts[p].db.get();
    o.cursor = options.cursor;
    VOXDB_RETURN_IF_ERROR(Fetch(frame, region, o, &streams[p]));
    if (!streams[p].hits.empty()) heap.push(p);
  }
  QueryResult result;
  result.chunks.reserve(std::min<uint32_t>(options.limit, 16384));
  OrderKeyBytes last{};
  while (!heap.empty() && result.chunks.size() < options.limit) {
    const size_t p = heap.top();
    heap.pop();
    Stream& s = streams[p];
    result.chunks.push_back(s.hits[s.at]);
    last = s.keys[s.at];
    if (++s.at == s.hits.size()) {
      if (s.cursor.empty()) continue;  // the partition has no more
      o.cursor = s.cursor;
      VOXDB_RETURN_IF_ERROR(Fetch(frame, region, o, &s));
      if (s.hits.empty()) continue;  // what followed was deleted meanwhile
    }
    heap.push(p);
  }
  // A next page when one more hit follows the page's last.
  if (!heap.empty()) result.next_cursor.assign(last.begin(), last.end());
  return result;
}

// The fills of the partitions `parts` that meet the region and band, by
// (fill_seq, partition).
std::vector<engine::Fill> NodeFills(const engine::WorldFrame& frame, const Node::Layout& layout,
                                    const std::vector<size_t>& parts, const Region& region,
                                    const std::optional<AltitudeBand>& band) {
  std::vector<std::pair<uint64_t, engine::Fill>> all;  // (partition, fill)
  for (const size_t p : parts) {
    const std::shared_ptr<const engine::FillSet> fills = layout.parts[p].db->Fills();
    for (const engine::Fill& f : fills->fills()) {
      if (FillInRegion(frame, f, region, band)) all.emplace_back(p, f);
    }
  }
  // Each partition's fills are in seq order already: a stable sort by seq
  // keeps them so, and ties in partition order.
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& a, const auto& b) { return a.second.seq < b.second.seq; });
  std::vector<engine::Fill> out;
  out.reserve(all.size());
  for (auto& [p, f] : all) out.push_back(f);
  return out;
}

}  // namespace

uint32_t QueryMergeBatch(size_t partitions, uint32_t limit) {
  constexpr uint64_t kMergeHits = uint64_t{1} << 18;
  if (partitions == 0 || uint64_t{limit} * partitions <= kMergeHits) return std::max(limit, 1u);
  const uint32_t share = static_cast<uint32_t>(kMergeHits / partitions);
  return std::max(share, std::min(limit, 64u));
}

StatusOr<QueryResult> Query(Node& node, const Region& region, const QueryOptions& options) {
  return QueryWithBatch(node, region, options,
                        QueryMergeBatch(node.partition_count(), options.limit));
}

StatusOr<QueryResult> QueryWithBatch(Node& node, const Region& region, const QueryOptions& options,
                                     uint32_t batch) {
  const engine::WorldFrame& frame = node.frame();
  VOXDB_RETURN_IF_ERROR(CheckQuery(frame, region, options));
  // Held to the end: the partitions' Databases stay open meanwhile.
  const std::shared_ptr<const Node::Layout> layout = node.layout();
  std::vector<size_t> parts;
  StatusOr<QueryResult> result;
  if (const auto* b = std::get_if<BoxRegion>(&region)) {
    const engine::ChunkBox chunks = engine::ChunksCovering(frame, b->box);
    parts = layout->ranges.Meeting(chunks);
    result = QueryBox(*layout, region, chunks, options);
  } else {
    for (size_t p = 0; p < layout->parts.size(); ++p) parts.push_back(p);
    result = QueryCells(frame, *layout, region, options, std::max(batch, 1u));
  }
  if (result.ok() && options.cursor.empty()) {
    result->fills = NodeFills(frame, *layout, parts, region, options.band);
  }
  return result;
}

Status ForEachChunkInBox(Node& node, const engine::ChunkBox& box,
                         const std::function<void(ChunkKey)>& fn) {
  const std::shared_ptr<const Node::Layout> layout = node.layout();
  for (const size_t p : layout->ranges.Meeting(box)) {
    VOXDB_RETURN_IF_ERROR(ForEachChunkInBox(*layout->parts[p].db, box, fn));
  }
  return absl::OkStatus();
}

StatusOr<uint64_t> ColumnCount(Node& node) {
  const std::shared_ptr<const Node::Layout> layout = node.layout();
  uint64_t sum = 0;
  for (const Node::Part& part : layout->parts) {
    VOXDB_ASSIGN_OR_RETURN(const uint64_t n, ColumnCount(*part.db));
    sum += n;
  }
  return sum;
}

Status EnsureBuilt(Node* node, const std::function<void(std::string_view why)>& starting) {
  const std::shared_ptr<const Node::Layout> layout = node->layout();
  for (const Node::Part& part : layout->parts) {
    VOXDB_RETURN_IF_ERROR(EnsureBuilt(part.db.get(), starting));
  }
  return absl::OkStatus();
}

Status Rebuild(Node* node, uint64_t* chunks) {
  *chunks = 0;
  const std::shared_ptr<const Node::Layout> layout = node->layout();
  for (const Node::Part& part : layout->parts) {
    uint64_t n = 0;
    VOXDB_RETURN_IF_ERROR(Rebuild(part.db.get(), &n));
    *chunks += n;
  }
  return absl::OkStatus();
}

}  // namespace voxdb::index
