// Daemon: epxd's process-level object. Opens the rails, starts the Peer
// (TCP) and Local (unix socket) gRPC servers, and runs until SIGTERM/SIGINT.
#pragma once

#include <grpcpp/grpcpp.h>

#include <boost/asio.hpp>
#include <memory>

#include "daemon/control/local_service.h"
#include "daemon/control/peer_service.h"
#include "daemon/control/unix_listener.h"
#include "daemon/shm/fd_server.h"
#include "daemon/control/daemon_state.h"
#include "epx/status.h"
#include "epx/v1/config.pb.h"

namespace epx::daemon {

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> start(v1::DaemonConfig config);
  ~Daemon();

  // Serves until SIGTERM or SIGINT, then shuts down gracefully. SIGHUP
  // reopens the log file. Returns the process exit code.
  int run();

 private:
  Daemon();
  void wait_signal();
  void schedule_expiry();
  void shutdown(const std::string& reason);

  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer expiry_timer_;
  uint64_t ticks_ = 0;
  PeerService peer_service_;
  std::unique_ptr<grpc::Server> peer_server_;
  std::unique_ptr<DaemonState> state_;
  std::unique_ptr<LocalService> local_service_;
  std::unique_ptr<grpc::Server> local_server_;
  std::unique_ptr<UnixListener> listener_;
  std::unique_ptr<FdServer> fd_server_;
};

}  // namespace epx::daemon
