#include "proto/fd/scm_rights.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace epx {
namespace {

// Room for the most descriptors one message may carry; aligned for the
// cmsghdr the CMSG_* macros place at its start.
struct ControlBuffer {
  alignas(cmsghdr) char bytes[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
};

}  // namespace

Status send_with_fds(int socket, const void* data, size_t bytes, const std::vector<int>& fds, int flags) {
  if (fds.size() > kMaxFdsPerMessage) {
    return invalid_argument("cannot attach " + std::to_string(fds.size()) + " descriptors to one message (at most " +
                            std::to_string(kMaxFdsPerMessage) + ")");
  }
  for (int fd : fds) {
    if (fd < 0) return invalid_argument("no descriptor to send (fd " + std::to_string(fd) + ")");
  }
  // A stream socket carries descriptors only together with data.
  if (bytes == 0) return invalid_argument("descriptors travel with at least one byte of data");
  iovec iov{const_cast<void*>(data), bytes};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ControlBuffer control;
  if (!fds.empty()) {
    msg.msg_control = control.bytes;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | flags);
  while (n < 0 && errno == EINTR) n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | flags);  // interrupted before sending
  if (n < 0) return unavailable(std::string("sendmsg: ") + std::strerror(errno));
  if (static_cast<size_t>(n) != bytes) {
    return unavailable("sendmsg sent " + std::to_string(n) + " of " + std::to_string(bytes) + " bytes");
  }
  return Status();
}

Result<ReceivedFds> receive_with_fds(int socket, void* data, size_t bytes, size_t max_fds, int flags) {
  if (max_fds == 0 || max_fds > kMaxFdsPerMessage) {
    return invalid_argument("can receive 1.." + std::to_string(kMaxFdsPerMessage) + " descriptors, not " +
                            std::to_string(max_fds));
  }
  iovec iov{data, bytes};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ControlBuffer control;
  msg.msg_control = control.bytes;
  // Sized for max_fds, not the whole buffer: the kernel closes descriptors
  // beyond what the control buffer holds and sets MSG_CTRUNC.
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
  ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | flags);
  // A signal that arrives while a blocking call waits is no failure of the
  // socket: wait again (a non-blocking caller is told to try again below).
  while (n < 0 && errno == EINTR && (flags & MSG_DONTWAIT) == 0) n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | flags);
  ReceivedFds received;
  if (n < 0) {
    const int error = errno;
    if ((flags & MSG_DONTWAIT) != 0 && (error == EAGAIN || error == EWOULDBLOCK || error == EINTR)) {
      received.would_block = true;
      return received;
    }
    return unavailable(std::string("recvmsg: ") + std::strerror(error));
  }
  received.bytes = static_cast<size_t>(n);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      received.fds.emplace_back(fd);
    }
  }
  received.truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  return received;
}

}  // namespace epx
