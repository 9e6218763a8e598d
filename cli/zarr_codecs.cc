#include "cli/zarr_codecs.h"

#include <blosc.h>

#include "absl/strings/str_cat.h"

namespace voxdb::cli {
namespace {

using engine::kChunkVoxels;

constexpr int kZstdLevel = 3;
constexpr int kBloscLevel = 5;
// Room for what other writers put in a chunk file beyond the compressor's
// own bound (a zstd checksum, skippable frames, another blosc version).
constexpr uint64_t kChunkFileSlack = 64 << 10;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

}  // namespace

uint64_t MaxChunkFileBytes(ZarrCompressor compressor) {
  const uint64_t bound = compressor == ZarrCompressor::kZstd ? ZSTD_compressBound(kChunkVoxels)
                                                             : kChunkVoxels + BLOSC_MAX_OVERHEAD;
  return bound + kChunkFileSlack;
}

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

absl::StatusOr<std::span<const uint8_t>> Compress(ZarrCompressor compressor,
                                                  std::span<const uint8_t> raw, Scratch& scratch) {
  std::vector<uint8_t>& out = scratch.out;
  if (compressor == ZarrCompressor::kZstd) {
    if (scratch.cctx == nullptr) return absl::InternalError("ZSTD_createCCtx failed");
    if (out.size() < ZSTD_compressBound(raw.size())) out.resize(ZSTD_compressBound(raw.size()));
    // The same frame as ZSTD_compress at this level, without its context
    // allocation.
    const size_t n = ZSTD_compressCCtx(scratch.cctx.get(), out.data(), out.size(), raw.data(),
                                       raw.size(), kZstdLevel);
    if (ZSTD_isError(n)) return absl::InternalError(ZSTD_getErrorName(n));
    return std::span<const uint8_t>(out.data(), n);
  }
  if (out.size() < raw.size() + BLOSC_MAX_OVERHEAD) out.resize(raw.size() + BLOSC_MAX_OVERHEAD);
  // The numcodecs Blosc codec: cname zstd, clevel kBloscLevel, no shuffle,
  // typesize 1, automatic block size; blosc_compress_ctx does not touch
  // global state, so the workers may call it at once. One blosc thread each:
  // the parallelism is over chunks.
  const int n = blosc_compress_ctx(kBloscLevel, BLOSC_NOSHUFFLE, 1, raw.size(), raw.data(),
                                   out.data(), out.size(), "zstd", 0, 1);
  if (n <= 0) return absl::InternalError("blosc_compress failed");
  return std::span<const uint8_t>(out.data(), static_cast<size_t>(n));
}

absl::Status Decompress(ZarrCompressor compressor, std::span<const uint8_t> in, uint8_t* dense,
                        const std::string& name, Scratch& scratch) {
  if (compressor == ZarrCompressor::kZstd) {
    if (scratch.dctx == nullptr) return absl::InternalError("ZSTD_createDCtx failed");
    const size_t n =
        ZSTD_decompressDCtx(scratch.dctx.get(), dense, kChunkVoxels, in.data(), in.size());
    if (ZSTD_isError(n) || n != kChunkVoxels) {
      return Invalid(absl::StrCat("chunk file ", name, ": not a zstd frame of 128^3 bytes"));
    }
    return absl::OkStatus();
  }
  size_t nbytes = 0, cbytes = 0, blocksize = 0;
  if (in.size() < BLOSC_MIN_HEADER_LENGTH) {
    return Invalid(absl::StrCat("chunk file ", name, ": not a blosc frame"));
  }
  // blosc_cbuffer_validate checks the header against the buffer's size
  // before anything trusts it (the file is untrusted).
  if (blosc_cbuffer_validate(in.data(), in.size(), &nbytes) != 0 || nbytes != kChunkVoxels) {
    return Invalid(absl::StrCat("chunk file ", name, ": not a blosc frame of 128^3 bytes"));
  }
  blosc_cbuffer_sizes(in.data(), &nbytes, &cbytes, &blocksize);
  if (nbytes != kChunkVoxels || cbytes != in.size()) {
    return Invalid(absl::StrCat("chunk file ", name, ": not a blosc frame of 128^3 bytes"));
  }
  const int n = blosc_decompress_ctx(in.data(), dense, kChunkVoxels, 1);
  if (n != static_cast<int>(kChunkVoxels)) {
    return Invalid(absl::StrCat("chunk file ", name, ": blosc cannot decompress it"));
  }
  return absl::OkStatus();
}

}  // namespace voxdb::cli
