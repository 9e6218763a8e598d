// The command lines of the benchmarks: `--name value`, `--name=value`, and
// switches that take no value.
//
// Thread-safety: a function of its arguments.
#ifndef VOXDB_TESTS_TESTING_FLAGS_H_
#define VOXDB_TESTS_TESTING_FLAGS_H_

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

namespace voxdb::testing {

// Calls fn(name, value) for each option of argv[1..argc), in order; the
// names in `switches` take no value (value ""). A word that is not an
// option, or an option missing its value, calls usage(why), which must not
// return.
inline void ForEachFlag(
    int argc, char** argv, std::initializer_list<std::string_view> switches,
    const std::function<void(const std::string& why)>& usage,
    const std::function<void(const std::string& name, const std::string& value)>& fn) {
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i];
    if (name.rfind("--", 0) != 0) usage("unexpected argument " + name);
    name = name.substr(2);
    std::string value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const bool is_switch = std::find(switches.begin(), switches.end(), name) != switches.end();
    if (!is_switch && !inline_value) {
      if (i + 1 >= argc) usage("--" + name + " needs a value");
      value = argv[++i];
    }
    fn(name, value);
  }
}

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_FLAGS_H_
