// Starts the real voxdbd binary on an ephemeral loopback port with a given
// data directory, for integration tests; stops it with SIGTERM.
//
// Thread-safety: one owner.
#ifndef VOXDB_TESTS_TESTING_DAEMON_PROCESS_H_
#define VOXDB_TESTS_TESTING_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace voxdb::testing {

class DaemonProcess {
 public:
  // Starts `binary --data data_dir --listen 127.0.0.1:0 [--threads 2] --metrics-listen
  // 127.0.0.1:0 extra_args...` (no --metrics-listen of its own when
  // extra_args has one) and waits (up to 30 s) for its "listening on" line,
  // then its "metrics on" line unless metrics are off. Crashes the test on
  // failure to start.
  DaemonProcess(const std::string& binary, const std::string& data_dir,
                const std::vector<std::string>& extra_args = {});
  // SIGKILLs the daemon if it still runs.
  ~DaemonProcess();

  uint16_t port() const { return port_; }
  // The Prometheus metrics port; 0 with --metrics-listen off.
  uint16_t metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  // Sends `signal` and waits for the exit; returns the exit status as
  // waitpid gives it.
  int StopWith(int signal);

 private:
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  uint16_t metrics_port_ = 0;
};

// Starts a DaemonProcess whose stderr (its log) goes to `log_path`, created
// or truncated.
std::unique_ptr<DaemonProcess> StartLogging(const std::string& binary, const std::string& data_dir,
                                            const std::string& log_path,
                                            const std::vector<std::string>& extra_args = {});

// The resident set size of process `pid` in bytes (VmRSS in
// /proc/PID/status); 0 when it cannot be read.
uint64_t RssBytes(pid_t pid);

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_DAEMON_PROCESS_H_
