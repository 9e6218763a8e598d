// Waiting in tests: on a condition, never on a fixed wall-clock budget.
//
// A test that waits for something (a background build, a counter, an event)
// polls the condition with WaitUntil and fails only when a deadline passes.
// Every such deadline goes through Scaled(), which multiplies it by the
// environment variable VOXDB_TEST_TIME_SCALE (a positive number; default 1),
// so that a slow build (ThreadSanitizer, a loaded 2-core machine) raises one
// knob instead of every test's budget. A deadline is a bound for a hang, not
// a latency assertion: a passing test returns as soon as its condition holds.
//
// Example:
//   ASSERT_TRUE(testing::WaitUntil([&] { return Stat(*c, "lod_dirty") == 0; },
//                                  std::chrono::seconds(30)));
//
// Thread-safety: thread-safe (TimeScale reads the environment once).
#ifndef VOXDB_TESTS_TESTING_WAIT_H_
#define VOXDB_TESTS_TESTING_WAIT_H_

#include <chrono>
#include <cstdlib>
#include <thread>

namespace voxdb::testing {

// VOXDB_TEST_TIME_SCALE, or 1 when it is unset or not a positive number.
inline double TimeScale() {
  static const double scale = [] {
    const char* text = std::getenv("VOXDB_TEST_TIME_SCALE");
    if (text == nullptr) return 1.0;
    char* end = nullptr;
    const double v = std::strtod(text, &end);
    return end != text && *end == '\0' && v > 0 ? v : 1.0;
  }();
  return scale;
}

// `budget` times TimeScale(): the deadline to use for anything the test
// waits for.
template <class Rep, class Period>
std::chrono::milliseconds Scaled(std::chrono::duration<Rep, Period> budget) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(budget);
  return std::chrono::milliseconds(
      static_cast<int64_t>(static_cast<double>(ms.count()) * TimeScale()));
}

// The time point Scaled(budget) from now.
template <class Rep, class Period>
std::chrono::steady_clock::time_point DeadlineIn(std::chrono::duration<Rep, Period> budget) {
  return std::chrono::steady_clock::now() + Scaled(budget);
}

// Calls `done` every `poll` until it returns true (true) or Scaled(budget)
// has passed (false; `done` was called once more at the deadline).
template <class Done, class Rep, class Period>
bool WaitUntil(Done&& done, std::chrono::duration<Rep, Period> budget,
               std::chrono::milliseconds poll = std::chrono::milliseconds(10)) {
  const auto deadline = DeadlineIn(budget);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(poll);
  }
  return true;
}

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_WAIT_H_
