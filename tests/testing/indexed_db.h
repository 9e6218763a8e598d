// A test database as voxdbd keeps it: the S2 index as a flusher observer
// (index/s2_index.h), built on open. In its own header, apart from
// test_database.h, because it needs voxdb_index and the S2 headers, which
// the engine's tests do not link.
//
// Example:
//   testing::IndexedDb d(dir.path());
//   ASSERT_OK(d.db->PutChunkAndWait(key, record, std::nullopt).status);
//
// Thread-safety: as engine::Database; construct and destroy on one thread.
#ifndef VOXDB_TESTS_TESTING_INDEXED_DB_H_
#define VOXDB_TESTS_TESTING_INDEXED_DB_H_

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "engine/database.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_database.h"

namespace voxdb::testing {

struct IndexedDb {
  // Opens (creating) the database in `dir` with TestOptions() and the index
  // as its observer, and builds the index if it is missing. A failure to
  // open aborts the test binary: every use of `db` would crash anyway.
  explicit IndexedDb(const std::string& dir,
                     const engine::WorldFrame& frame = engine::WorldFrame::Earth())
      : index(frame) {
    engine::DatabaseOptions o = TestOptions();
    o.observers = {&index};
    auto d = engine::Database::Open(dir, o);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) std::abort();
    db = std::move(*d);
    EXPECT_OK(index::EnsureBuilt(db.get()));
  }

  index::S2Index index;
  std::unique_ptr<engine::Database> db;  // closed (flushed) before the index goes
};

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_INDEXED_DB_H_
