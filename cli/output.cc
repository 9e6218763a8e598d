#include "cli/output.h"

#include <charconv>
#include <cstdio>

#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"
#include "cli/args.h"
#include "protocol/client.h"

namespace voxdb::cli {
namespace {

// The length of the UTF-8 sequence starting at s[i], or 0 if it is not one.
size_t Utf8Length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  // Overlong forms, surrogates and code points past U+10FFFF.
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0;
  }
  return n;
}

}  // namespace

std::string JsonQuote(std::string_view text) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    const size_t n = Utf8Length(text, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(text.substr(i, n));
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
    i += n;
  }
  out += '"';
  return out;
}

bool IsJsonNumber(std::string_view t) {
  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  size_t i = 0;
  const auto digits = [&] {
    const size_t from = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    return i - from;
  };
  if (i < t.size() && t[i] == '-') ++i;
  if (i < t.size() && t[i] == '0') {
    ++i;
  } else if (digits() == 0) {
    return false;
  }
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (digits() == 0) return false;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == t.size();
}

JsonObject& JsonObject::Raw(std::string_view key, std::string_view json) {
  if (!body_.empty()) body_ += ',';
  body_ += JsonQuote(key);
  body_ += ':';
  body_.append(json);
  return *this;
}

JsonObject& JsonObject::Str(std::string_view key, std::string_view value) {
  return Raw(key, JsonQuote(value));
}

JsonObject& JsonObject::Num(std::string_view key, uint64_t value) {
  return Raw(key, std::to_string(value));
}

JsonObject& JsonObject::Double(std::string_view key, double value) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  const std::string_view text(buf, ec == std::errc() ? static_cast<size_t>(end - buf) : 0);
  // JSON has no inf or nan.
  return Raw(key, IsJsonNumber(text) ? text : std::string_view("null"));
}

JsonObject& JsonObject::Bool(std::string_view key, bool value) {
  return Raw(key, value ? "true" : "false");
}

JsonObject& JsonObject::Object(std::string_view key, const JsonObject& value) {
  return Raw(key, value.ToString());
}

namespace {

// The payload of WithJsonPrinted.
constexpr char kJsonPrintedUrl[] = "voxdb.cli/json-printed";

// A failure of the connection itself rather than an answer: the client
// marks every answer of the server (protocol::ServerStatusOf).
bool IsTransportError(const absl::Status& status) {
  return !protocol::ServerStatusOf(status).has_value() &&
         (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status));
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
