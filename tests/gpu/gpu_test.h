// Shared by the GPU test binaries. Their main() is //kernels:gpu_test_main,
// which runs no test case where there is no GPU and reports the binary
// skipped; CI builds them, tools/device/run.sh runs them.
#pragma once

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <iostream>

// Ends a test case that cannot run here (e.g. it needs two GPUs) and reports
// it: a line "EPX_TEST_SKIPPED: <why>" makes tools/test.sh and
// tools/device/run.sh count the binary as skipped, not passed.
#define SKIP_TEST_CASE(why)                                     \
  do {                                                          \
    std::cout << "EPX_TEST_CASE_SKIPPED: " << why << std::endl; \
    return;                                                     \
  } while (0)

#define CUDA_OK(x) REQUIRE_MESSAGE((x) == cudaSuccess, #x " failed: " << cudaGetErrorString(cudaGetLastError()))
