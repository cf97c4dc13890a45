#include "cuda/cuda_device.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include "cuda/cuda_status.h"

namespace epx {
namespace {

// Without a driver the runtime answers cudaErrorInsufficientDriver, the same
// error as a driver that is merely too old. Whether libcuda.so.1 loads at all
// tells "no driver" from "wrong driver".
bool driver_library_loads() {
  void* handle = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (handle == nullptr) return false;
  dlclose(handle);
  return true;
}

}  // namespace

Result<int> count_cuda_devices() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  (void)cudaGetLastError();  // clear the runtime's last error so it does not leak into later checks
  if (error == cudaSuccess) return count;
  if (error == cudaErrorNoDevice) return 0;
  if (error == cudaErrorInsufficientDriver && !driver_library_loads()) return 0;
  return cuda_status(error, "cudaGetDeviceCount");
}

bool cuda_device_present() {
  Result<int> count = count_cuda_devices();
  return count.ok() && count.value() > 0;
}

}  // namespace epx
