// MappedRegion: a shared region the daemon created, fetched over the fd
// socket (SCM_RIGHTS) and mapped into this process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "epx/status.h"

namespace epx {

class MappedRegion {
 public:
  static Result<std::shared_ptr<MappedRegion>> fetch(const std::string& fd_socket, uint64_t token,
                                                     uint64_t expected_bytes);
  ~MappedRegion();
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;

  uint8_t* data() const { return static_cast<uint8_t*>(data_); }
  size_t size() const { return size_; }

 private:
  MappedRegion(void* data, size_t size) : data_(data), size_(size) {}
  void* data_;
  size_t size_;
};

}  // namespace epx
