// voxdb's status codes, on top of absl::Status.
//
// Every fallible call in voxdb returns an absl::Status or absl::StatusOr<T>.
// voxdb's domain errors map onto canonical absl codes so that one table
// (here) fixes what each code means everywhere, from the engine to the wire
// protocol (protocol/PROTOCOL.md, "Status codes"; protocol/frame.h,
// ToWireStatus):
//
//   voxdb name      absl code              meaning
//   OUT_OF_BOUNDS   kOutOfRange            a coordinate outside the world frame
//   CORRUPT         kDataLoss              a stored record failed its checksum or decode
//   STORAGE_FULL    kResourceExhausted     the map reached its maximum or the disk is full
//   NOT_FOUND       kNotFound              no such chunk / key
//   CONFLICT        kAborted               an expected version did not match
//   BUSY            kUnavailable           back-pressure; retry later
//   CLOSING         kCancelled             the database or server is shutting down
//   INVALID         kInvalidArgument       malformed request or option
//   MISMATCH        kFailedPrecondition    database created with another frame / format
//   UNSUPPORTED     kUnimplemented         a record or file written by a newer format
//   IO_ERROR        kInternal              the operating system or LMDB failed
//   TOO_LARGE       kInvalidArgument       a request over a limit (INVALID with the
//                   + payload kTooLargePayload  payload below, so it stays INVALID for
//                                          code that does not know it)
//
// Thread-safety: free functions, stateless.
#ifndef VOXDB_ENGINE_STATUS_H_
#define VOXDB_ENGINE_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace voxdb {

using Status = absl::Status;
template <typename T>
using StatusOr = absl::StatusOr<T>;

inline Status OutOfBoundsError(absl::string_view msg) { return absl::OutOfRangeError(msg); }
inline Status CorruptError(absl::string_view msg) { return absl::DataLossError(msg); }
inline Status StorageFullError(absl::string_view msg) { return absl::ResourceExhaustedError(msg); }
inline Status ConflictError(absl::string_view msg) { return absl::AbortedError(msg); }
inline Status BusyError(absl::string_view msg) { return absl::UnavailableError(msg); }
inline Status ClosingError(absl::string_view msg) { return absl::CancelledError(msg); }
inline Status MismatchError(absl::string_view msg) { return absl::FailedPreconditionError(msg); }
inline Status UnsupportedError(absl::string_view msg) { return absl::UnimplementedError(msg); }
inline Status IoError(absl::string_view msg) { return absl::InternalError(msg); }
inline constexpr absl::string_view kTooLargePayload = "voxdb.too_large";
inline Status TooLargeError(absl::string_view msg) {
  Status s = absl::InvalidArgumentError(msg);
  s.SetPayload(kTooLargePayload, absl::Cord("1"));
  return s;
}

inline bool IsOutOfBounds(const Status& s) { return absl::IsOutOfRange(s); }
inline bool IsCorrupt(const Status& s) { return absl::IsDataLoss(s); }
inline bool IsStorageFull(const Status& s) { return absl::IsResourceExhausted(s); }
inline bool IsConflict(const Status& s) { return absl::IsAborted(s); }
inline bool IsBusy(const Status& s) { return absl::IsUnavailable(s); }
inline bool IsMismatch(const Status& s) { return absl::IsFailedPrecondition(s); }
inline bool IsUnsupported(const Status& s) { return absl::IsUnimplemented(s); }
inline bool IsTooLarge(const Status& s) {
  return absl::IsInvalidArgument(s) && s.GetPayload(kTooLargePayload).has_value();
}

}  // namespace voxdb

// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function when it is not OK.
#define VOXDB_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::absl::Status voxdb_status_ = (expr);         \
    if (!voxdb_status_.ok()) return voxdb_status_; \
  } while (0)

#define VOXDB_CONCAT_INNER_(a, b) a##b
#define VOXDB_CONCAT_(a, b) VOXDB_CONCAT_INNER_(a, b)
// `VOXDB_ASSIGN_OR_RETURN(auto x, Foo());` declares x from a StatusOr or
// returns its error.
#define VOXDB_ASSIGN_OR_RETURN(lhs, expr) \
  VOXDB_ASSIGN_OR_RETURN_IMPL_(VOXDB_CONCAT_(voxdb_statusor_, __LINE__), lhs, expr)
#define VOXDB_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

// A broken invariant (a bug, never bad input): crash loudly with a report.
#define VOXDB_CHECK(cond)                                                   \
  do {                                                                      \
    if (!(cond)) ::voxdb::internal::CheckFailed(__FILE__, __LINE__, #cond); \
  } while (0)

namespace voxdb::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond);
}  // namespace voxdb::internal

#endif  // VOXDB_ENGINE_STATUS_H_
