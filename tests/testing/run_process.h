// Runs a program to completion, capturing its stdout, stderr and exit code,
// for tests of command-line tools.
//
// Thread-safety: a plain function; call it from one thread at a time if the
// program's environment must not change meanwhile.
#ifndef VOXDB_TESTS_TESTING_RUN_PROCESS_H_
#define VOXDB_TESTS_TESTING_RUN_PROCESS_H_

#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace voxdb::testing {

struct ProcessResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out;
  std::string err;
};

std::ostream& operator<<(std::ostream& os, const ProcessResult& r);

// Runs argv[0] with argv, in this process's environment minus the variables
// named in `unset`, plus `set` (NAME, VALUE).
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& unset = {},
                         const std::vector<std::pair<std::string, std::string>>& set = {});

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_RUN_PROCESS_H_
