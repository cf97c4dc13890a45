// Device helpers shared by the LL dispatch and combine kernels: where each
// region lives, the rank's private state, and the wait for a rank's arrival
// that every block of a receive kernel agrees on.
#pragma once

#include <cstdint>

#include "kernels/low_latency_kernels.h"
#include "kernels/low_latency_memory.h"
#include "kernels/low_latency_transport.cuh"

namespace epx::kernels::ll {

inline constexpr int kWarp = 32;

// LowLatencyShape's derived sizes for device code (its own methods are
// host-only plain C++).
__device__ inline int local_experts(const LowLatencyShape& s) { return s.num_experts / s.num_ranks; }
__device__ inline int rows_per_expert(const LowLatencyShape& s) { return s.num_ranks * s.max_tokens_per_rank; }
__device__ inline size_t total_rows(const LowLatencyShape& s) {
  return static_cast<size_t>(local_experts(s)) * rows_per_expert(s);
}

// Byte offsets of the regions a kernel touches, for one half. "recv" offsets
// are the same in the nvl space and in the rdma space (both start with the
// two recv halves); "send" offsets are inside the rdma space.
struct Regions {
  const LowLatencyLayout* l;
  int half;

  __device__ size_t recv_half() const { return static_cast<size_t>(half) * l->recv_bytes; }
  __device__ size_t send_half() const { return 2 * l->recv_bytes + static_cast<size_t>(half) * l->send_bytes; }
  // Dispatch region of source `src` in a receiver's recv part.
  __device__ size_t dispatch_recv(int src) const {
    return recv_half() + l->dispatch_recv + static_cast<size_t>(src) * l->dispatch_region_bytes;
  }
  // Staging of the dispatch region for destination `dst` in this rank's send part.
  __device__ size_t dispatch_send(int dst) const {
    return send_half() + l->dispatch_send + static_cast<size_t>(dst) * l->dispatch_region_bytes;
  }
  // Arrival header of combine sender `sender` in a receiver's recv part.
  __device__ size_t combine_header(int sender) const {
    return recv_half() + l->combine_recv + static_cast<size_t>(sender) * l->combine_header_bytes;
  }
  // Combine row `slot` in a receiver's recv part.
  __device__ size_t combine_row(int num_ranks, int64_t slot) const {
    return recv_half() + l->combine_recv + static_cast<size_t>(num_ranks) * l->combine_header_bytes +
           static_cast<size_t>(slot) * l->combine_row_bytes;
  }
  // Staged combine row `index` for receiver `dst` in this rank's send part.
  __device__ size_t combine_send_row(int dst, int64_t index) const {
    return send_half() + l->combine_send + static_cast<size_t>(dst) * l->combine_region_bytes +
           l->combine_header_bytes + static_cast<size_t>(index) * l->combine_row_bytes;
  }
};

// Signal numbers relative to signal_base: (half * 2 + phase) * num_ranks + sender.
__device__ inline uint32_t dispatch_signal(int half, int num_ranks, int sender) {
  return static_cast<uint32_t>((half * 2 + 0) * num_ranks + sender);
}
__device__ inline uint32_t combine_signal(int half, int num_ranks, int sender) {
  return static_cast<uint32_t>((half * 2 + 1) * num_ranks + sender);
}

// Typed views of the rank's private state (low_latency_memory.h).
struct State {
  uint8_t* base;
  StateLayout s;
  int half;

  __device__ unsigned long long* dispatch_calls() const {
    return reinterpret_cast<unsigned long long*>(base + s.dispatch_calls) + half;
  }
  __device__ unsigned long long* combine_calls() const {
    return reinterpret_cast<unsigned long long*>(base + s.combine_calls) + half;
  }
  __device__ unsigned int* dispatch_done() const { return reinterpret_cast<unsigned int*>(base + s.dispatch_done) + half; }
  __device__ unsigned int* combine_done() const { return reinterpret_cast<unsigned int*>(base + s.combine_done) + half; }
  __device__ uint8_t* arrays() const { return base + s.half_base + static_cast<size_t>(half) * s.half_bytes; }
  __device__ unsigned long long* dispatch_decision() const {
    return reinterpret_cast<unsigned long long*>(arrays() + s.dispatch_decision);
  }
  __device__ unsigned long long* combine_decision() const {
    return reinterpret_cast<unsigned long long*>(arrays() + s.combine_decision);
  }
  __device__ unsigned long long* combine_signals() const {
    return reinterpret_cast<unsigned long long*>(arrays() + s.combine_signals);
  }
  __device__ int32_t* pairs_to() const { return reinterpret_cast<int32_t*>(arrays() + s.pairs_to); }
  __device__ int32_t* pair_base_from() const { return reinterpret_cast<int32_t*>(arrays() + s.pair_base_from); }
  __device__ int32_t* rows_from() const { return reinterpret_cast<int32_t*>(arrays() + s.rows_from); }
  __device__ int32_t* pair_slot() const { return reinterpret_cast<int32_t*>(arrays() + s.pair_slot); }
  __device__ int32_t* row_slot() const { return reinterpret_cast<int32_t*>(arrays() + s.row_slot); }
  __device__ int32_t* row_source() const { return reinterpret_cast<int32_t*>(arrays() + s.row_source); }
  __device__ int32_t* staged_row() const { return reinterpret_cast<int32_t*>(arrays() + s.staged_row); }
  __device__ unsigned int* post_lock() const { return reinterpret_cast<unsigned int*>(arrays() + s.post_lock); }
};

__device__ inline State state_of(const LowLatencyShape& shape, const LowLatencyTransport& t, int half) {
  return State{t.state, state_layout(shape.num_ranks, shape.max_tokens_per_rank, shape.num_topk, total_rows(shape)),
               half};
}

__device__ inline bool rank_masked(const LowLatencyTransport& t, int r) {
  return t.rank_mask != nullptr && t.rank_mask[r] != 0;
}

// Records `verdict` (kArrived or kAbsent) for call `call` in a decision word
// unless another thread recorded one first; returns the verdict that holds
// and sets *won when it is this caller's. Every block of a receive kernel
// follows the same verdict, so a rank that arrives just as another block
// gives up is either used everywhere or nowhere.
__device__ inline uint64_t decide(unsigned long long* word, uint64_t call, uint64_t verdict, bool* won) {
  unsigned long long seen = *reinterpret_cast<volatile unsigned long long*>(word);
  *won = false;
  for (;;) {
    if ((seen >> 2) == call && (seen & 3) != kPolling) return seen & 3;
    // Device-scope CAS: only this GPU's blocks share the word. The fence
    // before it makes it a release: what this thread saw of the rank's data
    // (its acquire of the arrival word) precedes the verdict for the others.
    __threadfence();
    const unsigned long long prev = atomicCAS(word, seen, (call << 2) | verdict);
    if (prev == seen) {
      *won = true;
      return verdict;
    }
    seen = prev;
  }
}

// Waits until `arrived(seen)` holds for the value `poll()` returns, the
// rank's verdict for `call` is in `word`, or timeout_ns passes (then the
// rank is given up on and the DeviceError `code` names it). True when the
// rank's data may be used.
//
// One thread per rank and call polls: the first to claim the word (kPolling)
// reads the arrival word, every other thread of every block reads only the
// decision word in device memory. Arrival words of ranks on other nodes are
// host memory read over PCIe; a thousand receiving blocks polling them at
// once flood the link that the other direction's staging and row reads
// need (an EP2 combine went from 2.5 to 12 ms through the daemons that way).
template <typename Poll, typename Arrived>
__device__ bool await_rank(const LowLatencyTransport& t, unsigned long long* word, uint64_t call, uint32_t code,
                           int rank, uint64_t expected, Poll poll, Arrived arrived) {
  const uint64_t start = now_ns();
  bool poller = false, won;
  for (;;) {
    const unsigned long long state = *reinterpret_cast<volatile unsigned long long*>(word);
    if ((state >> 2) == call && (state & 3) != kPolling) {
      __threadfence();  // acquire: pairs with the deciding thread's fence
      return (state & 3) == kArrived;
    }
    if ((state >> 2) != call) {
      poller = atomicCAS(word, state, (call << 2) | kPolling) == state;
      if (!poller) continue;  // someone else claimed it (or decided): read again
    }
    uint64_t seen = 0;
    if (poller) {
      seen = poll();
      if (arrived(seen)) return decide(word, call, kArrived, &won) == kArrived;
    }
    if (now_ns() - start > t.timeout_ns) {
      if (!poller) seen = poll();  // once, for the error's "seen"
      if (arrived(seen)) return decide(word, call, kArrived, &won) == kArrived;
      const bool ok = decide(word, call, kAbsent, &won) == kArrived;
      if (won) report(t, code, static_cast<uint32_t>(rank), expected, seen);
      return ok;
    }
    pause();
  }
}

// bf16 <-> float, as fp8_reference.cc: NaN keeps its sign and becomes quiet,
// everything else rounds to nearest even (overflow to infinity).
__device__ __forceinline__ float bf16_to_float(uint32_t bits16) { return __uint_as_float(bits16 << 16); }
__device__ __forceinline__ uint32_t float_to_bf16(float v) {
  const uint32_t u = __float_as_uint(v);
  if (v != v) return (u >> 16) | 0x0040u;
  return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

// Plain 16-byte copy by `count` threads numbered `id` (pointers 16-byte
// aligned, bytes a multiple of 16). Plain loads: the source may have been
// written by another GPU or the NIC during this kernel, so the read-only
// cache path must not be used. Each thread issues kCopyBatch loads before
// their stores: a source in host memory (a remote rank's message) costs a
// PCIe round trip per load, and one load at a time leaves the link idle.
inline constexpr int kCopyBatch = 8;
__device__ inline void copy16(uint8_t* dst, const uint8_t* src, size_t bytes, int id, int count) {
  const uint4* s = reinterpret_cast<const uint4*>(src);
  uint4* d = reinterpret_cast<uint4*>(dst);
  const size_t n = bytes / 16, step = static_cast<size_t>(count);
  size_t i = id;
  for (; i + (kCopyBatch - 1) * step < n; i += kCopyBatch * step) {
    uint4 v[kCopyBatch];
#pragma unroll
    for (int j = 0; j < kCopyBatch; ++j) v[j] = s[i + j * step];
#pragma unroll
    for (int j = 0; j < kCopyBatch; ++j) d[i + j * step] = v[j];
  }
  for (; i < n; i += step) d[i] = s[i];
}

}  // namespace epx::kernels::ll
