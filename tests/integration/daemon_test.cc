// Integration tests against the real voxdbd binary on an ephemeral loopback
// port with a temporary data directory.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "engine/chunk_codec.h"
#include "engine/world_frame.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/world.h"

namespace voxdb {
namespace {

using protocol::Client;
using protocol::Opcode;
using testing::Connect;
using testing::DaemonProcess;
using testing::kX;
using testing::kY;
using testing::kZ;
using testing::TempDir;

TEST(DaemonTest, EveryRequestTypeThroughTheClient) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  auto c = Connect(daemon.port());
  ASSERT_OK_AND_ASSIGN(protocol::HelloReply hello, c->Hello(""));
  ASSERT_OK_AND_ASSIGN(engine::WorldFrame frame, engine::WorldFrame::Decode(hello.world_frame));
  EXPECT_EQ(frame, engine::WorldFrame::Earth());
  const std::vector<uint8_t> ping = {1, 2, 3};
  ASSERT_OK_AND_ASSIGN(auto pong, c->Call(Opcode::kPing, ping));
  EXPECT_EQ(pong, ping);

  protocol::SetVoxelsRequest set{{{{kX, kY, kZ}, 7}, {{kX + 1, kY, kZ}, 8}}};
  ASSERT_OK_AND_ASSIGN(uint64_t v1, c->SetVoxels(set));
  ASSERT_OK_AND_ASSIGN(auto got,
                       c->GetVoxels({{{kX, kY, kZ}, {kX + 1, kY, kZ}, {kX + 2, kY, kZ}}}));
  EXPECT_EQ(got, (std::vector<uint8_t>{7, 8, 0}));

  const uint64_t code = engine::ChunkKey::FromCoord({1'000'000, 400'000, 312'500}).code();
  ASSERT_OK_AND_ASSIGN(auto chunks_raw,
                       c->Call(Opcode::kGetChunks, protocol::GetChunksRequest{{code}}.Encode()));
  ASSERT_OK_AND_ASSIGN(auto chunks, protocol::GetChunksReply::Decode(chunks_raw));
  ASSERT_EQ(chunks.results.size(), 1u);
  EXPECT_EQ(chunks.results[0].status, 0);
  EXPECT_EQ(chunks.results[0].version, v1);
  std::vector<uint8_t> dense(engine::kChunkVoxels);
  ASSERT_OK(engine::DecodeChunkToDense(chunks.results[0].bytes, dense.data()));
  EXPECT_EQ(dense[0], 7);

  protocol::BoxRequest box;
  box.box = {{kX, kY + 10, kZ}, {kX + 4, kY + 12, kZ + 1}};
  box.voxels = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_OK(c->Call(Opcode::kWriteBox, box.EncodeWriteBox()));
  ASSERT_OK_AND_ASSIGN(auto read, c->Call(Opcode::kReadBox, box.EncodeReadBox()));
  EXPECT_EQ(read, box.voxels);
  box.material = 9;
  ASSERT_OK(c->Call(Opcode::kFillBox, box.EncodeFillBox()));
  ASSERT_OK_AND_ASSIGN(read, c->Call(Opcode::kReadBox, box.EncodeReadBox()));
  EXPECT_EQ(read, std::vector<uint8_t>(8, 9));

  protocol::PutChunkRequest put{code, v1, engine::EncodeChunk(engine::Chunk(4), 1, 1)};
  auto stale = c->Call(Opcode::kPutChunk, put.Encode());
  EXPECT_TRUE(IsConflict(stale.status())) << stale.status();  // CONFLICT: the fill moved it
  put.expected_version.reset();
  ASSERT_OK_AND_ASSIGN(auto put_reply, c->Call(Opcode::kPutChunk, put.Encode()));
  ASSERT_OK_AND_ASSIGN(uint64_t v_put, protocol::DecodeU64(put_reply));
  EXPECT_GT(v_put, v1);
  ASSERT_OK_AND_ASSIGN(got, c->GetVoxels({{{kX, kY, kZ}}}));
  EXPECT_EQ(got[0], 4);
  ASSERT_OK(c->Call(Opcode::kDeleteChunk, protocol::EncodeU64(code)));
  ASSERT_OK_AND_ASSIGN(got, c->GetVoxels({{{kX, kY, kZ}}}));
  EXPECT_EQ(got[0], 0);
  ASSERT_OK(c->Call(Opcode::kFlush, {}));
  ASSERT_OK_AND_ASSIGN(auto stats, c->Call(Opcode::kStats, {}));
  EXPECT_NE(std::string(stats.begin(), stats.end()).find("flushes "), std::string::npos);
  // Errors come back as statuses, and the connection stays.
  auto oob = c->GetVoxels({{{0, 0, 80'000'000}}});
  EXPECT_TRUE(IsOutOfBounds(oob.status())) << oob.status();
  auto unknown = c->Call(static_cast<Opcode>(200), {});
  EXPECT_TRUE(IsUnsupported(unknown.status())) << unknown.status();
  auto malformed = c->Call(Opcode::kSetVoxels, std::vector<uint8_t>{1, 2});
  EXPECT_TRUE(absl::IsInvalidArgument(malformed.status())) << malformed.status();
  EXPECT_OK(c->Call(Opcode::kPing, {}));
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
}

TEST(DaemonTest, ThousandPipelinedRequestsOnOneConnection) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  auto c = Connect(daemon.port());
  std::vector<uint64_t> ids;
  for (uint64_t i = 0; i < 1000; ++i) {
    protocol::SetVoxelsRequest set{{{{kX + i, kY, kZ}, static_cast<uint8_t>(1 + i % 250)}}};
    ASSERT_OK_AND_ASSIGN(uint64_t id, c->Send(Opcode::kSetVoxels, set.Encode()));
    ids.push_back(id);
  }
  std::set<uint64_t> answered;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_OK_AND_ASSIGN(protocol::Frame f, c->Receive());
    EXPECT_EQ(f.header.status, 0);
    EXPECT_TRUE(f.header.is_reply());
    answered.insert(f.header.request_id);
  }
  EXPECT_EQ(answered, std::set<uint64_t>(ids.begin(), ids.end()));
  protocol::GetVoxelsRequest get;
  for (uint64_t i = 0; i < 1000; ++i) get.at.push_back({kX + i, kY, kZ});
  ASSERT_OK_AND_ASSIGN(auto got, c->GetVoxels(get));
  for (uint64_t i = 0; i < 1000; ++i) EXPECT_EQ(got[i], 1 + i % 250);
}

TEST(DaemonTest, HostileInputClosesOnlyThatConnection) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  auto healthy = Connect(daemon.port());
  ASSERT_OK(healthy->Call(Opcode::kPing, {}));
  {
    auto bad = Connect(daemon.port());  // bad magic
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(send(bad->fd(), junk, sizeof junk - 1, MSG_NOSIGNAL), ssize_t{sizeof junk - 1});
    auto r = bad->Receive();
    if (r.ok()) {
      EXPECT_NE(r->header.status, 0);
    }
    EXPECT_FALSE(bad->Receive().ok());  // closed
  }
  {
    auto big = Connect(daemon.port());  // a length over the maximum
    protocol::FrameHeader h;
    h.opcode = static_cast<uint8_t>(Opcode::kPing);
    h.request_id = 77;
    std::vector<uint8_t> bytes;
    protocol::EncodeFrame(h, {}, &bytes);
    bytes[20] = bytes[21] = bytes[22] = bytes[23] = 0xff;  // payload_length = 4 GiB - 1
    ASSERT_EQ(send(big->fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL), ssize_t(bytes.size()));
    ASSERT_OK_AND_ASSIGN(protocol::Frame f, big->Receive());
    EXPECT_EQ(f.header.request_id, 77u);
    EXPECT_EQ(f.header.status, static_cast<uint16_t>(protocol::WireStatus::kTooLarge));
    EXPECT_FALSE(big->Receive().ok());
  }
  {
    auto garbage = Connect(daemon.port());  // random bytes
    std::mt19937 rng(1);
    std::vector<uint8_t> noise(10'000);
    for (auto& b : noise) b = static_cast<uint8_t>(rng());
    send(garbage->fd(), noise.data(), noise.size(), MSG_NOSIGNAL);
  }
  ASSERT_OK(healthy->Call(Opcode::kPing, {}));
  auto fresh = Connect(daemon.port());
  ASSERT_OK(fresh->Call(Opcode::kPing, {}));
}

TEST(DaemonTest, InvalidOptionsExitTwoNamingTheOption) {
  for (const char* bad :
       {"--durability=maybe", "--cache-bytes=12XB", "--listen=nowhere", "--listen=127.0.0.1:80x",
        "--listen=127.0.0.1:65536", "--metrics-listen=127.0.0.1:9464x"}) {
    const std::string cmd = std::string(VOXDBD_PATH) + " " + bad + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    char buf[512] = {};
    const size_t n = fread(buf, 1, sizeof buf - 1, p);
    const int status = pclose(p);
    EXPECT_EQ(WEXITSTATUS(status), 2) << bad;
    const std::string out(buf, n);
    const std::string option = std::string(bad).substr(2, std::string(bad).find('=') - 2);
    EXPECT_NE(out.find("--" + option), std::string::npos) << out;
  }
}

// conf/voxdb.conf is loadable as shipped, every option in it is one the
// daemon knows with the default it documents, and the command line wins.
TEST(DaemonTest, ShippedConfigFileMatchesTheDaemon) {
  std::ifstream in(VOXDB_CONF_PATH);
  ASSERT_TRUE(in) << VOXDB_CONF_PATH;
  std::string help;
  {
    FILE* p = popen((std::string(VOXDBD_PATH) + " --help").c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) help.append(buf, n);
    pclose(p);
  }
  std::string line;
  int options = 0;
  while (std::getline(in, line)) {
    // "# name = value" lines are the commented defaults.
    const size_t eq = line.find(" = ");
    if (line.rfind("# ", 0) != 0 || eq == std::string::npos || line.find(' ', 2) != eq) continue;
    const std::string name = line.substr(2, eq - 2), value = line.substr(eq + 3);
    ++options;
    EXPECT_NE(help.find("--" + name + " arg (=" + value + ")"), std::string::npos)
        << name << " = " << value << " is not the daemon's default";
  }
  EXPECT_GE(options, 13);
  // And every option of --help is in the file.
  std::ifstream again(VOXDB_CONF_PATH);
  const std::string conf((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  std::istringstream help_lines(help);
  while (std::getline(help_lines, line)) {
    if (line.rfind("  --", 0) != 0) continue;
    const std::string name = line.substr(4, line.find_first_of(" \n", 4) - 4);
    if (name == "help" || name == "version" || name == "config") continue;
    EXPECT_NE(conf.find(" " + name + " = "), std::string::npos) << name << " is not in voxdb.conf";
  }
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--config", VOXDB_CONF_PATH});
  auto c = Connect(daemon.port());
  EXPECT_OK(c->Call(Opcode::kPing, {}));
}

// Type=notify: READY=1 once it listens, STOPPING=1 on SIGTERM.
TEST(DaemonTest, NotifiesSystemdReadiness) {
  TempDir dir;
  const std::string path = dir.Sub("notify");
  const int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  setenv("NOTIFY_SOCKET", path.c_str(), 1);
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"));
  unsetenv("NOTIFY_SOCKET");
  char buf[256] = {};
  ASSERT_GT(recv(fd, buf, sizeof buf - 1, 0), 0);
  EXPECT_EQ(std::string(buf), "READY=1");
  EXPECT_EQ(daemon.StopWith(SIGTERM), 0);
  std::memset(buf, 0, sizeof buf);
  ASSERT_GT(recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT), 0);
  EXPECT_EQ(std::string(buf), "STOPPING=1");
  close(fd);
}

}  // namespace
}  // namespace voxdb
