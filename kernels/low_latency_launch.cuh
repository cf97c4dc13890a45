// Host side of the LL launchers: the shared-memory opt-in every kernel with
// shape-sized shared memory needs.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_status.h"
#include "epx/status.h"

namespace epx::kernels::ll {

// Checks that `bytes` of dynamic shared memory fit one block of this device
// and opts `kernel` in when they exceed the 48 KiB default.
template <typename Kernel>
Status reserve_shared(const char* who, Kernel kernel, size_t bytes) {
  int device = 0, limit = 0;
  EPX_RETURN_IF_ERROR(cuda_status(cudaGetDevice(&device), std::string(who) + ": cudaGetDevice"));
  EPX_RETURN_IF_ERROR(cuda_status(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                                  std::string(who) + ": shared memory limit"));
  if (bytes > static_cast<size_t>(limit)) {
    return invalid_argument(std::string(who) + ": the shape needs " + std::to_string(bytes) +
                            " bytes of shared memory per block, the device has " + std::to_string(limit));
  }
  if (bytes <= 48 * 1024) return Status();
  return cuda_status(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
                     std::string(who) + ": cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

}  // namespace epx::kernels::ll
