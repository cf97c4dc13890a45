// LL combine: the send kernel (each received row's expert output back to its
// source rank, into the combine_recv row the source reserved for that
// (token, k) pair) and the receive kernel (weighted sum over k), with their
// launchers. Formats: low_latency_memory.h; the row -> (source, slot) map
// and the slots of this rank's own pairs were recorded by the dispatch of
// the same half.
//
// Send: rows for remote sources first: their staging (this rank's rdma
// space, in each source's slot order, the order dispatch recorded in
// staged_row) is cut into chunks of about kChunkBytes, a block stages a
// whole chunk and posts it at once as one ring write + signal (blocks that
// post to the same rank take its lock word in turn), so the fabric moves
// early chunks while later ones are staged; the receiver expects one
// signal per chunk. Then one warp per row for same-node sources, NVLink
// stores straight into their combine_recv rows. The last block stores each
// same-node source's arrival seq (release, system scope).
//
// Receive: block (token, 1024-channel chunk); warp 0 waits for the ranks of
// the token's pairs (decision words keep blocks consistent when a rank times
// out, and one thread per rank polls), then each thread sums 8 channels over
// k in fp32 with one fmaf per k, loading up to 8 pairs' rows at once.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/cuda_status.h"
#include "kernels/low_latency_checks.h"
#include "kernels/low_latency_device.cuh"
#include "kernels/low_latency_kernels.h"
#include "kernels/low_latency_launch.cuh"

namespace epx::kernels {
namespace {

using namespace ll;

constexpr int kSendThreads = 512;
constexpr int kSendBlocks = 128;
constexpr int kRecvThreads = 128;
constexpr int kChannelsPerThread = 8;  // one uint4 of bf16
constexpr int kRecvChannels = kRecvThreads * kChannelsPerThread;
constexpr int kLoadsInFlight = 8;  // per thread, in the receive's weighted sum
constexpr size_t kChunkBytes = 256 << 10;  // staged bytes per posted write to a remote rank

struct CombineCall {
  int half;
  const uint16_t* x;
  const int32_t* recv_count;
  const int64_t* topk_idx;
  const float* topk_weights;
  int num_tokens;
  uint16_t* out;
};

// Rows of one staged chunk: one posted write carries about kChunkBytes, so
// the fabric moves the first chunks while later ones are being staged.
__device__ inline int chunk_rows(const LowLatencyLayout& layout) {
  return static_cast<int>(max(static_cast<size_t>(1), kChunkBytes / layout.combine_row_bytes));
}
// Chunks of `rows` rows (clamped to what a rank can send: max_tokens * K).
__device__ inline int chunks_of(int rows, int per_chunk, const LowLatencyShape& shape) {
  rows = max(0, min(rows, shape.max_tokens_per_rank * shape.num_topk));
  return (rows + per_chunk - 1) / per_chunk;
}

// The last block of the send: arrivals for same-node sources, the combine
// signals this rank will wait for, the counter.
__device__ void publish_combine(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                const LowLatencyTransport& t, const State& st, const Regions& regions) {
  const uint64_t seq = *st.combine_calls() + 1;
  for (int s = threadIdx.x; s < shape.num_ranks; s += blockDim.x) {
    uint8_t* peer = t.peers.ptrs[s];
    // As a receiver: a remote rank this rank sent pairs to signals once
    // per combine (its send below, mirrored).
    // As a receiver: a remote rank this rank sent pairs to signals once per
    // chunk of the rows it sends back (the send below, mirrored).
    if (peer == nullptr && !rank_masked(t, s)) {
      st.combine_signals()[s] += chunks_of(st.pairs_to()[s], chunk_rows(layout), shape);
    }
    if (rank_masked(t, s) || peer == nullptr) continue;  // remote ranks' chunks went out as they were staged
    // Every block's row stores are visible system-wide before the arrival
    // (the done counter ordered them before this thread).
    __threadfence_system();
    store_seq(peer + regions.combine_header(t.rank), seq);  // release: pairs with the source's load_seq
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    // Plain stores: the next readers are later launches (stream order).
    *st.combine_calls() = seq;
    *st.combine_done() = 0;
  }
}

__global__ void __launch_bounds__(kSendThreads)
combine_send_kernel(LowLatencyShape shape, LowLatencyLayout layout, LowLatencyTransport t, CombineCall c) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ bool last_block;
  int* first_row = reinterpret_cast<int*>(smem);  // [local + 1]: flat index of each expert's first received row
  const State st = state_of(shape, t, c.half);
  const Regions regions{&layout, c.half};
  const int local = local_experts(shape);
  const int rows = rows_per_expert(shape);
  const int lane = threadIdx.x % kWarp;
  const int warps = blockDim.x / kWarp;

  if (threadIdx.x < kWarp) {
    int carry = 0;
    for (int base = 0; base < local; base += kWarp) {
      const int v = base + lane < local ? max(0, min(c.recv_count[base + lane], rows)) : 0;
      int inclusive = v;
      for (int off = 1; off < kWarp; off *= 2) {
        const int up = __shfl_up_sync(0xFFFFFFFFu, inclusive, off);
        if (lane >= off) inclusive += up;
      }
      if (base + lane < local) first_row[base + lane] = carry + inclusive - v;
      carry += __shfl_sync(0xFFFFFFFFu, inclusive, kWarp - 1);
    }
    if (lane == 0) first_row[local] = carry;
  }
  const int R = shape.num_ranks;
  int* chunk_begin = first_row + local + 1;  // [R + 1]: first chunk of each remote rank's rows
  const int per_chunk = chunk_rows(layout);
  if (threadIdx.x == kWarp) {
    int run = 0;
    for (int s = 0; s < R; ++s) {
      chunk_begin[s] = run;
      if (t.peers.ptrs[s] == nullptr && !rank_masked(t, s)) run += chunks_of(st.rows_from()[s], per_chunk, shape);
    }
    chunk_begin[R] = run;
  }
  __syncthreads();

  const size_t row_bytes = layout.combine_row_bytes;
  const int warp = static_cast<int>(threadIdx.x / kWarp);
  // Rows for ranks on other nodes first, a chunk per block at a time, in
  // staging order; the block posts each chunk as soon as it is staged.
  const size_t pairs = static_cast<size_t>(shape.max_tokens_per_rank) * shape.num_topk;
  for (int g = blockIdx.x; g < chunk_begin[R]; g += gridDim.x) {
    int lo = 0, hi = R - 1;  // the rank whose chunks hold g
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (chunk_begin[mid] <= g) lo = mid; else hi = mid - 1;
    }
    const int s = lo;
    const int first = (g - chunk_begin[s]) * per_chunk;
    const int n = min(per_chunk, static_cast<int>(min(static_cast<size_t>(st.rows_from()[s]), pairs)) - first);
    const int32_t* staged = st.staged_row() + static_cast<size_t>(s) * pairs;
    for (int j = first + warp; j < first + n; j += warps) {
      const int32_t row = staged[j];
      if (row < 0 || static_cast<size_t>(row) >= total_rows(shape)) continue;
      const uint4* in = reinterpret_cast<const uint4*>(c.x + static_cast<size_t>(row) * shape.hidden);
      uint4* out = reinterpret_cast<uint4*>(t.rdma_local + regions.combine_send_row(s, j));
      for (size_t v = lane; v < row_bytes / 16; v += kWarp) out[v] = __ldg(in + v);
    }
    __syncthreads();
    if (threadIdx.x == 0 && n > 0) {
      // The barrier gathered every warp's rows; this fence orders them
      // before the post at system scope (the proxy reads them).
      __threadfence_system();
      post_region(t, static_cast<uint32_t>(R + s), s, regions.combine_send_row(s, first),
                  regions.combine_row(R, static_cast<int64_t>(st.pair_base_from()[s]) + first),
                  static_cast<uint64_t>(n) * row_bytes, combine_signal(regions.half, R, t.rank), st.post_lock() + s);
    }
  }

  // Rows for same-node ranks: NVLink stores straight into their combine_recv.
  const int total = first_row[local];
  const int max_slots = shape.max_tokens_per_rank * shape.num_topk;
  for (int i = blockIdx.x * warps + warp; i < total; i += gridDim.x * warps) {
    int lo = 0, hi = local - 1;  // the expert whose rows hold flat index i
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (first_row[mid] <= i) lo = mid; else hi = mid - 1;
    }
    const size_t row = static_cast<size_t>(lo) * rows + (i - first_row[lo]);
    const int src = st.row_source()[row];
    const int slot = st.row_slot()[row];
    if (src < 0 || src >= shape.num_ranks || slot < 0 || slot >= max_slots || rank_masked(t, src)) continue;
    uint8_t* peer = t.peers.ptrs[src];
    if (peer == nullptr) continue;  // staged above
    uint8_t* dst = peer + regions.combine_row(shape.num_ranks, slot);
    const uint4* in = reinterpret_cast<const uint4*>(c.x + row * shape.hidden);
    uint4* out = reinterpret_cast<uint4*>(dst);
    for (size_t v = lane; v < row_bytes / 16; v += kWarp) out[v] = __ldg(in + v);
  }

  __syncthreads();
  if (threadIdx.x == 0) {
    // Release side of the done counter: this block's row stores are visible
    // system-wide before the count says so.
    __threadfence_system();
    // Relaxed add; pairs with the fence above and the last block's fence below.
    last_block = atomicAdd(st.combine_done(), 1u) == gridDim.x - 1;
    if (last_block) __threadfence_system();  // acquire side: every block's rows precede the arrivals
  }
  __syncthreads();
  if (last_block) publish_combine(shape, layout, t, st, regions);
}

__global__ void __launch_bounds__(kRecvThreads)
combine_recv_kernel(LowLatencyShape shape, LowLatencyLayout layout, LowLatencyTransport t, CombineCall c, int chunks) {
  __shared__ const uint8_t* pair_row[kMaxTopk];  // the (token, k) pair's expert output, or null
  const State st = state_of(shape, t, c.half);
  const Regions regions{&layout, c.half};
  const int K = shape.num_topk;
  const int R = shape.num_ranks;
  const int tok = blockIdx.x / chunks;
  const int chunk = blockIdx.x % chunks;
  // This rank's combine send of the same call ran before (stream order) and stamped it.
  const uint64_t call = *st.combine_calls();

  if (threadIdx.x < K) {
    const int k = threadIdx.x;
    const size_t at = static_cast<size_t>(tok) * K + k;
    const int64_t e = c.topk_idx[at];
    const int slot = st.pair_slot()[at];  // -1 for none, repeated, or masked at dispatch
    const uint8_t* row = nullptr;
    if (e >= 0 && e < shape.num_experts && slot >= 0 && slot < shape.max_tokens_per_rank * K) {
      const int d = static_cast<int>(e / local_experts(shape));
      if (!rank_masked(t, d)) {
        bool ok;
        if (t.peers.ptrs[d] != nullptr) {
          const uint8_t* seq = t.peers.ptrs[t.rank] + regions.combine_header(d);
          ok = await_rank(t, &st.combine_decision()[d], call, kLowLatencyCombineTimeout, d, call,
                          [&] { return load_seq(seq); }, [&](uint64_t v) { return v == call; });
          if (ok) row = t.peers.ptrs[t.rank] + regions.combine_row(R, slot);
        } else {
          const uint64_t expected = st.combine_signals()[d];
          const uint32_t signal = combine_signal(c.half, R, d);
          ok = await_rank(t, &st.combine_decision()[d], call, kLowLatencyCombineTimeout, d, expected,
                          [&] { return read_signal(t, signal); }, [&](uint64_t v) { return v >= expected; });
          if (ok) row = t.rdma_local + regions.combine_row(R, slot);
        }
      }
    }
    pair_row[k] = row;
  }
  __syncthreads();

  const int channel = chunk * kRecvChannels + static_cast<int>(threadIdx.x) * kChannelsPerThread;
  if (channel >= shape.hidden) return;
  float acc[kChannelsPerThread] = {};
  // Loads of kLoadsInFlight pairs are issued before their sums: rows of
  // remote ranks are host memory behind PCIe (a microsecond per load), so
  // one load at a time would leave the link idle. The sum keeps k order.
  for (int k0 = 0; k0 < K; k0 += kLoadsInFlight) {
    uint4 y[kLoadsInFlight];
#pragma unroll
    for (int j = 0; j < kLoadsInFlight; ++j) {
      const uint8_t* row = k0 + j < K ? pair_row[k0 + j] : nullptr;
      // Plain load: the row was written by another GPU or the NIC during this kernel.
      if (row != nullptr) y[j] = *reinterpret_cast<const uint4*>(row + static_cast<size_t>(channel) * 2);
    }
#pragma unroll
    for (int j = 0; j < kLoadsInFlight; ++j) {
      if (k0 + j >= K || pair_row[k0 + j] == nullptr) continue;
      const float w = c.topk_weights[static_cast<size_t>(tok) * K + k0 + j];
      const uint32_t words[4] = {y[j].x, y[j].y, y[j].z, y[j].w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        acc[2 * i] = __fmaf_rn(bf16_to_float(words[i] & 0xFFFFu), w, acc[2 * i]);
        acc[2 * i + 1] = __fmaf_rn(bf16_to_float(words[i] >> 16), w, acc[2 * i + 1]);
      }
    }
  }
  uint32_t packed[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) packed[i] = float_to_bf16(acc[2 * i]) | (float_to_bf16(acc[2 * i + 1]) << 16);
  *reinterpret_cast<uint4*>(c.out + static_cast<size_t>(tok) * shape.hidden + channel) =
      make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

Status check_combine(const char* who, const LowLatencyShape& shape, const LowLatencyLayout& layout,
                     const LowLatencyTransport& t, const LowLatencyCombineArgs& a) {
  LowLatencyDispatchOptions bf16;
  bf16.use_fp8 = false;
  EPX_RETURN_IF_ERROR(check_low_latency_shape(who, shape, bf16));
  EPX_RETURN_IF_ERROR(check_layout_and_transport(who, shape, layout, t));
  EPX_RETURN_IF_ERROR(check_half_and_tokens(who, shape, a.half, a.num_tokens, a.topk_idx));
  return Status();
}

CombineCall call_of(const LowLatencyCombineArgs& a) {
  CombineCall c{};
  c.half = a.half;
  c.x = a.x;
  c.recv_count = a.recv_count;
  c.topk_idx = a.topk_idx;
  c.topk_weights = a.topk_weights;
  c.num_tokens = a.num_tokens;
  c.out = a.out;
  return c;
}

}  // namespace

Status launch_low_latency_combine_send(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                       const LowLatencyTransport& transport, const LowLatencyCombineArgs& args,
                                       void* stream) {
  const char* who = "launch_low_latency_combine_send";
  EPX_RETURN_IF_ERROR(check_combine(who, shape, layout, transport, args));
  if (args.x == nullptr || !aligned16(args.x) || args.recv_count == nullptr) {
    return invalid_argument(std::string(who) + ": x (16-byte aligned) and recv_count must be device pointers");
  }
  const CombineCall c = call_of(args);
  const size_t shared = sizeof(int) * (static_cast<size_t>(shape.local_experts()) + 1 + shape.num_ranks + 1);
  EPX_RETURN_IF_ERROR(reserve_shared(who, combine_send_kernel, shared));
  combine_send_kernel<<<kSendBlocks, kSendThreads, shared, static_cast<cudaStream_t>(stream)>>>(shape, layout,
                                                                                                transport, c);
  return cuda_status(cudaGetLastError(),
                     std::string(who) + " (rank " + std::to_string(transport.rank) + "): kernel launch");
}

Status launch_low_latency_combine_recv(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                       const LowLatencyTransport& transport, const LowLatencyCombineArgs& args,
                                       void* stream) {
  const char* who = "launch_low_latency_combine_recv";
  EPX_RETURN_IF_ERROR(check_combine(who, shape, layout, transport, args));
  if (args.num_tokens > 0 && (args.out == nullptr || !aligned16(args.out) || args.topk_weights == nullptr)) {
    return invalid_argument(std::string(who) + ": out (16-byte aligned) and topk_weights must be device pointers");
  }
  // No tokens: no pairs, nothing to wait for or write.
  if (args.num_tokens == 0) return Status();
  const CombineCall c = call_of(args);
  const int chunks = (shape.hidden + kRecvChannels - 1) / kRecvChannels;
  combine_recv_kernel<<<args.num_tokens * chunks, kRecvThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      shape, layout, transport, c, chunks);
  return cuda_status(cudaGetLastError(), std::string(who) + " (rank " + std::to_string(transport.rank) +
                                             ", num_tokens=" + std::to_string(args.num_tokens) + "): kernel launch");
}

}  // namespace epx::kernels
