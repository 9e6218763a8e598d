// The LOD pyramid as voxdbd serves it: GET_CHUNKS and the queries at a LOD
// level, LOD_REBUILD, LOD_SYNC, STATS' lod_dirty and `voxdb lod rebuild`, against the
// real voxdbd binary. The served levels are compared with a brute-force mode
// downsampling (written here, independently of engine/lod.cc) of the voxels
// READ_BOX returns.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/chunk_codec.h"
#include "engine/morton.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/run_process.h"
#include "tests/testing/stats.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using engine::ChunkKey;
using protocol::Box;
using protocol::Client;
using protocol::Opcode;
using protocol::QueryKind;
using protocol::QueryRequest;
using testing::DaemonProcess;
using testing::kCx;
using testing::kCy;
using testing::kCz;
using testing::kEdge;
using testing::RunProcess;
using testing::Scaled;
using testing::TempDir;
using namespace std::chrono_literals;

// The tests write the 2x2x2 block of chunks from the region's first chunk
// (kCx, kCy, kCz): the level-1 node (kCx, kCy, kCz) / 2.
constexpr size_t kDense = kEdge * kEdge * kEdge;

uint64_t NodeCode(int level, uint64_t cx, uint64_t cy, uint64_t cz) {
  return ChunkKey::FromCoord({static_cast<uint32_t>(cx >> level),
                              static_cast<uint32_t>(cy >> level),
                              static_cast<uint32_t>(cz >> level)})
      .code();
}

// The most common of 8 materials; ties to non-air, then to the smallest id.
uint8_t Mode(const std::array<uint8_t, 8>& v) {
  uint8_t best = v[0];
  int best_count = 0;
  for (uint8_t m : v) {
    int count = 0;
    for (uint8_t x : v) count += x == m;
    const bool better =
        count > best_count || (count == best_count && (best == 0 ? m != 0 : m != 0 && m < best));
    if (better) {
      best = m;
      best_count = count;
    }
  }
  return best;
}

// Downsamples a (2n)^3 box of voxels (x fastest) into n^3.
std::vector<uint8_t> Downsample(const std::vector<uint8_t>& in, size_t n) {
  const size_t m = 2 * n;
  std::vector<uint8_t> out(n * n * n);
  for (size_t z = 0; z < n; ++z) {
    for (size_t y = 0; y < n; ++y) {
      for (size_t x = 0; x < n; ++x) {
        std::array<uint8_t, 8> v;
        for (int i = 0; i < 8; ++i) {
          const size_t cx = 2 * x + (i & 1), cy = 2 * y + (i >> 1 & 1), cz = 2 * z + (i >> 2);
          v[static_cast<size_t>(i)] = in[(cz * m + cy) * m + cx];
        }
        out[(z * n + y) * n + x] = Mode(v);
      }
    }
  }
  return out;
}

class DaemonLodTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& args = {}) {
    daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"), args);
    auto c = Client::Connect("127.0.0.1", daemon_->port());
    ASSERT_OK(c.status());
    client_ = std::move(*c);
    ASSERT_OK(client_->Hello("").status());
  }

  uint64_t Stat(const std::string& name) { return testing::Stat(*client_, name); }

  // FLUSHes and waits for the pyramid (LOD_SYNC); then no LOD node is
  // dirty and the level-1 node of the block has version `version`.
  void WaitBuilt(uint64_t version) {
    ASSERT_OK(client_->Flush());
    ASSERT_OK(client_->LodSync());
    const uint64_t node = NodeCode(1, kCx, kCy, kCz);
    ASSERT_OK_AND_ASSIGN(protocol::GetChunksReply r, client_->GetChunks({&node, 1}, 1));
    EXPECT_EQ(r.results[0].version, version);
    EXPECT_EQ(Stat("lod_dirty"), 0u);
  }

  // The decoded record of LOD node `code` at `level`, and its version.
  std::vector<uint8_t> GetLod(int level, uint64_t code, uint64_t* version = nullptr) {
    auto r = client_->GetChunks({&code, 1}, static_cast<uint8_t>(level));
    EXPECT_OK(r.status());
    if (!r.ok()) return {};
    const protocol::ChunkResult& c = r->results[0];
    EXPECT_EQ(c.status, 0) << std::string(c.bytes.begin(), c.bytes.end());
    if (version != nullptr) *version = c.version;
    std::vector<uint8_t> dense(kDense);
    EXPECT_OK(engine::DecodeChunkToDense(c.bytes, dense.data()));
    return dense;
  }

  // The voxels of the 2x2x2 chunk block: 256^3.
  std::vector<uint8_t> ReadBlock() {
    const Box box{{kCx * kEdge, kCy * kEdge, kCz * kEdge},
                  {(kCx + 2) * kEdge, (kCy + 2) * kEdge, (kCz + 2) * kEdge}};
    auto voxels = client_->ReadBox(box);
    EXPECT_OK(voxels.status());
    return voxels.ok() ? *voxels : std::vector<uint8_t>();
  }

  // Level 1 of the block is its voxels downsampled; level 2's node holds
  // level 1 downsampled in its octant 0 and air elsewhere (nothing else is
  // written in it).
  void ExpectLevelsMatch() {
    const std::vector<uint8_t> level1 = Downsample(ReadBlock(), kEdge);
    EXPECT_TRUE(GetLod(1, NodeCode(1, kCx, kCy, kCz)) == level1) << "level 1 differs";
    std::vector<uint8_t> level2(kDense, 0);
    const std::vector<uint8_t> octant = Downsample(level1, kEdge / 2);
    for (size_t z = 0; z < kEdge / 2; ++z) {
      for (size_t y = 0; y < kEdge / 2; ++y) {
        for (size_t x = 0; x < kEdge / 2; ++x) {
          level2[(z * kEdge + y) * kEdge + x] = octant[(z * kEdge / 2 + y) * kEdge / 2 + x];
        }
      }
    }
    EXPECT_TRUE(GetLod(2, NodeCode(2, kCx, kCy, kCz)) == level2) << "level 2 differs";
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(DaemonLodTest, ServesLevelsThatMatchABruteForceDownsampling) {
  Start();
  // Terrain with ties: stone layers up to a sloped surface, and a noisy
  // band of air and three materials above it, over the 2x2x2 chunk block.
  const uint64_t n = 2 * kEdge;
  std::vector<uint8_t> voxels(n * n * n);
  uint64_t h = 12345;
  for (uint64_t z = 0; z < n; ++z) {
    for (uint64_t y = 0; y < n; ++y) {
      for (uint64_t x = 0; x < n; ++x) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        const uint64_t surface = 100 + x / 4 + y / 8;
        uint8_t m = 0;
        if (z < surface) m = static_cast<uint8_t>(1 + z / 40);
        if (z >= surface && z < surface + 12) m = static_cast<uint8_t>((h >> 33) % 4 * 7);
        voxels[(z * n + y) * n + x] = m;
      }
    }
  }
  const Box block{{kCx * kEdge, kCy * kEdge, kCz * kEdge},
                  {(kCx + 2) * kEdge, (kCy + 2) * kEdge, (kCz + 2) * kEdge}};
  ASSERT_OK_AND_ASSIGN(uint64_t v1, client_->WriteBox(block, voxels));
  // A fill over part of it, and a thin wall one voxel thick.
  ASSERT_OK_AND_ASSIGN(uint64_t v2,
                       client_->FillBox({{kCx * kEdge + 10, kCy * kEdge + 10, kCz * kEdge + 20},
                                         {kCx * kEdge + 90, kCy * kEdge + 170, kCz * kEdge + 60}},
                                        42));
  ASSERT_GT(v2, v1);
  WaitBuilt(v2);
  ExpectLevelsMatch();

  // An edit moves the levels on: a new version and the new voxels.
  std::vector<protocol::SetVoxelsRequest::Edit> edits;
  for (uint64_t i = 0; i < 8; ++i) {
    edits.push_back({{kCx * kEdge + 200 + (i & 1), kCy * kEdge + 30 + (i >> 1 & 1),
                      kCz * kEdge + 250 + (i >> 2)},
                     200});
  }
  ASSERT_OK_AND_ASSIGN(uint64_t v3, client_->SetVoxels({edits}));
  WaitBuilt(v3);
  uint64_t version = 0;
  const std::vector<uint8_t> level1 = GetLod(1, NodeCode(1, kCx, kCy, kCz), &version);
  EXPECT_EQ(version, v3);
  EXPECT_EQ(level1[(125 * kEdge + 15) * kEdge + 100], 200);
  ExpectLevelsMatch();

  // A deleted chunk reads as air (or its fills) at level 0; the levels follow.
  ASSERT_OK_AND_ASSIGN(uint64_t v4,
                       client_->DeleteChunk(ChunkKey::FromCoord({kCx + 1, kCy, kCz}).code()));
  WaitBuilt(v4);
  ExpectLevelsMatch();

  // The queries at a level: the distinct level-l ancestors of the level-0
  // answer, with the versions GET_CHUNKS gives them.
  for (int level : {1, 2, 3}) {
    QueryRequest q;
    q.kind = QueryKind::kBox;
    q.box = {{(kCx - 4) * kEdge, (kCy - 4) * kEdge, (kCz - 4) * kEdge},
             {(kCx + 4) * kEdge, (kCy + 4) * kEdge, (kCz + 4) * kEdge}};
    ASSERT_OK_AND_ASSIGN(protocol::QueryReply chunks, client_->Query(q));
    ASSERT_FALSE(chunks.chunks.empty());
    std::set<uint64_t> expected;
    for (const auto& c : chunks.chunks) expected.insert(c.code >> (3 * level));
    q.level = static_cast<uint8_t>(level);
    q.limit = 1;  // one node a page: the cursor too
    std::vector<uint64_t> got;
    for (int page = 0; page < 10; ++page) {
      ASSERT_OK_AND_ASSIGN(protocol::QueryReply r, client_->Query(q));
      EXPECT_EQ(r.fills.size(), page == 0 ? 1u : 0u);
      for (const auto& c : r.chunks) {
        got.push_back(c.code);
        uint64_t v = 0;
        GetLod(level, c.code, &v);
        EXPECT_EQ(c.version, v);
        EXPECT_EQ(c.version, v4) << "the newest write under every ancestor is the delete";
      }
      if (r.next_cursor.empty()) break;
      q.cursor = r.next_cursor;
    }
    EXPECT_EQ(got, std::vector<uint64_t>(expected.begin(), expected.end())) << "level " << level;
  }

  // LOD_REBUILD rebuilds the same pyramid.
  const std::vector<uint8_t> before = GetLod(2, NodeCode(2, kCx, kCy, kCz));
  ASSERT_OK(client_->LodRebuild());
  EXPECT_TRUE(GetLod(2, NodeCode(2, kCx, kCy, kCz)) == before);
  ExpectLevelsMatch();

  // A node nothing was ever written under reads as air, version 0.
  uint64_t empty_version = 1;
  const std::vector<uint8_t> empty = GetLod(1, NodeCode(1, kCx + 64, kCy, kCz), &empty_version);
  EXPECT_EQ(empty_version, 0u);
  EXPECT_EQ(empty, std::vector<uint8_t>(kDense, 0));

  // The CLI: voxdb lod rebuild, and info's lod section.
  const std::string address = "127.0.0.1:" + std::to_string(daemon_->port());
  auto rebuilt = RunProcess({VOXDB_CLI_PATH, "--address", address, "lod", "rebuild"});
  EXPECT_EQ(rebuilt.exit_code, 0) << rebuilt;
  EXPECT_NE(rebuilt.out.find("ok LOD pyramid rebuilt"), std::string::npos) << rebuilt;
  auto synced = RunProcess({VOXDB_CLI_PATH, "--address", address, "--json", "lod", "sync"});
  EXPECT_EQ(synced.exit_code, 0) << synced;
  EXPECT_NE(synced.out.find("\"action\":\"sync\",\"ok\":true"), std::string::npos) << synced;
  auto wrong = RunProcess({VOXDB_CLI_PATH, "--address", address, "lod", "resync"});
  EXPECT_EQ(wrong.exit_code, 2) << wrong;
  auto info = RunProcess({VOXDB_CLI_PATH, "--address", address, "info"});
  EXPECT_EQ(info.exit_code, 0) << info;
  EXPECT_NE(info.out.find("# lod\nlod_levels 4\nlod_dirty "), std::string::npos) << info;
  auto got = RunProcess({VOXDB_CLI_PATH, "--address", address, "--json", "get-chunk", "--lod", "1",
                         std::to_string(NodeCode(1, kCx, kCy, kCz)), dir_.Sub("node.rec")});
  EXPECT_EQ(got.exit_code, 0) << got;
  EXPECT_NE(got.out.find("\"lod\":1"), std::string::npos) << got;
}

TEST_F(DaemonLodTest, RefusesLevelsItDoesNotKeep) {
  Start({"--lod-levels", "2"});
  const uint64_t node = NodeCode(3, kCx, kCy, kCz);
  EXPECT_TRUE(absl::IsInvalidArgument(client_->GetChunks({&node, 1}, 3).status()));
  QueryRequest q;
  q.kind = QueryKind::kRadius;
  q.lat = 45;
  q.lon = 7;
  q.radius = 1000;
  q.level = 3;
  EXPECT_TRUE(absl::IsInvalidArgument(client_->Query(q).status()));
  // A node code beyond the level's range.
  const uint64_t too_far = ChunkKey::kMaxCode >> 3;
  EXPECT_TRUE(absl::IsInvalidArgument(client_->GetChunks({&too_far, 1}, 2).status()));
  // Level 0 has one encoding: no level byte.
  std::vector<uint8_t> payload = protocol::GetChunksRequest{{node}}.Encode();
  payload.push_back(0);
  EXPECT_TRUE(absl::IsInvalidArgument(client_->Call(Opcode::kGetChunks, payload).status()));
  // The connection stays.
  EXPECT_OK(client_->Ping());
}

TEST_F(DaemonLodTest, WithoutAPyramidLodRequestsAreUnsupported) {
  Start({"--lod-levels", "0"});
  const uint64_t node = NodeCode(1, kCx, kCy, kCz);
  EXPECT_TRUE(IsUnsupported(client_->GetChunks({&node, 1}, 1).status()));
  EXPECT_TRUE(IsUnsupported(client_->LodRebuild()));
  EXPECT_EQ(Stat("lod_levels"), 0u);
  // Level 0 is served as ever.
  const uint64_t chunk = ChunkKey::FromCoord({kCx, kCy, kCz}).code();
  ASSERT_OK_AND_ASSIGN(protocol::GetChunksReply r, client_->GetChunks({&chunk, 1}));
  EXPECT_EQ(r.results[0].status, 0);
}

TEST_F(DaemonLodTest, RejectsABadLevelCount) {
  auto r = RunProcess({VOXDBD_PATH, "--data", dir_.Sub("bad"), "--lod-levels", "17"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("lod-levels"), std::string::npos) << r;
}

// One FILL_BOX over 32768 x 32768 x 16384 voxels (aligned to the level-4
// nodes) must not mark the ~10^6 LOD nodes it covers dirty (rebuilding them
// chunk by chunk would take hours): the nodes it covers wholly read as the
// fill, and only its boundary is marked.
TEST_F(DaemonLodTest, AHugeFillLeavesNothingDirtyAndReadsAsTheFill) {
  Start();
  const uint64_t x0 = kCx * kEdge, y0 = kCy * kEdge, z0 = 19532 * 2048;  // multiples of 2048
  ASSERT_OK_AND_ASSIGN(
      uint64_t version,
      client_->FillBox(Box{{x0, y0, z0}, {x0 + 32768, y0 + 32768, z0 + 16384}}, 6));
  ASSERT_OK(client_->Flush());
  ASSERT_OK(client_->LodSync());
  EXPECT_EQ(Stat("lod_dirty"), 0u);
  for (int level = 1; level <= 4; ++level) {
    for (uint64_t d : {uint64_t{0}, uint64_t{200}}) {  // chunks from the fill's corner
      uint64_t v = 0;
      const uint64_t node = NodeCode(level, x0 / kEdge + d, y0 / kEdge + d, z0 / kEdge + d / 2);
      EXPECT_TRUE(GetLod(level, node, &v) == std::vector<uint8_t>(kDense, 6)) << "level " << level;
      EXPECT_EQ(v, version) << "level " << level;
    }
  }
  // Next to it: air, never built.
  uint64_t v = 1;
  EXPECT_TRUE(GetLod(1, NodeCode(1, x0 / kEdge - 2, y0 / kEdge, z0 / kEdge), &v) ==
              std::vector<uint8_t>(kDense, 0));
  EXPECT_EQ(v, 0u);
}

// LOD_REBUILD no longer holds the shared worker: another connection's FLUSH
// and SNAPSHOT_OPEN are answered while it runs, and SIGTERM stops voxdbd
// (exit 0) within shutdown-timeout, answering the rebuild BUSY (the wire's
// UNAVAILABLE) with what is left still marked.
TEST_F(DaemonLodTest, ARebuildYieldsToOthersAndToSigterm) {
  Start({"--shutdown-timeout", "5s"});
  // A fill whose boundary holds about 17,000 level-1 nodes (off the node
  // grid by 64 voxels): minutes of building.
  const uint64_t x0 = kCx * kEdge + 64, y0 = kCy * kEdge + 64, z0 = kCz * kEdge + 64;
  ASSERT_OK(client_->FillBox(Box{{x0, y0, z0}, {x0 + 16384, y0 + 16384, z0 + 8192}}, 6).status());
  std::vector<uint8_t> dense(kDense, 3);
  const auto record = engine::EncodeChunk(engine::Chunk::FromDense(dense), 0, 0);
  ASSERT_OK(client_
                ->PutChunk(protocol::PutChunkRequest{
                    ChunkKey::FromCoord({kCx + 300, kCy, kCz}).code(), std::nullopt, record})
                .status());
  ASSERT_OK(client_->Flush());
  ASSERT_OK_AND_ASSIGN(uint64_t rebuild, client_->Send(Opcode::kLodRebuild, {}));
  auto other = Client::Connect("127.0.0.1", daemon_->port());
  ASSERT_OK(other.status());
  ASSERT_OK((*other)->Hello("").status());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the rebuild has begun
  for (int round = 0; round < 3; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_OK((*other)->Flush());
    ASSERT_OK_AND_ASSIGN(protocol::SnapshotOpenReply snap, (*other)->SnapshotOpen());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(seconds, Scaled(5s).count() / 1e3)
        << "FLUSH + SNAPSHOT_OPEN during LOD_REBUILD, round " << round;
    ASSERT_OK((*other)->SnapshotClose(snap.snapshot));
  }
  EXPECT_GT(Stat("lod_dirty"), 0u) << "the rebuild ended too soon to test anything";
  // A LOD_SYNC waits for the rebuild's marks too; the stop answers it.
  ASSERT_OK_AND_ASSIGN(uint64_t sync, (*other)->Send(Opcode::kLodSync, {}));
  // Received before the stop, else the gate answers it UNAVAILABLE without
  // running it: in flight beside the rebuild.
  ASSERT_TRUE(testing::WaitUntil([&] { return Stat("in_flight") >= 2; }, 10s));
  const auto t0 = std::chrono::steady_clock::now();
  const int status = daemon_->StopWith(SIGTERM);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_LT(seconds, Scaled(20s).count() / 1e3) << "SIGTERM during LOD_REBUILD";
  auto reply = client_->Receive();
  ASSERT_OK(reply.status());
  EXPECT_EQ(reply->header.request_id, rebuild);
  EXPECT_EQ(reply->header.status, static_cast<uint16_t>(protocol::WireStatus::kUnavailable))
      << std::string(reply->payload.begin(), reply->payload.end());
  auto sync_reply = (*other)->Receive();
  ASSERT_OK(sync_reply.status());
  EXPECT_EQ(sync_reply->header.request_id, sync);
  EXPECT_EQ(sync_reply->header.status, static_cast<uint16_t>(protocol::WireStatus::kUnavailable))
      << std::string(sync_reply->payload.begin(), sync_reply->payload.end());
  daemon_.reset();
}

// LOD_SYNC answers once what was marked before it is built: right after
// it, every level over a flushed write reads that write's version and no
// node is dirty; with nothing marked it answers at once.
TEST_F(DaemonLodTest, LodSyncAnswersOnceTheMarkedNodesAreBuilt) {
  Start();
  ASSERT_OK(client_->LodSync());  // nothing marked
  for (int round = 0; round < 3; ++round) {
    std::vector<protocol::SetVoxelsRequest::Edit> edits;
    for (uint64_t i = 0; i < 16; ++i) {
      edits.push_back({{kCx * kEdge + 9 * i, kCy * kEdge + 17 * i, kCz * kEdge + 13 * i},
                       static_cast<uint8_t>(10 + round)});
    }
    ASSERT_OK_AND_ASSIGN(uint64_t version, client_->SetVoxels({edits}));
    ASSERT_OK(client_->Flush());
    ASSERT_OK(client_->LodSync());
    EXPECT_EQ(Stat("lod_dirty"), 0u) << "round " << round;
    for (int level = 1; level <= 4; ++level) {
      uint64_t v = 0;
      GetLod(level, NodeCode(level, kCx, kCy, kCz), &v);
      EXPECT_EQ(v, version) << "level " << level << ", round " << round;
    }
    ExpectLevelsMatch();
  }
  // A fill made before it: the nodes on its boundary are built too.
  ASSERT_OK_AND_ASSIGN(uint64_t fill,
                       client_->FillBox({{kCx * kEdge + 3, kCy * kEdge + 5, kCz * kEdge + 7},
                                         {kCx * kEdge + 99, kCy * kEdge + 88, kCz * kEdge + 77}},
                                        4));
  ASSERT_OK(client_->Flush());
  ASSERT_OK(client_->LodSync());
  uint64_t v = 0;
  GetLod(1, NodeCode(1, kCx, kCy, kCz), &v);
  EXPECT_EQ(v, fill);
  ExpectLevelsMatch();
}

// Under a steady stream of writes and flushes from another connection,
// LOD_SYNC and LOD_REBUILD still answer (they wait only for what was marked
// before them), and this connection's flushed write has reached every level
// by then.
TEST_F(DaemonLodTest, LodSyncAnswersWhileWritesKeepComing) {
  Start();
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0};
  std::thread writer([&] {
    auto c = Client::Connect("127.0.0.1", daemon_->port());
    ASSERT_OK(c.status());
    ASSERT_OK((*c)->Hello("").status());
    for (uint64_t i = 0; !stop.load(); ++i) {
      // Two chunks 16 chunks away, one voxel a write: their level-1 node
      // is marked again and again. Paced, so that the builder keeps up
      // (it builds the lowest level first: see PROTOCOL.md, LOD_SYNC).
      const uint64_t x = (kCx + 16 + i % 2) * kEdge + i % 100, y = kCy * kEdge + 3;
      ASSERT_OK((*c)->SetVoxels({{{{x, y, kCz * kEdge + 1}, static_cast<uint8_t>(1 + i % 200)}}})
                    .status());
      if (i % 8 == 0) ASSERT_OK((*c)->Flush());
      ++writes;
      std::this_thread::sleep_for(testing::Scaled(20ms));
    }
  });
  ASSERT_TRUE(testing::WaitUntil([&] { return writes.load() >= 50; }, 30s));
  uint64_t version = 0;
  for (int round = 0; round < 3; ++round) {
    ASSERT_OK_AND_ASSIGN(
        version,
        client_->SetVoxels(
            {{{{kCx * kEdge + 1, kCy * kEdge + 2, kCz * kEdge + 3 + static_cast<uint64_t>(round)},
               static_cast<uint8_t>(50 + round)}}}));
    ASSERT_OK(client_->Flush());
    ASSERT_OK(client_->LodSync());
    for (int level = 1; level <= 4; ++level) {
      uint64_t v = 0;
      GetLod(level, NodeCode(level, kCx, kCy, kCz), &v);
      // The other writer's chunks lie under other nodes at every level.
      EXPECT_EQ(v, version) << "level " << level << ", round " << round;
    }
  }
  // LOD_REBUILD waits the same way: for the nodes it marked (and their
  // parents), not for a moment with nothing marked.
  ASSERT_OK(client_->LodRebuild());
  for (int level = 1; level <= 4; ++level) {
    uint64_t v = 0;
    GetLod(level, NodeCode(level, kCx, kCy, kCz), &v);
    EXPECT_EQ(v, version) << "level " << level << " after LOD_REBUILD";
  }
  // The other connection's writes were never held up: they go on.
  const int after = writes.load();
  EXPECT_TRUE(testing::WaitUntil([&] { return writes.load() >= after + 20; }, 30s));
  stop = true;
  writer.join();
}

// LOD_SYNC takes the write role and an empty payload; without a pyramid it
// is UNSUPPORTED.
TEST_F(DaemonLodTest, LodSyncNeedsTheWriteRoleAndAPyramid) {
  const std::string read = "read-token-read-token-read", write = "write-token-write-token-w";
  daemon_ = std::make_unique<DaemonProcess>(
      VOXDBD_PATH, dir_.Sub("data"),
      std::vector<std::string>{"--token", "read:" + read, "--token", "write:" + write});
  ASSERT_OK_AND_ASSIGN(auto reader, Client::Connect("127.0.0.1", daemon_->port()));
  ASSERT_OK(reader->Hello(read).status());
  EXPECT_TRUE(absl::IsPermissionDenied(reader->LodSync()));
  ASSERT_OK_AND_ASSIGN(auto writer, Client::Connect("127.0.0.1", daemon_->port()));
  ASSERT_OK(writer->Hello(write).status());
  EXPECT_OK(writer->LodSync());
  const std::vector<uint8_t> extra{1};
  EXPECT_TRUE(absl::IsInvalidArgument(writer->Call(Opcode::kLodSync, extra).status()));
  EXPECT_OK(writer->Ping());  // the connection stays
  reader.reset();
  writer.reset();
  daemon_.reset();

  Start({"--lod-levels", "0"});
  EXPECT_TRUE(IsUnsupported(client_->LodSync()));
}

}  // namespace
}  // namespace voxdb
