// The voxdb CLI (and the client calls it is built on) against the real
// voxdbd binary on an ephemeral loopback port with a temporary data
// directory. The CLI runs as a child process; its stdout, stderr and exit
// code are checked.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <s2/s2cell_id.h>
#include <s2/s2latlng.h>
#include <s2/s2latlng_rect.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/json.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/morton.h"
#include "engine/world_frame.h"
#include "index/s2_index.h"
#include "protocol/client.h"
#include "protocol/version.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/run_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace voxdb {
namespace {

using protocol::Client;
using protocol::Opcode;
using protocol::WireStatus;
using testing::DaemonProcess;
using testing::TempDir;

// A voxel in Europe, at sea level: the origin of chunk (1000000, 400000, 312500).
constexpr uint64_t kX = 128'000'000, kY = 51'200'000, kZ = 40'000'000;
constexpr engine::ChunkCoord kChunkA{1'000'000, 400'000, 312'500};
constexpr engine::ChunkCoord kChunkB{1'000'002, 400'000, 312'500};

using CliResult = testing::ProcessResult;

// Runs the voxdb binary with `args` and the environment of this process
// minus VOXDB_ADDRESS and VOXDB_TOKEN, plus `env`.
CliResult RunCli(const std::vector<std::string>& args,
                 const std::vector<std::pair<std::string, std::string>>& env = {}) {
  std::vector<std::string> argv = {VOXDB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::RunProcess(argv, {"VOXDB_ADDRESS", "VOXDB_TOKEN"}, env);
}

// RunCli for a command that runs until it is stopped (voxdb watch): killed
// (exit code 137) after `limit` rather than hang the test.
CliResult RunCliAtMost(const std::vector<std::string>& args,
                       std::chrono::seconds limit = std::chrono::seconds(20)) {
  std::vector<std::string> argv = {VOXDB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::ChildProcess child(argv, {"VOXDB_ADDRESS", "VOXDB_TOKEN"});
  return child.Wait(limit);
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(n);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng() % 6);  // a few materials, like terrain
  return bytes;
}

// (std::regex is avoided: GCC 12 warns inside it under ASan, and the CI
// builds with -Werror.)
bool AllDigits(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

// `text` is exactly `prefix` + digits + `suffix`; returns the digits.
std::optional<std::string> Between(std::string_view text, std::string_view prefix,
                                   std::string_view suffix) {
  if (!text.starts_with(prefix) || !text.ends_with(suffix) ||
      text.size() < prefix.size() + suffix.size()) {
    return std::nullopt;
  }
  const std::string_view middle =
      text.substr(prefix.size(), text.size() - prefix.size() - suffix.size());
  if (!AllDigits(middle)) return std::nullopt;
  return std::string(middle);
}

// The N of "ok version N\n", or nullopt.
std::optional<uint64_t> OkVersion(const std::string& out) {
  const auto digits = Between(out, "ok version ", "\n");
  if (!digits.has_value()) return std::nullopt;
  return std::stoull(*digits);
}

// The value of the "name value" line of STATS text, or nullopt.
std::optional<uint64_t> StatValue(const std::string& stats, const std::string& name) {
  const size_t at = ("\n" + stats).find("\n" + name + " ");
  if (at == std::string::npos) return std::nullopt;
  const size_t from = at + name.size() + 1;
  const std::string value = stats.substr(from, stats.find('\n', from) - from);
  if (!AllDigits(value)) return std::nullopt;
  return std::stoull(value);
}

// Checks that `text` is one well-formed JSON object (cli/json.h is strict)
// and returns its members as raw JSON text (strings with their quotes).
class JsonReader {
 public:
  static std::optional<std::map<std::string, std::string>> ParseObject(std::string_view text) {
    auto v = cli::Json::Parse(text);
    if (!v.ok() || !v->is_object()) return std::nullopt;
    std::map<std::string, std::string> members;
    for (const auto& [key, value] : v->members()) members[key] = value.raw();
    return members;
  }
};

// The one JSON object the CLI printed (exactly one line), or a test failure.
std::map<std::string, std::string> JsonOf(const CliResult& r) {
  EXPECT_FALSE(r.out.empty()) << r;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "not one line: " << r;
  auto members = JsonReader::ParseObject(r.out);
  EXPECT_TRUE(members.has_value()) << "not a JSON object: " << r;
  return members.value_or(std::map<std::string, std::string>());
}

// A port on which nothing listens: bound, then closed.
uint16_t DeadPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class CliTest : public ::testing::Test {
 protected:
  CliTest() : daemon_(VOXDBD_PATH, dir_.Sub("data")) {}

  std::string Address() const { return "127.0.0.1:" + std::to_string(daemon_.port()); }
  // The CLI against this test's daemon.
  CliResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--address", Address()});
    return RunCli(args);
  }
  std::unique_ptr<Client> Connect() {
    auto c = Client::Connect("127.0.0.1", daemon_.port());
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return nullptr;
    EXPECT_OK((*c)->Hello(""));
    return std::move(*c);
  }
  std::string File(const std::string& name) const { return dir_.Sub(name); }

  TempDir dir_;
  DaemonProcess daemon_;
};

const char* const kAllCommands[] = {"ping",      "info",      "get-voxel",    "set-voxel",
                                    "get-chunk", "put-chunk", "delete-chunk", "read-box",
                                    "write-box", "fill",      "flush",        "stats",
                                    "query",     "watch",     "reindex"};

TEST_F(CliTest, HelpListsEveryCommandAndExitsZero) {
  for (const char* help : {"--help", "-h", "help"}) {
    const CliResult r = RunCli({help});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_TRUE(r.err.empty()) << r;
    for (const char* command : kAllCommands) {
      EXPECT_NE(r.out.find(std::string("\n  ") + command + " "), std::string::npos)
          << command << " is not listed:\n"
          << r;
    }
    for (const char* option : {"--address", "VOXDB_ADDRESS", "--token", "VOXDB_TOKEN", "--json"}) {
      EXPECT_NE(r.out.find(option), std::string::npos) << option;
    }
  }
  CliResult r = RunCli({"set-voxel", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("usage: voxdb [options] set-voxel X Y Z MATERIAL"), std::string::npos) << r;
  r = RunCli({"help", "get-chunk"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("CX,CY,CZ"), std::string::npos) << r;
  for (const char* command : kAllCommands) {
    r = RunCli({command, "-h"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_NE(r.out.find(std::string("usage: voxdb [options] ") + command), std::string::npos) << r;
  }
  r = RunCli({"--version"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.out.starts_with("voxdb 0.") && r.out.ends_with("\n")) << r;
}

TEST_F(CliTest, PingAndInfoDescribeTheServer) {
  CliResult r = Cli({"ping"});
  EXPECT_EQ(r.exit_code, 0) << r;
  // PONG 0.123 ms
  const size_t dot = r.out.find('.');
  ASSERT_NE(dot, std::string::npos) << r;
  EXPECT_TRUE(Between(r.out.substr(0, dot), "PONG ", "").has_value()) << r;
  EXPECT_TRUE(Between(r.out.substr(dot), ".", " ms\n").has_value()) << r;
  EXPECT_EQ(r.out.size() - dot, 8u) << r;  // three decimals
  r = Cli({"info"});
  EXPECT_EQ(r.exit_code, 0) << r;
  for (const char* line :
       {"\nserver_version voxdbd ", "\nprotocol_version 1\n", "\nrole admin\n",
        "\nextent_x 160300080\n", "\nextent_y 80150040\n", "\nextent_z 80000000\n",
        "\nvoxel_size_m 0.25\n", "\nchunk_edge 128\n", "\nsea_level_z 40000000\n",
        "\nmax_payload 67108864\n", "\nmax_box_voxels 268435456\n", "\n# cache\n", "\nflushes ",
        "\ndirty_chunks "}) {
    EXPECT_NE(r.out.find(line), std::string::npos) << line << " missing from\n" << r;
  }
}

TEST_F(CliTest, SetVoxelThenGetVoxelReturnsTheMaterial) {
  const std::string x = std::to_string(kX + 5), y = std::to_string(kY + 6),
                    z = std::to_string(kZ + 7);
  CliResult r = Cli({"set-voxel", x, y, z, "7"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::optional<uint64_t> v1 = OkVersion(r.out);
  ASSERT_TRUE(v1.has_value()) << r;
  // Options after the command work as well.
  r = RunCli({"get-voxel", x, y, z, "--address", Address()});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "7\n");
  r = Cli({"set-voxel", x, y, z, "255"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::optional<uint64_t> v2 = OkVersion(r.out);
  ASSERT_TRUE(v2.has_value()) << r;
  EXPECT_GT(*v2, *v1);
  r = Cli({"get-voxel", x, y, z});
  EXPECT_EQ(r.out, "255\n") << r;
  r = Cli({"get-voxel", x, y, std::to_string(kZ + 8)});  // untouched: air
  EXPECT_EQ(r.out, "0\n") << r;
  // The daemon agrees.
  auto c = Connect();
  ASSERT_OK_AND_ASSIGN(auto got, c->GetVoxels({{{kX + 5, kY + 6, kZ + 7}}}));
  EXPECT_EQ(got[0], 255);
}

TEST_F(CliTest, WriteBoxThenReadBoxRoundTripsXFastest) {
  const std::vector<uint8_t> voxels = RandomBytes(8 * 6 * 5, 1);
  WriteBytes(File("in.raw"), voxels);
  const std::vector<std::string> box = {std::to_string(kX),     std::to_string(kY),
                                        std::to_string(kZ),     std::to_string(kX + 8),
                                        std::to_string(kY + 6), std::to_string(kZ + 5)};
  std::vector<std::string> args = {"write-box"};
  args.insert(args.end(), box.begin(), box.end());
  args.push_back(File("in.raw"));
  CliResult r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(OkVersion(r.out).has_value()) << r;
  args[0] = "read-box";
  args.back() = File("out.raw");
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "ok 240 voxels to " + File("out.raw") + "\n");
  EXPECT_EQ(ReadBytes(File("out.raw")), voxels);
  // The layout is x fastest, then y, then z: voxel (3, 2, 4) of the box.
  r = Cli({"get-voxel", std::to_string(kX + 3), std::to_string(kY + 2), std::to_string(kZ + 4)});
  EXPECT_EQ(r.out, std::to_string(voxels[(4 * 6 + 2) * 8 + 3]) + "\n") << r;
  auto c = Connect();
  ASSERT_OK_AND_ASSIGN(auto read, c->ReadBox({{kX, kY, kZ}, {kX + 8, kY + 6, kZ + 5}}));
  EXPECT_EQ(read, voxels);
}

TEST_F(CliTest, FillThenReadBoxIsAllTheMaterial) {
  // A box across four chunks.
  const std::vector<std::string> box = {std::to_string(kX + 100), std::to_string(kY + 120),
                                        std::to_string(kZ),       std::to_string(kX + 160),
                                        std::to_string(kY + 140), std::to_string(kZ + 3)};
  std::vector<std::string> args = {"fill"};
  args.insert(args.end(), box.begin(), box.end());
  args.push_back("42");
  CliResult r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(OkVersion(r.out).has_value()) << r;
  args[0] = "read-box";
  args.back() = File("fill.raw");
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(ReadBytes(File("fill.raw")), std::vector<uint8_t>(60 * 20 * 3, 42));
  r = Cli({"get-voxel", std::to_string(kX + 99), std::to_string(kY + 120), std::to_string(kZ)});
  EXPECT_EQ(r.out, "0\n") << r;  // just outside
}

// A server with a small frame limit: boxes go in several pipelined requests
// (blocks of whole chunks, whole layers, rows, runs of a row), and come back
// the same.
TEST(CliLargeBoxTest, BoxesLargerThanAFrameTravelInSeveralRequests) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--max-frame-bytes", "4KiB"});
  const std::string address = "127.0.0.1:" + std::to_string(daemon.port());
  struct Case {
    uint64_t dx, dy, dz;
    int min_requests;
  };
  uint32_t seed = 1;
  for (const Case& c : {Case{10, 10, 300, 8}, Case{100, 100, 3, 9}, Case{5000, 2, 1, 3}}) {
    const std::vector<uint8_t> voxels = RandomBytes(c.dx * c.dy * c.dz, seed++);
    WriteBytes(dir.Sub("in.raw"), voxels);
    const std::vector<std::string> box = {std::to_string(kX),        std::to_string(kY),
                                          std::to_string(kZ),        std::to_string(kX + c.dx),
                                          std::to_string(kY + c.dy), std::to_string(kZ + c.dz)};
    std::vector<std::string> args = {"--json", "--address", address, "write-box"};
    args.insert(args.end(), box.begin(), box.end());
    args.push_back(dir.Sub("in.raw"));
    CliResult r = RunCli(args);
    ASSERT_EQ(r.exit_code, 0) << r;
    auto json = JsonOf(r);
    EXPECT_GE(std::stoi(json["requests"]), c.min_requests) << r;
    EXPECT_EQ(json["voxels"], std::to_string(voxels.size()));
    args[3] = "read-box";
    args.back() = dir.Sub("out.raw");
    r = RunCli(args);
    ASSERT_EQ(r.exit_code, 0) << r;
    EXPECT_GE(std::stoi(JsonOf(r)["requests"]), c.min_requests) << r;
    EXPECT_EQ(ReadBytes(dir.Sub("out.raw")), voxels) << c.dx << "x" << c.dy << "x" << c.dz;
  }
}

TEST_F(CliTest, GetChunkThenPutChunkCopiesAChunk) {
  // Some voxels in chunk A.
  const std::vector<uint8_t> voxels = RandomBytes(16 * 16 * 16, 2);
  WriteBytes(File("in.raw"), voxels);
  CliResult r = Cli({"write-box", std::to_string(kX), std::to_string(kY), std::to_string(kZ),
                     std::to_string(kX + 16), std::to_string(kY + 16), std::to_string(kZ + 16),
                     File("in.raw")});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::optional<uint64_t> written = OkVersion(r.out);
  ASSERT_TRUE(written.has_value()) << r;

  // CHUNK as coordinates.
  r = Cli({"get-chunk", "1000000,400000,312500", File("a.rec")});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::vector<uint8_t> record = ReadBytes(File("a.rec"));
  const uint64_t code_a = engine::ChunkKey::FromCoord(kChunkA).code();
  EXPECT_NE(r.out.find("key " + std::to_string(code_a) + "\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("chunk 1000000,400000,312500\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("version " + std::to_string(*written) + "\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("encoding bricks\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("bytes " + std::to_string(record.size()) + "\n"), std::string::npos) << r;
  // The file is the chunk's record.
  std::vector<uint8_t> dense(engine::kChunkVoxels);
  ASSERT_OK(engine::DecodeChunkToDense(record, dense.data()));
  for (int z = 0; z < 16; ++z) {
    for (int y = 0; y < 16; ++y) {
      for (int x = 0; x < 16; ++x) {
        ASSERT_EQ(dense[(z * 128 + y) * 128 + x], voxels[(z * 16 + y) * 16 + x]);
      }
    }
  }
  EXPECT_EQ(dense[(20 * 128 + 20) * 128 + 20], 0);

  // CHUNK as a Morton code: chunk B becomes a copy of A.
  const uint64_t code_b = engine::ChunkKey::FromCoord(kChunkB).code();
  r = Cli({"put-chunk", std::to_string(code_b), File("a.rec")});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::optional<uint64_t> put = OkVersion(r.out);
  ASSERT_TRUE(put.has_value()) << r;
  EXPECT_GT(*put, *written);
  const uint64_t bx = kX + 2 * 128;
  for (const auto& [x, y, z] :
       {std::tuple{0, 0, 0}, std::tuple{15, 15, 15}, std::tuple{3, 9, 12}}) {
    r = Cli({"get-voxel", std::to_string(bx + x), std::to_string(kY + y), std::to_string(kZ + z)});
    EXPECT_EQ(r.out, std::to_string(voxels[(z * 16 + y) * 16 + x]) + "\n") << r;
  }
  r = Cli({"read-box", std::to_string(bx), std::to_string(kY), std::to_string(kZ),
           std::to_string(bx + 16), std::to_string(kY + 16), std::to_string(kZ + 16),
           File("b.raw")});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(ReadBytes(File("b.raw")), voxels);

  // --expect-version: a stale version is a CONFLICT, the current one works.
  r = Cli({"put-chunk", "1000002,400000,312500", File("a.rec"), "--expect-version",
           std::to_string(*put - 1)});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: CONFLICT: ")) << r;
  r = Cli({"put-chunk", "--expect-version=" + std::to_string(*put), "1000002,400000,312500",
           File("a.rec")});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(OkVersion(r.out).has_value()) << r;

  // delete-chunk: B reads as air again.
  r = Cli({"delete-chunk", "1000002,400000,312500"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(OkVersion(r.out).has_value()) << r;
  r = Cli({"read-box", std::to_string(bx), std::to_string(kY), std::to_string(kZ),
           std::to_string(bx + 16), std::to_string(kY + 16), std::to_string(kZ + 16),
           File("b.raw")});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(ReadBytes(File("b.raw")), std::vector<uint8_t>(voxels.size(), 0));
}

TEST_F(CliTest, FlushWritesDirtyChunksAndStatsShowIt) {
  CliResult r = Cli({"set-voxel", std::to_string(kX), std::to_string(kY), std::to_string(kZ), "3"});
  ASSERT_EQ(r.exit_code, 0) << r;
  r = Cli({"stats"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("\ndirty_chunks 1\n"), std::string::npos) << r;
  r = Cli({"flush"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "ok\n");
  r = Cli({"stats"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.out.starts_with("uptime_seconds ")) << r;  // protocol/stats.h order
  EXPECT_NE(r.out.find("\ndirty_chunks 0\n"), std::string::npos) << r;
  EXPECT_NE(r.out.find("\nflushed_chunks 1\n"), std::string::npos) << r;
  EXPECT_GE(StatValue(r.out, "flushes").value_or(0), 1u) << r;
}

TEST_F(CliTest, JsonOutputIsOneObjectPerCommand) {
  auto json = JsonOf(Cli({"--json", "ping"}));
  EXPECT_EQ(json["command"], "\"ping\"");
  EXPECT_EQ(json["address"], "\"" + Address() + "\"");
  EXPECT_TRUE(json.count("rtt_ms"));

  const std::string x = std::to_string(kX), y = std::to_string(kY), z = std::to_string(kZ);
  CliResult r = Cli({"set-voxel", x, y, z, "9", "--json"});  // --json after the command
  json = JsonOf(r);
  EXPECT_EQ(json["command"], "\"set-voxel\"");
  const std::string version = json["version"];
  EXPECT_GT(std::stoull(version), 0u) << r;

  json = JsonOf(Cli({"--json", "get-voxel", x, y, z}));
  EXPECT_EQ(json["material"], "9");
  EXPECT_EQ(json["x"], x);

  r = Cli({"--json", "get-chunk", std::to_string(engine::ChunkKey::FromCoord(kChunkA).code()),
           File("a.rec")});
  json = JsonOf(r);
  EXPECT_EQ(json["cx"], "1000000");
  EXPECT_EQ(json["cy"], "400000");
  EXPECT_EQ(json["cz"], "312500");
  EXPECT_EQ(json["version"], version);
  EXPECT_EQ(json["encoding"], "\"bricks\"");
  EXPECT_EQ(json["bytes"], std::to_string(ReadBytes(File("a.rec")).size()));

  json = JsonOf(Cli({"--json", "fill", x, y, z, std::to_string(kX + 2), std::to_string(kY + 2),
                     std::to_string(kZ + 2), "4"}));
  EXPECT_EQ(json["voxels"], "8");
  EXPECT_GT(std::stoull(json["version"]), std::stoull(version));
  json = JsonOf(Cli({"--json", "read-box", x, y, z, std::to_string(kX + 2), std::to_string(kY + 2),
                     std::to_string(kZ + 2), File("box.raw")}));
  EXPECT_EQ(json["voxels"], "8");
  EXPECT_EQ(ReadBytes(File("box.raw")), std::vector<uint8_t>(8, 4));

  json = JsonOf(Cli({"--json", "flush"}));
  EXPECT_EQ(json["ok"], "true");
  json = JsonOf(Cli({"--json", "stats"}));
  auto stats = JsonReader::ParseObject(json["stats"]);
  ASSERT_TRUE(stats.has_value());
  EXPECT_GE(std::stoi((*stats)["flushes"]), 1);
  EXPECT_EQ((*stats)["dirty_chunks"], "0");

  json = JsonOf(Cli({"--json", "info"}));
  auto server = JsonReader::ParseObject(json["server"]);
  ASSERT_TRUE(server.has_value());
  EXPECT_EQ((*server)["server_version"], absl::StrCat("\"", kServerVersion, "\""));
  auto frame = JsonReader::ParseObject(json["storage"]);
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ((*frame)["extent_x"], "160300080");
  EXPECT_EQ((*frame)["voxel_size_m"], "0.25");
  auto limits = JsonReader::ParseObject(json["clients"]);
  ASSERT_TRUE(limits.has_value());
  EXPECT_EQ((*limits)["max_box_voxels"], "268435456");
  EXPECT_TRUE(JsonReader::ParseObject(json["cache"]).has_value());

  // Errors are JSON too, with the status.
  r = Cli({"--json", "get-voxel", "0", "0", "80000000"});
  EXPECT_EQ(r.exit_code, 1) << r;
  json = JsonOf(r);
  EXPECT_EQ(json["status"], "\"OUT_OF_BOUNDS\"");
  EXPECT_TRUE(json.count("error"));
  r = Cli({"--json", "get-voxel", "zero", "0", "0"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_EQ(JsonOf(r)["status"], "\"USAGE\"");
}

TEST_F(CliTest, AddressComesFromTheEnvironmentUnlessGiven) {
  const std::string dead = "127.0.0.1:" + std::to_string(DeadPort());
  CliResult r = RunCli({"ping"}, {{"VOXDB_ADDRESS", Address()}});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.out.starts_with("PONG ")) << r;
  r = RunCli({"ping", "--address", Address()}, {{"VOXDB_ADDRESS", dead}});
  EXPECT_EQ(r.exit_code, 0) << r;  // the option wins
  r = RunCli({"ping", "--address", dead}, {{"VOXDB_ADDRESS", Address()}});
  EXPECT_EQ(r.exit_code, 3) << r;
  r = RunCli({"ping"}, {{"VOXDB_ADDRESS", "nonsense"}});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("VOXDB_ADDRESS"), std::string::npos) << r;
}

TEST_F(CliTest, UsageErrorsExitTwoBeforeConnecting) {
  WriteBytes(File("63.raw"), std::vector<uint8_t>(63, 1));
  WriteBytes(File("65.raw"), std::vector<uint8_t>(65, 1));
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate"},
      {"--frobnicate", "ping"},
      {"ping", "extra"},
      {"get-voxel", "1", "2"},
      {"get-voxel", "1", "2", "3", "4"},
      {"get-voxel", "1", "2", "x"},
      {"get-voxel", "1", "2", "3x"},
      {"get-voxel", "1", "2", "-3"},
      {"get-voxel", "1", "2", "+3"},
      {"get-voxel", "1", "2", "0x10"},
      {"get-voxel", "1", "2", "3.0"},
      {"get-voxel", "1", "2", ""},
      {"get-voxel", "18446744073709551616", "2", "3"},
      {"set-voxel", "1", "2", "3", "256"},
      {"set-voxel", "1", "2", "3"},
      {"fill", "0", "0", "0", "4", "4", "4", "-1"},
      {"fill", "4", "0", "0", "4", "4", "4", "1"},  // empty box
      {"read-box", "0", "0", "0", "4", "4"},
      {"get-chunk", "1,2", "x"},
      {"get-chunk", "1,2,3,4", "x"},
      {"get-chunk", "2097152,0,0", "x"},
      {"get-chunk", "9223372036854775808", "x"},
      {"put-chunk", "1,2,3", "/nonexistent/record"},
      {"get-chunk", "1,2,3", "/nonexistent/dir/record"},
      {"get-voxel", "1", "2", "3", "--expect-version", "4"},
      {"put-chunk", "1,2,3", "x", "--expect-version", "v4"},
      {"ping", "--address"},
      {"ping", "--json=yes"},
      {"ping", "--timeout", "soon"},
      {"write-box", "0", "0", "0", "4", "4", "4", File("63.raw")},
      {"write-box", "0", "0", "0", "4", "4", "4", File("65.raw")},
      {"query"},
      {"query", "circle", "1", "2", "3"},
      {"query", "radius", "45", "7"},
      {"query", "radius", "45", "7", "100", "5"},
      {"query", "radius", "91", "7", "100"},
      {"query", "radius", "45", "-180.5", "100"},
      {"query", "radius", "45", "7", "-1"},
      {"query", "radius", "45", "7", "nan"},
      {"query", "radius", "45", "7", "inf"},
      {"query", "radius", "45", "7", "1e999"},
      {"query", "radius", "45", "7", "100m"},
      {"query", "radius", "+45", "7", "100"},
      {"query", "radius", "45", "0x7", "100"},
      {"query", "radius", "45", "7", ""},
      {"query", "radius", "45", "7", "100", "--alt-min", "0"},
      {"query", "radius", "45", "7", "100", "--alt-max", "0"},
      {"query", "radius", "45", "7", "100", "--alt-min", "10", "--alt-max", "-10"},
      {"query", "radius", "45", "7", "100", "--alt-min", "low", "--alt-max", "10"},
      {"query", "radius", "45", "7", "100", "--limit", "0"},
      {"query", "radius", "45", "7", "100", "--limit", "65537"},
      {"query", "radius", "45", "7", "100", "--limit", "-1"},
      {"query", "radius", "45", "7", "100", "--all=yes"},
      {"query", "radius", "45", "7", "100", "--cursor", "abc"},
      {"query", "radius", "45", "7", "100", "--cursor", "zz"},
      {"query", "radius", "45", "7", "100", "--cursor", ""},
      {"query", "cell", "X"},
      {"query", "cell", "0"},
      {"query", "cell", "4"},
      {"query", "cell", "47a1cbd4x"},
      {"query", "cell", "47a1cbd4000000000"},
      {"query", "cell", "47a1cbd4", "47a1cbd4"},
      {"query", "rect", "10", "0", "-10", "1"},
      {"query", "rect", "-10", "0", "10"},
      {"query", "box", "0", "0", "0", "4", "4", "0"},
      {"query", "box", "0", "0", "0", "4", "4", "4.5"},
      {"ping", "--limit", "5"},
      {"get-voxel", "1", "2", "3", "--all"},
      {"reindex", "--alt-min", "0", "--alt-max", "1"},
      {"reindex", "extra"},
  };
  for (std::vector<std::string> args : cases) {
    std::string shown;
    for (const auto& a : args) shown += " '" + a + "'";
    // The daemon is not asked: usage errors come first.
    args.insert(args.begin(), {"--address", "127.0.0.1:1"});
    const CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 2) << "voxdb" << shown << "\n" << r;
    EXPECT_TRUE(r.out.empty()) << shown << "\n" << r;
    EXPECT_TRUE(r.err.starts_with("voxdb: ")) << shown << "\n" << r;
    EXPECT_NE(r.err.find("see voxdb --help"), std::string::npos) << shown << "\n" << r;
  }
  // The message names the problem.
  CliResult r = RunCli({"write-box", "0", "0", "0", "4", "4", "4", File("63.raw")});
  EXPECT_NE(r.err.find("has 63 bytes; the box needs exactly 64"), std::string::npos) << r;
  r = RunCli({"get-voxel", "1", "2", "3x"});
  EXPECT_NE(r.err.find("Z '3x' is not a decimal number"), std::string::npos) << r;
  r = RunCli({"frobnicate"});
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r;
  r = RunCli({"get-voxel", "1", "2"});
  EXPECT_NE(r.err.find("usage: voxdb get-voxel X Y Z"), std::string::npos) << r;
  r = RunCli({"query", "radius", "45", "7"});
  EXPECT_NE(r.err.find("radius takes 3 arguments (LAT LON METRES), not 2"), std::string::npos) << r;
  r = RunCli({"query", "radius", "45", "7", "nan"});
  EXPECT_NE(r.err.find("METRES 'nan' is not a finite decimal number"), std::string::npos) << r;
  r = RunCli({"query", "rect", "10", "0", "-10", "1"});
  EXPECT_NE(r.err.find("LAT_LO 10 is north of LAT_HI -10"), std::string::npos) << r;
  r = RunCli({"ping", "--limit", "5"});
  EXPECT_NE(r.err.find("there is no option --limit for this command"), std::string::npos) << r;
  // Nothing was written to the server by the wrong-size write-box.
  r = Cli({"read-box", "0", "0", "0", "4", "4", "4", File("zero.raw")});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(ReadBytes(File("zero.raw")), std::vector<uint8_t>(64, 0));
}

TEST_F(CliTest, ServerErrorsExitOneWithTheStatusName) {
  CliResult r = Cli({"get-voxel", "0", "0", "80000000"});  // z = extent_z
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.out.empty()) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: OUT_OF_BOUNDS: ")) << r;
  r = Cli({"set-voxel", "160300080", "0", "0", "1"});  // x = extent_x
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: OUT_OF_BOUNDS: ")) << r;
  r = Cli({"fill", "0", "0", "79999999", "1", "1", "80000001", "5"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: OUT_OF_BOUNDS: ")) << r;
  // Larger than the server takes in one read.
  r = Cli({"read-box", "0", "0", "0", "65536", "65536", "1", File("huge.raw")});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: TOO_LARGE: ")) << r;
  // A record that is not one.
  WriteBytes(File("junk.rec"), std::vector<uint8_t>(40, 0xab));
  r = Cli({"put-chunk", "1000000,400000,312500", File("junk.rec")});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: CORRUPT: ")) << r;
}

TEST_F(CliTest, FailedReadLeavesTheOutputFileAlone) {
  WriteBytes(File("keep.raw"), {1, 2, 3});
  CliResult r = Cli({"read-box", "0", "0", "79999999", "2", "2", "80000001", File("keep.raw")});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_EQ(ReadBytes(File("keep.raw")), (std::vector<uint8_t>{1, 2, 3}));
  r = Cli({"get-chunk", "1,2,99999999", File("keep.raw")});
  EXPECT_EQ(r.exit_code, 2) << r;  // over the largest chunk coordinate
  EXPECT_EQ(ReadBytes(File("keep.raw")), (std::vector<uint8_t>{1, 2, 3}));
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    files += entry.is_regular_file();
  }
  EXPECT_EQ(files, 1);  // no temporary file left behind
}

TEST(CliUnreachableTest, NothingListeningExitsThree) {
  const std::string dead = "127.0.0.1:" + std::to_string(DeadPort());
  for (const char* command : {"ping", "info", "stats", "flush"}) {
    const CliResult r = RunCli({"--address", dead, command});
    EXPECT_EQ(r.exit_code, 3) << command << "\n" << r;
    EXPECT_TRUE(r.err.starts_with("voxdb: UNREACHABLE: cannot connect to " + dead)) << r;
  }
  CliResult r = RunCli({"--address", dead, "--json", "get-voxel", "1", "2", "3"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_EQ(JsonOf(r)["status"], "\"UNREACHABLE\"");
  r = RunCli({"--address", "no-such-host.invalid:7390", "ping"});
  EXPECT_EQ(r.exit_code, 3) << r;
}

TEST(CliTokenTest, TheTokenIsSentWithHello) {
  const std::string admin = "aaaaaaaaaaaaaaaaaaaa", read = "rrrrrrrrrrrrrrrrrrrr";
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"),
                       {"--token", "admin:" + admin, "--token", "read:" + read});
  const std::string address = "127.0.0.1:" + std::to_string(daemon.port());
  CliResult r = RunCli({"--address", address, "stats"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: UNAUTHENTICATED: ")) << r;
  r = RunCli({"--address", address, "--token", "wrong-token-wrong-token", "stats"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: UNAUTHENTICATED: ")) << r;
  r = RunCli({"--address", address, "--token", admin, "set-voxel", "1", "2", "3", "4"});
  EXPECT_EQ(r.exit_code, 0) << r;
  r = RunCli({"get-voxel", "1", "2", "3"}, {{"VOXDB_ADDRESS", address}, {"VOXDB_TOKEN", read}});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "4\n");
  r = RunCli({"set-voxel", "1", "2", "3", "5"},
             {{"VOXDB_ADDRESS", address}, {"VOXDB_TOKEN", read}});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: PERMISSION_DENIED: ")) << r;
  r = RunCli({"--address", address, "--token", read, "info"});
  EXPECT_NE(r.out.find("\nrole read\n"), std::string::npos) << r;
}

// --- voxdb query and reindex ------------------------------------------------

std::string Degrees(double d) { return absl::StrFormat("%.17g", d); }

// A 3 x 3 patch of chunks from kChunkA at sea level and one 100 chunks
// (3.2 km) above its middle; the expected output of a query is computed
// from them with the index's own definitions.
class CliQueryTest : public CliTest {
 protected:
  void WriteChunks() {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    std::vector<engine::ChunkCoord> chunks;
    for (uint32_t dy = 0; dy < 3; ++dy) {
      for (uint32_t dx = 0; dx < 3; ++dx) {
        chunks.push_back({kChunkA.x + dx, kChunkA.y + dy, kChunkA.z});
      }
    }
    chunks.push_back({kChunkA.x + 1, kChunkA.y + 1, kChunkA.z + 100});
    for (const engine::ChunkCoord& chunk : chunks) {
      const engine::VoxelCoord o = frame_.ChunkOrigin(chunk);
      ASSERT_OK_AND_ASSIGN(uint64_t v, c->SetVoxels({{{{o.x + 3, o.y + 2, o.z + 1}, 5}}}));
      versions_[engine::ChunkKey::FromCoord(chunk).code()] = v;
    }
  }
  // The middle chunk's centre.
  S2LatLng Middle() const {
    return index::ChunkCentre(
        frame_, engine::ChunkKey::FromCoord({kChunkA.x + 1, kChunkA.y + 1, kChunkA.z}));
  }
  // The chunk lines `voxdb query` must print, in the index's order.
  std::string ExpectedLines(const index::Region& region,
                            const std::optional<index::AltitudeBand>& band = std::nullopt) const {
    std::vector<std::pair<uint64_t, uint64_t>> order;  // (leaf cell or 0, code)
    for (const auto& [code, version] : versions_) {
      const auto key = engine::ChunkKey::FromCode(code);
      if (!index::ChunkInRegion(frame_, key, region, band)) continue;
      const bool box = std::holds_alternative<index::BoxRegion>(region);
      order.emplace_back(box ? 0 : index::ChunkCell(frame_, key).id(), code);
    }
    std::sort(order.begin(), order.end());
    std::string out;
    for (const auto& [cell, code] : order) {
      const engine::ChunkCoord c = engine::ChunkKey::FromCode(code).coord();
      out +=
          absl::StrFormat("%u,%u,%u key %u version %u\n", c.x, c.y, c.z, code, versions_.at(code));
    }
    return out;
  }
  size_t LineCount(const std::string& text) const {
    return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  }

  const engine::WorldFrame frame_ = engine::WorldFrame::Earth();
  std::map<uint64_t, uint64_t> versions_;
};

TEST_F(CliQueryTest, EachKindPrintsExactlyItsChunks) {
  WriteChunks();
  ASSERT_EQ(Cli({"flush"}).exit_code, 0);
  const S2LatLng m = Middle();
  const std::string lat = Degrees(m.lat().degrees()), lon = Degrees(m.lng().degrees());
  // radius: 40 m around the middle takes a part of the patch.
  index::Region radius =
      index::RadiusRegion{S2LatLng::FromDegrees(std::stod(lat), std::stod(lon)), 40};
  CliResult r = Cli({"query", "radius", lat, lon, "40"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, ExpectedLines(radius)) << r;
  EXPECT_GT(LineCount(r.out), 1u) << r;
  EXPECT_LT(LineCount(r.out), versions_.size()) << r;
  // cell: the middle's leaf cell, a few levels up.
  const S2CellId cell = index::ChunkCell(
      frame_, engine::ChunkKey::FromCoord({kChunkA.x + 1, kChunkA.y + 1, kChunkA.z}));
  for (int level : {30, 18, 14, 0}) {
    r = Cli({"query", "cell", cell.parent(level).ToToken()});
    ASSERT_EQ(r.exit_code, 0) << r;
    EXPECT_EQ(r.out, ExpectedLines(index::CellRegion{cell.parent(level)})) << level << "\n" << r;
  }
  // rect: the whole world, and a rectangle far away.
  r = Cli({"query", "rect", "-90", "-180", "90", "180"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(LineCount(r.out), versions_.size()) << r;
  EXPECT_EQ(r.out, ExpectedLines(index::RectRegion{S2LatLngRect::Full()})) << r;
  r = Cli({"query", "rect", "-10", "170", "10", "-170"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "") << r;
  // box: the patch's first two columns, the sea-level layer only.
  const engine::VoxelCoord o = frame_.ChunkOrigin(kChunkA);
  const engine::VoxelBox box{{o.x + 1, o.y, o.z}, {o.x + 256, o.y + 384, o.z + 128}};
  r = Cli({"query", "box", std::to_string(box.lo.x), std::to_string(box.lo.y),
           std::to_string(box.lo.z), std::to_string(box.hi.x), std::to_string(box.hi.y),
           std::to_string(box.hi.z)});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, ExpectedLines(index::BoxRegion{box})) << r;
  EXPECT_EQ(LineCount(r.out), 6u) << r;
}

TEST_F(CliQueryTest, PagesFollowTheCursor) {
  WriteChunks();
  const std::vector<std::string> world = {"query", "rect", "-90", "-180", "90", "180"};
  const CliResult whole = Cli(world);
  ASSERT_EQ(whole.exit_code, 0) << whole;
  ASSERT_EQ(LineCount(whole.out), versions_.size()) << whole;
  // --limit 1 --all: the same, in one output.
  std::vector<std::string> args = world;
  args.insert(args.end(), {"--limit", "1", "--all"});
  CliResult r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, whole.out);
  // --limit 3: a page and its cursor; --cursor resumes, until no cursor.
  std::string pages;
  std::optional<std::string> cursor;
  for (int page = 0; page < 10; ++page) {
    args = world;
    args.insert(args.end(), {"--limit", "3"});
    if (cursor.has_value()) args.insert(args.end(), {"--cursor", *cursor});
    r = Cli(args);
    ASSERT_EQ(r.exit_code, 0) << r;
    const size_t at = r.out.find("next-cursor ");
    if (at == std::string::npos) {
      pages += r.out;
      cursor.reset();
      break;
    }
    EXPECT_EQ(LineCount(r.out.substr(0, at)), 3u) << r;
    cursor = r.out.substr(at + 12, r.out.size() - at - 13);
    EXPECT_EQ(cursor->size(), 32u) << r;  // 16 bytes in hex
    EXPECT_EQ(cursor->find_first_not_of("0123456789abcdef"), std::string::npos) << r;
    pages += r.out.substr(0, at);
  }
  EXPECT_FALSE(cursor.has_value());
  EXPECT_EQ(pages, whole.out);
  // A cursor that is not one of this query: the server says INVALID.
  args = world;
  args.insert(args.end(), {"--cursor", "00"});
  r = Cli(args);
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: INVALID: ")) << r;
}

TEST_F(CliQueryTest, AltitudeBandsAndUnflushedWrites) {
  WriteChunks();  // not flushed: the queries see the cache
  const std::vector<std::string> world = {"query", "rect", "-90", "-180", "90", "180"};
  const index::Region all = index::RectRegion{S2LatLngRect::Full()};
  std::vector<std::string> args = world;
  args.insert(args.end(), {"--alt-min", "3000", "--alt-max", "4000"});
  CliResult r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, ExpectedLines(all, index::AltitudeBand{3000, 4000})) << r;
  EXPECT_EQ(LineCount(r.out), 1u) << r;
  args = world;
  args.insert(args.end(), {"--alt-min=-10", "--alt-max", "10"});
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, ExpectedLines(all, index::AltitudeBand{-10, 10})) << r;
  EXPECT_EQ(LineCount(r.out), 9u) << r;
  // A fill below the patch: reported with the first page when it meets the band.
  const engine::VoxelCoord o = frame_.ChunkOrigin(kChunkA);
  r = Cli({"fill", std::to_string(o.x), std::to_string(o.y), std::to_string(o.z - 4000),
           std::to_string(o.x + 300), std::to_string(o.y + 300), std::to_string(o.z - 400), "3"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::optional<uint64_t> seq = OkVersion(r.out);
  ASSERT_TRUE(seq.has_value()) << r;
  const std::string fill_line =
      absl::StrFormat("fill %u box %u %u %u %u %u %u material 3\n", *seq, o.x, o.y, o.z - 4000,
                      o.x + 300, o.y + 300, o.z - 400);
  args = world;
  args.insert(args.end(), {"--alt-min", "-500", "--alt-max", "-200"});
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, fill_line) << r;  // no chunk that deep
  args.insert(args.end(), {"--limit", "1", "--all"});
  r = Cli(args);
  EXPECT_EQ(r.out, fill_line) << r;
  r = Cli(world);
  EXPECT_EQ(r.out, ExpectedLines(all) + fill_line) << r;
  args = world;
  args.insert(args.end(), {"--alt-min", "0", "--alt-max", "10"});
  r = Cli(args);
  EXPECT_EQ(r.out.find("fill "), std::string::npos) << r;
}

TEST_F(CliQueryTest, JsonHasChunksFillsAndTheCursor) {
  WriteChunks();
  const engine::VoxelCoord o = frame_.ChunkOrigin(kChunkA);
  CliResult r =
      Cli({"fill", std::to_string(o.x), std::to_string(o.y), std::to_string(o.z - 10),
           std::to_string(o.x + 10), std::to_string(o.y + 10), std::to_string(o.z - 5), "4"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const uint64_t seq = OkVersion(r.out).value_or(0);
  r = Cli({"--json", "query", "rect", "-90", "-180", "90", "180"});
  ASSERT_EQ(r.exit_code, 0) << r;
  auto json = JsonOf(r);
  EXPECT_EQ(json["command"], "\"query\"");
  EXPECT_EQ(json["kind"], "\"rect\"");
  EXPECT_EQ(json["next_cursor"], "null");
  const uint64_t a = engine::ChunkKey::FromCoord(kChunkA).code();
  EXPECT_NE(json["chunks"].find(
                absl::StrFormat("{\"cx\":%u,\"cy\":%u,\"cz\":%u,\"key\":%u,\"version\":%u}",
                                kChunkA.x, kChunkA.y, kChunkA.z, a, versions_.at(a))),
            std::string::npos)
      << r;
  EXPECT_EQ(json["fills"],
            absl::StrFormat("[{\"seq\":%u,\"lo\":[%u,%u,%u],\"hi\":[%u,%u,%u],\"material\":4}]",
                            seq, o.x, o.y, o.z - 10, o.x + 10, o.y + 10, o.z - 5))
      << r;
  size_t objects = 0;
  for (size_t at = 0; (at = json["chunks"].find("{", at)) != std::string::npos; ++at) ++objects;
  EXPECT_EQ(objects, versions_.size());
  r = Cli({"--json", "query", "rect", "-90", "-180", "90", "180", "--limit", "2"});
  ASSERT_EQ(r.exit_code, 0) << r;
  json = JsonOf(r);
  EXPECT_EQ(json["next_cursor"].size(), 34u) << r;  // "32 hex digits"
  r = Cli({"--json", "query", "cell", "X"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_EQ(JsonOf(r)["status"], "\"USAGE\"");
}

TEST_F(CliQueryTest, ReindexPrintsTheEntriesAndQueriesAgree) {
  WriteChunks();
  const std::vector<std::string> world = {"query", "rect", "-90", "-180", "90", "180"};
  const CliResult before = Cli(world);
  ASSERT_EQ(before.exit_code, 0) << before;
  CliResult r = Cli({"reindex"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "entries 0\n");  // nothing stored yet
  ASSERT_EQ(Cli({"flush"}).exit_code, 0);
  r = Cli({"reindex"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "entries " + std::to_string(versions_.size()) + "\n");
  r = Cli({"--json", "reindex"});
  ASSERT_EQ(r.exit_code, 0) << r;
  auto json = JsonOf(r);
  EXPECT_EQ(json["command"], "\"reindex\"");
  EXPECT_EQ(json["entries"], std::to_string(versions_.size()));
  EXPECT_EQ(Cli(world).out, before.out);
}

TEST(CliTokenTest, ReadTokensMayQueryButNotReindex) {
  const std::string admin = "aaaaaaaaaaaaaaaaaaaa", read = "rrrrrrrrrrrrrrrrrrrr";
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"),
                       {"--token", "admin:" + admin, "--token", "read:" + read});
  const std::string address = "127.0.0.1:" + std::to_string(daemon.port());
  CliResult r = RunCli({"--address", address, "--token", admin, "set-voxel", std::to_string(kX),
                        std::to_string(kY), std::to_string(kZ), "4"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::vector<std::pair<std::string, std::string>> env = {{"VOXDB_ADDRESS", address},
                                                                {"VOXDB_TOKEN", read}};
  r = RunCli({"query", "box", std::to_string(kX), std::to_string(kY), std::to_string(kZ),
              std::to_string(kX + 1), std::to_string(kY + 1), std::to_string(kZ + 1)},
             env);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.out.starts_with("1000000,400000,312500 key ")) << r;
  r = RunCli({"reindex"}, env);
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: PERMISSION_DENIED: ")) << r;
  r = RunCli({"--address", address, "--token", admin, "reindex"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "entries 0\n") << r;
}

// --- voxdb watch ---------------------------------------------------------------

// The box of kChunkA, as `voxdb watch` arguments.
std::vector<std::string> ChunkABox() {
  return {"box",
          std::to_string(kX),
          std::to_string(kY),
          std::to_string(kZ),
          std::to_string(kX + 128),
          std::to_string(kY + 128),
          std::to_string(kZ + 128)};
}
std::string ChunkABoxText() {
  return absl::StrFormat("box %u %u %u %u %u %u", kX, kY, kZ, kX + 128, kY + 128, kZ + 128);
}
// `watch box ...(chunk A) options...`.
std::vector<std::string> WatchA(const std::vector<std::string>& options = {}) {
  std::vector<std::string> args = {"watch"};
  for (const std::string& a : ChunkABox()) args.push_back(a);
  args.insert(args.end(), options.begin(), options.end());
  return args;
}
// The line `voxdb watch` prints for a chunk event ("changed" or "deleted",
// then any detail).
std::string ChunkLine(uint64_t seq, const engine::ChunkCoord& c, std::string_view what) {
  return absl::StrFormat("seq %u chunk %u,%u,%u key %u %s\n", seq, c.x, c.y, c.z,
                         engine::ChunkKey::FromCoord(c).code(), what);
}

// `voxdb watch` as a child process against this test's daemon, written to
// through a protocol client meanwhile.
class CliWatchTest : public CliTest {
 protected:
  static constexpr std::chrono::seconds kWait{20};

  // Starts `voxdb --address ADDRESS args...`.
  std::unique_ptr<testing::ChildProcess> Start(std::vector<std::string> args) {
    args.insert(args.begin(), {VOXDB_CLI_PATH, "--address", Address()});
    return std::make_unique<testing::ChildProcess>(
        args, std::vector<std::string>{"VOXDB_ADDRESS", "VOXDB_TOKEN"});
  }
  // `voxdb --address ADDRESS args...` to its end (killed after kWait).
  CliResult Watch(std::vector<std::string> args) {
    args.insert(args.begin(), {"--address", Address()});
    return RunCliAtMost(args, kWait);
  }
  // The first stderr line of a watch: once it is printed, the subscription
  // is in place.
  static std::string Watching(testing::ChildProcess& watch) {
    return watch.ReadLine(testing::ChildProcess::kErr, kWait).value_or("(nothing on stderr)");
  }
  static protocol::Voxel3 InA(uint64_t dx, uint64_t dy = 0, uint64_t dz = 0) {
    return {kX + dx, kY + dy, kZ + dz};
  }
  static protocol::Voxel3 InB(uint64_t dx) { return {kX + 256 + dx, kY, kZ}; }
};

TEST_F(CliWatchTest, WatchPrintsEachChangeInTheRegionOnceInCommitOrder) {
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_OK_AND_ASSIGN(uint64_t v0, c->SetVoxels({{{InB(0), 1}}}));  // before: not printed
  auto watch = Start(WatchA({"--count", "5"}));
  ASSERT_EQ(Watching(*watch), absl::StrFormat("watching %s after seq %u", ChunkABoxText(), v0));

  ASSERT_OK_AND_ASSIGN(uint64_t v1,
                       c->SetVoxels({{{InA(1), 7}, {InA(2, 3), 8}, {InA(4, 5, 6), 9}}}));
  ASSERT_OK(c->SetVoxels({{{InB(1), 2}}}).status());  // outside
  // A fill meeting the region: the fill, then chunk A, which it rewrote.
  const protocol::Box fill{{kX, kY, kZ}, {kX + 200, kY + 10, kZ + 10}};
  ASSERT_OK_AND_ASSIGN(uint64_t v3, c->FillBox(fill, 6));
  ASSERT_OK(c->FillBox({{kX + 256, kY, kZ}, {kX + 300, kY + 10, kZ + 10}}, 5).status());  // outside
  ASSERT_OK(
      c->WriteBox({{kX + 256, kY, kZ}, {kX + 258, kY + 1, kZ + 1}}, std::vector<uint8_t>{1, 2})
          .status());  // outside
  ASSERT_OK_AND_ASSIGN(uint64_t v6, c->DeleteChunk(engine::ChunkKey::FromCoord(kChunkA).code()));
  ASSERT_OK(c->DeleteChunk(engine::ChunkKey::FromCoord(kChunkB).code()).status());  // outside
  ASSERT_OK_AND_ASSIGN(uint64_t v8, c->SetVoxels({{{InA(9), 3}}}));
  ASSERT_OK(c->SetVoxels({{{InA(10), 3}}}).status());  // after the count

  const CliResult r = watch->Wait(kWait);
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out,
            ChunkLine(v1, kChunkA, "changed") +
                absl::StrFormat("seq %u fill box %u %u %u %u %u %u material 6\n", v3, fill.lo.x,
                                fill.lo.y, fill.lo.z, fill.hi.x, fill.hi.y, fill.hi.z) +
                ChunkLine(v3, kChunkA, "changed") + ChunkLine(v6, kChunkA, "deleted") +
                ChunkLine(v8, kChunkA, "changed"))
      << r;
  EXPECT_EQ(r.err, absl::StrFormat("watching %s after seq %u\n", ChunkABoxText(), v0)) << r;
}

TEST_F(CliWatchTest, WatchJsonLinesCarryTheChangedVoxels) {
  auto watch = Start(WatchA({"--json", "--detail", "voxels", "--count", "5"}));
  ASSERT_EQ(Watching(*watch), absl::StrFormat("watching %s after seq 0", ChunkABoxText()));

  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_OK_AND_ASSIGN(uint64_t v1, c->SetVoxels({{{InA(1), 7}, {InA(2, 3, 4), 8}}}));
  // Across chunks A and A + 1: the part in A.
  ASSERT_OK_AND_ASSIGN(uint64_t v2, c->WriteBox({{kX + 100, kY, kZ}, {kX + 150, kY + 2, kZ + 2}},
                                                std::vector<uint8_t>(50 * 2 * 2, 4)));
  ASSERT_OK_AND_ASSIGN(uint64_t v3, c->FillBox({{kX, kY, kZ}, {kX + 8, kY + 8, kZ + 8}}, 6));
  ASSERT_OK_AND_ASSIGN(uint64_t v4, c->DeleteChunk(engine::ChunkKey::FromCoord(kChunkA).code()));

  const CliResult r = watch->Wait(kWait);
  EXPECT_EQ(r.exit_code, 0) << r;
  const std::string chunk =
      absl::StrFormat(R"("kind":"chunk","key":%u,"cx":%u,"cy":%u,"cz":%u)",
                      engine::ChunkKey::FromCoord(kChunkA).code(), kChunkA.x, kChunkA.y, kChunkA.z);
  const std::vector<std::string> want = {
      absl::StrFormat(
          R"({"seq":%u,%s,"present":true,"detail":"edits","edits":[)"
          R"({"x":%u,"y":%u,"z":%u,"material":7},{"x":%u,"y":%u,"z":%u,"material":8}]})",
          v1, chunk, kX + 1, kY, kZ, kX + 2, kY + 3, kZ + 4),
      absl::StrFormat(R"({"seq":%u,%s,"present":true,"detail":"box","lo":[%u,%u,%u],)"
                      R"("hi":[%u,%u,%u]})",
                      v2, chunk, kX + 100, kY, kZ, kX + 128, kY + 2, kZ + 2),
      absl::StrFormat(R"({"seq":%u,"kind":"fill","lo":[%u,%u,%u],"hi":[%u,%u,%u],"material":6})",
                      v3, kX, kY, kZ, kX + 8, kY + 8, kZ + 8),
      absl::StrFormat(R"({"seq":%u,%s,"present":true,"detail":"none"})", v3, chunk),
      absl::StrFormat(R"({"seq":%u,%s,"present":false,"detail":"none"})", v4, chunk),
  };
  std::string want_out;
  for (const std::string& line : want) {
    EXPECT_TRUE(JsonReader::ParseObject(line).has_value()) << line;
    want_out += line + "\n";
  }
  EXPECT_EQ(r.out, want_out) << r;
}

TEST_F(CliWatchTest, WatchFromResumesAfterTheGivenSeq) {
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  std::vector<uint64_t> v;
  uint64_t last = 0;
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(uint64_t version, c->SetVoxels({{{InA(i), 1}}}));
    v.push_back(version);
    ASSERT_OK_AND_ASSIGN(last, c->SetVoxels({{{InB(i), 1}}}));  // outside
  }
  const std::string after_v1 =
      ChunkLine(v[2], kChunkA, "changed") + ChunkLine(v[3], kChunkA, "changed");
  // Until no change came for 500 ms: exactly the changes after v1.
  CliResult r = Watch(WatchA({"--from", std::to_string(v[1]), "--timeout", "500ms"}));
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, after_v1) << r;
  EXPECT_EQ(r.err, absl::StrFormat("watching %s after seq %u\n"
                                   "stopped (no change for 500ms) after seq %u: resume with "
                                   "--from %u\n",
                                   ChunkABoxText(), v[1], v[3], v[3]))
      << r;
  r = Watch(WatchA({"--count", "2", "--from", std::to_string(v[1])}));
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, after_v1) << r;
  // From the newest: nothing yet.
  r = Watch(WatchA({"--from", std::to_string(last), "--timeout", "1"}));
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "") << r;
  // From the future: refused.
  r = Watch(WatchA({"--from", std::to_string(last + 1), "--timeout", "1"}));
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: INVALID: resume point ")) << r;
  EXPECT_TRUE(r.out.empty()) << r;
  // A watcher stopped by a signal says where to resume; resuming there
  // misses nothing written meanwhile.
  auto running = Start(WatchA({}));
  ASSERT_EQ(Watching(*running), absl::StrFormat("watching %s after seq %u", ChunkABoxText(), last));
  ASSERT_OK_AND_ASSIGN(uint64_t v5, c->SetVoxels({{{InA(5), 2}}}));
  EXPECT_EQ(running->ReadLine(testing::ChildProcess::kOut, kWait).value_or("") + "\n",
            ChunkLine(v5, kChunkA, "changed"));
  running->Signal(SIGINT);
  r = running->Wait(kWait);
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.err.ends_with(
      absl::StrFormat("\nstopped (SIGINT) after seq %u: resume with --from %u\n", v5, v5)))
      << r;
  ASSERT_OK_AND_ASSIGN(uint64_t v6, c->SetVoxels({{{InA(6), 2}}}));
  r = Watch(WatchA({"--from", std::to_string(v5), "--count", "1"}));
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, ChunkLine(v6, kChunkA, "changed")) << r;
}

TEST(CliWatchResyncTest, WatchFromAResumePointNoLongerRetainedSaysToReadTheRegionAgain) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"), {"--change-window", "5"});
  ASSERT_OK_AND_ASSIGN(auto c, Client::Connect("127.0.0.1", daemon.port()));
  ASSERT_OK(c->Hello(""));
  std::vector<uint64_t> versions;
  for (uint64_t i = 0; i < 20; ++i) {
    ASSERT_OK_AND_ASSIGN(uint64_t v, c->SetVoxels({{{{kX + i, kY, kZ}, 1}}}));
    versions.push_back(v);
  }
  auto watch = [&](const std::vector<std::string>& options) {
    std::vector<std::string> args = WatchA(options);
    args.insert(args.begin(), {"--address", "127.0.0.1:" + std::to_string(daemon.port())});
    return RunCliAtMost(args);
  };
  CliResult r = watch({"--from", "1", "--count", "1"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.out.empty()) << r;
  EXPECT_TRUE(r.err.starts_with(absl::StrFormat(
      "voxdb: RESYNC: the changes after seq 1 are no longer retained by the server: read the "
      "region again (voxdb query %s), then run voxdb watch without --from (server: ",
      ChunkABoxText())))
      << r;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
  // With --json, the error object on stdout.
  r = watch({"--json", "--from", "1", "--count", "1"});
  EXPECT_EQ(r.exit_code, 1) << r;
  auto json = JsonOf(r);
  EXPECT_EQ(json["command"], "\"watch\"") << r;
  EXPECT_EQ(json["status"], "\"RESYNC\"") << r;
  // The oldest resume point retained: the last five writes.
  r = watch({"--from", std::to_string(versions[14]), "--count", "5"});
  EXPECT_EQ(r.exit_code, 0) << r;
  std::string want;
  for (size_t i = 15; i < 20; ++i) want += ChunkLine(versions[i], kChunkA, "changed");
  EXPECT_EQ(r.out, want) << r;
}

TEST_F(CliWatchTest, WatchStopsCleanlyOnSigintAndSigterm) {
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  for (int signal : {SIGINT, SIGTERM}) {
    auto watch = Start(WatchA());
    ASSERT_TRUE(Watching(*watch).starts_with("watching box ")) << signal;
    ASSERT_OK_AND_ASSIGN(uint64_t v, c->SetVoxels({{{InA(1), static_cast<uint8_t>(signal)}}}));
    EXPECT_EQ(watch->ReadLine(testing::ChildProcess::kOut, kWait).value_or("") + "\n",
              ChunkLine(v, kChunkA, "changed"));
    watch->Signal(signal);
    const CliResult r = watch->Wait(kWait);
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_TRUE(
        r.err.ends_with(absl::StrFormat("\nstopped (%s) after seq %u: resume with --from %u\n",
                                        signal == SIGINT ? "SIGINT" : "SIGTERM", v, v)))
        << r;
  }
}

TEST_F(CliWatchTest, WatchExitsThreeSayingWhereToResumeWhenTheServerCloses) {
  std::vector<std::string> args = WatchA();
  auto watch = Start(args);
  ASSERT_TRUE(Watching(*watch).starts_with("watching box ")) << watch->Wait(kWait);
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    ASSERT_OK_AND_ASSIGN(uint64_t v, c->SetVoxels({{{InA(1), 4}}}));
    ASSERT_EQ(watch->ReadLine(testing::ChildProcess::kOut, kWait).value_or("") + "\n",
              ChunkLine(v, kChunkA, "changed"));
    ASSERT_OK(c->SetVoxels({{{InB(1), 4}}}).status());  // outside: not a resume point it knows
    daemon_.StopWith(SIGTERM);
    const CliResult r = watch->Wait(kWait);
    EXPECT_EQ(r.exit_code, 3) << r;
    EXPECT_TRUE(r.err.ends_with(absl::StrFormat(
        "\nvoxdb: UNREACHABLE: the server closed the connection after seq %u: resume with the "
        "same voxdb watch command and --from %u\n",
        v, v)))
        << r;
  }
  // Nothing listening: exit 3 too.
  args.insert(args.begin(), {"--address", "127.0.0.1:" + std::to_string(DeadPort())});
  const CliResult r = RunCli(args);
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: UNREACHABLE: ")) << r;
}

TEST_F(CliWatchTest, WatchTakesTheRegionsOfQuery) {
  const engine::WorldFrame frame = engine::WorldFrame::Earth();
  const engine::ChunkKey a = engine::ChunkKey::FromCoord(kChunkA);
  const S2LatLng centre = index::ChunkCentre(frame, a);
  const std::string lat = Degrees(centre.lat().degrees()), lon = Degrees(centre.lng().degrees());
  // Chunk A, not chunk B (64 m east): a 10 m circle, a leaf cell's level-20
  // parent (about 10 m).
  auto radius = Start({"watch", "radius", lat, lon, "10", "--count", "1"});
  auto cell =
      Start({"watch", "cell", index::ChunkCell(frame, a).parent(20).ToToken(), "--count", "1"});
  // Neither: a rectangle far away; chunk A's column above 1 km.
  auto rect = Start({"watch", "rect", "-10", "170", "10", "-170", "--timeout", "2s"});
  auto band = Start(WatchA({"--alt-min", "1000", "--alt-max", "2000", "--timeout", "2s"}));
  for (auto* watch : {&radius, &cell, &rect, &band}) {
    ASSERT_TRUE(Watching(**watch).starts_with("watching ")) << (*watch)->Wait(kWait);
  }
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_OK(c->SetVoxels({{{InB(1), 4}}}).status());
  ASSERT_OK_AND_ASSIGN(uint64_t v, c->SetVoxels({{{InA(1), 4}}}));
  for (auto* watch : {&radius, &cell}) {
    const CliResult r = (*watch)->Wait(kWait);
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_EQ(r.out, ChunkLine(v, kChunkA, "changed")) << r;
  }
  CliResult r = rect->Wait(kWait);
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "") << r;
  EXPECT_TRUE(r.err.starts_with("watching rect -10 170 10 -170 after seq 0\n")) << r;
  r = band->Wait(kWait);
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "") << r;
  EXPECT_TRUE(r.err.starts_with(
      absl::StrFormat("watching %s (altitudes 1000 to 2000 m) after seq 0\n", ChunkABoxText())))
      << r;
}

TEST_F(CliWatchTest, WatchUsageErrorsExitTwoBeforeConnecting) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"watch"}, "watch: needs a KIND: radius, cell, rect or box"},
      {{"watch", "circle", "1", "2", "3"}, "watch: unknown KIND 'circle'"},
      {{"watch", "box", "0", "0", "0", "4", "4"}, "watch: box takes 6 arguments"},
      {{"watch", "box", "4", "0", "0", "4", "4", "4"}, "watch: the box is empty"},
      {{"watch", "radius", "91", "7", "100"}, "watch: LAT '91' is not a latitude"},
      {{"watch", "cell", "47a1cbd4x"}, "watch: TOKEN '47a1cbd4x' is not an S2 cell token"},
      {WatchA({"--count", "0"}), "voxdb: --count 0: give at least 1"},
      {WatchA({"--count", "-1"}), "voxdb: --count '-1' is negative"},
      {WatchA({"--count"}), "voxdb: option --count needs a value"},
      {WatchA({"--from", "x"}), "voxdb: --from 'x' is not a decimal number"},
      {WatchA({"--detail", "all"}), "voxdb: --detail 'all': none, voxels or records"},
      {WatchA({"--timeout", "5x"}), "voxdb: --timeout '5x' is not a duration"},
      {WatchA({"--timeout", "1.5s"}), "voxdb: --timeout '1.5s' is not a duration"},
      {WatchA({"--timeout", "2000000s"}), "voxdb: --timeout 2000000s is over 1000000 seconds"},
      {WatchA({"--alt-min", "0"}), "watch: --alt-min and --alt-max go together"},
      {WatchA({"--limit", "5"}), "watch: there is no option --limit for this command"},
      {WatchA({"--all"}), "watch: there is no option --all for this command"},
      {WatchA({"--lod", "1"}), "watch: there is no option --lod for this command"},
      {{"query", "box", "0", "0", "0", "4", "4", "4", "--count", "1"},
       "query: there is no option --count for this command (watch takes it)"},
      {{"ping", "--from", "3"},
       "ping: there is no option --from for this command (watch takes it)"},
      {{"ping", "--alt-min", "0", "--alt-max", "1"},
       "ping: there is no option --alt-min for this command (query and watch take it)"},
  };
  for (auto [args, message] : cases) {
    std::string shown;
    for (const auto& a : args) shown += " '" + a + "'";
    args.insert(args.begin(), {"--address", "127.0.0.1:1"});
    const CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 2) << "voxdb" << shown << "\n" << r;
    EXPECT_TRUE(r.out.empty()) << shown << "\n" << r;
    EXPECT_TRUE(r.err.starts_with("voxdb: ")) << shown << "\n" << r;
    EXPECT_NE(r.err.find(message), std::string::npos) << shown << "\n" << r;
    EXPECT_NE(r.err.find("see voxdb --help"), std::string::npos) << shown << "\n" << r;
  }
  // --timeout takes a duration for every command.
  EXPECT_EQ(Cli({"--timeout", "2500ms", "ping"}).exit_code, 0);
  EXPECT_EQ(Cli({"--timeout", "1m", "ping"}).exit_code, 0);
}

TEST_F(CliWatchTest, WatchHelpDescribesItsLinesAndOptions) {
  CliResult r = RunCli({"watch", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r;
  for (const char* text :
       {"usage: voxdb [options] watch radius|cell|rect|box ARGS...\n",
        "\n  seq S chunk CX,CY,CZ key KEY changed ", "\n  seq S chunk CX,CY,CZ key KEY deleted ",
        "\n  seq S fill box X0 Y0 Z0 X1 Y1 Z1 material M\n", "\n  --from SEQ ",
        "\n  --detail voxels ", "\n  --detail records ", "\n  --count N ",
        "\n  --timeout DURATION ", "--alt-min MIN --alt-max MAX", "RESYNC", "SIGINT"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << " missing from\n" << r;
  }
  r = RunCli({"--help"});
  EXPECT_NE(r.out.find("\n  watch radius|cell|rect|box ARGS...  "), std::string::npos) << r;
}

// --- The client calls the CLI is built on -----------------------------------

TEST_F(CliTest, ClientCallBatchAnswersInRequestOrder) {
  for (size_t in_flight : {size_t{1}, size_t{16}, size_t{128}}) {
    protocol::ClientOptions options;
    options.max_in_flight = in_flight;
    ASSERT_OK_AND_ASSIGN(auto c, Client::Connect("127.0.0.1", daemon_.port(), options));
    ASSERT_OK(c->Hello(""));
    std::vector<protocol::Request> requests;
    for (uint64_t i = 0; i < 500; ++i) {
      const protocol::Voxel3 at{kX + i, kY + in_flight, kZ};
      requests.push_back(
          {Opcode::kSetVoxels,
           protocol::SetVoxelsRequest{{{at, static_cast<uint8_t>(i % 250 + 1)}}}.Encode()});
      requests.push_back({Opcode::kGetVoxels, protocol::GetVoxelsRequest{{at}}.Encode()});
    }
    requests[301] = {Opcode::kGetVoxels, protocol::GetVoxelsRequest{{{0, 0, 80'000'000}}}.Encode()};
    requests.push_back({Opcode::kPing, {1, 2, 3}});
    const auto results = c->CallBatch(requests);
    ASSERT_EQ(results.size(), requests.size());
    for (size_t i = 0; i + 1 < requests.size(); i += 2) {
      ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].status();
      ASSERT_OK_AND_ASSIGN(uint64_t version, protocol::DecodeU64(*results[i]));
      EXPECT_GT(version, 0u);
      if (i + 1 == 301) {
        EXPECT_TRUE(IsOutOfBounds(results[i + 1].status())) << results[i + 1].status();
        EXPECT_EQ(protocol::ServerStatusOf(results[i + 1].status()), WireStatus::kOutOfBounds);
        continue;
      }
      ASSERT_TRUE(results[i + 1].ok()) << i + 1 << ": " << results[i + 1].status();
      EXPECT_EQ(*results[i + 1], std::vector<uint8_t>{static_cast<uint8_t>(i / 2 % 250 + 1)}) << i;
    }
    EXPECT_EQ(results.back().value(), (std::vector<uint8_t>{1, 2, 3}));
  }
}

// Large requests and large replies interleaved, against a server that stops
// reading a connection while it owes it more than 256 KiB: the client reads
// replies while it sends, so neither side waits for the other forever.
TEST(CliClientTest, CallBatchReadsRepliesWhileSending) {
  TempDir dir;
  DaemonProcess daemon(VOXDBD_PATH, dir.Sub("data"),
                       {"--max-buffered-bytes", "256KiB", "--send-timeout", "5s"});
  protocol::ClientOptions options;
  options.io_timeout = std::chrono::seconds(60);
  ASSERT_OK_AND_ASSIGN(auto c, Client::Connect("127.0.0.1", daemon.port(), options));
  ASSERT_OK(c->Hello(""));
  // Small socket buffers, so that the kernel cannot absorb the replies.
  const int small = 64 * 1024;
  setsockopt(c->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  setsockopt(c->fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  const protocol::Box box{{kX, kY, kZ}, {kX + 64, kY + 64, kZ + 64}};  // 256 KiB
  const std::vector<uint8_t> voxels = RandomBytes(64 * 64 * 64, 3);
  protocol::BoxRequest read;
  read.box = box;
  protocol::BoxRequest write = read;
  write.voxels = voxels;
  std::vector<protocol::Request> requests;
  for (int i = 0; i < 100; ++i) {
    requests.push_back({Opcode::kReadBox, read.EncodeReadBox()});
    requests.push_back({Opcode::kWriteBox, write.EncodeWriteBox()});
  }
  const auto results = c->CallBatch(requests);
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].status();
    if (i % 2 == 0) {
      EXPECT_EQ(results[i]->size(), voxels.size());
    }
  }
  ASSERT_OK_AND_ASSIGN(auto back, c->ReadBox(box));
  EXPECT_EQ(back, voxels);
}

TEST_F(CliTest, ClientTypedCallsRoundTrip) {
  auto c = Connect();
  EXPECT_OK(c->Ping(std::vector<uint8_t>{9, 8, 7}));
  const protocol::Box box{{kX, kY, kZ}, {kX + 4, kY + 2, kZ + 1}};
  ASSERT_OK_AND_ASSIGN(uint64_t v1, c->WriteBox(box, std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  ASSERT_OK_AND_ASSIGN(auto read, c->ReadBox(box));
  EXPECT_EQ(read, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  ASSERT_OK_AND_ASSIGN(uint64_t v2, c->FillBox(box, 6));
  EXPECT_GT(v2, v1);
  ASSERT_OK_AND_ASSIGN(read, c->ReadBox(box));
  EXPECT_EQ(read, std::vector<uint8_t>(8, 6));

  const uint64_t a = engine::ChunkKey::FromCoord(kChunkA).code();
  const uint64_t b = engine::ChunkKey::FromCoord(kChunkB).code();
  const uint64_t codes[] = {a, b};
  ASSERT_OK_AND_ASSIGN(protocol::GetChunksReply chunks, c->GetChunks(codes));
  ASSERT_EQ(chunks.results.size(), 2u);
  EXPECT_EQ(chunks.results[0].status, 0);
  EXPECT_EQ(chunks.results[0].version, v2);
  ASSERT_OK_AND_ASSIGN(uint64_t v3, c->PutChunk({b, std::nullopt, chunks.results[0].bytes}));
  EXPECT_GT(v3, v2);
  auto stale = c->PutChunk({b, v2, chunks.results[0].bytes});
  EXPECT_EQ(protocol::ServerStatusOf(stale.status()), WireStatus::kConflict) << stale.status();
  ASSERT_OK_AND_ASSIGN(auto got, c->GetVoxels({{{kX + 256 + 3, kY + 1, kZ}}}));
  EXPECT_EQ(got[0], 6);
  ASSERT_OK_AND_ASSIGN(uint64_t v4, c->DeleteChunk(b));
  EXPECT_GT(v4, v3);
  ASSERT_OK_AND_ASSIGN(got, c->GetVoxels({{{kX + 256 + 3, kY + 1, kZ}}}));
  EXPECT_EQ(got[0], 0);
  EXPECT_OK(c->Flush());
  ASSERT_OK_AND_ASSIGN(std::string stats, c->Stats());
  EXPECT_NE(stats.find("\nflushes "), std::string::npos) << stats;
}

TEST(CliClientTest, TransportErrorsCarryNoWireStatus) {
  auto refused = Client::Connect("127.0.0.1", DeadPort());
  EXPECT_TRUE(IsUnreachable(refused.status())) << refused.status();
  EXPECT_FALSE(protocol::ServerStatusOf(refused.status()).has_value());

  TempDir dir;
  auto daemon = std::make_unique<DaemonProcess>(VOXDBD_PATH, dir.Sub("data"));
  ASSERT_OK_AND_ASSIGN(auto c, Client::Connect("127.0.0.1", daemon->port()));
  ASSERT_OK(c->Hello(""));
  daemon.reset();  // SIGKILL
  auto lost = c->Call(Opcode::kPing, {});
  EXPECT_TRUE(IsUnreachable(lost.status())) << lost.status();
  EXPECT_FALSE(protocol::ServerStatusOf(lost.status()).has_value());
  const auto batch = c->CallBatch(std::vector<protocol::Request>(3));
  for (const auto& r : batch) {
    EXPECT_TRUE(IsUnreachable(r.status())) << r.status();
  }
  EXPECT_EQ(protocol::ServerStatusOf(protocol::ServerError(WireStatus::kBusy, "later")),
            WireStatus::kBusy);
  EXPECT_TRUE(IsBusy(protocol::ServerError(WireStatus::kBusy, "later")));
}

TEST(CliClientTest, ReceiveTimesOutWhenTheServerIsSilent) {
  // A listener that accepts (the kernel does) but never answers.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  protocol::ClientOptions options;
  options.io_timeout = std::chrono::milliseconds(200);
  ASSERT_OK_AND_ASSIGN(auto c, Client::Connect("127.0.0.1", ntohs(addr.sin_port), options));
  auto hello = c->Hello("");
  EXPECT_TRUE(absl::IsDeadlineExceeded(hello.status())) << hello.status();
  EXPECT_FALSE(protocol::ServerStatusOf(hello.status()).has_value());
  // The CLI with --timeout: unreachable, exit 3.
  const CliResult r = RunCli(
      {"--timeout", "1", "--address", "127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), "ping"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: UNREACHABLE: ")) << r;
  close(fd);
}

// A sparse file of `size` bytes (no disk used): ftruncate.
void MakeSparseFile(const std::string& path, uint64_t size) {
  { std::ofstream create(path, std::ios::binary); }
  ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(size)), 0) << path << ": " << strerror(errno);
}

// The CLI ended by itself (no signal, no abort) with `code` and one clear
// error line on stderr holding `message`.
void ExpectCleanFailure(const CliResult& r, int code, const std::string& message) {
  EXPECT_EQ(r.exit_code, code) << r;  // 128 + signal when killed
  EXPECT_TRUE(r.err.starts_with("voxdb: ")) << r;
  EXPECT_NE(r.err.find(message), std::string::npos) << "want: " << message << "\n" << r;
  EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r;
}

constexpr uint64_t kTiB = uint64_t{1} << 40;

// write-box with a box and file of 1 TiB: the box is refused against the
// server's limit before the file is read (it used to be read into memory:
// std::bad_alloc, SIGABRT).
TEST_F(CliTest, WriteBoxOfATebibyteIsRefusedBeforeReadingTheFile) {
  const std::string big = File("big.raw");
  MakeSparseFile(big, kTiB);
  // 16384 x 16384 x 4096 = 2^40 voxels.
  CliResult r = Cli({"write-box", "0", "0", "0", "16384", "16384", "4096", big});
  ExpectCleanFailure(r, 1, "TOO_LARGE: the box has 1099511627776 voxels; the server takes at most");
  // A file that does not match the box is still a usage error, before connecting.
  r = RunCli({"--address", "127.0.0.1:1", "write-box", "0", "0", "0", "4", "4", "4", big});
  ExpectCleanFailure(r, 2, "has 1099511627776 bytes; the box needs exactly 64");
}

// put-chunk with a 1 TiB file: refused before it is read (used to be
// std::bad_alloc, SIGABRT); a file over this server's frame limit is
// refused after HELLO, still without reading it.
TEST_F(CliTest, PutChunkOfAHugeFileIsRefusedBeforeReadingIt) {
  const std::string big = File("big.rec");
  MakeSparseFile(big, kTiB);
  CliResult r = RunCli({"--address", "127.0.0.1:1", "put-chunk", "0", big});
  ExpectCleanFailure(r, 2,
                     "has 1099511627776 bytes; a chunk record is at most 2147483631 (it travels "
                     "in one frame");
  const std::string over = File("over.rec");
  MakeSparseFile(over, 100 << 20);  // the daemon's frame limit is 64 MiB
  r = Cli({"put-chunk", "0", over});
  ExpectCleanFailure(r, 1,
                     "TOO_LARGE: FILE '" + over +
                         "' has 104857600 bytes; the server takes a chunk record of at most "
                         "67108847 (frames of at most 67108864 bytes)");
}

}  // namespace
}  // namespace voxdb

namespace voxdb {
namespace {

// A box wider than the server's chunk limit for one READ_BOX / WRITE_BOX
// (1,024 chunks: a 4,200 x 4,200 x 1 layer crosses 34 x 34 = 1,156) is
// refused whole by the server with TOO_LARGE; the CLI splits it into
// blocks of whole chunks that are not, and the bytes come back the same.
TEST_F(CliTest, ALayerAcrossMoreChunksThanOneRequestTakesTravelsInBlocks) {
  constexpr uint64_t kSide = 4200;
  const uint64_t x0 = kX + 5, y0 = kY + 7;
  const protocol::Box layer{{x0, y0, kZ}, {x0 + kSide, y0 + kSide, kZ + 1}};
  auto c = Connect();
  const auto refused = c->ReadBox(layer);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(protocol::ServerStatusOf(refused.status()), WireStatus::kTooLarge) << refused.status();
  std::vector<uint8_t> voxels = RandomBytes(kSide * kSide, 3);
  WriteBytes(File("layer.raw"), voxels);
  std::vector<std::string> args = {"write-box",
                                   std::to_string(x0),
                                   std::to_string(y0),
                                   std::to_string(kZ),
                                   std::to_string(x0 + kSide),
                                   std::to_string(y0 + kSide),
                                   std::to_string(kZ + 1),
                                   File("layer.raw")};
  CliResult r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  args[0] = "read-box";
  args.back() = File("back.raw");
  r = Cli(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(ReadBytes(File("back.raw")) == voxels);
}

}  // namespace
}  // namespace voxdb

namespace voxdb {
namespace {

// The fills example of docs/DESIGN.md (section 6) through the CLI: everything
// deeper than 10 km is rock, planet-wide (about 10^23 voxels, more than 2^64): one FILL_BOX, and
// both ends of the world read as it.
TEST_F(CliTest, ThePlanetWideFillIsOneCommand) {
  // The Earth frame: 160,300,080 x 80,150,040 voxels; sea level at z 40,000,000.
  CliResult r = Cli({"fill", "0", "0", "0", "160300080", "80150040", "39960000", "7"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(OkVersion(r.out).has_value()) << r;
  r = Cli({"get-voxel", "0", "0", "0"});
  EXPECT_EQ(r.out, "7\n") << r;
  r = Cli({"get-voxel", "160300079", "80150039", "39959999"});
  EXPECT_EQ(r.out, "7\n") << r;
  r = Cli({"get-voxel", "160300079", "80150039", "39960000"});
  EXPECT_EQ(r.out, "0\n") << r;
}

}  // namespace
}  // namespace voxdb
