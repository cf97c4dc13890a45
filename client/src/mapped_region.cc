#include "mapped_region.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "fd_socket.h"

namespace epx {

Result<std::shared_ptr<MappedRegion>> MappedRegion::fetch(const std::string& fd_socket, uint64_t token,
                                                          uint64_t expected_bytes) {
  const fdproto::FdRequest request{fdproto::kMagic, token};
  EPX_ASSIGN_OR_RETURN(FdAnswer answer,
                       fd_request(fd_socket, &request, sizeof(request), /*attach=*/-1, "fetching shared region"));
  if (!answer.fd) return internal_error("epxd sent no descriptor for the shared region");
  if (answer.reply.size < expected_bytes) {
    return internal_error("shared region is " + std::to_string(answer.reply.size) + " bytes, expected " +
                          std::to_string(expected_bytes));
  }
  void* p = ::mmap(nullptr, answer.reply.size, PROT_READ | PROT_WRITE, MAP_SHARED, answer.fd.get(), 0);
  if (p == MAP_FAILED) return resource_exhausted(std::string("mmap of shared region: ") + std::strerror(errno));
  return std::shared_ptr<MappedRegion>(new MappedRegion(p, answer.reply.size));
}

MappedRegion::~MappedRegion() { ::munmap(data_, size_); }

}  // namespace epx
