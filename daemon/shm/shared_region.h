// SharedRegion: anonymous shared memory (memfd) the daemon creates and maps,
// and hands to one client over the fd socket (SCM_RIGHTS). Sealed against
// resizing, so a client cannot truncate it under the daemon (which would
// turn the daemon's next access into SIGBUS).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "epx/status.h"
#include "proto/fd/unique_fd.h"

namespace epx::daemon {

class SharedRegion {
 public:
  // `size` is rounded up to whole pages.
  static Result<std::unique_ptr<SharedRegion>> create(const std::string& name, size_t size);
  ~SharedRegion();
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  int fd() const { return fd_.get(); }  // owned; duplicated into the client by SCM_RIGHTS

 private:
  SharedRegion() = default;
  UniqueFd fd_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace epx::daemon
