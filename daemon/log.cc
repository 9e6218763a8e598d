#include "daemon/log.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <unordered_set>
#include <vector>

namespace voxdb::daemon {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

// The distinct peer addresses a summary counts, at most.
constexpr size_t kMaxPeers = 1024;

// One kind of rate-limited line.
struct Limited {
  double tokens = kLimitedBurst;
  Clock::time_point refilled = Clock::now();
  uint64_t suppressed = 0;  // lines not written since the last summary
  Clock::time_point first_suppressed;
  LogLevel level = LogLevel::kDebug;  // the highest of those lines
  std::unordered_set<std::string> peers;
};

std::mutex g_limited_mu;
std::map<std::string, Limited, std::less<>> g_limited;  // GUARDED_BY(g_limited_mu)

// Takes `l`'s summary if one is due (a second after its first suppressed
// line, or now with `all`).
bool TakeSummary(std::string_view kind, Limited* l, Clock::time_point now, bool all,
                 std::pair<LogLevel, std::string>* out) {
  if (l->suppressed == 0 || (!all && now - l->first_suppressed < std::chrono::seconds(1))) {
    return false;
  }
  const size_t peers = l->peers.size();
  *out = {l->level,
          absl::StrFormat("%u more %s not logged in the last %.1f s (from %s%u peer address%s)",
                          l->suppressed, kind,
                          std::chrono::duration<double>(now - l->first_suppressed).count(),
                          peers >= kMaxPeers ? "at least " : "", peers, peers == 1 ? "" : "es")};
  l->suppressed = 0;
  l->level = LogLevel::kDebug;
  l->peers.clear();
  return true;
}

}  // namespace

std::optional<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return std::nullopt;
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarn:
      return "WARN";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load()); }

void LogLine(LogLevel level, std::string_view message) {
  const auto now = std::chrono::system_clock::now();
  const time_t seconds = std::chrono::system_clock::to_time_t(now);
  const int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  tm utc;
  gmtime_r(&seconds, &utc);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
  std::string line = absl::StrFormat("%s.%03dZ %s ", stamp, millis, LogLevelName(level));
  // One line per event: newlines inside a message become spaces.
  for (char c : message) line += (c == '\n' || c == '\r') ? ' ' : c;
  line += '\n';
  // One write(2): lines of different threads never interleave.
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

void LogLimitedLine(LogLevel level, std::string_view kind, std::string_view peer,
                    std::string_view message) {
  const Clock::time_point now = Clock::now();
  std::pair<LogLevel, std::string> summary;
  bool has_summary = false, write = false;
  {
    std::lock_guard<std::mutex> lock(g_limited_mu);
    auto it = g_limited.find(kind);
    if (it == g_limited.end()) it = g_limited.emplace(std::string(kind), Limited{}).first;
    Limited& l = it->second;
    l.tokens = std::min<double>(
        kLimitedBurst,
        l.tokens + std::chrono::duration<double>(now - l.refilled).count() * kLimitedPerSecond);
    l.refilled = now;
    has_summary = TakeSummary(kind, &l, now, false, &summary);
    if (l.tokens >= 1) {
      l.tokens -= 1;
      write = true;
    } else {
      if (l.suppressed++ == 0) l.first_suppressed = now;
      l.level = std::max(l.level, level);
      if (l.peers.size() < kMaxPeers) l.peers.emplace(peer);
    }
  }
  if (has_summary && LogEnabled(summary.first)) LogLine(summary.first, summary.second);
  if (write) LogLine(level, message);
}

void FlushLimitedLogs(bool all) {
  const Clock::time_point now = Clock::now();
  std::vector<std::pair<LogLevel, std::string>> summaries;
  {
    std::lock_guard<std::mutex> lock(g_limited_mu);
    for (auto& [kind, l] : g_limited) {
      std::pair<LogLevel, std::string> s;
      if (TakeSummary(kind, &l, now, all, &s)) summaries.push_back(std::move(s));
    }
  }
  for (const auto& [level, line] : summaries) {
    if (LogEnabled(level)) LogLine(level, line);
  }
}

}  // namespace voxdb::daemon
