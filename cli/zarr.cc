#include "cli/zarr.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
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
#include "cli/args.h"
#include "cli/json.h"
#include "cli/ordered_work.h"
#include "cli/zarr_codecs.h"
#include "cli/zarr_pyramid.h"
#include "engine/chunk.h"
#include "engine/chunk_codec.h"
#include "engine/morton.h"
#include "engine/status.h"
#include "engine/voxel_box.h"
#include "engine/world_frame.h"
#include "protocol/frame.h"

namespace voxdb::cli {
namespace {

namespace fs = std::filesystem;
using engine::ChunkCoord;
using engine::kChunkEdge;
using engine::kChunkVoxels;
using engine::VoxelBox;

constexpr char kArrayName[] = "world_voxels";
constexpr char kPyramidName[] = "lod_pyramid";  // lod_pyramid/lod_1, lod_2, ...
constexpr char kZgroup[] = "{\n    \"zarr_format\": 2\n}\n";
// Chunks per GET_CHUNKS (a dense chunk's record can be over 2 MiB, and the
// frame limit is 64 MiB); twice as many PUT_CHUNK / WRITE_BOX are in flight.
constexpr size_t kChunksPerBatch = 16;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status WriteFile(const fs::path& path, std::span<const uint8_t> bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) return IoError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

absl::Status WriteText(const fs::path& path, std::string_view text) {
  return WriteFile(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// A .zarray is a few hundred bytes; this is far more than any needs.
constexpr uint64_t kMaxZarrayBytes = 1 << 20;
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

// The box clipped to `within`; nullopt when they do not meet.
std::optional<VoxelBox> Clip(const VoxelBox& b, const VoxelBox& within) {
  const VoxelBox c = engine::Intersect(b, within);
  if (c.empty()) return std::nullopt;
  return c;
}

// The voxels of chunk c, not clipped to the world: a chunk file always
// holds 128^3.
VoxelBox WholeChunk(const ChunkCoord& c) {
  const engine::VoxelCoord o{uint64_t{c.x} * kChunkEdge, uint64_t{c.y} * kChunkEdge,
                             uint64_t{c.z} * kChunkEdge};
  return VoxelBox{o, {o.x + kChunkEdge, o.y + kChunkEdge, o.z + kChunkEdge}};
}

// Sets to 0 the voxels of a chunk's dense bytes outside `keep` (world
// coordinates).
void CropDense(const ChunkCoord& c, const VoxelBox& keep, uint8_t* dense) {
  const VoxelBox cb = WholeChunk(c);
  if (engine::BoxContains(keep, cb)) return;
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

// The workers for the per-chunk work: one per core (the calling thread
// mostly waits on the socket), at most kMaxWorkers.
constexpr size_t kMaxWorkers = 8;
size_t WorkerCount() {
  return std::clamp<size_t>(std::thread::hardware_concurrency(), 1, kMaxWorkers);
}

// --- Export ------------------------------------------------------------------

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
  if (ec) return IoError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  return absl::OkStatus();
}

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
  if (!a.is_object()) return fail("not a JSON object");
  const Json* format = a.Find("zarr_format");
  if (format == nullptr || format->number() != 2) return fail("zarr_format is not 2");
  const Json* dtype = a.Find("dtype");
  if (dtype == nullptr || !dtype->is_string() ||
      (dtype->str() != "|u1" && dtype->str() != "<u1" && dtype->str() != ">u1")) {
    return fail("dtype is not \"|u1\"");
  }
  const Json* order = a.Find("order");
  if (order == nullptr || order->str() != "C") return fail("order is not \"C\"");
  auto is_vec3 = [](const Json* j, uint64_t x0, uint64_t x1, uint64_t x2) {
    return j != nullptr && j->is_array() && j->items().size() == 3 &&
           j->items()[0].str() == std::to_string(x0) && j->items()[1].str() == std::to_string(x1) &&
           j->items()[2].str() == std::to_string(x2);
  };
  if (!is_vec3(a.Find("chunks"), kChunkEdge, kChunkEdge, kChunkEdge)) {
    return fail("chunks are not [128, 128, 128]");
  }
  if (!is_vec3(a.Find("shape"), frame.extent_z(), frame.extent_y(), frame.extent_x())) {
    return fail(absl::StrFormat("shape is not this world's [%u, %u, %u]", frame.extent_z(),
                                frame.extent_y(), frame.extent_x()));
  }
  const Json* filters = a.Find("filters");
  if (filters != nullptr && !filters->is_null() &&
      !(filters->is_array() && filters->items().empty())) {
    return fail("filters are not null");
  }
  const Json* fill = a.Find("fill_value");
  if (fill != nullptr && !fill->is_null() && fill->number() != 0) {
    return fail("fill_value is not 0");
  }
  const Json* sep = a.Find("dimension_separator");
  if (sep != nullptr && sep->is_string()) {
    if (sep->str() != "." && sep->str() != "/") return fail("dimension_separator is not . or /");
    meta.separator = sep->str()[0];
  }
  const Json* comp = a.Find("compressor");
  const Json* id = comp == nullptr ? nullptr : comp->Find("id");
  if (id == nullptr || (id->str() != "zstd" && id->str() != "blosc")) {
    return fail("compressor is not zstd or blosc");
  }
  meta.compressor = id->str() == "zstd" ? ZarrCompressor::kZstd : ZarrCompressor::kBlosc;
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

// Export, step 1: the chunks with a record in the box, and every chunk
// position its fills cover, in Morton order. INVALID when the fills cover
// more than kMaxFillChunks.
absl::StatusOr<std::vector<uint64_t>> PlanChunks(protocol::Client& client, uint64_t snapshot,
                                                 const engine::WorldFrame& frame,
                                                 const VoxelBox& box) {
  std::set<uint64_t> codes;
  protocol::SnapshotScanRequest scan;
  scan.snapshot = snapshot;
  scan.box = ToWireBox(box);
  scan.limit = 4096;
  uint64_t fill_chunks = 0;
  bool first = true;
  while (first || !scan.cursor.empty()) {
    VOXDB_ASSIGN_OR_RETURN(protocol::QueryReply page, client.SnapshotScan(scan));
    for (const protocol::QueryChunk& c : page.chunks) codes.insert(c.code);
    for (const protocol::QueryFill& f : page.fills) {
      const std::optional<VoxelBox> fb = Clip(ToVoxelBox(f.box), box);
      if (!fb.has_value() || f.material == 0) continue;
      const engine::ChunkBox covered = engine::ChunksCovering(frame, *fb);
      fill_chunks += (uint64_t{covered.hi.x} - covered.lo.x + 1) *
                     (uint64_t{covered.hi.y} - covered.lo.y + 1) *
                     (uint64_t{covered.hi.z} - covered.lo.z + 1);
      if (fill_chunks > kMaxFillChunks) {
        return Invalid(absl::StrFormat(
            "the fills in the box cover more than %u chunks: export a smaller --box",
            kMaxFillChunks));
      }
      for (uint32_t z = covered.lo.z; z <= covered.hi.z; ++z) {
        for (uint32_t y = covered.lo.y; y <= covered.hi.y; ++y) {
          for (uint32_t x = covered.lo.x; x <= covered.hi.x; ++x) {
            codes.insert(engine::MortonEncode(x, y, z));
          }
        }
      }
    }
    scan.cursor = page.next_cursor;
    first = false;
  }
  return std::vector<uint64_t>(codes.begin(), codes.end());
}

// Export, step 2: the directories and every metadata file (.zgroup,
// .zattrs, .zarray) of level 0 and of the LOD levels. INVALID when the
// arrays exist already: chunk files of an earlier export would stay behind.
absl::Status WriteMetadata(const fs::path& root, const engine::WorldFrame& frame,
                           const ZarrExportOptions& options, uint64_t snapshot_seq) {
  const fs::path array_dir = root / kArrayName;
  const fs::path pyramid_dir = root / kPyramidName;
  std::error_code ec;
  for (const fs::path& dir : {array_dir, pyramid_dir}) {
    if (fs::exists(dir, ec)) {
      return Invalid(absl::StrCat(dir.string(), " exists: export into a new directory"));
    }
  }
  fs::create_directories(array_dir, ec);
  if (ec) return IoError(absl::StrCat("cannot create ", array_dir.string(), ": ", ec.message()));
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
                      frame.extent_z() * frame.voxel_size_m(), options.lod_levels, snapshot_seq)));
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
  return absl::OkStatus();
}

// Export, step 3: fetches the chunks `all` (in Morton order) from the
// snapshot and writes their files, and the LOD levels' files, under `root`.
absl::StatusOr<ZarrStats> WriteChunks(protocol::Client& client, const protocol::HelloReply& hello,
                                      uint64_t snapshot, const std::vector<uint64_t>& all,
                                      const VoxelBox& box, const fs::path& root,
                                      const ZarrExportOptions& options) {
  const fs::path array_dir = root / kArrayName;
  const fs::path pyramid_dir = root / kPyramidName;
  const int levels = options.lod_levels;
  ZarrStats stats;
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
    VOXDB_ASSIGN_OR_RETURN(protocol::GetChunksReply reply, client.SnapshotGet(snapshot, ask));
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

}  // namespace

absl::StatusOr<ZarrStats> ExportZarr(protocol::Client& client, const protocol::HelloReply& hello,
                                     const ZarrExportOptions& options) {
  VOXDB_ASSIGN_OR_RETURN(engine::WorldFrame frame, engine::WorldFrame::Decode(hello.world_frame));
  const VoxelBox world = frame.Bounds();
  const std::optional<VoxelBox> clipped =
      Clip(options.box.has_value() ? ToVoxelBox(*options.box) : world, world);
  if (!clipped.has_value()) return Invalid("--box is outside the world");
  const VoxelBox box = *clipped;

  // One point in time: everything below reads the snapshot.
  VOXDB_ASSIGN_OR_RETURN(protocol::SnapshotOpenReply snapshot, client.SnapshotOpen());
  struct CloseSnapshot {
    protocol::Client& client;
    uint64_t handle;
    ~CloseSnapshot() { (void)client.SnapshotClose(handle); }  // the connection's end would too
  } close_snapshot{client, snapshot.snapshot};

  VOXDB_ASSIGN_OR_RETURN(std::vector<uint64_t> codes,
                         PlanChunks(client, snapshot.snapshot, frame, box));
  const fs::path root(options.out_dir);
  VOXDB_RETURN_IF_ERROR(WriteMetadata(root, frame, options, snapshot.seq));
  return WriteChunks(client, hello, snapshot.snapshot, codes, box, root, options);
}

absl::StatusOr<ZarrStats> ImportZarr(protocol::Client& client, const protocol::HelloReply& hello,
                                     const ZarrImportOptions& options) {
  VOXDB_ASSIGN_OR_RETURN(engine::WorldFrame frame, engine::WorldFrame::Decode(hello.world_frame));
  const VoxelBox world = frame.Bounds();
  VoxelBox box = world;
  if (options.box.has_value()) {
    const std::optional<VoxelBox> clipped = Clip(ToVoxelBox(*options.box), world);
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
  auto zarray = Json::Parse(
      std::string_view(reinterpret_cast<const char*>(zarray_bytes.data()), zarray_bytes.size()));
  if (!zarray.ok()) {
    return Invalid(absl::StrCat("world_voxels/.zarray: ", zarray.status().message()));
  }
  VOXDB_ASSIGN_OR_RETURN(ArrayMeta meta, CheckArrayMeta(*zarray, frame));
  VOXDB_ASSIGN_OR_RETURN(auto files, ListChunkFiles(array_dir, meta.separator, frame,
                                                    MaxChunkFileBytes(meta.compressor)));

  // The chunk files that meet the box, in the order they are written.
  std::erase_if(files, [&](const auto& f) { return !engine::Meets(WholeChunk(f.first), box); });

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
    const VoxelBox cb = WholeChunk(c);
    const VoxelBox part = engine::Intersect(cb, box);
    if (engine::BoxContains(part, engine::Intersect(cb, world))) {
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
      write.box = ToWireBox(part);
      write.voxels.resize(part.volume());
      engine::CopySubBox(part, cb, std::span<const uint8_t>(dense, kChunkVoxels), part,
                         write.voxels);
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
