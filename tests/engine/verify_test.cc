// VerifyStore (engine/verify.h) on a real database written by the engine,
// then damaged through the ChunkStore: every damage is reported where
// verify puts it, and a hook runs at its points of the pass.
#include "engine/verify.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "engine/database.h"
#include "engine/fills.h"
#include "engine/format.h"
#include "engine/journal.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace voxdb::engine {
namespace {

using testing::TempDir;

// Chunks near sea level.
constexpr ChunkCoord kOrigin{1'000'000, 400'000, 312'500};

ChunkKey KeyAt(uint32_t dx) { return ChunkKey::FromCoord({kOrigin.x + dx, kOrigin.y, kOrigin.z}); }

// Voxels of four materials at random: a bricks record.
Chunk Noise(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> dense(kChunkVoxels);
  for (uint8_t& v : dense) v = static_cast<uint8_t>(1 + rng() % 4);
  return Chunk::FromDense(dense);
}

bool AnyContains(const std::vector<std::string>& texts, std::string_view part) {
  return std::any_of(texts.begin(), texts.end(),
                     [&](const std::string& t) { return t.find(part) != std::string::npos; });
}

// A database as the engine leaves it: uniform chunks 0..2 (2 deleted: a
// fills marker), bricks chunks 3 and 4, and one fill; then open as a store.
class VerifyTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kChunks = 5, kUniform = 2, kBricks = 2, kMarkers = 1;

  void SetUp() override {
    {
      DatabaseOptions o;
      o.store.sync = false;
      ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir_.path(), o));
      for (uint32_t i = 0; i < 3; ++i) {
        ASSERT_OK(db->PutChunkAndWait(KeyAt(i),
                                      EncodeChunk(Chunk(static_cast<uint8_t>(i + 1)), 1, 1),
                                      std::nullopt)
                      .status);
      }
      for (uint32_t i = 3; i < 5; ++i) {
        ASSERT_OK(db->PutChunkAndWait(KeyAt(i), EncodeChunk(Noise(i), 1, 1), std::nullopt).status);
      }
      ASSERT_OK(db->DeleteChunkAndWait(KeyAt(2)).status);
      const VoxelCoord lo = WorldFrame::Earth().ChunkOrigin({kOrigin.x + 10, kOrigin.y, kOrigin.z});
      ASSERT_OK(db->FillBoxAndWait({lo, {lo.x + 4, lo.y + 4, lo.z + 4}}, 7).status);
    }  // closing flushes every chunk and empties the journal
    StoreOptions o;
    o.create_if_missing = false;
    o.sync = false;
    ASSERT_OK_AND_ASSIGN(store_, ChunkStore::Open(dir_.path(), o));
  }

  void Put(Table table, std::span<const uint8_t> key, std::vector<uint8_t> value) {
    WriteBatch batch;
    batch.Put(table, key, std::move(value));
    ASSERT_OK(store_->Write(batch));
  }
  // meta.last_seq, as the engine left it.
  uint64_t LastSeq() {
    auto snap = store_->BeginRead();
    EXPECT_OK(snap.status());
    auto v = (*snap)->Get(Table::kMeta, AsBytes(kMetaLastSeq));
    EXPECT_OK(v.status());
    return v.ok() && v->size() == 8 ? DecodeFixed64(v->data()) : 0;
  }
  std::vector<uint8_t> Stored(ChunkKey key) {
    auto snap = store_->BeginRead();
    EXPECT_OK(snap.status());
    auto v = (*snap)->GetChunk(key);
    EXPECT_OK(v.status());
    return {v->begin(), v->end()};
  }

  TempDir dir_;
  std::unique_ptr<ChunkStore> store_;
};

TEST_F(VerifyTest, AnUntouchedDatabaseHasNoProblems) {
  ASSERT_OK_AND_ASSIGN(VerifyReport r, VerifyStore(*store_));
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.problem_count, 0u) << (r.problems.empty() ? "" : r.problems[0]);
  EXPECT_EQ(r.warning_count, 0u) << (r.warnings.empty() ? "" : r.warnings[0]);
  EXPECT_TRUE(r.meta_ok);
  EXPECT_EQ(r.format_version, kStoreFormatVersion);
  EXPECT_TRUE(r.has_last_seq);
  EXPECT_GT(r.last_seq, 0u);
  EXPECT_GT(r.created_us, 0);
  EXPECT_EQ(r.chunks, kChunks);
  EXPECT_EQ(r.chunks_ok, kChunks);
  EXPECT_EQ(r.uniform, kUniform);
  EXPECT_EQ(r.bricks, kBricks);
  EXPECT_EQ(r.fills_markers, kMarkers);
  EXPECT_EQ(r.fills, 1u);
  EXPECT_EQ(r.fills_ok, 1u);
  EXPECT_EQ(r.journal_records, 0u);
  // No hook: the index's fields stay untouched.
  EXPECT_FALSE(r.index_built);
  EXPECT_EQ(r.index_entries, 0u);
}

TEST_F(VerifyTest, DamagedChunksAreProblems) {
  // A flipped payload byte (the CRC catches it), a key that is no Morton
  // code, and a record that is not even a header.
  std::vector<uint8_t> rec = Stored(KeyAt(3));
  rec[rec.size() / 2] ^= 0x40;
  Put(Table::kChunks, KeyAt(3).Encode(), std::move(rec));
  const uint8_t short_key[7] = {1, 2, 3, 4, 5, 6, 7};
  Put(Table::kChunks, short_key, EncodeChunk(Chunk(1), 1, 1));
  Put(Table::kChunks, KeyAt(20).Encode(), {1, 2, 3});

  ASSERT_OK_AND_ASSIGN(VerifyReport r, VerifyStore(*store_));
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.chunks, kChunks + 2);
  EXPECT_EQ(r.chunks_corrupt, 2u);
  EXPECT_EQ(r.chunk_bad_keys, 1u);
  EXPECT_EQ(r.chunks_ok, kChunks - 1);
  EXPECT_EQ(r.bricks, kBricks - 1);
  EXPECT_EQ(r.problem_count, 3u);
  EXPECT_TRUE(AnyContains(
      r.problems, VerifyPass::ChunkName(KeyAt(3)) + ": DATA_LOSS: chunk record checksum mismatch"))
      << r.problems[0];
  EXPECT_TRUE(AnyContains(r.problems, "chunks: key 01020304050607 is not an 8-byte Morton code"));
  EXPECT_TRUE(AnyContains(
      r.problems, VerifyPass::ChunkName(KeyAt(20)) + ": DATA_LOSS: chunk record is 3 bytes"));
}

TEST_F(VerifyTest, DamagedMetaFillsAndJournalAreProblems) {
  const uint64_t last = LastSeq();
  Put(Table::kMeta, AsBytes(kMetaCreated), {1, 2, 3});    // not 8 bytes
  Put(Table::kMeta, AsBytes("junk"), {0});                // unknown: a warning
  Put(Table::kFills, BigEndian64(1'000'000), {0, 0, 0});  // not 49 bytes
  const uint8_t seven[7] = {};
  Put(Table::kFills, seven, std::vector<uint8_t>(Fill::kEncodedSize, 0));
  std::vector<uint8_t> record = EncodeDeleteChunk(KeyAt(0));
  record.back() ^= 1;  // the CRC fails
  Put(Table::kJournal, JournalKey(last + 1), std::move(record));
  Put(Table::kJournal, JournalKey(last + 5), EncodeDeleteChunk(KeyAt(1)));  // a gap

  ASSERT_OK_AND_ASSIGN(VerifyReport r, VerifyStore(*store_));
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(r.meta_ok);
  EXPECT_TRUE(AnyContains(r.problems, "meta: created_us has 3 bytes, not 8"));
  EXPECT_TRUE(AnyContains(r.warnings, "meta: unknown key \"junk\" (hex 6a756e6b)"));
  EXPECT_EQ(r.fills, 3u);
  EXPECT_EQ(r.fills_ok, 1u);
  EXPECT_EQ(r.fills_corrupt, 2u);
  EXPECT_TRUE(AnyContains(r.problems, "fill 1000000: DATA_LOSS"));
  EXPECT_TRUE(
      AnyContains(r.problems, "fills: key 00000000000000 is not an 8-byte sequence number"));
  EXPECT_EQ(r.journal_records, 2u);
  EXPECT_EQ(r.journal_corrupt, 1u);
  EXPECT_EQ(r.journal_ok, 1u);
  EXPECT_EQ(r.journal_gaps, 1u);
  EXPECT_EQ(r.journal_first_seq, last + 1);
  EXPECT_EQ(r.journal_last_seq, last + 5);
  EXPECT_TRUE(AnyContains(r.problems, absl::StrCat("journal record ", last + 1, ": ")));
  EXPECT_TRUE(AnyContains(r.warnings, "journal: sequence numbers jump from"));
  EXPECT_EQ(r.problem_count, 4u);
}

TEST_F(VerifyTest, AChunkNewerThanTheSequenceCounterIsAWarning) {
  Put(Table::kChunks, KeyAt(30).Encode(), EncodeChunk(Chunk(5), uint64_t{1} << 40, 1));
  ASSERT_OK_AND_ASSIGN(VerifyReport r, VerifyStore(*store_));
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.warning_count, 1u);
  EXPECT_TRUE(AnyContains(r.warnings, "chunks: 1 record is newer than the sequence counter"));
}

TEST_F(VerifyTest, TheCallerNamesStatusesAndQuotesNames) {
  std::vector<uint8_t> rec = Stored(KeyAt(0));
  rec.back() ^= 1;
  Put(Table::kChunks, KeyAt(0).Encode(), std::move(rec));
  Put(Table::kMeta, AsBytes("odd"), {0});
  VerifyOptions options;
  options.describe = [](const Status& s) { return absl::StrCat("<", s.message(), ">"); };
  options.quote = [](std::string_view name) { return "[" + std::string(name) + "]"; };
  ASSERT_OK_AND_ASSIGN(VerifyReport r, VerifyStore(*store_, options));
  EXPECT_TRUE(AnyContains(r.problems,
                          VerifyPass::ChunkName(KeyAt(0)) + ": <chunk record checksum mismatch"));
  EXPECT_TRUE(AnyContains(r.warnings, "meta: unknown key [odd] (hex 6f6464)"));
}

// Records what VerifyStore hands it, and reports through the pass.
class RecordingHook : public VerifyHook {
 public:
  void CheckMeta(VerifyPass& pass) override {
    ++meta_calls;
    chunks_seen_at_meta = pass.report().chunks;
    if (auto v = pass.MetaValue(kMetaIndexFormat, 4, /*optional=*/true)) found_format = true;
  }
  void CheckChunk(VerifyPass&, ChunkKey key, uint64_t version) override {
    chunks.push_back(key);
    versions.push_back(version);
  }
  void CheckTables(VerifyPass& pass) override {
    ++table_calls;
    chunks_seen_at_tables = pass.report().chunks;
    pass.ScanTable(
        Table::kS2Index,
        [&](std::span<const uint8_t> k, std::span<const uint8_t>) {
          pass.report().Problem("index: saw " + VerifyPass::Hex(k));
        },
        &scanned);
  }
  int meta_calls = 0, table_calls = 0;
  bool found_format = false;
  uint64_t chunks_seen_at_meta = 0, chunks_seen_at_tables = 0, scanned = 0;
  std::vector<ChunkKey> chunks;
  std::vector<uint64_t> versions;
};

TEST_F(VerifyTest, AHookRunsAtItsPointsOfThePass) {
  const uint8_t entry[2] = {0xab, 0xcd};
  Put(Table::kS2Index, entry, {1});
  RecordingHook hook;
  VerifyOptions options;
  options.hook = &hook;
  ASSERT_OK_AND_ASSIGN(VerifyReport r, VerifyStore(*store_, options));
  EXPECT_EQ(hook.meta_calls, 1);
  EXPECT_EQ(hook.chunks_seen_at_meta, 0u);  // before the chunks
  EXPECT_FALSE(hook.found_format);          // the engine alone builds no index
  // Every stored chunk but the fills marker, with its header's version.
  std::vector<ChunkKey> want = {KeyAt(0), KeyAt(1), KeyAt(3), KeyAt(4)};
  EXPECT_EQ(hook.chunks, want);
  for (uint64_t v : hook.versions) EXPECT_GT(v, 0u);
  EXPECT_EQ(hook.table_calls, 1);
  EXPECT_EQ(hook.chunks_seen_at_tables, kChunks);  // after the chunks
  EXPECT_EQ(hook.scanned, 1u);
  EXPECT_EQ(r.problems, std::vector<std::string>{"index: saw abcd"});
}

TEST_F(VerifyTest, AHookMetaProblemMarksTheMetaDamaged) {
  Put(Table::kMeta, AsBytes(kMetaIndexFormat), {1, 2});  // not 4 bytes
  RecordingHook hook;
  VerifyOptions options;
  options.hook = &hook;
  ASSERT_OK_AND_ASSIGN(VerifyReport r, VerifyStore(*store_, options));
  EXPECT_FALSE(hook.found_format);
  EXPECT_FALSE(r.meta_ok);
  EXPECT_EQ(r.problems, std::vector<std::string>{"meta: s2index_format has 2 bytes, not 4"});
  EXPECT_EQ(r.warning_count, 0u);  // a known key
}

}  // namespace
}  // namespace voxdb::engine
