// Runs a program, capturing its stdout, stderr and exit code, for tests of
// command-line tools: to completion (RunProcess), or in the background with
// its output read line by line as it writes it (ChildProcess).
//
// Thread-safety: a ChildProcess has one owner. Starting a program reads this
// process's environment: start them from one thread at a time if it may
// change meanwhile.
#ifndef VOXDB_TESTS_TESTING_RUN_PROCESS_H_
#define VOXDB_TESTS_TESTING_RUN_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <optional>
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

// A program running in the background (argv and environment as for
// RunProcess), its stdout and stderr collected as it writes them:
//
//   ChildProcess child({"/bin/voxdb", "watch", ...});
//   auto line = child.ReadLine(ChildProcess::kErr, std::chrono::seconds(10));
//   ... make it print something ...
//   ProcessResult r = child.Wait(std::chrono::seconds(10));
class ChildProcess {
 public:
  enum Stream { kOut = 0, kErr = 1 };

  // Crashes the test if the program cannot be started.
  explicit ChildProcess(const std::vector<std::string>& argv,
                        const std::vector<std::string>& unset = {},
                        const std::vector<std::pair<std::string, std::string>>& set = {});
  // SIGKILLs the program if it still runs.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }

  // The next whole line of `stream` (without its newline) not returned yet,
  // waiting up to `timeout` for it; nullopt if none came by then or the
  // stream ended first.
  std::optional<std::string> ReadLine(Stream stream, std::chrono::milliseconds timeout);
  // Sends `signal` to the program (if it has not been waited for).
  void Signal(int signal);
  // Waits for the program to exit and both streams to end, up to `timeout`
  // (then SIGKILLs it: exit code 128 + 9). The result holds all it wrote,
  // lines returned by ReadLine included.
  ProcessResult Wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt);

 private:
  // Reads what the streams have, waiting up to `timeout_ms` (-1: forever)
  // for something; false once both streams have ended.
  bool Pump(int timeout_ms);

  pid_t pid_ = -1;
  int fds_[2] = {-1, -1};     // stdout, stderr; -1 once ended
  std::string text_[2];       // all read so far
  size_t taken_[2] = {0, 0};  // bytes of text_ returned by ReadLine
  std::optional<int> exit_code_;
};

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_RUN_PROCESS_H_
