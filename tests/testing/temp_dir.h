// A temporary directory for one test, removed with everything in it when
// the object goes out of scope.
//
// Thread-safety: not thread-safe; one owner.
#ifndef VOXDB_TESTS_TESTING_TEMP_DIR_H_
#define VOXDB_TESTS_TESTING_TEMP_DIR_H_

#include <string>

namespace voxdb::testing {

class TempDir {
 public:
  // Creates a fresh directory under $TMPDIR (or /tmp). Crashes on failure.
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The whole content of the file at `path`; empty when it cannot be read.
std::string ReadFile(const std::string& path);

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_TEMP_DIR_H_
