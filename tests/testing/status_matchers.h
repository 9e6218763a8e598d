// GoogleTest helpers for absl::Status / StatusOr.
#ifndef VOXDB_TESTS_TESTING_STATUS_MATCHERS_H_
#define VOXDB_TESTS_TESTING_STATUS_MATCHERS_H_

#include <gtest/gtest.h>

#include "engine/status.h"

#define VOXDB_TESTING_CONCAT_INNER_(a, b) a##b
#define VOXDB_TESTING_CONCAT_(a, b) VOXDB_TESTING_CONCAT_INNER_(a, b)

// Variables are named by line so that the macros nest (an EXPECT_OK inside a
// lambda passed to an EXPECT_OK).
#define EXPECT_OK(expr) VOXDB_EXPECT_OK_IMPL_(VOXDB_TESTING_CONCAT_(voxdb_s_, __LINE__), expr)
#define VOXDB_EXPECT_OK_IMPL_(var, expr)                         \
  do {                                                           \
    const ::absl::Status var = ::voxdb::testing::ToStatus(expr); \
    EXPECT_TRUE(var.ok()) << var;                                \
  } while (0)
#define ASSERT_OK(expr) VOXDB_ASSERT_OK_IMPL_(VOXDB_TESTING_CONCAT_(voxdb_s_, __LINE__), expr)
#define VOXDB_ASSERT_OK_IMPL_(var, expr)                         \
  do {                                                           \
    const ::absl::Status var = ::voxdb::testing::ToStatus(expr); \
    ASSERT_TRUE(var.ok()) << var;                                \
  } while (0)

// ASSERT_OK_AND_ASSIGN(auto x, Foo()); fails the test on an error status.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  VOXDB_ASSERT_OK_AND_ASSIGN_IMPL_(VOXDB_TESTING_CONCAT_(voxdb_sor_, __LINE__), lhs, expr)
#define VOXDB_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  ASSERT_TRUE(tmp.ok()) << tmp.status();                 \
  lhs = std::move(tmp).value()

namespace voxdb::testing {
inline absl::Status ToStatus(const absl::Status& s) { return s; }
template <typename T>
absl::Status ToStatus(const absl::StatusOr<T>& s) {
  return s.status();
}
}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_STATUS_MATCHERS_H_
