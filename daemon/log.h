// voxdbd's log: one line per event on stderr,
//
//   2026-11-24T19:30:00.123Z WARN auth: wrong token from 10.0.0.7:51234
//
// with a level that can change while the daemon runs (SIGHUP re-reads it
// from the config file). Lines are written whole (one write per line), so
// threads never interleave within a line.
//
// Thread-safety: every function may be called from any thread.
#ifndef VOXDB_DAEMON_LOG_H_
#define VOXDB_DAEMON_LOG_H_

#include <atomic>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

namespace voxdb::daemon {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// "debug", "info", "warn", "error"; nullopt for anything else.
std::optional<LogLevel> ParseLogLevel(std::string_view name);
const char* LogLevelName(LogLevel level);

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
inline bool LogEnabled(LogLevel level) { return level >= GetLogLevel(); }

// Writes one line (a timestamp, the level, the message) if `level` is on.
void LogLine(LogLevel level, std::string_view message);

template <typename... Args>
void Log(LogLevel level, const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(level)) LogLine(level, absl::StrFormat(format, args...));
}

// Lines a client can cause at will (requests before authenticating, failed
// HELLOs) are rate-limited per `kind` (a plural noun: "unauthenticated
// requests"), over all threads: a token bucket of kLimitedBurst lines refilled
// at kLimitedPerSecond. The lines past it are counted, with their distinct
// `peer` addresses, and one summary line says how many were not written:
//
//   ... WARN 19950 more unauthenticated requests not logged in the last 2.7 s
//            (from 1 peer address)
//
// written (at the summary's level) at most once a second per kind, by the
// next line of that kind or by FlushLimitedLogs() (voxdbd's server calls it
// every second and when it stops). A line whose level is off costs nothing.
inline constexpr int kLimitedBurst = 20;
inline constexpr double kLimitedPerSecond = 5;
void LogLimitedLine(LogLevel level, std::string_view kind, std::string_view peer,
                    std::string_view message);
template <typename... Args>
void LogLimited(LogLevel level, std::string_view kind, std::string_view peer,
                const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(level)) LogLimitedLine(level, kind, peer, absl::StrFormat(format, args...));
}
// Writes the summary of each kind whose lines were suppressed at least a
// second ago (`all`: whenever suppressed, e.g. at shutdown).
void FlushLimitedLogs(bool all = false);

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_LOG_H_
