// protocol/stats.h: the table STATS, /metrics and `voxdb info` come from,
// and the STATS text parser.
#include "protocol/stats.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <string_view>

#include "tests/testing/status_matchers.h"

namespace voxdb::protocol {
namespace {

// Whether s is non-empty and made of [a-z0-9_] only (`digits`: digits too).
bool LowerSnake(std::string_view s, bool digits = true) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || c == '_' || (digits && c >= '0' && c <= '9'))) return false;
  }
  return true;
}

TEST(StatsTableTest, RowsAreWellFormed) {
  const std::set<std::string_view> sections(std::begin(kStatSections), std::end(kStatSections));
  std::set<std::string_view> names;
  std::map<std::string_view, const StatInfo*> family_of;
  std::set<std::pair<std::string_view, std::string_view>> series;
  size_t section_index = 0;
  for (size_t i = 0; i < kStatCount; ++i) {
    const StatInfo& row = kStats[i];
    EXPECT_EQ(static_cast<size_t>(row.id), i) << row.name;
    EXPECT_TRUE(LowerSnake(row.name) && row.name[0] >= 'a' && row.name[0] <= 'z') << row.name;
    EXPECT_TRUE(names.insert(row.name).second) << row.name << " twice";
    EXPECT_EQ(FindStat(row.name), &row);
    // Sections in print order, so STATS groups them as `voxdb info` does.
    ASSERT_TRUE(sections.count(row.section)) << row.name << ": " << row.section;
    while (kStatSections[section_index] != row.section) {
      ++section_index;
      ASSERT_LT(section_index, std::size(kStatSections)) << row.name << " out of section order";
    }
    if (row.metric.empty()) {
      EXPECT_TRUE(row.label.empty()) << row.name;
      continue;
    }
    EXPECT_TRUE(row.metric.starts_with("voxdb_") && LowerSnake(row.metric.substr(6))) << row.metric;
    EXPECT_FALSE(row.help.empty()) << row.name;
    // Prometheus naming: counters end in _total, gauges do not.
    EXPECT_EQ(row.metric.ends_with("_total"), row.kind == StatKind::kCounter) << row.metric;
    EXPECT_TRUE(series.insert({row.metric, row.label}).second) << row.metric << " twice";
    auto [it, first] = family_of.emplace(row.metric, &row);
    if (!first) {  // rows sharing a family: the same type and help, told apart by a label
      EXPECT_EQ(it->second->kind, row.kind) << row.metric;
      EXPECT_EQ(it->second->help, row.help) << row.metric;
      EXPECT_FALSE(row.label.empty()) << row.metric;
      EXPECT_FALSE(it->second->label.empty()) << row.metric;
    }
    if (!row.label.empty()) {
      const size_t eq = row.label.find('=');
      EXPECT_TRUE(eq != std::string_view::npos && LowerSnake(row.label.substr(0, eq), false) &&
                  LowerSnake(row.label.substr(eq + 1), false))
          << row.label;
    }
  }
  EXPECT_EQ(FindStat("no_such_stat"), nullptr);
}

TEST(StatsTableTest, ParseStatsTextReadsNameValueLines) {
  ASSERT_OK_AND_ASSIGN(auto lines, ParseStatsText("cache_hits 12\n\noldest_dirty_age_seconds "
                                                  "0.25\nfuture_stat some text\n"));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], (std::pair<std::string, std::string>{"cache_hits", "12"}));
  EXPECT_EQ(lines[1], (std::pair<std::string, std::string>{"oldest_dirty_age_seconds", "0.25"}));
  EXPECT_EQ(lines[2], (std::pair<std::string, std::string>{"future_stat", "some text"}));
  ASSERT_OK_AND_ASSIGN(lines, ParseStatsText(""));
  EXPECT_TRUE(lines.empty());
  ASSERT_OK_AND_ASSIGN(lines, ParseStatsText("last_seq 7"));  // no final newline
  EXPECT_EQ(lines.size(), 1u);
  for (const char* bad : {"cache_hits\n", " 12\n", "cache_hits \n", "a 1\nb\n"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseStatsText(bad).status())) << bad;
  }
}

}  // namespace
}  // namespace voxdb::protocol
