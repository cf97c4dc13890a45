// cudaError_t -> epx::Status, the one conversion of the SDK's device API,
// the kernels' launchers and their tests. For translation units that already
// use the CUDA runtime: it includes cuda_runtime_api.h, so public launcher
// headers must not include it.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "epx/status.h"

namespace epx {

// OK for cudaSuccess; otherwise "<context>: cudaErrorX (description)".
// No driver / no device are UNAVAILABLE (the machine lacks a GPU); every
// other CUDA error is INTERNAL (callers that know better re-code it).
//
// An error also clears the runtime's last-error state (cudaGetLastError):
// it has been reported here, and must not be reported again by a later
// cudaGetLastError() check of unrelated work, such as the next kernel
// launch. That clears a non-sticky error (a bad argument, an allocation
// that failed) completely. A sticky error (cudaErrorIllegalAddress,
// cudaErrorLaunchFailure, ...) means the context is corrupt: every later
// call fails with it whatever is cleared, and only a new process recovers.
Status cuda_status(cudaError_t error, const std::string& context);

// For destructors, which cannot return a Status: a release call's result
// (cudaFree, cudaHostUnregister, ...). A failure is cleared as in
// cuda_status() and logged to stderr, "epx: <what>: cudaErrorX (...)":
// the resource may be leaked, and a failed release usually means a corrupt
// context that the owner should hear of. Not logged: cudaErrorCudartUnloading
// (at process exit the runtime has already released everything).
void check_cuda_release(cudaError_t error, const char* what);

// The logging half of check_cuda_release(), for release calls that report
// through a Status (the driver API's, client/src/cuda/driver_api.h).
void log_release_failure(const Status& status);

}  // namespace epx
