#include "engine/database_snapshot.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/status.h"

namespace voxdb::engine {

bool SnapshotRegistry::Add(DatabaseSnapshot* snapshot) {
  MutexLock l(&mu);
  if (closed) return false;
  live.insert(snapshot);
  return true;
}

void SnapshotRegistry::CloseAll() {
  MutexLock l(&mu);
  for (DatabaseSnapshot* s : live) s->store_.reset();
  live.clear();
  closed = true;
}

std::vector<uint8_t> EncodeDirty(const Chunk* chunk, uint64_t version, const FillSet& fills,
                                 const WorldFrame& frame, ChunkCoord c, const CodecOptions& codec) {
  if (chunk) return EncodeChunk(*chunk, version, NowMicros(), codec);
  return EncodeChunk(fills.Rasterise(frame, c, nullptr), version, NowMicros(), codec);
}

void ReadClean(const ChunkStore::Snapshot& store, const FillSet& fills, const WorldFrame& frame,
               const CodecOptions& codec, ChunkRead* read, std::vector<uint8_t>* owned) {
  auto got = store.GetChunk(read->key);
  uint64_t marker_version = 0;
  if (got.ok()) {
    auto view = ParseChunkRecord(*got);
    if (!view.ok()) {
      read->status = view.status();
      return;
    }
    if (view->header.encoding != ChunkEncoding::kFills) {
      read->version = view->header.version;
      read->record = *got;
      read->source = ChunkRead::Source::kStore;
      return;
    }
    marker_version = view->header.version;
  } else if (!absl::IsNotFound(got.status())) {
    read->status = got.status();
    return;
  }
  uint64_t fill_version = 0;
  Chunk raster = fills.Rasterise(frame, read->key.coord(), &fill_version);
  read->version = std::max(marker_version, fill_version);
  *owned = EncodeChunk(raster, read->version, NowMicros(), codec);
  read->record = *owned;
  read->source = ChunkRead::Source::kFills;
}

DatabaseSnapshot::~DatabaseSnapshot() {
  if (!registry_) return;
  MutexLock l(&registry_->mu);
  registry_->live.erase(this);
  store_.reset();  // while the environment is open (else CloseAll did it)
}

Status DatabaseSnapshot::CheckOpen() const {
  if (!store_) return ClosingError("the snapshot's database has closed");
  return absl::OkStatus();
}

Status DatabaseSnapshot::GetChunks(std::span<const ChunkKey> keys,
                                   const std::function<void(size_t, const ChunkRead&)>& fn) const {
  VOXDB_RETURN_IF_ERROR(CheckOpen());
  const CodecOptions codec{zstd_level_};
  for (size_t i = 0; i < keys.size(); ++i) {
    ChunkRead read;
    read.key = keys[i];
    const ChunkCoord c = keys[i].coord();
    if (Status s = frame_.CheckChunk(c); !s.ok()) {
      read.status = s;
      fn(i, read);
      continue;
    }
    if (!partition_.range.Contains(keys[i].code())) {
      read.status =
          WrongPartitionError(absl::StrCat("chunk ", keys[i].ToString(), " (code ", keys[i].code(),
                                           ") is not in ", DescribePartition(partition_)));
      fn(i, read);
      continue;
    }
    std::vector<uint8_t> owned;
    if (auto it = dirty_.find(keys[i].code()); it != dirty_.end()) {
      read.source = ChunkRead::Source::kCache;
      read.version = it->second.version;
      owned = EncodeDirty(it->second.chunk.get(), read.version, *fills_, frame_, c, codec);
      read.record = owned;
      fn(i, read);
      continue;
    }
    ReadClean(*store_, *fills_, frame_, codec, &read, &owned);
    fn(i, read);
  }
  return absl::OkStatus();
}

Status DatabaseSnapshot::ScanChunks(const ChunkBox& box, uint64_t from,
                                    const std::function<bool(ChunkKey, uint64_t)>& fn) const {
  VOXDB_RETURN_IF_ERROR(CheckOpen());
  if (from > box.MaxCode()) return absl::OkStatus();  // past the box: nothing left
  // The stored chunks in the box (BIGMIN jumps over the gaps), merged in
  // Morton order with the dirty ones, which win.
  auto dirty = dirty_.lower_bound(std::max(from, box.MinCode()));
  const auto dirty_end = dirty_.upper_bound(box.MaxCode());
  bool stopped = false;
  // Emits the dirty chunks before `code` (all of them when nullopt); false
  // when fn asked to stop.
  auto emit_dirty_before = [&](std::optional<uint64_t> code) {
    for (; dirty != dirty_end && (!code || dirty->first < *code); ++dirty) {
      if (!dirty->second.chunk || !box.ContainsCode(dirty->first)) continue;
      if (!fn(ChunkKey::FromCode(dirty->first), dirty->second.version)) return false;
    }
    return true;
  };
  Status inner;
  VOXDB_RETURN_IF_ERROR(
      store_->ScanChunksInBox(box, from, [&](ChunkKey key, std::span<const uint8_t> record) {
        if (!emit_dirty_before(key.code())) {
          stopped = true;
          return false;
        }
        if (dirty != dirty_end && dirty->first == key.code()) return true;  // dirty wins
        auto view = ParseChunkRecord(record);
        if (!view.ok()) {
          inner = view.status();
          return false;
        }
        if (view->header.encoding == ChunkEncoding::kFills) return true;
        if (!fn(key, view->header.version)) {
          stopped = true;
          return false;
        }
        return true;
      }));
  VOXDB_RETURN_IF_ERROR(inner);
  if (!stopped) emit_dirty_before(std::nullopt);
  return absl::OkStatus();
}

Status DatabaseSnapshot::ScanRecords(
    const MortonRange& range,
    const std::function<bool(ChunkKey, uint64_t, const RecordFn&)>& fn) const {
  VOXDB_RETURN_IF_ERROR(CheckOpen());
  const CodecOptions codec{zstd_level_};
  auto dirty = dirty_.lower_bound(range.begin);
  const auto dirty_end = dirty_.lower_bound(range.end);
  std::vector<uint8_t> owned;
  // A dirty chunk as the flusher would store it: its record, or a marker
  // when it was deleted (reads as the fills, keeps its version).
  auto emit_dirty = [&](uint64_t code, const Dirty& d) {
    return fn(ChunkKey::FromCode(code), d.version, [&]() -> std::span<const uint8_t> {
      owned = d.chunk ? EncodeChunk(*d.chunk, d.version, NowMicros(), codec)
                      : EncodeFillsMarker(d.version, NowMicros());
      return owned;
    });
  };
  bool stopped = false;
  Status inner;
  VOXDB_RETURN_IF_ERROR(
      store_->ScanChunks(range, [&](ChunkKey key, std::span<const uint8_t> record) {
        bool go_on = true;
        for (; go_on && dirty != dirty_end && dirty->first <= key.code(); ++dirty) {
          if (dirty->first == key.code()) {
            go_on = emit_dirty(dirty->first, dirty->second);  // the dirty state wins
            ++dirty;
            stopped = !go_on;
            return go_on;
          }
          go_on = emit_dirty(dirty->first, dirty->second);
        }
        if (!go_on) {
          stopped = true;
          return false;
        }
        auto view = ParseChunkRecord(record);
        if (!view.ok()) {
          inner = view.status();
          return false;
        }
        stopped = !fn(key, view->header.version, [record] { return record; });
        return !stopped;
      }));
  VOXDB_RETURN_IF_ERROR(inner);
  for (; !stopped && dirty != dirty_end; ++dirty) {
    if (!emit_dirty(dirty->first, dirty->second)) break;
  }
  return absl::OkStatus();
}

}  // namespace voxdb::engine
