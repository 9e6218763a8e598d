#include "engine/journal.h"

#include <zstd.h>

#include "absl/strings/str_format.h"
#include "engine/chunk.h"
#include "engine/coding.h"
#include "engine/crc32c.h"

namespace voxdb::engine {
namespace {

constexpr size_t kHeader = 5;  // crc + op
// WRITE_BOX bodies are bounded by the largest box a write may carry.
constexpr uint64_t kMaxJournalBoxVoxels = uint64_t{1} << 31;

std::vector<uint8_t> Start(JournalOp op, size_t reserve) {
  std::vector<uint8_t> out;
  out.reserve(kHeader + reserve);
  out.resize(kHeader);
  out[4] = static_cast<uint8_t>(op);
  return out;
}

std::vector<uint8_t> Seal(std::vector<uint8_t> out) {
  EncodeFixed32(out.data(), Crc32cExtend(0, out.data() + 4, out.size() - 4));
  return out;
}

void PutBox(std::vector<uint8_t>& out, const VoxelBox& box) {
  for (uint64_t v : {box.lo.x, box.lo.y, box.lo.z, box.hi.x, box.hi.y, box.hi.z}) {
    PutFixed64(out, v);
  }
}

Status Malformed(const char* what) {
  return CorruptError(absl::StrFormat("journal record is malformed: %s", what));
}

// A bounds-checked reader.
struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  bool Has(size_t n) const { return static_cast<size_t>(end - p) >= n; }
  uint32_t U32() {
    const uint32_t v = DecodeFixed32(p);
    p += 4;
    return v;
  }
  uint64_t U64() {
    const uint64_t v = DecodeFixed64(p);
    p += 8;
    return v;
  }
};

}  // namespace

std::array<uint8_t, 8> JournalKey(uint64_t seq) { return BigEndian64(seq); }

uint64_t DecodeJournalKey(std::span<const uint8_t> key) { return DecodeBigEndian(key); }

std::vector<uint8_t> EncodeSetVoxels(const std::vector<ChunkEdits>& edits) {
  size_t n = 4;
  for (const ChunkEdits& e : edits) n += 12 + 4 * e.packed.size();
  std::vector<uint8_t> out = Start(JournalOp::kSetVoxels, n);
  PutFixed32(out, static_cast<uint32_t>(edits.size()));
  for (const ChunkEdits& e : edits) {
    PutFixed64(out, e.code);
    PutFixed32(out, static_cast<uint32_t>(e.packed.size()));
    const size_t at = out.size();
    out.resize(at + 4 * e.packed.size());
    for (size_t i = 0; i < e.packed.size(); ++i)
      EncodeFixed32(out.data() + at + 4 * i, e.packed[i]);
  }
  return Seal(std::move(out));
}

std::vector<uint8_t> EncodeWriteBox(const VoxelBox& box, std::span<const uint8_t> voxels) {
  const size_t bound = ZSTD_compressBound(voxels.size());
  std::vector<uint8_t> out = Start(JournalOp::kWriteBox, 48 + bound);
  PutBox(out, box);
  const size_t at = out.size();
  out.resize(at + bound);
  const size_t n = ZSTD_compress(out.data() + at, bound, voxels.data(), voxels.size(), 1);
  VOXDB_CHECK(!ZSTD_isError(n));
  out.resize(at + n);
  return Seal(std::move(out));
}

std::vector<uint8_t> EncodeFillBox(const VoxelBox& box, uint8_t material) {
  std::vector<uint8_t> out = Start(JournalOp::kFillBox, 49);
  PutBox(out, box);
  out.push_back(material);
  return Seal(std::move(out));
}

std::vector<uint8_t> EncodePutChunk(ChunkKey key, std::span<const uint8_t> record) {
  std::vector<uint8_t> out = Start(JournalOp::kPutChunk, 8 + record.size());
  PutFixed64(out, key.code());
  out.insert(out.end(), record.begin(), record.end());
  return Seal(std::move(out));
}

std::vector<uint8_t> EncodeDeleteChunk(ChunkKey key) {
  std::vector<uint8_t> out = Start(JournalOp::kDeleteChunk, 8);
  PutFixed64(out, key.code());
  return Seal(std::move(out));
}

StatusOr<JournalRecord> DecodeJournalRecord(std::span<const uint8_t> value) {
  if (value.size() < kHeader) return Malformed("shorter than its header");
  if (DecodeFixed32(value.data()) != Crc32cExtend(0, value.data() + 4, value.size() - 4)) {
    return CorruptError("journal record checksum mismatch");
  }
  JournalRecord rec;
  rec.op = static_cast<JournalOp>(value[4]);
  Reader r{value.data() + kHeader, value.data() + value.size()};
  auto read_box = [&](VoxelBox* box) {
    if (!r.Has(48)) return false;
    box->lo = {r.U64(), r.U64(), r.U64()};
    box->hi = {r.U64(), r.U64(), r.U64()};
    return !box->empty();
  };
  switch (rec.op) {
    case JournalOp::kSetVoxels: {
      if (!r.Has(4)) return Malformed("no group count");
      const uint32_t groups = r.U32();
      if (groups > value.size() / 12) return Malformed("group count");
      rec.edits.resize(groups);
      for (ChunkEdits& e : rec.edits) {
        if (!r.Has(12)) return Malformed("truncated group");
        e.code = r.U64();
        const uint32_t n = r.U32();
        if (e.code > ChunkKey::kMaxCode || !r.Has(size_t{4} * n)) return Malformed("group");
        e.packed.resize(n);
        for (uint32_t i = 0; i < n; ++i) e.packed[i] = r.U32();
      }
      break;
    }
    case JournalOp::kWriteBox: {
      if (!read_box(&rec.box)) return Malformed("box");
      const uint64_t volume = rec.box.volume();
      const size_t frame = static_cast<size_t>(r.end - r.p);
      if (volume > kMaxJournalBoxVoxels || ZSTD_getFrameContentSize(r.p, frame) != volume) {
        return Malformed("box voxels");
      }
      rec.voxels.resize(volume);
      const size_t got = ZSTD_decompress(rec.voxels.data(), volume, r.p, frame);
      if (ZSTD_isError(got) || got != volume) return Malformed("box voxels do not decompress");
      r.p = r.end;
      break;
    }
    case JournalOp::kFillBox:
      if (!read_box(&rec.box) || !r.Has(1)) return Malformed("fill");
      rec.material = *r.p++;
      break;
    case JournalOp::kPutChunk:
      if (!r.Has(8)) return Malformed("put");
      rec.code = r.U64();
      rec.record.assign(r.p, r.end);
      r.p = r.end;
      break;
    case JournalOp::kDeleteChunk:
      if (!r.Has(8)) return Malformed("delete");
      rec.code = r.U64();
      break;
    default:
      return Malformed("unknown op");
  }
  if (r.p != r.end) return Malformed("trailing bytes");
  if ((rec.op == JournalOp::kPutChunk || rec.op == JournalOp::kDeleteChunk) &&
      rec.code > ChunkKey::kMaxCode) {
    return Malformed("chunk key");
  }
  return rec;
}

}  // namespace voxdb::engine
