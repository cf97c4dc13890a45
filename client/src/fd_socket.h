// The SDK's side of the daemon's fd socket (client/internal/fd_protocol.h):
// one connection per request.
#pragma once

#include <cstdint>
#include <string>

#include "epx/status.h"

namespace epx {

// Closes a file descriptor on scope exit.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& o) noexcept : fd_(o.release()) {}
  ScopedFd& operator=(ScopedFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { reset(); }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// A unix stream socket connected to `path`; sends and receives time out
// after 5 s (the daemon answers at once).
Result<ScopedFd> connect_fd_socket(const std::string& path);

// Sends `fd` (a copy; the caller keeps its own) to the daemon for
// `client_id` and returns the token that names it in CreateDeviceWindow.
// Blocks at most about 5 s.
Result<uint64_t> submit_fd(const std::string& fd_socket, uint64_t client_id, int fd);

}  // namespace epx
