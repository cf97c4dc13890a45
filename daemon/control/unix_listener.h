// UnixListener: accepts local connections on the control socket, records each
// caller's SO_PEERCRED credentials, and hands the connection to the Local
// gRPC server. Accepting ourselves (instead of letting gRPC listen) is what
// lets the daemon know which process is on the other end of every call.
#pragma once

#include <grpcpp/grpcpp.h>

#include <boost/asio.hpp>
#include <string>

#include "daemon/control/local_connections.h"
#include "epx/status.h"

namespace epx::daemon {

class UnixListener {
 public:
  UnixListener(boost::asio::io_context& io, LocalConnections& connections);
  ~UnixListener();

  // Binds `path` with mode 0660 (group `group` when not empty) and starts
  // accepting into `server`. A live daemon already on `path` is an error; a
  // stale socket file is replaced.
  Status listen(const std::string& path, const std::string& group, grpc::Server* server);
  void close();

 private:
  void accept_next();

  boost::asio::local::stream_protocol::acceptor acceptor_;
  LocalConnections& connections_;
  grpc::Server* server_ = nullptr;
  std::string path_;
};

}  // namespace epx::daemon
