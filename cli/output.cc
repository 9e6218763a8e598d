#include "cli/output.h"

#include <cstdio>

#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"
#include "cli/args.h"
#include "engine/status.h"
#include "protocol/client.h"

namespace voxdb::cli {
namespace {

// The payload of WithJsonPrinted.
constexpr char kJsonPrintedUrl[] = "voxdb.cli/json-printed";

// A failure of the connection itself rather than an answer: the server
// could not be reached, the connection was lost, or no reply came in time.
bool IsTransportError(const absl::Status& status) {
  return IsUnreachable(status) ||
         (absl::IsDeadlineExceeded(status) && !protocol::ServerStatusOf(status).has_value());
}

}  // namespace

int ExitCodeOf(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (IsUsageError(status)) return kExitUsage;
  if (IsTransportError(status)) return kExitUnreachable;
  return kExitServerError;
}

std::string StatusNameOf(const absl::Status& status) {
  if (IsUsageError(status)) return "USAGE";
  if (IsTransportError(status)) return "UNREACHABLE";
  const auto wire = protocol::ServerStatusOf(status);
  return protocol::WireStatusName(wire.has_value() ? *wire : protocol::ToWireStatus(status));
}

absl::Status WithJsonPrinted(absl::Status status) {
  status.SetPayload(kJsonPrintedUrl, absl::Cord());
  return status;
}

int ReportError(const absl::Status& status, std::string_view command, bool json,
                std::string_view usage_hint) {
  const std::string message(status.message());
  const std::string name = StatusNameOf(status);
  if (IsUsageError(status)) {
    std::fprintf(stderr, "voxdb: %s\n%s\n", message.c_str(), std::string(usage_hint).c_str());
  } else {
    std::fprintf(stderr, "voxdb: %s: %s\n", name.c_str(), message.c_str());
  }
  if (json && !status.GetPayload(kJsonPrintedUrl).has_value()) {
    JsonObject o;
    if (!command.empty()) o.Str("command", command);
    o.Str("error", message).Str("status", name);
    PrintJson(o);
  }
  return ExitCodeOf(status);
}

void PrintJson(const JsonObject& object) { std::printf("%s\n", object.ToString().c_str()); }

}  // namespace voxdb::cli
