// The write path of Database::Impl (engine/database_impl.h): validation,
// Submit (admission, a sequence number, apply under edit_mu_, the journal
// record to the group committer) and the Apply* functions, which journal
// replay runs through too, so live writes and recovery share one code path.
// The lock order is at the top of engine/database.cc.
#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "absl/strings/str_format.h"
#include "engine/coding.h"
#include "engine/database_impl.h"
#include "engine/format.h"
#include "engine/morton_box.h"

namespace voxdb::engine {
namespace {

// Sequence numbers are reserved in blocks of this many, durably
// (kMetaSeqReserved), before they are used, so that a crash (which may lose
// writes that async mode acknowledged) never leads to a number being issued
// twice.
constexpr uint64_t kSeqBlock = uint64_t{1} << 16;

// Voxels past the world's edge always read as 0 (engine/FORMAT.md, "Chunks
// at the world's edge"): clears them in a chunk of the last x, y or z layer.
void ClearPastEdge(const WorldFrame& frame, ChunkCoord c, Chunk* chunk) {
  const VoxelBox in = frame.VoxelsOfChunk(c);
  const VoxelCoord o = frame.ChunkOrigin(c);
  const uint32_t ex = static_cast<uint32_t>(in.hi.x - o.x);
  const uint32_t ey = static_cast<uint32_t>(in.hi.y - o.y);
  const uint32_t ez = static_cast<uint32_t>(in.hi.z - o.z);
  constexpr uint32_t e = kChunkEdge;
  if (ex < e) chunk->FillBox(LocalBox{{ex, 0, 0}, {e, e, e}}, 0);
  if (ey < e) chunk->FillBox(LocalBox{{0, ey, 0}, {e, e, e}}, 0);
  if (ez < e) chunk->FillBox(LocalBox{{0, 0, ez}, {e, e, e}}, 0);
}

}  // namespace

// --- Writes ------------------------------------------------------------------------

template <typename F>
ChangedChunk Database::Impl::Change(uint64_t code, Entry* e, uint64_t seq, F&& mutate) {
  ChangedChunk changed = cache_.MarkDirty(code, e, seq, std::forward<F>(mutate));
  flusher_.AssertEditLockHeld();
  flusher_.NoteDirty(code, seq);
  return changed;
}

template <typename Fn>
void Database::Impl::Submit(std::vector<uint8_t> record, WriteDone done, size_t estimate,
                            Fn&& apply, const std::function<void(ChangeRecord*)>& describe) {
  const bool sync = options_.durability == Durability::kSync;
  if (estimate > MaxWriteBytes()) {
    if (done) {
      done({TooLargeError(absl::StrFormat(
                "this write would make about %u bytes of chunks dirty, more than one write may "
                "take (%u: half of the dirty-bytes budget of %u, or 8 whole chunks): split it",
                estimate, MaxWriteBytes(), options_.dirty_bytes)),
            0});
    }
    return;
  }
  if (!sync) {
    if (Status s = admission_.WaitForJournal(); !s.ok()) {
      if (done) done({s, 0});
      return;
    }
  }
  if (Status s = admission_.ReserveRoom(estimate); !s.ok()) {
    if (done) done({s, 0});
    return;
  }
  uint64_t seq = 0;
  Status status;
  Changes changed;
  {
    MutexLock lock(&edit_mu_);
    if (closing_) {
      status = ClosingError("the database is closing");
    } else if (!poisoned_.ok()) {
      status = poisoned_;
    } else if (!(status = CheckNotFenced()).ok()) {
      // A stale epoch: nothing applied, no number handed out.
    } else if (next_seq_ > seq_reserved_ && !(status = ReserveSeqs()).ok()) {
      // Nothing applied, no number handed out.
    } else {
      seq = next_seq_++;
      last_seq_ = seq;
      // Writes are serialised here: make room for this one's growth first,
      // so that concurrent writers cannot overshoot the cache together.
      cache_.MaybeEvict(estimate);
      StatusOr<Changes> applied = apply(seq);
      status = applied.status();
      if (applied.ok()) {
        changed = std::move(*applied);
      } else {
        // Applying fails before it changes anything (writes pin or read all
        // they need first): the write did not happen, and its number goes
        // back, else it would be a hole that WaitDurable (Flush, Backup,
        // Snapshot, kSync reads) waits on until some later write commits.
        next_seq_ = seq;
        last_seq_ = seq - 1;
      }
    }
    if (status.ok()) {
      auto change = std::make_shared<ChangeRecord>();
      change->seq = seq;
      change->op = EncodedJournalOp(record);
      change->chunks = std::move(changed);
      if (describe) describe(change.get());
      committer_.Enqueue(Pending{seq, SteadyMicros(), std::move(record),
                                 sync ? std::move(done) : WriteDone(), std::move(change)});
    }
  }
  admission_.ReleaseRoom(estimate);
  cache_.MaybeEvict();  // the write may have grown the cache past its budget
  if (!status.ok()) {
    if (done) done({status, 0});
  } else if (!sync && done) {
    done({absl::OkStatus(), seq});
  }
}

Status Database::Impl::ReserveSeqs() {
  const uint64_t reserved = next_seq_ - 1 + kSeqBlock;
  WriteBatch batch;
  std::vector<uint8_t> value(8);
  EncodeFixed64(value.data(), reserved);
  batch.Put(Table::kMeta, AsBytes(kMetaSeqReserved), std::move(value));
  Status s = store_->Write(batch);
  if (s.ok()) s = store_->Sync();
  if (!s.ok()) {
    return Status(s.code(), absl::StrCat("cannot reserve sequence numbers (the write was not "
                                         "applied): ",
                                         s.message()));
  }
  seq_reserved_ = reserved;
  return absl::OkStatus();
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplySetVoxels(
    uint64_t seq, const std::vector<ChunkEdits>& edits) {
  std::vector<Entry*> entries(edits.size());
  for (size_t i = 0; i < edits.size(); ++i) {
    if (Status s = cache_.PinForWrite(edits[i].code, &entries[i]); !s.ok()) {
      for (size_t j = 0; j < i; ++j) cache_.Unpin(edits[j].code, entries[j]);
      return s;
    }
  }
  Changes changed;
  changed.reserve(edits.size());
  for (size_t i = 0; i < edits.size(); ++i) {
    changed.push_back(Change(edits[i].code, entries[i], seq, [&](Entry& e) {
      Chunk& chunk = cache_.MutableChunk(edits[i].code, &e);
      for (uint32_t p : edits[i].packed) {
        const uint32_t idx = EditIndex(p);
        chunk.Set(idx & 127, (idx >> 7) & 127, idx >> 14, EditMaterial(p));
      }
    }));
  }
  return changed;
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyWriteBox(uint64_t seq, const VoxelBox& box,
                                                                std::span<const uint8_t> voxels) {
  const ChunkBox cb = ChunksCovering(frame(), box);
  std::vector<std::pair<uint64_t, Entry*>> pinned;
  for (uint32_t cz = cb.lo.z; cz <= cb.hi.z; ++cz)
    for (uint32_t cy = cb.lo.y; cy <= cb.hi.y; ++cy)
      for (uint32_t cx = cb.lo.x; cx <= cb.hi.x; ++cx) {
        const uint64_t code = MortonEncode(cx, cy, cz);
        Entry* e;
        if (Status s = cache_.PinForWrite(code, &e); !s.ok()) {
          for (auto& [c, pe] : pinned) cache_.Unpin(c, pe);
          return s;
        }
        pinned.push_back({code, e});
      }
  std::vector<uint8_t> part;
  Changes changed;
  changed.reserve(pinned.size());
  for (auto& pin : pinned) {
    // (Not a structured binding: the lambda below captures it.)
    const uint64_t code = pin.first;
    Entry* e = pin.second;
    const ChunkCoord c = MortonDecode(code);
    const VoxelBox pbox = Intersect(box, frame().VoxelsOfChunk(c));
    const LocalBox local = LocalPart(pbox, c);
    part.resize(local.volume());
    CopySubBox(pbox, box, voxels, pbox, part);
    changed.push_back(Change(code, e, seq, [&](Entry& entry) {
      if (local.volume() == kChunkVoxels) {
        entry.chunk = std::make_shared<Chunk>(Chunk::FromDense(part));
        entry.readers_may_hold = false;
      } else {
        cache_.MutableChunk(code, &entry).WriteBox(local, part.data());
      }
    }));
  }
  return changed;
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyFillBox(uint64_t seq, const VoxelBox& box,
                                                               uint8_t material) {
  // The stored and dirty chunks it touches, in Morton order.
  const ChunkBox cb = ChunksCovering(frame(), box);
  std::set<uint64_t> touched;
  flusher_.AssertEditLockHeld();
  flusher_.ForEachDirty([&](uint64_t code) {
    if (cb.ContainsCode(code)) touched.insert(code);
  });
  {
    VOXDB_ASSIGN_OR_RETURN(auto snap, store_->BeginRead());
    VOXDB_RETURN_IF_ERROR(snap->ScanChunksInBox(cb, 0, [&](ChunkKey key, std::span<const uint8_t>) {
      touched.insert(key.code());
      return true;
    }));
  }
  // Then the fill itself (after the reads that may fail, so that a failed
  // FILL_BOX leaves no fill behind): every chunk that is not stored now
  // reads through it.
  std::shared_ptr<const FillSet> fills;
  {
    auto next = std::make_shared<FillSet>(*fills_.Get());
    next->Add(Fill{seq, box, material});
    fills = next;
    fills_.Set(fills);
  }
  flusher_.AddFill(Fill{seq, box, material});
  Changes changed;
  for (uint64_t code : touched) {
    const ChunkCoord c = MortonDecode(code);
    const VoxelBox chunk_box = frame().VoxelsOfChunk(c);
    const VoxelBox pbox = Intersect(box, chunk_box);
    const bool whole = BoxContains(box, chunk_box);
    Entry* e;
    // A chunk the fill covers wholly is replaced, even a corrupt one. One
    // it covers in part and that fails to load (corrupt) is left as it is;
    // the fill still covers everything else.
    if (!cache_.PinForWrite(code, &e, whole ? Need::kNothing : Need::kContent).ok()) continue;
    changed.push_back(Change(code, e, seq, [&](Entry& entry) {
      if (whole || !entry.chunk) {
        entry.chunk = nullptr;  // reads as the fills, this one on top
        entry.fills = fills;
      } else {
        cache_.MutableChunk(code, &entry).FillBox(LocalPart(pbox, c), material);
      }
    }));
  }
  return changed;
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyPutChunk(uint64_t seq, uint64_t code,
                                                                std::span<const uint8_t> record,
                                                                std::optional<uint64_t> expected) {
  VOXDB_ASSIGN_OR_RETURN(ChunkRecordView view, ParseChunkRecord(record));
  std::shared_ptr<Chunk> chunk;
  if (view.header.encoding != ChunkEncoding::kFills) {
    VOXDB_ASSIGN_OR_RETURN(Chunk decoded, DecodeChunk(record));
    ClearPastEdge(frame(), MortonDecode(code), &decoded);
    decoded.Compact();
    chunk = std::make_shared<Chunk>(std::move(decoded));
  }
  Entry* e;
  VOXDB_RETURN_IF_ERROR(cache_.PinForWrite(code, &e, expected ? Need::kVersion : Need::kNothing));
  if (expected && *expected != e->version) {
    const uint64_t current = e->version;
    cache_.Unpin(code, e);
    return ConflictError(absl::StrFormat("chunk %s is at version %u, not the expected %u",
                                         ChunkKey::FromCode(code).ToString(), current, *expected));
  }
  return Changes{Change(code, e, seq, [&](Entry& entry) {
    entry.chunk = std::move(chunk);
    entry.readers_may_hold = false;
    if (!entry.chunk) entry.fills = fills_.Get();
  })};
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyDeleteChunk(uint64_t seq, uint64_t code) {
  Entry* e;
  VOXDB_RETURN_IF_ERROR(cache_.PinForWrite(code, &e, Need::kNothing));
  return Changes{Change(code, e, seq, [&](Entry& entry) {
    entry.chunk = nullptr;
    entry.fills = fills_.Get();
  })};
}

StatusOr<Database::Impl::Changes> Database::Impl::ApplyRecord(uint64_t seq,
                                                              const JournalRecord& rec) {
  if (seq >= next_seq_) {
    next_seq_ = seq + 1;
    last_seq_ = seq;
  }
  switch (rec.op) {
    case JournalOp::kSetVoxels:
      return ApplySetVoxels(seq, rec.edits);
    case JournalOp::kWriteBox:
      return ApplyWriteBox(seq, rec.box, rec.voxels);
    case JournalOp::kFillBox:
      return ApplyFillBox(seq, rec.box, rec.material);
    case JournalOp::kPutChunk:
      return ApplyPutChunk(seq, rec.code, rec.record, std::nullopt);
    case JournalOp::kDeleteChunk:
      return ApplyDeleteChunk(seq, rec.code);
  }
  return CorruptError("unknown journal op");
}

void Database::Impl::SetVoxels(std::span<const VoxelEdit> edits, WriteDone done) {
  // Validate everything, group by chunk (keeping order within a chunk).
  // Batches usually touch a handful of chunks: a short list searched
  // linearly beats a hash map until it grows.
  std::vector<ChunkEdits> groups;
  std::vector<uint64_t> group_codes;
  std::unordered_map<uint64_t, size_t> index;  // once there are many groups
  uint64_t last_code = UINT64_MAX;
  size_t last_group = 0;
  for (const VoxelEdit& e : edits) {
    if (!frame().Contains(e.at)) {
      if (done) done({frame().CheckVoxel(e.at), 0});
      return;
    }
    const ChunkCoord c = frame().ChunkOf(e.at);
    const uint64_t code = MortonEncode(c.x, c.y, c.z);
    if (code != last_code) {
      if (Status s = CheckInPartition(code); !s.ok()) {
        if (done) done({s, 0});
        return;
      }
      size_t g = 0;
      if (index.empty()) {
        while (g < group_codes.size() && group_codes[g] != code) ++g;
      } else {
        auto it = index.find(code);
        g = it == index.end() ? groups.size() : it->second;
      }
      if (g == groups.size()) {
        groups.push_back(ChunkEdits{code, {}});
        group_codes.push_back(code);
        if (!index.empty() || groups.size() > 32) {
          if (index.empty()) {
            for (size_t i = 0; i < group_codes.size(); ++i) index[group_codes[i]] = i;
          }
          index[code] = g;
        }
      }
      last_code = code;
      last_group = g;
    }
    const ChunkCoord o = frame().OffsetInChunk(e.at);
    groups[last_group].packed.push_back(PackEdit(o.x | (o.y << 7) | (o.z << 14), e.material));
  }
  if (groups.empty()) {
    if (done) done({absl::InvalidArgumentError("no voxel edits"), 0});
    return;
  }
  std::vector<uint8_t> record = EncodeSetVoxels(groups);
  // A chunk not yet dirty may need its brick grid (a uniform chunk has
  // none); each edit may add or widen a brick (about 1 KiB on average).
  std::unique_ptr<ChunkStore::Snapshot> snap;
  size_t estimate = 0;
  for (const ChunkEdits& g : groups) {
    const size_t cost = cache_.DirtyCost(g.code, &snap);
    if (cost > 0) estimate += cost + sizeof(Brick) * kBricksPerChunk;
    estimate += std::min(g.packed.size() * 1024, kChunkVoxels);
    if (estimate > MaxWriteBytes()) break;  // refused whole: no need to look further
  }
  snap.reset();
  Submit(
      std::move(record), std::move(done), estimate,
      [&](uint64_t seq)
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) { return ApplySetVoxels(seq, groups); },
      [&](ChangeRecord* change) {
        // ApplySetVoxels commits the groups in order, one chunk each.
        for (size_t i = 0; i < groups.size() && i < change->chunks.size(); ++i) {
          change->chunks[i].edits = std::move(groups[i].packed);
        }
      });
}

void Database::Impl::WriteBox(const VoxelBox& box, std::span<const uint8_t> voxels,
                              WriteDone done) {
  Status s = CheckReadBox(box);
  if (s.ok() && voxels.size() != box.volume()) {
    s = absl::InvalidArgumentError(absl::StrFormat("box holds %u voxels but %u bytes were given",
                                                   box.volume(), voxels.size()));
  }
  if (!s.ok()) {
    if (done) done({s, 0});
    return;
  }
  // At most the box's voxels as raw bricks, plus each chunk's brick table.
  std::unique_ptr<ChunkStore::Snapshot> snap;
  size_t estimate = box.volume();
  const ChunkBox cb = ChunksCovering(frame(), box);
  for (uint32_t cz = cb.lo.z; cz <= cb.hi.z; ++cz)
    for (uint32_t cy = cb.lo.y; cy <= cb.hi.y; ++cy)
      for (uint32_t cx = cb.lo.x; cx <= cb.hi.x; ++cx)
        estimate +=
            cache_.DirtyCost(MortonEncode(cx, cy, cz), &snap) + sizeof(Brick) * kBricksPerChunk;
  snap.reset();
  Submit(
      EncodeWriteBox(box, voxels), std::move(done), estimate,
      [&](uint64_t seq)
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) { return ApplyWriteBox(seq, box, voxels); },
      [&](ChangeRecord* change) { change->box = box; });
}

void Database::Impl::FillBox(const VoxelBox& box, uint8_t material, WriteDone done) {
  Status s = frame().CheckBox(box);
  if (s.ok()) s = CheckBoxInPartition(box);
  if (!s.ok()) {
    if (done) done({s, 0});
    return;
  }
  // Fills make bricks uniform: they shrink chunks more often than not.
  Submit(
      EncodeFillBox(box, material), std::move(done), 0,
      [&](uint64_t seq)
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) { return ApplyFillBox(seq, box, material); },
      [&](ChangeRecord* change) {
        change->box = box;
        change->material = material;
      });
}

void Database::Impl::PutChunk(ChunkKey key, std::span<const uint8_t> record,
                              std::optional<uint64_t> expected_version, WriteDone done) {
  size_t memory = sizeof(Chunk);
  Status s = frame().CheckChunk(key.coord());
  if (s.ok()) s = CheckInPartition(key.code());
  if (s.ok()) {
    auto view = ParseChunkRecord(record);
    s = view.status();
    if (s.ok() && view->header.encoding == ChunkEncoding::kFills) {
      s = absl::InvalidArgumentError("PUT_CHUNK takes chunk data; use DELETE_CHUNK to revert");
    } else if (s.ok() && view->header.encoding == ChunkEncoding::kBricks) {
      // A payload that does not decode is refused up front.
      auto decoded = DecodeChunk(record);
      s = decoded.status();
      if (s.ok()) memory = decoded->MemoryUsage();
    }
  }
  if (!s.ok()) {
    if (done) done({s, 0});
    return;
  }
  Submit(EncodePutChunk(key, record), std::move(done), memory + kVirtualEntryBytes,
         [&](uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) {
           return ApplyPutChunk(seq, key.code(), record, expected_version);
         });
}

void Database::Impl::DeleteChunk(ChunkKey key, WriteDone done) {
  Status s = frame().CheckChunk(key.coord());
  if (s.ok()) s = CheckInPartition(key.code());
  if (!s.ok()) {
    if (done) done({s, 0});
    return;
  }
  Submit(EncodeDeleteChunk(key), std::move(done), kVirtualEntryBytes,
         [&](uint64_t seq)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(edit_mu_) { return ApplyDeleteChunk(seq, key.code()); });
}

}  // namespace voxdb::engine
