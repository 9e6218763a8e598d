// The one include of Boost.Asio. Boost 1.74's awaitable.hpp misses
// #include <utility> under C++20; including it first fixes that.
#ifndef VOXDB_DAEMON_ASIO_H_
#define VOXDB_DAEMON_ASIO_H_

// clang-format off
#include <utility>
#include <boost/asio.hpp>
// clang-format on

namespace voxdb::daemon {
namespace asio = boost::asio;
using tcp = boost::asio::ip::tcp;
}  // namespace voxdb::daemon

#endif  // VOXDB_DAEMON_ASIO_H_
