#include "tests/testing/daemon_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "tests/testing/wait.h"

namespace voxdb::testing {

DaemonProcess::DaemonProcess(const std::string& binary, const std::string& data_dir,
                             const std::vector<std::string>& extra_args) {
  // Metrics on an ephemeral port too, unless the caller chose.
  std::string metrics = "127.0.0.1:0";
  bool own_metrics = false;
  for (size_t i = 0; i < extra_args.size(); ++i) {
    if (extra_args[i] == "--metrics-listen" && i + 1 < extra_args.size()) {
      own_metrics = true;
      metrics = extra_args[i + 1];
    } else if (extra_args[i].rfind("--metrics-listen=", 0) == 0) {
      own_metrics = true;
      metrics = extra_args[i].substr(17);
    }
  }
  int out[2];
  if (pipe(out) != 0) std::abort();
  pid_ = fork();
  if (pid_ < 0) std::abort();
  if (pid_ == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    std::vector<std::string> args = {binary, "--data", data_dir, "--listen", "127.0.0.1:0"};
    // Two I/O threads unless the test sets its own.
    if (std::find(extra_args.begin(), extra_args.end(), "--threads") == extra_args.end()) {
      args.insert(args.end(), {"--threads", "2"});
    }
    if (!own_metrics) args.insert(args.end(), {"--metrics-listen", metrics});
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    std::perror("execv voxdbd");
    _exit(127);
  }
  close(out[1]);
  // Read stdout until the "listening on HOST:PORT" line, and the "metrics
  // on HOST:PORT" line that follows it when metrics are on.
  const bool want_metrics = metrics != "off";
  // Up to 30 s (scaled, wait.h): a voxdbd that hangs before listening fails
  // the test here rather than at ctest's timeout.
  const auto deadline = DeadlineIn(std::chrono::seconds(30));
  std::string line;
  char c;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{out[0], POLLIN, 0};
    const int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      std::fprintf(stderr, "voxdbd did not print its listening line within %lld ms\n",
                   static_cast<long long>(Scaled(std::chrono::seconds(30)).count()));
      break;
    }
    if (read(out[0], &c, 1) != 1) break;
    if (c != '\n') {
      line += c;
      continue;
    }
    const size_t at = line.find("listening on 127.0.0.1:");
    if (at != std::string::npos) {
      port_ = static_cast<uint16_t>(std::atoi(line.c_str() + at + 23));
      if (!want_metrics) break;
    }
    if (line.rfind("voxdbd metrics on ", 0) == 0) {
      metrics_port_ = static_cast<uint16_t>(std::atoi(line.c_str() + line.rfind(':') + 1));
      break;
    }
    line.clear();
  }
  close(out[0]);  // later output goes nowhere (the daemon ignores EPIPE on stdout)
  if (port_ == 0 || (want_metrics && metrics_port_ == 0)) {
    std::fprintf(stderr, "voxdbd did not start (last line: %s)\n", line.c_str());
    kill(pid_, SIGKILL);  // not left running after the test
    waitpid(pid_, nullptr, 0);
    std::abort();
  }
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

int DaemonProcess::StopWith(int signal) {
  int status = 0;
  kill(pid_, signal);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

std::unique_ptr<DaemonProcess> StartLogging(const std::string& binary, const std::string& data_dir,
                                            const std::string& log_path,
                                            const std::vector<std::string>& extra_args) {
  // The child inherits stderr: point ours at the file while it starts.
  const int saved = dup(STDERR_FILENO);
  const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (saved < 0 || fd < 0) std::abort();
  dup2(fd, STDERR_FILENO);
  auto d = std::make_unique<DaemonProcess>(binary, data_dir, extra_args);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  return d;
}

uint64_t RssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      uint64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

}  // namespace voxdb::testing
