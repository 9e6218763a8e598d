#include "engine/verify.h"

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "engine/fills.h"
#include "engine/format.h"
#include "engine/journal.h"
#include "engine/partition.h"

namespace voxdb::engine {

void VerifyReport::Problem(std::string text) {
  ++problem_count;
  if (problems.size() < kMaxKeptProblems) problems.push_back(std::move(text));
}

void VerifyReport::Warning(std::string text) {
  ++warning_count;
  if (warnings.size() < kMaxKeptProblems) warnings.push_back(std::move(text));
}

StatusOr<VerifyReport> VerifyStore(const ChunkStore& store, const VerifyOptions& options) {
  VerifyReport report;
  VOXDB_ASSIGN_OR_RETURN(auto snap, store.BeginRead());
  VerifyPass(*snap, store.frame(), options, &report).Run();
  return report;
}

// --- VerifyPass: the helpers hooks use ---------------------------------------

std::string VerifyPass::Describe(const Status& status) const {
  if (options_.describe) return options_.describe(status);
  return absl::StrFormat("%s: %s", absl::StatusCodeToString(status.code()), status.message());
}

std::string VerifyPass::ChunkName(ChunkKey key) {
  const ChunkCoord c = key.coord();
  return absl::StrFormat("chunk %u,%u,%u (key %u)", c.x, c.y, c.z, key.code());
}

std::string VerifyPass::Hex(std::span<const uint8_t> bytes) {
  std::string out;
  for (uint8_t b : bytes) absl::StrAppendFormat(&out, "%02x", b);
  return out;
}

void VerifyPass::MetaProblem(std::string text) {
  r_.meta_ok = false;
  r_.Problem("meta: " + std::move(text));
}

std::optional<std::span<const uint8_t>> VerifyPass::MetaValue(std::string_view name, size_t size,
                                                              bool optional) {
  auto v = snap_.Get(Table::kMeta, AsBytes(name));
  if (!v.ok()) {
    if (!absl::IsNotFound(v.status())) {
      MetaProblem(absl::StrFormat("%s cannot be read: %s", name, Describe(v.status())));
    } else if (!optional) {
      MetaProblem(absl::StrFormat("%s is missing", name));
    }
    return std::nullopt;
  }
  if (size != 0 && v->size() != size) {
    MetaProblem(absl::StrFormat("%s has %u bytes, not %u", name, v->size(), size));
    return std::nullopt;
  }
  return *v;
}

void VerifyPass::ScanTable(
    Table table, const std::function<void(std::span<const uint8_t>, std::span<const uint8_t>)>& fn,
    uint64_t* scanned) {
  const Status s = snap_.Scan(table, {}, {}, [&](auto k, auto v) {
    ++*scanned;
    fn(k, v);
    return true;
  });
  if (!s.ok()) {
    r_.Problem(
        absl::StrFormat("table %s cannot be read to the end: %s", TableName(table), Describe(s)));
    return;
  }
  scanned_[static_cast<int>(table)] = *scanned;  // complete: CheckCounts compares it
}

// --- VerifyPass: the checks ---------------------------------------------------

void VerifyPass::Run() {
  CheckMeta();
  CheckFills();
  CheckJournal();
  CheckChunks();
  if (options_.hook) options_.hook->CheckTables(*this);
  CheckCounts();
  auto lod = snap_.Count(Table::kLod);
  if (lod.ok()) r_.lod_entries = *lod;
}

void VerifyPass::CheckMeta() {
  if (auto v = MetaValue(kMetaFormatVersion, 4, false)) {
    r_.format_version = DecodeFixed32(v->data());
    if (r_.format_version != kStoreFormatVersion) {
      MetaProblem(absl::StrFormat("format_version is %u; this build reads %u", r_.format_version,
                                  kStoreFormatVersion));
    }
  }
  if (auto v = MetaValue(kMetaWorldFrame, 0, false)) {
    auto stored = WorldFrame::Decode(*v);
    if (!stored.ok()) {
      MetaProblem("world_frame does not decode: " + Describe(stored.status()));
    } else if (!(*stored == frame_)) {
      MetaProblem("world_frame differs from the frame the store opened with");
    }
  }
  if (auto v = MetaValue(kMetaCreated, 8, false)) {
    r_.created_us = static_cast<int64_t>(DecodeFixed64(v->data()));
  }
  if (auto v = MetaValue(kMetaLastSeq, 8, true)) {
    r_.has_last_seq = true;
    r_.last_seq = DecodeFixed64(v->data());
  }
  if (auto v = MetaValue(kMetaSeqReserved, 8, true)) {
    seq_reserved_ = DecodeFixed64(v->data());
  }
  // The partition identity: three keys written together, or none.
  const bool has_id = MetaValue(kMetaPartitionId, 8, true).has_value();
  const bool has_parent = MetaValue(kMetaPartitionParent, 8, true).has_value();
  bool has_range = false;
  if (auto v = MetaValue(kMetaPartitionRange, 16, true)) {
    has_range = true;
    auto range = DecodeMortonRange(*v);
    PartitionIdentity p;
    if (range.ok()) p.range = *range;
    if (Status s = range.ok() ? CheckPartitionIdentity(p) : range.status(); !s.ok()) {
      MetaProblem("partition_range: " + Describe(s));
    }
  }
  if ((has_id || has_range || has_parent) && !(has_id && has_range && has_parent)) {
    MetaProblem("partition_id, partition_range and partition_parent are not all present");
  }
  if (auto v = MetaValue(kMetaEpochHistory, 0, true)) {
    if (auto history = DecodeEpochHistory(*v); !history.ok()) {
      MetaProblem("epoch_history: " + Describe(history.status()));
    }
  }
  if (options_.hook) options_.hook->CheckMeta(*this);
  uint64_t scanned = 0;
  ScanTable(
      Table::kMeta,
      [&](std::span<const uint8_t> k, std::span<const uint8_t>) {
        const std::string_view name(reinterpret_cast<const char*>(k.data()), k.size());
        for (std::string_view known : kMetaKeys) {
          if (name == known) return;
        }
        const std::string quoted =
            options_.quote
                ? options_.quote(name)
                : absl::StrFormat("\"%s\"",
                                  absl::CHexEscape(absl::string_view(name.data(), name.size())));
        r_.Warning(absl::StrFormat("meta: unknown key %s (hex %s)", quoted, Hex(k)));
      },
      &scanned);
}

void VerifyPass::CheckFills() {
  ScanTable(
      Table::kFills,
      [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
        if (k.size() != 8) {
          ++r_.fills_corrupt;
          r_.Problem(absl::StrFormat("fills: key %s is not an 8-byte sequence number", Hex(k)));
          return;
        }
        const uint64_t seq = DecodeBigEndian64(k.data());
        auto fill = Fill::Decode(seq, v);
        Status s = fill.ok() ? frame_.CheckBox(fill->box) : fill.status();
        if (s.ok() && seq == 0) s = CorruptError("sequence number 0 is never handed out");
        if (!s.ok()) {
          ++r_.fills_corrupt;
          r_.Problem(absl::StrFormat("fill %u: %s", seq, Describe(s)));
          return;
        }
        ++r_.fills_ok;
        max_fill_seq_ = std::max(max_fill_seq_, seq);
      },
      &r_.fills);
}

void VerifyPass::CheckJournal() {
  uint64_t previous = 0;
  ScanTable(
      Table::kJournal,
      [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
        if (k.size() != 8) {
          ++r_.journal_corrupt;
          r_.Problem(absl::StrFormat("journal: key %s is not an 8-byte sequence number", Hex(k)));
          return;
        }
        const uint64_t seq = DecodeBigEndian64(k.data());
        if (r_.journal_first_seq == 0) r_.journal_first_seq = seq;
        r_.journal_last_seq = seq;
        if (previous != 0 && seq != previous + 1) {
          ++r_.journal_gaps;
          r_.Warning(absl::StrFormat(
              "journal: sequence numbers jump from %u to %u (a journal commit that failed, "
              "reported to its writer, leaves such a gap)",
              previous, seq));
        }
        previous = seq;
        Status s = DecodeJournalRecord(v).status();
        if (s.ok() && seq == 0) s = CorruptError("sequence number 0 is never handed out");
        if (!s.ok()) {
          ++r_.journal_corrupt;
          r_.Problem(absl::StrFormat("journal record %u: %s", seq, Describe(s)));
          return;
        }
        ++r_.journal_ok;
      },
      &r_.journal_records);
}

void VerifyPass::CheckChunks() {
  // On open, the next sequence number is one past the largest of these;
  // a stored version above it would let new writes get lower versions.
  const uint64_t counter =
      std::max({r_.last_seq, r_.journal_last_seq, max_fill_seq_, seq_reserved_});
  uint64_t ahead = 0;
  std::optional<std::pair<ChunkKey, uint64_t>> newest_ahead;
  ScanTable(
      Table::kChunks,
      [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
        const std::optional<ChunkKey> key = ChunkKey::Decode(k);
        if (!key) {
          ++r_.chunk_bad_keys;
          r_.Problem(absl::StrFormat("chunks: key %s is not an 8-byte Morton code", Hex(k)));
          return;
        }
        if (!frame_.ContainsChunk(key->coord())) {
          ++r_.chunk_bad_keys;
          r_.Problem(absl::StrFormat("%s: outside the world's %u x %u x %u chunks", ChunkName(*key),
                                     frame_.chunks_x(), frame_.chunks_y(), frame_.chunks_z()));
          return;
        }
        auto view = ParseChunkRecord(v);
        if (!view.ok()) {
          ++r_.chunks_corrupt;
          r_.Problem(absl::StrFormat("%s: %s", ChunkName(*key), Describe(view.status())));
          return;
        }
        const uint64_t version = view->header.version;
        if (version > counter) {
          ++ahead;
          if (!newest_ahead || version > newest_ahead->second) newest_ahead = {*key, version};
        }
        if (view->header.encoding == ChunkEncoding::kFills) {
          ++r_.fills_markers;
          ++r_.chunks_ok;
          return;
        }
        // The hook checks against the header, whatever the payload.
        if (options_.hook) options_.hook->CheckChunk(*this, *key, version);
        const Status s = DecodeChunk(v).status();
        if (!s.ok()) {
          ++r_.chunks_corrupt;
          r_.Problem(absl::StrFormat("%s: %s", ChunkName(*key), Describe(s)));
          return;
        }
        ++r_.chunks_ok;
        if (view->header.encoding == ChunkEncoding::kUniform) {
          ++r_.uniform;
        } else {
          ++r_.bricks;
        }
      },
      &r_.chunks);
  if (ahead > 0) {
    r_.Warning(absl::StrFormat(
        "chunks: %u record%s newer than the sequence counter %u (the newest: %s version %u): "
        "writes after the next open would not get newer versions (not written by "
        "engine::Database?)",
        ahead, ahead == 1 ? " is" : "s are", counter, ChunkName(newest_ahead->first),
        newest_ahead->second));
  }
}

// LMDB's own entry counts against the scans.
void VerifyPass::CheckCounts() {
  for (int t = 0; t < kTableCount; ++t) {
    const auto scanned = scanned_[t];
    if (!scanned.has_value()) continue;
    const Table table = static_cast<Table>(t);
    auto n = snap_.Count(table);
    if (!n.ok()) {
      r_.Problem(absl::StrFormat("table %s: %s", TableName(table), Describe(n.status())));
    } else if (*n != *scanned) {
      r_.Problem(absl::StrFormat("table %s: LMDB counts %u entries, a scan found %u",
                                 TableName(table), *n, *scanned));
    }
  }
}

}  // namespace voxdb::engine
