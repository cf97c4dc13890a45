// FdServer: the daemon's side of the fd socket (client/internal/fd_protocol.h).
// Runs on the daemon's io_context; a client that connects and stays silent is
// dropped after a second, so it cannot stall other clients.
#pragma once

#include <boost/asio.hpp>
#include <string>

#include "daemon/shm/region_table.h"
#include "epx/status.h"

namespace epx::daemon {

class FdServer {
 public:
  FdServer(boost::asio::io_context& io, const RegionTable& regions);
  ~FdServer();
  Status listen(const std::string& path, const std::string& group);
  void close();

 private:
  void accept_next();

  boost::asio::io_context& io_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  const RegionTable& regions_;
  std::string path_;
};

}  // namespace epx::daemon
