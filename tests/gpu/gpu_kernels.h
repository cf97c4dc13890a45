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
// `signal`. Warp w of the grid is channel w of `rings` (grid * block / 32
// channels at most: INVALID_ARGUMENT otherwise). warp_post: the warp posts
// together (post_warp); else its lanes post one after the other.
Status launch_send_blocks(DeviceRingGroup rings, uint8_t* src_window_dev, uint16_t src_window, uint16_t dst_window,
                          uint32_t dst_rank, uint32_t src_rank, uint32_t round, const uint64_t* offsets_dev,
                          const uint32_t* sizes_dev, uint32_t blocks, uint32_t signal, bool warp_post, int grid,
                          int block, void* stream);

// One thread waits for signal >= value; *ok_dev = 1 on success, 0 on timeout.
Status launch_wait_signal(DeviceSignals signals, uint32_t index, uint64_t value, uint64_t timeout_ns, int* ok_dev,
                          void* stream);

// Posts one descriptor as given (tests send bad ones on purpose).
Status launch_post_raw(DeviceRing ring, ring::RingSlot slot, void* stream);

// Device-side checked encodings: one builder call with a value its
// descriptor cannot carry. *posted_dev = what the builder returned (1/0).
enum class BadArgumentCase {
  kIncrementTooLarge,    // post_write_signal, increment 4096
  kDstRankTooLarge,      // post_write, dst_rank 70000
  kSignalIndexTooLarge,  // post_signal, index 2^20
  kIncrementZero,        // post_signal, increment 0
  kStridedCountZero,     // post_write_strided, count 0
};
Status launch_post_bad_argument(DeviceRing ring, BadArgumentCase which, int* posted_dev, void* stream);

// Block b's thread 0 is channel b of `rings`: it posts `per_channel`
// write+signals of `bytes` each from src_window at offset
// (b * per_channel + i) * stride to the same offset of dst_rank's
// dst_window, counting on `signal`, then flushes. *ok_dev[b] = 1 when all
// posts and the flush succeeded. Launched with `blocks` blocks of 32 threads.
Status launch_channel_writes(DeviceRingGroup rings, uint32_t blocks, uint32_t dst_rank, uint16_t src_window,
                             uint16_t dst_window, uint32_t per_channel, uint32_t bytes, uint64_t stride,
                             uint32_t signal, int* ok_dev, void* stream);

// One thread sets *flag_dev = 1 (runs after whatever the stream waited for).
Status launch_set_flag(int* flag_dev, void* stream);

// Every warp stores its share of `bytes` from src to same-node rank
// `dst_rank`'s buffer through the peer table (NVLink). *ok_dev = 0 when the
// rank has no peer pointer (it is on another node).
Status launch_peer_store(DevicePeers peers, uint32_t dst_rank, const void* src, uint64_t bytes, int* ok_dev, int grid,
                         int block, void* stream);

}  // namespace epx::gpu
