// Kernels that drive EPX from the GPU for the GPU tests (the benchmark's
// kernels, which the tests use too, are //tools/device:bench_kernels).
// Launchers take raw pointers and a stream; they need no CUDA headers.
#pragma once

#include <cstdint>

#include "epx/device.cuh"
#include "epx/status.h"

namespace epx::gpu {

// Byte `i` of the block a rank sends in a test round.
inline uint8_t test_pattern(uint32_t src_rank, uint32_t round, uint64_t i) {
  uint64_t x = (uint64_t{src_rank} << 40) ^ (uint64_t{round} << 32) ^ i;
  x *= 0x9E3779B97F4A7C15ull;
  return static_cast<uint8_t>(x >> 56);
}

// Every thread owns block b (grid-stride): writes test_pattern bytes of the
// block into the mapped source window (at offsets[b]), then posts a
// write+signal of it to dst_rank's window at the same offset, counting on
// `signal`. warp_post: use the warp-cooperative post.
Status launch_send_blocks(DeviceRing ring, uint8_t* src_window_dev, uint16_t src_window, uint16_t dst_window,
                          uint32_t dst_rank, uint32_t src_rank, uint32_t round, const uint64_t* offsets_dev,
                          const uint32_t* sizes_dev, uint32_t blocks, uint32_t signal, bool warp_post, int grid,
                          int block, void* stream);

// One thread waits for signal >= value; *ok_dev = 1 on success, 0 on timeout.
Status launch_wait_signal(DeviceSignals signals, uint32_t index, uint64_t value, uint64_t timeout_ns, int* ok_dev,
                          void* stream);

// Posts one descriptor as given (tests send bad ones on purpose).
Status launch_post_raw(DeviceRing ring, ring::RingSlot slot, void* stream);

// Every warp stores its share of `bytes` from src to same-node rank
// `dst_rank`'s buffer through the peer table (NVLink). *ok_dev = 0 when the
// rank has no peer pointer (it is on another node).
Status launch_peer_store(DevicePeers peers, uint32_t dst_rank, const void* src, uint64_t bytes, int* ok_dev, int grid,
                         int block, void* stream);

}  // namespace epx::gpu
