// Engine databases for tests: the options every test database starts from,
// and damage done to a closed database behind its back.
//
// Example:
//   DatabaseOptions o = testing::TestOptions();
//   o.observers = {&observer};
//   ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir.path(), o));
//
// Thread-safety: free functions, stateless.
#ifndef VOXDB_TESTS_TESTING_TEST_DATABASE_H_
#define VOXDB_TESTS_TESTING_TEST_DATABASE_H_

#include <string>
#include <vector>

#include "engine/chunk_store.h"
#include "engine/database.h"
#include "engine/morton.h"
#include "engine/status.h"

namespace voxdb::testing {

// The default options, but the store does not fsync: durability itself is
// the crash tests' business, and an fsync per commit makes the other tests
// slow on a loaded machine. Writes are still acknowledged after their
// journal commit (Durability::kSync, the default).
inline engine::DatabaseOptions TestOptions() {
  engine::DatabaseOptions o;
  o.store.sync = false;
  return o;
}

// Flips a bit in the middle of the stored record of `key`, in the closed
// database at `dir`, so that its checksum fails (CORRUPT on the next read).
// NOT_FOUND when no record of `key` is stored.
inline Status CorruptStoredChunk(const std::string& dir, engine::ChunkKey key) {
  engine::StoreOptions so;
  so.sync = false;
  VOXDB_ASSIGN_OR_RETURN(auto store, engine::ChunkStore::Open(dir, so));
  std::vector<uint8_t> rec;
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, store->BeginRead());
    VOXDB_ASSIGN_OR_RETURN(auto got, snap->GetChunk(key));
    rec.assign(got.begin(), got.end());
  }
  rec[rec.size() / 2] ^= 0x40;
  engine::WriteBatch batch;
  batch.PutChunk(key, rec);
  return store->Write(batch);
}

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_TEST_DATABASE_H_
