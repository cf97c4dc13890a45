// epx device API: what a CUDA kernel uses to move bytes through EPX.
//
// A kernel receives an epx::DeviceRingGroup (or one epx::DeviceRing) and
// epx::DeviceSignals by value (trivially copyable handles made by
// epx::CudaRingGroup / CudaRing / CudaSignals on the host) and posts
// descriptors into the daemon's rings in host memory; a proxy thread of
// epxd turns them into fabric writes. Same ABI as proto/ring/ring.h (v2),
// the contract with the daemon.
//
// Rings of a CudaRingGroup are SINGLE-PRODUCER: a ring belongs to one
// channel, i.e. one thread, or one warp posting together (post_warp), at a
// time. A kernel with many posting blocks opens a group with a channel per
// block and block b posts to group.ring(b) (b % channels): the launch must
// then have at most `channels` blocks that post at once (each block's posts
// come from one thread or one warp). Nothing is shared between channels, so
// there is no claim atomic, and a post that gives up leaves the ring as it
// was (its channel can post again later). The one ring of a CudaRing may be
// shared by any threads instead: its posts take a lock word in device
// memory (DeviceRing::lock; two uncontended atomics a post, and contention
// when many post at once), which is what the group avoids.
//
//   __global__ void k(epx::DeviceRingGroup rings, epx::DeviceSignals sig) {
//     const epx::DeviceRing& ring = rings.ring(blockIdx.x);
//     if (threadIdx.x == 0) {
//       epx::post_write_signal(ring, /*dst*/ 1, src_window, 0, dst_window, 0, bytes, /*signal*/ 3, 1);
//       epx::wait_signal(sig, /*index*/ 3, /*value*/ 1, /*timeout_ns*/ 1000000000ull);
//     }
//   }
//
// Nothing here traps or spins forever: a post on a ring that stays full, a
// wait that times out, and a builder given a value its descriptor cannot
// carry record a DeviceError (named codes below) that the host reads with
// CudaRing(Group)::device_error() / CudaSignals::device_error(), and
// return false.
#pragma once

#include <stdint.h>

#include "proto/ring/ring.h"

namespace epx {

// DeviceError::code values of the SDK (kernels built on it add their own,
// from 16 up: kernels/low_latency_kernels.h).
enum class DeviceErrorCode : uint32_t {
  kNone = 0,
  kRingFullTimeout = 1,    // index: 0; expected: the ticket; seen: the consumer's head
  kSignalWaitTimeout = 2,  // index: the signal; expected: the value waited for; seen: the last value
  kFlushTimeout = 3,       // index: 0; expected: watermark waited for; seen: the last watermark
  kBadArgument = 4,        // index: DeviceArgument; expected: the largest allowed value; seen: the value
  kPeerTimeout = 5,        // index: the rank waited for; expected/seen: as the waiting kernel defines
  kRingBusyTimeout = 6,    // a shared ring's lock stayed taken for timeout_ns; index: 0
};

// Which argument a kBadArgument names (DeviceError::index).
enum class DeviceArgument : uint32_t {
  kDstRank = 1,         // > 65535 (16 bits in a descriptor)
  kSignalIndex = 2,     // > 2^20 - 1 (20 bits of the immediate), or >= DeviceSignals::count for a wait
  kIncrement = 3,       // 0 or > 4095 (12 bits of the immediate)
  kSrcOffset = 4,       // > 2^48 - 1
  kDstOffset = 5,       // > 2^48 - 1
  kCount = 6,           // strided count 0 or > ring::kMaxStridedCount
  kLength = 7,          // strided element length 0
};

// The first failure a kernel hit, in host-mapped memory.
struct DeviceError {
  uint32_t code;       // DeviceErrorCode (or a kernel's own code >= 16); 0 none
  uint32_t index;      // as the code says
  uint64_t expected;
  uint64_t seen;
};

// One ring, owned by one channel. All pointers stay valid while the
// CudaRing / CudaRingGroup that made it lives.
struct DeviceRing {
  ring::RingHeader* header;         // host memory, mapped into the GPU
  ring::RingSlot* slots;
  uint32_t capacity;
  uint8_t* doorbell;                // host memory, mapped: this ring's doorbell byte
  unsigned long long* tail;         // device memory: the channel's next ticket (no atomics: one producer)
  unsigned long long* cached_head;  // device memory: last head read from the header
  DeviceError* error;               // host memory, mapped
  uint64_t timeout_ns;              // how long a post waits for space (and for the lock)
  // Device memory: null for a group's single-producer ring; a lock word
  // for CudaRing's ring, which any threads may share.
  unsigned int* lock;
};

// A kernel's channels: rings[c] belongs to channel c.
struct DeviceRingGroup {
  const DeviceRing* rings;  // device memory, `channels` entries
  uint32_t channels;
#if defined(__CUDACC__)
  // The ring of channel `channel` (e.g. blockIdx.x), modulo the channels.
  __device__ const DeviceRing& ring(uint32_t channel) const { return rings[channel % channels]; }
#endif
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

using SignalScope = ring::SignalScope;

#if defined(__CUDACC__)

__device__ inline uint64_t device_now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Records the first failure (code: DeviceErrorCode, or a kernel's own >= 16).
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
__device__ inline void record_error(DeviceError* e, DeviceErrorCode code, uint32_t index, uint64_t expected,
                                    uint64_t seen) {
  record_error(e, static_cast<uint32_t>(code), index, expected, seen);
}

// True when min <= value <= max; else records kBadArgument naming `which`
// (expected: max, seen: the value).
__device__ inline bool check_range(DeviceError* e, DeviceArgument which, uint64_t value, uint64_t min, uint64_t max) {
  if (value >= min && value <= max) return true;
  record_error(e, DeviceErrorCode::kBadArgument, static_cast<uint32_t>(which), max, value);
  return false;
}
__device__ inline bool check_argument(DeviceError* e, DeviceArgument which, uint64_t value, uint64_t max) {
  return check_range(e, which, value, 0, max);
}
// An increment must be 1..4095 (0 would be a signal that counts nothing).
__device__ inline bool check_increment(DeviceError* e, uint32_t increment) {
  return check_range(e, DeviceArgument::kIncrement, increment, 1, ring::kMaxSignalIncrement);
}

// A GPU store to host memory can sit in the GPU's caches for microseconds
// before it crosses PCIe (a relaxed or release store orders it but does not
// send it). A system fence after the doorbell's store sends it now, so the
// proxy sees the descriptor one PCIe write later.
__device__ inline void push_to_host() { __threadfence_system(); }

// The channel's cached copy of the consumer's head (device memory; only
// the channel reads and writes it).
__device__ inline uint64_t cached_head(const DeviceRing& r) {
  return *reinterpret_cast<volatile unsigned long long*>(r.cached_head);
}

// The channel's next ticket (device memory; only the channel writes it).
__device__ inline uint64_t ring_tail(const DeviceRing& r) { return *reinterpret_cast<volatile unsigned long long*>(r.tail); }

// Waits until `ticket`'s slot is free; the header's head is read only when
// the cached head says the ring is full.
__device__ inline bool wait_for_slot(const DeviceRing& r, uint64_t ticket) {
  uint64_t head = cached_head(r);
  if (ring::ring_has_space(ticket, head, r.capacity)) return true;
  const uint64_t start = device_now_ns();
  for (;;) {
    // acquire: pairs with the proxy's release store of head.
    head = ring::ring_load_acquire(&r.header->head);
    *reinterpret_cast<volatile unsigned long long*>(r.cached_head) = head;
    if (ring::ring_has_space(ticket, head, r.capacity)) return true;
    if (device_now_ns() - start > r.timeout_ns) return false;
    ring::ring_pause();
  }
}

// A shared ring's lock (DeviceRing::lock); nothing for a channel's own ring.
// False (and kRingBusyTimeout) when it stayed taken for timeout_ns.
__device__ inline bool lock_ring(const DeviceRing& r) {
  if (r.lock == nullptr) return true;
  const uint64_t start = device_now_ns();
  while (atomicCAS(r.lock, 0u, 1u) != 0u) {
    if (device_now_ns() - start > r.timeout_ns) {
      record_error(r.error, DeviceErrorCode::kRingBusyTimeout, 0, 0, 0);
      return false;
    }
    ring::ring_pause();
  }
  // acquire (GPU scope): pairs with the previous holder's fence in
  // unlock_ring; its stores of the tail and cached head are visible.
  __threadfence();
  return true;
}
__device__ inline void unlock_ring(const DeviceRing& r) {
  if (r.lock == nullptr) return;
  // release (GPU scope): pairs with the next holder's fence in lock_ring.
  __threadfence();
  atomicExch(r.lock, 0u);
}

// post() that also tells the ticket it used (flush waits for it).
__device__ inline bool post_at(const DeviceRing& r, const ring::RingSlot& d, uint64_t* ticket_out) {
  if (!lock_ring(r)) return false;
  const uint64_t ticket = ring_tail(r);
  if (!wait_for_slot(r, ticket)) {
    record_error(r.error, DeviceErrorCode::kRingFullTimeout, 0, ticket, ring::ring_load_acquire(&r.header->head));
    unlock_ring(r);
    return false;
  }
  ring::ring_write_fields(r.slots, r.capacity, ticket, d);
  // Two system fences (ring.h, producer step 4). This one releases the
  // fields and everything this thread wrote before the post, such as the
  // source data the write will read; the seq and the doorbell follow it
  // relaxed (the doorbell may be seen first: kCapEarlyDoorbell).
  ring::ring_fence_acq_rel();
  ring::ring_publish_seq(r.slots, r.capacity, ticket);
  ring::ring_ring_doorbell_relaxed(r.doorbell);
  *reinterpret_cast<volatile unsigned long long*>(r.tail) = ticket + 1;
  unlock_ring(r);
  push_to_host();
  if (ticket_out != nullptr) *ticket_out = ticket;
  return true;
}

// Fills the next slot, publishes it, rings the doorbell. One thread of the
// ring's channel (or any thread, for a shared ring). False (and
// kRingFullTimeout) when the ring stayed full for timeout_ns (daemon gone or
// stalled): nothing was claimed, so the ring and its channel stay usable.
__device__ inline bool post(const DeviceRing& r, const ring::RingSlot& d) { return post_at(r, d, nullptr); }

// Warp-cooperative post: every active lane posts its own descriptor into
// consecutive slots of the channel's ring. Lanes write their slots, the
// warp synchronises, and the leader issues ONE system fence, then
// publishes all the slots and rings the doorbell once. Call with the whole
// set of lanes that post (they must be converged); all of them get the
// same result. False (and kRingFullTimeout) as post().
__device__ inline bool post_warp(const DeviceRing& r, const ring::RingSlot& d) {
  const unsigned mask = __activemask();
  const int lane = threadIdx.x & 31;
  const int leader = __ffs(mask) - 1;
  const uint32_t n = __popc(mask);
  const uint32_t rank_in_warp = __popc(mask & ((1u << lane) - 1));
  uint64_t base = 0;
  int ok = 1;
  if (lane == leader) {
    ok = lock_ring(r) ? 1 : 0;
    if (ok) {
      base = ring_tail(r);
      // The last of the warp's slots free means all of them are.
      ok = wait_for_slot(r, base + n - 1) ? 1 : 0;
      if (!ok) {
        record_error(r.error, DeviceErrorCode::kRingFullTimeout, 0, base + n - 1,
                     ring::ring_load_acquire(&r.header->head));
        unlock_ring(r);
      }
    }
  }
  base = __shfl_sync(mask, base, leader);
  ok = __shfl_sync(mask, ok, leader);
  if (!ok) return false;
  ring::ring_write_fields(r.slots, r.capacity, base + rank_in_warp, d);
  // Every lane's field stores happen before the leader's fence.
  __syncwarp(mask);
  if (lane == leader) {
    // acq_rel, system scope: with the relaxed seq stores after it, a release
    // of the warp's fields; pairs with the proxy's acquire load of each seq.
    ring::ring_fence_acq_rel();
    for (uint32_t i = 0; i < n; ++i) ring::ring_publish_seq(r.slots, r.capacity, base + i);
    ring::ring_ring_doorbell_relaxed(r.doorbell);  // may be seen before the seq stores (kCapEarlyDoorbell)
    *reinterpret_cast<volatile unsigned long long*>(r.tail) = base + n;
    unlock_ring(r);
    push_to_host();
  }
  __syncwarp(mask);
  return true;
}

// The builders check every value against its field and report one that
// does not fit as kBadArgument (nothing is posted), never truncating it.

__device__ inline bool post_write(const DeviceRing& r, uint32_t dst_rank, uint16_t src_window, uint64_t src_offset,
                                  uint16_t dst_window, uint64_t dst_offset, uint32_t length) {
  if (!check_argument(r.error, DeviceArgument::kDstRank, dst_rank, ring::kMaxDstRank) ||
      !check_argument(r.error, DeviceArgument::kSrcOffset, src_offset, ring::kMaxOffset) ||
      !check_argument(r.error, DeviceArgument::kDstOffset, dst_offset, ring::kMaxOffset)) {
    return false;
  }
  return post(r, ring::make_write(static_cast<uint16_t>(dst_rank), ring::pack_address(src_window, src_offset),
                                  ring::pack_address(dst_window, dst_offset), length));
}

__device__ inline bool post_write_signal(const DeviceRing& r, uint32_t dst_rank, uint16_t src_window,
                                         uint64_t src_offset, uint16_t dst_window, uint64_t dst_offset,
                                         uint32_t length, uint32_t signal_index, uint32_t increment) {
  if (!check_argument(r.error, DeviceArgument::kDstRank, dst_rank, ring::kMaxDstRank) ||
      !check_argument(r.error, DeviceArgument::kSrcOffset, src_offset, ring::kMaxOffset) ||
      !check_argument(r.error, DeviceArgument::kDstOffset, dst_offset, ring::kMaxOffset) ||
      !check_argument(r.error, DeviceArgument::kSignalIndex, signal_index, ring::kMaxSignalIndex) ||
      !check_increment(r.error, increment)) {
    return false;
  }
  return post(r, ring::make_write_signal(static_cast<uint16_t>(dst_rank), ring::pack_address(src_window, src_offset),
                                         ring::pack_address(dst_window, dst_offset), length,
                                         ring::encode_signal(signal_index, increment)));
}

// Adds `increment` to the destination's signal once the writes of `scope`
// completed (ring.h, kSignal); the proxy holds it meanwhile without
// stopping the ring.
__device__ inline bool post_signal(const DeviceRing& r, uint32_t dst_rank, uint32_t signal_index, uint32_t increment,
                                   SignalScope scope = SignalScope::kAfterEverything) {
  if (!check_argument(r.error, DeviceArgument::kDstRank, dst_rank, ring::kMaxDstRank) ||
      !check_argument(r.error, DeviceArgument::kSignalIndex, signal_index, ring::kMaxSignalIndex) ||
      !check_increment(r.error, increment)) {
    return false;
  }
  return post(r, ring::make_signal(static_cast<uint16_t>(dst_rank), ring::encode_signal(signal_index, increment),
                                   scope == SignalScope::kAfterDestination));
}

// `count` writes of `length` bytes in one descriptor: element i from
// src_offset + i * src_stride to dst_offset + i * dst_stride (ring.h,
// kWriteStrided); the daemon checks the first and last element of both
// sides. increment 0: no signal; else signal_index gets `increment` once
// every element is in place.
__device__ inline bool post_write_strided(const DeviceRing& r, uint32_t dst_rank, uint16_t src_window,
                                          uint64_t src_offset, uint64_t src_stride, uint16_t dst_window,
                                          uint64_t dst_offset, uint64_t dst_stride, uint32_t length, uint32_t count,
                                          uint32_t signal_index = 0, uint32_t increment = 0) {
  if (!check_argument(r.error, DeviceArgument::kDstRank, dst_rank, ring::kMaxDstRank) ||
      !check_argument(r.error, DeviceArgument::kSrcOffset, src_offset, ring::kMaxOffset) ||
      !check_argument(r.error, DeviceArgument::kDstOffset, dst_offset, ring::kMaxOffset) ||
      !check_range(r.error, DeviceArgument::kCount, count, 1, ring::kMaxStridedCount) ||
      !check_range(r.error, DeviceArgument::kLength, length, 1, UINT32_MAX) ||
      (increment != 0 && (!check_argument(r.error, DeviceArgument::kSignalIndex, signal_index, ring::kMaxSignalIndex) ||
                          !check_increment(r.error, increment)))) {
    return false;
  }
  return post(r, ring::make_write_strided(static_cast<uint16_t>(dst_rank), ring::pack_address(src_window, src_offset),
                                          src_stride, ring::pack_address(dst_window, dst_offset), dst_stride, length,
                                          count, increment ? ring::encode_signal(signal_index, increment) : 0));
}

// Posts a flush and waits until everything posted to the ring before it
// completed at its destination (the ring's completion watermark passed the
// flush's own ticket); source buffers may then be reused. One thread of the
// ring's channel (any thread of a shared ring). False and kFlushTimeout
// after timeout_ns.
__device__ inline bool flush(const DeviceRing& r, uint64_t timeout_ns) {
  uint64_t ticket = 0;
  if (!post_at(r, ring::make_flush(), &ticket)) return false;
  const uint64_t start = device_now_ns();
  for (;;) {
    // acquire: pairs with the proxy's release store of the watermark.
    const uint64_t done = ring::ring_load_acquire(&r.header->completed);
    if (done > ticket) return true;
    if (device_now_ns() - start > timeout_ns) {
      record_error(r.error, DeviceErrorCode::kFlushTimeout, 0, ticket + 1, done);
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
    record_error(s.error, DeviceErrorCode::kBadArgument, static_cast<uint32_t>(DeviceArgument::kSignalIndex),
                 s.count == 0 ? 0 : s.count - 1, index);
    return false;
  }
  const uint64_t start = device_now_ns();
  for (;;) {
    const uint64_t v = signal_value(s, index);
    if (v >= value) return true;
    if (device_now_ns() - start > timeout_ns) {
      record_error(s.error, DeviceErrorCode::kSignalWaitTimeout, index, value, v);
      return false;
    }
    ring::ring_pause();
  }
}

#endif  // __CUDACC__

}  // namespace epx
