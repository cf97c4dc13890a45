// epx device API: what a CUDA kernel uses to move bytes through EPX.
//
// A kernel receives an epx::DeviceRing and epx::DeviceSignals by value
// (trivially copyable handles made by epx::CudaRing / epx::CudaSignals on
// the host) and posts descriptors into the daemon's ring in host memory; a
// proxy thread of epxd turns them into fabric writes. Same ABI as
// proto/ring/ring.h, the contract with the daemon.
//
//   __global__ void k(epx::DeviceRing ring, epx::DeviceSignals sig) {
//     if (threadIdx.x == 0) {
//       epx::post_write_signal(ring, /*dst*/ 1, src_window, 0, dst_window, 0, bytes, /*signal*/ 3, 1);
//       epx::wait_signal(sig, /*index*/ 3, /*value*/ 1, /*timeout_ns*/ 1000000000ull);
//     }
//   }
//
// Nothing here traps or spins forever: a post on a ring that stays full and
// a wait that times out record a DeviceError the host reads with
// CudaRing::device_error() / CudaSignals::device_error(), and return false.
#pragma once

#include <stdint.h>

#include "proto/ring/ring.h"

namespace epx {

// The first failure a kernel hit, in host-mapped memory.
struct DeviceError {
  uint32_t code;       // 0 none, 1 ring full timeout, 2 signal wait timeout, 3 flush timeout
  uint32_t index;      // signal index (code 2)
  uint64_t expected;   // value waited for
  uint64_t seen;       // value at the timeout
};

struct DeviceRing {
  ring::RingHeader* header;         // host memory, mapped into the GPU
  ring::RingSlot* slots;
  uint32_t capacity;
  unsigned long long* claim;        // device memory: ticket counter of this ring's producers
  unsigned long long* cached_head;  // device memory: last head read from the header
  unsigned long long* fences;       // device memory: kFlush descriptors posted
  DeviceError* error;               // host memory, mapped
  uint64_t timeout_ns;              // how long a post waits for space
};

// Same-node ranks' GPU buffers, mapped into this GPU (CUDA IPC or, within
// one process, peer access): ptrs[rank] is null for ranks on other nodes,
// whose data goes through the ring instead.
struct DevicePeers {
  uint8_t* const* ptrs;  // device memory, world entries
  uint32_t world;
};

struct DeviceSignals {
  uint64_t* words;      // this rank's signal array (host memory, mapped)
  uint32_t count;
  DeviceError* error;
};

#if defined(__CUDACC__)

__device__ inline uint64_t device_now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ inline void record_error(DeviceError* e, uint32_t code, uint32_t index, uint64_t expected, uint64_t seen) {
  // First error wins; the fields are written before code becomes visible
  // (the host reads code first, after the kernel or stream completed).
  if (atomicCAS(reinterpret_cast<unsigned int*>(&e->code), 0u, 0xFFFFFFFFu) == 0u) {
    e->index = index;
    e->expected = expected;
    e->seen = seen;
    __threadfence_system();
    atomicExch(reinterpret_cast<unsigned int*>(&e->code), code);
  }
}

// A GPU store to host memory can sit in the GPU's caches for microseconds
// before it crosses PCIe (a release store orders it but does not send it).
// A system fence after the slot's release store sends it now, so the proxy
// sees the descriptor one PCIe write later.
__device__ inline void push_to_host() { __threadfence_system(); }

// The producers' cached copy of the consumer's head (device memory).
__device__ inline uint64_t cached_head(const DeviceRing& r) {
  return *reinterpret_cast<volatile unsigned long long*>(r.cached_head);
}

// Waits until `ticket`'s slot is free. `head` is a value of the cached head
// read before the ticket was claimed (older is safe: it only makes the ring
// look fuller); the header's head is read only when the ring looks full.
__device__ inline bool wait_for_slot(const DeviceRing& r, uint64_t ticket, uint64_t head) {
  if (ring::ring_has_space(ticket, head, r.capacity)) return true;
  const uint64_t start = device_now_ns();
  for (;;) {
    // acquire: pairs with the proxy's release store of head.
    head = ring::ring_load_acquire(&r.header->head);
    atomicMax(r.cached_head, static_cast<unsigned long long>(head));
    if (ring::ring_has_space(ticket, head, r.capacity)) return true;
    if (device_now_ns() - start > r.timeout_ns) return false;
    ring::ring_pause();
  }
}

// Claims one slot, fills it, publishes it. False (and a DeviceError) when
// the ring stayed full for timeout_ns (daemon gone or stalled): the claimed
// slot is then never published, so the ring is unusable afterwards.
__device__ inline bool post(const DeviceRing& r, const ring::RingSlot& d) {
  // The head is read before the claim so the two device-memory round trips
  // overlap instead of following each other.
  const uint64_t head = cached_head(r);
  const uint64_t ticket = atomicAdd(r.claim, 1ull);
  if (!wait_for_slot(r, ticket, head)) {
    record_error(r.error, 1, 0, ticket, ring::ring_load_acquire(&r.header->head));
    return false;
  }
  ring::ring_publish(r.slots, r.capacity, ticket, d);
  push_to_host();
  return true;
}

// Warp-cooperative post: every active lane posts its own descriptor, with
// one atomic for the whole warp.
__device__ inline bool post_warp(const DeviceRing& r, const ring::RingSlot& d) {
  const unsigned mask = __activemask();
  const int lane = threadIdx.x & 31;
  const int leader = __ffs(mask) - 1;
  const int n = __popc(mask);
  const int rank_in_warp = __popc(mask & ((1u << lane) - 1));
  const uint64_t head = cached_head(r);
  unsigned long long base = 0;
  if (lane == leader) base = atomicAdd(r.claim, static_cast<unsigned long long>(n));
  base = __shfl_sync(mask, base, leader);
  const uint64_t ticket = base + rank_in_warp;
  if (!wait_for_slot(r, ticket, head)) {
    record_error(r.error, 1, 0, ticket, ring::ring_load_acquire(&r.header->head));
    return false;
  }
  ring::ring_publish(r.slots, r.capacity, ticket, d);
  push_to_host();
  return true;
}

__device__ inline bool post_write(const DeviceRing& r, uint32_t dst_rank, uint16_t src_window, uint64_t src_offset,
                                  uint16_t dst_window, uint64_t dst_offset, uint32_t length) {
  return post(r, ring::make_write(static_cast<uint16_t>(dst_rank), ring::pack_address(src_window, src_offset),
                                  ring::pack_address(dst_window, dst_offset), length));
}

__device__ inline bool post_write_signal(const DeviceRing& r, uint32_t dst_rank, uint16_t src_window,
                                         uint64_t src_offset, uint16_t dst_window, uint64_t dst_offset,
                                         uint32_t length, uint32_t signal_index, uint32_t increment) {
  return post(r, ring::make_write_signal(static_cast<uint16_t>(dst_rank), ring::pack_address(src_window, src_offset),
                                         ring::pack_address(dst_window, dst_offset), length,
                                         ring::encode_signal(signal_index, increment)));
}

__device__ inline bool post_signal(const DeviceRing& r, uint32_t dst_rank, uint32_t signal_index, uint32_t increment) {
  return post(r, ring::make_signal(static_cast<uint16_t>(dst_rank), ring::encode_signal(signal_index, increment)));
}

// Posts a fence and waits until every write posted before it completed at
// its destination. Call from one thread.
__device__ inline bool flush(const DeviceRing& r, uint64_t timeout_ns) {
  const uint64_t target = atomicAdd(r.fences, 1ull) + 1;
  if (!post(r, ring::make_flush())) return false;
  const uint64_t start = device_now_ns();
  for (;;) {
    // acquire: pairs with the proxy's release store after the fence.
    const uint64_t done = ring::ring_load_acquire(&r.header->fences_done);
    if (done >= target) return true;
    if (device_now_ns() - start > timeout_ns) {
      record_error(r.error, 3, 0, target, done);
      return false;
    }
    ring::ring_pause();
  }
}

// Where to store for `rank` over NVLink, or null when the rank is on another
// node (post to the ring then).
__device__ inline uint8_t* peer_ptr(const DevicePeers& p, uint32_t rank) {
  return rank < p.world ? p.ptrs[rank] : nullptr;
}

// Warp-cooperative copy with 16-byte accesses (both pointers 16-byte
// aligned, bytes a multiple of 16): the NVLink store path.
__device__ inline void warp_copy16(uint8_t* dst, const uint8_t* src, uint64_t bytes) {
  const int lane = threadIdx.x & 31;
  const uint4* s = reinterpret_cast<const uint4*>(src);
  uint4* d = reinterpret_cast<uint4*>(dst);
  for (uint64_t i = lane; i < bytes / 16; i += 32) d[i] = s[i];
}

__device__ inline uint64_t signal_value(const DeviceSignals& s, uint32_t index) {
  // acquire (system scope): pairs with the daemon's release add; the data
  // the signal counts is visible to this thread afterwards.
  return ring::ring_load_acquire(&s.words[index]);
}

// Waits until signal `index` >= `value`. False and a DeviceError (index,
// expected, seen) on timeout, never a hang. Polls with an acquire load and a
// short sleep. Measured on the H200s (gpu_bench (f)): tight relaxed polls
// followed by one acquire fence cost ~0.65 us more per round trip (a
// system-scope fence is that expensive), and sleeps from 32 ns to 1 us
// change nothing.
__device__ inline bool wait_signal(const DeviceSignals& s, uint32_t index, uint64_t value, uint64_t timeout_ns) {
  if (index >= s.count) {
    record_error(s.error, 2, index, value, 0);
    return false;
  }
  const uint64_t start = device_now_ns();
  for (;;) {
    const uint64_t v = signal_value(s, index);
    if (v >= value) return true;
    if (device_now_ns() - start > timeout_ns) {
      record_error(s.error, 2, index, value, v);
      return false;
    }
    ring::ring_pause();
  }
}

#endif  // __CUDACC__

}  // namespace epx
