// VerifyStore: a read-only check of everything a ChunkStore holds against
// engine/FORMAT.md, in one snapshot. `voxdb verify` (cli/offline.cc) runs
// it and presents the VerifyReport; this file decides what is damage.
//
// The tables of layers above the engine are checked by a VerifyHook that
// the layer provides (the S2 index: index/s2_index_verify.h), so that the
// engine does not learn their formats; the hook runs at fixed points of
// the pass and reports through the same VerifyReport.
//
// Example:
//   index::S2IndexVerifyHook index_hook;
//   VOXDB_ASSIGN_OR_RETURN(VerifyReport report,
//                          VerifyStore(*store, {.hook = &index_hook}));
//   if (!report.ok()) ... report.problems ...
//
// Thread-safety: VerifyStore is thread-safe (it reads one snapshot of its
// own); a VerifyPass belongs to the call that runs it.
#ifndef VOXDB_ENGINE_VERIFY_H_
#define VOXDB_ENGINE_VERIFY_H_

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/chunk_store.h"
#include "engine/morton.h"
#include "engine/status.h"
#include "engine/world_frame.h"

namespace voxdb::engine {

// What VerifyStore found. Problems are damage; warnings are states the
// engine accepts but that deserve a look.
struct VerifyReport {
  bool meta_ok = true;
  uint32_t format_version = 0;
  bool has_last_seq = false;
  uint64_t last_seq = 0;  // meta.last_seq
  int64_t created_us = 0;

  uint64_t chunks = 0;  // records scanned
  uint64_t chunks_ok = 0, chunks_corrupt = 0, chunk_bad_keys = 0;
  uint64_t uniform = 0, bricks = 0, fills_markers = 0;

  // Filled by the index's hook (index::S2IndexVerifyHook); zero without it.
  bool index_built = false;     // meta.s2index_format is this build's
  bool index_outdated = false;  // meta.s2index_format is an older format
  uint64_t index_columns = 0;   // s2index keys: one per column of stored chunks
  uint64_t index_entries = 0, index_ok = 0, index_missing = 0, index_extra = 0;  // chunk items
  uint64_t index_wrong_version = 0, index_malformed = 0;

  uint64_t fills = 0, fills_ok = 0, fills_corrupt = 0;

  uint64_t journal_records = 0, journal_ok = 0, journal_corrupt = 0, journal_gaps = 0;
  uint64_t journal_first_seq = 0, journal_last_seq = 0;  // 0: no records

  uint64_t lod_entries = 0;  // reserved table

  uint64_t problem_count = 0;
  std::vector<std::string> problems;  // the first kMaxKeptProblems
  uint64_t warning_count = 0;
  std::vector<std::string> warnings;  // the first kMaxKeptProblems

  static constexpr size_t kMaxKeptProblems = 1000;
  bool ok() const { return problem_count == 0; }
  void Problem(std::string text);
  void Warning(std::string text);
};

class VerifyPass;

// The checks of a layer above the engine, called by VerifyStore at fixed
// points of its pass (in this order).
class VerifyHook {
 public:
  virtual ~VerifyHook() = default;
  // During the meta check, after the engine's own keys: the meta keys the
  // layer owns (VerifyPass::MetaValue, VerifyPass::MetaProblem).
  virtual void CheckMeta(VerifyPass& pass) = 0;
  // For every stored chunk whose record parses and is not a fills marker,
  // with the version its header holds (whatever its payload).
  virtual void CheckChunk(VerifyPass& pass, ChunkKey key, uint64_t version) = 0;
  // After the chunks: the layer's own tables (VerifyPass::ScanTable).
  virtual void CheckTables(VerifyPass& pass) = 0;
};

struct VerifyOptions {
  // Checks the tables of the layer above. DEFAULT: none (their tables are
  // only counted against LMDB's entry counts if a hook scans them).
  VerifyHook* hook = nullptr;
  // How a status and a stored name read inside problems' texts.
  // DEFAULTS: absl's code name and the message ("DATA_LOSS: ..."); the
  // C-escaped name in double quotes. voxdb verify passes the forms the CLI
  // prints everywhere ("CORRUPT: ...", JSON strings).
  std::function<std::string(const Status&)> describe;
  std::function<std::string(std::string_view)> quote;
};

// Checks everything in one snapshot of `store` (engine/FORMAT.md):
//   meta     format version, world frame, creation time and last_seq are
//            present and well formed; no unknown keys (a warning);
//   chunks   keys are Morton codes inside the world; every record passes its
//            CRC and decodes in full (fills markers parse); no stored
//            version is above the sequence counter an open would resume
//            from (a warning);
//   fills    keys and 49-byte values decode, boxes lie in the world;
//   journal  records pass their CRC and decode, keys are sequence numbers
//            (a gap is a warning: a failed journal commit leaves one);
//   counts   LMDB's entry count of every table scanned to its end equals
//            the scan's;
// and whatever options.hook checks. Returns an error only when the store
// cannot be read at all; damage goes into the report.
StatusOr<VerifyReport> VerifyStore(const ChunkStore& store, const VerifyOptions& options = {});

// One run of VerifyStore, as its hook sees it.
class VerifyPass {
 public:
  const ChunkStore::Snapshot& snapshot() const { return snap_; }
  const WorldFrame& frame() const { return frame_; }
  VerifyReport& report() { return r_; }

  // A problem of the meta table (report().meta_ok becomes false).
  void MetaProblem(std::string text);
  // The meta value `name` when present, exactly `size` bytes long (0: any
  // size) and readable; otherwise a meta problem (none when it is absent
  // and `optional`) and nullopt.
  std::optional<std::span<const uint8_t>> MetaValue(std::string_view name, size_t size,
                                                    bool optional);
  // Calls fn for each entry of `table`, counting them in *scanned. A
  // failure of LMDB itself (a damaged B-tree) is a problem; a scan that
  // completes has its count checked against LMDB's at the end of the pass.
  void ScanTable(Table table,
                 const std::function<void(std::span<const uint8_t>, std::span<const uint8_t>)>& fn,
                 uint64_t* scanned);

  // Texts for problems: "CORRUPT: message" (VerifyOptions::describe),
  // "chunk 1000000,400000,312500 (key 277415739110342912)", hex bytes.
  std::string Describe(const Status& status) const;
  static std::string ChunkName(ChunkKey key);
  static std::string Hex(std::span<const uint8_t> bytes);

 private:
  friend StatusOr<VerifyReport> VerifyStore(const ChunkStore&, const VerifyOptions&);
  VerifyPass(const ChunkStore::Snapshot& snap, const WorldFrame& frame,
             const VerifyOptions& options, VerifyReport* r)
      : snap_(snap), frame_(frame), options_(options), r_(*r) {}

  void Run();
  void CheckMeta();
  void CheckFills();
  void CheckJournal();
  void CheckChunks();
  void CheckCounts();

  const ChunkStore::Snapshot& snap_;
  const WorldFrame& frame_;
  const VerifyOptions& options_;
  VerifyReport& r_;
  uint64_t max_fill_seq_ = 0;
  uint64_t seq_reserved_ = 0;  // meta.seq_reserved: no number above it was handed out
  std::array<std::optional<uint64_t>, kTableCount> scanned_;
};

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_VERIFY_H_
