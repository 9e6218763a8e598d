// engine/node_manifest.h: the node manifest's text and its checks, the
// implicit one-partition manifest of an old data directory, the split and
// move helpers, a manifest write killed at random moments (never a mix of
// two manifests, never unreadable), and the cleanup of leftovers, on real
// files in a temporary directory.
#include "engine/node_manifest.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/chunk_store.h"
#include "engine/crc32c.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace voxdb::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ReadFile;
using testing::TempDir;
using ::testing::UnorderedElementsAre;

constexpr uint64_t kEnd = ChunkKey::kMaxCode + 1;
constexpr uint64_t kQuarter = uint64_t{1} << 61;

int RoundsFromEnv(int default_rounds) {
  const char* s = std::getenv("VOXDB_CRASH_ROUNDS");
  if (s == nullptr || *s == '\0') return default_rounds;
  return std::max(1, std::atoi(s));
}

void WriteRaw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

// `body` (every line before the crc line) with its crc line.
std::string WithCrc(const std::string& body) {
  const uint32_t crc = Crc32cExtend(0, reinterpret_cast<const uint8_t*>(body.data()), body.size());
  return body + absl::StrFormat("crc32c=%08x\n", crc);
}

// A real LMDB environment of voxdb in `dir` (created with its parents),
// closed again: data.mdb, lock.mdb and LOCK.
void MakeEnvironment(const std::string& dir) {
  StoreOptions options;
  auto store = ChunkStore::Open(dir, options);
  ASSERT_OK(store);
}

// Root split at 2^61, then the upper part split at 2^62 and moved to an
// absolute dir: partitions 1, 3 (in /srv/disk2/p3) and 4.
NodeManifest ThreePartitions() {
  NodeManifest m = NodeManifest::OnePartition();
  m = *ManifestAfterSplit(m, 0, kQuarter);
  m = *ManifestAfterSplit(m, 2, 2 * kQuarter);
  m = *ManifestAfterMove(m, 3, "/srv/disk2/p3");
  return m;
}

TEST(NodeManifestTest, RoundTripsThroughTheFileInTheDocumentedText) {
  TempDir tmp;
  const NodeManifest m = ThreePartitions();
  ASSERT_OK(WriteNodeManifest(tmp.path(), m));
  const std::string text = ReadFile(tmp.Sub("node.manifest"));
  // Exactly FORMAT.md's example, crc included (computed there independently).
  EXPECT_EQ(text,
            "voxdb-node-manifest 1\n"
            "align_levels=4\n"
            "next_id=5\n"
            "partition id=1 begin=0 end=2305843009213693952 dir=partitions/1 state=active\n"
            "partition id=3 begin=2305843009213693952 end=4611686018427387904 dir=/srv/disk2/p3 "
            "state=active\n"
            "partition id=4 begin=4611686018427387904 end=9223372036854775808 dir=partitions/4 "
            "state=active\n"
            "crc32c=ae84ab4c\n");
  EXPECT_FALSE(fs::exists(tmp.Sub("node.manifest.tmp")));
  ASSERT_OK_AND_ASSIGN(const NodeManifest back, ReadNodeManifest(tmp.path()));
  EXPECT_EQ(back, m);

  // A second write replaces the first whole.
  NodeManifest other = NodeManifest::OnePartition();
  other.align_levels = 6;
  other.next_id = 17;
  ASSERT_OK(WriteNodeManifest(tmp.path(), other));
  ASSERT_OK_AND_ASSIGN(const NodeManifest back2, ReadNodeManifest(tmp.path()));
  EXPECT_EQ(back2, other);
  EXPECT_EQ(back2.Ranges().size(), 1u);
}

TEST(NodeManifestTest, AnUnchangedDataDirectoryIsOnePartitionAndStaysAsItWas) {
  TempDir tmp;
  const NodeManifest one = NodeManifest::OnePartition();
  ASSERT_EQ(one.partitions.size(), 1u);
  EXPECT_EQ(one.partitions[0],
            (PartitionEntry{0, MortonRange::All(), ".", PartitionState::kActive}));
  EXPECT_EQ(one.next_id, 1u);
  EXPECT_EQ(one.align_levels, kDefaultAlignLevels);

  // Absent, empty, and an existing single database.
  ASSERT_OK_AND_ASSIGN(NodeManifest m, ReadNodeManifest(tmp.Sub("absent")));
  EXPECT_EQ(m, one);
  ASSERT_OK_AND_ASSIGN(m, ReadNodeManifest(tmp.path()));
  EXPECT_EQ(m, one);
  MakeEnvironment(tmp.path());
  ASSERT_OK_AND_ASSIGN(m, ReadNodeManifest(tmp.path()));
  EXPECT_EQ(m, one);
  EXPECT_EQ(PartitionDir(tmp.path(), m.partitions[0]), tmp.path());
  // Reading writes nothing.
  EXPECT_FALSE(fs::exists(tmp.Sub("node.manifest")));
  EXPECT_FALSE(fs::exists(tmp.Sub("absent")));
  // Leftovers of a first split cut short before its manifest: still the old database.
  MakeEnvironment(tmp.Sub("partitions/1"));
  ASSERT_OK_AND_ASSIGN(m, ReadNodeManifest(tmp.path()));
  EXPECT_EQ(m, one);

  // partitions/ without the manifest or the root's data.mdb: the manifest was lost.
  TempDir lost;
  ASSERT_TRUE(fs::create_directories(lost.Sub("partitions/3")));
  const auto r = ReadNodeManifest(lost.path());
  EXPECT_TRUE(IsCorrupt(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(lost.path()));
}

TEST(NodeManifestTest, TornOrDamagedManifestIsCorruptNamingTheFile) {
  TempDir tmp;
  const std::string path = tmp.Sub("node.manifest");
  const std::string good = EncodeNodeManifest(ThreePartitions());
  // Every torn length, as a crash without the rename protocol could leave.
  for (size_t len = 0; len < good.size(); ++len) {
    WriteRaw(path, good.substr(0, len));
    const auto r = ReadNodeManifest(tmp.path());
    ASSERT_TRUE(IsCorrupt(r.status())) << "length " << len << ": " << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(path));
  }
  // Every single bit flipped (decoded in memory: the file is read the same
  // way). The version digit may turn into a newer version (UNSUPPORTED);
  // anything else is CORRUPT.
  const size_t header_len = good.find('\n');
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      const auto r = DecodeNodeManifest(bad, path);
      ASSERT_FALSE(r.ok()) << "byte " << i << " bit " << bit;
      EXPECT_TRUE(IsCorrupt(r.status()) || (IsUnsupported(r.status()) && i < header_len))
          << "byte " << i << " bit " << bit << ": " << r.status();
      EXPECT_THAT(std::string(r.status().message()), HasSubstr(path));
    }
  }
  // Garbage and trailing bytes after the crc line.
  WriteRaw(path, "not a manifest at all\n");
  EXPECT_TRUE(IsCorrupt(ReadNodeManifest(tmp.path()).status()));
  WriteRaw(path, good + "x\n");
  EXPECT_TRUE(IsCorrupt(ReadNodeManifest(tmp.path()).status()));
  // A line the grammar does not know, under a correct crc.
  WriteRaw(path, WithCrc("voxdb-node-manifest 1\nalign_levels=4\nnext_id=1\n"
                         "partition id=0 begin=0 end=9223372036854775808 dir=. state=active "
                         "extra=1\n"));
  EXPECT_TRUE(IsCorrupt(ReadNodeManifest(tmp.path()).status()));
  WriteRaw(path, WithCrc("voxdb-node-manifest 1\nalign_levels=4\nnext_id=1\n"
                         "partition id=0 begin=0 end=9223372036854775808 dir=. state=\n"));
  EXPECT_TRUE(IsCorrupt(ReadNodeManifest(tmp.path()).status()));
  WriteRaw(path, WithCrc("voxdb-node-manifest 1\nalign_levels=4\nnext_id=1\n"
                         "partition  id=0 begin=0 end=9223372036854775808 dir=. state=active\n"));
  EXPECT_TRUE(IsCorrupt(ReadNodeManifest(tmp.path()).status()));
  WriteRaw(path, WithCrc("voxdb-node-manifest 1\nalign_levels=4\nnext_id=01\n"
                         "partition id=0 begin=0 end=9223372036854775808 dir=. state=active\n"));
  EXPECT_TRUE(IsCorrupt(ReadNodeManifest(tmp.path()).status()));
}

TEST(NodeManifestTest, NewerVersionOrStateIsUnsupportedNamingTheFile) {
  TempDir tmp;
  const std::string path = tmp.Sub("node.manifest");
  WriteRaw(path, "voxdb-node-manifest 2\nwhatever a newer build writes\n");
  auto r = ReadNodeManifest(tmp.path());
  EXPECT_TRUE(IsUnsupported(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(path));
  WriteRaw(path, WithCrc("voxdb-node-manifest 1\nalign_levels=4\nnext_id=1\n"
                         "partition id=0 begin=0 end=9223372036854775808 dir=. state=frozen\n"));
  r = ReadNodeManifest(tmp.path());
  EXPECT_TRUE(IsUnsupported(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(path));
  // The one this build writes reads back.
  WriteRaw(path, WithCrc("voxdb-node-manifest 1\nalign_levels=4\nnext_id=1\n"
                         "partition id=0 begin=0 end=9223372036854775808 dir=. state=active\n"));
  ASSERT_OK_AND_ASSIGN(const NodeManifest m, ReadNodeManifest(tmp.path()));
  EXPECT_EQ(m, NodeManifest::OnePartition());
}

// Manifests that do not tile the key space, or whose ids or dirs are wrong:
// INVALID to write (nothing written), CORRUPT to read under a correct crc.
TEST(NodeManifestTest, BadTilingIdsOrDirsAreRefused) {
  const NodeManifest good = ThreePartitions();
  std::vector<std::pair<std::string, NodeManifest>> cases;
  const auto add = [&](const std::string& name, auto change) {
    NodeManifest m = good;
    change(m);
    cases.emplace_back(name, m);
  };
  add("gap", [](NodeManifest& m) { m.partitions[1].range.begin += 4096; });
  add("overlap", [](NodeManifest& m) { m.partitions[0].range.end += 4096; });
  add("not from 0", [](NodeManifest& m) { m.partitions[0].range.begin = 4096; });
  add("short of the end", [](NodeManifest& m) { m.partitions[2].range.end -= 4096; });
  add("unaligned", [](NodeManifest& m) {
    m.partitions[0].range.end = kQuarter + 8;
    m.partitions[1].range.begin = kQuarter + 8;
  });
  add("out of order", [](NodeManifest& m) { std::swap(m.partitions[0], m.partitions[1]); });
  add("empty", [](NodeManifest& m) { m.partitions.clear(); });
  add("align_levels", [](NodeManifest& m) { m.align_levels = 22; });
  add("duplicate id", [](NodeManifest& m) {
    m.partitions[2].id = 1;
    m.partitions[2].dir = "/x";
  });
  add("id >= next_id", [](NodeManifest& m) { m.next_id = 4; });
  add("duplicate dir", [](NodeManifest& m) { m.partitions[2].dir = "/srv/disk2/p3"; });
  add("newline", [](NodeManifest& m) { m.partitions[1].dir = "/srv/a\nb"; });
  add("space", [](NodeManifest& m) { m.partitions[1].dir = "/srv/a b"; });
  add("equals", [](NodeManifest& m) { m.partitions[1].dir = "/srv/a=b"; });
  add("empty dir", [](NodeManifest& m) { m.partitions[1].dir = ""; });
  add("dotdot", [](NodeManifest& m) { m.partitions[1].dir = "/srv/../etc"; });
  add("trailing slash", [](NodeManifest& m) { m.partitions[1].dir = "/srv/p3/"; });
  add("other relative", [](NodeManifest& m) { m.partitions[1].dir = "elsewhere/3"; });
  add("another id's dir", [](NodeManifest& m) { m.partitions[1].dir = "partitions/7"; });
  add("not root in .", [](NodeManifest& m) { m.partitions[1].dir = "."; });

  TempDir tmp;
  for (const auto& [name, m] : cases) {
    SCOPED_TRACE(name);
    const Status s = WriteNodeManifest(tmp.path(), m);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_TRUE(fs::is_empty(tmp.path()));
  }

  // The same tilings, hand-written with a correct crc: CORRUPT, naming the file.
  const std::string path = tmp.Sub("node.manifest");
  for (const std::string& lines : {
           // a gap
           std::string("partition id=1 begin=0 end=4096 dir=partitions/1 state=active\n"
                       "partition id=2 begin=8192 end=9223372036854775808 dir=partitions/2 "
                       "state=active\n"),
           // unaligned for align_levels=4
           std::string("partition id=1 begin=0 end=512 dir=partitions/1 state=active\n"
                       "partition id=2 begin=512 end=9223372036854775808 dir=partitions/2 "
                       "state=active\n"),
           // not to the end
           std::string("partition id=1 begin=0 end=4096 dir=partitions/1 state=active\n"),
           // none
           std::string(),
       }) {
    WriteRaw(path, WithCrc("voxdb-node-manifest 1\nalign_levels=4\nnext_id=3\n" + lines));
    const auto r = ReadNodeManifest(tmp.path());
    EXPECT_TRUE(IsCorrupt(r.status())) << lines << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(path));
  }
}

// A write that fails leaves the manifest in force as it was.
TEST(NodeManifestTest, FailedWriteLeavesTheOldManifest) {
  TempDir tmp;
  const NodeManifest old = ThreePartitions();
  ASSERT_OK(WriteNodeManifest(tmp.path(), old));
  // The tmp file's name is taken by a directory: the write fails before the rename.
  ASSERT_TRUE(fs::create_directory(tmp.Sub("node.manifest.tmp")));
  const Status s = WriteNodeManifest(tmp.path(), NodeManifest::OnePartition());
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("node.manifest.tmp"));
  ASSERT_OK_AND_ASSIGN(const NodeManifest read, ReadNodeManifest(tmp.path()));
  EXPECT_EQ(read, old);
  // No data directory: NOT_FOUND, nothing created.
  EXPECT_TRUE(absl::IsNotFound(WriteNodeManifest(tmp.Sub("absent"), old)));
  EXPECT_FALSE(fs::exists(tmp.Sub("absent")));
  // A manifest that cannot be read is an error, never the implicit one.
  TempDir other;
  ASSERT_TRUE(fs::create_directory(other.Sub("node.manifest")));
  EXPECT_FALSE(ReadNodeManifest(other.path()).ok());
}

TEST(NodeManifestTest, SplitAndMoveMakeTheNextLayout) {
  const NodeManifest one = NodeManifest::OnePartition();
  ASSERT_OK_AND_ASSIGN(const NodeManifest two, ManifestAfterSplit(one, 0, kQuarter));
  EXPECT_EQ(two.next_id, 3u);
  EXPECT_THAT(
      two.partitions,
      ElementsAre(PartitionEntry{1, {0, kQuarter}, "partitions/1", PartitionState::kActive},
                  PartitionEntry{2, {kQuarter, kEnd}, "partitions/2", PartitionState::kActive}));
  EXPECT_EQ(two.Find(0), nullptr);
  ASSERT_NE(two.Find(2), nullptr);
  EXPECT_EQ(two.Find(2)->range.begin, kQuarter);
  EXPECT_EQ(PartitionDir("/data", *two.Find(2)), "/data/partitions/2");
  EXPECT_EQ(two.Ranges().Find(kQuarter - 1), 0u);
  EXPECT_EQ(two.Ranges().Find(kQuarter), 1u);

  // Split the first of two: the new ids come in range order, next_id grows.
  ASSERT_OK_AND_ASSIGN(const NodeManifest three, ManifestAfterSplit(two, 1, 4096));
  EXPECT_EQ(three.next_id, 5u);
  ASSERT_EQ(three.partitions.size(), 3u);
  EXPECT_EQ(three.partitions[0], (PartitionEntry{3, {0, 4096}, "partitions/3"}));
  EXPECT_EQ(three.partitions[1], (PartitionEntry{4, {4096, kQuarter}, "partitions/4"}));
  EXPECT_EQ(three.partitions[2], two.partitions[1]);

  // Refused splits: unknown id, unaligned, at an end.
  EXPECT_TRUE(absl::IsInvalidArgument(ManifestAfterSplit(two, 7, kQuarter / 2).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ManifestAfterSplit(two, 1, 4096 + 8).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ManifestAfterSplit(two, 2, kQuarter).status()));

  // Moves: to another disk, back home, and the refused ones.
  ASSERT_OK_AND_ASSIGN(const NodeManifest moved, ManifestAfterMove(three, 4, "/mnt/b/p4"));
  EXPECT_EQ(moved.Find(4)->dir, "/mnt/b/p4");
  EXPECT_EQ(moved.Find(4)->range, three.Find(4)->range);
  EXPECT_EQ(moved.next_id, three.next_id);
  EXPECT_EQ(PartitionDir("/data", *moved.Find(4)), "/mnt/b/p4");
  ASSERT_OK_AND_ASSIGN(const NodeManifest home, ManifestAfterMove(moved, 4, "partitions/4"));
  EXPECT_EQ(home, three);
  EXPECT_TRUE(absl::IsInvalidArgument(ManifestAfterMove(three, 4, "partitions/4").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ManifestAfterMove(moved, 3, "/mnt/b/p4").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ManifestAfterMove(three, 9, "/mnt/b/p9").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ManifestAfterMove(three, 4, "relative/p4").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ManifestAfterMove(three, 4, "/with\nnewline").status()));
  // The root may move away from DATA and back.
  ASSERT_OK_AND_ASSIGN(const NodeManifest root_moved, ManifestAfterMove(one, 0, "/mnt/b/root"));
  EXPECT_EQ(PartitionDir("/data", root_moved.partitions[0]), "/mnt/b/root");
  ASSERT_OK_AND_ASSIGN(const NodeManifest root_home, ManifestAfterMove(root_moved, 0, "."));
  EXPECT_EQ(root_home, one);
}

// A child writes two manifests alternately until SIGKILL lands at a random
// moment: whatever the moment, the manifest read afterwards is exactly one
// of the two.
TEST(NodeManifestTest, KilledWriterLeavesExactlyOneOfTheManifests) {
  TempDir tmp;
  const NodeManifest a = ThreePartitions();
  NodeManifest b = NodeManifest::OnePartition();
  b.next_id = 1000;
  for (uint64_t i = 0; i < 60; ++i) {  // a longer file: more write(2) to land in
    b = *ManifestAfterSplit(b, b.partitions.back().id, b.partitions.back().range.begin + 4096);
  }
  ASSERT_OK(WriteNodeManifest(tmp.path(), a));
  const int rounds = RoundsFromEnv(30);
  std::mt19937 rng(18);
  int saw_a = 0, saw_b = 0, saw_tmp = 0;
  for (int round = 0; round < rounds; ++round) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(ready[0]);
      for (uint64_t i = 0;; ++i) {
        if (!WriteNodeManifest(tmp.path(), i % 2 == 0 ? b : a).ok()) _exit(2);
        if (i == 0 && ::write(ready[1], "r", 1) != 1) _exit(3);
      }
    }
    ::close(ready[1]);
    char c = 0;
    ASSERT_EQ(::read(ready[0], &c, 1), 1) << "the child failed before its first write";
    ::close(ready[0]);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 15000));
    ::kill(pid, SIGKILL);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL) << "status " << wstatus;

    ASSERT_OK_AND_ASSIGN(const NodeManifest read, ReadNodeManifest(tmp.path()));
    ASSERT_TRUE(read == a || read == b) << "round " << round;
    (read == a ? saw_a : saw_b)++;
    if (fs::exists(tmp.Sub("node.manifest.tmp"))) ++saw_tmp;
    std::vector<std::string> removed;
    ASSERT_OK(RemoveLeftovers(tmp.path(), read, &removed));
    EXPECT_FALSE(fs::exists(tmp.Sub("node.manifest.tmp")));
  }
  // Information: how the kills landed.
  std::printf("rounds %d: manifest a %d, b %d, a stale tmp file %d\n", rounds, saw_a, saw_b,
              saw_tmp);
}

// A node after a split of the root at 2^61 (partitions 1 and 2) whose
// manifest is written, plus leftovers of a later split of 2 cut short.
class RemoveLeftoversTest : public ::testing::Test {
 protected:
  void SetUp() override {
    two_ = *ManifestAfterSplit(NodeManifest::OnePartition(), 0, kQuarter);
    MakeEnvironment(data_);
    MakeEnvironment(Sub("partitions/1"));
    MakeEnvironment(Sub("partitions/2"));
    MakeEnvironment(Sub("partitions/3"));  // the half-built children of 2
    MakeEnvironment(Sub("partitions/4"));
    WriteRaw(Sub("node.manifest.tmp"), "voxdb-node-manifest 1\nalign_lev");
  }
  std::string Sub(const std::string& name) const { return data_ + "/" + name; }

  TempDir tmp_;
  std::string data_ = tmp_.Sub("data");
  NodeManifest two_;
};

TEST_F(RemoveLeftoversTest, RemovesUnreferencedPartitionsTheStaleTmpAndTheOldRoot) {
  ASSERT_OK(WriteNodeManifest(data_, two_));
  WriteRaw(Sub("node.manifest.tmp"),
           "voxdb-node-manifest 1\nalign_lev");  // a later write cut short
  WriteRaw(Sub("notes.txt"), "an operator's file in DATA");
  std::vector<std::string> removed;
  ASSERT_OK(RemoveLeftovers(data_, two_, &removed));
  EXPECT_THAT(removed, UnorderedElementsAre(Sub("node.manifest.tmp"), Sub("partitions/3"),
                                            Sub("partitions/4"), Sub("data.mdb"), Sub("lock.mdb")));
  EXPECT_FALSE(fs::exists(Sub("partitions/3")));
  EXPECT_FALSE(fs::exists(Sub("partitions/4")));
  EXPECT_FALSE(fs::exists(Sub("data.mdb")));
  EXPECT_FALSE(fs::exists(Sub("lock.mdb")));
  // What the manifest uses, and everything in DATA but the root's two files, stays.
  EXPECT_TRUE(fs::exists(Sub("partitions/1/data.mdb")));
  EXPECT_TRUE(fs::exists(Sub("partitions/2/data.mdb")));
  EXPECT_TRUE(fs::exists(Sub("LOCK")));
  EXPECT_TRUE(fs::exists(Sub("notes.txt")));
  EXPECT_TRUE(fs::exists(Sub("node.manifest")));
  ASSERT_OK_AND_ASSIGN(const NodeManifest back, ReadNodeManifest(data_));
  EXPECT_EQ(back, two_);
  // Nothing left: a second run removes nothing.
  removed.clear();
  ASSERT_OK(RemoveLeftovers(data_, two_, &removed));
  EXPECT_TRUE(removed.empty());
}

TEST_F(RemoveLeftoversTest, KeepsTheRootWhileDataIsInUse) {
  // The split never committed: the implicit manifest, the root in DATA.
  std::vector<std::string> removed;
  ASSERT_OK_AND_ASSIGN(const NodeManifest m, ReadNodeManifest(data_));
  ASSERT_EQ(m, NodeManifest::OnePartition());
  ASSERT_OK(RemoveLeftovers(data_, m, &removed));
  EXPECT_THAT(removed,
              UnorderedElementsAre(Sub("node.manifest.tmp"), Sub("partitions/1"),
                                   Sub("partitions/2"), Sub("partitions/3"), Sub("partitions/4")));
  EXPECT_TRUE(fs::exists(Sub("data.mdb")));
  EXPECT_TRUE(fs::exists(Sub("lock.mdb")));
  EXPECT_TRUE(fs::is_empty(Sub("partitions")));

  // The root moved to DATA's own absolute path: still in use.
  const NodeManifest self = *ManifestAfterMove(m, 0, fs::canonical(data_).string());
  ASSERT_OK(RemoveLeftovers(data_, self, &removed));
  EXPECT_TRUE(fs::exists(Sub("data.mdb")));
}

TEST_F(RemoveLeftoversTest, RootMovedAwayLeavesItsFilesToRemove) {
  const NodeManifest moved =
      *ManifestAfterMove(NodeManifest::OnePartition(), 0, tmp_.Sub("elsewhere"));
  MakeEnvironment(tmp_.Sub("elsewhere"));
  std::vector<std::string> removed;
  ASSERT_OK(RemoveLeftovers(data_, moved, &removed));
  EXPECT_FALSE(fs::exists(Sub("data.mdb")));
  EXPECT_FALSE(fs::exists(Sub("lock.mdb")));
  EXPECT_TRUE(fs::exists(Sub("LOCK")));
  EXPECT_TRUE(fs::exists(tmp_.Sub("elsewhere/data.mdb")));
  EXPECT_FALSE(fs::exists(Sub("partitions/1")));
}

// Anything voxdb did not make is refused before anything is deleted.
TEST_F(RemoveLeftoversTest, RefusesUnexpectedContentAndDeletesNothing) {
  const auto expect_refused = [&](const std::string& named) {
    std::vector<std::string> removed;
    const Status s = RemoveLeftovers(data_, two_, &removed);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(named));
    EXPECT_TRUE(removed.empty());
    // Nothing deleted.
    for (const char* p : {"node.manifest.tmp", "data.mdb", "lock.mdb", "partitions/3/data.mdb",
                          "partitions/4/data.mdb", "partitions/4/lock.mdb"}) {
      EXPECT_TRUE(fs::exists(Sub(p))) << p;
    }
  };
  // An unexpected file in a leftover directory.
  WriteRaw(Sub("partitions/4/precious.txt"), "keep me");
  expect_refused("precious.txt");
  ASSERT_TRUE(fs::remove(Sub("partitions/4/precious.txt")));
  // A subdirectory in one.
  ASSERT_TRUE(fs::create_directory(Sub("partitions/4/sub")));
  expect_refused("sub");
  ASSERT_TRUE(fs::remove(Sub("partitions/4/sub")));
  // A name that is not a decimal id, or not canonical.
  ASSERT_TRUE(fs::create_directory(Sub("partitions/backup")));
  expect_refused("partitions/backup");
  ASSERT_TRUE(fs::remove(Sub("partitions/backup")));
  ASSERT_TRUE(fs::create_directory(Sub("partitions/05")));
  expect_refused("partitions/05");
  ASSERT_TRUE(fs::remove(Sub("partitions/05")));
  // A plain file named like a partition.
  WriteRaw(Sub("partitions/6"), "x");
  expect_refused("partitions/6");
  ASSERT_TRUE(fs::remove(Sub("partitions/6")));
  // A stale tmp that is a directory.
  ASSERT_TRUE(fs::remove(Sub("node.manifest.tmp")));
  ASSERT_TRUE(fs::create_directory(Sub("node.manifest.tmp")));
  {
    std::vector<std::string> removed;
    EXPECT_TRUE(absl::IsInvalidArgument(RemoveLeftovers(data_, two_, &removed)));
    EXPECT_TRUE(fs::exists(Sub("partitions/3/data.mdb")));
  }
}

// Symbolic links are never followed: a link named like a partition, or a
// link inside a leftover directory, is refused and its target untouched.
TEST_F(RemoveLeftoversTest, NeverTouchesTheTargetOfASymlink) {
  const std::string target = tmp_.Sub("outside");
  MakeEnvironment(target);
  fs::create_symlink(target, Sub("partitions/9"));
  std::vector<std::string> removed;
  Status s = RemoveLeftovers(data_, two_, &removed);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("partitions/9"));
  EXPECT_TRUE(fs::exists(target + "/data.mdb"));
  EXPECT_TRUE(fs::is_symlink(Sub("partitions/9")));
  EXPECT_TRUE(fs::exists(Sub("partitions/3/data.mdb")));
  ASSERT_TRUE(fs::remove(Sub("partitions/9")));

  // data.mdb of a leftover is a link to a file outside.
  ASSERT_TRUE(fs::remove(Sub("partitions/4/data.mdb")));
  fs::create_symlink(target + "/data.mdb", Sub("partitions/4/data.mdb"));
  s = RemoveLeftovers(data_, two_, &removed);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(fs::exists(target + "/data.mdb"));
  EXPECT_TRUE(fs::is_symlink(Sub("partitions/4/data.mdb")));
  ASSERT_TRUE(fs::remove(Sub("partitions/4/data.mdb")));

  // partitions/ itself a link: refused, nothing under its target touched.
  const std::string other = tmp_.Sub("other-partitions");
  fs::rename(Sub("partitions"), other);
  fs::create_symlink(other, Sub("partitions"));
  s = RemoveLeftovers(data_, two_, &removed);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(fs::exists(other + "/3/data.mdb"));
  EXPECT_TRUE(removed.empty());

  // A used partition reached through a link is kept: the manifest names it.
  ASSERT_TRUE(fs::remove(Sub("partitions")));
  fs::rename(other, Sub("partitions"));
  fs::rename(Sub("partitions/2"), tmp_.Sub("p2"));
  fs::create_symlink(tmp_.Sub("p2"), Sub("partitions/2"));
  ASSERT_OK(RemoveLeftovers(data_, two_, &removed));
  EXPECT_TRUE(fs::is_symlink(Sub("partitions/2")));
  EXPECT_TRUE(fs::exists(tmp_.Sub("p2/data.mdb")));
  EXPECT_FALSE(fs::exists(Sub("partitions/3")));
}

TEST_F(RemoveLeftoversTest, RefusesAnInvalidManifest) {
  NodeManifest bad = two_;
  bad.partitions.pop_back();  // does not reach the end of the key space
  std::vector<std::string> removed;
  EXPECT_TRUE(absl::IsInvalidArgument(RemoveLeftovers(data_, bad, &removed)));
  EXPECT_TRUE(fs::exists(Sub("partitions/3/data.mdb")));
  EXPECT_TRUE(fs::exists(Sub("data.mdb")));
}

}  // namespace
}  // namespace voxdb::engine
