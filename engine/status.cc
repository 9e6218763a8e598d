#include "engine/status.h"

#include <cstdio>
#include <cstdlib>

namespace voxdb::internal {

void CheckFailed(const char* file, int line, const char* cond) {
  std::fprintf(stderr, "voxdb: CHECK failed at %s:%d: %s\n", file, line, cond);
  std::fflush(stderr);
  std::abort();
}

}  // namespace voxdb::internal
