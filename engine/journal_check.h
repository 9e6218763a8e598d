// Checking and truncating the journal of a stopped database, for the
// operator's way out when a damaged journal record keeps the database from
// opening (`voxdb recover`; the copy's format is in engine/FORMAT.md,
// "Journal").
//
// Opening a database replays its journal and refuses the database at the
// first record that fails its checksum or does not decode: replaying the
// records after it without it could leave chunks in a state no sequence of
// acknowledged writes produced. TruncateJournal drops that record and every
// later one, after writing a copy of them to a file.
//
// Thread-safety: free functions; the store must be held exclusively (no
// voxdbd running on it).
#ifndef VOXDB_ENGINE_JOURNAL_CHECK_H_
#define VOXDB_ENGINE_JOURNAL_CHECK_H_

#include <cstdint>
#include <optional>
#include <string>

#include "engine/chunk_store.h"
#include "engine/status.h"

namespace voxdb::engine {

struct JournalCheck {
  uint64_t records = 0;                  // in the journal table
  uint64_t first_seq = 0, last_seq = 0;  // 0: no records
  // The first record that does not decode (nullopt: none), and why.
  std::optional<uint64_t> bad_seq;
  std::string bad_error;
  // What truncating would drop: the bad record and every later one.
  uint64_t drop_records = 0;
  uint64_t drop_bytes = 0;  // their values
  uint64_t drop_last_seq = 0;
  // Replay stops at the bad record: these records before it replay.
  uint64_t kept_records = 0;
};

// Reads the whole journal of `snap`. An error only when it cannot be read.
StatusOr<JournalCheck> CheckJournal(const ChunkStore::Snapshot& snap);

// Writes every record from check.bad_seq on to `copy_path` (created, never
// overwritten; mode 0600; fsynced with its directory), then deletes them
// from the journal and raises meta `last_seq` to the last one dropped (so
// that sequence numbers, hence versions, never go back), in one write.
// REQUIRES: check came from CheckJournal on this store, with a bad_seq,
// and nothing wrote the journal since.
Status TruncateJournal(ChunkStore& store, const JournalCheck& check, const std::string& copy_path);

// The copy file: "VOXJDROP" (8 bytes), then per record its key (8 bytes,
// the sequence number big-endian), u32 LE value size, the value as stored.
inline constexpr char kDroppedJournalMagic[] = "VOXJDROP";

}  // namespace voxdb::engine

#endif  // VOXDB_ENGINE_JOURNAL_CHECK_H_
