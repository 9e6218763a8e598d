// The standard test region and the helpers the daemon tests address it with.
//
// The region starts at chunk (kCx, kCy, kCz) of the default (Earth) world
// frame: at sea level in Europe (chunk layer kCz starts at altitude 0), with
// all three coordinates multiples of 4, so that 2x2x2 and 4x4x4 blocks from
// it are whole LOD nodes. kX, kY, kZ are its first voxel. Chunks are
// addressed along x from there: Code(dx), VoxelOf(dx, i), ChunkRow(from, to).
//
// Example:
//   auto c = testing::ConnectWithHello(daemon.port());
//   ASSERT_OK(c->SetVoxels({{{testing::VoxelOf(0), 5}}}).status());
//   const uint64_t code = testing::Code(0);
//
// Thread-safety: constants and free functions, stateless.
#ifndef VOXDB_TESTS_TESTING_WORLD_H_
#define VOXDB_TESTS_TESTING_WORLD_H_

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/morton.h"
#include "protocol/client.h"
#include "protocol/messages.h"
#include "tests/testing/wait.h"

namespace voxdb::testing {

// A chunk's edge in voxels.
inline constexpr uint64_t kEdge = 128;
// The region's first chunk.
inline constexpr uint64_t kCx = 1'000'000, kCy = 400'000, kCz = 312'500;
// The region's first voxel.
inline constexpr uint64_t kX = kCx * kEdge, kY = kCy * kEdge, kZ = kCz * kEdge;
static_assert(kX == 128'000'000 && kY == 51'200'000 && kZ == 40'000'000);

// The Morton code of chunk (kCx + dx, kCy, kCz).
inline uint64_t Code(uint64_t dx = 0) {
  return engine::ChunkKey::FromCoord({static_cast<uint32_t>(kCx + dx), static_cast<uint32_t>(kCy),
                                      static_cast<uint32_t>(kCz)})
      .code();
}

// Voxel `i` of chunk Code(dx): i runs along x, then y (i < 128 * 128), in
// the chunk's layer z = 4.
inline protocol::Voxel3 VoxelOf(uint64_t dx, uint64_t i = 0) {
  return {(kCx + dx) * kEdge + i % kEdge, kCy * kEdge + i / kEdge % kEdge, kCz * kEdge + 4};
}

// The box of chunks [from, to) along x: whole chunks, one deep in y and z.
inline protocol::Box ChunkRow(uint64_t from, uint64_t to) {
  return {{(kCx + from) * kEdge, kCy * kEdge, kCz * kEdge},
          {(kCx + to) * kEdge, (kCy + 1) * kEdge, (kCz + 1) * kEdge}};
}

// The secret of a `--token` argument ROLE:SECRET.
inline std::string Secret(const std::string& token) { return token.substr(token.find(':') + 1); }

// A client of the server on 127.0.0.1:port; `io_timeout` (0: none) is
// Scaled. A test failure and nullptr when it cannot connect.
inline std::unique_ptr<protocol::Client> Connect(
    uint16_t port, std::chrono::milliseconds io_timeout = std::chrono::milliseconds(0)) {
  protocol::ClientOptions o;
  o.io_timeout = Scaled(io_timeout);
  auto c = protocol::Client::Connect("127.0.0.1", port, o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

// Connect, then HELLO with `token` ("" with no tokens configured). A test
// failure and nullptr when either fails.
inline std::unique_ptr<protocol::Client> ConnectWithHello(
    uint16_t port, const std::string& token = "",
    std::chrono::milliseconds io_timeout = std::chrono::milliseconds(0)) {
  auto c = Connect(port, io_timeout);
  if (c == nullptr) return nullptr;
  auto hello = c->Hello(token);
  EXPECT_TRUE(hello.ok()) << hello.status();
  return hello.ok() ? std::move(c) : nullptr;
}

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_WORLD_H_
