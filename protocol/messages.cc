#include "protocol/messages.h"

#include <bit>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/morton.h"

namespace voxdb::protocol {
namespace {

class Writer {
 public:
  Writer() : out_(own_) {}
  // Appends to *out instead of a buffer of its own (Take() is then empty).
  explicit Writer(std::vector<uint8_t>* out) : out_(*out) {}
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) { engine::PutFixed16(out_, v); }
  void U32(uint32_t v) { engine::PutFixed32(out_, v); }
  void U64(uint64_t v) { engine::PutFixed64(out_, v); }
  void F64(double v) { U64(std::bit_cast<uint64_t>(v)); }
  void Bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void Str16(const std::string& s) {
    U16(static_cast<uint16_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void Voxel(const Voxel3& v) {
    U64(v.x);
    U64(v.y);
    U64(v.z);
  }
  void BoxOf(const Box& b) {
    Voxel(b.lo);
    Voxel(b.hi);
  }
  std::vector<uint8_t> Take() { return std::move(own_); }

 private:
  std::vector<uint8_t> own_;
  std::vector<uint8_t>& out_;
};

// `n u32`, then each item's EncodeTo.
template <typename T>
std::vector<uint8_t> EncodeCounted(const std::vector<T>& items) {
  std::vector<uint8_t> out;
  Writer(&out).U32(static_cast<uint32_t>(items.size()));
  for (const T& item : items) item.EncodeTo(&out);
  return out;
}

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> p) : p_(p) {}
  bool ok() const { return ok_; }
  void Fail() { ok_ = false; }
  size_t left() const { return p_.size() - at_; }
  uint8_t U8() {
    const uint8_t* p = Next(1);
    return p ? *p : 0;
  }
  uint16_t U16() {
    const uint8_t* p = Next(2);
    return p ? engine::DecodeFixed16(p) : 0;
  }
  uint32_t U32() {
    const uint8_t* p = Next(4);
    return p ? engine::DecodeFixed32(p) : 0;
  }
  uint64_t U64() {
    const uint8_t* p = Next(8);
    return p ? engine::DecodeFixed64(p) : 0;
  }
  // A finite double; a NaN or an infinity makes the payload malformed.
  double F64() {
    const double v = std::bit_cast<double>(U64());
    if (!std::isfinite(v)) {
      ok_ = false;
      return 0;
    }
    return v;
  }
  Voxel3 Voxel() {
    Voxel3 v;
    v.x = U64();
    v.y = U64();
    v.z = U64();
    return v;
  }
  std::vector<uint8_t> Bytes(size_t n) {
    if (left() < n) {
      ok_ = false;
      return {};
    }
    std::vector<uint8_t> b(p_.begin() + static_cast<ptrdiff_t>(at_),
                           p_.begin() + static_cast<ptrdiff_t>(at_ + n));
    at_ += n;
    return b;
  }
  Box BoxOf() {
    Box b;
    b.lo = Voxel();
    b.hi = Voxel();
    return b;
  }
  std::vector<uint8_t> Rest() { return Bytes(left()); }
  std::string Str16() {
    const size_t n = U16();
    const std::vector<uint8_t> b = Bytes(n);
    return std::string(b.begin(), b.end());
  }
  // A count of items of `item_size` bytes each that must fit what is left.
  bool Count(uint32_t n, size_t item_size) {
    if (left() / item_size < n) ok_ = false;
    return ok_;
  }
  absl::Status Finish(const char* what) const {
    if (ok_ && at_ == p_.size()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrFormat("malformed %s payload", what));
  }

 private:
  // The next n bytes, consumed; nullptr (the payload is then malformed and
  // read to its end) when fewer are left.
  const uint8_t* Next(size_t n) {
    if (left() < n) {
      ok_ = false;
      at_ = p_.size();
      return nullptr;
    }
    const uint8_t* p = p_.data() + at_;
    at_ += n;
    return p;
  }
  std::span<const uint8_t> p_;
  size_t at_ = 0;
  bool ok_ = true;
};

}  // namespace

absl::Status CheckRequestHeader(const FrameHeader& h) {
  if (h.is_reply() || h.is_push()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a request frame has the %s flag set (flags 0x%04x): requests have flags 0",
                        h.is_reply() ? "reply" : "push", h.flags));
  }
  if (h.status != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a request frame carries status %u: requests have status 0", h.status));
  }
  return absl::OkStatus();
}

absl::Status CheckEmptyPayload(Opcode op, std::span<const uint8_t> payload) {
  switch (op) {
    case Opcode::kFlush:
    case Opcode::kStats:
    case Opcode::kReindex:
    case Opcode::kLodRebuild:
    case Opcode::kSnapshotOpen:
    case Opcode::kStreamClose:
    case Opcode::kLodSync:
    case Opcode::kPartitions:
      if (payload.empty()) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrFormat("malformed %s payload: it takes none, %u bytes were sent", OpcodeName(op),
                          payload.size()));
    default:
      return absl::OkStatus();
  }
}

std::vector<uint8_t> HelloRequest::Encode() const {
  Writer w;
  w.U8(min_version);
  w.U8(max_version);
  w.Str16(token);
  w.Str16(client);
  return w.Take();
}
absl::StatusOr<HelloRequest> HelloRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  HelloRequest h;
  h.min_version = r.U8();
  h.max_version = r.U8();
  h.token = r.Str16();
  h.client = r.Str16();
  if (absl::Status s = r.Finish("HELLO"); !s.ok()) return s;
  if (h.min_version > h.max_version) {
    return absl::InvalidArgumentError(
        absl::StrFormat("malformed HELLO payload: the version range %u..%u is empty", h.min_version,
                        h.max_version));
  }
  return h;
}

std::vector<uint8_t> HelloReply::Encode() const {
  Writer w;
  w.U8(version);
  w.U16(static_cast<uint16_t>(world_frame.size()));
  w.Bytes(world_frame);
  w.Str16(server_version);
  w.U32(max_payload);
  w.U32(max_batch);
  w.U64(max_box_voxels);
  w.U8(role);
  return w.Take();
}
absl::StatusOr<HelloReply> HelloReply::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  HelloReply h;
  h.version = r.U8();
  h.world_frame = r.Bytes(r.U16());
  h.server_version = r.Str16();
  h.max_payload = r.U32();
  h.max_batch = r.U32();
  h.max_box_voxels = r.U64();
  h.role = r.U8();
  if (absl::Status s = r.Finish("HELLO reply"); !s.ok()) return s;
  return h;
}

std::vector<uint8_t> GetChunksRequest::Encode() const {
  Writer w;
  w.U32(static_cast<uint32_t>(codes.size()));
  for (uint64_t c : codes) w.U64(c);
  if (level != 0) w.U8(level);  // absent: level 0
  return w.Take();
}
absl::StatusOr<GetChunksRequest> GetChunksRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  GetChunksRequest g;
  const uint32_t n = r.U32();
  if (r.Count(n, 8)) {
    g.codes.resize(n);
    for (auto& c : g.codes) c = r.U64();
  }
  if (r.left() == 1) {
    g.level = r.U8();
    if (g.level == 0) r.Fail();  // level 0 is sent as no byte: one encoding
  }
  if (absl::Status s = r.Finish("GET_CHUNKS"); !s.ok()) return s;
  return g;
}

std::vector<uint8_t> GetChunksReply::Encode() const {
  Writer w;
  w.U32(static_cast<uint32_t>(results.size()));
  for (const ChunkResult& c : results) {
    w.U16(c.status);
    w.U64(c.version);
    w.U32(static_cast<uint32_t>(c.bytes.size()));
    w.Bytes(c.bytes);
  }
  return w.Take();
}
void AppendChunkResult(FrameWriter& out, WireStatus status, uint64_t version,
                       std::span<const uint8_t> bytes) {
  out.AppendLE<uint16_t>(static_cast<uint16_t>(status));
  out.AppendLE<uint64_t>(version);
  out.AppendLE<uint32_t>(static_cast<uint32_t>(bytes.size()));
  out.Append(bytes.data(), bytes.size());
}
absl::StatusOr<GetChunksReply> GetChunksReply::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  GetChunksReply g;
  const uint32_t n = r.U32();
  if (r.Count(n, kChunkResultHeaderBytes)) {
    g.results.resize(n);
    for (ChunkResult& c : g.results) {
      c.status = r.U16();
      c.version = r.U64();
      c.bytes = r.Bytes(r.U32());
    }
  }
  if (absl::Status s = r.Finish("GET_CHUNKS reply"); !s.ok()) return s;
  return g;
}

std::vector<uint8_t> PutChunkRequest::Encode() const {
  Writer w;
  w.U64(code);
  w.U8(expected_version ? 1 : 0);
  w.U64(expected_version.value_or(0));
  w.Bytes(record);
  return w.Take();
}
absl::StatusOr<PutChunkRequest> PutChunkRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  PutChunkRequest put;
  put.code = r.U64();
  const uint8_t has = r.U8();
  const uint64_t expected = r.U64();
  if (has > 1) return absl::InvalidArgumentError("malformed PUT_CHUNK payload");
  if (has) put.expected_version = expected;
  put.record = r.Rest();
  if (absl::Status s = r.Finish("PUT_CHUNK"); !s.ok()) return s;
  return put;
}

std::vector<uint8_t> GetVoxelsRequest::Encode() const {
  Writer w;
  w.U32(static_cast<uint32_t>(at.size()));
  for (const Voxel3& v : at) w.Voxel(v);
  return w.Take();
}
absl::StatusOr<GetVoxelsRequest> GetVoxelsRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  GetVoxelsRequest g;
  const uint32_t n = r.U32();
  if (r.Count(n, 24)) {
    g.at.resize(n);
    for (Voxel3& v : g.at) v = r.Voxel();
  }
  if (absl::Status s = r.Finish("GET_VOXELS"); !s.ok()) return s;
  return g;
}

std::vector<uint8_t> SetVoxelsRequest::Encode() const {
  Writer w;
  w.U32(static_cast<uint32_t>(edits.size()));
  for (const Edit& e : edits) {
    w.Voxel(e.at);
    w.U8(e.material);
  }
  return w.Take();
}
absl::StatusOr<SetVoxelsRequest> SetVoxelsRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  SetVoxelsRequest s;
  const uint32_t n = r.U32();
  if (r.Count(n, 25)) {
    s.edits.resize(n);
    for (Edit& e : s.edits) {
      e.at = r.Voxel();
      e.material = r.U8();
    }
  }
  if (absl::Status st = r.Finish("SET_VOXELS"); !st.ok()) return st;
  return s;
}

std::vector<uint8_t> BoxRequest::EncodeReadBox() const {
  Writer w;
  w.Voxel(box.lo);
  w.Voxel(box.hi);
  return w.Take();
}
std::vector<uint8_t> BoxRequest::EncodeWriteBox() const {
  Writer w;
  w.Voxel(box.lo);
  w.Voxel(box.hi);
  w.Bytes(voxels);
  return w.Take();
}
std::vector<uint8_t> BoxRequest::EncodeFillBox() const {
  Writer w;
  w.Voxel(box.lo);
  w.Voxel(box.hi);
  w.U8(material);
  return w.Take();
}
absl::StatusOr<BoxRequest> BoxRequest::DecodeReadBox(std::span<const uint8_t> p) {
  Reader r(p);
  BoxRequest b;
  b.box.lo = r.Voxel();
  b.box.hi = r.Voxel();
  if (absl::Status s = r.Finish("READ_BOX"); !s.ok()) return s;
  return b;
}
absl::StatusOr<BoxRequest> BoxRequest::DecodeWriteBox(std::span<const uint8_t> p) {
  Reader r(p);
  BoxRequest b;
  b.box.lo = r.Voxel();
  b.box.hi = r.Voxel();
  b.voxels = r.Rest();  // the server checks it against the box's volume
  if (absl::Status s = r.Finish("WRITE_BOX"); !s.ok()) return s;
  return b;
}
absl::StatusOr<BoxRequest> BoxRequest::DecodeFillBox(std::span<const uint8_t> p) {
  Reader r(p);
  BoxRequest b;
  b.box.lo = r.Voxel();
  b.box.hi = r.Voxel();
  b.material = r.U8();
  if (absl::Status s = r.Finish("FILL_BOX"); !s.ok()) return s;
  return b;
}

Opcode QueryOpcode(QueryKind kind) {
  switch (kind) {
    case QueryKind::kRadius:
      return Opcode::kQueryRadius;
    case QueryKind::kCell:
      return Opcode::kQueryCell;
    case QueryKind::kRect:
      return Opcode::kQueryRect;
    case QueryKind::kBox:
      return Opcode::kQueryBox;
  }
  return Opcode::kQueryRadius;
}

std::optional<QueryKind> QueryKindOf(Opcode op) {
  switch (op) {
    case Opcode::kQueryRadius:
      return QueryKind::kRadius;
    case Opcode::kQueryCell:
      return QueryKind::kCell;
    case Opcode::kQueryRect:
      return QueryKind::kRect;
    case Opcode::kQueryBox:
      return QueryKind::kBox;
    default:
      return std::nullopt;
  }
}

namespace {

// The region and band of a query or a subscription.
void WriteRegion(const QueryRequest& q, Writer& w) {
  switch (q.kind) {
    case QueryKind::kRadius:
      w.F64(q.lat);
      w.F64(q.lon);
      w.F64(q.radius);
      break;
    case QueryKind::kCell:
      w.U64(q.cell);
      break;
    case QueryKind::kRect:
      w.F64(q.rect.lat_lo);
      w.F64(q.rect.lon_lo);
      w.F64(q.rect.lat_hi);
      w.F64(q.rect.lon_hi);
      break;
    case QueryKind::kBox:
      w.BoxOf(q.box);
      break;
  }
  w.U8(q.band ? 1 : 0);
  w.F64(q.band ? q.band->min_m : 0);
  w.F64(q.band ? q.band->max_m : 0);
}

void ReadRegion(Reader& r, QueryRequest* q) {
  switch (q->kind) {
    case QueryKind::kRadius:
      q->lat = r.F64();
      q->lon = r.F64();
      q->radius = r.F64();
      break;
    case QueryKind::kCell:
      q->cell = r.U64();
      break;
    case QueryKind::kRect:
      q->rect.lat_lo = r.F64();
      q->rect.lon_lo = r.F64();
      q->rect.lat_hi = r.F64();
      q->rect.lon_hi = r.F64();
      break;
    case QueryKind::kBox:
      q->box = r.BoxOf();
      break;
  }
  const uint8_t has_band = r.U8();
  AltitudeBand band;
  band.min_m = r.F64();
  band.max_m = r.F64();
  if (has_band > 1) r.Fail();
  if (has_band == 1) q->band = band;
}

}  // namespace

std::vector<uint8_t> QueryRequest::Encode() const {
  Writer w;
  WriteRegion(*this, w);  // then the trailer common to the four
  w.U32(limit);
  w.U16(static_cast<uint16_t>(cursor.size()));
  w.Bytes(cursor);
  if (level != 0) w.U8(level);  // absent: level 0
  return w.Take();
}

absl::StatusOr<QueryRequest> QueryRequest::Decode(Opcode op, std::span<const uint8_t> p) {
  const std::optional<QueryKind> kind = QueryKindOf(op);
  if (!kind) return absl::InvalidArgumentError("not a query opcode");
  Reader r(p);
  QueryRequest q;
  q.kind = *kind;
  ReadRegion(r, &q);
  q.limit = r.U32();
  q.cursor = r.Bytes(r.U16());
  if (r.left() == 1) {
    q.level = r.U8();
    if (q.level == 0) r.Fail();  // level 0 is sent as no byte: one encoding
  }
  if (absl::Status s = r.Finish(OpcodeName(op)); !s.ok()) return s;
  return q;
}

namespace {

// `n u16` then n × (begin u64, end u64, seq u64).
void WriteRangeSeqs(const std::vector<RangeSeq>& ranges, Writer& w) {
  w.U16(static_cast<uint16_t>(ranges.size()));
  for (const RangeSeq& rs : ranges) {
    w.U64(rs.begin);
    w.U64(rs.end);
    w.U64(rs.seq);
  }
}

// The count is checked against kMaxResumeRanges and the bytes left before
// anything is allocated.
absl::StatusOr<std::vector<RangeSeq>> ReadRangeSeqs(Reader& r, const char* what) {
  const size_t n = r.U16();
  if (n > kMaxResumeRanges || n * 24 > r.left()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %u ranges announced, more than the payload holds or the most allowed (%u)", what, n,
        kMaxResumeRanges));
  }
  std::vector<RangeSeq> out(n);
  for (RangeSeq& rs : out) {
    rs.begin = r.U64();
    rs.end = r.U64();
    rs.seq = r.U64();
  }
  return out;
}

}  // namespace

std::vector<uint8_t> SubscribeRequest::Encode() const {
  Writer w;
  w.U8(static_cast<uint8_t>(region.kind));
  WriteRegion(region, w);
  w.U8(static_cast<uint8_t>(detail));
  w.U8(from_ranges ? 2 : from_seq ? 1 : 0);
  w.U64(from_seq.value_or(0));
  if (from_ranges) WriteRangeSeqs(*from_ranges, w);
  return w.Take();
}

absl::StatusOr<SubscribeRequest> SubscribeRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  SubscribeRequest s;
  const uint8_t kind = r.U8();
  if (kind > static_cast<uint8_t>(QueryKind::kBox)) {
    return absl::InvalidArgumentError("SUBSCRIBE: unknown kind of region");
  }
  s.region.kind = static_cast<QueryKind>(kind);
  ReadRegion(r, &s.region);
  const uint8_t detail = r.U8();
  if (detail > static_cast<uint8_t>(EventDetail::kRecords)) r.Fail();
  s.detail = static_cast<EventDetail>(detail);
  const uint8_t has_from = r.U8();
  const uint64_t from = r.U64();
  if (has_from > 2) r.Fail();
  if (has_from == 1) s.from_seq = from;
  if (has_from == 2) {
    auto ranges = ReadRangeSeqs(r, "SUBSCRIBE");
    if (!ranges.ok()) return ranges.status();
    // Sorted, disjoint, non-empty and inside the key space: one range holds
    // a partition's at most once.
    uint64_t after = 0;
    for (const RangeSeq& rs : *ranges) {
      if (rs.begin < after || rs.begin >= rs.end || rs.end > engine::ChunkKey::kMaxCode + 1) {
        return absl::InvalidArgumentError(
            "SUBSCRIBE: resume ranges must be non-empty, inside the key space, sorted and "
            "disjoint");
      }
      after = rs.end;
    }
    s.from_ranges = std::move(*ranges);
  }
  if (absl::Status st = r.Finish("SUBSCRIBE"); !st.ok()) return st;
  return s;
}

std::vector<uint8_t> SubscribeReply::Encode() const {
  Writer w;
  w.U64(subscription);
  w.U64(seq);
  if (!ranges.empty()) WriteRangeSeqs(ranges, w);
  return w.Take();
}

absl::StatusOr<SubscribeReply> SubscribeReply::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  SubscribeReply s;
  s.subscription = r.U64();
  s.seq = r.U64();
  if (r.left() > 0) {
    auto ranges = ReadRangeSeqs(r, "SUBSCRIBE reply");
    if (!ranges.ok()) return ranges.status();
    s.ranges = std::move(*ranges);
  }
  if (absl::Status st = r.Finish("SUBSCRIBE reply"); !st.ok()) return st;
  return s;
}

void ChangeEvent::EncodeTo(std::vector<uint8_t>* out) const {
  Writer w(out);
  w.U64(seq);
  w.U8(static_cast<uint8_t>(kind));
  if (kind == EventKind::kFill) {
    w.BoxOf(box);
    w.U8(material);
  } else {
    w.U64(chunk);
    w.U8(present ? 1 : 0);
    w.U8(static_cast<uint8_t>(detail));
    switch (detail) {
      case EventDetailKind::kNone:
        w.U32(0);
        break;
      case EventDetailKind::kEdits:
        w.U32(static_cast<uint32_t>(edits.size() * 4));
        for (uint32_t e : edits) w.U32(e);
        break;
      case EventDetailKind::kBox:
        w.U32(48);
        w.BoxOf(box);
        break;
      case EventDetailKind::kRecord:
        w.U32(static_cast<uint32_t>(record.size()));
        w.Bytes(record);
        break;
    }
  }
}

std::vector<uint8_t> EventsPush::Encode() const { return EncodeCounted(events); }

absl::StatusOr<EventsPush> EventsPush::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  EventsPush push;
  const uint32_t n = r.U32();
  if (!r.Count(n, 9)) return absl::InvalidArgumentError("malformed EVENTS payload");
  push.events.reserve(n);
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    ChangeEvent e;
    e.seq = r.U64();
    const uint8_t kind = r.U8();
    if (kind == static_cast<uint8_t>(EventKind::kFill)) {
      e.kind = EventKind::kFill;
      e.box = r.BoxOf();
      e.material = r.U8();
    } else if (kind == static_cast<uint8_t>(EventKind::kChunk)) {
      e.chunk = r.U64();
      const uint8_t present = r.U8();
      if (present > 1) r.Fail();
      e.present = present == 1;
      const uint8_t detail = r.U8();
      const uint32_t len = r.U32();
      std::vector<uint8_t> bytes = r.Bytes(len);
      if (!r.ok()) break;
      switch (detail) {
        case 0:
          if (len != 0) r.Fail();
          break;
        case 1:
          if (len % 4 != 0) r.Fail();
          e.detail = EventDetailKind::kEdits;
          for (size_t j = 0; j + 4 <= bytes.size(); j += 4) {
            e.edits.push_back(engine::DecodeFixed32(bytes.data() + j));
          }
          break;
        case 2: {
          Reader box(bytes);
          e.detail = EventDetailKind::kBox;
          e.box = box.BoxOf();
          if (!box.Finish("EVENTS box").ok()) r.Fail();
          break;
        }
        case 3:
          e.detail = EventDetailKind::kRecord;
          e.record = std::move(bytes);
          break;
        default:
          r.Fail();
      }
    } else {
      r.Fail();
    }
    push.events.push_back(std::move(e));
  }
  if (absl::Status st = r.Finish("EVENTS"); !st.ok()) return st;
  return push;
}

std::vector<uint8_t> StreamUpdateRequest::Encode() const {
  Writer w;
  w.U64(budget_bytes_per_s);
  w.U32(window_bytes);
  w.F64(lod_distance_m);
  w.U16(static_cast<uint16_t>(viewers.size()));
  for (const Viewer& v : viewers) {
    w.U32(v.id);
    for (double d : {v.x, v.y, v.z, v.vx, v.vy, v.vz, v.view_distance_m}) w.F64(d);
  }
  return w.Take();
}

absl::StatusOr<StreamUpdateRequest> StreamUpdateRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  StreamUpdateRequest s;
  s.budget_bytes_per_s = r.U64();
  s.window_bytes = r.U32();
  s.lod_distance_m = r.F64();
  const uint16_t n = r.U16();
  if (!r.Count(n, 60)) return absl::InvalidArgumentError("malformed STREAM_UPDATE payload");
  for (uint16_t i = 0; i < n; ++i) {
    Viewer v;
    v.id = r.U32();
    for (double* d : {&v.x, &v.y, &v.z, &v.vx, &v.vy, &v.vz, &v.view_distance_m}) *d = r.F64();
    s.viewers.push_back(v);
  }
  if (absl::Status st = r.Finish("STREAM_UPDATE"); !st.ok()) return st;
  return s;
}

void StreamItem::EncodeHead(Kind kind, uint8_t level, uint64_t code, uint64_t version,
                            uint32_t record_bytes, uint8_t* out) {
  out[0] = static_cast<uint8_t>(kind);
  out[1] = level;
  engine::EncodeFixed64(out + 2, code);
  engine::EncodeFixed64(out + 10, version);
  engine::EncodeFixed32(out + 18, record_bytes);
}

void StreamItem::EncodeTo(std::vector<uint8_t>* out) const {
  uint8_t head[kHeadBytes];
  EncodeHead(kind, level, code, version, static_cast<uint32_t>(record.size()), head);
  out->insert(out->end(), head, head + kHeadBytes);
  out->insert(out->end(), record.begin(), record.end());
}

std::vector<uint8_t> StreamDataPush::Encode() const { return EncodeCounted(items); }

absl::StatusOr<StreamDataPush> StreamDataPush::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  StreamDataPush push;
  const uint32_t n = r.U32();
  if (!r.Count(n, StreamItem::kHeadBytes)) {
    return absl::InvalidArgumentError("malformed STREAM_DATA payload");
  }
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    StreamItem item;
    const uint8_t kind = r.U8();
    if (kind != 1 && kind != 2) r.Fail();
    item.kind = static_cast<StreamItem::Kind>(kind);
    item.level = r.U8();
    item.code = r.U64();
    item.version = r.U64();
    item.record = r.Bytes(r.U32());
    push.items.push_back(std::move(item));
  }
  if (absl::Status st = r.Finish("STREAM_DATA"); !st.ok()) return st;
  return push;
}

// A PartitionInfo on the wire: 10 u64, a u8 of flags, then the directory
// (Str16): at least 83 bytes.
constexpr size_t kPartitionInfoMinBytes = 10 * 8 + 1 + 2;

std::vector<uint8_t> PartitionsReply::Encode() const {
  Writer w;
  w.U32(static_cast<uint32_t>(partitions.size()));
  for (const PartitionInfo& p : partitions) {
    w.U64(p.id);
    w.U64(p.begin);
    w.U64(p.end);
    w.U64(p.chunks);
    w.U64(p.chunk_bytes);
    w.U64(p.used_bytes);
    w.U64(p.map_size);
    w.U64(p.max_map_size);
    w.U64(p.last_seq);
    w.U64(p.epoch);
    w.U8(p.has_store ? 1 : 0);
    w.Str16(p.dir);
  }
  return w.Take();
}
absl::StatusOr<PartitionsReply> PartitionsReply::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  PartitionsReply o;
  const uint32_t n = r.U32();
  if (r.Count(n, kPartitionInfoMinBytes)) {
    o.partitions.resize(n);
    for (PartitionInfo& info : o.partitions) {
      info.id = r.U64();
      info.begin = r.U64();
      info.end = r.U64();
      info.chunks = r.U64();
      info.chunk_bytes = r.U64();
      info.used_bytes = r.U64();
      info.map_size = r.U64();
      info.max_map_size = r.U64();
      info.last_seq = r.U64();
      info.epoch = r.U64();
      const uint8_t flags = r.U8();
      if (flags > 1) r.Fail();
      info.has_store = flags == 1;
      info.dir = r.Str16();
    }
  }
  if (absl::Status s = r.Finish("PARTITIONS reply"); !s.ok()) return s;
  return o;
}

std::vector<uint8_t> SnapshotOpenReply::Encode() const {
  Writer w;
  w.U64(snapshot);
  w.U64(seq);
  return w.Take();
}
absl::StatusOr<SnapshotOpenReply> SnapshotOpenReply::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  SnapshotOpenReply o;
  o.snapshot = r.U64();
  o.seq = r.U64();
  if (absl::Status s = r.Finish("SNAPSHOT_OPEN reply"); !s.ok()) return s;
  return o;
}

std::vector<uint8_t> SnapshotScanRequest::Encode() const {
  Writer w;
  w.U64(snapshot);
  w.BoxOf(box);
  w.U32(limit);
  w.U16(static_cast<uint16_t>(cursor.size()));
  w.Bytes(cursor);
  return w.Take();
}
absl::StatusOr<SnapshotScanRequest> SnapshotScanRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  SnapshotScanRequest q;
  q.snapshot = r.U64();
  q.box = r.BoxOf();
  q.limit = r.U32();
  q.cursor = r.Bytes(r.U16());
  if (absl::Status s = r.Finish("SNAPSHOT_SCAN"); !s.ok()) return s;
  return q;
}

std::vector<uint8_t> SnapshotGetRequest::Encode() const {
  Writer w;
  w.U64(snapshot);
  w.U32(static_cast<uint32_t>(codes.size()));
  for (uint64_t c : codes) w.U64(c);
  return w.Take();
}
absl::StatusOr<SnapshotGetRequest> SnapshotGetRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  SnapshotGetRequest g;
  g.snapshot = r.U64();
  const uint32_t n = r.U32();
  if (r.Count(n, 8)) {
    g.codes.resize(n);
    for (auto& c : g.codes) c = r.U64();
  }
  if (absl::Status s = r.Finish("SNAPSHOT_GET"); !s.ok()) return s;
  return g;
}

std::vector<uint8_t> QueryReply::Encode() const {
  Writer w;
  w.U32(static_cast<uint32_t>(chunks.size()));
  for (const QueryChunk& c : chunks) {
    w.U64(c.code);
    w.U64(c.version);
  }
  w.U32(static_cast<uint32_t>(fills.size()));
  for (const QueryFill& f : fills) {
    w.U64(f.seq);
    w.BoxOf(f.box);
    w.U8(f.material);
  }
  w.U16(static_cast<uint16_t>(next_cursor.size()));
  w.Bytes(next_cursor);
  return w.Take();
}

absl::StatusOr<QueryReply> QueryReply::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  QueryReply q;
  const uint32_t n = r.U32();
  if (r.Count(n, 16)) {
    q.chunks.resize(n);
    for (QueryChunk& c : q.chunks) {
      c.code = r.U64();
      c.version = r.U64();
    }
  }
  const uint32_t m = r.U32();
  if (r.Count(m, 57)) {
    q.fills.resize(m);
    for (QueryFill& f : q.fills) {
      f.seq = r.U64();
      f.box = r.BoxOf();
      f.material = r.U8();
    }
  }
  q.next_cursor = r.Bytes(r.U16());
  if (absl::Status s = r.Finish("query reply"); !s.ok()) return s;
  return q;
}

std::vector<uint8_t> PartitionSplitRequest::Encode() const {
  Writer w;
  w.U64(id);
  w.U64(at);
  return w.Take();
}
absl::StatusOr<PartitionSplitRequest> PartitionSplitRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  PartitionSplitRequest q;
  q.id = r.U64();
  q.at = r.U64();
  if (absl::Status s = r.Finish("PARTITION_SPLIT"); !s.ok()) return s;
  return q;
}

std::vector<uint8_t> PartitionMoveRequest::Encode() const {
  Writer w;
  w.U64(id);
  w.Str16(dir);
  return w.Take();
}
absl::StatusOr<PartitionMoveRequest> PartitionMoveRequest::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  PartitionMoveRequest q;
  q.id = r.U64();
  q.dir = r.Str16();
  if (absl::Status s = r.Finish("PARTITION_MOVE"); !s.ok()) return s;
  if (q.dir.size() > kMaxDirBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("malformed PARTITION_MOVE payload: the directory has %u bytes (at most %u)",
                        q.dir.size(), kMaxDirBytes));
  }
  return q;
}

std::vector<uint8_t> PartitionChangeReply::Encode() const {
  Writer w;
  w.U64(chunks);
  w.U64(bytes);
  w.U64(pause_us);
  w.U8(static_cast<uint8_t>(new_ids.size()));
  for (uint64_t id : new_ids) w.U64(id);
  return w.Take();
}
absl::StatusOr<PartitionChangeReply> PartitionChangeReply::Decode(std::span<const uint8_t> p) {
  Reader r(p);
  PartitionChangeReply q;
  q.chunks = r.U64();
  q.bytes = r.U64();
  q.pause_us = r.U64();
  const uint8_t n = r.U8();
  for (uint8_t i = 0; i < n; ++i) q.new_ids.push_back(r.U64());
  if (absl::Status s = r.Finish("PARTITION_SPLIT/PARTITION_MOVE reply"); !s.ok()) return s;
  return q;
}

std::vector<uint8_t> EncodeU64(uint64_t v) {
  Writer w;
  w.U64(v);
  return w.Take();
}
absl::StatusOr<uint64_t> DecodeU64(std::span<const uint8_t> p) {
  Reader r(p);
  const uint64_t v = r.U64();
  if (absl::Status s = r.Finish("u64"); !s.ok()) return s;
  return v;
}

}  // namespace voxdb::protocol
