// Normal-mode combine: the send kernel (each received row back to the local
// rank that forwarded it), the relay kernel (across nodes: one partial sum
// per relayed token, sent back to its owner in chunks as they are summed) and the
// receive kernel (a warp per token sums its node's rows and the other
// nodes' partials), with their launcher. Contract: normal_kernels.h.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_status.h"
#include "kernels/normal_device.cuh"
#include "kernels/normal_kernels.h"

namespace epx::kernels {
namespace {

using namespace normal;

constexpr int kCombineThreads = 512;

__device__ inline uint64_t current_call(const uint64_t* calls) {
  return *reinterpret_cast<const volatile uint64_t*>(calls) + 1;
}

// Each received row goes back to the local rank that forwarded it: the
// source itself on this node, else the rank with the source's local index
// (its relay here), at the row its token had in that rank's send list.
__global__ void __launch_bounds__(kCombineThreads)
    normal_combine_send_kernel(NormalShape s, NormalLayout l, NormalTransport t, NormalCombineArgs a) {
  extern __shared__ int32_t prefix[];  // [R]: rank_prefix_matrix's column for this rank
  const int R = s.num_ranks, K = s.num_topk, P = s.local_ranks(), me = t.rank, node = me / P, li = me % P;
  const uint64_t seq = current_call(&t.state->combine_calls);
  for (int r = threadIdx.x; r < R; r += blockDim.x) prefix[r] = a.handle.rank_prefix_matrix[r * R + me];
  if (t.chunk_staged != nullptr && blockIdx.x == 0) {  // for the relay kernel's poster, next on the stream
    for (int c = threadIdx.x; c < s.nodes() * kNormalChunks; c += blockDim.x) {
      t.chunk_staged[normal_chunk_cell(1, s.nodes(), 0, 0) + c] = 0;
    }
  }
  __syncthreads();
  const int recv = *a.handle.num_recv_tokens;
  const size_t row_bytes = 2 * static_cast<size_t>(s.hidden);
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int row = blockIdx.x * warps + warp; row < recv; row += gridDim.x * warps) {
    int lo = 0, hi = R - 1;  // the first source whose prefix passes row
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (prefix[mid] > row) hi = mid; else lo = mid + 1;
    }
    const int src = lo, forwarder = node * P + src % P;
    if (masked(t, src) || masked(t, forwarder)) continue;
    const size_t slot = (static_cast<size_t>(src / P) * P + li) * s.max_tokens_per_rank +
                        (row - (src > 0 ? prefix[src - 1] : 0));
    uint8_t* peer = t.peers.ptrs[forwarder];
    warp_copy(peer + l.combine_x + slot * row_bytes, reinterpret_cast<const uint8_t*>(a.x) + row * row_bytes,
              row_bytes, lane);
    if (a.topk_weights != nullptr && lane < K) {
      reinterpret_cast<float*>(peer + l.combine_weights)[slot * K + lane] = a.topk_weights[static_cast<size_t>(row) * K + lane];
    }
  }
  __threadfence_system();
  if (last_block(&t.state->finished[2])) {
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
      if (!masked(t, node * P + p)) store_seq(t.peers.ptrs[node * P + p] + l.arrivals + sizeof(uint64_t) * (P + li), seq);
    }
  }
}

__device__ inline void add_bf16x8(float* acc, const int4& v) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    acc[2 * i] += f.x;
    acc[2 * i + 1] += f.y;
  }
}

// Waits for every local rank's combine rows: lost[i] when masked or late.
__device__ inline void wait_local_rows(const NormalShape& s, const NormalLayout& l, const NormalTransport& t,
                                       uint64_t seq, int32_t* lost) {
  const int P = s.local_ranks(), node = t.rank / P;
  const uint8_t* own = t.peers.ptrs[t.rank];
  for (int i = threadIdx.x; i < P; i += blockDim.x) {
    lost[i] = masked(t, node * P + i) ||
              !wait_seq(t, own + l.arrivals + sizeof(uint64_t) * (P + i), seq, node * P + i, kNormalCombineTimeout);
  }
  __syncthreads();
}

// acc[u] (8 channels each, chunk base_c + lane + 32u) += the rows of the
// local ranks holding a token of virtual source v (index: its send_index
// row, [P]), ranks ascending, in fp32. Each lane keeps four chunks of two
// holders in flight (eight loads), so the sum is not bound by load latency;
// all lanes run the same iterations (holders shared by ballot and shuffle).
__device__ inline void add_local_rows(float (&acc)[4][8], const int4* rows, size_t vectors, size_t base_c,
                                      const int32_t* index, const int32_t* lost, int P, int v, int T, int lane) {
  for (int pass = 0; pass < P; pass += 32) {
    const int j = pass + lane;
    const int32_t p = j < P && !lost[j] ? index[j] : -1;
    unsigned todo = __ballot_sync(0xFFFFFFFFu, p >= 0);
    const unsigned long long row = p >= 0 ? (static_cast<unsigned long long>(v) * P + j) * T + p : 0;
    while (todo != 0) {
      const int b0 = __ffs(todo) - 1;
      todo &= todo - 1;
      const bool pair = todo != 0;  // the same in every lane
      const int b1 = pair ? __ffs(todo) - 1 : b0;
      if (pair) todo &= todo - 1;
      const int4* src0 = rows + __shfl_sync(0xFFFFFFFFu, row, b0) * vectors;
      const int4* src1 = rows + __shfl_sync(0xFFFFFFFFu, row, b1) * vectors;
      int4 v0[4], v1[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const size_t c = base_c + lane + 32 * u;
        const bool in = c < vectors;
        v0[u] = in ? src0[c] : make_int4(0, 0, 0, 0);
        v1[u] = in && pair ? src1[c] : make_int4(0, 0, 0, 0);
      }
      // Ascending rank order, as the reference adds.
#pragma unroll
      for (int u = 0; u < 4; ++u) add_bf16x8(acc[u], v0[u]);
      if (pair) {
#pragma unroll
        for (int u = 0; u < 4; ++u) add_bf16x8(acc[u], v1[u]);
      }
    }
  }
}

__device__ inline void zero(float (&acc)[4][8]) {
#pragma unroll
  for (int u = 0; u < 4; ++u) {
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[u][i] = 0.0f;
  }
}

__device__ inline int4 to_bf16x8(const float* acc) {
  int4 out;
  __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
  for (int i = 0; i < 4; ++i) o[i] = __floats2bfloat162_rn(acc[2 * i], acc[2 * i + 1]);
  return out;
}

// Lane k < K: the fp32 sum of the holders' weights for entry k, ranks ascending.
__device__ inline float local_weights(const float* row_weights, const int32_t* index, const int32_t* lost, int P, int v,
                                      int T, int K, int lane) {
  float w = 0.0f;
  for (int j = 0; j < P; ++j) {
    const int32_t p = index[j];
    if (p < 0 || lost[j]) continue;
    w += row_weights[((static_cast<size_t>(v) * P + j) * T + p) * K + lane];
  }
  return w;
}

// N > 1, lane v of the relay kernel's last block: the partials for node
// v's tokens back to their owner, each chunk as soon as it is summed (this
// warp is ring N + v's only producer during the call).
__device__ void post_partial_chunks(const NormalShape& s, const NormalTransport& t, const NormalCombineArgs& a,
                                    uint64_t seq, int lane) {
  const int P = s.local_ranks(), N = s.nodes(), node = t.rank / P, li = t.rank % P, T = s.max_tokens_per_rank;
  const int M = normal_chunk_tokens(T);
  const NormalRdmaLayout& r = t.rdma_layout;
  const size_t partial = normal_partial_bytes(s.hidden, s.num_topk);
  for (int v = lane; v < N; v += 32) {
    const int owner = v * P + li;
    if (v == node || masked(t, owner)) continue;
    const int count = a.handle.relay_counts[v];
    const size_t send = normal_region(r.combine_send, r.partial_region, N, seq, v);
    const size_t recv = normal_region(r.combine_recv, r.partial_region, N, seq, node);
    for (int c = 0; c < kNormalChunks; ++c) {
      const int n = normal_chunk_count(T, count, c);
      // The summers first wait for the local ranks' rows (a timeout), so
      // the staging gets two.
      if (n > 0 && !wait_staged(t, 1, N, v, c, n, owner, 2)) break;
      // A chunk with no partials writes the region's first 16 bytes, which
      // no one reads, so its signal still counts one write this call.
      const size_t off = n > 0 ? normal_partial_offset(s, c * M) : 0;
      const size_t bytes = n > 0 ? static_cast<size_t>(n) * partial : kPartialHeader;
      if (!post_region(t, static_cast<uint32_t>(N + v), owner, send + off, recv + off, bytes,
                       normal_combine_chunk_signal(N, node, c, seq))) {
        break;
      }
    }
  }
}

// N > 1: a warp per token other nodes relayed here sums its rows into one
// bf16 partial (weights in fp32) in the rdma space; the last block's first
// warp sends them back to the tokens' owners (post_partial_chunks) chunk
// by chunk while the others sum.
__global__ void __launch_bounds__(kCombineThreads)
    normal_combine_relay_kernel(NormalShape s, NormalLayout l, NormalTransport t, NormalCombineArgs a) {
  extern __shared__ int32_t lost[];  // [P]
  const int K = s.num_topk, H = s.hidden, P = s.local_ranks(), N = s.nodes(), T = s.max_tokens_per_rank;
  const int node = t.rank / P;
  const uint64_t seq = current_call(&t.state->combine_calls);
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (blockIdx.x == gridDim.x - 1) {
    if (warp == 0) post_partial_chunks(s, t, a, seq, lane);
    return;
  }
  const NormalRdmaLayout& r = t.rdma_layout;
  wait_local_rows(s, l, t, seq, lost);
  const uint8_t* own = t.peers.ptrs[t.rank];
  const int4* rows = reinterpret_cast<const int4*>(own + l.combine_x);
  const float* row_weights = reinterpret_cast<const float*>(own + l.combine_weights);
  const size_t vectors = static_cast<size_t>(H) / 8;
  const int M = normal_chunk_tokens(T), summers = gridDim.x - 1;
  for (int v = 0; v < N; ++v) {
    if (v == node) continue;
    const int n = a.handle.relay_counts[v];
    const size_t region = normal_region(r.combine_send, r.partial_region, N, seq, v);
    for (int tok = blockIdx.x * warps + warp; tok < n; tok += summers * warps) {
      const int32_t* index = a.handle.send_index + (static_cast<size_t>(v) * T + tok) * P;
      uint8_t* at = t.rdma + region + normal_partial_offset(s, tok);
      int4* out = reinterpret_cast<int4*>(at);
      for (size_t base_c = 0; base_c < vectors; base_c += 128) {
        float acc[4][8];
        zero(acc);
        add_local_rows(acc, rows, vectors, base_c, index, lost, P, v, T, lane);
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const size_t c = base_c + lane + 32 * u;
          if (c < vectors) out[c] = to_bf16x8(acc[u]);
        }
      }
      if (a.topk_weights != nullptr && lane < K) {
        reinterpret_cast<float*>(at + 2 * static_cast<size_t>(H))[lane] =
            local_weights(row_weights, index, lost, P, v, T, K, lane);
      }
      if (lane == 0) *reinterpret_cast<uint32_t*>(at + 2 * static_cast<size_t>(H) + 4 * K) = static_cast<uint32_t>(seq);
      mark_staged(t, 1, N, v, tok / M, lane);
    }
  }
}

// A warp per own token: its node's rows (local ranks ascending, fp32), then
// every other node's partial (nodes ascending), then the biases, into bf16.
__global__ void __launch_bounds__(kCombineThreads)
    normal_combine_recv_kernel(NormalShape s, NormalLayout l, NormalTransport t, NormalCombineArgs a) {
  extern __shared__ int32_t lost[];  // [P] local ranks, then [N] nodes whose partials never came
  const int K = s.num_topk, H = s.hidden, P = s.local_ranks(), N = s.nodes(), T = s.max_tokens_per_rank;
  const int node = t.rank / P, li = t.rank % P;
  const uint64_t seq = current_call(&t.state->combine_calls);
  const NormalRdmaLayout& r = t.rdma_layout;
  int32_t* node_lost = lost + P;
  wait_local_rows(s, l, t, seq, lost);
  for (int v = threadIdx.x; v < N; v += blockDim.x) node_lost[v] = v == node || masked(t, v * P + li);
  __syncthreads();
  const uint8_t* own = t.peers.ptrs[t.rank];
  const int4* rows = reinterpret_cast<const int4*>(own + l.combine_x);
  const float* row_weights = reinterpret_cast<const float*>(own + l.combine_weights);
  const size_t vectors = static_cast<size_t>(H) / 8;
  const int M = normal_chunk_tokens(T);
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Node v's partial of token tok, or null: none, or it never came.
  auto partial_of = [&](int tok, int v) -> const uint8_t* {
    if (node_lost[v]) return nullptr;
    const int32_t m = a.handle.node_index[static_cast<size_t>(tok) * N + v];
    if (m < 0 || !chunk_landed(t, 1, N, v, m / M, seq)) return nullptr;
    return t.rdma + normal_region(r.combine_recv, r.partial_region, N, seq, v) + normal_partial_offset(s, m);
  };
  for (int tok = blockIdx.x * warps + warp; tok < a.num_tokens; tok += gridDim.x * warps) {
    const int32_t* index = a.handle.send_index + (static_cast<size_t>(node) * T + tok) * P;
    const size_t at0 = static_cast<size_t>(tok) * vectors;
    // Each partial's chunk must have landed (the relays wait for their
    // local ranks first: two timeouts), and its tag be this call's.
    if (lane == 0) {
      for (int v = 0; v < N; ++v) {
        const int32_t m = node_lost[v] ? -1 : a.handle.node_index[static_cast<size_t>(tok) * N + v];
        if (m < 0) continue;
        const int relay = v * P + li, c = m / M;
        if (await_chunk(t, 1, N, v, c, seq, normal_combine_chunk_signal(N, v, c, seq), relay, kNormalPartialTimeout, 2) &&
            !wait_tag(t, t.rdma + normal_region(r.combine_recv, r.partial_region, N, seq, v) +
                             normal_partial_offset(s, m) + 2 * static_cast<size_t>(H) + 4 * K,
                      static_cast<uint32_t>(seq), relay)) {
          // Named once (kNormalStaleData); this block's other tokens do not
          // wait a timeout each for the same node's partials.
          node_lost[v] = 1;
        }
      }
    }
    __syncwarp();
    for (size_t base_c = 0; base_c < vectors; base_c += 128) {
      float acc[4][8];
      zero(acc);
      add_local_rows(acc, rows, vectors, base_c, index, lost, P, node, T, lane);
      for (int v = 0; v < N; ++v) {
        const int4* p = reinterpret_cast<const int4*>(partial_of(tok, v));
        if (p == nullptr) continue;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const size_t c = base_c + lane + 32 * u;
          if (c < vectors) add_bf16x8(acc[u], p[c]);
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const size_t c = base_c + lane + 32 * u;
        if (c >= vectors) continue;
        if (a.bias0 != nullptr) add_bf16x8(acc[u], reinterpret_cast<const int4*>(a.bias0)[at0 + c]);
        if (a.bias1 != nullptr) add_bf16x8(acc[u], reinterpret_cast<const int4*>(a.bias1)[at0 + c]);
        reinterpret_cast<int4*>(a.out)[at0 + c] = to_bf16x8(acc[u]);
      }
    }
    if (a.out_topk_weights != nullptr && lane < K) {
      float w = local_weights(row_weights, index, lost, P, node, T, K, lane);
      for (int v = 0; v < N; ++v) {
        const uint8_t* p = partial_of(tok, v);
        if (p != nullptr) w += reinterpret_cast<const float*>(p + 2 * static_cast<size_t>(H))[lane];
      }
      a.out_topk_weights[static_cast<size_t>(tok) * K + lane] = w;
    }
  }
  if (N > 1 && blockIdx.x == 0) {
    await_empty_chunks(t, 1, N, P, T, seq, kNormalPartialTimeout, 2,
                       [&](int v) { return node_lost[v] ? -1 : a.handle.node_counts[v]; });
  }
  if (last_block(&t.state->finished[3]) && threadIdx.x == 0) {
    *reinterpret_cast<volatile uint64_t*>(&t.state->combine_calls) = seq;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

Status launch_normal_combine(const NormalShape& s, const NormalLayout& l, const NormalTransport& t,
                             const NormalCombineArgs& a, void* stream) {
  const char* who = "launch_normal_combine";
  const std::string prefix = std::string(who) + ": ";
  EPX_RETURN_IF_ERROR(check_normal_shape(who, s));
  EPX_RETURN_IF_ERROR(check_normal_transport(who, s, t));
  NormalLayout want;
  EPX_RETURN_IF_ERROR(normal_layout(s, &want));
  if (want.nvl_bytes != l.nvl_bytes || want.combine_weights != l.combine_weights) {
    return invalid_argument(prefix + "the layout is not normal_layout() of this shape");
  }
  if (a.num_tokens < 0 || a.num_tokens > s.max_tokens_per_rank) {
    return invalid_argument(prefix + "num_tokens=" + std::to_string(a.num_tokens) + " is not in [0, " +
                            std::to_string(s.max_tokens_per_rank) + "]");
  }
  if (a.handle.rank_prefix_matrix == nullptr || a.handle.send_index == nullptr || a.handle.num_recv_tokens == nullptr) {
    return invalid_argument(prefix + "the handle's arrays are not allocated");
  }
  if (!aligned16(a.x) || !aligned16(a.out) || !aligned16(a.bias0) || !aligned16(a.bias1)) {
    return invalid_argument(prefix + "x, out and the biases must be 16-byte aligned");
  }
  if (a.out == nullptr && a.num_tokens > 0) return invalid_argument(prefix + "null out");
  if (s.nodes() > 1 && (a.handle.node_index == nullptr || a.handle.relay_counts == nullptr ||
                        t.chunk_gates == nullptr || t.chunk_staged == nullptr)) {
    return invalid_argument(prefix + "a job across nodes needs the handle's node arrays");
  }
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int stage = 0;
  auto launched = [&](const char* kernel) -> Status {
    EPX_RETURN_IF_ERROR(cuda_status(cudaGetLastError(), std::string("launch ") + kernel));
    return normal::record_stage(a.stage_events, ++stage, st);
  };
  EPX_RETURN_IF_ERROR(normal::record_stage(a.stage_events, 0, st));
  normal_combine_send_kernel<<<t.num_sms, kCombineThreads, sizeof(int32_t) * s.num_ranks, st>>>(s, l, t, a);
  EPX_RETURN_IF_ERROR(launched("normal_combine_send_kernel"));
  if (s.nodes() > 1) {
    // One block more than the data kernels: its first warp posts.
    normal_combine_relay_kernel<<<t.num_sms + 1, kCombineThreads, sizeof(int32_t) * s.local_ranks(), st>>>(s, l, t, a);
    EPX_RETURN_IF_ERROR(launched("normal_combine_relay_kernel"));
  }
  const size_t lost = sizeof(int32_t) * (s.local_ranks() + s.nodes());
  normal_combine_recv_kernel<<<t.num_sms, kCombineThreads, lost, st>>>(s, l, t, a);
  return launched("normal_combine_recv_kernel");
}

}  // namespace epx::kernels
