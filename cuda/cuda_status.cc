#include "cuda/cuda_status.h"

#include <cstdio>
#include <utility>

namespace epx {

Status cuda_status(cudaError_t error, const std::string& context) {
  if (error == cudaSuccess) return Status();
  (void)cudaGetLastError();  // reported here; see the header for sticky errors
  std::string message = context + ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")";
  if (error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver) return unavailable(std::move(message));
  return internal_error(std::move(message));
}

void check_cuda_release(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return;
  if (error == cudaErrorCudartUnloading) {
    (void)cudaGetLastError();
    return;
  }
  log_release_failure(cuda_status(error, what));
}

void log_release_failure(const Status& status) {
  if (status.ok()) return;
  std::fprintf(stderr, "epx: %s\n", status.to_string().c_str());
}

}  // namespace epx
