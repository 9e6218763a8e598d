// PARTITION_SPLIT and PARTITION_MOVE (daemon/dispatch.h): the node's online
// layout changes, checked against the manifest on the worker, then run there
// by Server::ChangeLayout, which detaches and re-binds what voxdbd serves
// from the one partition of a node of one.
#include <filesystem>
#include <string>
#include <utility>

#include "absl/strings/str_format.h"
#include "daemon/dispatch.h"
#include "daemon/log.h"
#include "engine/node_manifest.h"
#include "engine/status.h"

namespace voxdb::daemon {
namespace {

namespace fs = std::filesystem;

// True when `inner` is `outer` or lies under it (both normalised).
bool Within(const fs::path& inner, const fs::path& outer) {
  const fs::path rel = inner.lexically_relative(outer);
  return !rel.empty() && *rel.begin() != "..";
}

// `p` with its existing leading part's symbolic links resolved.
fs::path Resolved(const fs::path& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(p, ec);
  return ec ? p.lexically_normal() : r.lexically_normal();
}

// A move's destination as a client may name it: an absolute, normalised
// path the manifest can carry (engine/node_manifest.h), outside the data
// directory and every partition's environment (symbolic links resolved),
// holding none of them, and no existing non-directory. The engine refuses
// an existing non-empty directory.
absl::Status CheckMoveDir(const std::string& data_dir, const engine::Node::Layout& layout,
                          const std::string& dir) {
  if (dir.empty() || dir[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrFormat("the destination must be an absolute path, not '%s'", dir));
  }
  if (dir.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("the destination holds a NUL byte");
  }
  const fs::path want = fs::path(dir).lexically_normal();
  const fs::path real = Resolved(want);
  for (const fs::path& data : {fs::path(data_dir).lexically_normal(), Resolved(data_dir)}) {
    if (Within(want, data) || Within(real, data)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s lies inside the data directory %s, whose names the node reserves: move a "
          "partition to a directory outside it",
          dir, data_dir));
    }
  }
  for (const engine::Node::Part& part : layout.parts) {
    const fs::path there = Resolved(part.spec.dir);
    if (Within(real, there) || Within(there, real)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s overlaps the directory of partition %u (%s)", dir, part.spec.id, part.spec.dir));
    }
  }
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(want, ec);
  if (!ec && fs::exists(st) && !fs::is_directory(fs::status(want, ec))) {
    return absl::InvalidArgumentError(absl::StrFormat("%s exists and is not a directory", dir));
  }
  return absl::OkStatus();
}

// The manifest as it is now; NOT_FOUND when it lists no partition `id`.
absl::StatusOr<engine::NodeManifest> ManifestWith(const std::string& data_dir, uint64_t id) {
  auto manifest = engine::ReadNodeManifest(data_dir);
  if (!manifest.ok()) return manifest.status();
  if (manifest->Find(id) == nullptr) {
    return absl::NotFoundError(absl::StrFormat("no partition %u on this node", id));
  }
  return manifest;
}

absl::StatusOr<std::vector<uint8_t>> Encode(
    const absl::StatusOr<engine::LayoutChangeReport>& report) {
  if (!report.ok()) return report.status();
  protocol::PartitionChangeReply reply;
  reply.chunks = report->chunks;
  reply.bytes = report->bytes;
  reply.pause_us = static_cast<uint64_t>(report->pause_seconds * 1e6);
  reply.new_ids = report->new_ids;
  return reply.Encode();
}

}  // namespace

// The manifest is read and the request checked on the worker, which runs
// every layout change, so nothing changes it in between.
void Server::Handlers::PartitionSplit(Connection& c, Request& r) {
  auto req = protocol::PartitionSplitRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  Server* server = &c.server();
  c.RunOnWorker(r.op, r.id, [server, req = *req]() -> absl::StatusOr<std::vector<uint8_t>> {
    const std::string& data = server->options_.data_dir;
    auto manifest = ManifestWith(data, req.id);
    if (!manifest.ok()) return manifest.status();
    if (auto next = engine::ManifestAfterSplit(*manifest, req.id, req.at); !next.ok()) {
      return next.status();
    }
    auto report = server->ChangeLayout([&] { return server->node_->Split(req.id, req.at); });
    Log(report.ok() ? LogLevel::kInfo : LogLevel::kError, "split of partition %u at %u: %s%s",
        req.id, req.at, report.status().ToString(),
        report.ok() ? absl::StrFormat(", %u chunks copied, writes paused %.1f ms", report->chunks,
                                      report->pause_seconds * 1e3)
                    : "");
    return Encode(report);
  });
}

void Server::Handlers::PartitionMove(Connection& c, Request& r) {
  auto req = protocol::PartitionMoveRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  Server* server = &c.server();
  c.RunOnWorker(r.op, r.id, [server, req = *req]() -> absl::StatusOr<std::vector<uint8_t>> {
    const std::string& data = server->options_.data_dir;
    auto manifest = ManifestWith(data, req.id);
    if (!manifest.ok()) return manifest.status();
    if (absl::Status s = CheckMoveDir(data, *server->node_->layout(), req.dir); !s.ok()) return s;
    if (auto next = engine::ManifestAfterMove(*manifest, req.id, req.dir); !next.ok()) {
      return next.status();
    }
    std::error_code ec;
    if (std::filesystem::exists(req.dir, ec) && !std::filesystem::is_empty(req.dir, ec)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s is not empty: a partition moves to a new or empty directory", req.dir));
    }
    auto report = server->ChangeLayout([&] { return server->node_->Move(req.id, req.dir); });
    Log(report.ok() ? LogLevel::kInfo : LogLevel::kError, "move of partition %u to %s: %s%s",
        req.id, req.dir, report.status().ToString(),
        report.ok() ? absl::StrFormat(", %u chunks copied, writes paused %.1f ms", report->chunks,
                                      report->pause_seconds * 1e3)
                    : "");
    return Encode(report);
  });
}

}  // namespace voxdb::daemon
