// Reading voxdbd's STATS counters in tests (protocol/PROTOCOL.md, STATS:
// one "name value" line each).
#ifndef VOXDB_TESTS_TESTING_STATS_H_
#define VOXDB_TESTS_TESTING_STATS_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "absl/strings/numbers.h"
#include "protocol/client.h"
#include "protocol/stats.h"

namespace voxdb::testing {

// The counter `name` of the server's STATS; a test failure (and 0) when the
// request fails or the counter is missing.
inline uint64_t Stat(protocol::Client& client, const std::string& name) {
  auto text = client.Stats();
  EXPECT_TRUE(text.ok()) << text.status();
  auto lines = protocol::ParseStatsText(text.value_or(""));
  if (!lines.ok()) {
    ADD_FAILURE() << lines.status();
    return 0;
  }
  for (const auto& [stat, value] : *lines) {
    uint64_t v = 0;
    if (stat == name && absl::SimpleAtoi(value, &v)) return v;
  }
  ADD_FAILURE() << "no " << name << " in STATS";
  return 0;
}

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_STATS_H_
