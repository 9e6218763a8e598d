// voxdb export / import (Zarr v2) against a real voxdbd, checked with
// zarr-python (/usr/bin/python3, tests/integration/cli_zarr_check.py).
// Skipped when python3-zarr is not installed.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/morton.h"
#include "engine/world_frame.h"
#include "protocol/client.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/run_process.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terrain.h"

namespace voxdb {
namespace {

using engine::ChunkCoord;
using protocol::Box;
using protocol::Client;

constexpr uint64_t kEdge = engine::kChunkEdge;
constexpr char kPython[] = "/usr/bin/python3";

bool HaveZarr() {
  return std::system(
             absl::StrCat(kPython, " -c 'import zarr, numcodecs' >/dev/null 2>&1").c_str()) == 0;
}

// Runs a shell command; its exit status, its output in *out.
int Shell(const std::string& command, std::string* out = nullptr) {
  static int counter = 0;
  const std::string file = absl::StrCat(std::filesystem::temp_directory_path().string(),
                                        "/cli_zarr_test.", getpid(), ".", counter++, ".out");
  const int status = std::system(absl::StrCat(command, " >", file, " 2>&1").c_str());
  std::ifstream f(file);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::filesystem::remove(file);
  if (out != nullptr) *out = text;
  if (!text.empty()) std::fprintf(stderr, "$ %s\n%s", command.c_str(), text.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string BoxArgs(const Box& b) {
  return absl::StrCat(b.lo.x, " ", b.lo.y, " ", b.lo.z, " ", b.hi.x, " ", b.hi.y, " ", b.hi.z);
}

uint64_t Volume(const Box& b) { return (b.hi.x - b.lo.x) * (b.hi.y - b.lo.y) * (b.hi.z - b.lo.z); }

bool Inside(const Box& b, uint64_t x, uint64_t y, uint64_t z) {
  return x >= b.lo.x && x < b.hi.x && y >= b.lo.y && y < b.hi.y && z >= b.lo.z && z < b.hi.z;
}

void WriteRaw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::vector<uint8_t> ReadRaw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)),
                              std::istreambuf_iterator<char>());
}

// A running voxdbd with a connected client.
struct Server {
  explicit Server(const std::string& data)
      : daemon(VOXDBD_PATH, data, {"--metrics-listen", "off"}) {
    auto c = Client::Connect("127.0.0.1", daemon.port());
    EXPECT_TRUE(c.ok()) << c.status();
    client = std::move(*c);
    auto h = client->Hello("");
    EXPECT_TRUE(h.ok()) << h.status();
    auto f = engine::WorldFrame::Decode(h->world_frame);
    EXPECT_TRUE(f.ok()) << f.status();
    extent = {f->extent_x(), f->extent_y(), f->extent_z()};
  }
  std::string Cli(const std::string& args) const {
    return absl::StrCat(VOXDB_CLI_PATH, " --address 127.0.0.1:", daemon.port(), " ", args);
  }
  std::string WorldArgs() const { return absl::StrCat(extent[0], " ", extent[1], " ", extent[2]); }
  testing::DaemonProcess daemon;
  std::unique_ptr<Client> client;
  std::array<uint64_t, 3> extent{};
};

std::string Check(const std::string& store, const Box& box, const std::string& raw,
                  const std::string& compressor) {
  return absl::StrCat(kPython, " ", ZARR_CHECK_PY, " check ", store, " ", BoxArgs(box), " ", raw,
                      " ", compressor);
}

TEST(CliZarrExport, ZarrPythonReadsTerrainAndFills) {
  if (!HaveZarr()) GTEST_SKIP() << "python3-zarr is not installed";
  testing::TempDir dir;
  Server server(dir.Sub("db"));
  const auto [cx, cy, cz] = testing::SampleSurfaceChunkCoords(1);
  testing::TerrainGenerator terrain;

  // R: 3 x 3 x 3 chunks; the bottom layer is stored terrain, a fill in the
  // top layer, the middle layer empty.
  const Box region{{cx * kEdge, cy * kEdge, cz * kEdge},
                   {(cx + 3) * kEdge, (cy + 3) * kEdge, (cz + 3) * kEdge}};
  const uint64_t sx = 3 * kEdge, sy = 3 * kEdge;
  std::vector<uint8_t> expected(Volume(region), 0);
  for (uint32_t j = 0; j < 3; ++j) {
    for (uint32_t i = 0; i < 3; ++i) {
      std::vector<uint8_t> dense = terrain.Chunk(cx + i, cy + j, cz);
      engine::Chunk chunk = engine::Chunk::FromDense(dense);
      chunk.Compact();
      protocol::PutChunkRequest put;
      put.code = engine::MortonEncode(cx + i, cy + j, cz);
      put.record = engine::EncodeChunk(chunk, 0, engine::NowMicros());
      ASSERT_TRUE(server.client->PutChunk(put).ok());
      for (uint64_t z = 0; z < kEdge; ++z) {
        for (uint64_t y = 0; y < kEdge; ++y) {
          for (uint64_t x = 0; x < kEdge; ++x) {
            expected[(z * sy + j * kEdge + y) * sx + i * kEdge + x] =
                dense[(z * kEdge + y) * kEdge + x];
          }
        }
      }
    }
  }
  const Box fill{{region.lo.x + 100, region.lo.y + 5, region.lo.z + 2 * kEdge + 10},
                 {region.lo.x + 2 * kEdge + 20, region.lo.y + 300, region.lo.z + 2 * kEdge + 40}};
  ASSERT_TRUE(server.client->FillBox(fill, 9).ok());
  for (uint64_t z = fill.lo.z; z < fill.hi.z; ++z) {
    for (uint64_t y = fill.lo.y; y < fill.hi.y; ++y) {
      for (uint64_t x = fill.lo.x; x < fill.hi.x; ++x) {
        expected[((z - region.lo.z) * sy + y - region.lo.y) * sx + x - region.lo.x] = 9;
      }
    }
  }
  // The server agrees with what was written.
  auto read = server.client->ReadBox(region);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(*read == expected);
  const std::string raw = dir.Sub("expected.raw");
  WriteRaw(raw, expected);

  for (const std::string compressor : {"zstd", "blosc"}) {
    SCOPED_TRACE(compressor);
    const std::string store = dir.Sub(absl::StrCat("export-", compressor));
    ASSERT_EQ(Shell(server.Cli(absl::StrCat("export --out ", store, " --compressor ", compressor))),
              0);
    EXPECT_EQ(Shell(Check(store, region, raw, compressor)), 0);
    // 9 terrain chunks (not all 0) and the 3 x 3 chunks of the fill.
    size_t files = 0;
    for (const auto& e : std::filesystem::directory_iterator(store + "/world_voxels")) {
      if (e.path().filename().string()[0] != '.') ++files;
    }
    EXPECT_EQ(files, 18u);
  }

  // --lod 3: the LOD arrays equal a brute-force mode downsampling of
  // world_voxels (zarr-python and numpy), for both compressors.
  for (const std::string compressor : {"zstd", "blosc"}) {
    SCOPED_TRACE(absl::StrCat("lod ", compressor));
    const std::string store = dir.Sub(absl::StrCat("export-lod-", compressor));
    std::string out;
    ASSERT_EQ(Shell(server.Cli(
                        absl::StrCat("export --lod 3 --compressor ", compressor, " --out ", store)),
                    &out),
              0);
    EXPECT_NE(out.find("LOD chunks"), std::string::npos) << out;
    EXPECT_EQ(Shell(Check(store, region, raw, compressor)), 0);
    EXPECT_EQ(Shell(absl::StrCat(kPython, " ", ZARR_CHECK_PY, " check-lod ", store, " 3 ",
                                 BoxArgs(region))),
              0);
  }
  EXPECT_NE(Shell(server.Cli(absl::StrCat("export --lod 17 --out ", dir.Sub("x")))), 0);

  // --box: voxels outside it are 0.
  const Box box{{region.lo.x + 60, region.lo.y + 130, region.lo.z + 20},
                {region.lo.x + 290, region.lo.y + 200, region.lo.z + 2 * kEdge + 30}};
  std::vector<uint8_t> cropped = expected;
  for (uint64_t z = 0; z < 3 * kEdge; ++z) {
    for (uint64_t y = 0; y < sy; ++y) {
      for (uint64_t x = 0; x < sx; ++x) {
        if (!Inside(box, region.lo.x + x, region.lo.y + y, region.lo.z + z)) {
          cropped[(z * sy + y) * sx + x] = 0;
        }
      }
    }
  }
  const std::string cropped_raw = dir.Sub("cropped.raw");
  WriteRaw(cropped_raw, cropped);
  const std::string store = dir.Sub("export-box");
  ASSERT_EQ(Shell(server.Cli(absl::StrCat("export --out ", store, " --box ", BoxArgs(box)))), 0);
  EXPECT_EQ(Shell(Check(store, region, cropped_raw, "zstd")), 0);
}

// An export reads one snapshot: a writer that sets two chunks far apart in
// Morton order (read in different requests) to the same value in one
// SET_VOXELS, over and over while the export runs, is seen at one moment.
TEST(CliZarrExport, ReadsOneSnapshot) {
  if (!HaveZarr()) GTEST_SKIP() << "python3-zarr is not installed";
  testing::TempDir dir;
  Server server(dir.Sub("db"));
  const auto [cx, cy, cz] = testing::SampleSurfaceChunkCoords(1);
  testing::TerrainGenerator terrain;
  // 8 x 8 columns of stored terrain: the export asks for them in many batches.
  for (uint32_t j = 0; j < 8; ++j) {
    for (uint32_t i = 0; i < 8; ++i) {
      protocol::PutChunkRequest put;
      put.code = engine::MortonEncode(cx + i, cy + j, cz);
      put.record = engine::EncodeChunk(engine::Chunk::FromDense(terrain.Chunk(cx + i, cy + j, cz)),
                                       0, engine::NowMicros());
      ASSERT_TRUE(server.client->PutChunk(put).ok());
    }
  }
  // The first and the last of them in Morton order.
  const protocol::Voxel3 a{cx * kEdge + 1, cy * kEdge + 1, cz * kEdge + 1};
  const protocol::Voxel3 b{(cx + 7) * kEdge + 1, (cy + 7) * kEdge + 1, cz * kEdge + 1};
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0};
  std::thread writer([&] {
    auto c = Client::Connect("127.0.0.1", server.daemon.port());
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE((*c)->Hello("").ok());
    for (uint8_t g = 1; !stop.load(); g = static_cast<uint8_t>(g % 250 + 1)) {
      ASSERT_TRUE((*c)->SetVoxels({{{a, g}, {b, g}}}).ok());
      ++writes;
    }
  });
  while (writes.load() < 10) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (int round = 0; round < 3; ++round) {
    const std::string store = dir.Sub(absl::StrCat("export-", round));
    ASSERT_EQ(Shell(server.Cli(absl::StrCat("export --out ", store))), 0);
    std::string va, vb;
    ASSERT_EQ(Shell(absl::StrCat(kPython, " ", ZARR_CHECK_PY, " voxel ", store, " ", a.x, " ", a.y,
                                 " ", a.z),
                    &va),
              0);
    ASSERT_EQ(Shell(absl::StrCat(kPython, " ", ZARR_CHECK_PY, " voxel ", store, " ", b.x, " ", b.y,
                                 " ", b.z),
                    &vb),
              0);
    EXPECT_EQ(va, vb) << "the two chunks come from different moments";
  }
  stop = true;
  writer.join();
  EXPECT_GT(writes.load(), 10);
}

TEST(CliZarrImport, ZstdAndBloscWithBothSeparators) {
  if (!HaveZarr()) GTEST_SKIP() << "python3-zarr is not installed";
  const auto [cx, cy, cz] = testing::SampleSurfaceChunkCoords(1);
  // Partly covers 3 x 2 x 2 chunks.
  const Box region{{cx * kEdge + 50, cy * kEdge + 20, cz * kEdge + 100},
                   {cx * kEdge + 300, cy * kEdge + 150, cz * kEdge + 200}};
  int seed = 1;
  for (const std::string compressor : {"zstd", "blosc"}) {
    for (const std::string sep : {".", "/"}) {
      SCOPED_TRACE(absl::StrCat(compressor, " '", sep, "'"));
      testing::TempDir dir;
      Server server(dir.Sub("db"));
      const std::string store = dir.Sub("store");
      const std::string raw = dir.Sub("data.raw");
      ASSERT_EQ(Shell(absl::StrCat(kPython, " ", ZARR_CHECK_PY, " make ", store, " ", compressor,
                                   " ", sep, " ", server.WorldArgs(), " ", BoxArgs(region), " ",
                                   raw, " ", seed++)),
                0);
      ASSERT_EQ(Shell(server.Cli(absl::StrCat("import ", store))), 0);
      const std::vector<uint8_t> data = ReadRaw(raw);
      auto read = server.client->ReadBox(region);
      ASSERT_TRUE(read.ok()) << read.status();
      EXPECT_TRUE(*read == data);
      // The rest of the chunks written reads 0 (the array's fill value).
      const Box beside{{region.lo.x - 40, region.lo.y, region.lo.z},
                       {region.lo.x, region.lo.y + 10, region.lo.z + 10}};
      auto zeros = server.client->ReadBox(beside);
      ASSERT_TRUE(zeros.ok()) << zeros.status();
      EXPECT_EQ(*zeros, std::vector<uint8_t>(Volume(beside), 0));

      // --box into a server where everything is 7: only the box changes.
      testing::TempDir dir2;
      Server other(dir2.Sub("db"));
      ASSERT_TRUE(other.client->FillBox(region, 7).ok());
      const Box box{{region.lo.x + 70, region.lo.y + 1, region.lo.z + 3},
                    {region.lo.x + 200, region.lo.y + 90, region.lo.z + 99}};
      ASSERT_EQ(Shell(other.Cli(absl::StrCat("import ", store, " --box ", BoxArgs(box)))), 0);
      auto got = other.client->ReadBox(region);
      ASSERT_TRUE(got.ok()) << got.status();
      const uint64_t sx = region.hi.x - region.lo.x, sy = region.hi.y - region.lo.y;
      uint64_t wrong = 0;
      for (uint64_t z = 0; z < region.hi.z - region.lo.z; ++z) {
        for (uint64_t y = 0; y < sy; ++y) {
          for (uint64_t x = 0; x < sx; ++x) {
            const uint64_t at = (z * sy + y) * sx + x;
            const uint8_t want =
                Inside(box, region.lo.x + x, region.lo.y + y, region.lo.z + z) ? data[at] : 7;
            wrong += (*got)[at] != want;
          }
        }
      }
      EXPECT_EQ(wrong, 0u);
    }
  }
}

// More chunks than import and export keep in flight (their worker windows
// and the pipelined writes), terrain, noise and uniform: the round trip
// gives each chunk the record that Chunk::FromDense gives (canonical, so
// byte for byte the same payload), and a bad chunk file fails the import.
TEST(CliZarrRoundTrip, ManyChunksKeepTheirRecords) {
  if (!HaveZarr()) GTEST_SKIP() << "python3-zarr is not installed";
  testing::TempDir dir;
  Server server(dir.Sub("db"));
  const auto [cx, cy, cz] = testing::SampleSurfaceChunkCoords(1);
  testing::TerrainGenerator terrain;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> chunks;  // code, dense
  for (uint32_t z = 0; z < 2; ++z) {
    for (uint32_t y = 0; y < 4; ++y) {
      for (uint32_t x = 0; x < 6; ++x) {
        chunks.emplace_back(engine::MortonEncode(cx + x, cy + y, cz - 1 + z),
                            terrain.Chunk(cx + x, cy + y, cz - 1 + z));
      }
    }
  }
  chunks.emplace_back(engine::MortonEncode(cx, cy, cz + 3), testing::NoiseChunk(3));
  chunks.emplace_back(engine::MortonEncode(cx + 1, cy, cz + 3), testing::UniformChunk(5));
  size_t nonzero = 0;
  for (const auto& [code, dense] : chunks) {
    protocol::PutChunkRequest put;
    put.code = code;
    put.record = engine::EncodeChunk(engine::Chunk::FromDense(dense), 0, engine::NowMicros());
    ASSERT_TRUE(server.client->PutChunk(put).ok());
    nonzero += std::any_of(dense.begin(), dense.end(), [](uint8_t v) { return v != 0; });
  }
  ASSERT_GT(nonzero, 40u);

  for (const std::string compressor : {"zstd", "blosc"}) {
    SCOPED_TRACE(compressor);
    const std::string store = dir.Sub(absl::StrCat("export-", compressor));
    ASSERT_EQ(Shell(server.Cli(absl::StrCat("export --out ", store, " --compressor ", compressor))),
              0);
    testing::TempDir dir2;
    Server other(dir2.Sub("db"));
    ASSERT_EQ(Shell(other.Cli(absl::StrCat("import ", store))), 0);
    for (const auto& [code, dense] : chunks) {
      const ChunkCoord c = engine::MortonDecode(code);
      SCOPED_TRACE(absl::StrCat("chunk ", c.x, ",", c.y, ",", c.z));
      const std::vector<uint64_t> ask = {code};
      auto got = other.client->GetChunks(ask);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(got->results.size(), 1u);
      const bool all_zero =
          std::all_of(dense.begin(), dense.end(), [](uint8_t v) { return v == 0; });
      if (all_zero) {  // no chunk file, nothing written
        EXPECT_EQ(got->results[0].status, static_cast<uint16_t>(protocol::WireStatus::kNotFound));
        continue;
      }
      ASSERT_EQ(got->results[0].status, static_cast<uint16_t>(protocol::WireStatus::kOk));
      auto view = engine::ParseChunkRecord(got->results[0].bytes);
      ASSERT_TRUE(view.ok()) << view.status();
      const std::vector<uint8_t> want_record =
          engine::EncodeChunk(engine::Chunk::FromDense(dense), 0, 0);
      auto want = engine::ParseChunkRecord(want_record);
      ASSERT_TRUE(want.ok()) << want.status();
      EXPECT_EQ(view->header.encoding, want->header.encoding);
      EXPECT_TRUE(std::equal(view->payload.begin(), view->payload.end(), want->payload.begin(),
                             want->payload.end()));
    }
  }

  // A chunk file that is not a zstd frame: the import fails naming it.
  const std::string store = dir.Sub("export-zstd");
  const ChunkCoord bad = engine::MortonDecode(chunks[10].first);
  const std::string bad_file = absl::StrCat(store, "/world_voxels/", bad.z, ".", bad.y, ".", bad.x);
  ASSERT_TRUE(std::filesystem::exists(bad_file));
  WriteRaw(bad_file, std::vector<uint8_t>(100, 0xab));
  testing::TempDir dir3;
  Server third(dir3.Sub("db"));
  std::string out;
  EXPECT_EQ(Shell(third.Cli(absl::StrCat("import ", store)), &out), 1);
  EXPECT_NE(out.find(absl::StrCat(bad_file, ": not a zstd frame of 128^3 bytes")),
            std::string::npos)
      << out;
}

TEST(CliZarrImport, RefusesOtherLayouts) {
  if (!HaveZarr()) GTEST_SKIP() << "python3-zarr is not installed";
  testing::TempDir dir;
  Server server(dir.Sub("db"));
  const std::string store = dir.Sub("bad");
  ASSERT_EQ(Shell(absl::StrCat(kPython, " ", ZARR_CHECK_PY, " make-bad ", store, " ",
                               server.WorldArgs())),
            0);
  std::string out;
  EXPECT_EQ(Shell(server.Cli(absl::StrCat("import ", store)), &out), 1);
  EXPECT_NE(out.find("chunks are not [128, 128, 128]"), std::string::npos) << out;
  EXPECT_NE(Shell(server.Cli(absl::StrCat("import ", dir.Sub("missing")))), 0);
  EXPECT_EQ(Shell(server.Cli(absl::StrCat("export --out ", dir.Sub("x"), " --compressor lz4"))), 2);
}

// A local file error is the CLI's own failure, not an unreachable server:
// INTERNAL, exit 1 (it used to read "UNREACHABLE", exit 3).
TEST(CliZarrExport, AnUnwritableOutputIsALocalErrorNotAnUnreachableServer) {
  testing::TempDir dir;
  Server server(dir.Sub("db"));
  const std::string file = dir.Sub("a-file");
  std::ofstream(file) << "not a directory";
  const auto r = testing::RunProcess({VOXDB_CLI_PATH, "--address",
                                      absl::StrCat("127.0.0.1:", server.daemon.port()), "export",
                                      "--out", file + "/store"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("voxdb: INTERNAL: cannot create " + file + "/store")) << r;
}

// Hostile stores (no zarr-python needed): a .zarray that is a directory or
// 1 TiB, a chunk file of 1 TiB, a symlink loop or a symlink to a real chunk
// file. Each import ends by itself, exit 1, with one line naming the path
// and the problem; none is skipped silently. (They used to abort the CLI:
// std::bad_alloc, an uncaught filesystem_error.)
TEST(CliZarrImport, HostileStoresGetAClearErrorNotAnAbort) {
  testing::TempDir dir;
  Server server(dir.Sub("db"));
  const std::string zarray =
      absl::StrCat("{\"zarr_format\": 2, \"shape\": [", server.extent[2], ", ", server.extent[1],
                   ", ", server.extent[0],
                   "], \"chunks\": [128, 128, 128], \"dtype\": \"|u1\", \"fill_value\": 0, "
                   "\"order\": \"C\", \"compressor\": {\"id\": \"zstd\", \"level\": 3}, "
                   "\"filters\": null, \"dimension_separator\": \".\"}\n");
  namespace fs = std::filesystem;
  int stores = 0;
  // A store whose world_voxels holds a valid .zarray (unless `zarray_ok` is
  // false, then nothing): its world_voxels directory.
  auto make_store = [&](bool zarray_ok) {
    const std::string store = dir.Sub(absl::StrCat("store", stores++));
    fs::create_directories(store + "/world_voxels");
    if (zarray_ok) {
      std::ofstream(store + "/world_voxels/.zarray") << zarray;
    }
    return store;
  };
  auto sparse = [](const std::string& path, uint64_t size) {
    { std::ofstream create(path, std::ios::binary); }
    ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(size)), 0) << path;
  };
  auto import = [&](const std::string& store) {
    return testing::RunProcess({VOXDB_CLI_PATH, "--address",
                                absl::StrCat("127.0.0.1:", server.daemon.port()), "import", store});
  };
  auto expect_error = [](const testing::ProcessResult& r, const std::string& message) {
    EXPECT_EQ(r.exit_code, 1) << r;  // 128 + signal when killed
    EXPECT_TRUE(r.err.starts_with("voxdb: INVALID: ")) << r;
    EXPECT_NE(r.err.find(message), std::string::npos) << "want: " << message << "\n" << r;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
  };
  constexpr uint64_t kTiB = uint64_t{1} << 40;

  std::string store = make_store(false);
  fs::create_directory(store + "/world_voxels/.zarray");
  expect_error(import(store), store + "/world_voxels/.zarray is not a regular file");

  store = make_store(false);
  sparse(store + "/world_voxels/.zarray", kTiB);
  expect_error(import(store),
               store + "/world_voxels/.zarray has 1099511627776 bytes; at most 1048576");

  store = make_store(true);
  sparse(store + "/world_voxels/0.0.0", kTiB);
  expect_error(import(store), store + "/world_voxels/0.0.0 has 1099511627776 bytes; at most ");

  store = make_store(true);
  fs::create_symlink("0.0.0", store + "/world_voxels/0.0.0");  // a loop
  expect_error(import(store), "world_voxels: '0.0.0' is a symbolic link: refused");

  // A symlink to a good chunk file is refused too, not read or skipped.
  store = make_store(true);
  const std::vector<uint8_t> dense(kEdge * kEdge * kEdge, 7);
  std::vector<uint8_t> frame(ZSTD_compressBound(dense.size()));
  frame.resize(ZSTD_compress(frame.data(), frame.size(), dense.data(), dense.size(), 3));
  WriteRaw(dir.Sub("elsewhere"), frame);
  fs::create_symlink(dir.Sub("elsewhere"), store + "/world_voxels/0.0.0");
  expect_error(import(store), "world_voxels: '0.0.0' is a symbolic link: refused");
  // ... and the same file in place imports.
  fs::remove(store + "/world_voxels/0.0.0");
  WriteRaw(store + "/world_voxels/0.0.0", frame);
  const testing::ProcessResult r = import(store);
  EXPECT_EQ(r.exit_code, 0) << r;
}

}  // namespace
}  // namespace voxdb
