// Kernels that drive EPX from the GPU for gpu_bench (the GPU tests use some
// of them too). Launchers take raw pointers and a stream; they need no CUDA
// headers.
#pragma once

#include <cstdint>

#include "epx/device.cuh"
#include "epx/status.h"

namespace epx::gpu {

// Ping-pong for latency: role 0 pings dst (signal 0 += 1) and waits for the
// pong; role 1 answers. elapsed_ns_dev[0] = total time of `iters` round
// trips on role 0; *ok_dev = 0 if any wait timed out.
Status launch_pingpong(DeviceRing ring, DeviceSignals signals, int role, uint32_t iters, uint32_t bytes,
                       uint32_t dst_rank, uint16_t src_window, uint16_t dst_window, uint64_t* elapsed_ns_dev,
                       int* ok_dev, void* stream);

// Many warps post `per_thread` small writes each (distinct, non-adjacent
// offsets when !adjacent; adjacent runs per warp when adjacent), each
// write+signal (signal `signal`) unless adjacent (plain writes, then the
// caller flushes). Warp w posts into channel w: grid * block / 32 must not
// exceed rings.channels (INVALID_ARGUMENT). For descriptor-rate measurements.
Status launch_post_many(DeviceRingGroup rings, uint32_t dst_rank, uint16_t src_window, uint16_t dst_window,
                        uint32_t bytes, uint32_t per_thread, uint32_t signal, bool adjacent, int grid, int block,
                        void* stream);

// Lane 0 of each warp posts `per_thread` kWriteStrided descriptors of 32
// elements of `bytes` (gaps between them, wrapping at window_bytes): the
// proxy's rate when one descriptor names many writes. Channels as above.
Status launch_post_strided(DeviceRingGroup rings, uint32_t dst_rank, uint16_t src_window, uint16_t dst_window,
                           uint32_t bytes, uint32_t per_thread, uint64_t window_bytes, int grid, int block,
                           void* stream);

// One thread streams `count` writes of `bytes` each (offsets cycling through
// `window_bytes`), each counting on `signal`.
Status launch_stream(DeviceRing ring, uint32_t dst_rank, uint16_t src_window, uint16_t dst_window, uint32_t bytes,
                     uint64_t window_bytes, uint32_t count, uint32_t signal, void* stream);

// NVLink: `threads` threads copy `bytes` from src to dst (a peer GPU's
// memory) with 16-byte stores.
Status launch_peer_copy(const void* src, void* dst, uint64_t bytes, int grid, int block, void* stream);

}  // namespace epx::gpu
