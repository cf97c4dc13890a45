#include "daemon/fabric/memory_registration.h"

#include <rdma/fi_domain.h>

#include <string>

namespace epx::daemon {

Result<MrPtr> register_memory(Rail& rail, void* data, size_t length, uint64_t requested_key) {
  fid_mr* mr = nullptr;
  int ret = fi_mr_reg(rail.domain(), data, length, FI_WRITE | FI_REMOTE_WRITE | FI_READ | FI_REMOTE_READ, 0,
                      requested_key, 0, &mr, nullptr);
  if (ret != 0) {
    return fi_status(ret, "fi_mr_reg of " + std::to_string(length) + " bytes on rail " + std::to_string(rail.index()));
  }
  return MrPtr(mr);
}

}  // namespace epx::daemon
