#include "tests/testing/run_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string_view>

extern char** environ;

namespace voxdb::testing {

std::ostream& operator<<(std::ostream& os, const ProcessResult& r) {
  return os << "exit " << r.exit_code << "\n--- stdout\n" << r.out << "--- stderr\n" << r.err;
}

ProcessResult RunProcess(const std::vector<std::string>& args,
                         const std::vector<std::string>& unset,
                         const std::vector<std::pair<std::string, std::string>>& set) {
  ChildProcess child(args, unset, set);
  return child.Wait();
}

ChildProcess::ChildProcess(const std::vector<std::string>& args,
                           const std::vector<std::string>& unset,
                           const std::vector<std::pair<std::string, std::string>>& set) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry = *e;
    bool keep = true;
    for (const std::string& name : unset) {
      if (entry.starts_with(name + "=")) keep = false;
    }
    if (keep) env_strings.emplace_back(entry);
  }
  for (const auto& [name, value] : set) env_strings.push_back(name + "=" + value);
  std::vector<std::string> argv_strings = args;
  std::vector<char*> argv, envp;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out[2], err[2];
  if (pipe(out) != 0 || pipe(err) != 0) std::abort();
  pid_ = fork();
  if (pid_ < 0) std::abort();
  if (pid_ == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    close(err[0]);
    close(err[1]);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  fds_[kOut] = out[0];
  fds_[kErr] = err[0];
}

ChildProcess::~ChildProcess() {
  if (!exit_code_.has_value()) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  for (int fd : fds_) {
    if (fd >= 0) close(fd);
  }
}

bool ChildProcess::Pump(int timeout_ms) {
  if (fds_[kOut] < 0 && fds_[kErr] < 0) return false;
  pollfd fds[2] = {{fds_[kOut], POLLIN, 0}, {fds_[kErr], POLLIN, 0}};
  const int ready = poll(fds, 2, timeout_ms);
  if (ready < 0) {
    if (errno == EINTR) return true;
    std::abort();
  }
  for (int i = 0; i < 2; ++i) {
    if (fds[i].fd < 0 || fds[i].revents == 0) continue;
    char buf[65536];
    const ssize_t n = read(fds[i].fd, buf, sizeof buf);
    if (n > 0) {
      text_[i].append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      close(fds_[i]);
      fds_[i] = -1;
    }
  }
  return fds_[kOut] >= 0 || fds_[kErr] >= 0;
}

std::optional<std::string> ChildProcess::ReadLine(Stream stream,
                                                  std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const size_t nl = text_[stream].find('\n', taken_[stream]);
    if (nl != std::string::npos) {
      std::string line = text_[stream].substr(taken_[stream], nl - taken_[stream]);
      taken_[stream] = nl + 1;
      return line;
    }
    if (fds_[stream] < 0) return std::nullopt;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    Pump(static_cast<int>(left.count()));
  }
}

void ChildProcess::Signal(int signal) {
  if (!exit_code_.has_value()) kill(pid_, signal);
}

ProcessResult ChildProcess::Wait(std::optional<std::chrono::milliseconds> timeout) {
  if (!exit_code_.has_value()) {
    const auto deadline =
        std::chrono::steady_clock::now() + timeout.value_or(std::chrono::milliseconds(0));
    bool killed = false;
    for (;;) {
      int wait_ms = -1;
      if (timeout.has_value() && !killed) {
        wait_ms = static_cast<int>(
            std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                     deadline - std::chrono::steady_clock::now())
                                     .count()));
        if (wait_ms == 0) {
          kill(pid_, SIGKILL);
          killed = true;
          wait_ms = -1;
        }
      }
      if (!Pump(wait_ms)) break;
    }
    int status = 0;
    waitpid(pid_, &status, 0);
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return {*exit_code_, text_[kOut], text_[kErr]};
}

}  // namespace voxdb::testing
