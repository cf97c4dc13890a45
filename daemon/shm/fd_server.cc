#include "daemon/shm/fd_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include <spdlog/spdlog.h>

#include "daemon/control/local_socket.h"
#include "fd_protocol.h"

namespace epx::daemon {

using boost::asio::local::stream_protocol;

FdServer::FdServer(boost::asio::io_context& io, const RegionTable& regions)
    : io_(io), acceptor_(io), regions_(regions) {}

FdServer::~FdServer() { close(); }

Status FdServer::listen(const std::string& path, const std::string& group) {
  EPX_RETURN_IF_ERROR(bind_local_socket(acceptor_, path, group));
  path_ = path;
  accept_next();
  return Status();
}

namespace {

// One request/reply exchange; owns its socket and its timeout.
struct Exchange : std::enable_shared_from_this<Exchange> {
  Exchange(boost::asio::io_context& io, stream_protocol::socket s, const RegionTable& r)
      : socket(std::move(s)), timer(io), regions(r) {}

  void start() {
    auto self = shared_from_this();
    timer.expires_after(std::chrono::seconds(1));
    timer.async_wait([self](const boost::system::error_code& ec) {
      if (!ec) self->socket.close();  // silent client: drop it
    });
    boost::asio::async_read(socket, boost::asio::buffer(&request, sizeof(request)),
                            [self](const boost::system::error_code& ec, size_t) {
                              self->timer.cancel();
                              if (!ec) self->answer();
                            });
  }

  void answer() {
    fdproto::FdReply reply = {};
    reply.magic = fdproto::kMagic;
    int fd = -1;
    ucred cred = {};
    socklen_t len = sizeof(cred);
    Status status;
    if (request.magic != fdproto::kMagic) {
      status = invalid_argument("bad fd request magic");
    } else if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      status = internal_error(std::string("SO_PEERCRED: ") + std::strerror(errno));
    } else {
      auto region = regions.fetch(request.token, cred.pid);
      if (region.ok()) {
        fd = (*region)->fd();
        reply.size = (*region)->size();
        held = std::move(region.value());  // keep the fd open until sent
      } else {
        status = region.status();
      }
    }
    reply.status = static_cast<int32_t>(status.code());
    std::strncpy(reply.message, status.message().c_str(), sizeof(reply.message) - 1);

    iovec iov{&reply, sizeof(reply)};
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (fd >= 0) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    // The reply is 256 bytes on a fresh unix socket: it fits the send buffer.
    if (::sendmsg(socket.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT) != static_cast<ssize_t>(sizeof(reply))) {
      spdlog::warn("fd socket: reply to pid {} failed: {}", cred.pid, std::strerror(errno));
    }
    if (!status.ok()) spdlog::warn("fd socket: pid {} refused: {}", cred.pid, status.message());
  }

  stream_protocol::socket socket;
  boost::asio::steady_timer timer;
  const RegionTable& regions;
  fdproto::FdRequest request = {};
  std::shared_ptr<SharedRegion> held;
};

}  // namespace

void FdServer::accept_next() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, stream_protocol::socket socket) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (!ec) std::make_shared<Exchange>(io_, std::move(socket), regions_)->start();
    accept_next();
  });
}

void FdServer::close() { close_local_socket(acceptor_, path_); }

}  // namespace epx::daemon
