// Every use the LL kernels make of epx/device.cuh, in one place: when the
// ring ABI changes, this file is the one edit.
#pragma once

#include <cstdint>

#include "epx/device.cuh"
#include "kernels/low_latency_kernels.h"

namespace epx::kernels::ll {

// Posts `length` bytes at `src_offset` of this rank's rdma space to
// `dst_offset` of rank `dst`'s rdma space (the same window id on every
// rank), then adds 1 to signal `signal` (relative to signal_base) on `dst`,
// on ring `channel` of the group: its only producer during the call, or,
// with `lock` (device memory), one of several that take that lock word in
// turn. The daemon applies the signal after the data is placed. False when
// the ring refused or timed out (a DeviceError is then recorded).
__device__ inline bool post_region(const LowLatencyTransport& t, uint32_t channel, int dst, uint64_t src_offset,
                                   uint64_t dst_offset, uint64_t length, uint32_t signal,
                                   unsigned int* lock = nullptr) {
  DeviceRing ring = t.rings.ring(channel);
  if (lock != nullptr) ring.lock = lock;
  const bool posted = post_write_signal(ring, static_cast<uint32_t>(dst), static_cast<uint16_t>(t.rdma_window),
                                        src_offset, static_cast<uint16_t>(t.rdma_window), dst_offset,
                                        static_cast<uint32_t>(length), t.signal_base + signal, 1);
  if (!posted) record_error(t.error, kLowLatencyPostFailed, static_cast<uint32_t>(dst), length, 0);
  return posted;
}

// Current value of this rank's signal `signal` (relative to signal_base),
// with acquire at system scope: data the signal counts is visible after it.
// An index past the signal array reads as 0 (never arrives: the wait times
// out and names the rank).
__device__ inline uint64_t read_signal(const LowLatencyTransport& t, uint32_t signal) {
  const uint32_t index = t.signal_base + signal;
  return index < t.signals.count ? signal_value(t.signals, index) : 0;
}

__device__ inline void report(const LowLatencyTransport& t, uint32_t code, uint32_t index, uint64_t expected,
                              uint64_t seen) {
  record_error(t.error, code, index, expected, seen);
}

__device__ inline uint64_t now_ns() { return device_now_ns(); }
__device__ inline void pause() { ring::ring_pause(); }

// NVLink arrival words (seq): acquire / release at system scope, so the
// data stored before the seq is visible once the seq is seen.
__device__ inline uint64_t load_seq(const uint8_t* p) {
  return ring::ring_load_acquire(reinterpret_cast<const volatile uint64_t*>(p));
}
__device__ inline void store_seq(uint8_t* p, uint64_t v) {
  ring::ring_store_release(reinterpret_cast<volatile uint64_t*>(p), v);
}

}  // namespace epx::kernels::ll
