// LL dispatch: the send kernel (cast once, send once per destination rank)
// and the receive kernel (wait for every source, expand messages into the
// experts' rows), with their launchers. Formats: low_latency_memory.h.
//
// Send: block b owns a contiguous chunk of tokens. Every block first scans
// the whole topk_idx (T * K entries, cheap next to the payload) so that it
// knows, without any grid-wide sync, where its tokens go: the slot of a token
// in each destination's region (tokens to that rank before it), each
// expert's row position (tokens to that expert before it) and each (token, k)
// pair's combine slot. It then casts each of its tokens once into shared
// memory and copies the message with 16-byte stores to every destination
// that hosts one of its experts: NVLink straight into the peer's receive
// region, or this rank's staging for a remote rank. The last block to finish
// writes the arrival headers: an NVLink destination gets its seq stored last
// (release, system scope); a remote one gets one ring write + signal.
//
// Receive: block (src, slice) waits for every unmasked source (all blocks
// need every source's per-expert counts to place rows), agrees with the
// other blocks on who arrived (decision words in `state`), then expands
// messages slice, slice + S, ... of source src, one warp per message.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/cuda_status.h"
#include "kernels/fp8_cast_device.cuh"
#include "kernels/low_latency_checks.h"
#include "kernels/low_latency_device.cuh"
#include "kernels/low_latency_kernels.h"
#include "kernels/low_latency_launch.cuh"

namespace epx::kernels {
namespace {

using namespace ll;

constexpr int kSendThreads = 512;
// One block per token at DeepEP's 128 tokens (an H200 has 132 SMs); more
// tokens share blocks.
constexpr int kSendBlocks = 128;
constexpr int kRecvThreads = 512;
constexpr int kRecvBlocks = 128;

struct DispatchCall {
  int half;
  const uint16_t* x;
  const int64_t* topk_idx;
  int num_tokens;
  bool use_fp8;
  bool pow2;
  bool ue8m0;
  int tokens_per_block;
  uint8_t* recv_x;
  void* recv_scales;
  int32_t* recv_count;
  int32_t* src_info;
  int64_t* layout_range;
  int32_t* cumulative_recv_stats;
};

__device__ __forceinline__ unsigned lanes_below(int lane) { return (1u << lane) - 1u; }

// Expert of (t, k), or -1 for none, an id outside [0, num_experts), an id
// repeated at a lower k (a router never repeats one; counting it twice
// would give one token two rows in one (expert, source) range) or an expert
// on a masked rank.
__device__ int valid_expert(const LowLatencyShape& shape, const LowLatencyTransport& t, const int64_t* topk_idx,
                            int token, int k) {
  const int64_t* row = topk_idx + static_cast<size_t>(token) * shape.num_topk;
  const int64_t e = row[k];
  if (e < 0 || e >= shape.num_experts) return -1;
  for (int j = 0; j < k; ++j) {
    if (row[j] == e) return -1;
  }
  if (rank_masked(t, static_cast<int>(e / local_experts(shape)))) return -1;
  return static_cast<int>(e);
}

// Shared memory of the send kernel, carved from the dynamic allocation.
struct SendShared {
  uint8_t* message;    // the message being sent (stride bytes)
  int* expert_before;  // [E] tokens before the current one that chose each expert
  int* expert_total;   // [E] all tokens that chose each expert
  int* tok_before;     // [R] tokens before the current one sent to each rank
  int* tok_total;      // [R]
  int* pairs_before;   // [R] (token, k) pairs before the current token sent to each rank
  int* pairs_total;    // [R]
  int* pair_base;      // [R] exclusive prefix of pairs_total: P of each rank
  int* dst_slot;       // [K] the current token's slot in each of its destinations' regions
  uint8_t** dst_ptr;   // [K] where its message goes
  int* dst_count;      // [1]
};

inline size_t send_shared_bytes(const LowLatencyShape& s, size_t stride) {
  return stride + sizeof(uint8_t*) * static_cast<size_t>(s.num_topk) +
         sizeof(int) * (2 * static_cast<size_t>(s.num_experts) + 5 * static_cast<size_t>(s.num_ranks) +
                        static_cast<size_t>(s.num_topk) + 1);
}

__device__ SendShared carve_send_shared(uint8_t* smem, const LowLatencyShape& s, size_t stride) {
  SendShared sh;
  sh.message = smem;
  sh.dst_ptr = reinterpret_cast<uint8_t**>(smem + stride);  // stride is a multiple of 16
  int* ints = reinterpret_cast<int*>(sh.dst_ptr + s.num_topk);
  sh.expert_before = ints;
  sh.expert_total = sh.expert_before + s.num_experts;
  sh.tok_before = sh.expert_total + s.num_experts;
  sh.tok_total = sh.tok_before + s.num_ranks;
  sh.pairs_before = sh.tok_total + s.num_ranks;
  sh.pairs_total = sh.pairs_before + s.num_ranks;
  sh.pair_base = sh.pairs_total + s.num_ranks;
  sh.dst_slot = sh.pair_base + s.num_ranks;
  sh.dst_count = sh.dst_slot + s.num_topk;
  return sh;
}

// Counts, over every token of this rank, what goes where (see the file
// comment); "before" counts only tokens below t0.
__device__ void count_routes(const LowLatencyShape& shape, const LowLatencyTransport& t, const DispatchCall& c, int t0,
                             const SendShared& sh) {
  const int local = local_experts(shape);
  for (int i = threadIdx.x; i < 2 * shape.num_experts + 4 * shape.num_ranks; i += blockDim.x) sh.expert_before[i] = 0;
  __syncthreads();
  for (int tok = threadIdx.x; tok < c.num_tokens; tok += blockDim.x) {
    const bool before = tok < t0;
    // The token's experts, read once: valid_expert() per (k, j) would read
    // topk_idx K^2 times per token from global memory, which dominated the
    // send at 128 tokens.
    int ex[kMaxTopk];
    const int64_t* row = c.topk_idx + static_cast<size_t>(tok) * shape.num_topk;
    for (int k = 0; k < shape.num_topk; ++k) {
      const int64_t raw = row[k];
      if ((raw < -1 || raw >= shape.num_experts) && blockIdx.x == 0) {
        report(t, kLowLatencyBadExpert, static_cast<uint32_t>(tok), static_cast<uint64_t>(shape.num_experts),
               static_cast<uint64_t>(raw));
      }
      // Same verdict as valid_expert(): out of range, repeated at a lower k
      // (the first occurrence stays in ex[], or was masked, and so is this
      // one) or on a masked rank is -1.
      int e = raw < 0 || raw >= shape.num_experts ? -1 : static_cast<int>(raw);
      for (int j = 0; j < k && e >= 0; ++j) {
        if (ex[j] == e) e = -1;
      }
      if (e >= 0 && rank_masked(t, e / local)) e = -1;
      ex[k] = e;
    }
    for (int k = 0; k < shape.num_topk; ++k) {
      const int e = ex[k];
      if (e < 0) continue;
      atomicAdd(&sh.expert_total[e], 1);
      if (before) atomicAdd(&sh.expert_before[e], 1);
      const int d = e / local;
      bool first = true;
      int pairs = 1;
      for (int j = 0; j < shape.num_topk; ++j) {
        if (j == k) continue;
        const int other = ex[j];
        if (other < 0 || other / local != d) continue;
        if (j < k) first = false;
        ++pairs;
      }
      if (!first) continue;
      atomicAdd(&sh.tok_total[d], 1);
      atomicAdd(&sh.pairs_total[d], pairs);
      if (before) {
        atomicAdd(&sh.tok_before[d], 1);
        atomicAdd(&sh.pairs_before[d], pairs);
      }
    }
  }
  __syncthreads();
  // P of each rank: exclusive prefix of pairs_total, by warp 0 in chunks of 32.
  if (threadIdx.x < kWarp) {
    const int lane = threadIdx.x;
    int carry = 0;
    for (int base = 0; base < shape.num_ranks; base += kWarp) {
      const int v = base + lane < shape.num_ranks ? sh.pairs_total[base + lane] : 0;
      int inclusive = v;
      for (int off = 1; off < kWarp; off *= 2) {
        const int up = __shfl_up_sync(0xFFFFFFFFu, inclusive, off);
        if (lane >= off) inclusive += up;
      }
      if (base + lane < shape.num_ranks) sh.pair_base[base + lane] = carry + inclusive - v;
      carry += __shfl_sync(0xFFFFFFFFu, inclusive, kWarp - 1);
    }
  }
  __syncthreads();
}

// Warp 0: the message header of token `tok` into shared memory, the token's
// destinations (dst_ptr, dst_slot, dst_count) and its pairs' combine slots
// into state; advances the running "before" counters past the token.
__device__ void route_token(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                            const LowLatencyTransport& t, const DispatchCall& c, const SendShared& sh,
                            const State& st, const Regions& regions, size_t stride, int tok) {
  const int lane = threadIdx.x;
  const int local = local_experts(shape);
  const int e = lane < shape.num_topk ? valid_expert(shape, t, c.topk_idx, tok, lane) : -1;
  const unsigned valid = __ballot_sync(0xFFFFFFFFu, e >= 0);
  int d = e >= 0 ? e / local : -1;
  int position = -1, slot = -1, rank_in_group = 0, group = 0;
  bool leader = false;
  if (e >= 0) {
    const unsigned same = __match_any_sync(valid, d);
    rank_in_group = __popc(same & lanes_below(lane));
    group = __popc(same);
    leader = rank_in_group == 0;
    position = sh.expert_before[e];
    slot = sh.pair_base[d] + sh.pairs_before[d] + rank_in_group;
  }
  const unsigned leaders = __ballot_sync(0xFFFFFFFFu, leader);
  __syncwarp();
  if (e >= 0) sh.expert_before[e] = position + 1;  // experts of one token are distinct
  if (leader) {
    const int i = __popc(leaders & lanes_below(lane));
    const int j = sh.tok_before[d];
    sh.dst_slot[i] = j;
    uint8_t* peer = t.peers.ptrs[d];
    const size_t in_region = layout.dispatch_header_bytes + static_cast<size_t>(j) * stride;
    sh.dst_ptr[i] = peer != nullptr ? peer + regions.dispatch_recv(t.rank) + in_region
                                    : t.rdma_local + regions.dispatch_send(d) + in_region;
    sh.tok_before[d] = j + 1;
    sh.pairs_before[d] += group;
  }
  if (lane == 0) {
    *sh.dst_count = __popc(leaders);
    reinterpret_cast<int32_t*>(sh.message)[0] = tok;
  }
  if (lane < shape.num_topk) {
    int32_t* header = reinterpret_cast<int32_t*>(sh.message);
    header[message_expert(lane) / 4] = e;
    header[message_position(shape.num_topk, lane) / 4] = position;
    header[message_slot(shape.num_topk, lane) / 4] = slot;
    st.pair_slot()[static_cast<size_t>(tok) * shape.num_topk + lane] = slot;
  }
}

// All threads: the payload of token `tok` into shared memory.
__device__ void cast_token(const LowLatencyShape& shape, const DispatchCall& c, const SendShared& sh, int tok) {
  const size_t header = message_header_bytes(shape.num_topk);
  const uint4* in = reinterpret_cast<const uint4*>(c.x + static_cast<size_t>(tok) * shape.hidden);
  uint8_t* payload = sh.message + header;
  if (!c.use_fp8) {
    uint4* out = reinterpret_cast<uint4*>(payload);
    for (int i = threadIdx.x; i < shape.hidden / 8; i += blockDim.x) out[i] = __ldg(in + i);
    return;
  }
  const int lane = threadIdx.x % kWarp;
  const int sub = lane % fp8_device::kLanesPerBlock;
  const unsigned half_mask = fp8_device::half_warp_mask(lane);
  const int blocks = shape.hidden / kFp8BlockSize;
  const int half_warps = blockDim.x / fp8_device::kLanesPerBlock;
  for (int b = threadIdx.x / fp8_device::kLanesPerBlock; b < blocks; b += half_warps) {
    float scale;
    const uint2 codes = fp8_device::cast_block(__ldg(in + b * fp8_device::kLanesPerBlock + sub), half_mask, c.pow2, &scale);
    reinterpret_cast<uint2*>(payload + static_cast<size_t>(b) * kFp8BlockSize)[sub] = codes;
    if (sub == 0) {
      if (c.ue8m0) {
        payload[shape.hidden + b] = fp8_device::ue8m0_byte(scale);
      } else {
        reinterpret_cast<float*>(payload + shape.hidden)[b] = scale;
      }
    }
  }
}

// The last block of the send: arrival headers (and the remote posts), the
// pairs sent to each rank, and the call counter.
__device__ void publish_dispatch(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                 const LowLatencyTransport& t, const SendShared& sh, const State& st,
                                 const Regions& regions, size_t stride) {
  const int lane = threadIdx.x % kWarp;
  const int warps = blockDim.x / kWarp;
  const int local = local_experts(shape);
  const uint64_t seq = *st.dispatch_calls() + 1;
  for (int d = threadIdx.x; d < shape.num_ranks; d += blockDim.x) {
    st.pairs_to()[d] = rank_masked(t, d) ? 0 : sh.pairs_total[d];
  }
  for (int d = threadIdx.x / kWarp; d < shape.num_ranks; d += warps) {
    if (rank_masked(t, d)) continue;
    uint8_t* peer = t.peers.ptrs[d];
    uint8_t* header = peer != nullptr ? peer + regions.dispatch_recv(t.rank) : t.rdma_local + regions.dispatch_send(d);
    int32_t* counts = reinterpret_cast<int32_t*>(header + kDispatchHeaderCounts);
    for (int le = lane; le < local; le += kWarp) counts[le] = sh.expert_total[d * local + le];
    if (lane == 0) {
      *reinterpret_cast<int32_t*>(header + kDispatchHeaderTokens) = sh.tok_total[d];
      *reinterpret_cast<int32_t*>(header + kDispatchHeaderPairBase) = sh.pair_base[d];
    }
    __syncwarp();
    if (lane == 0) {
      // Makes this warp's header stores (and, through the done counter,
      // every block's messages) visible at system scope before the arrival.
      __threadfence_system();
      if (peer != nullptr) {
        store_seq(header + kDispatchHeaderSeq, seq);  // release: pairs with the receiver's load_seq
      } else {
        *reinterpret_cast<uint64_t*>(header + kDispatchHeaderSeq) = seq;
        __threadfence_system();
        post_region(t, static_cast<uint32_t>(d), d, regions.dispatch_send(d), regions.dispatch_recv(t.rank),
                    layout.dispatch_header_bytes + static_cast<size_t>(sh.tok_total[d]) * stride,
                    dispatch_signal(regions.half, shape.num_ranks, t.rank));
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    // Plain stores: the next readers are later launches (stream order).
    *st.dispatch_calls() = seq;
    *st.dispatch_done() = 0;
  }
}

__global__ void __launch_bounds__(kSendThreads)
dispatch_send_kernel(LowLatencyShape shape, LowLatencyLayout layout, LowLatencyTransport t, DispatchCall c) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ bool last_block;
  const size_t stride = message_stride(shape.num_topk, shape.hidden, c.use_fp8, c.ue8m0);
  const SendShared sh = carve_send_shared(smem, shape, stride);
  const State st = state_of(shape, t, c.half);
  const Regions regions{&layout, c.half};
  const int t0 = min(c.num_tokens, static_cast<int>(blockIdx.x) * c.tokens_per_block);
  const int t1 = min(c.num_tokens, t0 + c.tokens_per_block);

  count_routes(shape, t, c, t0, sh);
  for (int tok = t0; tok < t1; ++tok) {
    if (threadIdx.x < kWarp) route_token(shape, layout, t, c, sh, st, regions, stride, tok);
    cast_token(shape, c, sh, tok);
    __syncthreads();
    const size_t vectors = stride / 16;
    const int dsts = *sh.dst_count;
    const uint4* message = reinterpret_cast<const uint4*>(sh.message);
    for (size_t i = threadIdx.x; i < dsts * vectors; i += blockDim.x) {
      reinterpret_cast<uint4*>(sh.dst_ptr[i / vectors])[i % vectors] = message[i % vectors];
    }
    __syncthreads();  // the next token reuses the message buffer
  }

  if (threadIdx.x == 0) {
    // Release side of the done counter: this block's stores (NVLink and
    // staging) are visible system-wide before the count says so.
    __threadfence_system();
    // Relaxed add; pairs with the fence above and the last block's fence below.
    last_block = atomicAdd(st.dispatch_done(), 1u) == gridDim.x - 1;
    if (last_block) __threadfence_system();  // acquire side: every block's stores precede the headers
  }
  __syncthreads();
  if (last_block) publish_dispatch(shape, layout, t, sh, st, regions, stride);
}

// Shared memory of the receive kernel.
struct RecvShared {
  int* counts;     // [local][R] rows of each (local expert, source)
  int* begins;     // [local][R]
  int* totals;     // [local] recv_count
  int* arrived;    // [R]
  int* tokens;     // [R] messages of each source
};

inline size_t recv_shared_bytes(const LowLatencyShape& s) {
  return sizeof(int) * (2 * static_cast<size_t>(s.num_experts) + s.local_experts() + 2 * static_cast<size_t>(s.num_ranks));
}

__device__ RecvShared carve_recv_shared(uint8_t* smem, const LowLatencyShape& s) {
  RecvShared sh;
  sh.counts = reinterpret_cast<int*>(smem);
  sh.begins = sh.counts + s.num_experts;
  sh.totals = sh.begins + s.num_experts;
  sh.arrived = sh.totals + local_experts(s);
  sh.tokens = sh.arrived + s.num_ranks;
  return sh;
}

// Where source `src`'s region lands on this rank: the nvl space when it is
// on this node, else the rdma space.
__device__ uint8_t* dispatch_region(const LowLatencyTransport& t, const Regions& regions, int src) {
  uint8_t* base = t.peers.ptrs[src] != nullptr ? t.peers.ptrs[t.rank] : t.rdma_local;
  return base + regions.dispatch_recv(src);
}

// One warp expands message j of source `src` into every local expert row it
// names. `staged` (a source on another node): staged[slot - pair_base] =
// row, so the combine send can stage that source's rows in slot order.
__device__ void expand_message(const LowLatencyShape& shape, const DispatchCall& c, const RecvShared& sh,
                               const State& st, int rank, int src, const uint8_t* message, int32_t* staged,
                               int pair_base) {
  const int lane = threadIdx.x % kWarp;
  const int local = local_experts(shape);
  const int rows = rows_per_expert(shape);
  const int K = shape.num_topk;
  const int first_expert = rank * local;
  int le = -1, position = -1, slot = -1;
  if (lane < K) {
    const int32_t* header = reinterpret_cast<const int32_t*>(message);
    const int e = header[message_expert(lane) / 4];
    position = header[message_position(K, lane) / 4];
    slot = header[message_slot(K, lane) / 4];
    if (e >= first_expert && e < first_expert + local) le = e - first_expert;
    // Guards against a corrupt message: a position outside the (expert,
    // source) range would write another source's rows.
    if (le >= 0 && (position < 0 || position >= sh.counts[le * shape.num_ranks + src])) le = -1;
  }
  const int token = *reinterpret_cast<const int32_t*>(message + kMessageToken);
  const uint8_t* payload = message + message_header_bytes(K);
  const size_t row_bytes = c.use_fp8 ? static_cast<size_t>(shape.hidden) : 2 * static_cast<size_t>(shape.hidden);
  unsigned mine = __ballot_sync(0xFFFFFFFFu, le >= 0);
  // The payload is read from the message once; later experts' rows copy the
  // first row (this GPU's memory), not the message again (host memory behind
  // PCIe when the source is on another node).
  const uint8_t* from = payload;
  while (mine != 0) {
    const int k = __ffs(mine) - 1;
    mine &= mine - 1;
    const int e_local = __shfl_sync(0xFFFFFFFFu, le, k);
    const int pos = __shfl_sync(0xFFFFFFFFu, position, k);
    const int pair_slot = __shfl_sync(0xFFFFFFFFu, slot, k);
    const int in_block = sh.begins[e_local * shape.num_ranks + src] + pos;
    const size_t row = static_cast<size_t>(e_local) * rows + in_block;
    copy16(c.recv_x + row * row_bytes, from, row_bytes, lane, kWarp);
    __syncwarp();  // the row's stores are visible to the whole warp before it is read back
    from = c.recv_x + row * row_bytes;
    if (c.use_fp8) {
      const int blocks = shape.hidden / kFp8BlockSize;
      if (c.ue8m0) {
        const int words = shape.hidden / kUe8m0ChannelsPerWord;
        const int32_t* packed = reinterpret_cast<const int32_t*>(payload + shape.hidden);
        int32_t* out = static_cast<int32_t*>(c.recv_scales);
        for (int w = lane; w < words; w += kWarp) out[(static_cast<size_t>(e_local) * words + w) * rows + in_block] = packed[w];
      } else {
        const float* scales = reinterpret_cast<const float*>(payload + shape.hidden);
        float* out = static_cast<float*>(c.recv_scales);
        for (int b = lane; b < blocks; b += kWarp) out[(static_cast<size_t>(e_local) * blocks + b) * rows + in_block] = scales[b];
      }
    }
    if (lane == 0) {
      c.src_info[row] = token;
      st.row_slot()[row] = pair_slot;
      st.row_source()[row] = src;
      const int j = pair_slot - pair_base;
      if (staged != nullptr && j >= 0 && j < shape.max_tokens_per_rank * K) staged[j] = static_cast<int32_t>(row);
    }
  }
}

__global__ void __launch_bounds__(kRecvThreads)
dispatch_recv_kernel(LowLatencyShape shape, LowLatencyLayout layout, LowLatencyTransport t, DispatchCall c,
                     int slices) {
  extern __shared__ __align__(16) uint8_t smem[];
  const RecvShared sh = carve_recv_shared(smem, shape);
  const State st = state_of(shape, t, c.half);
  const Regions regions{&layout, c.half};
  const int R = shape.num_ranks;
  const int local = local_experts(shape);
  const int rows = rows_per_expert(shape);
  const int src = blockIdx.x / slices;
  const int slice = blockIdx.x % slices;
  // This rank's send of the same call ran before (stream order) and stamped it.
  const uint64_t call = *st.dispatch_calls();

  for (int s = threadIdx.x; s < R; s += blockDim.x) {
    bool ok = false;
    if (!rank_masked(t, s)) {
      if (t.peers.ptrs[s] != nullptr) {
        const uint8_t* seq = dispatch_region(t, regions, s) + kDispatchHeaderSeq;
        ok = await_rank(t, &st.dispatch_decision()[s], call, kLowLatencyDispatchTimeout, s, call,
                        [&] { return load_seq(seq); }, [&](uint64_t v) { return v == call; });
      } else {
        const uint32_t signal = dispatch_signal(c.half, R, s);
        ok = await_rank(t, &st.dispatch_decision()[s], call, kLowLatencyDispatchTimeout, s, call,
                        [&] { return read_signal(t, signal); }, [&](uint64_t v) { return v >= call; });
      }
    }
    sh.arrived[s] = ok;
    int n = 0;
    if (ok) {
      n = *reinterpret_cast<const int32_t*>(dispatch_region(t, regions, s) + kDispatchHeaderTokens);
      n = max(0, min(n, shape.max_tokens_per_rank));
    }
    sh.tokens[s] = n;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < R * local; i += blockDim.x) {
    const int s = i / local, le = i % local;
    int n = 0;
    if (sh.arrived[s]) {
      n = reinterpret_cast<const int32_t*>(dispatch_region(t, regions, s) + kDispatchHeaderCounts)[le];
      n = max(0, min(n, sh.tokens[s]));
    }
    sh.counts[le * R + s] = n;
  }
  __syncthreads();
  for (int le = threadIdx.x; le < local; le += blockDim.x) {
    int run = 0;
    for (int s = 0; s < R; ++s) {
      sh.begins[le * R + s] = run;
      run += sh.counts[le * R + s];
    }
    sh.totals[le] = run;
  }
  __syncthreads();

  if (slice == 0) {
    int rows_from_src = 0;
    for (int le = threadIdx.x; le < local; le += blockDim.x) {
      c.layout_range[static_cast<size_t>(le) * R + src] =
          (static_cast<int64_t>(sh.begins[le * R + src]) << 32) | static_cast<uint32_t>(sh.counts[le * R + src]);
    }
    if (threadIdx.x == 0) {
      for (int le = 0; le < local; ++le) rows_from_src += sh.counts[le * R + src];
      st.rows_from()[src] = rows_from_src;
      st.pair_base_from()[src] =
          sh.arrived[src] ? *reinterpret_cast<const int32_t*>(dispatch_region(t, regions, src) + kDispatchHeaderPairBase)
                          : 0;
    }
  }
  if (blockIdx.x == 0) {
    for (int le = threadIdx.x; le < local; le += blockDim.x) {
      c.recv_count[le] = sh.totals[le];
      if (c.cumulative_recv_stats != nullptr) c.cumulative_recv_stats[le] += sh.totals[le];
    }
  }
  const size_t all_rows = total_rows(shape);
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < all_rows;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    if (static_cast<int>(i % rows) >= sh.totals[i / rows]) c.src_info[i] = -1;
  }

  if (!sh.arrived[src]) return;
  const uint8_t* messages = dispatch_region(t, regions, src) + layout.dispatch_header_bytes;
  const size_t stride = message_stride(shape.num_topk, shape.hidden, c.use_fp8, c.ue8m0);
  const int warps = blockDim.x / kWarp;
  const size_t pairs = static_cast<size_t>(shape.max_tokens_per_rank) * shape.num_topk;
  int32_t* staged = t.peers.ptrs[src] == nullptr ? st.staged_row() + static_cast<size_t>(src) * pairs : nullptr;
  const int pair_base = *reinterpret_cast<const int32_t*>(dispatch_region(t, regions, src) + kDispatchHeaderPairBase);
  for (int j = slice + slices * static_cast<int>(threadIdx.x / kWarp); j < sh.tokens[src]; j += slices * warps) {
    expand_message(shape, c, sh, st, t.rank, src, messages + static_cast<size_t>(j) * stride, staged, pair_base);
  }
}

Status check_dispatch(const char* who, const LowLatencyShape& shape, const LowLatencyLayout& layout,
                      const LowLatencyTransport& t, const LowLatencyDispatchArgs& a) {
  EPX_RETURN_IF_ERROR(check_low_latency_shape(who, shape, a.options));
  EPX_RETURN_IF_ERROR(check_layout_and_transport(who, shape, layout, t));
  EPX_RETURN_IF_ERROR(check_half_and_tokens(who, shape, a.half, a.num_tokens, a.topk_idx));
  return Status();
}

DispatchCall call_of(const LowLatencyDispatchArgs& a) {
  DispatchCall c{};
  c.half = a.half;
  c.x = a.x;
  c.topk_idx = a.topk_idx;
  c.num_tokens = a.num_tokens;
  c.use_fp8 = a.options.use_fp8;
  c.pow2 = a.options.round_scale || a.options.use_ue8m0;
  c.ue8m0 = a.options.use_ue8m0;
  c.recv_x = a.recv_x;
  c.recv_scales = a.recv_scales;
  c.recv_count = a.recv_count;
  c.src_info = a.src_info;
  c.layout_range = a.layout_range;
  c.cumulative_recv_stats = a.cumulative_recv_stats;
  return c;
}

}  // namespace

Status launch_low_latency_dispatch_send(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                        const LowLatencyTransport& transport, const LowLatencyDispatchArgs& args,
                                        void* stream) {
  const char* who = "launch_low_latency_dispatch_send";
  EPX_RETURN_IF_ERROR(check_dispatch(who, shape, layout, transport, args));
  if (args.num_tokens > 0 && (args.x == nullptr || !aligned16(args.x))) {
    return invalid_argument(std::string(who) + ": x must be a non-null, 16-byte aligned device pointer");
  }
  DispatchCall c = call_of(args);
  // Even with no tokens one block runs: every destination still gets an
  // (empty) arrival, so nobody waits for this rank in vain.
  const int blocks = args.num_tokens == 0 ? 1 : (args.num_tokens < kSendBlocks ? args.num_tokens : kSendBlocks);
  c.tokens_per_block = args.num_tokens == 0 ? 0 : (args.num_tokens + blocks - 1) / blocks;
  const size_t stride = message_stride(shape.num_topk, shape.hidden, c.use_fp8, c.ue8m0);
  const size_t shared = send_shared_bytes(shape, stride);
  EPX_RETURN_IF_ERROR(reserve_shared(who, dispatch_send_kernel, shared));
  dispatch_send_kernel<<<blocks, kSendThreads, shared, static_cast<cudaStream_t>(stream)>>>(shape, layout, transport,
                                                                                            c);
  return cuda_status(cudaGetLastError(), std::string(who) + " (rank " + std::to_string(transport.rank) +
                                             ", num_tokens=" + std::to_string(args.num_tokens) + "): kernel launch");
}

Status launch_low_latency_dispatch_recv(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                        const LowLatencyTransport& transport, const LowLatencyDispatchArgs& args,
                                        void* stream) {
  const char* who = "launch_low_latency_dispatch_recv";
  EPX_RETURN_IF_ERROR(check_dispatch(who, shape, layout, transport, args));
  if (args.recv_x == nullptr || !aligned16(args.recv_x) || args.recv_count == nullptr || args.src_info == nullptr ||
      args.layout_range == nullptr || (args.options.use_fp8 && args.recv_scales == nullptr)) {
    return invalid_argument(std::string(who) +
                            ": recv_x (16-byte aligned), recv_count, src_info, layout_range and, for FP8, "
                            "recv_scales must be device pointers");
  }
  const DispatchCall c = call_of(args);
  const int slices = shape.num_ranks >= kRecvBlocks ? 1 : kRecvBlocks / shape.num_ranks;
  const int blocks = shape.num_ranks * slices;
  const size_t shared = recv_shared_bytes(shape);
  EPX_RETURN_IF_ERROR(reserve_shared(who, dispatch_recv_kernel, shared));
  dispatch_recv_kernel<<<blocks, kRecvThreads, shared, static_cast<cudaStream_t>(stream)>>>(shape, layout, transport,
                                                                                            c, slices);
  return cuda_status(cudaGetLastError(),
                     std::string(who) + " (rank " + std::to_string(transport.rank) + "): kernel launch");
}

}  // namespace epx::kernels
