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

}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_LOG_H_
