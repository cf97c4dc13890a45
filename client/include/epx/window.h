// Shared memory the SDK maps from the daemon: windows, signal arrays, rings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace epx {

class MappedRegion;  // internal: an mmap of a daemon-created memfd

// A window: host memory that ranks of the job write into (and this rank
// writes from). Window ids are 1, 2, ... in creation order per rank, so
// ranks that create their windows in the same order address each other's
// windows by the same id. Valid until the Job that created it is destroyed.
class Window {
 public:
  Window(uint32_t id, std::shared_ptr<MappedRegion> region);
  uint32_t id() const { return id_; }
  uint8_t* data() const;
  size_t size() const;

 private:
  uint32_t id_;
  std::shared_ptr<MappedRegion> region_;
};

}  // namespace epx
