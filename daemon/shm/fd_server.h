// FdServer: the daemon's side of the fd socket (proto/fd/fd_protocol.h):
// hands shared regions to the clients that own them (fetch) and takes
// clients' dma-buf descriptors for device windows (submit). Runs on the
// daemon's io_context; a client that connects and stays silent is dropped
// after a second, so it cannot stall other clients.
#pragma once

#include <sys/types.h>

#include <functional>

#include <boost/asio.hpp>
#include <string>

#include "daemon/shm/fd_request.h"
#include "daemon/shm/region_table.h"
#include "daemon/shm/submitted_fds.h"
#include "epx/status.h"

namespace epx::daemon {

class FdServer {
 public:
  // Who may submit for which client (fd_request.h); the pid comes from
  // SO_PEERCRED.
  using SubmitterCheck = FdSubmitterCheck;
  FdServer(boost::asio::io_context& io, const RegionTable& regions, SubmittedFds& submitted,
           SubmitterCheck check_submitter);
  ~FdServer();
  Status listen(const std::string& path, const std::string& group);
  void close();

 private:
  void accept_next();

  boost::asio::io_context& io_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  const RegionTable& regions_;
  SubmittedFds& submitted_;
  SubmitterCheck check_submitter_;
  std::string path_;
};

}  // namespace epx::daemon
