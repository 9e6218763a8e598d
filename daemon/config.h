// voxdbd's options: one table (daemon/config.cc, ConfigOptions() here) with
// a row per option (its name, kind, bounds, default, help and the
// DaemonConfig field it sets), in the manner of redis's static_configs[].
// The program_options description, --help, the config file's parsing and
// the validation (bounds, and an error naming the option) all come from it,
// so an option is added by adding a row. conf/voxdb.conf documents the same
// options with the same defaults (tests/daemon/config_test.cc checks it).
//
// Example (daemon/main.cc):
//   DaemonConfig config;
//   absl::StatusOr<ConfigAction> action = ParseDaemonConfig(argc, argv, &config);
//   if (!action.ok()) { print "voxdbd: " + message; exit 2; }
//   if (*action == ConfigAction::kHelp) std::cout << ConfigHelp() << "\n";
//   ...
//   on SIGHUP: ReloadConfig(config, *node);
//
// Thread-safety: the functions keep no state; a DaemonConfig is a value,
// used by one thread at a time.
#ifndef VOXDB_DAEMON_CONFIG_H_
#define VOXDB_DAEMON_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "engine/chunk_store.h"
#include "engine/database.h"
#include "engine/lod.h"
#include "engine/node.h"

namespace voxdb::daemon {

// Everything voxdbd's options decide. The defaults here are the table's
// defaults (config_test checks that they agree).
struct DaemonConfig {
  std::string config_file;  // --config; empty: none (SIGHUP has nothing to re-read)
  std::string data = "voxdb-data";
  engine::DatabaseOptions db;
  ServerOptions server;
  // Prometheus metrics; an empty address: off.
  std::string metrics_address = "127.0.0.1";
  uint16_t metrics_port = 9464;
  LogLevel log_level = LogLevel::kInfo;
  int lod_levels = engine::kDefaultLodLevels;  // 0: no LOD pyramid
};

// How an option's value is written and parsed.
enum class OptionKind {
  kFlag,           // no value (--help, --version)
  kString,         // any text
  kTokens,         // ROLE:SECRET, repeatable (ParseTokens)
  kInt,            // an int, in [min, max]
  kCount,          // a uint64_t, in [min, max]
  kSize,           // bytes, with a unit (ParseSize), in [min, max]
  kDuration,       // a duration (ParseDuration), in [min, max] milliseconds
  kEnum,           // one of `choices`
  kHostPort,       // HOST:PORT (ParseHostPort)
  kHostPortOrOff,  // HOST:PORT or "off"
};

// An option's value, parsed as its kind says.
struct ConfigValue {
  std::string text;                       // as written
  int64_t number = 0;                     // kInt
  uint64_t count = 0;                     // kCount; kSize: bytes
  std::chrono::milliseconds duration{0};  // kDuration
  std::string host;                       // kHostPort(OrOff); empty: off
  uint16_t port = 0;
};

inline constexpr int64_t kNoMax = std::numeric_limits<int64_t>::max();

// One option.
struct ConfigOption {
  const char* name;
  OptionKind kind;
  // As --help and conf/voxdb.conf show it (and parsed like any value);
  // nullptr: none.
  const char* default_value;
  // kInt, kCount, kSize (bytes) and kDuration (milliseconds): the value is
  // refused outside [min, max].
  int64_t min, max;
  // kEnum: the names accepted, separated by '|'.
  const char* choices;
  // The reason a value is refused, after "invalid value for --NAME: ";
  // "%s" stands for the value (for kInt, the number it was read as).
  const char* error;
  const char* help;
  // Stores a valid value into the config (nullptr: the option is acted on
  // elsewhere, e.g. --help).
  void (*set)(DaemonConfig& config, const ConfigValue& value);
  // A bound that depends on an option before it in the table; false refuses
  // the value with `error`. nullptr: none.
  bool (*check)(const DaemonConfig& config, const ConfigValue& value);
};

// Every option, in --help's order; values are checked in this order, so
// the first invalid one is reported.
std::span<const ConfigOption> ConfigOptions();
// The row named `name`, or nullptr.
const ConfigOption* FindConfigOption(std::string_view name);

enum class ConfigAction { kRun, kHelp, kVersion };

// Reads the command line and then the --config file, if any (the command
// line wins), into *config. An error (an unknown option, a value of the
// wrong form or out of bounds, an unreadable config file) is an
// InvalidArgument whose message names the option, to be printed after
// "voxdbd: ". --help and --version are reported before values are checked.
absl::StatusOr<ConfigAction> ParseDaemonConfig(int argc, const char* const* argv,
                                               DaemonConfig* config);

// The text of voxdbd --help (without the final newline).
std::string ConfigHelp();

// SIGHUP: re-reads config.config_file for the options that change while the
// daemon runs: the log level (the file's, or the default if it names none)
// and max-map-size (if the file names one: each partition's map may grow
// to it from now on, so a database whose map was full takes writes again).
// Problems are logged, and leave the setting as it was.
void ReloadConfig(const DaemonConfig& config, engine::Node& node);

// "64GiB", "512MiB", "1000", "10k": bytes. Returns false on anything else
// (no number, more than 19 digits, an unknown unit, or more than 2^64-1).
bool ParseSize(const std::string& s, uint64_t* out);

// "300s", "5m", "250ms", "1h", "0": a duration. Returns false on anything
// else (a number needs a unit unless it is 0; at most 9 digits).
bool ParseDuration(const std::string& s, std::chrono::milliseconds* out);

// "HOST:PORT" with a non-empty host and a port of 0..65535 in digits only;
// an IPv6 host goes in brackets, "[::1]:7390", and *host gets it without
// them.
bool ParseHostPort(const std::string& s, std::string* host, uint16_t* port);

// HOST:PORT as it is written, IPv6 in brackets (the inverse of ParseHostPort).
std::string HostPort(const std::string& host, uint16_t port);

// --token values, "ROLE:SECRET" each, into *tokens. On a bad one returns
// false with *why the reason (a role other than read, write or admin, a
// secret under 16 characters, a secret given twice).
bool ParseTokens(const std::vector<std::string>& texts, std::vector<Token>* tokens,
                 std::string* why);

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_CONFIG_H_
