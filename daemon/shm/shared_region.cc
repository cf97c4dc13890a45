#include "daemon/shm/shared_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace epx::daemon {

Result<std::unique_ptr<SharedRegion>> SharedRegion::create(const std::string& name, size_t size) {
  if (size == 0) return invalid_argument("shared region " + name + ": size 0");
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size = (size + page - 1) / page * page;
  std::unique_ptr<SharedRegion> r(new SharedRegion());
  r->fd_.reset(memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (r->fd_.get() < 0) return resource_exhausted("memfd_create " + name + ": " + std::strerror(errno));
  if (ftruncate(r->fd_.get(), static_cast<off_t>(size)) != 0) {
    return resource_exhausted("ftruncate " + name + " to " + std::to_string(size) + ": " + std::strerror(errno));
  }
  if (fcntl(r->fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return internal_error("sealing " + name + ": " + std::strerror(errno));
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd_.get(), 0);
  if (p == MAP_FAILED) return resource_exhausted("mmap " + name + ": " + std::strerror(errno));
  r->data_ = p;
  r->size_ = size;
  return r;
}

SharedRegion::~SharedRegion() {
  if (data_ != nullptr) munmap(data_, size_);
}

}  // namespace epx::daemon
