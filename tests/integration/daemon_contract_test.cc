// What a reply means, on the wire (protocol/PROTOCOL.md, "Consistency and
// durability"), against the real voxdbd binary: a write answered with an
// error is never read, published or made durable; versions never repeat
// across a crash; a chunk's voxels and version are read together; requests
// whose numbers would take unbounded memory or time are refused with
// TOO_LARGE while everyone else is served; the planet-wide fill works end
// to end.
//
// A full disk is made real with the daemon's file size limit (prlimit on
// its pid, RLIMIT_FSIZE; voxdbd ignores SIGXFSZ): every commit then fails
// writing its pages, as with ENOSPC, and raising the limit gives the space
// back.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "engine/chunk_codec.h"
#include "engine/database.h"
#include "engine/morton.h"
#include "engine/world_frame.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
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
using protocol::WireStatus;
using testing::DaemonProcess;
using testing::kCx;
using testing::kCy;
using testing::kCz;
using testing::kEdge;
using testing::TempDir;

Box ChunkBox(uint64_t dx) {
  return {{(kCx + dx) * kEdge, kCy * kEdge, kCz * kEdge},
          {(kCx + dx + 1) * kEdge, (kCy + 1) * kEdge, (kCz + 1) * kEdge}};
}

class DaemonContractTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& args = {}) {
    daemon_ = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir_.Sub("data"), args);
  }
  std::unique_ptr<Client> Connect() {
    return testing::ConnectWithHello(daemon_->port(), "", std::chrono::seconds(60));
  }
  // The daemon's writes past `bytes` of any file fail (EFBIG).
  void LimitFileSize(rlim_t bytes) {
    rlimit r{bytes, RLIM_INFINITY};
    ASSERT_EQ(prlimit(daemon_->pid(), RLIMIT_FSIZE, &r, nullptr), 0);
  }
  static absl::Status Code(const absl::Status& s, WireStatus want) {
    const std::optional<WireStatus> got = protocol::ServerStatusOf(s);
    if (got != want) {
      return absl::InternalError(
          absl::StrCat("want ", protocol::WireStatusName(want), ", got ", s.ToString()));
    }
    return absl::OkStatus();
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

std::vector<uint8_t> Noise(uint8_t base, uint64_t seed) {
  std::vector<uint8_t> v(kEdge * kEdge * kEdge);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint8_t& b : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<uint8_t>(base + (x & 1));
  }
  return v;
}

// A WRITE_BOX answered STORAGE_FULL / INTERNAL (the disk is full) is not
// read back, not pushed to a subscriber, not made durable by a later FLUSH
// nor found after a restart; when the disk has room again, writes work
// without a restart.
TEST_F(DaemonContractTest, AWriteAnsweredWithAnErrorIsNeverSeen) {
  Start();
  auto writer = Connect(), reader = Connect(), subscriber = Connect();
  ASSERT_TRUE(writer && reader && subscriber);
  ASSERT_OK(writer->SetVoxels({{{ChunkBox(0).lo, 3}}}).status());
  protocol::SubscribeRequest sub;
  sub.region.kind = protocol::QueryKind::kBox;
  sub.region.box = ChunkBox(0);
  ASSERT_OK_AND_ASSIGN(auto subscribed, subscriber->Subscribe(sub));
  // The subscription's start and the first write's event.
  (void)subscribed;
  ASSERT_OK(writer->Flush());

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, seen{0};
  std::thread poll([&] {
    while (!stop.load()) {
      auto got = reader->ReadBox(
          {ChunkBox(0).lo, {ChunkBox(0).lo.x + 128, ChunkBox(0).lo.y + 1, ChunkBox(0).lo.z + 1}});
      if (got.ok()) {
        for (uint8_t v : *got) seen += v >= 200;
      }
      ++reads;
    }
  });
  LimitFileSize(8192);
  auto failed = writer->WriteBox(ChunkBox(0), Noise(200, 1));
  stop = true;
  poll.join();
  ASSERT_FALSE(failed.ok());
  const std::optional<WireStatus> error = protocol::ServerStatusOf(failed.status());
  EXPECT_TRUE(error == WireStatus::kStorageFull || error == WireStatus::kInternal)
      << failed.status();
  EXPECT_EQ(seen.load(), 0u) << "of " << reads.load() << " READ_BOXes";
  ASSERT_OK_AND_ASSIGN(
      auto now,
      reader->ReadBox(
          {ChunkBox(0).lo, {ChunkBox(0).lo.x + 2, ChunkBox(0).lo.y + 1, ChunkBox(0).lo.z + 1}}));
  EXPECT_EQ(now, (std::vector<uint8_t>{3, 0}));
  // Room again: the same write succeeds, without a restart.
  LimitFileSize(RLIM_INFINITY);
  ASSERT_OK_AND_ASSIGN(uint64_t good, writer->WriteBox(ChunkBox(0), Noise(100, 2)));
  ASSERT_OK(writer->Flush());
  // The subscriber was told of the first write and the good one, never of
  // the failed one.
  std::vector<uint64_t> seqs;
  const auto deadline = testing::DeadlineIn(std::chrono::seconds(20));
  while (std::chrono::steady_clock::now() < deadline && (seqs.empty() || seqs.back() < good)) {
    auto frame = subscriber->ReceivePush(std::chrono::milliseconds(200));
    if (absl::IsDeadlineExceeded(frame.status())) continue;
    ASSERT_OK(frame.status());
    ASSERT_OK_AND_ASSIGN(auto push, protocol::EventsPush::Decode(frame->payload));
    for (const auto& e : push.events) {
      if (seqs.empty() || seqs.back() != e.seq) seqs.push_back(e.seq);
    }
  }
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(seqs.back(), good);
  EXPECT_EQ(seqs.size(), 1u) << "an event for a write that failed";
  // And after a restart, the good write is there.
  EXPECT_EQ(daemon_->StopWith(SIGTERM), 0);
  Start();
  auto again = Connect();
  ASSERT_OK_AND_ASSIGN(auto back, again->ReadBox(ChunkBox(0)));
  EXPECT_EQ(back, Noise(100, 2));
}

// In async mode a kill -9 may lose acknowledged writes, but the versions
// they were given are never given to another write.
TEST_F(DaemonContractTest, AsyncVersionsNeverRepeatAfterKill9) {
  Start({"--durability", "async", "--commit-interval", "60s"});
  uint64_t newest = 0;
  {
    auto c = Connect();
    for (uint8_t m = 1; m < 20; ++m) {
      ASSERT_OK_AND_ASSIGN(newest, c->SetVoxels({{{ChunkBox(0).lo, m}}}));
    }
  }
  daemon_->StopWith(SIGKILL);
  Start({"--durability", "async", "--commit-interval", "60s"});
  auto c = Connect();
  ASSERT_OK_AND_ASSIGN(uint64_t next, c->SetVoxels({{{ChunkBox(1).lo, 5}}}));
  EXPECT_GT(next, newest) << "a version voxdbd acknowledged before the kill was issued again";
}

// GET_CHUNKS of a chunk that FILL_BOX rewrites over and over: the record's
// voxels are always those of the version it carries.
TEST_F(DaemonContractTest, GetChunksIsNeverTorn) {
  Start();
  auto writer = Connect(), reader = Connect();
  ASSERT_OK(writer->SetVoxels({{{ChunkBox(0).lo, 1}}}).status());
  std::mutex mu;
  std::map<uint64_t, uint8_t> written;
  std::vector<std::pair<uint64_t, uint8_t>> seen;
  std::atomic<bool> stop{false};
  const uint64_t code = ChunkKey::FromCoord({kCx, kCy, kCz}).code();
  std::thread poll([&] {
    std::vector<uint8_t> dense(kEdge * kEdge * kEdge);
    const std::vector<uint64_t> codes{code};
    while (!stop.load()) {
      auto got = reader->GetChunks(codes);
      if (!got.ok() || got->results.empty() || got->results[0].status != 0) continue;
      if (!engine::DecodeChunkToDense(got->results[0].bytes, dense.data()).ok()) continue;
      seen.push_back({got->results[0].version, dense[0]});
    }
  });
  for (int k = 0; k < 300; ++k) {
    const uint8_t m = static_cast<uint8_t>(2 + k % 250);
    ASSERT_OK_AND_ASSIGN(uint64_t v, writer->FillBox(ChunkBox(0), m));
    std::lock_guard<std::mutex> l(mu);
    written[v] = m;
  }
  stop = true;
  poll.join();
  size_t checked = 0, torn = 0;
  for (const auto& [version, material] : seen) {
    auto it = written.find(version);
    if (it == written.end()) continue;
    ++checked;
    torn += it->second != material;
  }
  EXPECT_GT(checked, 0u);
  EXPECT_EQ(torn, 0u) << "of " << checked << " GET_CHUNKS";
}

// Boxes whose volume wraps in 64 bits, thin columns across half a million
// chunks, a SET_VOXELS touching 65,536 chunks, a 1 x 1 x 2^23 WRITE_BOX:
// each is refused with TOO_LARGE at once, voxdbd's memory does not move,
// and another client's PING is answered meanwhile.
TEST_F(DaemonContractTest, RequestsOverTheLimitsAreRefusedAtOnce) {
  Start();
  auto c = Connect(), other = Connect();
  const Box wraps{{0, 0, 0}, {uint64_t{1} << 27, uint64_t{1} << 26, uint64_t{1} << 11}};
  EXPECT_OK(Code(c->ReadBox(wraps).status(), WireStatus::kTooLarge));
  EXPECT_OK(Code(c->WriteBox(wraps, {}).status(), WireStatus::kTooLarge));
  const Box column{{kCx * kEdge, kCy * kEdge, 0}, {kCx * kEdge + 1, kCy * kEdge + 1, 1u << 26}};
  EXPECT_OK(Code(c->ReadBox(column).status(), WireStatus::kTooLarge));
  const Box tall{{kCx * kEdge, kCy * kEdge, 0}, {kCx * kEdge + 1, kCy * kEdge + 1, 1u << 23}};
  EXPECT_OK(
      Code(c->WriteBox(tall, std::vector<uint8_t>(1u << 23, 4)).status(), WireStatus::kTooLarge));
  protocol::SetVoxelsRequest spread;
  for (uint64_t i = 0; i < 65'536; ++i) {
    spread.edits.push_back({{(kCx + i % 256) * kEdge, (kCy + i / 256) * kEdge, kCz * kEdge}, 5});
  }
  auto s = c->SetVoxels(spread);
  // Either over the batch limit or over the memory one: never applied.
  ASSERT_FALSE(s.ok());
  const std::optional<WireStatus> e = protocol::ServerStatusOf(s.status());
  EXPECT_TRUE(e == WireStatus::kTooLarge || e == WireStatus::kInvalid) << s.status();
  EXPECT_OK(other->Ping());
  EXPECT_EQ(testing::Stat(*other, "dirty_bytes"), 0u);
  EXPECT_EQ(daemon_->StopWith(SIGTERM), 0);
}

// The fills example of docs/DESIGN.md (section 6), "everything deeper than
// 10 km is rock, planet-wide", end to end: one FILL_BOX of ~10^23 voxels, reads at both
// ends of the world, a box query and a subscription over all of it, and a
// restart.
TEST_F(DaemonContractTest, ThePlanetWideFillEndToEnd) {
  Start();
  auto c = Connect(), watcher = Connect();
  ASSERT_OK_AND_ASSIGN(auto hello, c->Hello(""));
  ASSERT_OK_AND_ASSIGN(auto world, engine::WorldFrame::Decode(hello.world_frame));
  const uint64_t X = world.extent_x(), Y = world.extent_y();
  const uint64_t deep = world.sea_level_z() - 40'000;  // 10 km at 0.25 m
  const Box rock{{0, 0, 0}, {X, Y, deep}};
  protocol::SubscribeRequest sub;
  sub.region.kind = protocol::QueryKind::kBox;
  sub.region.box = {{0, 0, 0}, {X, Y, world.extent_z()}};
  ASSERT_OK(watcher->Subscribe(sub).status());
  ASSERT_OK_AND_ASSIGN(uint64_t version, c->FillBox(rock, 7));
  EXPECT_GT(version, 0u);
  auto check = [&](Client& client) {
    protocol::GetVoxelsRequest get;
    get.at = {{0, 0, 0}, {X - 1, Y - 1, deep - 1}, {X / 2, Y / 2, deep}, {X - 1, 0, deep - 1}};
    ASSERT_OK_AND_ASSIGN(auto v, client.GetVoxels(get));
    EXPECT_EQ(v, (std::vector<uint8_t>{7, 7, 0, 7}));
    ASSERT_OK_AND_ASSIGN(auto corner, client.ReadBox({{X - 2, Y - 2, deep - 2}, {X, Y, deep}}));
    EXPECT_EQ(corner, std::vector<uint8_t>(8, 7));
  };
  check(*c);
  // The subscriber hears of it.
  bool heard = false;
  const auto deadline = testing::DeadlineIn(std::chrono::seconds(20));
  while (!heard && std::chrono::steady_clock::now() < deadline) {
    auto frame = watcher->ReceivePush(std::chrono::milliseconds(200));
    if (absl::IsDeadlineExceeded(frame.status())) continue;
    ASSERT_OK(frame.status());
    ASSERT_OK_AND_ASSIGN(auto push, protocol::EventsPush::Decode(frame->payload));
    for (const auto& e : push.events) heard |= e.seq == version;
  }
  EXPECT_TRUE(heard);
  // A box query over the whole world answers (the fill stores no chunk).
  protocol::QueryRequest q;
  q.kind = protocol::QueryKind::kBox;
  q.box = sub.region.box;
  EXPECT_OK(c->Query(q).status());
  EXPECT_EQ(daemon_->StopWith(SIGTERM), 0);
  Start();
  auto after = Connect();
  check(*after);
}

}  // namespace
}  // namespace voxdb

namespace voxdb {
namespace {

// One connection cannot queue unbounded work on the shared worker, nor make
// everyone else wait behind it: 200 pipelined BACKUPs (each a copy of the
// database with an fsync) from one connection, and another connection's
// SNAPSHOT_OPEN is answered long before they are done.
TEST_F(DaemonContractTest, OneConnectionsWorkerJobsDoNotQueueAheadOfEveryoneElse) {
  Start();
  auto busy = Connect(), other = Connect();
  ASSERT_OK(busy->SetVoxels({{{ChunkBox(0).lo, 1}}}).status());
  ASSERT_OK(busy->Flush());
  constexpr int kJobs = 200;
  for (int i = 0; i < kJobs; ++i) {
    const std::string dest = dir_.Sub("backup-" + std::to_string(i));
    ASSERT_OK(busy->Send(protocol::Opcode::kBackup,
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(dest.data()),
                                                  dest.size()))
                  .status());
  }
  auto backups_done = [&] {
    int n = 0;
    for (int i = 0; i < kJobs; ++i) {
      n += std::filesystem::exists(dir_.Sub("backup-" + std::to_string(i)));
    }
    return n;
  };
  ASSERT_OK_AND_ASSIGN(auto snapshot, other->Call(protocol::Opcode::kSnapshotOpen, {}));
  EXPECT_EQ(snapshot.size(), 16u);
  // Behind one FIFO queue the snapshot would have come after all 200.
  const int done_then = backups_done();
  EXPECT_LT(done_then, kJobs / 2) << "the other connection waited for the busy one's jobs";
  std::printf("%d of %d backups done when the other connection's snapshot opened\n", done_then,
              kJobs);
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_OK_AND_ASSIGN(auto reply, busy->Receive());
    EXPECT_EQ(reply.header.status, 0);
  }
  const int on_disk_at_the_end = backups_done();
  EXPECT_EQ(on_disk_at_the_end, kJobs);
}

}  // namespace
}  // namespace voxdb

namespace voxdb {
namespace {

// A READ_BOX across many chunks runs on the read pool, not on an I/O
// thread: with one I/O thread, another connection's PING is answered while
// sixteen pipelined 1,024-chunk READ_BOXes are still being read (on the
// I/O thread, it waited for most of them).
TEST_F(DaemonContractTest, LongReadsDoNotHoldAnIoThread) {
  Start({"--threads", "1"});
  auto reader = Connect(), pinger = Connect();
  // A column of 1,024 chunks that read through a fill.
  const Box column{{kCx * kEdge, kCy * kEdge, 0}, {kCx * kEdge + 1, kCy * kEdge + 1, 1024 * kEdge}};
  ASSERT_OK(reader->FillBox({column.lo, {column.hi.x + 300, column.hi.y + 300, column.hi.z}}, 6)
                .status());
  ASSERT_OK_AND_ASSIGN(auto one, reader->ReadBox(column));
  ASSERT_EQ(one, std::vector<uint8_t>(1024 * kEdge, 6));
  protocol::BoxRequest req;
  req.box = column;
  const std::vector<uint8_t> payload = req.EncodeReadBox();
  constexpr int kReads = 16;
  for (int i = 0; i < kReads; ++i)
    ASSERT_OK(reader->Send(protocol::Opcode::kReadBox, payload).status());
  std::atomic<int> read_replies{0};
  std::thread drain([&] {
    for (int i = 0; i < kReads; ++i) {
      auto frame = reader->Receive();
      EXPECT_OK(frame.status());
      if (!frame.ok()) return;
      EXPECT_EQ(frame->header.status, 0);
      EXPECT_EQ(frame->payload.size(), 1024 * kEdge);
      ++read_replies;
    }
  });
  ASSERT_OK(pinger->Ping());
  const int done_at_ping = read_replies.load();
  drain.join();
  EXPECT_LE(done_at_ping, kReads / 2) << "the PING waited for the READ_BOXes";
  std::printf("%d of %d long READ_BOXes answered when the PING was\n", done_at_ping, kReads);
}

// A read stops early when told to (its connection closed).
TEST(DatabaseReadBoxTest, StopsWhenCancelled) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, engine::Database::Open(dir.Sub("data"), engine::DatabaseOptions()));
  const engine::VoxelBox column{{kCx * kEdge, kCy * kEdge, 0},
                                {kCx * kEdge + 1, kCy * kEdge + 1, 64 * kEdge}};
  std::vector<uint8_t> out(column.volume());
  std::atomic<bool> cancel{true};
  const absl::Status s = db->ReadBox(column, out.data(), &cancel);
  EXPECT_TRUE(IsClosing(s)) << s;
  cancel = false;
  EXPECT_OK(db->ReadBox(column, out.data(), &cancel));
}

}  // namespace
}  // namespace voxdb
