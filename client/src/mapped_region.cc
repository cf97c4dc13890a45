#include "mapped_region.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "fd_protocol.h"
#include "fd_socket.h"

namespace epx {

Result<std::shared_ptr<MappedRegion>> MappedRegion::fetch(const std::string& fd_socket, uint64_t token,
                                                          uint64_t expected_bytes) {
  auto sock = connect_fd_socket(fd_socket);
  if (!sock.ok()) return sock.status();
  fdproto::FdRequest req{fdproto::kMagic, token};
  if (::send(sock->get(), &req, sizeof(req), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(req))) {
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
  ssize_t n = ::recvmsg(sock->get(), &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  ScopedFd region;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
      region.reset(fd);
    }
  }
  if (n != static_cast<ssize_t>(sizeof(reply)) || reply.magic != fdproto::kMagic) {
    return unavailable("bad reply from epxd fd socket " + fd_socket + (n < 0 ? std::string(": ") + std::strerror(errno) : ""));
  }
  if (reply.status != 0) {
    reply.message[sizeof(reply.message) - 1] = '\0';
    return Status(static_cast<StatusCode>(reply.status), std::string("fetching shared region: ") + reply.message);
  }
  if (region.get() < 0) return internal_error("epxd sent no descriptor for the shared region");
  if (reply.size < expected_bytes) {
    return internal_error("shared region is " + std::to_string(reply.size) + " bytes, expected " +
                          std::to_string(expected_bytes));
  }
  void* p = ::mmap(nullptr, reply.size, PROT_READ | PROT_WRITE, MAP_SHARED, region.get(), 0);
  if (p == MAP_FAILED) return resource_exhausted(std::string("mmap of shared region: ") + std::strerror(errno));
  return std::shared_ptr<MappedRegion>(new MappedRegion(p, reply.size));
}

MappedRegion::~MappedRegion() { ::munmap(data_, size_); }

}  // namespace epx
