#include "mapped_region.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "fd_protocol.h"

namespace epx {
namespace {

// Closes a file descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Result<std::shared_ptr<MappedRegion>> MappedRegion::fetch(const std::string& fd_socket, uint64_t token,
                                                          uint64_t expected_bytes) {
  Fd sock{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (sock.fd < 0) return unavailable(std::string("socket: ") + std::strerror(errno));
  timeval tv{5, 0};  // the daemon answers at once; never wait longer than this
  ::setsockopt(sock.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(sock.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (fd_socket.size() >= sizeof(addr.sun_path)) return invalid_argument("fd socket path too long: " + fd_socket);
  std::strncpy(addr.sun_path, fd_socket.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(sock.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return unavailable("connect to epxd fd socket " + fd_socket + ": " + std::strerror(errno));
  }
  fdproto::FdRequest req{fdproto::kMagic, token};
  if (::send(sock.fd, &req, sizeof(req), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(req))) {
    return unavailable("send to " + fd_socket + ": " + std::strerror(errno));
  }
  fdproto::FdReply reply = {};
  iovec iov{&reply, sizeof(reply)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(sock.fd, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  Fd region;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) std::memcpy(&region.fd, CMSG_DATA(c), sizeof(int));
  }
  if (n != static_cast<ssize_t>(sizeof(reply)) || reply.magic != fdproto::kMagic) {
    return unavailable("bad reply from epxd fd socket " + fd_socket + (n < 0 ? std::string(": ") + std::strerror(errno) : ""));
  }
  if (reply.status != 0) {
    reply.message[sizeof(reply.message) - 1] = '\0';
    return Status(static_cast<StatusCode>(reply.status), std::string("fetching shared region: ") + reply.message);
  }
  if (region.fd < 0) return internal_error("epxd sent no descriptor for the shared region");
  if (reply.size < expected_bytes) {
    return internal_error("shared region is " + std::to_string(reply.size) + " bytes, expected " +
                          std::to_string(expected_bytes));
  }
  void* p = ::mmap(nullptr, reply.size, PROT_READ | PROT_WRITE, MAP_SHARED, region.fd, 0);
  if (p == MAP_FAILED) return resource_exhausted(std::string("mmap of shared region: ") + std::strerror(errno));
  return std::shared_ptr<MappedRegion>(new MappedRegion(p, reply.size));
}

MappedRegion::~MappedRegion() { ::munmap(data_, size_); }

}  // namespace epx
