#include "cli/zarr.h"

#include <blosc.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/lod.h"
#include "engine/morton.h"
#include "engine/status.h"
#include "engine/world_frame.h"
#include "protocol/frame.h"

namespace voxdb::cli {
namespace {

namespace fs = std::filesystem;
using engine::ChunkCoord;
using engine::kChunkEdge;
using engine::kChunkVoxels;
using protocol::Box;

constexpr char kArrayName[] = "world_voxels";
constexpr char kPyramidName[] = "lod_pyramid";  // lod_pyramid/lod_1, lod_2, ...
constexpr char kZgroup[] = "{\n    \"zarr_format\": 2\n}\n";
constexpr int kZstdLevel = 3;
constexpr int kBloscLevel = 5;
// Chunks per GET_CHUNKS (a dense chunk's record can be over 2 MiB, and the
// frame limit is 64 MiB); twice as many PUT_CHUNK / WRITE_BOX are in flight.
constexpr size_t kChunksPerBatch = 16;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status WriteFile(const fs::path& path, std::span<const uint8_t> bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) return absl::UnavailableError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

absl::Status WriteText(const fs::path& path, std::string_view text) {
  return WriteFile(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// A .zarray is a few hundred bytes; this is far more than any needs.
constexpr uint64_t kMaxZarrayBytes = 1 << 20;
// Room for what other writers put in a chunk file beyond the compressor's
// own bound (a zstd checksum, skippable frames, another blosc version).
constexpr uint64_t kChunkFileSlack = 64 << 10;

// The largest chunk file of a 128^3 u1 chunk that `compressor` can produce
// (its worst case: incompressible bytes), plus slack.
uint64_t MaxChunkFileBytes(ZarrCompressor compressor) {
  const uint64_t bound = compressor == ZarrCompressor::kZstd ? ZSTD_compressBound(kChunkVoxels)
                                                             : kChunkVoxels + BLOSC_MAX_OVERHEAD;
  return bound + kChunkFileSlack;
}

// The whole of the regular file `path`, of at most `max_size` bytes
// (checked before anything is allocated). INVALID, naming the path, when it
// cannot be opened (a symbolic link is refused when !follow_symlinks), is
// not a regular file or is larger.
absl::StatusOr<std::vector<uint8_t>> ReadFile(const fs::path& path, uint64_t max_size,
                                              bool follow_symlinks) {
  // O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused
  // below); reads of a regular file are not affected.
  const int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (follow_symlinks ? 0 : O_NOFOLLOW);
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    if (errno == ELOOP && !follow_symlinks) {
      return Invalid(absl::StrCat(path.string(), " is a symbolic link: refused (copy the file)"));
    }
    return Invalid(absl::StrCat("cannot read ", path.string(), ": ", std::strerror(errno)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return Invalid(absl::StrCat("cannot read ", path.string(), ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) return Invalid(absl::StrCat(path.string(), " is not a regular file"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > max_size) {
    return Invalid(
        absl::StrFormat("%s has %u bytes; at most %u are expected", path.string(), size, max_size));
  }
  // One read of the whole file: chunk files are read on the import's hot
  // path.
  std::vector<uint8_t> bytes(size);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return Invalid(absl::StrCat("cannot read ", path.string(), ": ",
                                  n < 0 ? std::strerror(errno) : "it shrank while being read"));
    }
    done += static_cast<size_t>(n);
  }
  return bytes;
}

// The box clipped to the world; nullopt when they do not meet.
std::optional<Box> Clip(const Box& b, const Box& world) {
  Box c;
  c.lo = {std::max(b.lo.x, world.lo.x), std::max(b.lo.y, world.lo.y), std::max(b.lo.z, world.lo.z)};
  c.hi = {std::min(b.hi.x, world.hi.x), std::min(b.hi.y, world.hi.y), std::min(b.hi.z, world.hi.z)};
  if (c.lo.x >= c.hi.x || c.lo.y >= c.hi.y || c.lo.z >= c.hi.z) return std::nullopt;
  return c;
}

Box ChunkBox(const ChunkCoord& c) {
  const uint64_t e = kChunkEdge;
  return Box{{c.x * e, c.y * e, c.z * e}, {(c.x + 1) * e, (c.y + 1) * e, (c.z + 1) * e}};
}

bool Contains(const Box& outer, const Box& inner) {
  return outer.lo.x <= inner.lo.x && outer.lo.y <= inner.lo.y && outer.lo.z <= inner.lo.z &&
         inner.hi.x <= outer.hi.x && inner.hi.y <= outer.hi.y && inner.hi.z <= outer.hi.z;
}

// Sets to 0 the voxels of a chunk's dense bytes outside `keep` (world
// coordinates).
void CropDense(const ChunkCoord& c, const Box& keep, uint8_t* dense) {
  const Box cb = ChunkBox(c);
  if (Contains(keep, cb)) return;
  for (int z = 0; z < kChunkEdge; ++z) {
    for (int y = 0; y < kChunkEdge; ++y) {
      uint8_t* row = dense + (static_cast<size_t>(z) * kChunkEdge + y) * kChunkEdge;
      const uint64_t wy = cb.lo.y + y, wz = cb.lo.z + z;
      if (wy < keep.lo.y || wy >= keep.hi.y || wz < keep.lo.z || wz >= keep.hi.z) {
        std::memset(row, 0, kChunkEdge);
        continue;
      }
      for (int x = 0; x < kChunkEdge; ++x) {
        const uint64_t wx = cb.lo.x + x;
        if (wx < keep.lo.x || wx >= keep.hi.x) row[x] = 0;
      }
    }
  }
}

bool AllZero(std::span<const uint8_t> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

// Per-thread scratch of the workers, reused from chunk to chunk: a fresh
// 2 MiB vector per chunk costs an mmap, page faults and a memset each time,
// and a fresh zstd context (what ZSTD_compress makes) over a MiB of setup.
struct Scratch {
  std::vector<uint8_t> dense = std::vector<uint8_t>(kChunkVoxels);
  std::vector<uint8_t> out;  // Compress output, grown once to the bound
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx{ZSTD_createCCtx(), ZSTD_freeCCtx};
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx{ZSTD_createDCtx(), ZSTD_freeDCtx};
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// The chunk file's bytes of `raw`; they live in scratch.out until the next
// call on this thread.
absl::StatusOr<std::span<const uint8_t>> Compress(ZarrCompressor compressor,
                                                  std::span<const uint8_t> raw, Scratch& scratch) {
  std::vector<uint8_t>& out = scratch.out;
  if (compressor == ZarrCompressor::kZstd) {
    if (scratch.cctx == nullptr) return absl::ResourceExhaustedError("ZSTD_createCCtx failed");
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

// Decompresses a chunk file into exactly kChunkVoxels bytes.
absl::Status Decompress(ZarrCompressor compressor, std::span<const uint8_t> in, uint8_t* dense,
                        const std::string& name, Scratch& scratch) {
  if (compressor == ZarrCompressor::kZstd) {
    if (scratch.dctx == nullptr) return absl::ResourceExhaustedError("ZSTD_createDCtx failed");
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

// Worker threads for the per-chunk work (decoding, compressing, files), so
// that it runs on every core while the calling thread keeps the Client,
// which only one thread may use, busy. The results come back in the order
// the tasks were submitted: import sends its writes in file order, and both
// directions stop at the first error in that order, as a plain loop would.
// At most `window` tasks are submitted and not yet retired, which bounds
// the memory waiting in results (up to a chunk each).
//
// Thread-safety: Submit, Retire, pending and full are for the one thread
// that owns the object.
template <typename Result>
class OrderedWork {
 public:
  // REQUIRES: threads >= 1, window >= 1.
  OrderedWork(size_t threads, size_t window) : slots_(window) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  }
  // Tasks not started yet are dropped; those running finish first (they may
  // use whatever the caller declared before this object).
  ~OrderedWork() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    ready_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  OrderedWork(const OrderedWork&) = delete;
  OrderedWork& operator=(const OrderedWork&) = delete;

  size_t pending() const { return submitted_ - retired_; }
  bool full() const { return pending() == slots_.size(); }

  // REQUIRES: !full().
  void Submit(std::function<Result()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      slots_[submitted_ % slots_.size()].task = std::move(task);
      ++submitted_;
    }
    ready_.notify_one();
  }

  // The result of the oldest task not retired yet, once it has run.
  // REQUIRES: pending() > 0.
  Result Retire() {
    std::unique_lock<std::mutex> lock(mu_);
    Slot& slot = slots_[retired_ % slots_.size()];
    done_.wait(lock, [&] { return slot.result.has_value(); });
    Result result = std::move(*slot.result);
    slot.result.reset();
    ++retired_;
    return result;
  }

 private:
  struct Slot {
    std::function<Result()> task;
    std::optional<Result> result;
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      ready_.wait(lock, [&] { return stop_ || started_ < submitted_; });
      if (stop_) return;
      // The slot stays ours until the owner retires it, which waits for the
      // result: Submit only reuses a slot after that.
      Slot& slot = slots_[started_++ % slots_.size()];
      std::function<Result()> task = std::move(slot.task);
      lock.unlock();
      // An exception would end the program from this thread: it becomes
      // the task's error instead.
      std::optional<Result> result;
      try {
        result.emplace(task());
      } catch (const std::exception& e) {
        result.emplace(absl::InternalError(absl::StrCat("unexpected error: ", e.what())));
      }
      lock.lock();
      slot.result.emplace(std::move(*result));
      done_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable ready_;  // a task was submitted, or stop_
  std::condition_variable done_;   // a result was stored
  std::vector<Slot> slots_;        // task seq lives in slots_[seq % size]
  uint64_t submitted_ = 0;         // written by the owner under mu_
  uint64_t retired_ = 0;           // written by the owner under mu_
  uint64_t started_ = 0;           // tasks taken by a worker
  bool stop_ = false;
  std::vector<std::thread> threads_;  // last: started after the rest exists
};

// The workers for the per-chunk work: one per core (the calling thread
// mostly waits on the socket), at most kMaxWorkers.
constexpr size_t kMaxWorkers = 8;
size_t WorkerCount() {
  return std::clamp<size_t>(std::thread::hardware_concurrency(), 1, kMaxWorkers);
}

// --- The LOD arrays of an export ---------------------------------------------

// What a worker did with one chunk (level 0) or LOD node (level >= 1).
struct ChunkDone {
  uint64_t code = 0;
  int level = 0;
  std::optional<uint64_t> stored;  // the file's bytes; nullopt: all 0, no file
  std::vector<uint8_t> octant;     // level 0 with LOD levels: the chunk downsampled, 64^3
};
using Written = absl::StatusOr<ChunkDone>;

void Count(const ChunkDone& done, ZarrStats* stats) {
  if (!done.stored.has_value()) return;
  if (done.level == 0) {
    ++stats->chunks;
    stats->raw_bytes += kChunkVoxels;
    stats->stored_bytes += *done.stored;
  } else {
    ++stats->lod_chunks;
    stats->lod_stored_bytes += *done.stored;
  }
}

constexpr size_t kHalf = kChunkEdge / 2;

// The chunk downsampled by engine::LodMode8 (the pyramid's rule) into 64^3,
// x fastest.
std::vector<uint8_t> DownsampleToOctant(const uint8_t* dense) {
  thread_local std::vector<uint8_t> parent(kChunkVoxels);
  engine::LodDownsampleOctant(dense, 0, parent.data());  // writes [0, 64)^3 of parent
  std::vector<uint8_t> octant(kHalf * kHalf * kHalf);
  for (size_t z = 0; z < kHalf; ++z) {
    for (size_t y = 0; y < kHalf; ++y) {
      std::memcpy(&octant[kHalf * (y + kHalf * z)], &parent[kChunkEdge * (y + kChunkEdge * z)],
                  kHalf);
    }
  }
  return octant;
}

// Builds levels 1..levels from the level-0 chunks, given in Morton order:
// the 8 children of a node are consecutive in it, so one node per level is
// open at a time. A node is finished when a chunk of another node arrives
// (or at Finish): if not all 0 it is queued in ready() for writing, and it
// is downsampled into its octant of its parent. Chunks that never arrive
// are air.
class PyramidBuilder {
 public:
  struct Node {
    int level;
    uint64_t code;
    std::vector<uint8_t> dense;
  };
  explicit PyramidBuilder(int levels) : levels_(levels), open_(levels + 1) {}

  // The level-0 chunk `code`, downsampled to 64^3 (DownsampleToOctant).
  void AddLevel0(uint64_t code, const std::vector<uint8_t>& octant) {
    Open& node = OpenNode(1, code >> 3);
    const size_t o = code & 7;
    const size_t ox = (o & 1) * kHalf, oy = (o >> 1 & 1) * kHalf, oz = (o >> 2) * kHalf;
    for (size_t z = 0; z < kHalf; ++z) {
      for (size_t y = 0; y < kHalf; ++y) {
        std::memcpy(&node.dense[ox + kChunkEdge * (oy + y + kChunkEdge * (oz + z))],
                    &octant[kHalf * (y + kHalf * z)], kHalf);
      }
    }
  }
  // Finishes every open node (the end of the chunks).
  void Finish() {
    for (int level = 1; level <= levels_; ++level) FinishLevel(level);
  }
  std::deque<Node>& ready() { return ready_; }

 private:
  struct Open {
    bool open = false;
    uint64_t code = 0;
    std::vector<uint8_t> dense;
  };
  // The open node of `level`, which becomes `code` (finishing another one).
  Open& OpenNode(int level, uint64_t code) {
    Open& node = open_[static_cast<size_t>(level)];
    if (node.open && node.code != code) FinishLevel(level);
    if (!node.open) {
      node.open = true;
      node.code = code;
      node.dense.assign(kChunkVoxels, 0);
    }
    return node;
  }
  void FinishLevel(int level) {
    Open& node = open_[static_cast<size_t>(level)];
    if (!node.open) return;
    node.open = false;
    if (AllZero(node.dense)) return;  // air: nothing to write or pass up
    if (level < levels_) {
      Open& parent = OpenNode(level + 1, node.code >> 3);
      engine::LodDownsampleOctant(node.dense.data(), static_cast<int>(node.code & 7),
                                  parent.dense.data());
    }
    ready_.push_back({level, node.code, std::move(node.dense)});
  }

  const int levels_;
  std::vector<Open> open_;  // by level; [0] unused
  std::deque<Node> ready_;
};

// The .zarray of world_voxels (level 0) or lod_pyramid/lod_L: the world's
// extent divided by 2^L (rounded up), [z, y, x], chunks 128^3 of |u1.
std::string ZarrayText(const engine::WorldFrame& frame, int level,
                       const ZarrExportOptions& options) {
  auto extent = [&](uint64_t e) { return (e + (uint64_t{1} << level) - 1) >> level; };
  const std::string compressor =
      options.compressor == ZarrCompressor::kZstd
          ? "{\"id\": \"zstd\", \"level\": 3}"
          : "{\"id\": \"blosc\", \"cname\": \"zstd\", \"clevel\": 5, \"shuffle\": 0, "
            "\"blocksize\": 0}";
  return absl::StrFormat(
      "{\n    \"zarr_format\": 2,\n    \"shape\": [%u, %u, %u],\n"
      "    \"chunks\": [128, 128, 128],\n    \"dtype\": \"|u1\",\n"
      "    \"fill_value\": 0,\n    \"order\": \"C\",\n"
      "    \"compressor\": %s,\n    \"filters\": null,\n"
      "    \"dimension_separator\": \".\"\n}\n",
      extent(frame.extent_z()), extent(frame.extent_y()), extent(frame.extent_x()), compressor);
}

absl::Status MakeDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", dir.string()));
  return absl::OkStatus();
}

// --- A small JSON reader, for .zarray -------------------------------------

struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool b = false;
  double number = 0;
  std::string text;  // kString; kNumber: its digits
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;
  const Json* Get(std::string_view key) const {
    for (const auto& [k, v] : members) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

class JsonParser {
 public:
  explicit JsonParser(std::string_view s) : s_(s) {}
  absl::StatusOr<Json> ParseDocument() {
    VOXDB_ASSIGN_OR_RETURN(Json v, Parse(0));
    Skip();
    if (i_ != s_.size()) return Invalid("trailing bytes after the JSON value");
    return v;
  }

 private:
  void Skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool Literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  absl::StatusOr<std::string> String() {
    if (i_ >= s_.size() || s_[i_] != '"') return Invalid("expected a JSON string");
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c == '\\') {
        if (i_ >= s_.size()) break;
        c = s_[i_++];
        switch (c) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case 'u':
            i_ += 4;
            out += '?';
            break;  // not needed by .zarray
          default:
            out += c;
        }
        continue;
      }
      out += c;
    }
    if (i_ >= s_.size()) return Invalid("unterminated JSON string");
    ++i_;
    return out;
  }
  absl::StatusOr<Json> Parse(int depth) {
    if (depth > 32) return Invalid("JSON nested too deeply");
    Skip();
    if (i_ >= s_.size()) return Invalid("unexpected end of JSON");
    Json v;
    const char c = s_[i_];
    if (c == '{') {
      v.kind = Json::kObject;
      ++i_;
      Skip();
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return v;
      }
      while (true) {
        Skip();
        VOXDB_ASSIGN_OR_RETURN(std::string key, String());
        Skip();
        if (i_ >= s_.size() || s_[i_] != ':') return Invalid("expected ':' in a JSON object");
        ++i_;
        VOXDB_ASSIGN_OR_RETURN(Json item, Parse(depth + 1));
        v.members.emplace_back(std::move(key), std::move(item));
        Skip();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') {
          ++i_;
          return v;
        }
        return Invalid("expected ',' or '}' in a JSON object");
      }
    }
    if (c == '[') {
      v.kind = Json::kArray;
      ++i_;
      Skip();
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return v;
      }
      while (true) {
        VOXDB_ASSIGN_OR_RETURN(Json item, Parse(depth + 1));
        v.items.push_back(std::move(item));
        Skip();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') {
          ++i_;
          return v;
        }
        return Invalid("expected ',' or ']' in a JSON array");
      }
    }
    if (c == '"') {
      v.kind = Json::kString;
      VOXDB_ASSIGN_OR_RETURN(v.text, String());
      return v;
    }
    if (Literal("null")) return v;
    if (Literal("true") || Literal("false")) {
      v.kind = Json::kBool;
      v.b = s_[i_ - 1] == 'e' && s_[i_ - 2] == 'u';
      return v;
    }
    const size_t start = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) ||
                              std::strchr("+-.eE", s_[i_]) != nullptr)) {
      ++i_;
    }
    v.kind = Json::kNumber;
    v.text = std::string(s_.substr(start, i_ - start));
    if (!absl::SimpleAtod(v.text, &v.number)) return Invalid("bad JSON value");
    return v;
  }

  std::string_view s_;
  size_t i_ = 0;
};

// What import needs of .zarray.
struct ArrayMeta {
  ZarrCompressor compressor = ZarrCompressor::kZstd;
  char separator = '.';
};

absl::StatusOr<ArrayMeta> CheckArrayMeta(const Json& a, const engine::WorldFrame& frame) {
  ArrayMeta meta;
  auto fail = [](const std::string& what) {
    return Invalid(
        absl::StrCat("world_voxels/.zarray: ", what,
                     " (expected a voxdb level-0 array: shape [z, y, x] of this world, chunks "
                     "[128, 128, 128], dtype \"|u1\", order \"C\", no filters, zstd or blosc)"));
  };
  if (a.kind != Json::kObject) return fail("not a JSON object");
  const Json* format = a.Get("zarr_format");
  if (format == nullptr || format->number != 2) return fail("zarr_format is not 2");
  const Json* dtype = a.Get("dtype");
  if (dtype == nullptr || dtype->kind != Json::kString ||
      (dtype->text != "|u1" && dtype->text != "<u1" && dtype->text != ">u1")) {
    return fail("dtype is not \"|u1\"");
  }
  const Json* order = a.Get("order");
  if (order == nullptr || order->text != "C") return fail("order is not \"C\"");
  auto is_vec3 = [](const Json* j, uint64_t x0, uint64_t x1, uint64_t x2) {
    return j != nullptr && j->kind == Json::kArray && j->items.size() == 3 &&
           j->items[0].text == std::to_string(x0) && j->items[1].text == std::to_string(x1) &&
           j->items[2].text == std::to_string(x2);
  };
  if (!is_vec3(a.Get("chunks"), kChunkEdge, kChunkEdge, kChunkEdge)) {
    return fail("chunks are not [128, 128, 128]");
  }
  if (!is_vec3(a.Get("shape"), frame.extent_z(), frame.extent_y(), frame.extent_x())) {
    return fail(absl::StrFormat("shape is not this world's [%u, %u, %u]", frame.extent_z(),
                                frame.extent_y(), frame.extent_x()));
  }
  const Json* filters = a.Get("filters");
  if (filters != nullptr && filters->kind != Json::kNull &&
      !(filters->kind == Json::kArray && filters->items.empty())) {
    return fail("filters are not null");
  }
  const Json* fill = a.Get("fill_value");
  if (fill != nullptr && fill->kind != Json::kNull && fill->number != 0) {
    return fail("fill_value is not 0");
  }
  const Json* sep = a.Get("dimension_separator");
  if (sep != nullptr && sep->kind == Json::kString) {
    if (sep->text != "." && sep->text != "/") return fail("dimension_separator is not . or /");
    meta.separator = sep->text[0];
  }
  const Json* comp = a.Get("compressor");
  const Json* id = comp == nullptr ? nullptr : comp->Get("id");
  if (id == nullptr || (id->text != "zstd" && id->text != "blosc")) {
    return fail("compressor is not zstd or blosc");
  }
  meta.compressor = id->text == "zstd" ? ZarrCompressor::kZstd : ZarrCompressor::kBlosc;
  return meta;
}

// The chunk files of the array: their chunk coordinates and paths. INVALID
// for an entry that is not a directory or a regular file (a symbolic link
// included: import reads no file from outside the store) and for a chunk
// file over `max_file_bytes`, before anything is written.
absl::StatusOr<std::vector<std::pair<ChunkCoord, fs::path>>> ListChunkFiles(
    const fs::path& array_dir, char separator, const engine::WorldFrame& frame,
    uint64_t max_file_bytes) {
  std::vector<std::pair<ChunkCoord, fs::path>> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(array_dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    // Not followed: the entry itself (a symlink loop is a symlink, not an
    // error).
    const fs::file_status st = it->symlink_status(ec);
    if (ec) break;
    if (st.type() == fs::file_type::directory) continue;
    const std::string rel = it->path().lexically_relative(array_dir).generic_string();
    if (rel.empty() || rel[0] == '.') continue;  // .zarray, .zattrs
    if (st.type() == fs::file_type::symlink) {
      return Invalid(absl::StrCat("world_voxels: '", rel,
                                  "' is a symbolic link: refused (chunk files must be regular "
                                  "files in the store; copy the file)"));
    }
    if (st.type() != fs::file_type::regular) {
      return Invalid(absl::StrCat("world_voxels: '", rel, "' is not a regular file"));
    }
    std::vector<std::string> parts = absl::StrSplit(rel, separator);
    uint32_t c[3];
    bool ok = parts.size() == 3;
    for (size_t i = 0; ok && i < 3; ++i) ok = absl::SimpleAtoi(parts[i], &c[i]);
    if (!ok) {
      return Invalid(absl::StrCat("world_voxels: '", rel, "' is not a chunk file name 'cz",
                                  std::string(1, separator), "cy", std::string(1, separator),
                                  "cx'"));
    }
    const ChunkCoord coord{c[2], c[1], c[0]};
    if (!frame.ContainsChunk(coord)) {
      return Invalid(absl::StrCat("world_voxels: chunk file '", rel, "' is outside the world"));
    }
    const uint64_t size = it->file_size(ec);
    if (ec) break;
    if (size > max_file_bytes) {
      return Invalid(absl::StrFormat("%s has %u bytes; at most %u are expected",
                                     it->path().string(), size, max_file_bytes));
    }
    out.emplace_back(coord, it->path());
  }
  if (ec) {
    return Invalid(absl::StrCat("cannot list ", array_dir.string(), ": ", ec.message()));
  }
  return out;
}

}  // namespace

absl::StatusOr<ZarrStats> ExportZarr(protocol::Client& client, const protocol::HelloReply& hello,
                                     const ZarrExportOptions& options) {
  VOXDB_ASSIGN_OR_RETURN(engine::WorldFrame frame, engine::WorldFrame::Decode(hello.world_frame));
  const Box world{{0, 0, 0}, {frame.extent_x(), frame.extent_y(), frame.extent_z()}};
  const std::optional<Box> clipped = Clip(options.box.value_or(world), world);
  if (!clipped.has_value()) return Invalid("--box is outside the world");
  const Box box = *clipped;

  // One point in time: everything below reads the snapshot.
  VOXDB_ASSIGN_OR_RETURN(protocol::SnapshotOpenReply snapshot, client.SnapshotOpen());
  struct CloseSnapshot {
    protocol::Client& client;
    uint64_t handle;
    ~CloseSnapshot() { (void)client.SnapshotClose(handle); }  // the connection's end would too
  } close_snapshot{client, snapshot.snapshot};

  // The chunks with a record in the box, and every chunk position its fills
  // cover, in Morton order.
  std::set<uint64_t> codes;
  protocol::SnapshotScanRequest scan;
  scan.snapshot = snapshot.snapshot;
  scan.box = box;
  scan.limit = 4096;
  uint64_t fill_chunks = 0;
  bool first = true;
  while (first || !scan.cursor.empty()) {
    VOXDB_ASSIGN_OR_RETURN(protocol::QueryReply page, client.SnapshotScan(scan));
    for (const protocol::QueryChunk& c : page.chunks) codes.insert(c.code);
    for (const protocol::QueryFill& f : page.fills) {
      const std::optional<Box> fb = Clip(f.box, box);
      if (!fb.has_value() || f.material == 0) continue;
      const uint64_t lo_x = fb->lo.x / kChunkEdge, hi_x = (fb->hi.x - 1) / kChunkEdge;
      const uint64_t lo_y = fb->lo.y / kChunkEdge, hi_y = (fb->hi.y - 1) / kChunkEdge;
      const uint64_t lo_z = fb->lo.z / kChunkEdge, hi_z = (fb->hi.z - 1) / kChunkEdge;
      fill_chunks += (hi_x - lo_x + 1) * (hi_y - lo_y + 1) * (hi_z - lo_z + 1);
      if (fill_chunks > kMaxFillChunks) {
        return Invalid(absl::StrFormat(
            "the fills in the box cover more than %u chunks: export a smaller --box",
            kMaxFillChunks));
      }
      for (uint64_t z = lo_z; z <= hi_z; ++z) {
        for (uint64_t y = lo_y; y <= hi_y; ++y) {
          for (uint64_t x = lo_x; x <= hi_x; ++x) {
            codes.insert(engine::MortonEncode(static_cast<uint32_t>(x), static_cast<uint32_t>(y),
                                              static_cast<uint32_t>(z)));
          }
        }
      }
    }
    scan.cursor = page.next_cursor;
    first = false;
  }

  const fs::path root(options.out_dir);
  const fs::path array_dir = root / kArrayName;
  const fs::path pyramid_dir = root / kPyramidName;
  std::error_code ec;
  // Chunk files of an earlier export would stay behind: refuse instead.
  for (const fs::path& dir : {array_dir, pyramid_dir}) {
    if (fs::exists(dir, ec)) {
      return Invalid(absl::StrCat(dir.string(), " exists: export into a new directory"));
    }
  }
  fs::create_directories(array_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", array_dir.string()));
  VOXDB_RETURN_IF_ERROR(WriteText(root / ".zgroup", kZgroup));
  VOXDB_RETURN_IF_ERROR(WriteText(
      root / ".zattrs",
      absl::StrFormat("{\n    \"coordinate_system\": \"EPSG:4087\",\n"
                      "    \"voxel_size_meters\": %.17g,\n"
                      "    \"world_size_meters\": [%.17g, %.17g, %.17g],\n"
                      "    \"axis_order\": [\"z\", \"y\", \"x\"],\n"
                      "    \"lod_levels\": %d,\n    \"snapshot_seq\": %u\n}\n",
                      frame.voxel_size_m(), frame.extent_x() * frame.voxel_size_m(),
                      frame.extent_y() * frame.voxel_size_m(),
                      frame.extent_z() * frame.voxel_size_m(), options.lod_levels, snapshot.seq)));
  VOXDB_RETURN_IF_ERROR(WriteText(array_dir / ".zarray", ZarrayText(frame, 0, options)));
  const int levels = options.lod_levels;
  if (levels > 0) {
    VOXDB_RETURN_IF_ERROR(MakeDir(pyramid_dir));
    VOXDB_RETURN_IF_ERROR(WriteText(pyramid_dir / ".zgroup", kZgroup));
    for (int level = 1; level <= levels; ++level) {
      const fs::path dir = pyramid_dir / absl::StrCat("lod_", level);
      VOXDB_RETURN_IF_ERROR(MakeDir(dir));
      VOXDB_RETURN_IF_ERROR(WriteText(dir / ".zarray", ZarrayText(frame, level, options)));
      VOXDB_RETURN_IF_ERROR(WriteText(
          dir / ".zattrs",
          absl::StrFormat("{\n    \"lod_level\": %d,\n    \"voxel_size_meters\": %.17g,\n"
                          "    \"downsampling\": \"mode of each 2x2x2 block of level %d, ties "
                          "to non-air, then to the smaller material id\"\n}\n",
                          level, frame.voxel_size_m() * static_cast<double>(uint64_t{1} << level),
                          level - 1)));
    }
  }

  ZarrStats stats;
  std::vector<uint64_t> all(codes.begin(), codes.end());
  size_t batch = kChunksPerBatch;
  if (hello.max_batch > 0) batch = std::min<size_t>(batch, hello.max_batch);
  // Each chunk's decoding, compression and file write run on the workers
  // while this thread fetches the next batch; the window holds two batches
  // so that the workers never wait for a GET_CHUNKS round trip.
  const size_t workers = WorkerCount();
  OrderedWork<Written> work(workers, std::max<size_t>(2 * batch, 2 * workers));
  // The LOD levels, built here from the level-0 chunks as they are retired,
  // in Morton order (a node's 8 children are consecutive in it); their
  // files are written by the workers too.
  PyramidBuilder pyramid(levels);
  auto retire = [&]() -> absl::Status {
    VOXDB_ASSIGN_OR_RETURN(ChunkDone done, work.Retire());
    Count(done, &stats);
    if (!done.octant.empty()) pyramid.AddLevel0(done.code, done.octant);
    return absl::OkStatus();
  };
  // Submits the finished LOD nodes (retiring makes room, and may finish more).
  auto submit_ready = [&]() -> absl::Status {
    while (!pyramid.ready().empty()) {
      while (work.full()) VOXDB_RETURN_IF_ERROR(retire());
      PyramidBuilder::Node node = std::move(pyramid.ready().front());
      pyramid.ready().pop_front();
      work.Submit([&pyramid_dir, compressor = options.compressor,
                   node = std::make_shared<PyramidBuilder::Node>(std::move(node))]() -> Written {
        Scratch& scratch = ThreadScratch();
        VOXDB_ASSIGN_OR_RETURN(std::span<const uint8_t> stored,
                               Compress(compressor, node->dense, scratch));
        const ChunkCoord c = engine::MortonDecode(node->code);
        VOXDB_RETURN_IF_ERROR(WriteFile(pyramid_dir / absl::StrCat("lod_", node->level) /
                                            absl::StrFormat("%u.%u.%u", c.z, c.y, c.x),
                                        stored));
        ChunkDone out;
        out.code = node->code;
        out.level = node->level;
        out.stored = stored.size();
        return out;
      });
    }
    return absl::OkStatus();
  };
  for (size_t at = 0; at < all.size();) {
    const size_t n = std::min(batch, all.size() - at);
    std::span<const uint64_t> ask(all.data() + at, n);
    VOXDB_ASSIGN_OR_RETURN(protocol::GetChunksReply reply,
                           client.SnapshotGet(snapshot.snapshot, ask));
    size_t done = 0;
    for (size_t i = 0; i < reply.results.size() && i < n; ++i) {
      protocol::ChunkResult& r = reply.results[i];
      const auto status = static_cast<protocol::WireStatus>(r.status);
      if (status == protocol::WireStatus::kTooLarge) break;  // ask again
      done = i + 1;
      ++stats.chunks_asked;
      if (status == protocol::WireStatus::kNotFound) continue;
      if (status != protocol::WireStatus::kOk) {
        // The chunks before it are finished first, as in a plain loop.
        while (work.pending() > 0) VOXDB_RETURN_IF_ERROR(retire());
        return protocol::ServerError(status, std::string(r.bytes.begin(), r.bytes.end()));
      }
      VOXDB_RETURN_IF_ERROR(submit_ready());
      while (work.full()) VOXDB_RETURN_IF_ERROR(retire());
      work.Submit([&array_dir, &box, levels, compressor = options.compressor, code = ask[i],
                   record = std::move(r.bytes)]() -> Written {
        Scratch& scratch = ThreadScratch();
        std::span<uint8_t> dense(scratch.dense);
        VOXDB_RETURN_IF_ERROR(engine::DecodeChunkToDense(record, dense.data()));
        const ChunkCoord c = engine::MortonDecode(code);
        CropDense(c, box, dense.data());
        ChunkDone out;
        out.code = code;
        if (AllZero(dense)) return out;  // no file; air for the levels above
        if (levels > 0) out.octant = DownsampleToOctant(dense.data());
        VOXDB_ASSIGN_OR_RETURN(std::span<const uint8_t> stored,
                               Compress(compressor, dense, scratch));
        VOXDB_RETURN_IF_ERROR(
            WriteFile(array_dir / absl::StrFormat("%u.%u.%u", c.z, c.y, c.x), stored));
        out.stored = stored.size();
        return out;
      });
    }
    if (done == 0) return absl::InternalError("SNAPSHOT_GET returned no chunk of the batch");
    at += done;
  }
  while (work.pending() > 0) VOXDB_RETURN_IF_ERROR(retire());
  // The last open node of every level.
  pyramid.Finish();
  VOXDB_RETURN_IF_ERROR(submit_ready());
  while (work.pending() > 0) VOXDB_RETURN_IF_ERROR(retire());
  return stats;
}

absl::StatusOr<ZarrStats> ImportZarr(protocol::Client& client, const protocol::HelloReply& hello,
                                     const ZarrImportOptions& options) {
  VOXDB_ASSIGN_OR_RETURN(engine::WorldFrame frame, engine::WorldFrame::Decode(hello.world_frame));
  const Box world{{0, 0, 0}, {frame.extent_x(), frame.extent_y(), frame.extent_z()}};
  Box box = world;
  if (options.box.has_value()) {
    const std::optional<Box> clipped = Clip(*options.box, world);
    if (!clipped.has_value()) return Invalid("--box is outside the world");
    box = *clipped;
  }
  const fs::path array_dir = fs::path(options.in_dir) / kArrayName;
  const fs::path zarray_path = array_dir / ".zarray";
  std::error_code ec;
  const fs::file_status zarray_status = fs::status(zarray_path, ec);
  if (zarray_status.type() == fs::file_type::not_found) {
    return Invalid(
        absl::StrCat(options.in_dir, " is not a voxdb Zarr store (no ", kArrayName, "/.zarray)"));
  }
  VOXDB_ASSIGN_OR_RETURN(std::vector<uint8_t> zarray_bytes,
                         ReadFile(zarray_path, kMaxZarrayBytes, /*follow_symlinks=*/true));
  JsonParser parser(
      std::string_view(reinterpret_cast<const char*>(zarray_bytes.data()), zarray_bytes.size()));
  auto zarray = parser.ParseDocument();
  if (!zarray.ok()) {
    return Invalid(absl::StrCat("world_voxels/.zarray: ", zarray.status().message()));
  }
  VOXDB_ASSIGN_OR_RETURN(ArrayMeta meta, CheckArrayMeta(*zarray, frame));
  VOXDB_ASSIGN_OR_RETURN(auto files, ListChunkFiles(array_dir, meta.separator, frame,
                                                    MaxChunkFileBytes(meta.compressor)));

  // The chunk files that meet the box, in the order they are written.
  std::erase_if(files, [&](const auto& f) { return !Clip(ChunkBox(f.first), box).has_value(); });

  // One chunk file's write: read, decompressed and encoded by a worker.
  struct Write {
    protocol::Request request;
    uint64_t stored_bytes = 0;  // the file's size
  };
  auto prepare = [&](const ChunkCoord& c, const fs::path& path) -> absl::StatusOr<Write> {
    Scratch& scratch = ThreadScratch();
    uint8_t* dense = scratch.dense.data();
    VOXDB_ASSIGN_OR_RETURN(
        std::vector<uint8_t> stored,
        ReadFile(path, MaxChunkFileBytes(meta.compressor), /*follow_symlinks=*/false));
    VOXDB_RETURN_IF_ERROR(Decompress(meta.compressor, stored, dense, path.string(), scratch));
    Write w;
    w.stored_bytes = stored.size();
    const Box cb = ChunkBox(c);
    const Box part = *Clip(cb, box);
    const std::optional<Box> in_world = Clip(cb, world);
    if (Contains(part, *in_world)) {
      // The whole chunk (as far as the world goes): one PUT_CHUNK. Voxels past
      // the world's edge are zeroed so that the record is canonical.
      CropDense(c, world, dense);
      protocol::PutChunkRequest put;
      put.code = engine::MortonEncode(c.x, c.y, c.z);
      put.record = engine::EncodeChunk(
          engine::Chunk::FromDense(std::span<const uint8_t>(dense, kChunkVoxels)), 0,
          engine::NowMicros());
      w.request = {protocol::Opcode::kPutChunk, put.Encode()};
    } else {
      protocol::BoxRequest write;
      write.box = part;
      const uint64_t sx = part.hi.x - part.lo.x, sy = part.hi.y - part.lo.y;
      const uint64_t sz = part.hi.z - part.lo.z;
      write.voxels.resize(sx * sy * sz);
      for (uint64_t z = 0; z < sz; ++z) {
        for (uint64_t y = 0; y < sy; ++y) {
          const uint64_t lz = part.lo.z - cb.lo.z + z, ly = part.lo.y - cb.lo.y + y;
          const uint64_t lx = part.lo.x - cb.lo.x;
          std::memcpy(write.voxels.data() + (z * sy + y) * sx,
                      dense + (lz * kChunkEdge + ly) * kChunkEdge + lx, sx);
        }
      }
      w.request = {protocol::Opcode::kWriteBox, write.EncodeWriteBox()};
    }
    return w;
  };

  // The writes are pipelined: up to kWritesInFlight are sent and not yet
  // answered, so that the server applies (and group-commits) them while the
  // workers prepare the next ones, instead of a round trip per batch.
  constexpr size_t kWritesInFlight = 2 * kChunksPerBatch;  // up to 2 MiB each
  std::unordered_set<uint64_t> in_flight;                  // request ids
  auto receive_one = [&]() -> absl::Status {
    VOXDB_ASSIGN_OR_RETURN(protocol::Frame reply, client.Receive());
    if (in_flight.erase(reply.header.request_id) == 0) return absl::OkStatus();  // not ours
    if (reply.header.status != 0) {
      return protocol::ServerError(
          static_cast<protocol::WireStatus>(reply.header.status),
          std::string_view(reinterpret_cast<const char*>(reply.payload.data()),
                           reply.payload.size()));
    }
    return absl::OkStatus();
  };

  ZarrStats stats;
  const size_t workers = WorkerCount();
  OrderedWork<absl::StatusOr<Write>> work(workers, std::max<size_t>(kChunksPerBatch, 2 * workers));
  size_t next = 0;  // the first file not submitted
  while (next < files.size() || work.pending() > 0) {
    while (next < files.size() && !work.full()) {
      work.Submit(
          [&prepare, &files, i = next++] { return prepare(files[i].first, files[i].second); });
    }
    absl::StatusOr<Write> prepared = work.Retire();
    if (!prepared.ok()) {
      // The writes sent before this file are answered first: one of them
      // may have failed (earlier in file order), and otherwise they are
      // known to be applied when the import stops here.
      while (!in_flight.empty()) VOXDB_RETURN_IF_ERROR(receive_one());
      return prepared.status();
    }
    Write& w = *prepared;
    ++stats.chunks;
    stats.raw_bytes += kChunkVoxels;
    stats.stored_bytes += w.stored_bytes;
    while (in_flight.size() >= kWritesInFlight) VOXDB_RETURN_IF_ERROR(receive_one());
    VOXDB_ASSIGN_OR_RETURN(uint64_t id, client.Send(w.request.op, w.request.payload));
    in_flight.insert(id);
  }
  while (!in_flight.empty()) VOXDB_RETURN_IF_ERROR(receive_one());
  return stats;
}

}  // namespace voxdb::cli
