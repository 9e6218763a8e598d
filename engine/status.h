// voxdb's status codes, on top of absl::Status.
//
// Every fallible call in voxdb returns an absl::Status or absl::StatusOr<T>.
// This table fixes what each status means everywhere: in the engine, on the
// wire (protocol/PROTOCOL.md, "Status codes"; protocol/frame.h, ToWireStatus
// and FromWireStatus) and in the CLI's messages. Each name has one meaning
// and one way to make it:
//
//   wire name, code      made by (absl code)             meaning
//   INVALID 1            absl::InvalidArgumentError      malformed request, argument or option
//   OUT_OF_BOUNDS 2      OutOfBoundsError (kOutOfRange)  a coordinate outside the world frame
//   NOT_FOUND 3          absl::NotFoundError             no such chunk, key, handle or file
//   CONFLICT 4           ConflictError (kAborted)        what the request expected changed
//   CORRUPT 5            CorruptError (kDataLoss)        a stored record failed its checksum
//                                                        or decode
//   STORAGE_FULL 6       StorageFullError                the map reached its maximum or the
//                        (kResourceExhausted)            disk is full
//   BUSY 7               BusyError (kUnavailable)        back-pressure or a limit of the
//                                                        moment: retry later
//   UNAVAILABLE 8        ClosingError (kCancelled)       the database, LOD builder or server
//                                                        is closing: the request was not run
//                                                        or its wait was ended
//   UNAUTHENTICATED 9    absl::UnauthenticatedError      no or wrong token
//   PERMISSION_DENIED 10 absl::PermissionDeniedError     the token's role does not allow it
//   UNSUPPORTED 11       UnsupportedError                an unknown opcode or version, a
//                        (kUnimplemented)                feature this server lacks, a record
//                                                        or file of a newer format
//   MISMATCH 12          MismatchError                   the database was created with another
//                        (kFailedPrecondition)           world frame or format
//   TOO_LARGE 13         TooLargeError (kInvalidArgument a request over a limit (INVALID to
//                        + kTooLargePayload)             code that ignores the payload)
//   INTERNAL 14          IoError, absl::InternalError    the operating system or LMDB failed,
//                        (kInternal)                     or a fault of voxdb itself
//   RESYNC 15            ResyncError (kOutOfRange        a subscription's resume point is
//                        + kResyncPayload)               older than the changes retained
//   WRONG_PARTITION 16   WrongPartitionError             the key is not in a partition this
//                        (kFailedPrecondition            node serves, or the partition's epoch
//                        + kWrongPartitionPayload)       is fenced: refresh the partition map
//   UNREACHABLE -        UnreachableError (kUnavailable  the client cannot reach the server or
//                        + kUnreachablePayload)          lost its connection (client only)
//
// absl's names differ from voxdb's for the codes with a helper (absl's
// UNAVAILABLE is voxdb's BUSY; voxdb's UNAVAILABLE is absl's CANCELLED), so
// code makes and tests those statuses only through the helpers and Is*
// functions below; tests/engine/status_helpers_test.sh checks the sources.
// A timeout of the client waiting for a reply is absl::DeadlineExceededError
// (the CLI names it UNREACHABLE too); the server never answers with it.
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
inline constexpr absl::string_view kResyncPayload = "voxdb.resync";
inline Status ResyncError(absl::string_view msg) {
  Status s = absl::OutOfRangeError(msg);
  s.SetPayload(kResyncPayload, absl::Cord("1"));
  return s;
}
inline constexpr absl::string_view kWrongPartitionPayload = "voxdb.wrong_partition";
inline Status WrongPartitionError(absl::string_view msg) {
  Status s = absl::FailedPreconditionError(msg);
  s.SetPayload(kWrongPartitionPayload, absl::Cord("1"));
  return s;
}
inline constexpr absl::string_view kUnreachablePayload = "voxdb.unreachable";
inline Status UnreachableError(absl::string_view msg) {
  Status s = absl::UnavailableError(msg);
  s.SetPayload(kUnreachablePayload, absl::Cord("1"));
  return s;
}

inline bool IsResync(const Status& s) {
  return absl::IsOutOfRange(s) && s.GetPayload(kResyncPayload).has_value();
}
inline bool IsUnreachable(const Status& s) {
  return absl::IsUnavailable(s) && s.GetPayload(kUnreachablePayload).has_value();
}
inline bool IsWrongPartition(const Status& s) {
  return absl::IsFailedPrecondition(s) && s.GetPayload(kWrongPartitionPayload).has_value();
}
inline bool IsOutOfBounds(const Status& s) { return absl::IsOutOfRange(s) && !IsResync(s); }
inline bool IsCorrupt(const Status& s) { return absl::IsDataLoss(s); }
inline bool IsStorageFull(const Status& s) { return absl::IsResourceExhausted(s); }
inline bool IsConflict(const Status& s) { return absl::IsAborted(s); }
inline bool IsBusy(const Status& s) { return absl::IsUnavailable(s) && !IsUnreachable(s); }
inline bool IsClosing(const Status& s) { return absl::IsCancelled(s); }
inline bool IsMismatch(const Status& s) {
  return absl::IsFailedPrecondition(s) && !IsWrongPartition(s);
}
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
