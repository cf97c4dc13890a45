// Turns a cudaError_t into an epx::Status. For translation units that already
// use the CUDA runtime (kernels' .cu files, GPU tests): it includes
// cuda_runtime_api.h, so public launcher headers must not include it.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "epx/status.h"

namespace epx::kernels {

// OK for cudaSuccess; otherwise "<context>: cudaErrorX: <description>".
// No driver / no device are UNAVAILABLE (the machine lacks a GPU); every other
// CUDA error is INTERNAL.
inline Status cuda_status(cudaError_t error, const std::string& context) {
  if (error == cudaSuccess) return Status();
  std::string message = context + ": " + cudaGetErrorName(error) + ": " + cudaGetErrorString(error);
  if (error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver) return unavailable(std::move(message));
  return internal_error(std::move(message));
}

}  // namespace epx::kernels
