// The CUDA driver API calls of the device windows (virtual memory
// management, dma-buf export) and of stream waits on signals, resolved at run time through the runtime's
// cudaGetDriverEntryPointByVersion: epx_cuda keeps linking only libcudart,
// and the symbols come from whatever driver the machine has.
#pragma once

#include <cudaTypedefs.h>

#include <string>

#include "epx/status.h"

namespace epx::cuda_driver {

struct Api {
  PFN_cuDeviceGet_v2000 device_get;
  PFN_cuDeviceGetAttribute_v2000 device_get_attribute;
  PFN_cuDevicePrimaryCtxGetState_v7000 primary_ctx_get_state;
  PFN_cuGetErrorName_v6000 get_error_name;
  PFN_cuGetErrorString_v6000 get_error_string;
  PFN_cuMemGetAllocationGranularity_v10020 mem_get_allocation_granularity;
  PFN_cuMemCreate_v10020 mem_create;
  PFN_cuMemRelease_v10020 mem_release;
  PFN_cuMemAddressReserve_v10020 mem_address_reserve;
  PFN_cuMemAddressFree_v10020 mem_address_free;
  PFN_cuMemMap_v10020 mem_map;
  PFN_cuMemUnmap_v10020 mem_unmap;
  PFN_cuMemSetAccess_v10020 mem_set_access;
  PFN_cuMemGetHandleForAddressRange_v11070 mem_get_handle_for_address_range;
  // Optional (null when the driver lacks them): CudaSignals::enqueue_wait.
  PFN_cuStreamWaitValue64_v11070 stream_wait_value64;
};

// The table, resolved on first use (thread-safe); UNAVAILABLE without a
// driver, FAILED_PRECONDITION when the driver lacks one of the calls.
Result<const Api*> api();

// OK for CUDA_SUCCESS; else "what: CUDA_ERROR_X (text)", UNAVAILABLE when
// there is no usable driver or device, INTERNAL otherwise.
Status status(const Api& api, CUresult result, const std::string& what);

// For destructors, which cannot return a Status: a release call's result
// (cuMemRelease, cuMemUnmap, ...). A failure is logged (log_release_failure
// in cuda/cuda_status.h), except CUDA_ERROR_DEINITIALIZED: the driver is
// shutting down at process exit and has released everything itself.
void check_release(const Api& api, CUresult result, const char* what);

}  // namespace epx::cuda_driver
