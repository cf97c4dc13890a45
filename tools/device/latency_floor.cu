#include "tools/device/latency_floor.h"

#include <cuda_runtime.h>

namespace epx::gpu {
namespace {

__device__ inline bool wait_single_spin(const DeviceSignals& s, uint64_t value, uint64_t timeout_ns) {
  // The floor's own wait: one acquire load at a time, no sleep.
  const uint64_t start = device_now_ns();
  while (ring::ring_load_acquire(&s.words[0]) < value) {
    if (device_now_ns() - start > timeout_ns) return false;
  }
  return true;
}

__global__ void floor_pingpong(FloorMode mode, uint64_t* to_cpu, DeviceRing ring, DeviceSignals s, uint32_t iters,
                               uint64_t* elapsed, int* ok) {
  constexpr uint64_t kTimeout = 2000000000ull;
  const uint64_t start = device_now_ns();
  for (uint32_t i = 1; i <= iters; ++i) {
    bool good = true;
    switch (mode) {
      case FloorMode::kFlagSingle:
        ring::ring_store_release(to_cpu, uint64_t{i});
        good = wait_single_spin(s, i, kTimeout);
        break;
      case FloorMode::kFlagPipelined:
        ring::ring_store_release(to_cpu, uint64_t{i});
        good = wait_signal_pipelined(s, 0, i, kTimeout);
        break;
      case FloorMode::kRingSingle:
        good = post_signal(ring, 0, 0, 1) && wait_signal_single(s, 0, i, kTimeout);
        break;
      case FloorMode::kRingPipelined:
        good = post_signal(ring, 0, 0, 1) && wait_signal_pipelined(s, 0, i, kTimeout);
        break;
    }
    if (!good) {
      *ok = 0;
      return;
    }
  }
  elapsed[0] = device_now_ns() - start;
  *ok = 1;
}

}  // namespace

Status launch_floor_pingpong(FloorMode mode, uint64_t* to_cpu, DeviceRing ring, DeviceSignals signals,
                             uint32_t iters, uint64_t* elapsed_ns_dev, int* ok_dev, void* stream) {
  floor_pingpong<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(mode, to_cpu, ring, signals, iters, elapsed_ns_dev,
                                                                  ok_dev);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return Status();
  return internal_error(std::string("floor_pingpong: ") + cudaGetErrorName(e) + " " + cudaGetErrorString(e));
}

}  // namespace epx::gpu
