#include "tests/testing/daemon_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace voxdb::testing {

DaemonProcess::DaemonProcess(const std::string& binary, const std::string& data_dir,
                             const std::vector<std::string>& extra_args) {
  int out[2];
  if (pipe(out) != 0) std::abort();
  pid_ = fork();
  if (pid_ < 0) std::abort();
  if (pid_ == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    std::vector<std::string> args = {binary,        "--data",    data_dir, "--listen",
                                     "127.0.0.1:0", "--threads", "2"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    std::perror("execv voxdbd");
    _exit(127);
  }
  close(out[1]);
  // Read stdout until the "listening on HOST:PORT" line.
  std::string line;
  char c;
  while (read(out[0], &c, 1) == 1) {
    if (c != '\n') {
      line += c;
      continue;
    }
    const size_t at = line.find("listening on 127.0.0.1:");
    if (at != std::string::npos) {
      port_ = static_cast<uint16_t>(std::atoi(line.c_str() + at + 23));
      break;
    }
    line.clear();
  }
  close(out[0]);  // later output goes nowhere (the daemon ignores EPIPE on stdout)
  if (port_ == 0) {
    std::fprintf(stderr, "voxdbd did not start (last line: %s)\n", line.c_str());
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

}  // namespace voxdb::testing
