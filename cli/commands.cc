#include "cli/commands.h"

#include <s2/s2cell_id.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cli/files.h"
#include "cli/info.h"
#include "cli/offline.h"
#include "cli/output.h"
#include "cli/recover.h"
#include "cli/watch.h"
#include "cli/zarr.h"
#include "engine/chunk_codec.h"
#include "engine/coding.h"
#include "engine/status.h"
#include "engine/voxel_box.h"
#include "engine/world_frame.h"
#include "protocol/client.h"
#include "protocol/stats.h"
#include "protocol/version.h"

namespace voxdb::cli {
namespace {

using protocol::Box;
using protocol::Opcode;
using protocol::Voxel3;
using protocol::WireStatus;

// Without --timeout: how long to wait for the TCP handshake. Replies are
// waited for as long as they take (a FLUSH may take a while).
constexpr std::chrono::seconds kDefaultConnectTimeout{10};
// A box's bytes in READ_BOX / WRITE_BOX payloads (PROTOCOL.md, "Requests").
constexpr uint64_t kBoxBytes = 48;
// When HELLO names no frame limit: the daemon's default.
constexpr uint64_t kDefaultMaxPayload = 64u << 20;
// The largest frame payload any server takes (max-frame-bytes is at most
// 2 GiB).
constexpr uint64_t kMaxFrameLimit = uint64_t{1} << 31;
// PUT_CHUNK's payload before the record: chunk u64, has_expected u8,
// expected_version u64 (PROTOCOL.md).
constexpr uint64_t kPutChunkHeaderBytes = 17;

// A connection that has said HELLO.
struct Session {
  std::unique_ptr<protocol::Client> client;
  protocol::HelloReply hello;
  std::string address;  // as given: "127.0.0.1:7390"
};

// Connects to cl.address and sends HELLO with cl.token.
absl::StatusOr<Session> Connect(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Address address, ParseAddress(cl.address, cl.address_source));
  protocol::ClientOptions options;
  options.connect_timeout = cl.timeout.count() > 0 ? cl.timeout : kDefaultConnectTimeout;
  options.io_timeout = cl.timeout;
  Session s;
  s.address = cl.address;
  VOXDB_ASSIGN_OR_RETURN(s.client, protocol::Client::Connect(address.host, address.port, options));
  VOXDB_ASSIGN_OR_RETURN(s.hello, s.client->Hello(cl.token, absl::StrCat("voxdb ", kVersion)));
  return s;
}

// The same error with `prefix` before its message (payloads kept, so the
// exit code and status name stay).
absl::Status Annotate(const absl::Status& status, std::string_view prefix) {
  absl::Status out(status.code(), std::string(prefix) + std::string(status.message()));
  status.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

absl::StatusOr<Voxel3> ParseVoxel(std::span<const std::string> xyz) {
  VOXDB_ASSIGN_OR_RETURN(uint64_t x, ParseU64(xyz[0], "X"));
  VOXDB_ASSIGN_OR_RETURN(uint64_t y, ParseU64(xyz[1], "Y"));
  VOXDB_ASSIGN_OR_RETURN(uint64_t z, ParseU64(xyz[2], "Z"));
  return Voxel3{x, y, z};
}

std::string BoxString(const Box& b) {
  return absl::StrFormat("(%u, %u, %u)..(%u, %u, %u)", b.lo.x, b.lo.y, b.lo.z, b.hi.x, b.hi.y,
                         b.hi.z);
}

// Prints `object` with --json, else `text` (which ends in a newline).
void Emit(const CommandLine& cl, const JsonObject& object, const std::string& text) {
  if (cl.json) {
    PrintJson(object);
  } else {
    std::fwrite(text.data(), 1, text.size(), stdout);
  }
}

// "ok version N" for a write.
void EmitVersion(const CommandLine& cl, JsonObject object, uint64_t version) {
  object.Num("version", version);
  Emit(cl, object, absl::StrFormat("ok version %u\n", version));
}

JsonObject CommandObject(const CommandLine& cl) {
  JsonObject o;
  o.Str("command", cl.command);
  return o;
}

// STATS text ("name value" lines) as a JSON object; numbers stay numbers.
StatusOr<JsonObject> StatsJson(std::string_view text) {
  VOXDB_ASSIGN_OR_RETURN(const auto lines, protocol::ParseStatsText(text));
  JsonObject o;
  for (const auto& [name, value] : lines) {
    if (IsJsonNumber(value)) {
      o.Raw(name, value);
    } else {
      o.Str(name, value);
    }
  }
  return o;
}

// The most voxels one READ_BOX or WRITE_BOX may carry on this connection.
uint64_t VoxelsPerRequest(const protocol::HelloReply& hello) {
  const uint64_t max_payload = hello.max_payload > 0 ? hello.max_payload : kDefaultMaxPayload;
  return std::max<uint64_t>(max_payload, 2 * kBoxBytes) - kBoxBytes;
}

// TOO_LARGE, as the server would answer, for a box over its advertised limit.
absl::Status CheckBoxLimit(const Session& s, const Box& box) {
  const uint64_t volume = BoxVolume(box);
  if (s.hello.max_box_voxels > 0 && volume > s.hello.max_box_voxels) {
    return protocol::ServerError(
        WireStatus::kTooLarge,
        absl::StrFormat("the box has %u voxels; the server takes at most %u in one read or write",
                        volume, s.hello.max_box_voxels));
  }
  return absl::OkStatus();
}

// "part 2 of 5, (..)..(..): " for errors of split requests.
std::string PartPrefix(size_t i, size_t n, const Box& part) {
  if (n == 1) return "";
  return absl::StrFormat("request %u of %u, box %s: ", i + 1, n, BoxString(part));
}

std::string FormatMicros(int64_t us) {
  const int64_t secs = us >= 0 ? us / 1'000'000 : -((-us + 999'999) / 1'000'000);
  const int64_t frac = us - secs * 1'000'000;
  const time_t t = static_cast<time_t>(secs);
  tm utc{};
  if (gmtime_r(&t, &utc) == nullptr) return std::to_string(us) + " us";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  return absl::StrFormat("%s.%06dZ", buf, frac);
}

const char* EncodingName(engine::ChunkEncoding e) {
  switch (e) {
    case engine::ChunkEncoding::kUniform:
      return "uniform";
    case engine::ChunkEncoding::kBricks:
      return "bricks";
    case engine::ChunkEncoding::kFills:
      return "fills";
  }
  return "unknown";
}

// --- The commands ------------------------------------------------------------

absl::Status Ping(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  const auto start = std::chrono::steady_clock::now();
  std::array<uint8_t, 8> bytes;
  const uint64_t stamp = static_cast<uint64_t>(start.time_since_epoch().count());
  engine::EncodeFixed64(bytes.data(), stamp);
  VOXDB_RETURN_IF_ERROR(s.client->Ping(bytes));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  JsonObject o = CommandObject(cl);
  o.Str("address", s.address).Double("rtt_ms", std::round(ms * 1000) / 1000);
  Emit(cl, o, absl::StrFormat("PONG %.3f ms\n", ms));
  return absl::OkStatus();
}

absl::Status Info(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_ASSIGN_OR_RETURN(std::string stats, s.client->Stats());
  VOXDB_ASSIGN_OR_RETURN(const std::vector<InfoSection> sections,
                         BuildInfo(s.address, s.hello, stats));
  // A server older than PARTITIONS answers UNSUPPORTED: no partitions then.
  absl::StatusOr<protocol::PartitionsReply> parts = s.client->Partitions();
  if (!parts.ok() && !IsUnsupported(parts.status())) return parts.status();
  const std::vector<protocol::PartitionInfo>* list = parts.ok() ? &parts->partitions : nullptr;
  Emit(cl, InfoJson(sections, list), InfoText(sections, list));
  return absl::OkStatus();
}

absl::Status GetVoxel(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Voxel3 at, ParseVoxel(cl.args));
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_ASSIGN_OR_RETURN(std::vector<uint8_t> got, s.client->GetVoxels({{at}}));
  if (got.size() != 1) {
    return absl::InternalError(
        absl::StrFormat("GET_VOXELS of one voxel was answered with %u bytes", got.size()));
  }
  JsonObject o = CommandObject(cl);
  o.Num("x", at.x).Num("y", at.y).Num("z", at.z).Num("material", got[0]);
  Emit(cl, o, absl::StrFormat("%u\n", got[0]));
  return absl::OkStatus();
}

absl::Status SetVoxel(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Voxel3 at, ParseVoxel(cl.args));
  VOXDB_ASSIGN_OR_RETURN(uint8_t material, ParseMaterial(cl.args[3]));
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_ASSIGN_OR_RETURN(uint64_t version, s.client->SetVoxels({{{at, material}}}));
  EmitVersion(cl, CommandObject(cl), version);
  return absl::OkStatus();
}

absl::Status GetChunk(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(engine::ChunkKey key, ParseChunk(cl.args[0]));
  VOXDB_ASSIGN_OR_RETURN(OutputFile out, OutputFile::Create(cl.args[1]));
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  const uint64_t code = key.code();
  const uint8_t level = static_cast<uint8_t>(cl.lod.value_or(0));
  VOXDB_ASSIGN_OR_RETURN(protocol::GetChunksReply reply, s.client->GetChunks({&code, 1}, level));
  const protocol::ChunkResult& r = reply.results[0];
  if (r.status != 0) {
    return protocol::ServerError(
        static_cast<WireStatus>(r.status),
        std::string_view(reinterpret_cast<const char*>(r.bytes.data()), r.bytes.size()));
  }
  VOXDB_RETURN_IF_ERROR(out.Commit(r.bytes));
  const engine::ChunkCoord c = key.coord();
  JsonObject o = CommandObject(cl);
  o.Num("key", code).Num("cx", c.x).Num("cy", c.y).Num("cz", c.z).Num("version", r.version);
  std::string text =
      absl::StrFormat("key %u\nchunk %u,%u,%u\nversion %u\n", code, c.x, c.y, c.z, r.version);
  if (level != 0) {
    o.Num("lod", level);
    absl::StrAppendFormat(&text, "lod %u\n", level);
  }
  auto view = engine::ParseChunkRecord(r.bytes);
  if (view.ok()) {
    o.Str("encoding", EncodingName(view->header.encoding)).Num("bytes", r.bytes.size());
    o.Raw("mtime_us", std::to_string(view->header.mtime_us));
    absl::StrAppendFormat(&text, "encoding %s\nbytes %u\nmtime %s\n",
                          EncodingName(view->header.encoding), r.bytes.size(),
                          FormatMicros(view->header.mtime_us));
  } else {
    // Saved all the same: the bytes are what the server has.
    o.Str("encoding", "invalid").Str("record_error", std::string(view.status().message()));
    o.Num("bytes", r.bytes.size());
    absl::StrAppendFormat(&text, "encoding invalid (%s)\nbytes %u\n", view.status().message(),
                          r.bytes.size());
  }
  o.Str("file", out.path());
  absl::StrAppendFormat(&text, "file %s\n", out.path());
  Emit(cl, o, text);
  return absl::OkStatus();
}

absl::Status PutChunk(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(engine::ChunkKey key, ParseChunk(cl.args[0]));
  protocol::PutChunkRequest req;
  req.code = key.code();
  req.expected_version = cl.expect_version;
  // The record goes in one frame: no server takes more than
  // kMaxFrameLimit, and this one says its limit in HELLO. Both are checked
  // before the file is read.
  VOXDB_ASSIGN_OR_RETURN(const uint64_t size, InputFileSize(cl.args[1], "FILE"));
  if (size > kMaxFrameLimit - kPutChunkHeaderBytes) {
    return UsageError(absl::StrFormat(
        "FILE '%s' has %u bytes; a chunk record is at most %u (it travels in one frame, and no "
        "server takes frames over 2 GiB)",
        cl.args[1], size, kMaxFrameLimit - kPutChunkHeaderBytes));
  }
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  const uint64_t max_payload = s.hello.max_payload > 0 ? s.hello.max_payload : kDefaultMaxPayload;
  if (kPutChunkHeaderBytes + size > max_payload) {
    return protocol::ServerError(
        WireStatus::kTooLarge,
        absl::StrFormat("FILE '%s' has %u bytes; the server takes a chunk record of at most %u "
                        "(frames of at most %u bytes)",
                        cl.args[1], size, max_payload - kPutChunkHeaderBytes, max_payload));
  }
  VOXDB_ASSIGN_OR_RETURN(req.record, ReadInputFile(cl.args[1], std::nullopt, max_payload, "FILE"));
  VOXDB_ASSIGN_OR_RETURN(uint64_t version, s.client->PutChunk(req));
  JsonObject o = CommandObject(cl);
  o.Num("key", req.code);
  EmitVersion(cl, o, version);
  return absl::OkStatus();
}

absl::Status DeleteChunk(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(engine::ChunkKey key, ParseChunk(cl.args[0]));
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_ASSIGN_OR_RETURN(uint64_t version, s.client->DeleteChunk(key.code()));
  JsonObject o = CommandObject(cl);
  o.Num("key", key.code());
  EmitVersion(cl, o, version);
  return absl::OkStatus();
}

absl::Status ReadBox(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Box box, ParseBox(std::span(cl.args).first(6)));
  VOXDB_ASSIGN_OR_RETURN(OutputFile out, OutputFile::Create(cl.args[6]));
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_RETURN_IF_ERROR(CheckBoxLimit(s, box));
  const uint64_t volume = BoxVolume(box);
  const std::vector<Box> parts = SplitBox(box, VoxelsPerRequest(s.hello));
  std::vector<uint8_t> voxels;
  if (parts.size() == 1) {
    VOXDB_ASSIGN_OR_RETURN(voxels, s.client->ReadBox(box));
  } else {
    std::vector<protocol::Request> requests;
    for (const Box& part : parts) {
      protocol::BoxRequest req;
      req.box = part;
      requests.push_back({Opcode::kReadBox, req.EncodeReadBox()});
    }
    auto results = s.client->CallBatch(requests);
    voxels.resize(volume);
    for (size_t i = 0; i < parts.size(); ++i) {
      const std::string prefix = PartPrefix(i, parts.size(), parts[i]);
      if (!results[i].ok()) return Annotate(results[i].status(), prefix);
      if (results[i]->size() != BoxVolume(parts[i])) {
        return absl::InternalError(
            absl::StrFormat("%sREAD_BOX of %u voxels was answered with %u bytes", prefix,
                            BoxVolume(parts[i]), results[i]->size()));
      }
      const engine::VoxelBox part = ToVoxelBox(parts[i]);
      engine::CopySubBox(part, part, *results[i], ToVoxelBox(box), voxels);
      *results[i] = {};
    }
  }
  if (voxels.size() != volume) {
    return absl::InternalError(
        absl::StrFormat("READ_BOX of %u voxels was answered with %u bytes", volume, voxels.size()));
  }
  VOXDB_RETURN_IF_ERROR(out.Commit(voxels));
  JsonObject o = CommandObject(cl);
  o.Num("voxels", volume).Num("requests", parts.size()).Str("file", out.path());
  Emit(cl, o, absl::StrFormat("ok %u voxels to %s\n", volume, out.path()));
  return absl::OkStatus();
}

absl::Status WriteBox(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Box box, ParseBox(std::span(cl.args).first(6)));
  const uint64_t volume = BoxVolume(box);
  // The file's size is checked first (a usage error), the box against the
  // server's limit next, and only then is the file read: a box the server
  // refuses is never loaded.
  VOXDB_ASSIGN_OR_RETURN(const uint64_t size, InputFileSize(cl.args[6], "FILE"));
  if (size != volume) {
    return UsageError(
        absl::StrFormat("FILE '%s' has %u bytes; the box needs exactly %u (one per voxel)",
                        cl.args[6], size, volume));
  }
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_RETURN_IF_ERROR(CheckBoxLimit(s, box));
  VOXDB_ASSIGN_OR_RETURN(std::vector<uint8_t> voxels,
                         ReadInputFile(cl.args[6], volume, volume, "FILE"));
  const std::vector<Box> parts = SplitBox(box, VoxelsPerRequest(s.hello));
  uint64_t version = 0;
  if (parts.size() == 1) {
    VOXDB_ASSIGN_OR_RETURN(version, s.client->WriteBox(box, voxels));
  } else {
    std::vector<protocol::Request> requests;
    for (const Box& part : parts) {
      protocol::BoxRequest req;
      req.box = part;
      std::vector<uint8_t> payload = req.EncodeReadBox();  // WRITE_BOX: the box, then voxels
      payload.resize(kBoxBytes + BoxVolume(part));
      engine::CopySubBox(ToVoxelBox(part), ToVoxelBox(box), voxels, ToVoxelBox(part),
                         std::span(payload).subspan(kBoxBytes));
      requests.push_back({Opcode::kWriteBox, std::move(payload)});
    }
    voxels = {};
    auto results = s.client->CallBatch(requests);
    size_t failed = 0;
    absl::Status first;
    for (size_t i = 0; i < parts.size(); ++i) {
      absl::StatusOr<uint64_t> v =
          results[i].ok() ? protocol::DecodeU64(*results[i]) : results[i].status();
      if (v.ok()) {
        version = std::max(version, *v);
      } else if (failed++ == 0) {
        first = Annotate(v.status(), PartPrefix(i, parts.size(), parts[i]));
      }
    }
    if (failed > 0) {
      return Annotate(first, absl::StrFormat("%u of %u requests failed (the others were written); ",
                                             failed, parts.size()));
    }
  }
  JsonObject o = CommandObject(cl);
  o.Num("voxels", volume).Num("requests", parts.size());
  EmitVersion(cl, o, version);
  return absl::OkStatus();
}

absl::Status Fill(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Box box, ParseBox(std::span(cl.args).first(6)));
  VOXDB_ASSIGN_OR_RETURN(uint8_t material, ParseMaterial(cl.args[6]));
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_ASSIGN_OR_RETURN(uint64_t version, s.client->FillBox(box, material));
  JsonObject o = CommandObject(cl);
  // A planet-wide fill holds more than 2^64 voxels: then no count.
  if (BoxVolume(box) != UINT64_MAX) o.Num("voxels", BoxVolume(box));
  EmitVersion(cl, o, version);
  return absl::OkStatus();
}

// The stats line of export / import, with its throughput.
void EmitZarrStats(const CommandLine& cl, const ZarrStats& stats, const std::string& dir,
                   double seconds) {
  JsonObject o = CommandObject(cl);
  o.Str("dir", dir).Num("chunks", stats.chunks).Num("raw_bytes", stats.raw_bytes);
  o.Num("stored_bytes", stats.stored_bytes).Num("lod_chunks", stats.lod_chunks);
  std::string lod;
  if (stats.lod_chunks > 0) {
    lod = absl::StrFormat(", %u LOD chunks (%.1f MiB stored)", stats.lod_chunks,
                          stats.lod_stored_bytes / 1048576.0);
  }
  Emit(cl, o,
       absl::StrFormat("ok %u chunks (%.1f MiB raw, %.1f MiB stored)%s in %.2f s (%.1f MB/s)\n",
                       stats.chunks, stats.raw_bytes / 1048576.0, stats.stored_bytes / 1048576.0,
                       lod, seconds, seconds > 0 ? stats.raw_bytes / 1e6 / seconds : 0.0));
}

absl::Status Export(const CommandLine& cl) {
  if (!cl.args.empty()) return UsageError("export takes no arguments (--out DIR)");
  if (!cl.out.has_value()) return UsageError("export needs --out DIR");
  ZarrExportOptions options;
  options.out_dir = *cl.out;
  options.box = cl.box;
  options.lod_levels = static_cast<int>(cl.lod.value_or(0));
  const std::string compressor = cl.compressor.value_or("zstd");
  if (compressor == "blosc") {
    options.compressor = ZarrCompressor::kBlosc;
  } else if (compressor != "zstd") {
    return UsageError(absl::StrFormat("--compressor '%s': zstd or blosc", compressor));
  }
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  const auto start = std::chrono::steady_clock::now();
  VOXDB_ASSIGN_OR_RETURN(ZarrStats stats, ExportZarr(*s.client, s.hello, options));
  EmitZarrStats(cl, stats, options.out_dir,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return absl::OkStatus();
}

absl::Status Import(const CommandLine& cl) {
  if (cl.args.size() != 1) return UsageError("import takes one argument: DIR");
  if (cl.out.has_value() || cl.compressor.has_value()) {
    return UsageError("import takes no --out or --compressor");
  }
  ZarrImportOptions options;
  options.in_dir = cl.args[0];
  options.box = cl.box;
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  const auto start = std::chrono::steady_clock::now();
  VOXDB_ASSIGN_OR_RETURN(ZarrStats stats, ImportZarr(*s.client, s.hello, options));
  EmitZarrStats(cl, stats, options.in_dir,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return absl::OkStatus();
}

absl::Status Flush(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_RETURN_IF_ERROR(s.client->Flush());
  JsonObject o = CommandObject(cl);
  o.Bool("ok", true);
  Emit(cl, o, "ok\n");
  return absl::OkStatus();
}

absl::Status Stats(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_ASSIGN_OR_RETURN(std::string stats, s.client->Stats());
  if (!stats.empty() && stats.back() != '\n') stats += '\n';
  VOXDB_ASSIGN_OR_RETURN(JsonObject fields, StatsJson(stats));
  JsonObject o = CommandObject(cl);
  o.Object("stats", fields);
  Emit(cl, o, stats);
  return absl::OkStatus();
}

absl::Status Backup(const CommandLine& cl) {
  const std::string& dest = cl.args[0];
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_ASSIGN_OR_RETURN(uint64_t bytes, s.client->Backup(dest));
  JsonObject o = CommandObject(cl);
  o.Str("dest", dest);
  o.Num("bytes", bytes);
  Emit(cl, o, absl::StrFormat("ok backup %s, %u bytes\n", dest, bytes));
  return absl::OkStatus();
}

// voxdb partition: with --data, offline on a stopped node (cli/offline.cc);
// else asks the server (PARTITIONS, PARTITION_SPLIT, PARTITION_MOVE).
absl::Status PartitionCommand(const CommandLine& cl) {
  if (cl.data.has_value()) return Partition(cl);
  const std::string action = cl.args.empty() ? "" : cl.args[0];
  const size_t want = action == "list" ? 1 : action == "split" || action == "move" ? 3 : 0;
  if (want == 0 || cl.args.size() != want) {
    return UsageError("partition takes list, split ID AT or move ID DIR");
  }
  auto number = [](const std::string& text, const char* what) -> absl::StatusOr<uint64_t> {
    uint64_t v = 0;
    if (text.empty() || !absl::SimpleAtoi(text, &v)) {
      return UsageError(absl::StrFormat("%s '%s' is not a whole number", what, text));
    }
    return v;
  };
  if (action == "list") {
    VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
    VOXDB_ASSIGN_OR_RETURN(protocol::PartitionsReply r, s.client->Partitions());
    for (const protocol::PartitionInfo& p : r.partitions) {
      PrintPartition(cl, p.id, p.begin, p.end, p.dir, p.chunks, p.used_bytes, p.epoch);
    }
    return absl::OkStatus();
  }
  VOXDB_ASSIGN_OR_RETURN(const uint64_t id, number(cl.args[1], "the partition id"));
  std::vector<uint8_t> payload;
  protocol::Opcode op;
  if (action == "split") {
    VOXDB_ASSIGN_OR_RETURN(const uint64_t at, number(cl.args[2], "the chunk code AT"));
    payload = protocol::PartitionSplitRequest{id, at}.Encode();
    op = protocol::Opcode::kPartitionSplit;
  } else {
    protocol::PartitionMoveRequest req;
    req.id = id;
    req.dir = cl.args[2];
    payload = req.Encode();
    op = protocol::Opcode::kPartitionMove;
  }
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, s.client->Call(op, payload));
  VOXDB_ASSIGN_OR_RETURN(protocol::PartitionChangeReply r,
                         protocol::PartitionChangeReply::Decode(bytes));
  const char* verb = action == "split" ? "split" : "moved";
  JsonObject o = CommandObject(cl);
  o.Str("action", verb).Num("id", id);
  o.Raw("new_ids", absl::StrCat("[", absl::StrJoin(r.new_ids, ","), "]"))
      .Num("chunks", r.chunks)
      .Num("bytes", r.bytes)
      .Double("pause_seconds", static_cast<double>(r.pause_us) / 1e6);
  Emit(cl, o,
       absl::StrFormat("ok %s partition %u into %s: %u chunks, %u bytes copied, writes paused "
                       "%.3f s\n",
                       verb, id, absl::StrJoin(r.new_ids, ", "), r.chunks, r.bytes,
                       static_cast<double>(r.pause_us) / 1e6));
  return absl::OkStatus();
}

absl::Status Reindex(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  VOXDB_ASSIGN_OR_RETURN(uint64_t entries, s.client->Reindex());
  JsonObject o = CommandObject(cl);
  o.Num("entries", entries);
  Emit(cl, o, absl::StrFormat("entries %u\n", entries));
  return absl::OkStatus();
}

absl::Status Lod(const CommandLine& cl) {
  const bool rebuild = cl.args.size() == 1 && cl.args[0] == "rebuild";
  const bool sync = cl.args.size() == 1 && cl.args[0] == "sync";
  if (!rebuild && !sync) return UsageError("the lod commands are: lod rebuild, lod sync");
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  const auto start = std::chrono::steady_clock::now();
  VOXDB_RETURN_IF_ERROR(rebuild ? s.client->LodRebuild() : s.client->LodSync());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  JsonObject o = CommandObject(cl);
  o.Str("action", cl.args[0]).Bool("ok", true).Raw("seconds", absl::StrFormat("%.3f", seconds));
  Emit(cl, o,
       absl::StrFormat(
           rebuild ? "ok LOD pyramid rebuilt in %.2f s\n" : "ok LOD pyramid caught up in %.2f s\n",
           seconds));
  return absl::OkStatus();
}

// --- voxdb query -------------------------------------------------------------

constexpr uint32_t kDefaultQueryLimit = 1000;

struct QueryKindSpec {
  const char* name;
  const char* synopsis;
  size_t arg_count;
  protocol::QueryKind kind;
};
constexpr QueryKindSpec kQueryKinds[] = {
    {"radius", "LAT LON METRES", 3, protocol::QueryKind::kRadius},
    {"cell", "TOKEN", 1, protocol::QueryKind::kCell},
    {"rect", "LAT_LO LON_LO LAT_HI LON_HI", 4, protocol::QueryKind::kRect},
    {"box", "X0 Y0 Z0 X1 Y1 Z1", 6, protocol::QueryKind::kBox},
};

absl::StatusOr<double> ParseLatitude(std::string_view text, std::string_view what) {
  VOXDB_ASSIGN_OR_RETURN(double deg, ParseDouble(text, what));
  if (deg < -90 || deg > 90) {
    return UsageError(absl::StrFormat("%s '%s' is not a latitude in -90..90", what, text));
  }
  return deg;
}

absl::StatusOr<double> ParseLongitude(std::string_view text, std::string_view what) {
  VOXDB_ASSIGN_OR_RETURN(double deg, ParseDouble(text, what));
  if (deg < -180 || deg > 180) {
    return UsageError(absl::StrFormat("%s '%s' is not a longitude in -180..180", what, text));
  }
  return deg;
}

// The region of `voxdb query KIND ARGS...` and `voxdb watch KIND ARGS...`
// (kind, its fields, and the band of --alt-min and --alt-max).
absl::StatusOr<protocol::QueryRequest> ParseRegion(const CommandLine& cl) {
  if (cl.args.empty()) return UsageError("needs a KIND: radius, cell, rect or box");
  const QueryKindSpec* spec = nullptr;
  for (const QueryKindSpec& k : kQueryKinds) {
    if (cl.args[0] == k.name) spec = &k;
  }
  if (spec == nullptr) {
    return UsageError(absl::StrFormat("unknown KIND '%s': radius, cell, rect or box", cl.args[0]));
  }
  const std::span<const std::string> args = std::span(cl.args).subspan(1);
  if (args.size() != spec->arg_count) {
    return UsageError(absl::StrFormat("%s takes %u argument%s (%s), not %u", spec->name,
                                      spec->arg_count, spec->arg_count == 1 ? "" : "s",
                                      spec->synopsis, args.size()));
  }
  protocol::QueryRequest q;
  q.kind = spec->kind;
  switch (spec->kind) {
    case protocol::QueryKind::kRadius: {
      VOXDB_ASSIGN_OR_RETURN(q.lat, ParseLatitude(args[0], "LAT"));
      VOXDB_ASSIGN_OR_RETURN(q.lon, ParseLongitude(args[1], "LON"));
      VOXDB_ASSIGN_OR_RETURN(q.radius, ParseDouble(args[2], "METRES"));
      if (q.radius < 0) {
        return UsageError(absl::StrFormat("METRES '%s' is negative", args[2]));
      }
      break;
    }
    case protocol::QueryKind::kCell: {
      const std::string& token = args[0];
      // FromToken takes any case and stops at nothing: check the digits first.
      const bool hex = !token.empty() && token.size() <= 16 &&
                       token.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
      const S2CellId cell = hex ? S2CellId::FromToken(token) : S2CellId::None();
      if (!cell.is_valid()) {
        return UsageError(absl::StrFormat(
            "TOKEN '%s' is not an S2 cell token (hex digits of a valid cell id, e.g. 47a1cbd4)",
            token));
      }
      q.cell = cell.id();
      break;
    }
    case protocol::QueryKind::kRect: {
      VOXDB_ASSIGN_OR_RETURN(q.rect.lat_lo, ParseLatitude(args[0], "LAT_LO"));
      VOXDB_ASSIGN_OR_RETURN(q.rect.lon_lo, ParseLongitude(args[1], "LON_LO"));
      VOXDB_ASSIGN_OR_RETURN(q.rect.lat_hi, ParseLatitude(args[2], "LAT_HI"));
      VOXDB_ASSIGN_OR_RETURN(q.rect.lon_hi, ParseLongitude(args[3], "LON_HI"));
      if (q.rect.lat_lo > q.rect.lat_hi) {
        return UsageError(absl::StrFormat("LAT_LO %s is north of LAT_HI %s", args[0], args[2]));
      }
      break;
    }
    case protocol::QueryKind::kBox: {
      VOXDB_ASSIGN_OR_RETURN(q.box, ParseBox(args));
      break;
    }
  }
  if (cl.alt_min.has_value() != cl.alt_max.has_value()) {
    return UsageError("--alt-min and --alt-max go together: give both or neither");
  }
  if (cl.alt_min.has_value()) {
    if (*cl.alt_min > *cl.alt_max) {
      return UsageError(
          absl::StrFormat("--alt-min %g is above --alt-max %g", *cl.alt_min, *cl.alt_max));
    }
    q.band = protocol::AltitudeBand{*cl.alt_min, *cl.alt_max};
  }
  return q;
}

// The first page's request of `voxdb query KIND ARGS... [options]`.
absl::StatusOr<protocol::QueryRequest> ParseQuery(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(protocol::QueryRequest q, ParseRegion(cl));
  q.limit = kDefaultQueryLimit;
  if (cl.limit.has_value()) {
    if (*cl.limit == 0 || *cl.limit > protocol::kMaxQueryLimit) {
      return UsageError(
          absl::StrFormat("--limit %u is not in 1..%u", *cl.limit, protocol::kMaxQueryLimit));
    }
    q.limit = static_cast<uint32_t>(*cl.limit);
  }
  if (cl.cursor.has_value()) {
    if (cl.cursor->size() > UINT16_MAX) return UsageError("--cursor is too long");
    q.cursor = *cl.cursor;
  }
  q.level = static_cast<uint8_t>(cl.lod.value_or(0));
  return q;
}

std::string Hex(std::span<const uint8_t> bytes) {
  std::string out;
  out.reserve(2 * bytes.size());
  for (uint8_t b : bytes) absl::StrAppendFormat(&out, "%02x", b);
  return out;
}

// [a,b,c] of the JSON texts.
std::string JsonArray(const std::vector<std::string>& items) {
  return absl::StrCat("[", absl::StrJoin(items, ","), "]");
}

absl::Status Query(const CommandLine& cl) {
  VOXDB_ASSIGN_OR_RETURN(protocol::QueryRequest request, ParseQuery(cl));
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  protocol::QueryReply result;
  size_t pages = 0;
  for (;;) {
    VOXDB_ASSIGN_OR_RETURN(protocol::QueryReply page, s.client->Query(request));
    ++pages;
    result.chunks.insert(result.chunks.end(), page.chunks.begin(), page.chunks.end());
    result.fills.insert(result.fills.end(), page.fills.begin(), page.fills.end());
    result.next_cursor = std::move(page.next_cursor);
    if (!cl.all || result.next_cursor.empty()) break;
    if (result.next_cursor == request.cursor) {
      return absl::InternalError("the server answered a page with its own cursor");
    }
    request.cursor = result.next_cursor;
  }
  std::string text;
  std::vector<std::string> chunks, fills;
  for (const protocol::QueryChunk& c : result.chunks) {
    if (c.code > engine::ChunkKey::kMaxCode) {
      return absl::InternalError(absl::StrFormat("the server answered chunk key %u", c.code));
    }
    const engine::ChunkCoord xyz = engine::ChunkKey::FromCode(c.code).coord();
    absl::StrAppendFormat(&text, "%u,%u,%u key %u version %u\n", xyz.x, xyz.y, xyz.z, c.code,
                          c.version);
    if (cl.json) {
      JsonObject o;
      o.Num("cx", xyz.x)
          .Num("cy", xyz.y)
          .Num("cz", xyz.z)
          .Num("key", c.code)
          .Num("version", c.version);
      chunks.push_back(o.ToString());
    }
  }
  for (const protocol::QueryFill& f : result.fills) {
    const Box& b = f.box;
    absl::StrAppendFormat(&text, "fill %u box %u %u %u %u %u %u material %u\n", f.seq, b.lo.x,
                          b.lo.y, b.lo.z, b.hi.x, b.hi.y, b.hi.z, f.material);
    if (cl.json) {
      JsonObject o;
      o.Num("seq", f.seq)
          .Raw("lo", absl::StrFormat("[%u,%u,%u]", b.lo.x, b.lo.y, b.lo.z))
          .Raw("hi", absl::StrFormat("[%u,%u,%u]", b.hi.x, b.hi.y, b.hi.z))
          .Num("material", f.material);
      fills.push_back(o.ToString());
    }
  }
  if (!result.next_cursor.empty()) {
    absl::StrAppendFormat(&text, "next-cursor %s\n", Hex(result.next_cursor));
  }
  JsonObject o = CommandObject(cl);
  o.Str("kind", cl.args[0]).Num("pages", pages);
  if (request.level != 0) o.Num("lod", request.level);
  o.Raw("chunks", JsonArray(chunks)).Raw("fills", JsonArray(fills));
  if (result.next_cursor.empty()) {
    o.Raw("next_cursor", "null");
  } else {
    o.Str("next_cursor", Hex(result.next_cursor));
  }
  Emit(cl, o, text);
  return absl::OkStatus();
}

// --- voxdb watch -------------------------------------------------------------

absl::Status WatchRegion(const CommandLine& cl) {
  WatchOptions options;
  VOXDB_ASSIGN_OR_RETURN(options.request.region, ParseRegion(cl));
  options.request.detail = cl.detail.value_or(protocol::EventDetail::kNone);
  options.request.from_seq = cl.from_seq;
  options.request.from_ranges = cl.from_ranges;
  options.region = absl::StrJoin(cl.args, " ");
  options.json = cl.json;
  options.count = cl.count;
  options.idle_timeout = cl.timeout;
  VOXDB_ASSIGN_OR_RETURN(Session s, Connect(cl));
  return Watch(*s.client, options);
}

constexpr char kBoxHelp[] =
    "X0 Y0 Z0 is the box's low corner (inclusive), X1 Y1 Z1 its high corner (exclusive).\n";
constexpr char kBoxFileHelp[] =
    "FILE holds the box's voxels as raw uint8 material ids, one byte per voxel, x fastest,\n"
    "then y, then z: voxel (x, y, z) is at byte ((z - Z0) * (Y1 - Y0) + (y - Y0)) * (X1 - X0)\n"
    "+ (x - X0).\n";
constexpr char kChunkHelp[] =
    "CHUNK is a chunk's Morton code in decimal (x -> bit 3i, y -> 3i+1, z -> 3i+2) or its\n"
    "chunk coordinates CX,CY,CZ (voxel coordinates divided by 128), e.g. 1000000,400000,312500.\n";

const CommandSpec kCommands[] = {
    {"ping", "", "measure the round trip to the server",
     "Sends HELLO, then one PING, and prints the PING's round trip: PONG 0.123 ms.\n", 0, false,
     false, Ping},
    {"info", "", "the server's version, world frame, limits and stats",
     "Prints what the server says about itself, from its HELLO reply (versions, this token's\n"
     "role, the world frame, the request limits) and its STATS counters, one \"name value\"\n"
     "line each, in sections: # server, # storage, # cache, # journal, # index, # lod,\n"
     "# clients (and # other for counters of a newer server). With --json: one object with a\n"
     "member per section.\n",
     0, false, false, Info},
    {"get-voxel", "X Y Z", "print the material of one voxel",
     "Prints the material id (0..255) of voxel (X, Y, Z).\n", 3, false, false, GetVoxel},
    {"set-voxel", "X Y Z MATERIAL", "set one voxel",
     "Sets voxel (X, Y, Z) to MATERIAL (0..255) and prints the write's version:\n"
     "ok version N.\n",
     4, false, false, SetVoxel},
    {"get-chunk", "CHUNK FILE", "save a chunk's record to FILE",
     "Writes the chunk's record, as GET_CHUNKS returns it (engine/FORMAT.md), to FILE and\n"
     "prints its key, coordinates, version, encoding, size and modification time.\n"
     "With --lod L (1..16): the LOD node CHUNK of level L instead (its code, or its node\n"
     "coordinates: chunk coordinates divided by 2^L), as last built; its version is the\n"
     "newest of the chunks under it then (0: never built).\n",
     2, false, false, GetChunk},
    {"put-chunk", "CHUNK FILE [--expect-version V]", "store the chunk record in FILE as CHUNK",
     "Stores the chunk record in FILE (e.g. from get-chunk, of any chunk) as chunk CHUNK and\n"
     "prints the write's version. With --expect-version V the server refuses the write\n"
     "(CONFLICT) unless the chunk's version is V. FILE travels in one frame: one over the\n"
     "server's frame limit (HELLO's max_payload) is refused before it is read.\n",
     2, true, false, PutChunk},
    {"delete-chunk", "CHUNK", "delete a chunk (it reads as the fills again)",
     "Deletes the chunk's record; it reads as the fills that cover it (air when none).\n"
     "Prints the write's version.\n",
     1, false, false, DeleteChunk},
    {"read-box", "X0 Y0 Z0 X1 Y1 Z1 FILE", "save a box of voxels to FILE",
     "Reads the box's voxels into FILE. A box larger than one frame is read in several\n"
     "pipelined requests; FILE is replaced only once all of them succeeded.\n",
     7, false, false, ReadBox},
    {"write-box", "X0 Y0 Z0 X1 Y1 Z1 FILE", "write a box of voxels from FILE",
     "Writes the voxels in FILE into the box and prints the write's version. FILE must have\n"
     "exactly one byte per voxel of the box; a box over the server's max_box_voxels is\n"
     "refused before FILE is read. A box larger than one frame is written in several\n"
     "pipelined requests, each atomic on its own (the version printed is the newest).\n",
     7, false, false, WriteBox},
    {"fill", "X0 Y0 Z0 X1 Y1 Z1 MATERIAL", "fill a box with one material",
     "Fills the box with MATERIAL (0..255) and prints the write's version. Any size: a fill\n"
     "is one record, however many chunks it covers.\n",
     7, false, false, Fill},
    {"export", "--out DIR [--box ..] [--compressor] [--lod N]",
     "write the world (or a box) as a Zarr v2 array",
     "Writes a Zarr v2 directory store into DIR: .zgroup, .zattrs (world_size_meters,\n"
     "voxel_size_meters, coordinate_system EPSG:4087) and the array world_voxels, shape\n"
     "[z, y, x] (x fastest), chunks 128^3 of |u1, fill value 0, compressor zstd (level 3,\n"
     "the default) or blosc (zstd, clevel 5, no shuffle). Only chunks that are not all 0\n"
     "are written, as files CZ.CY.CX; zarr[z, y, x] is voxel (x, y, z). With --box, voxels\n"
     "outside the box are written as 0. With --lod N (1..16), also the arrays\n"
     "lod_pyramid/lod_1 .. lod_N: level L has shape [z, y, x] / 2^L, voxels of 0.25 m * 2^L,\n"
     "each the most common material of its 2x2x2 children (ties to non-air, then to the\n"
     "smaller id), computed from the exported level 0. The export reads one snapshot of the\n"
     "database: every write before it starts and none after, while writes go on. Fills\n"
     "covering more than 2^20 chunks in the box are refused (export a smaller box). DIR must\n"
     "not hold an array yet.\n",
     kVariableArgs, false, false, Export},
    {"import", "DIR [--box ..]", "write a Zarr v2 array made by export",
     "Reads world_voxels of the Zarr v2 store DIR (as export writes it: shape [z, y, x] of\n"
     "this world, chunks 128^3, |u1, zstd or blosc, dimension separator . or /) and\n"
     "writes every chunk file with PUT_CHUNK (replacing the chunk); with --box, only the\n"
     "voxels inside the box (WRITE_BOX for chunks partly inside). Chunks without a file\n"
     "are left as they are. Refused, before anything is written: a .zarray over 1 MiB, a\n"
     "chunk file larger than its compressor can make of 128^3 bytes (plus 64 KiB), and any\n"
     "entry of world_voxels that is a symbolic link or not a regular file or directory.\n",
     kVariableArgs, false, false, Import},
    {"flush", "", "write every dirty chunk to the store",
     "Asks the server to write every dirty chunk back to its store now; prints ok when done.\n", 0,
     false, false, Flush},
    {"query", "radius|cell|rect|box ARGS...", "chunks and fills in a region (S2 index)",
     "Asks the server's spatial index for the chunks in a region and prints one line per\n"
     "chunk, CX,CY,CZ key KEY version V, then the fills that meet the region,\n"
     "fill SEQ box X0 Y0 Z0 X1 Y1 Z1 material M, then next-cursor HEX when there are more\n"
     "pages (nothing after the last page). The forms:\n"
     "\n"
     "  query radius LAT LON METRES  chunks whose centre is within METRES of the point\n"
     "  query cell TOKEN             chunks whose centre is in the S2 cell (e.g. 47a1cbd4)\n"
     "  query rect LAT_LO LON_LO LAT_HI LON_HI\n"
     "                               chunks whose centre is in the rectangle (LON_LO >\n"
     "                               LON_HI: it crosses the antimeridian)\n"
     "  query box X0 Y0 Z0 X1 Y1 Z1  chunks that intersect the voxel box (X1 exclusive)\n"
     "\n"
     "A chunk's centre is the middle of its voxel box, as latitude and longitude. Chunks\n"
     "written but not flushed yet are found too. Results come in a fixed order (S2 cell, then\n"
     "Morton code; Morton code for box), a page at a time; fills come with the first page.\n"
     "\n"
     "options:\n"
     "  --alt-min MIN --alt-max MAX  only chunks and fills whose altitude range (metres\n"
     "                               above sea level) meets [MIN, MAX]; both or neither\n"
     "  --limit N                    chunks per page, 1..65536 (default 1000)\n"
     "  --all                        follow the cursors: every page, then no next-cursor\n"
     "  --cursor HEX                 start at this page (a next-cursor printed before)\n"
     "  --lod L                      the level-L LOD nodes (1..16) over the chunks found,\n"
     "                               in node code order, with their built versions (0:\n"
     "                               not built yet); CX,CY,CZ are node coordinates\n"
     "\n"
     "With --json: {\"chunks\":[{\"cx\",\"cy\",\"cz\",\"key\",\"version\"}...],\"fills\":\n"
     "[{\"seq\",\"lo\",\"hi\",\"material\"}...],\"next_cursor\":HEX or null}.\n",
     kVariableArgs, false, true, Query},
    {"watch", "radius|cell|rect|box ARGS...", "print the changes in a region as they happen",
     "Subscribes to the changes in a region and prints one line per change as the server\n"
     "pushes it, flushed at once, in commit order. The region is a query's (see voxdb query\n"
     "--help): radius LAT LON METRES, cell TOKEN, rect LAT_LO LON_LO LAT_HI LON_HI or box X0\n"
     "Y0 Z0 X1 Y1 Z1, and --alt-min MIN --alt-max MAX. First, on stderr: watching REGION\n"
     "after seq N; every change after N follows. The lines:\n"
     "\n"
     "  seq S chunk CX,CY,CZ key KEY changed  a write changed the chunk: its version is now S\n"
     "  seq S chunk CX,CY,CZ key KEY deleted  the chunk has no record now and reads as the\n"
     "                                        fills (delete-chunk, or a fill over all of it)\n"
     "  seq S fill box X0 Y0 Z0 X1 Y1 Z1 material M\n"
     "                                        a fill; the chunks of its box not listed read\n"
     "                                        as it now\n"
     "\n"
     "One write may print several lines (a box over several chunks; a fill, then the chunks\n"
     "it rewrote), all with its seq.\n"
     "\n"
     "options:\n"
     "  --from SEQ          every change after SEQ (the seq of the last line seen), if the\n"
     "                      server still keeps them; else it fails with RESYNC: read the\n"
     "                      region again (voxdb query) and watch without --from\n"
     "  --from BEGIN-END:SEQ,...\n"
     "                      the same on a server of several partitions, one point per\n"
     "                      range of chunk codes, as watch prints it when it stops\n"
     "  --detail voxels     also what changed: \", N voxels\" (set-voxel and SET_VOXELS) or\n"
     "                      \", box X0 Y0 Z0 X1 Y1 Z1\" (write-box: the part in the chunk)\n"
     "  --detail records    also the chunk's record, while that version is the current one:\n"
     "                      \", record N bytes\"\n"
     "  --count N           exit 0 after N lines\n"
     "  --timeout DURATION  exit 0 after DURATION without a change (e.g. 500ms, 30s, 5m);\n"
     "                      also the limit to connect\n"
     "\n"
     "Without --count or --timeout it runs until SIGINT (Ctrl-C) or SIGTERM: exit 0, saying\n"
     "on stderr the seq to resume from. When the server closes the connection (it stopped,\n"
     "or this watcher fell behind the changes it keeps) it exits 3, saying the --from that\n"
     "resumes.\n"
     "\n"
     "With --json: one object per line, {\"seq\",\"kind\":\"chunk\",\"key\",\"cx\",\"cy\",\"cz\",\n"
     "\"present\",\"detail\":\"none\"} (or \"detail\":\"edits\" and "
     "\"edits\":[{\"x\",\"y\",\"z\",\n"
     "\"material\"}...]; \"box\" and \"lo\":[X0,Y0,Z0],\"hi\":[X1,Y1,Z1]; \"record\" and\n"
     "\"record_bytes\"), or {\"seq\",\"kind\":\"fill\",\"lo\",\"hi\",\"material\"}.\n",
     kVariableArgs, false, false, WatchRegion},
    {"backup", "DEST", "copy the database online into DEST (on the server)",
     "Asks the server (admin role) for a consistent copy of its database, taken while\n"
     "writes go on, in the directory DEST on the server's file system (an absolute path\n"
     "there; it must not exist, nor DEST.partial, where the copy is built;\n"
     "under systemd, inside a directory voxdbd may write, e.g. /var/lib/voxdb/backups/NAME).\n"
     "The copy holds every write acknowledged before the backup started. Restore by starting\n"
     "voxdbd with --data DEST (or a copy of it). Prints ok backup DEST, N bytes.\n",
     1, false, false, Backup},
    {"reindex", "", "rebuild the spatial index from the stored chunks",
     "Asks the server to rebuild its S2 index from the stored chunks (admin role) and prints\n"
     "the number of entries: entries N. Queries give the same answers before and after.\n",
     0, false, false, Reindex},
    {"lod", "rebuild|sync", "rebuild the LOD pyramid, or wait until it has caught up",
     "lod rebuild asks the server (admin role) to rebuild every level of its LOD pyramid\n"
     "from the chunks and fills now, and prints how long it took. The pyramid is otherwise\n"
     "kept up to date in the background as chunks are flushed; voxdb info shows the nodes\n"
     "still waiting (lod_dirty). lod sync (write role) waits until the pyramid has built\n"
     "everything marked before it (LOD_SYNC): run flush first to include writes not flushed\n"
     "yet. Read the levels with get-chunk --lod L and query --lod L.\n",
     1, false, false, Lod},
    {"stats", "", "print the server's counters",
     "Prints the STATS text: one \"name value\" line per counter.\n", 0, false, false, Stats},
    {"verify", "--data DIR", "check a stopped database's records and index (offline)",
     "Opens the database in DIR itself (voxdbd must be stopped; refused while it runs) and\n"
     "checks everything in it: the meta records; every chunk record's key, checksum and full\n"
     "decode; that the S2 index has exactly one item, with the right version, per stored\n"
     "chunk (in its column's entry); the fills; the journal records and their sequence\n"
     "numbers. Prints the counts, then each problem (the first 20) and warning, then ok or\n"
     "DAMAGED. Exit 0 when there is no problem, 1 otherwise (voxdb reindex repairs the\n"
     "index).\n",
     0, false, false, Verify},
    {"compact", "--data DIR", "rewrite a stopped database without its free pages (offline)",
     "Rewrites DIR/data.mdb without the free pages that deletes leave (LMDB never shrinks\n"
     "its file): a compacted copy is built next to DIR (DIR.compact-tmp, else inside DIR),\n"
     "synced, checked to open with the same entries, then renamed over data.mdb. The\n"
     "database's lock is held throughout, so voxdbd cannot start meanwhile (and compact is\n"
     "refused while it runs); a crash at any point leaves the old or the new file, whole.\n"
     "Needs free space for the copy. Prints the file's size before and after.\n",
     0, false, false, Compact},
    {"partition", "list|split ID AT|move ID DIR [--data DIR]",
     "list, split or move the partitions of a node (online, or offline with --data)",
     "A data directory holds one or more partitions: ranges of chunk codes, each its own\n"
     "LMDB environment (engine/FORMAT.md, \"Node layout\"). Without --data, asks the\n"
     "server (admin role): split and move run while writes go on (those to the partition\n"
     "pause for the catch-up, typically tens of ms) and print ok once the new layout is\n"
     "committed and serving; list prints the number of partitions (STATS). Connections\n"
     "holding a snapshot, a stream or a subscription are closed by the change (PROTOCOL.md,\n"
     "\"Partitions\"). With --data DIR, works on the stopped node in DIR itself (the\n"
     "directory's lock is held throughout).\n"
     "  list          one line per partition: id, [begin, end) of chunk codes, directory,\n"
     "                chunks stored, bytes used, epoch (--json: one object per line)\n"
     "  split ID AT   splits partition ID at chunk code AT (a multiple of 8^4 = 4096 strictly\n"
     "                inside its range) into two new partitions in DATA/partitions/\n"
     "  move ID DIR   moves partition ID's environment to DIR (absolute; new or empty)\n"
     "Each copies the partition, then switches the layout by renaming DATA/node.manifest:\n"
     "a crash at any step leaves the old layout or the new one, and what it left behind\n"
     "is removed at the next open (a move's partial copy in DIR is not: remove it).\n"
     "Prints what was copied and how long writes would have paused.\n",
     kVariableArgs, false, false, PartitionCommand},
    {"recover", "--data DIR [--truncate-journal]",
     "report (or drop) a damaged journal record that keeps voxdbd from opening (offline)",
     "For a database voxdbd refuses to open because a journal record is damaged (\"journal\n"
     "record 15: ... checksum mismatch\"). Opens DIR itself (voxdbd must be stopped) and\n"
     "reports the first damaged record and what dropping it would drop: that record and\n"
     "every later one (replaying later records without it could build chunks no sequence\n"
     "of writes made); the records before it are kept. Exit 1 when it finds damage.\n"
     "With --truncate-journal it first writes a copy of those records to\n"
     "DIR/journal-dropped-FIRST-LAST (format in engine/FORMAT.md), then deletes them;\n"
     "sequence numbers (chunk versions) keep growing past the dropped ones. The writes\n"
     "they held are lost. Exit 0 when nothing is damaged or the records were dropped.\n",
     0, false, false, Recover},
};

}  // namespace

std::span<const CommandSpec> Commands() { return kCommands; }

const CommandSpec* FindCommand(std::string_view name) {
  for (const CommandSpec& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

std::string CommandHelpDetails(const CommandSpec& spec) {
  std::string args;
  const std::string_view synopsis = spec.synopsis;
  if (synopsis.find("X0") != std::string_view::npos) {
    args += kBoxHelp;
    if (synopsis.find("FILE") != std::string_view::npos) args += kBoxFileHelp;
  } else if (synopsis.find('X') != std::string_view::npos) {
    args += "X Y Z are voxel coordinates (see voxdb info for the world's extent).\n";
  }
  if (synopsis.find("CHUNK") != std::string_view::npos) args += kChunkHelp;
  return args.empty() ? spec.help : absl::StrCat(spec.help, "\n", args);
}

namespace {

// Splits a box inside one chunk into at most max_voxels voxels a part.
void SplitSmall(const Box& box, uint64_t max_voxels, std::vector<Box>* parts) {
  const uint64_t dx = box.hi.x - box.lo.x, dy = box.hi.y - box.lo.y;
  if (dx * dy <= max_voxels) {  // slabs of whole layers
    const uint64_t step = max_voxels / (dx * dy);
    for (uint64_t z = box.lo.z; z < box.hi.z;) {
      const uint64_t n = std::min(step, box.hi.z - z);
      parts->push_back({{box.lo.x, box.lo.y, z}, {box.hi.x, box.hi.y, z + n}});
      z += n;
    }
  } else if (dx <= max_voxels) {  // rows of one layer
    const uint64_t step = max_voxels / dx;
    for (uint64_t z = box.lo.z; z < box.hi.z; ++z) {
      for (uint64_t y = box.lo.y; y < box.hi.y;) {
        const uint64_t n = std::min(step, box.hi.y - y);
        parts->push_back({{box.lo.x, y, z}, {box.hi.x, y + n, z + 1}});
        y += n;
      }
    }
  } else {  // runs of one row
    for (uint64_t z = box.lo.z; z < box.hi.z; ++z) {
      for (uint64_t y = box.lo.y; y < box.hi.y; ++y) {
        for (uint64_t x = box.lo.x; x < box.hi.x;) {
          const uint64_t n = std::min(max_voxels, box.hi.x - x);
          parts->push_back({{x, y, z}, {x + n, y + 1, z + 1}});
          x += n;
        }
      }
    }
  }
}

}  // namespace

std::vector<Box> SplitBox(const Box& box, uint64_t max_voxels, uint64_t max_chunks) {
  constexpr uint64_t kEdge = 128;
  const uint64_t lo[3] = {box.lo.x, box.lo.y, box.lo.z};
  const uint64_t hi[3] = {box.hi.x, box.hi.y, box.hi.z};
  // Chunks per block along each axis: grown one axis at a time (x, y, z)
  // while a block's voxels (at most its extent inside the box) and chunks
  // stay within the limits.
  uint64_t span[3], t[3] = {1, 1, 1};
  for (int a = 0; a < 3; ++a) span[a] = (hi[a] - 1) / kEdge - lo[a] / kEdge + 1;
  auto volume = [&](const uint64_t* n) {
    uint64_t v = 1;
    for (int a = 0; a < 3; ++a) v *= std::min(hi[a] - lo[a], n[a] * kEdge);
    return v;
  };
  for (int a = 0; a < 3; ++a) {
    while (t[a] < span[a]) {
      uint64_t next[3] = {t[0], t[1], t[2]};
      ++next[a];
      if (next[0] * next[1] * next[2] > max_chunks || volume(next) > max_voxels) break;
      t[a] = next[a];
    }
  }
  std::vector<Box> parts;
  // Block borders: the box's low edge, then every t[a]-th chunk border.
  auto next_edge = [&](int a, uint64_t from) {
    const uint64_t border = (from / kEdge + t[a]) * kEdge;
    return std::min(hi[a], border);
  };
  for (uint64_t z = lo[2]; z < hi[2]; z = next_edge(2, z)) {
    for (uint64_t y = lo[1]; y < hi[1]; y = next_edge(1, y)) {
      for (uint64_t x = lo[0]; x < hi[0]; x = next_edge(0, x)) {
        const Box block{{x, y, z}, {next_edge(0, x), next_edge(1, y), next_edge(2, z)}};
        if (BoxVolume(block) <= max_voxels) {
          parts.push_back(block);
        } else {
          SplitSmall(block, max_voxels, &parts);  // one chunk, over max_voxels
        }
      }
    }
  }
  return parts;
}

}  // namespace voxdb::cli
