#include "cli/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/strings/str_format.h"
#include "cli/args.h"

namespace voxdb::cli {

namespace {

// Opens `path` for reading; *size is its size. A usage error when it cannot
// be opened or is not a regular file (a directory, a FIFO: nothing to read
// whole).
absl::StatusOr<int> OpenInput(const std::string& path, const std::string& what, uint64_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return UsageError(absl::StrFormat("cannot read %s '%s': %s", what, path, std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return UsageError(absl::StrFormat("%s '%s' is not a regular file", what, path));
  }
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

}  // namespace

absl::StatusOr<uint64_t> InputFileSize(const std::string& path, const std::string& what) {
  uint64_t size = 0;
  absl::StatusOr<int> fd = OpenInput(path, what, &size);
  if (!fd.ok()) return fd.status();
  ::close(*fd);
  return size;
}

absl::StatusOr<std::vector<uint8_t>> ReadInputFile(const std::string& path,
                                                   std::optional<uint64_t> expected_size,
                                                   uint64_t max_size, const std::string& what) {
  uint64_t size = 0;
  absl::StatusOr<int> opened = OpenInput(path, what, &size);
  if (!opened.ok()) return opened.status();
  const int fd = *opened;
  if (expected_size.has_value() && size != *expected_size) {
    ::close(fd);
    return UsageError(
        absl::StrFormat("%s '%s' has %u bytes; the box needs exactly %u (one per voxel)", what,
                        path, size, *expected_size));
  }
  if (size > max_size) {
    ::close(fd);
    return UsageError(
        absl::StrFormat("%s '%s' has %u bytes; at most %u are read", what, path, size, max_size));
  }
  std::vector<uint8_t> bytes;
  try {
    bytes.resize(size);
  } catch (const std::exception&) {  // bad_alloc, length_error
    ::close(fd);
    return absl::InternalError(absl::StrFormat(
        "cannot allocate %u bytes to read %s '%s': not enough memory", size, what, path));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? std::strerror(errno) : "it shrank while being read";
      ::close(fd);
      return UsageError(absl::StrFormat("cannot read %s '%s': %s", what, path, why));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return bytes;
}

absl::StatusOr<OutputFile> OutputFile::Create(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      return UsageError(absl::StrFormat("cannot write '%s': %s", path, std::strerror(errno)));
    }
    return OutputFile(path, "", fd);
  }
  std::string temp = path + ".voxdb-XXXXXX";
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) {
    return UsageError(absl::StrFormat("cannot write '%s': %s", path, std::strerror(errno)));
  }
  // mkostemp creates 0600; give the file the mode a plain create would.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  return OutputFile(path, std::move(temp), fd);
}

OutputFile::OutputFile(OutputFile&& other) noexcept
    : path_(std::move(other.path_)), temp_path_(std::move(other.temp_path_)), fd_(other.fd_) {
  other.temp_path_.clear();
  other.fd_ = -1;
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
}

absl::Status OutputFile::Commit(std::span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(
          absl::StrFormat("cannot write '%s': %s", path_, std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    return absl::InternalError(
        absl::StrFormat("cannot write '%s': %s", path_, std::strerror(errno)));
  }
  if (!temp_path_.empty()) {
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
      return absl::InternalError(
          absl::StrFormat("cannot rename to '%s': %s", path_, std::strerror(errno)));
    }
    temp_path_.clear();
  }
  return absl::OkStatus();
}

}  // namespace voxdb::cli
