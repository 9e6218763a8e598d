// The on-disk layout of a node that hosts several partitions (engine/FORMAT.md,
// "Node layout"): which partitions a data directory DATA holds, the Morton
// range of each and the directory of its LMDB environment.
//
// DATA/node.manifest lists them. The root partition (id 0, the whole key
// space) is DATA itself, so a data directory that was never split or moved
// has no manifest and stays exactly the single-database format of before:
// ReadNodeManifest gives it the implicit one-partition manifest. Partitions
// made later live in DATA/partitions/<id>/ or, moved to another disk, in an
// absolute directory the manifest records.
//
// A split or a move builds its new environments first, then switches the
// layout with WriteNodeManifest, whose rename is the commit point: before it
// the old layout holds, after it the new one. A crash on either side leaves
// leftovers (half-built children, or the environments the switch replaced)
// that RemoveLeftovers deletes at the next start.
//
// Example:
//   VOXDB_ASSIGN_OR_RETURN(NodeManifest m, ReadNodeManifest(data_dir));
//   std::vector<std::string> removed;
//   VOXDB_RETURN_IF_ERROR(RemoveLeftovers(data_dir, m, &removed));
//   for (const PartitionEntry& p : m.partitions) {
//     // open a Database in PartitionDir(data_dir, p) serving p.range
//   }
//   VOXDB_ASSIGN_OR_RETURN(NodeManifest next, ManifestAfterSplit(m, /*id=*/0, at));
//   // build PartitionDir(data_dir, *next.Find(m.next_id)) and the next id's dir, then:
//   VOXDB_RETURN_IF_ERROR(WriteNodeManifest(data_dir, next));  // the commit point
//
// Thread-safety: value types and free functions. Writers of one data
// directory's manifest (and RemoveLeftovers) must be serialised by the
// caller: the node's owner, under its lock.
#ifndef VOXDB_ENGINE_NODE_MANIFEST_H_
#define VOXDB_ENGINE_NODE_MANIFEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "engine/morton.h"
#include "engine/partition_range.h"
#include "engine/status.h"

namespace voxdb::engine {

// The manifest format this build reads and writes (its header line).
inline constexpr uint32_t kNodeManifestVersion = 1;
// File and directory names under DATA.
inline constexpr char kNodeManifestFile[] = "node.manifest";
inline constexpr char kNodeManifestTempFile[] = "node.manifest.tmp";
inline constexpr char kPartitionsDir[] = "partitions";
// The root partition: id 0, in DATA itself.
inline constexpr uint64_t kRootPartitionId = 0;
inline constexpr char kRootPartitionDir[] = ".";

// What a partition of the manifest is. Only one state exists so far; a
// manifest naming another one is of a newer build (UNSUPPORTED).
enum class PartitionState {
  kActive,  // its environment is complete and serves its range
};

struct PartitionEntry {
  uint64_t id = 0;
  MortonRange range;
  // Relative to DATA: "." (the root partition only) or "partitions/<id>"
  // with the entry's own id; or an absolute, normalised path (a partition
  // moved to another disk). Printable ASCII without spaces or '='.
  std::string dir;
  PartitionState state = PartitionState::kActive;
  friend bool operator==(const PartitionEntry&, const PartitionEntry&) = default;
};

struct NodeManifest {
  int align_levels = kDefaultAlignLevels;
  // Greater than every id the node has used, listed or not: the next
  // partition made gets it.
  uint64_t next_id = 1;
  // In range order; the ranges tile the key space.
  std::vector<PartitionEntry> partitions;

  // The entry with `id`, or nullptr.
  const PartitionEntry* Find(uint64_t id) const;
  // The ranges of `partitions`, in the same order. REQUIRES: valid
  // (ValidateNodeManifest).
  PartitionRanges Ranges() const;

  // The manifest of a data directory without node.manifest: the root
  // partition alone.
  static NodeManifest OnePartition();
  friend bool operator==(const NodeManifest&, const NodeManifest&) = default;
};

// OK when `m` can be written: align_levels in 0..21; ranges in order,
// aligned to 8^align_levels and tiling the key space exactly (checked with
// PartitionRanges::FromStarts); ids distinct and below next_id; each dir
// well formed (see PartitionEntry::dir) and used once. INVALID otherwise,
// saying what is wrong.
Status ValidateNodeManifest(const NodeManifest& m);

// The manifest's text (FORMAT.md, "Node layout"), crc line included.
// REQUIRES: ValidateNodeManifest(m).ok().
std::string EncodeNodeManifest(const NodeManifest& m);
// Parses the text of a manifest. CORRUPT when its checksum, grammar or
// tiling is wrong; UNSUPPORTED for a newer version. `path` names the file
// in the messages.
StatusOr<NodeManifest> DecodeNodeManifest(absl::string_view text, const std::string& path);

// Writes `m` as DATA/node.manifest: DATA/node.manifest.tmp is written and
// fsynced, renamed over node.manifest, then DATA is fsynced. The rename is
// the commit point of a layout change: a crash before it leaves the old
// manifest (and perhaps a stale tmp file), after it the new one. INVALID
// (nothing written) when `m` is not valid.
Status WriteNodeManifest(const std::string& data_dir, const NodeManifest& m);

// The manifest of DATA. Without DATA/node.manifest: OnePartition() when
// DATA is absent, holds no partitions/ directory or holds data.mdb (a
// single-database directory, unchanged since before partitions); CORRUPT
// when it holds partitions/ but neither the manifest nor data.mdb (the
// manifest was lost). With it: DecodeNodeManifest's errors, which name the
// file.
StatusOr<NodeManifest> ReadNodeManifest(const std::string& data_dir);

// Deletes what a crash during a layout change left behind, given the
// manifest ReadNodeManifest returns now, and appends each path removed to
// `removed`:
//   - DATA/node.manifest.tmp;
//   - each directory DATA/partitions/<id>/ that no entry uses;
//   - DATA/data.mdb and DATA/lock.mdb when no entry uses DATA itself (the
//     root partition was split or moved away). Nothing else of DATA.
// Everything is checked before anything is deleted: a name under
// partitions/ that is not a decimal id, a symbolic link, or a directory
// holding anything but data.mdb, lock.mdb and LOCK is refused (INVALID,
// naming it, nothing deleted). Symbolic links are never followed. Call it
// while no process has the node's partitions open.
Status RemoveLeftovers(const std::string& data_dir, const NodeManifest& m,
                       std::vector<std::string>* removed);

// fsync(2) of a directory, so that names created or renamed in it last.
Status FsyncDirectory(const std::string& dir);

// The directory of `p`'s environment: DATA for ".", DATA/<dir> for another
// relative dir, the dir itself when absolute.
std::string PartitionDir(const std::string& data_dir, const PartitionEntry& p);

// The manifest after splitting partition `id` at code `at`: [begin, at)
// gets id m.next_id and [at, end) m.next_id + 1, in partitions/<new id>;
// next_id grows by 2. INVALID when `id` is not listed or `at` is not a
// multiple of 8^align_levels strictly inside its range
// (PartitionRanges::Split).
StatusOr<NodeManifest> ManifestAfterSplit(const NodeManifest& m, uint64_t id, uint64_t at);

// The manifest after moving partition `id`'s environment to `dir` (see
// PartitionEntry::dir). INVALID when `id` is not listed, `dir` is its
// present dir or another entry's, or not well formed.
StatusOr<NodeManifest> ManifestAfterMove(const NodeManifest& m, uint64_t id,
                                         const std::string& dir);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_NODE_MANIFEST_H_
