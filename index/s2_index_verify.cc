#include "index/s2_index_verify.h"

#include <algorithm>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "engine/format.h"
#include "index/s2_index.h"

namespace voxdb::index {

using engine::ChunkKey;
using engine::Table;
using engine::VerifyPass;

void S2IndexVerifyHook::CheckMeta(VerifyPass& pass) {
  engine::VerifyReport& r = pass.report();
  auto v = pass.MetaValue(engine::kMetaIndexFormat, 4, true);
  if (!v) return;
  const uint32_t format = engine::DecodeFixed32(v->data());
  if (format == kIndexFormat) {
    r.index_built = true;
  } else if (format < kIndexFormat) {
    r.index_outdated = true;
    r.Warning(absl::StrFormat(
        "index: s2index_format %u is older than this build's %u: voxdbd rebuilds the index "
        "when it starts",
        format, kIndexFormat));
  } else {
    pass.MetaProblem(absl::StrFormat(
        "s2index_format is %u, not %u: voxdbd refuses to start (rebuild with voxdb reindex)",
        format, kIndexFormat));
  }
}

void S2IndexVerifyHook::CheckChunk(VerifyPass& pass, ChunkKey key, uint64_t version) {
  engine::VerifyReport& r = pass.report();
  if (!r.index_built) return;
  const engine::ChunkCoord c = key.coord();
  const auto index_key = IndexKey(ChunkCell(pass.frame(), key), ColumnId(c));
  auto entry = pass.snapshot().Get(Table::kS2Index, index_key);
  std::vector<IndexItem> items;
  // A damaged entry (counted by CheckTables) still serves what can be read.
  if (entry.ok()) DecodeIndexValue(*entry, &items);
  if (!entry.ok() && !absl::IsNotFound(entry.status())) {
    r.Problem(absl::StrFormat("index: the entry of %s cannot be read: %s",
                              VerifyPass::ChunkName(key), pass.Describe(entry.status())));
    return;
  }
  auto item =
      std::find_if(items.begin(), items.end(), [&](const IndexItem& i) { return i.z == c.z; });
  if (item == items.end()) {
    ++r.index_missing;
    r.Problem(absl::StrFormat("index: no entry for %s version %u (voxdb reindex rebuilds it)",
                              VerifyPass::ChunkName(key), version));
  } else if (item->version != version) {
    ++r.index_wrong_version;
    r.Problem(absl::StrFormat("index: %s has version %u but its entry says %u",
                              VerifyPass::ChunkName(key), version, item->version));
  } else {
    ++r.index_ok;
  }
}

void S2IndexVerifyHook::CheckTables(VerifyPass& pass) {
  engine::VerifyReport& r = pass.report();
  const engine::WorldFrame& frame = pass.frame();
  if (!r.index_built) {
    auto n = pass.snapshot().Count(Table::kS2Index);
    if (n.ok()) r.index_columns = *n;
    if (r.index_columns > 0 && !r.index_outdated) {
      r.Warning(absl::StrFormat(
          "index: %u entries, but meta has no s2index_format: voxdbd rebuilds the index when "
          "it starts",
          r.index_columns));
    }
    return;
  }
  std::vector<IndexItem> items;
  pass.ScanTable(
      Table::kS2Index,
      [&](std::span<const uint8_t> k, std::span<const uint8_t> v) {
        const uint64_t column =
            k.size() == kIndexKeySize ? engine::DecodeBigEndian64(k.data() + 8) : ~uint64_t{0};
        if (column >> (2 * engine::kMortonAxisBits) != 0 || !DecodeIndexValue(v, &items)) {
          ++r.index_malformed;
          r.Problem(absl::StrFormat("index: malformed entry %s (a %u-byte key, a %u-byte value)",
                                    VerifyPass::Hex(k), k.size(), v.size()));
          return;
        }
        const S2CellId cell(engine::DecodeBigEndian64(k.data()));
        std::optional<S2CellId> expected;
        for (const IndexItem& item : items) {
          ++r.index_entries;
          const engine::ChunkCoord c{static_cast<uint32_t>(column >> engine::kMortonAxisBits),
                                     static_cast<uint32_t>(column & engine::kMaxChunkAxis), item.z};
          const ChunkKey key = ChunkKey::FromCoord(c);
          auto extra = [&](std::string_view why) {
            ++r.index_extra;
            r.Problem(absl::StrFormat("index: extra entry for %s under cell %s: %s",
                                      VerifyPass::ChunkName(key), cell.ToToken(), why));
          };
          if (!frame.ContainsChunk(c)) {
            extra("the chunk is outside the world");
            continue;
          }
          if (!expected) expected = ChunkCell(frame, key);
          if (*expected != cell) {
            extra(absl::StrFormat("its centre is in cell %s", expected->ToToken()));
            continue;
          }
          auto record = pass.snapshot().GetChunk(key);
          if (absl::IsNotFound(record.status())) {
            extra("the chunk is not stored");
            continue;
          }
          if (!record.ok()) continue;  // reported with the chunks
          auto view = engine::ParseChunkRecord(*record);
          if (!view.ok()) continue;  // reported with the chunks
          if (view->header.encoding == engine::ChunkEncoding::kFills) {
            extra("the chunk is deleted (a fills marker)");
          }
        }
      },
      &r.index_columns);
}

}  // namespace voxdb::index
