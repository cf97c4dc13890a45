#include "daemon/control/unix_listener.h"

#include <fcntl.h>
#include <grp.h>
#include <grpcpp/server_posix.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "daemon/shm/local_socket.h"

namespace epx::daemon {

using boost::asio::local::stream_protocol;

UnixListener::UnixListener(boost::asio::io_context& io, LocalConnections& connections)
    : acceptor_(io), connections_(connections) {}

UnixListener::~UnixListener() { close(); }

Status UnixListener::listen(const std::string& path, const std::string& group, grpc::Server* server) {
  server_ = server;
  EPX_RETURN_IF_ERROR(bind_local_socket(acceptor_, path, group));
  path_ = path;
  accept_next();
  return Status();
}

void UnixListener::accept_next() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, stream_protocol::socket socket) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (ec) {
      spdlog::warn("control socket accept: {}", ec.message());
    } else {
      ucred cred = {};
      socklen_t len = sizeof(cred);
      if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        spdlog::warn("SO_PEERCRED failed: {}; dropping connection", std::strerror(errno));
      } else {
        // gRPC takes ownership of its own descriptor; asio closes the original.
        int fd = ::fcntl(socket.native_handle(), F_DUPFD_CLOEXEC, 0);
        // gRPC's endpoint expects a non-blocking socket.
        if (fd >= 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (fd < 0) {
          spdlog::warn("dup of local connection failed: {}", std::strerror(errno));
        } else {
          connections_.record("fd:" + std::to_string(fd), Credentials{cred.pid, cred.uid, cred.gid});
          spdlog::debug("local connection fd {} from pid {} uid {}", fd, cred.pid, cred.uid);
          grpc::AddInsecureChannelFromFd(server_, fd);
        }
      }
    }
    accept_next();
  });
}

void UnixListener::close() { close_local_socket(acceptor_, path_); }

}  // namespace epx::daemon
