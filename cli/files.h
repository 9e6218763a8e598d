// The CLI's input and output files.
//
// Thread-safety: one owner per OutputFile.
#ifndef VOXDB_CLI_FILES_H_
#define VOXDB_CLI_FILES_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace voxdb::cli {

// The size of an input file, without reading it: a usage error (cli/args.h)
// when it cannot be opened or is not a regular file. `what` names the
// argument ("FILE"). Commands check it against their limits before they
// allocate anything for the file.
absl::StatusOr<uint64_t> InputFileSize(const std::string& path, const std::string& what);

// The whole file. A usage error (cli/args.h) when it cannot be read, when
// `expected_size` is given and the file has another size, or when it has
// more than `max_size` bytes (both checked before anything is allocated);
// RESOURCE_EXHAUSTED when its bytes cannot be allocated.
absl::StatusOr<std::vector<uint8_t>> ReadInputFile(const std::string& path,
                                                   std::optional<uint64_t> expected_size,
                                                   uint64_t max_size, const std::string& what);

// A file that is written whole or not at all: the bytes go to a temporary
// file next to it, renamed over `path` by Commit(). Opened before the
// server is asked anything, so that an unwritable path is a usage error
// and a failed request leaves an existing file untouched. A path that
// exists and is not a regular file (/dev/stdout, a FIFO) is written
// directly.
class OutputFile {
 public:
  // A usage error when the file cannot be created.
  static absl::StatusOr<OutputFile> Create(const std::string& path);
  OutputFile(OutputFile&& other) noexcept;
  OutputFile& operator=(OutputFile&&) = delete;
  OutputFile(const OutputFile&) = delete;
  // Removes the temporary file unless Commit() succeeded.
  ~OutputFile();

  // Writes `bytes` and puts the file in place. INTERNAL on an I/O error.
  absl::Status Commit(std::span<const uint8_t> bytes);

  const std::string& path() const { return path_; }

 private:
  OutputFile(std::string path, std::string temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}

  std::string path_;
  std::string temp_path_;  // empty: writing to path_ directly
  int fd_ = -1;
};

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_FILES_H_
