// Device helpers shared by the normal-mode kernels: the seq words between
// ranks, bounded waits, the election of a kernel's last block, and every
// use the kernels make of the ring and signal API (epx/device.cuh); and the
// launchers' stage-timing record.
#pragma once

#include <cstdint>

#include "cuda/cuda_status.h"
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
// `periods` timeouts: a wait for a rank that itself waits on the network
// is given two, so the rank that was late is the one named.
__device__ inline bool wait_seq(const NormalTransport& t, const uint8_t* p, uint64_t seq, int rank, uint32_t code,
                                uint64_t periods = 1) {
  uint64_t seen = load_seq(p);
  if (seen >= seq) return true;
  const uint64_t start = device_now_ns();
  for (;;) {
    seen = load_seq(p);
    if (seen >= seq) return true;
    if (device_now_ns() - start > periods * t.timeout_ns) {
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

// Posts `length` bytes at `src_offset` of this rank's rdma space to
// `dst_offset` of rank `dst`'s (the same window id on every rank), then
// adds 1 to signal `signal` (relative to signal_base) there, on ring
// `channel`: its only producer during the call. False (and kNormalPostFailed)
// when the ring refused or stayed full.
__device__ inline bool post_region(const NormalTransport& t, uint32_t channel, int dst, uint64_t src_offset,
                                   uint64_t dst_offset, uint64_t length, uint32_t signal) {
  const DeviceRing& ring = t.rings.ring(channel);
  const bool posted = post_write_signal(ring, static_cast<uint32_t>(dst), static_cast<uint16_t>(t.rdma_window),
                                        src_offset, static_cast<uint16_t>(t.rdma_window), dst_offset,
                                        static_cast<uint32_t>(length), t.signal_base + signal, 1);
  if (!posted) record_error(t.error, kNormalPostFailed, static_cast<uint32_t>(dst), length, 0);
  return posted;
}

// Waits until this rank's signal `signal` (relative to signal_base) reaches
// `value`, acquire at system scope (the data it counts is then visible);
// false after timeout_ns, with `code` recorded naming `rank`.
__device__ inline bool wait_signal_word(const NormalTransport& t, uint32_t signal, uint64_t value, int rank,
                                        uint32_t code, uint64_t periods = 1) {
  const uint32_t index = t.signal_base + signal;
  if (index >= t.signals.count) {
    record_error(t.error, code, static_cast<uint32_t>(rank), value, 0);
    return false;
  }
  const uint64_t start = device_now_ns();
  for (;;) {
    const uint64_t seen = signal_value(t.signals, index);
    if (seen >= value) return true;
    if (device_now_ns() - start > periods * t.timeout_ns) {
      record_error(t.error, code, static_cast<uint32_t>(rank), value, seen);
      return false;
    }
    ring::ring_pause();
  }
}

// Waits until the uint32 tag at `p` (data another node sent, landed in
// this rank's rdma space) reads `tag`, re-reading it at system scope: the
// signal said the write completed, the tag says these bytes are that
// write's. False after timeout_ns, with kNormalStaleData naming `rank`.
__device__ inline bool wait_tag(const NormalTransport& t, const uint8_t* p, uint32_t tag, int rank) {
  const volatile uint32_t* word = reinterpret_cast<const volatile uint32_t*>(p);
  if (*word == tag) return true;
  const uint64_t start = device_now_ns();
  for (;;) {
    __threadfence_system();
    const uint32_t seen = *word;
    if (seen == tag) return true;
    if (device_now_ns() - start > t.timeout_ns) {
      record_error(t.error, kNormalStaleData, static_cast<uint32_t>(rank), tag, seen);
      return false;
    }
    ring::ring_pause();
  }
}

// Whether a chunk from node v (phase) was given up on in call seq.
__device__ inline bool node_chunk_lost(const NormalTransport& t, int phase, int nodes, int v, uint64_t seq) {
  bool lost = false;
  for (int k = 0; k < kNormalChunks; ++k) {
    lost |= *reinterpret_cast<const volatile uint64_t*>(t.chunk_gates + normal_chunk_cell(phase, nodes, v, k)) ==
            ((seq << 2) | kChunkLost);
  }
  return lost;
}

// Waits until chunk c from node v (phase 0 dispatch rows, 1 combine
// partials) landed for call seq: its signal word `signal` reaches
// normal_signal_target(seq). One thread per chunk and call polls the word
// (host memory behind PCIe: a thousand polling warps would flood the link
// the rows themselves cross); every other thread reads the poller's
// verdict in the chunk's gate, in device memory. After periods x timeout
// the chunk is given up (`code` names `rank`). True when its bytes may be
// read, and then every later chunk_landed() of it is true too.
__device__ inline bool await_chunk(const NormalTransport& t, int phase, int nodes, int v, int c, uint64_t seq,
                                   uint32_t signal, int rank, uint32_t code, uint64_t periods) {
  unsigned long long* gate = reinterpret_cast<unsigned long long*>(t.chunk_gates + normal_chunk_cell(phase, nodes, v, c));
  const uint64_t start = device_now_ns();
  for (;;) {
    const unsigned long long g = *reinterpret_cast<volatile unsigned long long*>(gate);
    if ((g >> 2) == seq && (g & 3) != kChunkPolling) {
      __threadfence();  // acquire: pairs with the poller's fence before its verdict
      return (g & 3) == kChunkLanded;
    }
    if ((g >> 2) != seq && node_chunk_lost(t, phase, nodes, v, seq)) {
      // A chunk from node v was given up on this call (named then): its
      // other chunks are not waited for a timeout each.
      atomicCAS(gate, g, (seq << 2) | kChunkLost);
      continue;  // read the verdict (this one, or one decided meanwhile)
    }
    if ((g >> 2) != seq && atomicCAS(gate, g, (seq << 2) | kChunkPolling) == g) {
      const bool ok = wait_signal_word(t, signal, normal_signal_target(seq), rank, code, periods);
      __threadfence();  // release: what the signal's acquire made visible precedes the verdict
      atomicExch(gate, (seq << 2) | (ok ? kChunkLanded : kChunkLost));
      return ok;
    }
    if (device_now_ns() - start > (periods + 1) * t.timeout_ns) {  // the poller itself is bounded; this never should be
      record_error(t.error, code, static_cast<uint32_t>(rank), seq, g);
      return false;
    }
    ring::ring_pause();
  }
}

// Whether await_chunk() found chunk c from node v landed for call seq.
__device__ inline bool chunk_landed(const NormalTransport& t, int phase, int nodes, int v, int c, uint64_t seq) {
  return *reinterpret_cast<const volatile uint64_t*>(t.chunk_gates + normal_chunk_cell(phase, nodes, v, c)) ==
         ((seq << 2) | kChunkLanded);
}

// Before a rank finishes call seq, every piece sent to it in that call has
// landed, the chunks that held nothing for it too: the parity argument
// (normal_format.h) counts each word's writes of earlier calls as landed.
// Threads of one block, after the block's last use of the chunks; count(v)
// is the messages (partials) node v sent this call, < 0 for a node given
// up on. Chunks with messages were awaited by their readers; a node with a
// chunk already lost is not waited for again.
template <typename Count>
__device__ void await_empty_chunks(const NormalTransport& t, int phase, int nodes, int ranks_per_node, int T,
                                   uint64_t seq, uint32_t code, uint64_t periods, Count count) {
  const int node = t.rank / ranks_per_node, li = t.rank % ranks_per_node;
  for (int i = threadIdx.x; i < nodes * kNormalChunks; i += blockDim.x) {
    const int v = i / kNormalChunks, c = i % kNormalChunks, relay = v * ranks_per_node + li;
    if (v == node || masked(t, relay)) continue;
    const int n = count(v);
    if (n < 0 || normal_chunk_count(T, n, c) > 0) continue;
    if (node_chunk_lost(t, phase, nodes, v, seq)) continue;
    const uint32_t signal =
        phase == 0 ? normal_dispatch_chunk_signal(nodes, v, c, seq) : normal_combine_chunk_signal(nodes, v, c, seq);
    (void)await_chunk(t, phase, nodes, v, c, seq, signal, relay, code, periods);
  }
}

// A warp finished staging one message (partial) of chunk c to node v: its
// stores are made visible system-wide (the daemon reads them), then counted
// for the poster. Every lane calls it.
__device__ inline void mark_staged(const NormalTransport& t, int phase, int nodes, int v, int c, int lane) {
  __syncwarp();
  if (lane == 0) {
    __threadfence_system();
    atomicAdd(t.chunk_staged + normal_chunk_cell(phase, nodes, v, c), 1);
  }
}

// The poster waits until `want` messages of chunk c to node v are staged
// (the staging warps run in the same kernel, so this is bounded by their
// work; timeout_ns bounds it anyway and names `rank`).
__device__ inline bool wait_staged(const NormalTransport& t, int phase, int nodes, int v, int c, int want, int rank,
                                   uint64_t periods = 1) {
  const volatile int32_t* staged = t.chunk_staged + normal_chunk_cell(phase, nodes, v, c);
  const uint64_t start = device_now_ns();
  while (*staged < want) {
    if (device_now_ns() - start > periods * t.timeout_ns) {
      record_error(t.error, kNormalPostFailed, static_cast<uint32_t>(rank), want, static_cast<uint64_t>(*staged));
      return false;
    }
    ring::ring_pause();
  }
  __threadfence_system();  // acquire: the staging warps' fenced stores precede the descriptor
  return true;
}

// Block-wide exclusive prefix sum of one flag per thread, over successive
// rounds of blockDim.x items: returns this thread's exclusive prefix and
// adds the round's total to `running` (shared, read by every thread after
// the call). `sums` is shared scratch of 32 ints. Every thread calls it.
__device__ inline int block_prefix(int flag, int32_t* sums, int32_t* running) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int incl = flag;
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xFFFFFFFFu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int w = lane < warps ? sums[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xFFFFFFFFu, w, o);
      if (lane >= o) w += v;
    }
    sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  const int excl = *running + (warp > 0 ? sums[warp - 1] : 0) + incl - flag;
  __syncthreads();
  if (threadIdx.x == 0) *running += sums[warps - 1];
  __syncthreads();
  return excl;
}

// 16-byte copies, one warp, `bytes` a multiple of 16. kLanded: the source
// landed during this kernel (a relayed chunk), so it is read with plain
// loads; the read-only cache path (__ldg) may keep lines from before.
template <bool kLanded = false>
__device__ inline void warp_copy(uint8_t* dst, const uint8_t* src, size_t bytes, int lane) {
  const int4* s = reinterpret_cast<const int4*>(src);
  int4* d = reinterpret_cast<int4*>(dst);
  auto load = [s](size_t i) { return kLanded ? s[i] : __ldg(s + i); };
  const size_t n = bytes / 16;
  size_t i = lane;
  // Eight loads in flight per lane before their stores: a warp keeps 4 KiB
  // moving, which is what hides NVLink's latency with few SMs.
  for (; i + 224 < n; i += 256) {
    int4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = load(i + 32 * u);
#pragma unroll
    for (int u = 0; u < 8; ++u) d[i + 32 * u] = v[u];
  }
  for (; i < n; i += 32) d[i] = load(i);
}

// Host: records stage event `i` on `stream` when the call is timed
// (NormalDispatchArgs::stage_events; nothing otherwise).
inline Status record_stage(void* const* events, int i, cudaStream_t stream) {
  if (events == nullptr) return Status();
  return cuda_status(cudaEventRecord(static_cast<cudaEvent_t>(events[i]), stream), "cudaEventRecord (stage timing)");
}

}  // namespace epx::kernels::normal
