// Reading voxdbd's STATS counters in tests (protocol/PROTOCOL.md, STATS:
// one "name value" line each).
#ifndef VOXDB_TESTS_TESTING_STATS_H_
#define VOXDB_TESTS_TESTING_STATS_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "protocol/client.h"

namespace voxdb::testing {

// The counter `name` of the server's STATS; a test failure (and 0) when the
// request fails or the counter is missing.
inline uint64_t Stat(protocol::Client& client, const std::string& name) {
  auto text = client.Stats();
  EXPECT_TRUE(text.ok()) << text.status();
  for (absl::string_view line : absl::StrSplit(text.value_or(""), '\n')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, ' ');
    uint64_t v = 0;
    if (kv.first == name && absl::SimpleAtoi(kv.second, &v)) return v;
  }
  ADD_FAILURE() << "no " << name << " in STATS";
  return 0;
}

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_STATS_H_
