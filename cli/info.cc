#include "cli/info.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/world_frame.h"
#include "protocol/stats.h"

namespace voxdb::cli {
namespace {

constexpr std::string_view kOther = "other";

InfoSection* Find(std::vector<InfoSection>& sections, std::string_view name) {
  for (InfoSection& s : sections) {
    if (s.name == name) return &s;
  }
  sections.push_back(InfoSection{std::string(name), {}});
  return &sections.back();
}

void Add(InfoSection* s, std::string_view name, std::string value) {
  s->fields.emplace_back(std::string(name), std::move(value));
}

}  // namespace

std::string_view InfoSectionOf(std::string_view stat_name) {
  const protocol::StatInfo* row = protocol::FindStat(stat_name);
  return row != nullptr ? row->section : kOther;
}

StatusOr<std::vector<InfoSection>> BuildInfo(std::string_view address,
                                             const protocol::HelloReply& hello,
                                             std::string_view stats) {
  VOXDB_ASSIGN_OR_RETURN(const auto stat_lines, protocol::ParseStatsText(stats));
  std::vector<InfoSection> sections;
  for (std::string_view name : protocol::kStatSections) {
    sections.push_back(InfoSection{std::string(name), {}});
  }
  InfoSection* server = Find(sections, "server");
  Add(server, "address", std::string(address));
  Add(server, "server_version", hello.server_version);
  Add(server, "protocol_version", absl::StrCat(hello.version));
  Add(server, "role", protocol::RoleName(static_cast<protocol::Role>(hello.role)));

  InfoSection* storage = Find(sections, "storage");
  auto frame = engine::WorldFrame::Decode(hello.world_frame);
  if (frame.ok()) {
    Add(storage, "extent_x", absl::StrCat(frame->extent_x()));
    Add(storage, "extent_y", absl::StrCat(frame->extent_y()));
    Add(storage, "extent_z", absl::StrCat(frame->extent_z()));
    Add(storage, "voxel_size_m", absl::StrFormat("%g", frame->voxel_size_m()));
    Add(storage, "chunk_edge", absl::StrCat(frame->chunk_edge()));
    Add(storage, "chunks_x", absl::StrCat(frame->chunks_x()));
    Add(storage, "chunks_y", absl::StrCat(frame->chunks_y()));
    Add(storage, "chunks_z", absl::StrCat(frame->chunks_z()));
    Add(storage, "sea_level_z", absl::StrCat(frame->sea_level_z()));
  } else {
    Add(storage, "world_frame_error", std::string(frame.status().message()));
  }

  InfoSection* clients = Find(sections, "clients");
  Add(clients, "max_payload", absl::StrCat(hello.max_payload));
  Add(clients, "max_batch", absl::StrCat(hello.max_batch));
  Add(clients, "max_box_voxels", absl::StrCat(hello.max_box_voxels));

  for (const auto& [name, value] : stat_lines) {
    Add(Find(sections, InfoSectionOf(name)), name, value);
  }
  return sections;
}

std::string PartitionLine(const protocol::PartitionInfo& p) {
  auto figure = [&](uint64_t v) { return p.has_store ? absl::StrCat(v) : std::string("?"); };
  return absl::StrFormat("%u range=[%u,%u) dir=%s chunks=%s bytes=%s last_seq=%u epoch=%u", p.id,
                         p.begin, p.end, p.dir, figure(p.chunks), figure(p.chunk_bytes), p.last_seq,
                         p.epoch);
}

std::string InfoText(const std::vector<InfoSection>& sections,
                     const std::vector<protocol::PartitionInfo>* partitions) {
  std::string text;
  for (const InfoSection& s : sections) {
    absl::StrAppend(&text, text.empty() ? "" : "\n", "# ", s.name, "\n");
    for (const auto& [name, value] : s.fields) absl::StrAppend(&text, name, " ", value, "\n");
  }
  if (partitions != nullptr) {
    absl::StrAppend(&text, text.empty() ? "" : "\n", "# partitions\n");
    for (const protocol::PartitionInfo& p : *partitions) {
      absl::StrAppend(&text, PartitionLine(p), "\n");
    }
  }
  return text;
}

JsonObject InfoJson(const std::vector<InfoSection>& sections,
                    const std::vector<protocol::PartitionInfo>* partitions) {
  JsonObject o;
  o.Str("command", "info");
  for (const InfoSection& s : sections) {
    JsonObject section;
    for (const auto& [name, value] : s.fields) {
      if (IsJsonNumber(value)) {
        section.Raw(name, value);
      } else {
        section.Str(name, value);
      }
    }
    o.Object(s.name, section);
  }
  if (partitions != nullptr) {
    std::string list = "[";
    for (const protocol::PartitionInfo& p : *partitions) {
      auto figure = [&](uint64_t v) { return p.has_store ? absl::StrCat(v) : std::string("null"); };
      JsonObject e;
      e.Num("id", p.id).Num("begin", p.begin).Num("end", p.end).Str("dir", p.dir);
      e.Raw("chunks", figure(p.chunks)).Raw("bytes", figure(p.chunk_bytes));
      e.Raw("used_bytes", figure(p.used_bytes)).Raw("map_size_bytes", figure(p.map_size));
      e.Raw("max_map_size_bytes", figure(p.max_map_size));
      e.Num("last_seq", p.last_seq).Num("epoch", p.epoch);
      absl::StrAppend(&list, list.size() > 1 ? "," : "", e.ToString());
    }
    o.Raw("partitions", list + "]");
  }
  return o;
}

}  // namespace voxdb::cli
