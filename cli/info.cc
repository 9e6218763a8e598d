#include "cli/info.h"

#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/world_frame.h"

namespace voxdb::cli {
namespace {

constexpr std::array<std::string_view, 8> kSections = {"server", "storage", "cache",   "journal",
                                                       "index",  "lod",     "clients", "push"};
constexpr std::string_view kOther = "other";

// STATS name prefixes, first match wins (so "index_" before "in_").
constexpr std::pair<std::string_view, std::string_view> kPrefixes[] = {
    // server
    {"uptime", "server"},
    {"server_", "server"},
    {"process_", "server"},
    {"pid", "server"},
    {"started", "server"},
    {"version", "server"},
    {"threads", "server"},
    // the LOD pyramid
    {"lod_", "lod"},
    // index (before "in_flight" and the like)
    {"index_", "index"},
    {"s2", "index"},
    {"reindex", "index"},
    {"quer", "index"},  // query_*, queries
    // storage
    {"map_", "storage"},
    {"store_", "storage"},
    {"storage_", "storage"},
    {"used_", "storage"},
    {"data_", "storage"},
    {"disk_", "storage"},
    {"db_", "storage"},
    {"chunk", "storage"},  // chunks, chunk_count, chunk_bytes
    {"fills", "storage"},
    {"max_map", "storage"},
    {"readers", "storage"},
    {"backup", "storage"},
    // cache: the cache, dirty data, the flusher, back-pressure
    {"cache_", "cache"},
    {"dirty_", "cache"},
    {"oldest_dirty", "cache"},
    {"flush", "cache"},  // flushes, flushed_chunks, flushed_bytes
    {"write_waits", "cache"},
    {"busy_", "cache"},
    // journal
    {"journal_", "journal"},
    {"last_seq", "journal"},
    {"committed_seq", "journal"},
    {"durable_seq", "journal"},
    {"rollbacks", "journal"},
    {"replayed_", "journal"},
    {"commit", "journal"},
    // clients: connections and requests
    {"connection", "clients"},
    {"client", "clients"},
    {"auth_", "clients"},
    {"snapshot", "clients"},  // snapshots_open: held by connections
    {"permission_", "clients"},
    {"idle_", "clients"},
    {"slow_", "clients"},
    {"protocol_", "clients"},
    {"request", "clients"},
    {"deferred_", "clients"},
    {"bytes_", "clients"},
    {"in_flight", "clients"},
    {"errors", "clients"},
    {"unsent_", "clients"},
    // push: subscriptions, the change feed they read, streams
    {"subscri", "push"},  // subscribers, subscription_*, subscribers_cut_off
    {"change_feed", "push"},
    {"stream", "push"},  // streams_open, stream_*
};

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
  for (const auto& [prefix, section] : kPrefixes) {
    if (stat_name.starts_with(prefix)) return section;
  }
  return kOther;
}

std::vector<InfoSection> BuildInfo(std::string_view address, const protocol::HelloReply& hello,
                                   std::string_view stats) {
  std::vector<InfoSection> sections;
  for (std::string_view name : kSections) sections.push_back(InfoSection{std::string(name), {}});
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

  while (!stats.empty()) {
    const size_t nl = stats.find('\n');
    const std::string_view line = stats.substr(0, nl);
    stats = nl == std::string_view::npos ? std::string_view() : stats.substr(nl + 1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    const std::string_view name = line.substr(0, space);
    const std::string_view value =
        space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    Add(Find(sections, InfoSectionOf(name)), name, std::string(value));
  }
  return sections;
}

std::string InfoText(const std::vector<InfoSection>& sections) {
  std::string text;
  for (const InfoSection& s : sections) {
    absl::StrAppend(&text, text.empty() ? "" : "\n", "# ", s.name, "\n");
    for (const auto& [name, value] : s.fields) absl::StrAppend(&text, name, " ", value, "\n");
  }
  return text;
}

JsonObject InfoJson(const std::vector<InfoSection>& sections) {
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
  return o;
}

}  // namespace voxdb::cli
