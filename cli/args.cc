#include "cli/args.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>

#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace voxdb::cli {
namespace {

constexpr char kUsagePayloadUrl[] = "type.voxdb.dev/voxdb.cli.UsageError";
// 11.6 days; poll() takes an int of ms.
constexpr std::chrono::milliseconds kMaxTimeout = std::chrono::seconds(1'000'000);

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// "-5", "-0": a negative number given where an argument is expected.
bool LooksNegative(std::string_view arg) {
  return arg.size() >= 2 && arg[0] == '-' && IsDigit(arg[1]);
}

}  // namespace

absl::Status UsageError(std::string_view message) {
  absl::Status status =
      absl::InvalidArgumentError(absl::string_view(message.data(), message.size()));
  status.SetPayload(kUsagePayloadUrl, absl::Cord());
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kUsagePayloadUrl).has_value();
}

absl::StatusOr<uint64_t> ParseU64(std::string_view text, std::string_view what) {
  if (text.empty()) return UsageError(absl::StrFormat("%s is empty", what));
  if (text[0] == '-') {
    return UsageError(absl::StrFormat("%s '%s' is negative", what, text));
  }
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  // from_chars takes neither a sign nor spaces; it stops at the first
  // character that is not a digit.
  if (ec == std::errc::result_out_of_range) {
    return UsageError(absl::StrFormat("%s '%s' is larger than %u", what, text,
                                      std::numeric_limits<uint64_t>::max()));
  }
  if (ec != std::errc() || ptr != end) {
    return UsageError(absl::StrFormat("%s '%s' is not a decimal number", what, text));
  }
  return value;
}

namespace {

// "BEGIN-END:SEQ,...": per-range resume points (PROTOCOL.md, "Subscriptions").
absl::StatusOr<std::vector<protocol::RangeSeq>> ParseResumeRanges(const std::string& text) {
  std::vector<protocol::RangeSeq> ranges;
  const std::vector<std::string> items = absl::StrSplit(text, ',');
  for (const std::string& whole : items) {
    const std::string_view item = whole;
    if (ranges.size() == protocol::kMaxResumeRanges) {
      return UsageError(absl::StrFormat("--from: more than %u ranges", protocol::kMaxResumeRanges));
    }
    const size_t dash = item.find('-'), colon = item.find(':');
    if (dash == std::string_view::npos || colon == std::string_view::npos || colon < dash) {
      return UsageError(absl::StrFormat(
          "--from '%s': give SEQ, or BEGIN-END:SEQ,... as voxdb watch prints it", item));
    }
    protocol::RangeSeq r;
    auto begin = ParseU64(item.substr(0, dash), "--from's BEGIN");
    if (!begin.ok()) return begin.status();
    auto end = ParseU64(item.substr(dash + 1, colon - dash - 1), "--from's END");
    if (!end.ok()) return end.status();
    auto seq = ParseU64(item.substr(colon + 1), "--from's SEQ");
    if (!seq.ok()) return seq.status();
    ranges.push_back({*begin, *end, *seq});
  }
  return ranges;
}

}  // namespace

absl::StatusOr<uint8_t> ParseMaterial(std::string_view text) {
  auto value = ParseU64(text, "MATERIAL");
  if (!value.ok()) return value.status();
  if (*value > 255) {
    return UsageError(absl::StrFormat("MATERIAL '%s' is not in 0..255", text));
  }
  return static_cast<uint8_t>(*value);
}

absl::StatusOr<double> ParseDouble(std::string_view text, std::string_view what) {
  if (text.empty()) return UsageError(absl::StrFormat("%s is empty", what));
  double value = 0;
  const char* end = text.data() + text.size();
  // from_chars takes no "+", spaces or "0x" prefix (chars_format::general).
  const auto [ptr, ec] = std::from_chars(text.data(), end, value, std::chars_format::general);
  if (ec == std::errc::result_out_of_range) {
    return UsageError(absl::StrFormat("%s '%s' is out of range", what, text));
  }
  if (ec != std::errc() || ptr != end || !std::isfinite(value)) {
    return UsageError(absl::StrFormat("%s '%s' is not a finite decimal number", what, text));
  }
  return value;
}

absl::StatusOr<std::vector<uint8_t>> ParseHex(std::string_view text, std::string_view what) {
  if (text.empty()) return UsageError(absl::StrFormat("%s is empty", what));
  if (text.size() % 2 != 0) {
    return UsageError(absl::StrFormat("%s '%s' has an odd number of hex digits", what, text));
  }
  std::vector<uint8_t> bytes(text.size() / 2);
  for (size_t i = 0; i < bytes.size(); ++i) {
    const auto [ptr, ec] =
        std::from_chars(text.data() + 2 * i, text.data() + 2 * i + 2, bytes[i], 16);
    if (ec != std::errc() || ptr != text.data() + 2 * i + 2) {
      return UsageError(absl::StrFormat("%s '%s' is not hex digits", what, text));
    }
  }
  return bytes;
}

absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text,
                                                        std::string_view what,
                                                        std::chrono::milliseconds max) {
  const size_t digits = std::min(text.find_first_not_of("0123456789"), text.size());
  const std::string_view unit = text.substr(digits);
  uint64_t ms_per_unit = 0;
  if (unit.empty() || unit == "s") {
    ms_per_unit = 1000;
  } else if (unit == "ms") {
    ms_per_unit = 1;
  } else if (unit == "m") {
    ms_per_unit = 60'000;
  } else if (unit == "h") {
    ms_per_unit = 3'600'000;
  }
  if (digits == 0 || ms_per_unit == 0) {
    return UsageError(absl::StrFormat(
        "%s '%s' is not a duration: seconds, or a number and a unit, e.g. 500ms, 30s, 5m, 2h", what,
        text));
  }
  auto n = ParseU64(text.substr(0, digits), what);
  if (!n.ok()) return n.status();
  const uint64_t max_ms = static_cast<uint64_t>(max.count());
  if (*n > max_ms / ms_per_unit) {
    return UsageError(absl::StrFormat("%s %s is over %u seconds", what, text, max_ms / 1000));
  }
  return std::chrono::milliseconds(*n * ms_per_unit);
}

absl::StatusOr<Address> ParseAddress(std::string_view text, std::string_view source) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return UsageError(absl::StrFormat("%s '%s' is not HOST:PORT", source, text));
  }
  Address address;
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [::1]:7390
  } else if (host.find(':') != std::string_view::npos) {
    return UsageError(
        absl::StrFormat("%s '%s': write an IPv6 address in brackets, [::1]:7390", source, text));
  }
  if (host.empty()) return UsageError(absl::StrFormat("%s '%s' has no host", source, text));
  address.host = std::string(host);
  auto port = ParseU64(text.substr(colon + 1), absl::StrFormat("the port of %s", source));
  if (!port.ok()) return port.status();
  if (*port == 0 || *port > 65535) {
    return UsageError(absl::StrFormat("%s '%s': the port is not in 1..65535", source, text));
  }
  address.port = static_cast<uint16_t>(*port);
  return address;
}

absl::StatusOr<engine::ChunkKey> ParseChunk(std::string_view text) {
  if (text.find(',') == std::string_view::npos) {
    auto code = ParseU64(text, "CHUNK");
    if (!code.ok()) return code.status();
    if (*code > engine::ChunkKey::kMaxCode) {
      return UsageError(absl::StrFormat("CHUNK %u is not a chunk's Morton code (at most %u)", *code,
                                        engine::ChunkKey::kMaxCode));
    }
    return engine::ChunkKey::FromCode(*code);
  }
  uint32_t axes[3];
  std::string_view rest = text;
  for (int i = 0; i < 3; ++i) {
    const size_t comma = rest.find(',');
    if ((i < 2) != (comma != std::string_view::npos)) {
      return UsageError(absl::StrFormat("CHUNK '%s' is not CX,CY,CZ", text));
    }
    const std::string_view part = rest.substr(0, comma);
    auto value = ParseU64(part, absl::StrFormat("the %c of CHUNK", "xyz"[i]));
    if (!value.ok()) return value.status();
    if (*value > engine::kMaxChunkAxis) {
      return UsageError(absl::StrFormat("CHUNK '%s': %u is over the largest chunk coordinate, %u",
                                        text, *value, engine::kMaxChunkAxis));
    }
    axes[i] = static_cast<uint32_t>(*value);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  return engine::ChunkKey::FromCoord({axes[0], axes[1], axes[2]});
}

absl::StatusOr<protocol::Box> ParseBox(std::span<const std::string> six) {
  static constexpr const char* kNames[6] = {"X0", "Y0", "Z0", "X1", "Y1", "Z1"};
  uint64_t v[6];
  for (int i = 0; i < 6; ++i) {
    auto value = ParseU64(six[static_cast<size_t>(i)], kNames[i]);
    if (!value.ok()) return value.status();
    v[i] = *value;
  }
  protocol::Box box{{v[0], v[1], v[2]}, {v[3], v[4], v[5]}};
  // Any box inside the world is valid (a planet-wide fill holds ~10^24
  // voxels); commands that move voxels check BoxVolume against a limit.
  for (int i = 0; i < 3; ++i) {
    if (v[i] >= v[i + 3]) {
      return UsageError(
          absl::StrFormat("the box is empty: %s %u is not below %s %u (hi is exclusive)", kNames[i],
                          v[i], kNames[i + 3], v[i + 3]));
    }
  }
  return box;
}

uint64_t BoxVolume(const protocol::Box& box) {
  uint64_t xy, xyz;
  if (__builtin_mul_overflow(box.hi.x - box.lo.x, box.hi.y - box.lo.y, &xy) ||
      __builtin_mul_overflow(xy, box.hi.z - box.lo.z, &xyz)) {
    return UINT64_MAX;
  }
  return xyz;
}

const char* CommandLine::FirstBandOption() const {
  if (alt_min.has_value()) return "--alt-min";
  if (alt_max.has_value()) return "--alt-max";
  return nullptr;
}

const char* CommandLine::FirstPageOption() const {
  if (limit.has_value()) return "--limit";
  if (all) return "--all";
  if (cursor.has_value()) return "--cursor";
  return nullptr;
}

const char* CommandLine::FirstWatchOption() const {
  if (from_seq.has_value() || from_ranges.has_value()) return "--from";
  if (detail.has_value()) return "--detail";
  if (count.has_value()) return "--count";
  return nullptr;
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv,
                                             const char* env_address, const char* env_token) {
  CommandLine cl;
  if (env_address != nullptr && *env_address != '\0') {
    cl.address = env_address;
    cl.address_source = "VOXDB_ADDRESS";
  }
  if (env_token != nullptr) cl.token = env_token;
  bool options_done = false;
  auto positional = [&](std::string arg) {
    if (cl.command.empty()) {
      cl.command = std::move(arg);
    } else {
      cl.args.push_back(std::move(arg));
    }
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-' || LooksNegative(arg)) {
      positional(std::string(arg));
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (arg == "-h") {
      cl.help = true;
      continue;
    }
    // --name, --name=value, --name value.
    const size_t eq = arg.find('=');
    const std::string_view name = arg.substr(0, eq);
    std::optional<std::string_view> inline_value;
    if (eq != std::string_view::npos) inline_value = arg.substr(eq + 1);
    auto flag = [&](bool* out) -> absl::Status {
      if (inline_value.has_value()) {
        return UsageError(absl::StrFormat("option %s takes no value", name));
      }
      *out = true;
      return absl::OkStatus();
    };
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (inline_value.has_value()) return std::string(*inline_value);
      if (i + 1 >= argc) return UsageError(absl::StrFormat("option %s needs a value", name));
      return std::string(argv[++i]);
    };
    absl::Status status;
    if (name == "--help") {
      status = flag(&cl.help);
    } else if (name == "--version") {
      status = flag(&cl.version);
    } else if (name == "--json") {
      status = flag(&cl.json);
    } else if (name == "--all") {
      status = flag(&cl.all);
    } else if (name == "--truncate-journal") {
      status = flag(&cl.truncate_journal);
    } else if (name == "--alt-min" || name == "--alt-max" || name == "--limit" ||
               name == "--cursor") {
      // The value may be negative (--alt-min -100): it is taken as it is.
      auto v = value();
      if (!v.ok()) return v.status();
      if (name == "--limit") {
        auto n = ParseU64(*v, name);
        if (!n.ok()) return n.status();
        cl.limit = *n;
      } else if (name == "--cursor") {
        auto bytes = ParseHex(*v, name);
        if (!bytes.ok()) return bytes.status();
        cl.cursor = std::move(*bytes);
      } else {
        auto metres = ParseDouble(*v, name);
        if (!metres.ok()) return metres.status();
        (name == "--alt-min" ? cl.alt_min : cl.alt_max) = *metres;
      }
    } else if (name == "--lod") {
      auto v = value();
      if (!v.ok()) return v.status();
      auto n = ParseU64(*v, name);
      if (!n.ok()) return n.status();
      if (*n > 16) return UsageError(absl::StrFormat("--lod %u is not in 0..16", *n));
      cl.lod = *n;
    } else if (name == "--from" || name == "--count") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (name == "--from" && v->find(':') != std::string::npos) {
        auto ranges = ParseResumeRanges(*v);
        if (!ranges.ok()) return ranges.status();
        cl.from_ranges = std::move(*ranges);
        continue;
      }
      auto n = ParseU64(*v, name);
      if (!n.ok()) return n.status();
      if (name == "--count" && *n == 0) return UsageError("--count 0: give at least 1");
      (name == "--from" ? cl.from_seq : cl.count) = *n;
    } else if (name == "--detail") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (*v == "none") {
        cl.detail = protocol::EventDetail::kNone;
      } else if (*v == "voxels") {
        cl.detail = protocol::EventDetail::kVoxels;
      } else if (*v == "records") {
        cl.detail = protocol::EventDetail::kRecords;
      } else {
        return UsageError(absl::StrFormat("--detail '%s': none, voxels or records", *v));
      }
    } else if (name == "--out" || name == "--compressor") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (v->empty()) return UsageError(absl::StrFormat("%s needs a value", name));
      (name == "--out" ? cl.out : cl.compressor) = std::move(*v);
    } else if (name == "--box") {
      if (inline_value.has_value() || i + 6 >= argc) {
        return UsageError("--box needs six values: X0 Y0 Z0 X1 Y1 Z1");
      }
      std::vector<std::string> six(argv + i + 1, argv + i + 7);
      i += 6;
      auto box = ParseBox(six);
      if (!box.ok()) return box.status();
      cl.box = *box;
    } else if (name == "--data") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (v->empty()) return UsageError("--data needs a directory");
      cl.data = std::move(*v);
    } else if (name == "--address" || name == "--token" || name == "--timeout" ||
               name == "--expect-version") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (name == "--address") {
        cl.address = *v;
        cl.address_source = "--address";
      } else if (name == "--token") {
        cl.token = *v;
      } else if (name == "--timeout") {
        auto timeout = ParseDuration(*v, name, kMaxTimeout);
        if (!timeout.ok()) return timeout.status();
        cl.timeout = *timeout;
      } else {
        auto n = ParseU64(*v, name);
        if (!n.ok()) return n.status();
        cl.expect_version = *n;
      }
    } else {
      return UsageError(absl::StrFormat("unknown option '%s'", arg));
    }
    if (!status.ok()) return status;
  }
  return cl;
}

}  // namespace voxdb::cli
