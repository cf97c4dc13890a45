#include "fd_socket.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "fd_protocol.h"

namespace epx {

void ScopedFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<ScopedFd> connect_fd_socket(const std::string& path) {
  ScopedFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) return unavailable(std::string("socket: ") + std::strerror(errno));
  timeval tv{5, 0};  // the daemon answers at once; never wait longer than this
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return invalid_argument("fd socket path too long: " + path);
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return unavailable("connect to epxd fd socket " + path + ": " + std::strerror(errno));
  }
  return std::move(sock);
}

Result<uint64_t> submit_fd(const std::string& fd_socket, uint64_t client_id, int fd) {
  if (fd < 0) return invalid_argument("no descriptor to send (fd " + std::to_string(fd) + ")");
  auto sock = connect_fd_socket(fd_socket);
  if (!sock.ok()) return sock.status();
  fdproto::FdSubmit submit{fdproto::kSubmitMagic, client_id};
  iovec iov{&submit, sizeof(submit)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  // One sendmsg: the descriptor travels with the request's first byte.
  if (::sendmsg(sock->get(), &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(submit))) {
    return unavailable("sending a descriptor to " + fd_socket + ": " + std::strerror(errno));
  }
  fdproto::FdReply reply = {};
  const ssize_t n = ::recv(sock->get(), &reply, sizeof(reply), MSG_WAITALL);
  if (n != static_cast<ssize_t>(sizeof(reply)) || reply.magic != fdproto::kMagic) {
    return unavailable("bad reply from epxd fd socket " + fd_socket +
                       (n < 0 ? std::string(": ") + std::strerror(errno) : ""));
  }
  if (reply.status != 0) {
    reply.message[sizeof(reply.message) - 1] = '\0';
    return Status(static_cast<StatusCode>(reply.status), std::string("sending a descriptor to epxd: ") + reply.message);
  }
  if (reply.token == 0) return internal_error("epxd took the descriptor but sent no token");
  return reply.token;
}

}  // namespace epx
