// RAII owners for libfabric objects: every fid is closed exactly once, by
// the unique_ptr that owns it.
#pragma once

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>

#include <memory>
#include <string>

#include "epx/status.h"

namespace epx::daemon {

struct FidCloser {
  template <typename T>
  void operator()(T* fid) const {
    if (fid != nullptr) fi_close(&fid->fid);
  }
};

struct FiInfoDeleter {
  void operator()(fi_info* info) const { fi_freeinfo(info); }
};

using FiInfoPtr = std::unique_ptr<fi_info, FiInfoDeleter>;
using FabricPtr = std::unique_ptr<fid_fabric, FidCloser>;
using DomainPtr = std::unique_ptr<fid_domain, FidCloser>;
using AvPtr = std::unique_ptr<fid_av, FidCloser>;
using CqPtr = std::unique_ptr<fid_cq, FidCloser>;
using EpPtr = std::unique_ptr<fid_ep, FidCloser>;
using MrPtr = std::unique_ptr<fid_mr, FidCloser>;

// libfabric return code -> Status with what was being done ("fi_enable on rail 0").
inline Status fi_status(int ret, const std::string& what) {
  if (ret == 0) return Status();
  return Status(ret == -FI_EAGAIN ? StatusCode::kUnavailable : StatusCode::kInternal,
                what + ": " + fi_strerror(-ret) + " (" + std::to_string(ret) + ")");
}

}  // namespace epx::daemon
