// Shared by the GPU test binaries: skip with a clear message where there is
// no GPU (CI builds them; tools/device/run.sh runs them), and CUDA checks.
#pragma once

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include "epx/cuda.h"

#define SKIP_WITHOUT_GPU()                                                          \
  if (epx::cuda_device_count() == 0) {                                              \
    MESSAGE("SKIPPED: no CUDA device (this GPU test runs in tools/device/run.sh)"); \
    return;                                                                         \
  }

#define CUDA_OK(x) REQUIRE_MESSAGE((x) == cudaSuccess, #x " failed: " << cudaGetErrorString(cudaGetLastError()))
