// The daemon's unix stream sockets (the control socket and the fd socket):
// bound with mode 0660 and the configured group, removed on close.
#pragma once

#include <boost/asio.hpp>
#include <string>

#include "epx/status.h"

namespace epx::daemon {

// Binds and listens on `path`. A live daemon already answering there is an
// error; a stale socket file is replaced.
Status bind_local_socket(boost::asio::local::stream_protocol::acceptor& acceptor, const std::string& path,
                         const std::string& group);

// Closes the acceptor and removes the socket file; clears `path`.
void close_local_socket(boost::asio::local::stream_protocol::acceptor& acceptor, std::string& path);

}  // namespace epx::daemon
