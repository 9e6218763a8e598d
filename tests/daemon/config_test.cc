// voxdbd's option table (daemon/config.h): the parsers of sizes, durations,
// HOST:PORT and tokens, the table's bounds and error messages, the config
// file, and that conf/voxdb.conf documents every option with the table's
// default.
#include "daemon/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "engine/chunk_store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace voxdb::daemon {
namespace {

using ::testing::HasSubstr;
using ::voxdb::testing::TempDir;

// ParseDaemonConfig over "voxdbd" and `args`.
absl::StatusOr<ConfigAction> Parse(const std::vector<std::string>& args, DaemonConfig* config) {
  std::vector<const char*> argv = {"voxdbd"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseDaemonConfig(static_cast<int>(argv.size()), argv.data(), config);
}

// The error of a command line that must be refused ("" if it is not).
std::string ErrorOf(const std::vector<std::string>& args) {
  DaemonConfig config;
  absl::StatusOr<ConfigAction> action = Parse(args, &config);
  if (action.ok()) return "";
  EXPECT_EQ(action.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(action.status().message());
}

TEST(ParseSizeTest, NumbersWithAndWithoutUnits) {
  const std::pair<const char*, uint64_t> cases[] = {
      {"0", 0},
      {"1000", 1000},
      {"7B", 7},
      {"10k", 10'000},
      {"10KB", 10'000},
      {"4KiB", 4096},
      {"3MB", 3'000'000},
      {"512MiB", uint64_t{512} << 20},
      {"2GB", 2'000'000'000},
      {"64GiB", uint64_t{64} << 30},
      {"1TiB", uint64_t{1} << 40},
      {"9999999999999999999", 9999999999999999999u},
      {"16777215TiB", uint64_t{16777215} << 40},
  };
  for (const auto& [text, bytes] : cases) {
    uint64_t n = 12345;
    EXPECT_TRUE(ParseSize(text, &n)) << text;
    EXPECT_EQ(n, bytes) << text;
  }
}

TEST(ParseSizeTest, RefusesWhatIsNotASize) {
  for (const char* text :
       {"", "k", "GiB", "12XB", "1.5GiB", "-1", " 1", "1 GiB", "1gib", "1KIB", "1PiB", "1TB",
        "99999999999999999999", "16777216TiB", "18446744073709551615TiB"}) {
    uint64_t n = 12345;
    EXPECT_FALSE(ParseSize(text, &n)) << text;
    EXPECT_EQ(n, 12345u) << text << ": *out is left alone";
  }
}

TEST(ParseDurationTest, NumbersWithUnits) {
  using std::chrono::milliseconds;
  const std::pair<const char*, milliseconds> cases[] = {
      {"0", milliseconds(0)},          {"0ms", milliseconds(0)},
      {"250ms", milliseconds(250)},    {"300s", milliseconds(300'000)},
      {"5m", milliseconds(300'000)},   {"5min", milliseconds(300'000)},
      {"1h", milliseconds(3'600'000)}, {"999999999h", milliseconds(int64_t{999999999} * 3'600'000)},
  };
  for (const auto& [text, expected] : cases) {
    milliseconds d(-1);
    EXPECT_TRUE(ParseDuration(text, &d)) << text;
    EXPECT_EQ(d, expected) << text;
  }
}

TEST(ParseDurationTest, RefusesWhatIsNotADuration) {
  // A number other than 0 needs its unit.
  for (const char* text : {"", "5", "s", "5x", "1d", "-1s", "1.5s", "5 s", "5S", "1000000000ms"}) {
    std::chrono::milliseconds d(-1);
    EXPECT_FALSE(ParseDuration(text, &d)) << text;
    EXPECT_EQ(d.count(), -1) << text;
  }
}

TEST(ParseHostPortTest, HostsIncludingIpv6InBrackets) {
  struct Case {
    const char* text;
    const char* host;
    uint16_t port;
  };
  for (const Case& c :
       {Case{"127.0.0.1:7390", "127.0.0.1", 7390}, Case{"localhost:0", "localhost", 0},
        Case{"0.0.0.0:65535", "0.0.0.0", 65535}, Case{"[::1]:7390", "::1", 7390},
        Case{"[2001:db8::1]:9464", "2001:db8::1", 9464},
        Case{"example.com:00080", "example.com", 80}}) {
    std::string host;
    uint16_t port = 1;
    EXPECT_TRUE(ParseHostPort(c.text, &host, &port)) << c.text;
    EXPECT_EQ(host, c.host) << c.text;
    EXPECT_EQ(port, c.port) << c.text;
    // HostPort writes it back (with the brackets, but without leading zeros).
    if (std::string(c.text) != "example.com:00080") {
      EXPECT_EQ(HostPort(host, port), c.text);
    }
  }
}

TEST(ParseHostPortTest, RefusesWhatIsNotHostPort) {
  for (const char* text : {"", "nowhere", ":1", "127.0.0.1", "127.0.0.1:", "127.0.0.1:80x",
                           "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+80", "h:1234567",
                           "::1:7390", "[::1]", "[::1]7390", "[]:1", "[::1:7390", "[::1]:"}) {
    std::string host = "unchanged";
    uint16_t port = 1;
    EXPECT_FALSE(ParseHostPort(text, &host, &port)) << text;
    EXPECT_EQ(host, "unchanged") << text;
  }
}

TEST(ParseTokensTest, RolesSecretsAndDuplicates) {
  std::vector<Token> tokens;
  std::string why;
  ASSERT_TRUE(ParseTokens(
      {"read:0123456789abcdef", "write:0123456789abcdeg", "admin:with:colons:0123456789"}, &tokens,
      &why))
      << why;
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[0].role, protocol::Role::kRead);
  EXPECT_EQ(tokens[1].role, protocol::Role::kWrite);
  EXPECT_EQ(tokens[2].role, protocol::Role::kAdmin);
  EXPECT_EQ(tokens[2].secret, "with:colons:0123456789");

  const std::pair<std::vector<std::string>, std::string> bad[] = {
      {{"0123456789abcdef"}, "expected ROLE:SECRET with ROLE read, write or admin"},
      {{"root:0123456789abcdef"}, "expected ROLE:SECRET with ROLE read, write or admin"},
      {{"read:short"}, "a read token's secret has fewer than 16 characters"},
      {{"read:0123456789abcdef", "admin:0123456789abcdef"},
       "one secret is configured twice (read and admin): give each token its own secret"},
  };
  for (const auto& [texts, reason] : bad) {
    tokens.clear();
    why.clear();
    EXPECT_FALSE(ParseTokens(texts, &tokens, &why)) << texts[0];
    EXPECT_EQ(why, reason);
  }
}

TEST(ConfigTableTest, NamesAreUniqueAndEveryOptionIsDocumented) {
  std::set<std::string> names;
  for (const ConfigOption& o : ConfigOptions()) {
    EXPECT_TRUE(names.insert(o.name).second) << o.name << " twice";
    EXPECT_NE(std::string(o.help), "") << o.name;
    EXPECT_EQ(FindConfigOption(o.name), &o);
    EXPECT_LE(o.min, o.max) << o.name;
    if (o.kind != OptionKind::kFlag && o.kind != OptionKind::kString &&
        o.kind != OptionKind::kTokens) {
      EXPECT_NE(o.error, nullptr) << o.name << " can be refused, so it says why";
    }
    if (o.kind == OptionKind::kEnum) {
      EXPECT_NE(o.choices, nullptr) << o.name;
    }
    if (o.kind != OptionKind::kFlag && o.kind != OptionKind::kTokens) {
      EXPECT_NE(o.set, nullptr) << o.name;
    }
  }
  EXPECT_EQ(FindConfigOption("no-such-option"), nullptr);
  // --help shows every option, with its default.
  const std::string help = ConfigHelp();
  EXPECT_EQ(help.rfind("voxdbd options (also accepted in the config file as name = value):\n", 0),
            0u)
      << help;
  for (const ConfigOption& o : ConfigOptions()) {
    std::string shown = std::string("--") + o.name;
    if (o.kind != OptionKind::kFlag) shown += " arg";
    if (o.default_value != nullptr) shown += std::string(" (=") + o.default_value + ")";
    EXPECT_THAT(help, HasSubstr(shown));
  }
}

// The table's defaults are DaemonConfig's, which are the engine's and the
// server's own.
TEST(ConfigTableTest, DefaultsAreTheStructsDefaults) {
  DaemonConfig parsed;
  // Every field set, so that each default visibly lands in its field.
  parsed.data = "x";
  parsed.db.durability = engine::Durability::kAsync;
  parsed.db.commit_interval = std::chrono::milliseconds(77);
  parsed.db.cache_bytes = parsed.db.dirty_bytes = parsed.db.store.max_map_size = 77;
  parsed.db.changes.max_records = parsed.db.changes.max_bytes = 77;
  parsed.server.listen_address = parsed.metrics_address = "x";
  parsed.server.listen_port = parsed.metrics_port = 77;
  parsed.server.io_threads = parsed.server.max_connections = 77;
  parsed.server.max_frame_payload = 77;
  parsed.server.max_buffered_bytes = parsed.server.max_request_buffer_bytes = 77;
  parsed.server.idle_timeout = parsed.server.send_timeout = parsed.server.shutdown_timeout =
      parsed.server.slow_request = std::chrono::milliseconds(77);
  parsed.server.subscriptions.max_per_connection = 77;
  parsed.server.subscriptions.push_window_bytes = 77;
  parsed.log_level = LogLevel::kError;
  parsed.lod_levels = 77;
  ASSERT_EQ(*Parse({}, &parsed), ConfigAction::kRun);

  const DaemonConfig defaults;
  EXPECT_EQ(parsed.config_file, "");
  EXPECT_EQ(parsed.data, defaults.data);
  EXPECT_EQ(parsed.db.durability, defaults.db.durability);
  EXPECT_EQ(parsed.db.commit_interval, defaults.db.commit_interval);
  EXPECT_EQ(parsed.db.cache_bytes, defaults.db.cache_bytes);
  EXPECT_EQ(parsed.db.dirty_bytes, defaults.db.dirty_bytes);
  EXPECT_EQ(parsed.db.store.max_map_size, defaults.db.store.max_map_size);
  EXPECT_EQ(parsed.db.changes.max_records, defaults.db.changes.max_records);
  EXPECT_EQ(parsed.db.changes.max_bytes, defaults.db.changes.max_bytes);
  EXPECT_EQ(parsed.server.listen_address, defaults.server.listen_address);
  EXPECT_EQ(parsed.server.listen_port, defaults.server.listen_port);
  EXPECT_EQ(parsed.metrics_address, defaults.metrics_address);
  EXPECT_EQ(parsed.metrics_port, defaults.metrics_port);
  EXPECT_EQ(parsed.server.io_threads, defaults.server.io_threads);
  EXPECT_EQ(parsed.server.max_connections, defaults.server.max_connections);
  EXPECT_EQ(parsed.server.max_frame_payload, defaults.server.max_frame_payload);
  EXPECT_EQ(parsed.server.max_buffered_bytes, defaults.server.max_buffered_bytes);
  EXPECT_EQ(parsed.server.max_request_buffer_bytes, defaults.server.max_request_buffer_bytes);
  EXPECT_EQ(parsed.server.idle_timeout, defaults.server.idle_timeout);
  EXPECT_EQ(parsed.server.send_timeout, defaults.server.send_timeout);
  EXPECT_EQ(parsed.server.shutdown_timeout, defaults.server.shutdown_timeout);
  EXPECT_EQ(parsed.server.slow_request, defaults.server.slow_request);
  EXPECT_TRUE(parsed.server.tokens.empty());
  EXPECT_EQ(parsed.server.subscriptions.max_per_connection,
            defaults.server.subscriptions.max_per_connection);
  EXPECT_EQ(parsed.server.subscriptions.push_window_bytes,
            defaults.server.subscriptions.push_window_bytes);
  EXPECT_EQ(parsed.log_level, defaults.log_level);
  EXPECT_EQ(parsed.lod_levels, defaults.lod_levels);
  EXPECT_EQ(defaults.lod_levels, engine::kDefaultLodLevels);

  // max-map-size may not be below the map's first size.
  EXPECT_EQ(static_cast<uint64_t>(FindConfigOption("max-map-size")->min),
            engine::StoreOptions().initial_map_size);
  EXPECT_EQ(FindConfigOption("lod-levels")->max, engine::kMaxLodLevels);
}

TEST(ConfigTableTest, EachOptionLandsInItsField) {
  DaemonConfig c;
  ASSERT_EQ(*Parse({"--config=/dev/null",
                    "--data=/srv/voxdb",
                    "--listen=[::1]:7000",
                    "--metrics-listen=off",
                    "--threads=3",
                    "--durability=async",
                    "--commit-interval=20ms",
                    "--cache-bytes=2GiB",
                    "--dirty-bytes=1GiB",
                    "--max-map-size=2TiB",
                    "--token=admin:0123456789abcdef",
                    "--max-connections=5",
                    "--max-frame-bytes=1MiB",
                    "--max-buffered-bytes=2MiB",
                    "--max-request-buffer-bytes=3MiB",
                    "--idle-timeout=1h",
                    "--send-timeout=2s",
                    "--shutdown-timeout=3s",
                    "--log-level=warn",
                    "--slow-request=0",
                    "--lod-levels=0",
                    "--change-window=7",
                    "--change-window-bytes=8MiB",
                    "--max-subscriptions=9",
                    "--push-window=4KiB"},
                   &c),
            ConfigAction::kRun);
  EXPECT_EQ(c.config_file, "/dev/null");
  EXPECT_EQ(c.data, "/srv/voxdb");
  EXPECT_EQ(c.server.listen_address, "::1");
  EXPECT_EQ(c.server.listen_port, 7000);
  EXPECT_EQ(c.metrics_address, "");
  EXPECT_EQ(c.server.io_threads, 3);
  EXPECT_EQ(c.db.durability, engine::Durability::kAsync);
  EXPECT_EQ(c.db.commit_interval, std::chrono::milliseconds(20));
  EXPECT_EQ(c.db.cache_bytes, size_t{2} << 30);
  EXPECT_EQ(c.db.dirty_bytes, size_t{1} << 30);
  EXPECT_EQ(c.db.store.max_map_size, size_t{2} << 40);
  ASSERT_EQ(c.server.tokens.size(), 1u);
  EXPECT_EQ(c.server.tokens[0].role, protocol::Role::kAdmin);
  EXPECT_EQ(c.server.max_connections, 5);
  EXPECT_EQ(c.server.max_frame_payload, 1u << 20);
  EXPECT_EQ(c.server.max_buffered_bytes, 2u << 20);
  EXPECT_EQ(c.server.max_request_buffer_bytes, 3u << 20);
  EXPECT_EQ(c.server.idle_timeout, std::chrono::hours(1));
  EXPECT_EQ(c.server.send_timeout, std::chrono::seconds(2));
  EXPECT_EQ(c.server.shutdown_timeout, std::chrono::seconds(3));
  EXPECT_EQ(c.log_level, LogLevel::kWarn);
  EXPECT_EQ(c.server.slow_request, std::chrono::milliseconds(0));
  EXPECT_EQ(c.lod_levels, 0);
  EXPECT_EQ(c.db.changes.max_records, 7u);
  EXPECT_EQ(c.db.changes.max_bytes, 8u << 20);
  EXPECT_EQ(c.server.subscriptions.max_per_connection, 9u);
  EXPECT_EQ(c.server.subscriptions.push_window_bytes, 4096u);
}

// Every bounded option takes its bounds and refuses one past them, with an
// error that names it.
TEST(ConfigTableTest, BoundsAreEnforcedWithTheOptionNamed) {
  int bounded = 0;
  for (const ConfigOption& o : ConfigOptions()) {
    std::string unit;
    if (o.kind == OptionKind::kDuration) {
      unit = "ms";
    } else if (o.kind != OptionKind::kSize && o.kind != OptionKind::kInt &&
               o.kind != OptionKind::kCount) {
      continue;
    }
    const std::string flag = std::string("--") + o.name + "=";
    auto value = [&](int64_t n) { return flag + std::to_string(n) + unit; };
    // dirty-bytes is also bounded by cache-bytes: room for both.
    const std::string other =
        std::string(o.name) == "cache-bytes" ? "--dirty-bytes=1" : "--cache-bytes=1TiB";
    EXPECT_EQ(ErrorOf({value(o.min), other}), "") << value(o.min);
    if (o.min > 0 || o.kind == OptionKind::kInt) {
      ++bounded;
      EXPECT_THAT(ErrorOf({value(o.min - 1), other}),
                  HasSubstr(std::string("invalid value for --") + o.name + ": "))
          << value(o.min - 1);
    }
    if (o.max != kNoMax) {
      ++bounded;
      EXPECT_EQ(ErrorOf({value(o.max), other}), "") << value(o.max);
      EXPECT_THAT(ErrorOf({value(o.max + 1), other}),
                  HasSubstr(std::string("invalid value for --") + o.name + ": "))
          << value(o.max + 1);
    }
  }
  EXPECT_GE(bounded, 14);
}

TEST(ConfigTableTest, ErrorMessages) {
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--durability=maybe"}, "invalid value for --durability: 'maybe' is not sync or async"},
      {{"--commit-interval=61s"},
       "invalid value for --commit-interval: '61s' is not a duration in 1ms..60s"},
      {{"--cache-bytes=12XB"}, "invalid value for --cache-bytes: '12XB' is not a size"},
      {{"--cache-bytes=1GiB", "--dirty-bytes=2GiB"},
       "invalid value for --dirty-bytes: '2GiB' is not a size up to --cache-bytes"},
      {{"--max-map-size=63MiB"},
       "invalid value for --max-map-size: '63MiB' is not a size of at least 64MiB"},
      {{"--threads=1025"}, "invalid value for --threads: must be in 0..1024"},
      {{"--threads=abc"},
       "the argument ('abc') for option '--threads' is invalid (see voxdbd --help)"},
      {{"--listen=::1:7390"},
       "invalid value for --listen: '::1:7390' is not HOST:PORT (port 0..65535; IPv6 as "
       "[ADDRESS]:PORT)"},
      {{"--metrics-listen=offf"},
       "invalid value for --metrics-listen: 'offf' is not HOST:PORT (port 0..65535; IPv6 as "
       "[ADDRESS]:PORT) or off"},
      {{"--max-frame-bytes=3GiB"},
       "invalid value for --max-frame-bytes: '3GiB' is not a size in 4KiB..2GiB"},
      {{"--idle-timeout=5"},
       "invalid value for --idle-timeout: '5' is not a duration like 300s or 5m"},
      {{"--log-level=loud"},
       "invalid value for --log-level: 'loud' is not debug, info, warn or error"},
      {{"--lod-levels=+17"}, "invalid value for --lod-levels: 17 is not in 0..16"},
      {{"--change-window=0"}, "invalid value for --change-window: must be at least 1"},
      {{"--token=read:short"},
       "invalid value for --token: a read token's secret has fewer than 16 characters"},
      {{"--listen=10.0.0.1:7390"},
       "invalid value for --listen: 10.0.0.1 is beyond loopback: configure at least one --token "
       "ROLE:SECRET"},
      {{"--bogus"}, "unrecognised option '--bogus' (see voxdbd --help)"},
      {{"--data"}, "the required argument for option '--data' is missing (see voxdbd --help)"},
      {{"--help=1"}, "option '--help' does not take any arguments (see voxdbd --help)"},
      {{"--config=/nonexistent/voxdb.conf"}, "cannot read config file /nonexistent/voxdb.conf"},
  };
  for (const auto& [args, error] : cases) EXPECT_EQ(ErrorOf(args), error) << args[0];
  // Beyond loopback with a token is fine.
  EXPECT_EQ(ErrorOf({"--listen=10.0.0.1:7390", "--token=read:0123456789abcdef"}), "");
}

TEST(ConfigTableTest, HelpAndVersionComeBeforeTheValuesAreChecked) {
  DaemonConfig c;
  EXPECT_EQ(*Parse({"--help", "--durability=maybe"}, &c), ConfigAction::kHelp);
  EXPECT_EQ(*Parse({"--version"}, &c), ConfigAction::kVersion);
  // But not before the command line is read.
  EXPECT_FALSE(Parse({"--version", "--bogus"}, &c).ok());
}

TEST(ConfigFileTest, TheCommandLineWinsAndTokensAddUp) {
  TempDir dir;
  const std::string conf = dir.Sub("voxdb.conf");
  std::ofstream(conf) << "# a comment\n"
                         "cache-bytes = 2GiB\n"
                         "log-level = debug\n"
                         "token = read:0123456789abcdef\n";
  DaemonConfig c;
  ASSERT_EQ(*Parse({"--config", conf, "--cache-bytes=3GiB", "--token=write:fedcba9876543210"}, &c),
            ConfigAction::kRun);
  EXPECT_EQ(c.config_file, conf);
  EXPECT_EQ(c.db.cache_bytes, size_t{3} << 30);
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
  ASSERT_EQ(c.server.tokens.size(), 2u);
  EXPECT_EQ(c.server.tokens[0].role, protocol::Role::kWrite);
  EXPECT_EQ(c.server.tokens[1].role, protocol::Role::kRead);
}

TEST(ConfigFileTest, BadLinesNameTheOption) {
  TempDir dir;
  const std::string conf = dir.Sub("voxdb.conf");
  std::ofstream(conf) << "bogus = 1\n";
  EXPECT_EQ(ErrorOf({"--config", conf}), "unrecognised option 'bogus' (see voxdbd --help)");
  std::ofstream(conf) << "push-window = 1k\n";
  EXPECT_EQ(ErrorOf({"--config", conf}),
            "invalid value for --push-window: '1k' is not a size of at least 4KiB");
  std::ofstream(conf) << "max-connections = many\n";
  EXPECT_EQ(ErrorOf({"--config", conf}),
            "the argument ('many') for option 'max-connections' is invalid (see voxdbd --help)");
}

// conf/voxdb.conf's "# name = value" lines: each names an option of the
// table with its default, every option (but --help, --version and --config)
// has one, and the file with them uncommented is the default configuration.
TEST(ConfigFileTest, ShippedConfigFileHasEveryOptionWithItsDefault) {
  std::ifstream in(VOXDB_CONF_PATH);
  ASSERT_TRUE(in) << VOXDB_CONF_PATH;
  std::set<std::string> documented;
  std::string line, uncommented;
  while (std::getline(in, line)) {
    const size_t eq = line.find(" = ");
    if (line.rfind("# ", 0) == 0 && eq != std::string::npos && line.find(' ', 2) == eq) {
      const std::string name = line.substr(2, eq - 2), value = line.substr(eq + 3);
      documented.insert(name);
      const ConfigOption* o = FindConfigOption(name);
      ASSERT_NE(o, nullptr) << name << " is not an option";
      ASSERT_NE(o->default_value, nullptr) << name;
      EXPECT_EQ(value, o->default_value) << name;
      uncommented += line.substr(2) + "\n";
    } else if (line.rfind("#   token = ", 0) == 0) {
      documented.insert("token");  // an example, not a default
    }
  }
  for (const ConfigOption& o : ConfigOptions()) {
    if (o.kind == OptionKind::kFlag || std::string(o.name) == "config") continue;
    EXPECT_TRUE(documented.count(o.name)) << o.name << " is not in voxdb.conf";
  }
  TempDir dir;
  std::ofstream(dir.Sub("voxdb.conf")) << uncommented;
  DaemonConfig from_file, from_defaults;
  ASSERT_EQ(*Parse({"--config", dir.Sub("voxdb.conf")}, &from_file), ConfigAction::kRun);
  ASSERT_EQ(*Parse({}, &from_defaults), ConfigAction::kRun);
  EXPECT_EQ(from_file.data, from_defaults.data);
  EXPECT_EQ(from_file.db.cache_bytes, from_defaults.db.cache_bytes);
  EXPECT_EQ(from_file.db.store.max_map_size, from_defaults.db.store.max_map_size);
  EXPECT_EQ(from_file.server.idle_timeout, from_defaults.server.idle_timeout);
  EXPECT_EQ(from_file.metrics_port, from_defaults.metrics_port);
}

// SIGHUP's re-read, against a real node of two partitions: each one's map
// takes the new maximum.
TEST(ReloadConfigTest, LogLevelAndMaxMapSize) {
  TempDir dir;
  engine::NodeOptions options;
  options.database.store.sync = false;
  {
    auto node = engine::Node::Open(dir.Sub("data"), options);
    ASSERT_OK(node.status());
    ASSERT_OK((*node)->Split(0, 4096).status());
  }
  auto node = engine::Node::Open(dir.Sub("data"), options);
  ASSERT_OK(node.status());
  ASSERT_EQ((*node)->partition_count(), 2u);
  auto max_map_sizes = [&] {
    std::vector<size_t> sizes;
    for (const auto& p : (*node)->layout()->parts) sizes.push_back(p.db->store().max_map_size());
    return sizes;
  };
  const std::vector<size_t> two_tib{size_t{2} << 40, size_t{2} << 40};
  const LogLevel before = GetLogLevel();
  DaemonConfig c;
  c.config_file = dir.Sub("voxdb.conf");
  std::ofstream(c.config_file) << "log-level = error\nmax-map-size = 2TiB\n";
  ReloadConfig(c, **node);
  EXPECT_EQ(GetLogLevel(), LogLevel::kError);
  EXPECT_EQ(max_map_sizes(), two_tib);
  // A value that is not a size, a file that does not parse: unchanged.
  std::ofstream(c.config_file) << "log-level = error\nmax-map-size = lots\n";
  ReloadConfig(c, **node);
  EXPECT_EQ(max_map_sizes(), two_tib);
  std::ofstream(c.config_file) << "log-level = debug\nbogus = 1\n";
  ReloadConfig(c, **node);
  EXPECT_EQ(GetLogLevel(), LogLevel::kError);
  // A file that names no log level sets the default (program_options
  // stores defaults as values), as voxdbd always has.
  std::ofstream(c.config_file) << "max-map-size = 2TiB\n";
  ReloadConfig(c, **node);
  EXPECT_EQ(GetLogLevel(), LogLevel::kInfo);
  SetLogLevel(LogLevel::kError);
  // No file named, or one that is gone: nothing changes.
  ReloadConfig(DaemonConfig(), **node);
  std::remove(c.config_file.c_str());
  ReloadConfig(c, **node);
  EXPECT_EQ(GetLogLevel(), LogLevel::kError);
  EXPECT_EQ(max_map_sizes(), two_tib);
  SetLogLevel(before);
}

}  // namespace
}  // namespace voxdb::daemon
