// CompactDir: rewrites a database directory's data.mdb without the free
// pages that deletes leave (LMDB never shrinks its file), offline: it
// holds the directory lock (ChunkStore::LockDirectory) throughout, so no
// voxdbd opens the database meanwhile. `voxdb compact` (cli/offline.cc)
// runs it and presents the result.
//
// Example:
//   VOXDB_ASSIGN_OR_RETURN(CompactResult r, CompactDir("/var/lib/voxdb"));
//   printf("%lu -> %lu bytes\n", r.bytes_before, r.bytes_after);
//
// Thread-safety: one call per directory at a time (the directory lock
// refuses a second process, not a second thread of this one).
#ifndef VOXDB_ENGINE_COMPACT_H_
#define VOXDB_ENGINE_COMPACT_H_

#include <cstdint>
#include <string>

#include "engine/status.h"

namespace voxdb::engine {

struct CompactResult {
  uint64_t bytes_before = 0, bytes_after = 0;  // of data.mdb
  uint64_t chunks = 0;                         // entries of the chunks table
  std::string temp_dir;                        // where the copy was built
};

// Compacts DIR/data.mdb. The copy is built next to DIR (DIR.compact-tmp)
// when that is on DIR's file system and DIR's parent is writable, else in
// DIR/compact.tmp; it must open with the same world frame and the same
// number of entries in every table before it replaces data.mdb, and gets
// data.mdb's mode and owner. Leftovers of an interrupted run are removed
// first (only the files compact makes; anything else there is refused).
// Returns NOT_FOUND when DIR holds no data.mdb; BUSY only when another
// process holds the directory (voxdbd, another compact); CORRUPT when the
// copy differs (nothing changed then); MISMATCH and the rest as
// ChunkStore::Open and the file system give them.
StatusOr<CompactResult> CompactDir(const std::string& dir);

// Gives DIR/LOCK and DIR/lock.mdb, which opening the store creates when
// they are missing, to the owner of DIR/data.mdb: a tool run as root must
// leave them usable by voxdbd's user. Best effort (only root may, and
// needs to).
void GiveLockFilesToTheOwner(const std::string& dir);

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_COMPACT_H_
