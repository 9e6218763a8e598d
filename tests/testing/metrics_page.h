// Reading voxdbd's Prometheus page in tests: GET over a plain socket, its
// samples by series, and a command (promtool) run on it.
//
// Example:
//   const HttpReply reply = HttpGet(daemon.metrics_port(), "/metrics");
//   const auto samples = ParseSamples(reply.body);  // "voxdb_partitions" -> 2
//
// Thread-safety: plain functions.
#ifndef VOXDB_TESTS_TESTING_METRICS_PAGE_H_
#define VOXDB_TESTS_TESTING_METRICS_PAGE_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>

#include "tests/testing/temp_dir.h"

namespace voxdb::testing {

// GET `path` over HTTP/1.0 on a plain socket (the server closes after the
// reply); empty on failure.
struct HttpReply {
  std::string status_line;
  std::string body;
};
inline HttpReply HttpGet(uint16_t port, const std::string& path) {
  HttpReply reply;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return reply;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return reply;
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return reply;
  }
  std::string all;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) all.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t eol = all.find("\r\n");
  const size_t head_end = all.find("\r\n\r\n");
  if (eol == std::string::npos || head_end == std::string::npos) return reply;
  reply.status_line = all.substr(0, eol);
  reply.body = all.substr(head_end + 4);
  return reply;
}

// The samples of a text exposition page: "name{labels}" -> value.
inline std::map<std::string, double> ParseSamples(const std::string& page) {
  std::map<std::string, double> samples;
  std::istringstream in(page);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    samples[line.substr(0, space)] = std::strtod(line.c_str() + space + 1, nullptr);
  }
  return samples;
}

// Runs `command` with `input` on its stdin; returns its exit status (as
// waitpid gives it) and its stdout and stderr together.
inline std::pair<int, std::string> RunWithInput(const std::string& command,
                                                const std::string& input, const TempDir& dir) {
  const std::string in_path = dir.Sub("stdin.txt");
  std::ofstream(in_path) << input;
  FILE* p = popen((command + " < " + in_path + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  return {pclose(p), out};
}

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_METRICS_PAGE_H_
