#include "protocol/stats.h"

#include "absl/strings/str_format.h"

namespace voxdb::protocol {

const StatInfo* FindStat(std::string_view name) {
  for (const StatInfo& s : kStats) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

StatusOr<std::vector<std::pair<std::string, std::string>>> ParseStatsText(std::string_view text) {
  std::vector<std::pair<std::string, std::string>> out;
  for (int line_no = 1; !text.empty(); ++line_no) {
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == 0 || space == std::string_view::npos || space + 1 == line.size()) {
      return absl::InvalidArgumentError(absl::StrFormat("STATS line %d is not \"name value\": '%s'",
                                                        line_no, std::string(line.substr(0, 80))));
    }
    out.emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
  }
  return out;
}

}  // namespace voxdb::protocol
