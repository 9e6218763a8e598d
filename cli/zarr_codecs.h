// The chunk codecs of the CLI's Zarr arrays (cli/zarr.h): numcodecs' Zstd
// (level 3) and Blosc (cname zstd, clevel 5, no shuffle), for chunks of
// 128^3 u1 voxels.
//
// Thread-safety: the functions may be called from many threads at once,
// each with its own Scratch (ThreadScratch() gives the calling thread's).
#ifndef VOXDB_CLI_ZARR_CODECS_H_
#define VOXDB_CLI_ZARR_CODECS_H_

#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/chunk.h"

namespace voxdb::cli {

enum class ZarrCompressor { kZstd, kBlosc };

// The largest chunk file of a 128^3 u1 chunk that `compressor` can produce
// (its worst case: incompressible bytes), plus room for what other writers
// put in one.
uint64_t MaxChunkFileBytes(ZarrCompressor compressor);

// Per-thread scratch of the workers, reused from chunk to chunk: a fresh
// 2 MiB vector per chunk costs an mmap, page faults and a memset each time,
// and a fresh zstd context (what ZSTD_compress makes) over a MiB of setup.
struct Scratch {
  std::vector<uint8_t> dense = std::vector<uint8_t>(engine::kChunkVoxels);
  std::vector<uint8_t> out;  // Compress output, grown once to the bound
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx{ZSTD_createCCtx(), ZSTD_freeCCtx};
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx{ZSTD_createDCtx(), ZSTD_freeDCtx};
};

// The calling thread's Scratch.
Scratch& ThreadScratch();

// The chunk file's bytes of `raw`; they live in scratch.out until the next
// call on this thread.
absl::StatusOr<std::span<const uint8_t>> Compress(ZarrCompressor compressor,
                                                  std::span<const uint8_t> raw, Scratch& scratch);

// Decompresses a chunk file into exactly engine::kChunkVoxels bytes at
// `dense`. INVALID, naming the file `name`, unless `in` is a frame of the
// compressor holding exactly that many bytes.
absl::Status Decompress(ZarrCompressor compressor, std::span<const uint8_t> in, uint8_t* dense,
                        const std::string& name, Scratch& scratch);

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_ZARR_CODECS_H_
