// The offline commands of the voxdb CLI (verify and compact, which open a
// stopped database themselves) and the sections of `voxdb info`. The CLI
// runs as a child process; databases are written through engine::Database
// with the S2 index as voxdbd keeps it, damaged through the ChunkStore, and
// read back through the real voxdbd.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "cli/json.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/chunk_store.h"
#include "engine/coding.h"
#include "engine/database.h"
#include "engine/journal.h"
#include "engine/morton.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"
#include "protocol/client.h"
#include "protocol/stats.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/indexed_db.h"
#include "tests/testing/run_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace voxdb {
namespace {

using cli::Json;
using engine::ChunkCoord;
using engine::ChunkKey;
using engine::ChunkStore;
using engine::Database;
using engine::DatabaseOptions;
using engine::Table;
using testing::DaemonProcess;
using testing::TempDir;

const engine::WorldFrame kFrame = engine::WorldFrame::Earth();
// Chunks around 45.8 N, 6.9 E at sea level.
constexpr ChunkCoord kOrigin{1'000'000, 400'000, 312'500};

ChunkKey KeyAt(uint32_t dx, uint32_t dy) {
  return ChunkKey::FromCoord({kOrigin.x + dx, kOrigin.y + dy, kOrigin.z});
}

std::string CoordText(ChunkKey key) {
  const ChunkCoord c = key.coord();
  return std::to_string(c.x) + "," + std::to_string(c.y) + "," + std::to_string(c.z);
}

// --- Running the CLI ---------------------------------------------------------

using CliResult = testing::ProcessResult;

// Runs the voxdb binary with `args`, without VOXDB_ADDRESS and VOXDB_TOKEN.
CliResult RunCli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {VOXDB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::RunProcess(argv, {"VOXDB_ADDRESS", "VOXDB_TOKEN"});
}

// The one JSON object the CLI printed (exactly one line).
Json JsonOf(const CliResult& r) {
  EXPECT_FALSE(r.out.empty()) << r;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "not one line: " << r;
  auto v = Json::Parse(r.out);
  EXPECT_TRUE(v.ok() && v->is_object()) << "not a JSON object: " << r;
  return v.ok() ? *std::move(v) : Json();
}

// --- Databases ---------------------------------------------------------------

// A database as voxdbd keeps it: the S2 index as a flusher observer.
using Db = testing::IndexedDb;

std::unique_ptr<ChunkStore> OpenStore(const std::string& dir) {
  engine::StoreOptions o;
  o.create_if_missing = false;
  o.sync = false;
  auto store = ChunkStore::Open(dir, o);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) std::abort();
  return std::move(*store);
}

// Voxels of `materials` materials, at random: bricks that do not compress.
std::vector<uint8_t> Noise(uint32_t seed, int materials) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> dense(engine::kChunkVoxels);
  for (uint8_t& v : dense) v = static_cast<uint8_t>(1 + rng() % static_cast<uint32_t>(materials));
  return dense;
}

std::vector<uint8_t> Record(const engine::Chunk& chunk) { return engine::EncodeChunk(chunk, 1, 1); }

void Put(Database& db, ChunkKey key, const engine::Chunk& chunk) {
  ASSERT_OK(db.PutChunkAndWait(key, Record(chunk), std::nullopt).status);
}

// The standard small database: uniform chunks U0, U1 (U2 deleted: a fills
// marker), bricks chunks B0..B2, one fill away from them, and two journal
// records left as a crash leaves them.
class SmallDb {
 public:
  static constexpr uint64_t kChunks = 6, kUniform = 2, kBricks = 3, kMarkers = 1;
  static constexpr uint64_t kIndexed = kUniform + kBricks, kJournal = 2;
  ChunkKey u[3] = {KeyAt(0, 0), KeyAt(1, 0), KeyAt(2, 0)};
  ChunkKey b[3] = {KeyAt(0, 1), KeyAt(1, 1), KeyAt(2, 1)};
  uint64_t journal_seq[2] = {0, 0};

  explicit SmallDb(const std::string& dir) { Build(dir); }

 private:
  void Build(const std::string& dir) {
    {
      Db d(dir);
      for (int i = 0; i < 3; ++i) {
        Put(*d.db, u[i], engine::Chunk(static_cast<uint8_t>(i + 1)));
        Put(*d.db, b[i], engine::Chunk::FromDense(Noise(static_cast<uint32_t>(i), 4)));
      }
      EXPECT_OK(d.db->DeleteChunkAndWait(u[2]).status);
      const engine::VoxelCoord lo = kFrame.ChunkOrigin({kOrigin.x + 10, kOrigin.y + 10, kOrigin.z});
      EXPECT_OK(d.db->FillBoxAndWait({lo, {lo.x + 4, lo.y + 4, lo.z + 4}}, 7).status);
    }  // closing flushes every chunk and empties the journal
    auto store = OpenStore(dir);
    uint64_t last = 0;
    {
      auto snap = store->BeginRead();
      ASSERT_TRUE(snap.ok());
      const std::string_view name = "last_seq";
      auto meta =
          (*snap)->Get(Table::kMeta, {reinterpret_cast<const uint8_t*>(name.data()), name.size()});
      ASSERT_TRUE(meta.ok()) << meta.status();
      last = engine::DecodeFixed64(meta->data());
    }
    engine::WriteBatch batch;
    for (int i = 0; i < 2; ++i) {
      journal_seq[i] = last + 1 + static_cast<uint64_t>(i);
      std::vector<engine::ChunkEdits> edits = {
          {b[0].code(), {engine::PackEdit(static_cast<uint32_t>(i), 9)}}};
      batch.Put(Table::kJournal, engine::JournalKey(journal_seq[i]),
                engine::EncodeSetVoxels(edits));
    }
    EXPECT_OK(store->Write(batch));
  }
};

using Dump = std::map<int, std::vector<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>>>;

// Every entry of every table.
Dump DumpTables(const std::string& dir) {
  auto store = OpenStore(dir);
  auto snap = store->BeginRead();
  EXPECT_TRUE(snap.ok());
  Dump dump;
  for (int t = 0; t < engine::kTableCount; ++t) {
    EXPECT_OK((*snap)->Scan(static_cast<Table>(t), {}, {},
                            [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                              dump[t].emplace_back(std::vector<uint8_t>(k.begin(), k.end()),
                                                   std::vector<uint8_t>(v.begin(), v.end()));
                              return true;
                            }));
  }
  return dump;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return static_cast<uint64_t>(st.st_size);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// The whole chunk through voxdbd.
std::vector<uint8_t> ReadChunkThroughDaemon(uint16_t port, ChunkKey key) {
  auto client = protocol::Client::Connect("127.0.0.1", port);
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) return {};
  EXPECT_TRUE((*client)->Hello("").ok());
  const engine::VoxelCoord o = kFrame.ChunkOrigin(key.coord());
  protocol::Box box{{o.x, o.y, o.z}, {o.x + 128, o.y + 128, o.z + 128}};
  auto voxels = (*client)->ReadBox(box);
  EXPECT_TRUE(voxels.ok()) << voxels.status();
  return voxels.value_or(std::vector<uint8_t>());
}

// --- verify ------------------------------------------------------------------

TEST(CliVerifyTest, CleanDatabasePassesWithItsCounts) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  SmallDb db(data);

  CliResult r = RunCli({"verify", "--data", data});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.err.empty()) << r;
  const std::string journal = "\njournal 2 records (2 ok, 0 corrupt, 0 gaps; seq " +
                              std::to_string(db.journal_seq[0]) + ".." +
                              std::to_string(db.journal_seq[1]) + ")\n";
  for (const std::string& line : std::vector<std::string>{
           "data " + data + "\n",
           "\nmeta ok (format 1, created ",
           "\nchunks 6 (6 ok, 0 corrupt, 0 bad keys; 3 bricks, 2 uniform, 1 fills markers)\n",
           "\nindex 5 entries in 5 columns (5 ok, 0 missing, 0 extra, 0 wrong version, 0 "
           "malformed)\n",
           "\nfills 1 (1 ok, 0 corrupt)\n",
           journal,
           "\nok: no problems (0 warnings)\n",
       }) {
    EXPECT_NE(r.out.find(line), std::string::npos) << line << " missing from\n" << r;
  }
  EXPECT_EQ(r.out.find("PROBLEM"), std::string::npos) << r;

  // --data=DIR and --json before the command work the same.
  r = RunCli({"--json", "verify", "--data=" + data});
  EXPECT_EQ(r.exit_code, 0) << r;
  const Json j = JsonOf(r);
  EXPECT_EQ(j["command"].str(), "verify");
  EXPECT_EQ(j["data"].str(), data);
  EXPECT_TRUE(j["ok"].boolean()) << r;
  EXPECT_TRUE(j["meta"]["ok"].boolean());
  EXPECT_EQ(j["meta"]["format_version"].u64(), 1u);
  EXPECT_EQ(j["chunks"]["total"].u64(), SmallDb::kChunks);
  EXPECT_EQ(j["chunks"]["ok"].u64(), SmallDb::kChunks);
  EXPECT_EQ(j["chunks"]["corrupt"].u64(), 0u);
  EXPECT_EQ(j["chunks"]["uniform"].u64(), SmallDb::kUniform);
  EXPECT_EQ(j["chunks"]["bricks"].u64(), SmallDb::kBricks);
  EXPECT_EQ(j["chunks"]["fills_markers"].u64(), SmallDb::kMarkers);
  EXPECT_TRUE(j["index"]["built"].boolean());
  EXPECT_EQ(j["index"]["entries"].u64(), SmallDb::kIndexed);
  EXPECT_EQ(j["index"]["ok"].u64(), SmallDb::kIndexed);
  for (const char* bad : {"missing", "extra", "wrong_version", "malformed"}) {
    EXPECT_EQ(j["index"][bad].u64(), 0u) << bad;
  }
  EXPECT_EQ(j["fills"]["total"].u64(), 1u);
  EXPECT_EQ(j["journal"]["records"].u64(), SmallDb::kJournal);
  EXPECT_EQ(j["journal"]["first_seq"].u64(), db.journal_seq[0]);
  EXPECT_EQ(j["journal"]["last_seq"].u64(), db.journal_seq[1]);
  EXPECT_EQ(j["problem_count"].u64(), 0u);
  EXPECT_TRUE(j["problems"].items().empty());

  // Verify changed nothing: the database opens and replays its journal.
  Db d(data);
  EXPECT_EQ(d.db->Stats().replayed_records, SmallDb::kJournal);
}

TEST(CliVerifyTest, CorruptRecordsAreNamedAndExitOne) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  SmallDb db(data);
  {
    auto store = OpenStore(data);
    engine::WriteBatch batch;
    auto snap = store->BeginRead();
    ASSERT_TRUE(snap.ok());
    // One flipped byte inside the zstd frame of a bricks chunk.
    auto rec = (*snap)->GetChunk(db.b[1]);
    ASSERT_TRUE(rec.ok());
    std::vector<uint8_t> bad(rec->begin(), rec->end());
    bad[bad.size() / 2] ^= 0x10;
    batch.PutChunk(db.b[1], std::move(bad));
    // A journal record with a flipped byte.
    const auto jkey = engine::JournalKey(db.journal_seq[1]);
    auto jrec = (*snap)->Get(Table::kJournal, jkey);
    ASSERT_TRUE(jrec.ok());
    std::vector<uint8_t> bad_journal(jrec->begin(), jrec->end());
    bad_journal.back() ^= 0x01;
    batch.Put(Table::kJournal, jkey, std::move(bad_journal));
    // A fill of the wrong size.
    batch.Put(Table::kFills, engine::JournalKey(db.journal_seq[1] + 100),
              std::vector<uint8_t>(10, 1));
    snap->reset();
    ASSERT_OK(store->Write(batch));
  }
  CliResult r = RunCli({"verify", "--data", data});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_NE(r.out.find("\nPROBLEM chunk " + CoordText(db.b[1]) + " (key " +
                       std::to_string(db.b[1].code()) + "): CORRUPT: "),
            std::string::npos)
      << r;
  EXPECT_NE(
      r.out.find("\nPROBLEM journal record " + std::to_string(db.journal_seq[1]) + ": CORRUPT: "),
      std::string::npos)
      << r;
  EXPECT_NE(r.out.find("\nPROBLEM fill " + std::to_string(db.journal_seq[1] + 100) + ": CORRUPT"),
            std::string::npos)
      << r;
  EXPECT_NE(r.out.find("\nchunks 6 (5 ok, 1 corrupt, "), std::string::npos) << r;
  EXPECT_NE(r.out.find("\nDAMAGED: 3 problems, 0 warnings\n"), std::string::npos) << r;
  EXPECT_EQ(r.err, "voxdb: CORRUPT: verify found 3 problems in " + data + "\n") << r;

  // --json: still exactly one object on stdout, the report.
  r = RunCli({"verify", "--data", data, "--json"});
  EXPECT_EQ(r.exit_code, 1) << r;
  const Json j = JsonOf(r);
  EXPECT_FALSE(j["ok"].boolean());
  EXPECT_EQ(j["chunks"]["corrupt"].u64(), 1u);
  EXPECT_EQ(j["journal"]["corrupt"].u64(), 1u);
  EXPECT_EQ(j["fills"]["corrupt"].u64(), 1u);
  EXPECT_EQ(j["problem_count"].u64(), 3u);
  ASSERT_EQ(j["problems"].items().size(), 3u);
  EXPECT_FALSE(j.has("error")) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: CORRUPT: verify found 3 problems")) << r;
}

TEST(CliVerifyTest, ProblemsPastTwentyAreCounted) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  SmallDb db(data);
  {
    auto store = OpenStore(data);
    engine::WriteBatch batch;
    for (uint64_t i = 0; i < 25; ++i) {
      batch.Put(Table::kFills, engine::JournalKey(1'000'000 + i), std::vector<uint8_t>(3, 0));
    }
    ASSERT_OK(store->Write(batch));
  }
  const CliResult r = RunCli({"verify", "--data", data});
  EXPECT_EQ(r.exit_code, 1) << r;
  size_t lines = 0;
  for (size_t at = r.out.find("\nPROBLEM "); at != std::string::npos;
       at = r.out.find("\nPROBLEM ", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 20u) << r;
  EXPECT_NE(r.out.find("\n... 5 more\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("\nDAMAGED: 25 problems"), std::string::npos) << r;
}

TEST(CliVerifyTest, BrokenIndexReportsMissingExtraAndWrongVersion) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  SmallDb db(data);
  const ChunkCoord b1 = db.b[1].coord();
  const ChunkKey not_stored = ChunkKey::FromCoord({b1.x, b1.y, b1.z + 1});
  {
    auto store = OpenStore(data);
    auto entry_key = [](ChunkKey key) {
      return index::IndexKey(index::ChunkCell(kFrame, key), index::ColumnId(key.coord()));
    };
    std::vector<index::IndexItem> b1_items;
    {
      auto snap = store->BeginRead();
      ASSERT_TRUE(snap.ok());
      auto v = (*snap)->Get(Table::kS2Index, entry_key(db.b[1]));
      ASSERT_TRUE(v.ok()) << v.status();
      ASSERT_TRUE(index::DecodeIndexValue(*v, &b1_items));
    }
    engine::WriteBatch batch;
    // B0 loses its entry; U0's entry says another version; B1's column
    // gets an item for a chunk above it that was never stored; an entry for
    // the deleted U2 (a fills marker).
    batch.Delete(Table::kS2Index, entry_key(db.b[0]));
    const index::IndexItem u0[] = {{db.u[0].coord().z, 999'999}};
    batch.Put(Table::kS2Index, entry_key(db.u[0]), index::EncodeIndexValue(u0));
    b1_items.push_back({b1.z + 1, 999'999});
    batch.Put(Table::kS2Index, entry_key(db.b[1]), index::EncodeIndexValue(b1_items));
    const index::IndexItem u2[] = {{db.u[2].coord().z, 999'999}};
    batch.Put(Table::kS2Index, entry_key(db.u[2]), index::EncodeIndexValue(u2));
    ASSERT_OK(store->Write(batch));
  }
  CliResult r = RunCli({"verify", "--data", data});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_NE(r.out.find("\nindex 6 entries in 5 columns (3 ok, 1 missing, 2 extra, 1 wrong "
                       "version, 0 malformed)\n"),
            std::string::npos)
      << r;
  EXPECT_NE(r.out.find("PROBLEM index: no entry for chunk " + CoordText(db.b[0])),
            std::string::npos)
      << r;
  EXPECT_NE(r.out.find("PROBLEM index: chunk " + CoordText(db.u[0])), std::string::npos) << r;
  EXPECT_NE(r.out.find("but its entry says 999999"), std::string::npos) << r;
  EXPECT_NE(r.out.find("PROBLEM index: extra entry for chunk " + CoordText(not_stored)),
            std::string::npos)
      << r;
  EXPECT_NE(r.out.find("the chunk is not stored"), std::string::npos) << r;
  EXPECT_NE(r.out.find("the chunk is deleted (a fills marker)"), std::string::npos) << r;
  // The chunks themselves are fine.
  EXPECT_NE(r.out.find("\nchunks 6 (6 ok, 0 corrupt"), std::string::npos) << r;

  const Json j = JsonOf(RunCli({"--json", "verify", "--data", data}));
  EXPECT_EQ(j["index"]["entries"].u64(), 6u);
  EXPECT_EQ(j["index"]["columns"].u64(), 5u);
  EXPECT_EQ(j["index"]["ok"].u64(), 3u);
  EXPECT_EQ(j["index"]["missing"].u64(), 1u);
  EXPECT_EQ(j["index"]["extra"].u64(), 2u);
  EXPECT_EQ(j["index"]["wrong_version"].u64(), 1u);
  EXPECT_EQ(j["problem_count"].u64(), 4u);

  // What `voxdb reindex` does repairs it.
  {
    Db d(data);
    uint64_t entries = 0;
    ASSERT_OK(index::Rebuild(d.db.get(), &entries));
    EXPECT_EQ(entries, SmallDb::kIndexed);
  }
  r = RunCli({"verify", "--data", data});
  EXPECT_EQ(r.exit_code, 0) << r;
}

TEST(CliVerifyTest, UsageErrorsAndRefusals) {
  TempDir dir;
  CliResult r = RunCli({"verify"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("needs --data DIR"), std::string::npos) << r;
  r = RunCli({"compact", "--data"});
  EXPECT_EQ(r.exit_code, 2) << r;
  r = RunCli({"verify", "--data", dir.path(), "extra-argument"});
  EXPECT_EQ(r.exit_code, 2) << r;
  r = RunCli({"ping", "--data", dir.path()});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("no option --data"), std::string::npos) << r;

  // No database there: refused, and nothing is created.
  r = RunCli({"verify", "--data", dir.Sub("none")});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: NOT_FOUND: no voxdb database in ")) << r;
  r = RunCli({"compact", "--data", dir.path()});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_FALSE(Exists(dir.Sub("none"))) << r;
  EXPECT_FALSE(Exists(dir.Sub("data.mdb")));

  // Help.
  r = RunCli({"--help"});
  EXPECT_NE(r.out.find("\n  verify --data DIR "), std::string::npos) << r;
  EXPECT_NE(r.out.find("\n  compact --data DIR "), std::string::npos) << r;
  EXPECT_NE(r.out.find("\n  --data DIR "), std::string::npos) << r;
  for (const char* command : {"verify", "compact"}) {
    r = RunCli({command, "--help"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_NE(r.out.find(std::string("usage: voxdb [options] ") + command + " --data DIR"),
              std::string::npos)
        << r;
  }
}

TEST(CliVerifyTest, OfflineCommandsRefuseWhileTheDaemonRuns) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  SmallDb db(data);
  const uint64_t size = FileSize(data + "/data.mdb");
  {
    DaemonProcess daemon(VOXDBD_PATH, data);
    for (const char* command : {"verify", "compact"}) {
      CliResult r = RunCli({command, "--data", data});
      EXPECT_EQ(r.exit_code, 1) << r;
      EXPECT_TRUE(r.err.starts_with("voxdb: BUSY: database " + data + " is in use")) << r;
      EXPECT_NE(r.err.find("stop it first"), std::string::npos) << r;
      EXPECT_TRUE(r.out.empty()) << r;
      r = RunCli({"--json", command, "--data", data});
      EXPECT_EQ(r.exit_code, 1) << r;
      EXPECT_EQ(JsonOf(r)["status"].str(), "BUSY") << r;
    }
    EXPECT_FALSE(Exists(data + ".compact-tmp"));
    EXPECT_EQ(FileSize(data + "/data.mdb"), size);
    EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
  }
  // voxdbd replayed the journal and flushed at exit, and rebuilt nothing
  // else: verify passes on what it left.
  const CliResult r = RunCli({"verify", "--data", data});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("\njournal 0 records"), std::string::npos) << r;
}

// --- compact -----------------------------------------------------------------

TEST(CliCompactTest, ShrinksADatabaseOfDeletedChunksAndKeepsEveryRecord) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  constexpr int kWritten = 40, kKept = 4;
  std::vector<ChunkKey> keys;
  std::vector<std::vector<uint8_t>> kept_voxels;
  {
    Db d(data);
    for (int i = 0; i < kWritten; ++i) {
      keys.push_back(KeyAt(static_cast<uint32_t>(i % 8), static_cast<uint32_t>(i / 8)));
      std::vector<uint8_t> dense = Noise(static_cast<uint32_t>(100 + i), 2);
      Put(*d.db, keys.back(), engine::Chunk::FromDense(dense));
      if (i < kKept) kept_voxels.push_back(std::move(dense));
    }
    ASSERT_OK(d.db->Flush());
    for (int i = kKept; i < kWritten; ++i) ASSERT_OK(d.db->DeleteChunkAndWait(keys[i]).status);
  }
  const Dump before = DumpTables(data);
  const uint64_t size_before = FileSize(data + "/data.mdb");
  struct stat mode_before;
  ASSERT_EQ(::stat((data + "/data.mdb").c_str(), &mode_before), 0);

  // What an interrupted compact leaves behind: a half-built copy and the
  // old file's second name. Both go.
  std::filesystem::create_directory(data + ".compact-tmp");
  std::ofstream(data + ".compact-tmp/data.mdb") << "half a copy";
  ASSERT_EQ(::link((data + "/data.mdb").c_str(), (data + "/data.mdb.compact-old").c_str()), 0);

  CliResult r = RunCli({"compact", "--data", data});
  EXPECT_EQ(r.exit_code, 0) << r;
  const uint64_t size_after = FileSize(data + "/data.mdb");
  EXPECT_LT(size_after * 3, size_before) << r;
  EXPECT_TRUE(r.out.starts_with("compacted " + data + ": data.mdb ")) << r;
  EXPECT_NE(r.out.find(" -> "), std::string::npos) << r;
  EXPECT_NE(r.out.find("% smaller), 40 chunks\n"), std::string::npos) << r;
  EXPECT_FALSE(Exists(data + ".compact-tmp")) << r;
  EXPECT_FALSE(Exists(data + "/compact.tmp")) << r;
  EXPECT_FALSE(Exists(data + "/data.mdb.compact-old")) << r;
  struct stat mode_after;
  ASSERT_EQ(::stat((data + "/data.mdb").c_str(), &mode_after), 0);
  EXPECT_EQ(mode_after.st_mode, mode_before.st_mode);

  // Every entry of every table, byte for byte; and verify passes.
  EXPECT_TRUE(DumpTables(data) == before);
  r = RunCli({"verify", "--data", data});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("\nchunks 40 (40 ok, 0 corrupt, 0 bad keys; 4 bricks, 0 uniform, 36 fills "
                       "markers)\n"),
            std::string::npos)
      << r;

  // Again, with --json: already compact, about the same size.
  r = RunCli({"--json", "compact", "--data", data});
  EXPECT_EQ(r.exit_code, 0) << r;
  Json j = JsonOf(r);
  EXPECT_EQ(j["command"].str(), "compact");
  EXPECT_EQ(j["data"].str(), data);
  EXPECT_EQ(j["bytes_before"].u64(), size_after);
  EXPECT_EQ(j["bytes_after"].u64(), FileSize(data + "/data.mdb"));
  EXPECT_LE(j["bytes_after"].u64(), size_after);
  EXPECT_EQ(j["chunks"].u64(), static_cast<uint64_t>(kWritten));

  // voxdbd serves the compacted database: the same voxels; and compact is
  // refused while it runs.
  {
    DaemonProcess daemon(VOXDBD_PATH, data);
    for (int i = 0; i < kKept; ++i) {
      EXPECT_TRUE(ReadChunkThroughDaemon(daemon.port(), keys[i]) == kept_voxels[i]) << i;
    }
    EXPECT_TRUE(ReadChunkThroughDaemon(daemon.port(), keys[kKept]) ==
                std::vector<uint8_t>(engine::kChunkVoxels, 0));
    r = RunCli({"compact", "--data", data});
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_TRUE(r.err.starts_with("voxdb: BUSY: ")) << r;
    EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
  }
  // And through the engine.
  Db d(data);
  std::vector<uint8_t> got(engine::kChunkVoxels);
  const engine::VoxelCoord o = kFrame.ChunkOrigin(keys[1].coord());
  ASSERT_OK(d.db->ReadBox({o, {o.x + 128, o.y + 128, o.z + 128}}, got.data()));
  EXPECT_TRUE(got == kept_voxels[1]);
}

TEST(CliCompactTest, RefusesToDeleteWhatItDidNotCreate) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  SmallDb db(data);
  const Dump before = DumpTables(data);
  std::filesystem::create_directory(data + ".compact-tmp");
  std::ofstream(data + ".compact-tmp/notes.txt") << "mine";
  CliResult r = RunCli({"compact", "--data", data});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_NE(r.err.find("notes.txt"), std::string::npos) << r;
  EXPECT_TRUE(Exists(data + ".compact-tmp/notes.txt"));
  EXPECT_TRUE(DumpTables(data) == before);
  std::filesystem::remove_all(data + ".compact-tmp");
  r = RunCli({"compact", "--data", data + "/"});  // a trailing slash is the same directory
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(DumpTables(data) == before);
  EXPECT_FALSE(Exists(data + ".compact-tmp"));
}

// --- info --------------------------------------------------------------------

TEST(CliInfoTest, PrintsEverySectionAndJsonHasOneMemberPerSection) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  const std::string address = "127.0.0.1:" + std::to_string(daemon.port());
  CliResult r =
      RunCli({"--address", address, "set-voxel", "128000000", "51200000", "40000000", "7"});
  ASSERT_EQ(r.exit_code, 0) << r;

  r = RunCli({"--address", address, "info"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.out.starts_with("# server\naddress " + address + "\n")) << r;
  // Each line in its section, sections in order.
  const std::vector<std::pair<std::string, std::vector<std::string>>> expected = {
      {"server", {"server_version voxdbd ", "protocol_version 1", "role admin"}},
      {"storage", {"extent_x 160300080", "voxel_size_m 0.25", "sea_level_z 40000000", "fills "}},
      {"cache", {"cache_hits ", "dirty_chunks ", "flushes "}},
      {"journal", {"journal_records ", "last_seq 1", "committed_seq "}},
      {"index", {}},
      {"lod", {"lod_levels 4", "lod_dirty "}},
      {"clients",
       {"max_payload 67108864", "max_box_voxels 268435456", "connections ", "requests ",
        "bytes_in ", "unsent_bytes "}},
      {"push",
       {"subscribers 0", "subscribers_cut_off 0", "change_feed_records ", "streams_open 0"}},
  };
  size_t previous = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& [section, lines] = expected[i];
    const size_t at = ("\n" + r.out).find("\n# " + section + "\n");
    ASSERT_NE(at, std::string::npos) << section << " missing from\n" << r;
    EXPECT_GE(at, previous) << section << " out of order";
    previous = at;
    const size_t end =
        i + 1 < expected.size() ? r.out.find("\n# " + expected[i + 1].first + "\n") : r.out.size();
    const std::string body = r.out.substr(at, end - at);
    for (const std::string& line : lines) {
      EXPECT_NE(body.find("\n" + line), std::string::npos)
          << line << " not in # " << section << " of\n"
          << r;
    }
  }
  EXPECT_EQ(r.out.find("# other"), std::string::npos) << r;
  // Every STATS figure is printed once, in its protocol/stats.h row's section.
  std::map<std::string, std::string> section_of;  // printed name -> section
  std::string current;
  for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "# ")) {
      current = std::string(line.substr(2));
      continue;
    }
    const std::string name(line.substr(0, line.find(' ')));
    EXPECT_TRUE(section_of.emplace(name, current).second) << name << " printed twice";
  }
  for (const protocol::StatInfo& row : protocol::kStats) {
    auto it = section_of.find(std::string(row.name));
    ASSERT_NE(it, section_of.end()) << row.name << " missing from\n" << r;
    EXPECT_EQ(it->second, row.section) << row.name;
  }

  r = RunCli({"--address", address, "--json", "info"});
  EXPECT_EQ(r.exit_code, 0) << r;
  const Json j = JsonOf(r);
  EXPECT_EQ(j["command"].str(), "info");
  for (const auto& [section, lines] : expected) {
    EXPECT_TRUE(j[section].is_object()) << section << " in " << r;
  }
  EXPECT_EQ(j["server"]["address"].str(), address);
  EXPECT_EQ(j["server"]["role"].str(), "admin");
  EXPECT_EQ(j["server"]["protocol_version"].u64(), 1u);
  EXPECT_EQ(j["storage"]["extent_x"].u64(), 160300080u);
  EXPECT_EQ(j["storage"]["voxel_size_m"].str(), "0.25");
  EXPECT_EQ(j["journal"]["last_seq"].u64(), 1u);
  EXPECT_NE(j["cache"]["dirty_chunks"].u64(), ~uint64_t{0});
  EXPECT_EQ(j["clients"]["max_payload"].u64(), 67108864u);
  EXPECT_GE(j["clients"]["connections"].u64(), 1u);
}

// --- recover -------------------------------------------------------------------

// A real database whose journal holds ten acknowledged one-voxel writes
// (voxdbd killed before any flush), with the sixth record damaged: voxdbd
// refuses it and names voxdb recover; recover reports, --truncate-journal
// drops the sixth record and the later ones (keeping a copy), and voxdbd
// then opens with the first five.
TEST(CliRecoverTest, DamagedJournalRecordIsReportedThenTruncatedWithACopy) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  constexpr uint64_t kX = 128'000'000, kY = 51'200'000, kZ = 40'000'000;
  std::vector<uint64_t> versions;
  {
    DaemonProcess daemon(VOXDBD_PATH, data);
    auto c = protocol::Client::Connect("127.0.0.1", daemon.port());
    ASSERT_TRUE(c.ok());
    for (uint64_t i = 0; i < 10; ++i) {
      protocol::SetVoxelsRequest set;
      set.edits.push_back({{kX + i, kY, kZ}, static_cast<uint8_t>(i + 1)});
      ASSERT_OK_AND_ASSIGN(uint64_t v, (*c)->SetVoxels(set));
      versions.push_back(v);
    }
    c->reset();
    daemon.StopWith(SIGKILL);  // the journal stays
  }
  uint64_t bad_seq = 0;
  {
    engine::StoreOptions o;
    o.create_if_missing = false;
    ASSERT_OK_AND_ASSIGN(auto store, ChunkStore::Open(data, o));
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> records;
    {
      ASSERT_OK_AND_ASSIGN(auto snap, store->BeginRead());
      ASSERT_OK(snap->Scan(Table::kJournal, {}, {},
                           [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
                             records.emplace_back(engine::DecodeJournalKey(k),
                                                  std::vector<uint8_t>(v.begin(), v.end()));
                             return true;
                           }));
    }
    ASSERT_EQ(records.size(), 10u);
    bad_seq = records[5].first;
    EXPECT_EQ(bad_seq, versions[5]);
    std::vector<uint8_t> damaged = records[5].second;
    damaged.back() ^= 0x40;  // a flipped bit in the body
    engine::WriteBatch b;
    b.Put(Table::kJournal, engine::JournalKey(bad_seq), std::move(damaged));
    ASSERT_OK(store->Write(b));
  }
  const std::string seq = std::to_string(bad_seq);
  const std::vector<std::string> voxdbd = {VOXDBD_PATH,   "--data",           data, "--listen",
                                           "127.0.0.1:0", "--metrics-listen", "off"};
  CliResult r = testing::RunProcess(voxdbd);
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_NE(r.err.find("journal record " + seq), std::string::npos) << r;
  EXPECT_NE(r.err.find("voxdb recover --data " + data), std::string::npos) << r;

  // Reported, nothing dropped.
  r = RunCli({"recover", "--data", data});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_NE(r.out.find("damaged: record " + seq + ": journal record checksum mismatch"),
            std::string::npos)
      << r;
  EXPECT_NE(r.out.find("would drop 5 records"), std::string::npos) << r;
  r = RunCli({"--json", "recover", "--data", data});
  EXPECT_EQ(r.exit_code, 1) << r;
  Json j = JsonOf(r);
  EXPECT_TRUE(j["damaged"].boolean()) << r;
  EXPECT_EQ(j["bad_seq"].u64(), bad_seq);
  EXPECT_EQ(j["kept_records"].u64(), 5u);
  EXPECT_EQ(j["drop_records"].u64(), 5u);
  EXPECT_FALSE(j["truncated"].boolean());
  r = testing::RunProcess(voxdbd);
  EXPECT_EQ(r.exit_code, 1) << r;  // still refused
  EXPECT_EQ(RunCli({"verify", "--truncate-journal", "--data", data}).exit_code, 2);

  // Dropped, with a copy of what was dropped.
  r = RunCli({"--json", "recover", "--data", data, "--truncate-journal"});
  ASSERT_EQ(r.exit_code, 0) << r;
  j = JsonOf(r);
  EXPECT_TRUE(j["truncated"].boolean()) << r;
  const std::string copy = data + "/journal-dropped-" + seq + "-" + std::to_string(versions[9]);
  EXPECT_EQ(j["copy"].str(), copy);
  {
    std::ifstream in(copy, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GE(bytes.size(), 8u);
    EXPECT_EQ(bytes.substr(0, 8), "VOXJDROP");
    size_t at = 8, n = 0;
    while (at + 12 <= bytes.size()) {
      const auto* p = reinterpret_cast<const uint8_t*>(bytes.data() + at);
      EXPECT_EQ(engine::DecodeJournalKey(std::span<const uint8_t>(p, 8)), versions[5 + n]);
      at += 12 + engine::DecodeFixed32(p + 8);
      ++n;
    }
    EXPECT_EQ(at, bytes.size());
    EXPECT_EQ(n, 5u);
    struct stat st;
    ASSERT_EQ(::stat(copy.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  r = RunCli({"recover", "--data", data});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("none damaged"), std::string::npos) << r;

  // voxdbd opens: the five earlier writes are there, the later ones not,
  // and versions go on past the dropped ones.
  DaemonProcess daemon(VOXDBD_PATH, data);
  auto c = protocol::Client::Connect("127.0.0.1", daemon.port());
  ASSERT_TRUE(c.ok());
  protocol::GetVoxelsRequest get;
  for (uint64_t i = 0; i < 10; ++i) get.at.push_back({kX + i, kY, kZ});
  ASSERT_OK_AND_ASSIGN(auto got, (*c)->GetVoxels(get));
  EXPECT_EQ(got, (std::vector<uint8_t>{1, 2, 3, 4, 5, 0, 0, 0, 0, 0}));
  protocol::SetVoxelsRequest set;
  set.edits.push_back({{kX, kY, kZ}, 42});
  ASSERT_OK_AND_ASSIGN(uint64_t v, (*c)->SetVoxels(set));
  EXPECT_GT(v, versions[9]);
  c->reset();
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

}  // namespace
}  // namespace voxdb
