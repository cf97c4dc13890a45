// UniqueFd: the owner of a file descriptor, in the SDK and in epxd alike.
#pragma once

#include <unistd.h>

#include <utility>

namespace epx {

// Owns one file descriptor (or none: -1) and closes it exactly once, when
// destroyed or reset. Move-only: a moved-from owner holds none.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

  // Hands the descriptor to the caller, who must close it.
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }

  // Closes the descriptor held (if any) and takes `fd`. close()'s result is
  // deliberately not checked: Linux releases the descriptor even when close
  // reports EINTR or EIO, so retrying could close a descriptor another
  // thread just opened, and the objects EPX passes around (sockets, memfds,
  // dma-bufs) have no buffered writes whose loss close could report.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace epx
