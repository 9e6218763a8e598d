// Zarr v2 interchange of the CLI (`voxdb export`, `voxdb import`).
//
// The store is a Zarr v2 DirectoryStore:
//
//   DIR/.zgroup                {"zarr_format":2}
//   DIR/.zattrs                world_size_meters [x, y, z], voxel_size_meters,
//                              coordinate_system "EPSG:4087",
//                              axis_order ["z", "y", "x"]
//   DIR/world_voxels/.zarray   shape [extent_z, extent_y, extent_x],
//                              chunks [128, 128, 128], dtype "|u1",
//                              fill_value 0, order "C", filters null,
//                              compressor zstd or blosc
//   DIR/world_voxels/CZ.CY.CX  one file per non-empty chunk
//   DIR/lod_pyramid/.zgroup    with --lod N: the arrays lod_1 .. lod_N, each
//   DIR/lod_pyramid/lod_L/     shape ceil(extent / 2^L) [z, y, x], chunks
//                              128^3, .zattrs lod_level and
//                              voxel_size_meters (0.25 m * 2^L); node
//                              (NX, NY, NZ) = chunk coordinates / 2^L is
//                              the file NZ.NY.NX
//
// An export reads one snapshot of the database (SNAPSHOT_OPEN): every write
// before it starts, none after. Its LOD arrays are computed from the
// exported level 0 by the pyramid's rule (engine::LodMode8: the most common
// of each 2x2x2 block, ties to non-air, then to the smaller id), so they are
// consistent with it; the server's own pyramid may lag behind its chunks.
//
// Axis order: the array is indexed [z][y][x] (shape [z, y, x]) so that x is
// the fastest axis in C order; a voxdb chunk's dense bytes (x fastest, then
// y, then z: engine/chunk.h) are then exactly a Zarr chunk's bytes, and the
// Zarr chunk (cz, cy, cx) is the voxdb chunk (cx, cy, cz). In zarr-python:
// `zarr.open(DIR)["world_voxels"][z, y, x]` is voxel (x, y, z).
//
// The chunk codecs are in cli/zarr_codecs.h, the LOD arrays' builder in
// cli/zarr_pyramid.h and the worker threads in cli/ordered_work.h.
//
// Thread-safety: call from one thread. Only that thread uses the Client;
// the per-chunk work (decompressing, encoding, compressing, chunk files)
// runs on a few worker threads of their own, one per core, started and
// joined by each call.
#ifndef VOXDB_CLI_ZARR_H_
#define VOXDB_CLI_ZARR_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/zarr_codecs.h"
#include "protocol/client.h"
#include "protocol/messages.h"

namespace voxdb::cli {

// Fills over more chunk positions than this (within the exported box) make
// the export fail INVALID instead of enumerating them: a fill over a
// continent would otherwise ask for millions of chunks. Export a smaller
// --box instead.
inline constexpr uint64_t kMaxFillChunks = uint64_t{1} << 20;

struct ZarrExportOptions {
  std::string out_dir;
  std::optional<protocol::Box> box;  // nullopt: the whole world
  ZarrCompressor compressor = ZarrCompressor::kZstd;
  // Also lod_pyramid/lod_1..lod_levels (0: none). REQUIRES: <= 16.
  int lod_levels = 0;
};

struct ZarrImportOptions {
  std::string in_dir;
  std::optional<protocol::Box> box;  // only voxels inside it are written
};

struct ZarrStats {
  uint64_t chunks = 0;        // chunk files written (export) or read (import)
  uint64_t raw_bytes = 0;     // their dense bytes (128^3 each)
  uint64_t stored_bytes = 0;  // their compressed bytes
  uint64_t chunks_asked = 0;  // export: chunk positions fetched
  uint64_t lod_chunks = 0;    // export: LOD node files written
  uint64_t lod_stored_bytes = 0;
};

// Writes the level-0 array of the chunks stored or filled in the box (or
// the world) into options.out_dir (created; INVALID when it already holds
// world_voxels or lod_pyramid, whose stale chunk files would otherwise
// stay). Reads one snapshot: writes that arrive while it runs are not seen.
absl::StatusOr<ZarrStats> ExportZarr(protocol::Client& client, const protocol::HelloReply& hello,
                                     const ZarrExportOptions& options);

// Reads `world_voxels` of options.in_dir and writes each chunk file (whole
// chunks with PUT_CHUNK, chunks partly inside --box with WRITE_BOX).
// INVALID (a usage-level error) when the store is not a level-0 voxdb array
// of this world: dtype, chunk shape, order, shape or compressor differ.
absl::StatusOr<ZarrStats> ImportZarr(protocol::Client& client, const protocol::HelloReply& hello,
                                     const ZarrImportOptions& options);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_ZARR_H_
