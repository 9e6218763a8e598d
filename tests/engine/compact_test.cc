// CompactDir (engine/compact.h) and the directory lock it holds
// (ChunkStore::LockDirectory), on real databases written by the engine.
#include "engine/compact.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "engine/chunk_codec.h"
#include "engine/chunk_store.h"
#include "engine/format.h"
#include "engine/verify.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"

namespace voxdb::engine {
namespace {

using testing::TempDir;

StoreOptions FastOptions() {
  StoreOptions o;
  o.sync = false;
  return o;
}

ChunkKey KeyAt(uint32_t i) { return ChunkKey::FromCoord({1'000'000 + i, 400'000, 312'500}); }

uint64_t FileBytes(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return static_cast<uint64_t>(st.st_size);
}

// `n` incompressible chunks, then all but `kept` deleted: free pages that
// only a compacted copy leaves out.
void WriteAndDelete(const std::string& dir, uint32_t n, uint32_t kept) {
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir, FastOptions()));
  WriteBatch batch;
  for (uint32_t i = 0; i < n; ++i) {
    batch.PutChunk(KeyAt(i), EncodeChunk(Chunk::FromDense(testing::NoiseChunk(i)), 1, 1));
  }
  ASSERT_OK(store->Write(batch));
  WriteBatch del;
  for (uint32_t i = kept; i < n; ++i) del.DeleteChunk(KeyAt(i));
  ASSERT_OK(store->Write(del));
}

TEST(CompactTest, ShrinksTheFileAndKeepsEveryEntry) {
  TempDir dir;
  WriteAndDelete(dir.path(), 40, 3);
  const std::string data = dir.path() + "/" + kDataFile;
  const uint64_t before = FileBytes(data);

  ASSERT_OK_AND_ASSIGN(CompactResult r, CompactDir(dir.path()));
  EXPECT_EQ(r.bytes_before, before);
  EXPECT_EQ(r.bytes_after, FileBytes(data));
  EXPECT_LT(r.bytes_after, r.bytes_before);
  EXPECT_EQ(r.chunks, 3u);
  // Nothing of the copy is left behind.
  EXPECT_FALSE(std::filesystem::exists(r.temp_dir));
  EXPECT_FALSE(std::filesystem::exists(data + ".compact-old"));

  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), FastOptions()));
  ASSERT_OK_AND_ASSIGN(VerifyReport report, VerifyStore(*store));
  EXPECT_TRUE(report.ok()) << (report.problems.empty() ? "" : report.problems[0]);
  EXPECT_EQ(report.chunks, 3u);
  EXPECT_EQ(report.bricks, 3u);
}

TEST(CompactTest, RefusesADirectoryWithoutADatabase) {
  TempDir dir;
  auto r = CompactDir(dir.path());
  EXPECT_TRUE(absl::IsNotFound(r.status())) << r.status();
  // Nothing was created there (not even LOCK).
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(CompactTest, IsBusyWhileTheDatabaseIsOpen) {
  TempDir dir;
  WriteAndDelete(dir.path(), 2, 1);
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), FastOptions()));
  auto r = CompactDir(dir.path());
  EXPECT_TRUE(IsBusy(r.status())) << r.status();
}

TEST(CompactTest, RefusesATemporaryDirectoryHoldingOtherFiles) {
  TempDir dir;
  const std::string db = dir.Sub("db");
  WriteAndDelete(db, 2, 1);
  // The temporary directory of an earlier run, with a file compact does not
  // make: left alone, and compact refuses.
  const std::string tmp = dir.Sub("db.compact-tmp");
  std::filesystem::create_directory(tmp);
  {
    std::FILE* f = std::fopen((tmp + "/mine").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  auto r = CompactDir(db);
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_TRUE(std::filesystem::exists(tmp + "/mine"));
}

TEST(DirectoryLockTest, KeepsExclusiveOpenersOutUntilReleased) {
  TempDir dir;
  WriteAndDelete(dir.path(), 1, 1);
  {
    ASSERT_OK_AND_ASSIGN(DirectoryLock lock, ChunkStore::LockDirectory(dir.path()));
    auto refused = ChunkStore::Open(dir.path(), FastOptions());
    EXPECT_TRUE(IsBusy(refused.status())) << refused.status();
    EXPECT_TRUE(IsBusy(ChunkStore::LockDirectory(dir.path()).status()));
    // The holder itself opens the store without taking the lock again.
    StoreOptions shared = FastOptions();
    shared.exclusive = false;
    EXPECT_OK(ChunkStore::Open(dir.path(), shared).status());
  }
  EXPECT_OK(ChunkStore::Open(dir.path(), FastOptions()).status());
}

TEST(DirectoryLockTest, IsBusyWhileAStoreIsOpen) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(dir.path(), FastOptions()));
  auto lock = ChunkStore::LockDirectory(dir.path());
  EXPECT_TRUE(IsBusy(lock.status())) << lock.status();
}

}  // namespace
}  // namespace voxdb::engine
