// The spatial queries of index/s2_index.h over a node's partitions
// (engine/node.h): each partition's Database keeps the S2 index of its own
// chunks (its flusher runs the S2Index observer), and these run the query
// in the partitions and merge their answers.
//
// The chunks a query lists, their order, its pages and cursors, and its
// errors and limits are exactly those of one Database holding every
// partition's chunks:
//   - cell-ordered queries (radius, cell, rect) ask the partitions that
//     meet the chunk boxes of the region's lat/lon bound and the band
//     (grown by a margin; two boxes across the antimeridian, every
//     longitude near a pole), and merge their answers by order key (leaf
//     cell, column, z; the index order does not follow the Morton ranges),
//     which is also the cursor: a partition resumes right after it
//     whatever it holds;
//   - box queries ask the partitions whose range meets the box, in range
//     order, which is Morton code order: a page is the next partitions'
//     answers one after another, and the cursor is a chunk code as before.
// A cursor is not tied to a partition: pages go on across a split or move.
// Memory is bounded by the page and, for cell-ordered queries, one batch of
// hits per partition (QueryMergeBatch).
//
// Fills differ (protocol/PROTOCOL.md, "Queries"): a node applies a fill as
// one fill per partition it meets, of the piece of its box in that
// partition (Node::ClipToRange), numbered by that partition (its version
// and fill_seq). The first page lists those pieces that meet the region and
// band, ordered by (fill_seq, partition); pieces in different partitions
// never overlap, and within a partition the pieces are in the node's fill
// order, so painting the list in order gives every voxel in the region and
// band the material the one-Database list gives it.
//
// Example:
//   auto page = index::Query(*node, index::RadiusRegion{centre, 500}, options);
//
// Thread-safety: as the Database functions: any thread.
#ifndef VOXDB_INDEX_NODE_QUERY_H_
#define VOXDB_INDEX_NODE_QUERY_H_

#include <cstdint>
#include <functional>
#include <string_view>

#include "engine/node.h"
#include "index/s2_index.h"

namespace voxdb::index {

// Query (index/s2_index.h) over every partition of the node.
StatusOr<QueryResult> Query(engine::Node& node, const Region& region, const QueryOptions& options);
// The same, with each partition asked for `batch` hits at a time (>= 1) by
// a cell-ordered query (Query picks QueryMergeBatch; tests pick small ones
// to make the merge ask a partition again).
StatusOr<QueryResult> QueryWithBatch(engine::Node& node, const Region& region,
                                     const QueryOptions& options, uint32_t batch);
// The batch Query asks each of `partitions` partitions for: the page's
// limit, unless partitions x limit is over 2^18 hits (about 8 MiB); then a
// share of that, at least min(limit, 64).
uint32_t QueryMergeBatch(size_t partitions, uint32_t limit);

// ForEachChunkInBox over the partitions the box meets: each chunk once, in
// no particular order.
Status ForEachChunkInBox(engine::Node& node, const engine::ChunkBox& box,
                         const std::function<void(engine::ChunkKey)>& fn);

// The partitions' index entries, summed (STATS index_columns). An entry
// is a column's chunks in one partition: a column whose chunks (along z)
// lie in several partitions has an entry in each, so the figure is at
// least the number of columns one Database would count.
StatusOr<uint64_t> ColumnCount(engine::Node& node);

// EnsureBuilt (index/s2_index.h) for each partition, in range order;
// `starting` is told before each partition's rebuild. Stops at the first
// error.
Status EnsureBuilt(engine::Node* node,
                   const std::function<void(std::string_view why)>& starting = {});
// Rebuild for each partition, in range order (each in its own
// transaction); *chunks gets the chunks indexed in all. Stops at the first
// error.
Status Rebuild(engine::Node* node, uint64_t* chunks);

}  // namespace voxdb::index

#endif  // VOXDB_INDEX_NODE_QUERY_H_
