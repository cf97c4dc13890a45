// Device helpers shared by the normal-mode kernels: the seq words between
// ranks, bounded waits, and the election of a kernel's last block.
#pragma once

#include <cstdint>

#include "epx/device.cuh"
#include "kernels/normal_kernels.h"
#include "proto/ring/ring.h"

namespace epx::kernels::normal {

// Seq words (notify slots, arrivals): acquire / release at system scope, so
// the data stored before a seq is visible once the seq is seen.
__device__ inline uint64_t load_seq(const uint8_t* p) {
  return ring::ring_load_acquire(reinterpret_cast<const volatile uint64_t*>(p));
}
__device__ inline void store_seq(uint8_t* p, uint64_t v) {
  ring::ring_store_release(reinterpret_cast<volatile uint64_t*>(p), v);
}

__device__ inline bool masked(const NormalTransport& t, int rank) { return t.rank_mask[rank] != 0; }

// Waits until the seq word at `p` reaches `seq`; false after timeout_ns, with
// `code` recorded naming `rank`.
__device__ inline bool wait_seq(const NormalTransport& t, const uint8_t* p, uint64_t seq, int rank, uint32_t code) {
  uint64_t seen = load_seq(p);
  if (seen >= seq) return true;
  const uint64_t start = device_now_ns();
  for (;;) {
    seen = load_seq(p);
    if (seen >= seq) return true;
    if (device_now_ns() - start > t.timeout_ns) {
      record_error(t.error, code, static_cast<uint32_t>(rank), seq, seen);
      return false;
    }
    ring::ring_pause();
  }
}

// Called by every block after its last store of the kernel: true in exactly
// one block, the last to get here, once every other block's stores (to this
// GPU and to peers) are visible system-wide. Resets the counter for the next
// launch. Every thread of the block must call it.
__device__ inline bool last_block(uint32_t* finished) {
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    // The system fence makes this block's stores (NVLink stores to peers
    // included) visible before the count that another block's election
    // reads; pairs with the acquire below.
    __threadfence_system();
    const uint32_t before = atomicAdd(finished, 1u);
    last = before == gridDim.x - 1;
    if (last) {
      __threadfence();  // acquire side of the other blocks' fences
      *reinterpret_cast<volatile uint32_t*>(finished) = 0;
    }
  }
  __syncthreads();
  return last;
}

// 16-byte copies, one warp, `bytes` a multiple of 16.
__device__ inline void warp_copy(uint8_t* dst, const uint8_t* src, size_t bytes, int lane) {
  const int4* s = reinterpret_cast<const int4*>(src);
  int4* d = reinterpret_cast<int4*>(dst);
  const size_t n = bytes / 16;
  size_t i = lane;
  // Eight loads in flight per lane before their stores: a warp keeps 4 KiB
  // moving, which is what hides NVLink's latency with few SMs.
  for (; i + 224 < n; i += 256) {
    int4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = __ldg(s + i + 32 * u);
#pragma unroll
    for (int u = 0; u < 8; ++u) d[i + 32 * u] = v[u];
  }
  for (; i < n; i += 32) d[i] = __ldg(s + i);
}

}  // namespace epx::kernels::normal
