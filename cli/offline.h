// The offline commands of the voxdb CLI: they open the database directory
// (--data DIR) themselves instead of talking to voxdbd, and refuse to run
// while any process (voxdbd) holds the directory's LOCK.
//
//   voxdb verify --data DIR   checks every record and the index; exit 1 on
//                             any problem
//   voxdb compact --data DIR  rewrites data.mdb without its free pages
//
// Thread-safety: run from main's thread only.
#ifndef VOXDB_CLI_OFFLINE_H_
#define VOXDB_CLI_OFFLINE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/args.h"
#include "engine/chunk_store.h"

namespace voxdb::cli {

// Whether `command` takes --data DIR (the offline commands).
bool TakesDataOption(std::string_view command);

// What `voxdb verify` found. Problems are damage (exit 1); warnings are
// states the engine accepts but that deserve a look (exit 0).
struct VerifyReport {
  bool meta_ok = true;
  uint32_t format_version = 0;
  bool has_last_seq = false;
  uint64_t last_seq = 0;  // meta.last_seq
  int64_t created_us = 0;

  uint64_t chunks = 0;  // records scanned
  uint64_t chunks_ok = 0, chunks_corrupt = 0, chunk_bad_keys = 0;
  uint64_t uniform = 0, bricks = 0, fills_markers = 0;

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

// Checks everything in one snapshot of `store` (engine/FORMAT.md):
//   meta     format version, world frame, creation time, last_seq and the
//            index format are present and well formed;
//   chunks   keys are Morton codes inside the world; every record passes its
//            CRC and decodes in full (fills markers parse);
//   s2index  (once built) every stored chunk that is not a fills marker has
//            exactly one item, holding its version, in the entry
//            IndexKey(ChunkCell(frame, key), ColumnId(its coord)), and there
//            are no other items; entries decode;
//   fills    keys and 49-byte values decode, boxes lie in the world;
//   journal  records pass their CRC and decode, keys are sequence numbers
//            (a gap is a warning: a failed journal commit leaves one).
// Returns an error only when the store cannot be read at all; damage goes
// into the report.
absl::StatusOr<VerifyReport> VerifyStore(const engine::ChunkStore& store);

// The commands (CommandSpec::run).
absl::Status Verify(const CommandLine& cl);
absl::Status Compact(const CommandLine& cl);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_OFFLINE_H_
