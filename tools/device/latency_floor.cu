#include "tools/device/latency_floor.h"

#include <cuda_runtime.h>

#include "cuda/cuda_status.h"

namespace epx::gpu {
namespace {

__device__ inline bool wait_volatile(const DeviceSignals& s, uint64_t value, uint64_t timeout_ns) {
  // DEVICE.md's probe: volatile loads, no acquire, no timer in the loop
  // except every 1024 polls.
  const volatile uint64_t* w = s.words;
  const uint64_t start = device_now_ns();
  for (uint32_t n = 1;; ++n) {
    if (*w >= value) return true;
    if ((n & 1023) == 0 && device_now_ns() - start > timeout_ns) return false;
  }
}

// Relaxed loads, the timer read every 256 polls, an acquire fence once
// the value is there.
__device__ inline bool wait_spin(const DeviceSignals& s, uint64_t value, uint64_t timeout_ns) {
  const uint64_t* w = s.words;
  const uint64_t start = device_now_ns();
  for (uint32_t n = 1;; ++n) {
    uint64_t v;
    asm volatile("ld.relaxed.sys.u64 %0, [%1];" : "=l"(v) : "l"(w) : "memory");
    if (v >= value) {
      asm volatile("fence.acq_rel.sys;" ::: "memory");
      return true;
    }
    if ((n & 255) == 0 && device_now_ns() - start > timeout_ns) return false;
  }
}

// post_signal(ring, 0, 0, 1) with another publication of the slot (the
// FloorMode comments); what post_at does apart from that is the same.
__device__ inline bool post_signal_as(FloorMode mode, const DeviceRing& r) {
  const uint64_t ticket = ring_tail(r);
  if (!wait_for_slot(r, ticket)) return false;
  const ring::RingSlot d = ring::make_signal(0, ring::encode_signal(0, 1));
  if (mode == FloorMode::kRingPostReleased) {
    ring::ring_publish(r.slots, r.capacity, ticket, d);
    ring::ring_ring_doorbell(r.doorbell);
    *reinterpret_cast<volatile unsigned long long*>(r.tail) = ticket + 1;
    __threadfence_system();
  } else {
    ring::ring_write_fields(r.slots, r.capacity, ticket, d);
    ring::ring_fence_acq_rel();
    uint32_t* seq = &r.slots[ticket & (r.capacity - 1)].seq;
    asm volatile("st.mmio.relaxed.sys.global.u32 [%0], %1;" : : "l"(seq), "r"(ring::ring_seq_for(ticket)) : "memory");
    asm volatile("st.mmio.relaxed.sys.global.u8 [%0], %1;" : : "l"(r.doorbell), "r"(1u) : "memory");
    *reinterpret_cast<volatile unsigned long long*>(r.tail) = ticket + 1;
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
      case FloorMode::kFlagFenced:
        *reinterpret_cast<volatile uint64_t*>(to_cpu) = i;
        __threadfence_system();
        good = wait_volatile(s, i, kTimeout);
        break;
      case FloorMode::kFlagReleaseFenced:
        ring::ring_store_release(to_cpu, uint64_t{i});
        __threadfence_system();
        good = wait_signal(s, 0, i, kTimeout);
        break;
      case FloorMode::kRingPost: good = post_signal(ring, 0, 0, 1) && wait_signal(s, 0, i, kTimeout); break;
      case FloorMode::kFlagSpinWait:
        ring::ring_store_release(to_cpu, uint64_t{i});
        __threadfence_system();
        good = wait_spin(s, i, kTimeout);
        break;
      case FloorMode::kFlagSent:
        asm volatile("st.mmio.relaxed.sys.global.u64 [%0], %1;" : : "l"(to_cpu), "l"(uint64_t{i}) : "memory");
        good = wait_signal(s, 0, i, kTimeout);
        break;
      case FloorMode::kRingPostReleased:
      case FloorMode::kRingPostSent: good = post_signal_as(mode, ring) && wait_signal(s, 0, i, kTimeout); break;
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

Status launch_floor_pingpong(FloorMode mode, uint64_t* to_cpu, DeviceRing ring, DeviceSignals signals, uint32_t iters,
                             uint64_t* elapsed_ns_dev, int* ok_dev, void* stream) {
  floor_pingpong<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(mode, to_cpu, ring, signals, iters, elapsed_ns_dev,
                                                                 ok_dev);
  return cuda_status(cudaGetLastError(), "floor_pingpong launch");
}

}  // namespace epx::gpu
