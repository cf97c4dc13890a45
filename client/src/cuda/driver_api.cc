#include "client/src/cuda/driver_api.h"

#include <cuda_runtime_api.h>

#include "cuda/cuda_status.h"

namespace epx::cuda_driver {
namespace {

// The driver ABI the SDK is written against: each symbol as of CUDA 12.0,
// whose signatures match the _vNNNN typedefs above.
constexpr unsigned int kAbiVersion = 12000;

template <typename Fn>
Status resolve(const char* symbol, Fn* out) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  EPX_RETURN_IF_ERROR(
      cuda_status(cudaGetDriverEntryPointByVersion(symbol, &fn, kAbiVersion, cudaEnableDefault, &found),
                  std::string("cudaGetDriverEntryPointByVersion(") + symbol + ")"));
  if (found != cudaDriverEntryPointSuccess || fn == nullptr) {
    return failed_precondition(std::string("the CUDA driver has no ") + symbol + " (as of CUDA 12.0)");
  }
  *out = reinterpret_cast<Fn>(fn);
  return Status();
}

Result<Api> load() {
  Api a = {};
  EPX_RETURN_IF_ERROR(resolve("cuDeviceGet", &a.device_get));
  EPX_RETURN_IF_ERROR(resolve("cuDeviceGetAttribute", &a.device_get_attribute));
  EPX_RETURN_IF_ERROR(resolve("cuDevicePrimaryCtxGetState", &a.primary_ctx_get_state));
  EPX_RETURN_IF_ERROR(resolve("cuGetErrorName", &a.get_error_name));
  EPX_RETURN_IF_ERROR(resolve("cuGetErrorString", &a.get_error_string));
  EPX_RETURN_IF_ERROR(resolve("cuMemGetAllocationGranularity", &a.mem_get_allocation_granularity));
  EPX_RETURN_IF_ERROR(resolve("cuMemCreate", &a.mem_create));
  EPX_RETURN_IF_ERROR(resolve("cuMemRelease", &a.mem_release));
  EPX_RETURN_IF_ERROR(resolve("cuMemAddressReserve", &a.mem_address_reserve));
  EPX_RETURN_IF_ERROR(resolve("cuMemAddressFree", &a.mem_address_free));
  EPX_RETURN_IF_ERROR(resolve("cuMemMap", &a.mem_map));
  EPX_RETURN_IF_ERROR(resolve("cuMemUnmap", &a.mem_unmap));
  EPX_RETURN_IF_ERROR(resolve("cuMemSetAccess", &a.mem_set_access));
  EPX_RETURN_IF_ERROR(resolve("cuMemGetHandleForAddressRange", &a.mem_get_handle_for_address_range));
  // Optional: only enqueue_wait needs it, and it says so when it is missing.
  if (!resolve("cuStreamWaitValue64", &a.stream_wait_value64).ok()) a.stream_wait_value64 = nullptr;
  return a;
}

}  // namespace

Result<const Api*> api() {
  // Resolved once per process; immutable afterwards.
  static const Result<Api> table = load();
  if (!table.ok()) return table.status();
  return &table.value();
}

Status status(const Api& api, CUresult result, const std::string& what) {
  if (result == CUDA_SUCCESS) return Status();
  const char* name = nullptr;
  const char* text = nullptr;
  if (api.get_error_name(result, &name) != CUDA_SUCCESS || name == nullptr) name = "CUDA_ERROR_?";
  if (api.get_error_string(result, &text) != CUDA_SUCCESS || text == nullptr) text = "";
  const bool no_gpu = result == CUDA_ERROR_NO_DEVICE || result == CUDA_ERROR_NOT_INITIALIZED ||
                      result == CUDA_ERROR_INVALID_DEVICE;
  // What this GPU, driver or system cannot do (GPUDirect flags, dma-buf
  // export): a precondition, so callers such as GpuWindow fall back.
  const bool unsupported = result == CUDA_ERROR_NOT_SUPPORTED || result == CUDA_ERROR_NOT_PERMITTED;
  return Status(no_gpu ? StatusCode::kUnavailable
                       : unsupported ? StatusCode::kFailedPrecondition : StatusCode::kInternal,
                what + ": " + name + " (" + text + ") [" + std::to_string(static_cast<int>(result)) + "]");
}

void check_release(const Api& api, CUresult result, const char* what) {
  if (result == CUDA_SUCCESS || result == CUDA_ERROR_DEINITIALIZED) return;
  log_release_failure(status(api, result, what));
}

}  // namespace epx::cuda_driver
