#include "daemon/config.h"

#include <boost/program_options.hpp>
#include <cctype>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace voxdb::daemon {
namespace {

namespace po = boost::program_options;

using Config = DaemonConfig&;
using Value = const ConfigValue&;
using Setter = void (*)(DaemonConfig&, const ConfigValue&);
using Check = bool (*)(const DaemonConfig&, const ConfigValue&);

// One constructor per kind, as redis's createSizeTConfig() and the like, so
// that each row below names only what its kind uses.
constexpr ConfigOption Flag(const char* name, const char* help) {
  return {name, OptionKind::kFlag, nullptr, 0, 0, nullptr, nullptr, help, nullptr, nullptr};
}
constexpr ConfigOption String(const char* name, const char* default_value, const char* help,
                              Setter set) {
  return {name, OptionKind::kString, default_value, 0, 0, nullptr, nullptr, help, set, nullptr};
}
constexpr ConfigOption Tokens(const char* name, const char* help, Setter set) {
  return {name, OptionKind::kTokens, nullptr, 0, 0, nullptr, nullptr, help, set, nullptr};
}
constexpr ConfigOption Int(const char* name, const char* default_value, int64_t min, int64_t max,
                           const char* error, const char* help, Setter set) {
  return {name, OptionKind::kInt, default_value, min, max, nullptr, error, help, set, nullptr};
}
constexpr ConfigOption Count(const char* name, const char* default_value, int64_t min, int64_t max,
                             const char* error, const char* help, Setter set) {
  return {name, OptionKind::kCount, default_value, min, max, nullptr, error, help, set, nullptr};
}
constexpr ConfigOption Size(const char* name, const char* default_value, int64_t min, int64_t max,
                            const char* error, const char* help, Setter set,
                            Check check = nullptr) {
  return {name, OptionKind::kSize, default_value, min, max, nullptr, error, help, set, check};
}
constexpr ConfigOption Duration(const char* name, const char* default_value, int64_t min,
                                int64_t max, const char* error, const char* help, Setter set) {
  return {name, OptionKind::kDuration, default_value, min, max, nullptr, error, help, set, nullptr};
}
constexpr ConfigOption Enum(const char* name, const char* default_value, const char* choices,
                            const char* error, const char* help, Setter set) {
  return {name, OptionKind::kEnum, default_value, 0, 0, choices, error, help, set, nullptr};
}
constexpr ConfigOption HostPortOption(const char* name, OptionKind kind, const char* default_value,
                                      const char* error, const char* help, Setter set) {
  return {name, kind, default_value, 0, 0, nullptr, error, help, set, nullptr};
}

constexpr int64_t KiB = int64_t{1} << 10, MiB = int64_t{1} << 20, GiB = int64_t{1} << 30;

// In --help's order, which is also the order values are checked in. The
// defaults agree with DaemonConfig's and with conf/voxdb.conf
// (tests/daemon/config_test.cc checks both).
constexpr ConfigOption kOptions[] = {
    Flag("help", "show this help and exit"),
    Flag("version", "print the version and exit"),
    String("config", nullptr, "read options from this file (command line wins)",
           [](Config c, Value v) { c.config_file = v.text; }),
    String("data", "voxdb-data", "database directory", [](Config c, Value v) { c.data = v.text; }),
    HostPortOption("listen", OptionKind::kHostPort, "127.0.0.1:7390",
                   "'%s' is not HOST:PORT (port 0..65535; IPv6 as [ADDRESS]:PORT)",
                   "address:port to serve the protocol on (port 0: any free port)",
                   [](Config c, Value v) {
                     c.server.listen_address = v.host;
                     c.server.listen_port = v.port;
                   }),
    HostPortOption(
        "metrics-listen", OptionKind::kHostPortOrOff, "127.0.0.1:9464",
        "'%s' is not HOST:PORT (port 0..65535; IPv6 as [ADDRESS]:PORT) or off",
        "address:port of Prometheus metrics, GET /metrics (port 0: any free port; off: none)",
        [](Config c, Value v) {
          c.metrics_address = v.host;
          c.metrics_port = v.port;
        }),
    Int("threads", "0", 0, 1024, "must be in 0..1024", "I/O threads (0: the core count)",
        [](Config c, Value v) { c.server.io_threads = static_cast<int>(v.number); }),
    Enum("durability", "sync", "sync|async", "'%s' is not sync or async",
         "sync: acknowledge writes after the journal fsync; async: when applied",
         [](Config c, Value v) {
           c.db.durability =
               v.text == "sync" ? engine::Durability::kSync : engine::Durability::kAsync;
         }),
    Duration("commit-interval", "5ms", 1, 60'000, "'%s' is not a duration in 1ms..60s",
             "async: how often the journal is committed; an acknowledged write is on disk within "
             "about twice this (writers wait when the journal falls further behind)",
             [](Config c, Value v) { c.db.commit_interval = v.duration; }),
    Size("cache-bytes", "1GiB", 1, kNoMax, "'%s' is not a size", "memory for cached chunks",
         [](Config c, Value v) { c.db.cache_bytes = v.count; }),
    Size(
        "dirty-bytes", "256MiB", 1, kNoMax, "'%s' is not a size up to --cache-bytes",
        "dirty chunks at most; writers wait beyond",
        [](Config c, Value v) { c.db.dirty_bytes = v.count; },
        [](const DaemonConfig& c, Value v) { return v.count <= c.db.cache_bytes; }),
    // At least StoreOptions::initial_map_size, the map's first size.
    Size("max-map-size", "1TiB", 64 * MiB, kNoMax, "'%s' is not a size of at least 64MiB",
         "largest the LMDB map may grow; then writes fail with STORAGE_FULL; SIGHUP re-reads it "
         "from --config",
         [](Config c, Value v) { c.db.store.max_map_size = v.count; }),
    Tokens("token",
           "ROLE:SECRET, repeatable; ROLE is read, write or admin; with any token every client "
           "must authenticate (required unless --listen is loopback)",
           nullptr),
    Int("max-connections", "1024", 1, kNoMax, "must be at least 1",
        "connections served at once; more are refused with BUSY",
        [](Config c, Value v) { c.server.max_connections = static_cast<int>(v.number); }),
    Size("max-frame-bytes", "64MiB", 4 * KiB, 2 * GiB, "'%s' is not a size in 4KiB..2GiB",
         "largest request payload (4KiB before a client has authenticated)",
         [](Config c, Value v) { c.server.max_frame_payload = static_cast<uint32_t>(v.count); }),
    Size("max-buffered-bytes", "64MiB", 1, kNoMax, "'%s' is not a size",
         "reply bytes queued per connection before its requests stop being read",
         [](Config c, Value v) { c.server.max_buffered_bytes = v.count; }),
    Size("max-request-buffer-bytes", "256MiB", 1 * MiB, kNoMax,
         "'%s' is not a size of at least 1MiB",
         "bytes of partly received requests over all connections; past it, those holding the "
         "most stop being read",
         [](Config c, Value v) { c.server.max_request_buffer_bytes = v.count; }),
    Duration("idle-timeout", "5m", 0, kNoMax, "'%s' is not a duration like 300s or 5m",
             "close a connection without a whole request for this long (0: never)",
             [](Config c, Value v) { c.server.idle_timeout = v.duration; }),
    Duration("send-timeout", "30s", 0, kNoMax, "'%s' is not a duration like 30s",
             "close a connection whose replies make no progress for this long (0: never)",
             [](Config c, Value v) { c.server.send_timeout = v.duration; }),
    Duration("shutdown-timeout", "30s", 0, kNoMax, "'%s' is not a duration like 30s",
             "on SIGTERM, wait this long at most for requests in flight",
             [](Config c, Value v) { c.server.shutdown_timeout = v.duration; }),
    Enum("log-level", "info", "debug|info|warn|error", "'%s' is not debug, info, warn or error",
         "debug, info, warn or error; SIGHUP re-reads it from --config",
         [](Config c, Value v) { c.log_level = *ParseLogLevel(v.text); }),
    Duration("slow-request", "100ms", 0, kNoMax, "'%s' is not a duration like 100ms",
             "log requests that take longer than this at warn (0: never)",
             [](Config c, Value v) { c.server.slow_request = v.duration; }),
    Int("lod-levels", "4", 0, engine::kMaxLodLevels, "%s is not in 0..16",
        "LOD pyramid levels kept, 1..16, built in the background as chunks change (0: none)",
        [](Config c, Value v) { c.lod_levels = static_cast<int>(v.number); }),
    Count("change-window", "100000", 1, kNoMax, "must be at least 1",
          "committed writes kept in memory for subscribers to resume from (at least 1)",
          [](Config c, Value v) { c.db.changes.max_records = v.count; }),
    Size("change-window-bytes", "64MiB", 1, kNoMax, "'%s' is not a size",
         "memory those writes may hold at most; the oldest go first",
         [](Config c, Value v) { c.db.changes.max_bytes = v.count; }),
    Int("max-subscriptions", "16", 1, kNoMax, "must be at least 1",
        "subscriptions one connection may hold",
        [](Config c, Value v) {
          c.server.subscriptions.max_per_connection = static_cast<size_t>(v.number);
        }),
    Size("push-window", "8MiB", 4 * KiB, kNoMax, "'%s' is not a size of at least 4KiB",
         "pushed bytes buffered per connection; past it a subscriber waits for the client to "
         "read",
         [](Config c, Value v) { c.server.subscriptions.push_window_bytes = v.count; }),
};

po::options_description Description() {
  po::options_description desc("voxdbd options (also accepted in the config file as name = value)");
  auto add = desc.add_options();
  for (const ConfigOption& o : kOptions) {
    const char* d = o.default_value;
    switch (o.kind) {
      case OptionKind::kFlag:
        add(o.name, o.help);
        break;
      // Typed, so that program_options refuses what is not a number, as
      // "the argument ('x') for option '--threads' is invalid".
      case OptionKind::kInt: {
        auto* value = po::value<int>();
        if (d != nullptr) value->default_value(std::stoi(d), d);
        add(o.name, value, o.help);
        break;
      }
      case OptionKind::kCount: {
        auto* value = po::value<uint64_t>();
        if (d != nullptr) value->default_value(std::stoull(d), d);
        add(o.name, value, o.help);
        break;
      }
      case OptionKind::kTokens:
        add(o.name, po::value<std::vector<std::string>>()->composing(), o.help);
        break;
      default: {
        auto* value = po::value<std::string>();
        if (d != nullptr) value->default_value(d);
        add(o.name, value, o.help);
        break;
      }
    }
  }
  return desc;
}

// "invalid value for --NAME: " and the row's error, "%s" replaced by `shown`.
absl::Status Invalid(const ConfigOption& o, const std::string& why) {
  return absl::InvalidArgumentError(std::string("invalid value for --") + o.name + ": " + why);
}
absl::Status Invalid(const ConfigOption& o, const ConfigValue& v) {
  std::string why = o.error;
  const std::string shown = o.kind == OptionKind::kInt ? std::to_string(v.number) : v.text;
  if (const size_t at = why.find("%s"); at != std::string::npos) why.replace(at, 2, shown);
  return Invalid(o, why);
}

bool InBounds(const ConfigOption& o, uint64_t n) {
  return n >= static_cast<uint64_t>(o.min) &&
         (o.max == kNoMax || n <= static_cast<uint64_t>(o.max));
}

bool IsChoice(const ConfigOption& o, const std::string& text) {
  std::string_view rest = o.choices;
  for (;;) {
    const size_t bar = rest.find('|');
    if (rest.substr(0, bar) == text) return true;
    if (bar == std::string_view::npos) return false;
    rest.remove_prefix(bar + 1);
  }
}

// Reads, checks and stores one option that has a value in `vm`.
absl::Status Apply(const ConfigOption& o, const po::variable_value& in, DaemonConfig* config) {
  ConfigValue v;
  switch (o.kind) {
    case OptionKind::kFlag:
      return absl::OkStatus();
    case OptionKind::kString:
      v.text = in.as<std::string>();
      break;
    case OptionKind::kTokens: {
      std::string why;
      if (!ParseTokens(in.as<std::vector<std::string>>(), &config->server.tokens, &why)) {
        return Invalid(o, why);
      }
      return absl::OkStatus();
    }
    case OptionKind::kInt:
      v.number = in.as<int>();
      if (v.number < o.min || v.number > o.max) return Invalid(o, v);
      break;
    case OptionKind::kCount:
      v.count = in.as<uint64_t>();
      if (!InBounds(o, v.count)) return Invalid(o, v);
      break;
    case OptionKind::kSize:
      v.text = in.as<std::string>();
      if (!ParseSize(v.text, &v.count) || !InBounds(o, v.count)) return Invalid(o, v);
      break;
    case OptionKind::kDuration:
      v.text = in.as<std::string>();
      if (!ParseDuration(v.text, &v.duration) ||
          !InBounds(o, static_cast<uint64_t>(v.duration.count()))) {
        return Invalid(o, v);
      }
      break;
    case OptionKind::kEnum:
      v.text = in.as<std::string>();
      if (!IsChoice(o, v.text)) return Invalid(o, v);
      break;
    case OptionKind::kHostPortOrOff:
      v.text = in.as<std::string>();
      if (v.text == "off") break;  // v.host empty: off
      if (!ParseHostPort(v.text, &v.host, &v.port)) return Invalid(o, v);
      break;
    case OptionKind::kHostPort:
      v.text = in.as<std::string>();
      if (!ParseHostPort(v.text, &v.host, &v.port)) return Invalid(o, v);
      break;
  }
  if (o.check != nullptr && !o.check(*config, v)) return Invalid(o, v);
  if (o.set != nullptr) o.set(*config, v);
  return absl::OkStatus();
}

}  // namespace

std::span<const ConfigOption> ConfigOptions() { return kOptions; }

const ConfigOption* FindConfigOption(std::string_view name) {
  for (const ConfigOption& o : kOptions) {
    if (name == o.name) return &o;
  }
  return nullptr;
}

absl::StatusOr<ConfigAction> ParseDaemonConfig(int argc, const char* const* argv,
                                               DaemonConfig* config) {
  const po::options_description desc = Description();
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("config")) {
      const std::string& path = vm["config"].as<std::string>();
      std::ifstream in(path);
      if (!in) return absl::InvalidArgumentError("cannot read config file " + path);
      po::store(po::parse_config_file(in, desc), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return absl::InvalidArgumentError(std::string(e.what()) + " (see voxdbd --help)");
  }
  if (vm.count("help")) return ConfigAction::kHelp;
  if (vm.count("version")) return ConfigAction::kVersion;
  for (const ConfigOption& o : kOptions) {
    if (!vm.count(o.name)) continue;  // no default, not given
    if (absl::Status s = Apply(o, vm[o.name], config); !s.ok()) return s;
  }
  if (config->server.tokens.empty() && RequiresTokens(config->server.listen_address)) {
    return Invalid(*FindConfigOption("listen"),
                   config->server.listen_address +
                       " is beyond loopback: configure at least one --token ROLE:SECRET");
  }
  return ConfigAction::kRun;
}

std::string ConfigHelp() {
  std::ostringstream out;
  out << Description();
  return out.str();
}

void ReloadConfig(const DaemonConfig& config, engine::Node& node) {
  if (config.config_file.empty()) {
    Log(LogLevel::kWarn, "SIGHUP: no --config file to re-read");
    return;
  }
  po::variables_map fresh;
  try {
    std::ifstream in(config.config_file);
    if (!in) throw std::runtime_error("cannot read " + config.config_file);
    po::store(po::parse_config_file(in, Description()), fresh);
  } catch (const std::exception& e) {
    Log(LogLevel::kError, "SIGHUP: %s; log level unchanged", e.what());
    Log(LogLevel::kError, "SIGHUP: %s; max-map-size unchanged", e.what());
    return;
  }
  // The log level: the file's, or the default when the file names none
  // (program_options stores the default as a value).
  if (fresh.count("log-level")) {
    const std::string name = fresh["log-level"].as<std::string>();
    if (auto level = ParseLogLevel(name)) {
      SetLogLevel(*level);
      Log(LogLevel::kWarn, "SIGHUP: log level is now %s", name);
    } else {
      Log(LogLevel::kError, "SIGHUP: '%s' is not a log level; unchanged", name);
    }
  }
  // max-map-size, only if the file names it.
  if (!fresh.count("max-map-size") || fresh["max-map-size"].defaulted()) return;
  const std::string text = fresh["max-map-size"].as<std::string>();
  uint64_t n = 0;
  if (!ParseSize(text, &n)) {
    Log(LogLevel::kError, "SIGHUP: max-map-size '%s' is not a size; unchanged", text);
    return;
  }
  // Each partition's map, capped to its share of the node's address-space
  // budget (engine/node.h, MaxMapSizePerPartition).
  bool changed = false;
  const size_t each = node.MaxMapSizePerPartition(n);
  for (const engine::Node::Part& part : node.layout()->parts) {
    engine::ChunkStore& store = part.db->store();
    if (each == store.max_map_size()) continue;
    if (absl::Status s = store.SetMaxMapSize(each); !s.ok()) {
      Log(LogLevel::kError, "SIGHUP: max-map-size of %s unchanged: %s", part.spec.dir, s.message());
      continue;
    }
    changed = true;
  }
  if (changed) Log(LogLevel::kWarn, "SIGHUP: max-map-size is now %s", text);
}

bool ParseSize(const std::string& s, uint64_t* out) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 19) return false;
  uint64_t n = std::stoull(s.substr(0, i));
  const std::string unit = s.substr(i);
  uint64_t mul = 1;
  if (unit.empty() || unit == "B")
    mul = 1;
  else if (unit == "k" || unit == "KB")
    mul = 1000;
  else if (unit == "KiB")
    mul = uint64_t{1} << 10;
  else if (unit == "MB")
    mul = 1000 * 1000;
  else if (unit == "MiB")
    mul = uint64_t{1} << 20;
  else if (unit == "GB")
    mul = 1000ull * 1000 * 1000;
  else if (unit == "GiB")
    mul = uint64_t{1} << 30;
  else if (unit == "TiB")
    mul = uint64_t{1} << 40;
  else
    return false;
  if (n > UINT64_MAX / mul) return false;
  *out = n * mul;
  return true;
}

bool ParseDuration(const std::string& s, std::chrono::milliseconds* out) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 9) return false;
  const int64_t n = std::stoll(s.substr(0, i));
  const std::string unit = s.substr(i);
  int64_t ms;
  if (unit == "ms")
    ms = n;
  else if (unit == "s" || (unit.empty() && n == 0))
    ms = n * 1000;
  else if (unit == "m" || unit == "min")
    ms = n * 60'000;
  else if (unit == "h")
    ms = n * 3'600'000;
  else
    return false;
  *out = std::chrono::milliseconds(ms);
  return true;
}

bool ParseHostPort(const std::string& s, std::string* host, uint16_t* port) {
  size_t colon;
  std::string h;
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find(']');
    if (close == std::string::npos || close == 1 || close + 1 >= s.size() || s[close + 1] != ':') {
      return false;
    }
    h = s.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    h = s.substr(0, colon);
    if (h.find(':') != std::string::npos) return false;  // IPv6 without brackets
  }
  if (colon + 1 == s.size() || s.size() - colon > 6) return false;
  uint32_t p = 0;
  for (size_t i = colon + 1; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    p = p * 10 + static_cast<uint32_t>(s[i] - '0');
  }
  if (p > 65535) return false;
  *host = h;
  *port = static_cast<uint16_t>(p);
  return true;
}

std::string HostPort(const std::string& host, uint16_t port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

bool ParseTokens(const std::vector<std::string>& texts, std::vector<Token>* tokens,
                 std::string* why) {
  for (const std::string& t : texts) {
    const size_t c = t.find(':');
    const std::string role = t.substr(0, c == std::string::npos ? 0 : c);
    Token token;
    if (role == "read") {
      token.role = protocol::Role::kRead;
    } else if (role == "write") {
      token.role = protocol::Role::kWrite;
    } else if (role == "admin") {
      token.role = protocol::Role::kAdmin;
    } else {
      *why = "expected ROLE:SECRET with ROLE read, write or admin";
      return false;
    }
    token.secret = t.substr(c + 1);
    if (token.secret.size() < 16) {
      *why = "a " + role + " token's secret has fewer than 16 characters";
      return false;
    }
    for (const Token& other : *tokens) {
      if (other.secret == token.secret) {
        *why = "one secret is configured twice (" + std::string(protocol::RoleName(other.role)) +
               " and " + role + "): give each token its own secret";
        return false;
      }
    }
    tokens->push_back(std::move(token));
  }
  return true;
}

}  // namespace voxdb::daemon
