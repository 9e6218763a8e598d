// A writer for crash, shutdown and backup tests: single-voxel SET_VOXELS on
// its own connection, `depth` in flight, recording every acknowledged edit.
//
// Thread-safety: one call per thread; `on_ack` may be called from several
// such threads at once and must synchronise itself.
#ifndef VOXDB_TESTS_TESTING_PIPELINED_WRITES_H_
#define VOXDB_TESTS_TESTING_PIPELINED_WRITES_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "protocol/messages.h"

namespace voxdb::testing {

using Edit = protocol::SetVoxelsRequest::Edit;

// Connects to 127.0.0.1:port and sends edit_of(0), edit_of(1), ... keeping
// `depth` requests in flight while `go` holds; calls on_ack(edit) for each
// one answered OK. Returns once every sent request is answered after `go`
// turned false, or when the connection fails (the daemon went away).
void WritePipelined(uint16_t port, size_t depth, const std::atomic<bool>& go,
                    const std::function<Edit(uint64_t)>& edit_of,
                    const std::function<void(const Edit&)>& on_ack);

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_PIPELINED_WRITES_H_
