// Normal-mode combine inside one node: the send kernel (each received row
// back to its source, at the row its token had in the source's send list to
// this rank) and the receive kernel (a warp per token sums the rows of the
// ranks holding it), with their launcher. Contract: normal_kernels.h.
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

__global__ void __launch_bounds__(kCombineThreads)
    normal_combine_send_kernel(NormalShape s, NormalLayout l, NormalTransport t, NormalCombineArgs a) {
  extern __shared__ int32_t prefix[];  // [R]: rank_prefix_matrix's column for this rank
  const int R = s.num_ranks, K = s.num_topk, me = t.rank;
  const uint64_t seq = current_call(&t.state->combine_calls);
  for (int r = threadIdx.x; r < R; r += blockDim.x) prefix[r] = a.handle.rank_prefix_matrix[r * R + me];
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
    const int src = lo;
    if (masked(t, src)) continue;
    const size_t slot = static_cast<size_t>(me) * s.max_tokens_per_rank + (row - (src > 0 ? prefix[src - 1] : 0));
    uint8_t* peer = t.peers.ptrs[src];
    warp_copy(peer + l.combine_x + slot * row_bytes, reinterpret_cast<const uint8_t*>(a.x) + row * row_bytes,
              row_bytes, lane);
    if (a.topk_weights != nullptr && lane < K) {
      reinterpret_cast<float*>(peer + l.combine_weights)[slot * K + lane] = a.topk_weights[static_cast<size_t>(row) * K + lane];
    }
  }
  __threadfence_system();
  if (last_block(&t.state->finished[2])) {
    for (int p = threadIdx.x; p < R; p += blockDim.x) {
      if (!masked(t, p)) store_seq(t.peers.ptrs[p] + l.arrivals + sizeof(uint64_t) * (R + me), seq);
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

__global__ void __launch_bounds__(kCombineThreads)
    normal_combine_recv_kernel(NormalShape s, NormalLayout l, NormalTransport t, NormalCombineArgs a) {
  extern __shared__ int32_t lost[];  // [R]
  const int R = s.num_ranks, K = s.num_topk, H = s.hidden;
  const uint64_t seq = current_call(&t.state->combine_calls);
  const uint8_t* own = t.peers.ptrs[t.rank];
  for (int src = threadIdx.x; src < R; src += blockDim.x) {
    lost[src] = masked(t, src) ||
                !wait_seq(t, own + l.arrivals + sizeof(uint64_t) * (R + src), seq, src, kNormalCombineTimeout);
  }
  __syncthreads();
  const int4* rows = reinterpret_cast<const int4*>(own + l.combine_x);
  const float* row_weights = reinterpret_cast<const float*>(own + l.combine_weights);
  const size_t vectors = static_cast<size_t>(H) / 8;  // int4 = 8 bf16
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int tok = blockIdx.x * warps + warp; tok < a.num_tokens; tok += gridDim.x * warps) {
    const int32_t* index = a.handle.send_index + static_cast<size_t>(tok) * R;
    const size_t at0 = static_cast<size_t>(tok) * vectors;
    // Each lane sums four chunks of 8 channels per step for two holding
    // ranks at a time, so eight loads are in flight at once (one at a time
    // left the sum bound by load latency). All lanes run the same iterations: the holders are
    // shared through ballot and shuffle.
    for (size_t base_c = 0; base_c < vectors; base_c += 128) {
      float acc[4][8];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[u][i] = 0.0f;
      }
      // The ranks holding the token, ascending, 32 per pass.
      for (int pass = 0; pass < R; pass += 32) {
        const int r = pass + lane;
        const int32_t p = r < R && !lost[r] ? index[r] : -1;
        unsigned todo = __ballot_sync(0xFFFFFFFFu, p >= 0);
        const unsigned long long row = p >= 0 ? static_cast<unsigned long long>(r) * s.max_tokens_per_rank + p : 0;
        // Two holders at a time: eight loads in flight per lane.
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
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const size_t c = base_c + lane + 32 * u;
        if (c >= vectors) continue;
        if (a.bias0 != nullptr) add_bf16x8(acc[u], reinterpret_cast<const int4*>(a.bias0)[at0 + c]);
        if (a.bias1 != nullptr) add_bf16x8(acc[u], reinterpret_cast<const int4*>(a.bias1)[at0 + c]);
        int4 out;
        __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
        for (int i = 0; i < 4; ++i) o[i] = __floats2bfloat162_rn(acc[u][2 * i], acc[u][2 * i + 1]);
        reinterpret_cast<int4*>(a.out)[at0 + c] = out;
      }
    }
    if (a.out_topk_weights != nullptr && lane < K) {
      float w = 0.0f;
      for (int r = 0; r < R; ++r) {
        const int32_t p = index[r];
        if (p < 0 || lost[r]) continue;
        w += row_weights[(static_cast<size_t>(r) * s.max_tokens_per_rank + p) * K + lane];
      }
      a.out_topk_weights[static_cast<size_t>(tok) * K + lane] = w;
    }
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
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const size_t shared = sizeof(int32_t) * s.num_ranks;
  normal_combine_send_kernel<<<t.num_sms, kCombineThreads, shared, st>>>(s, l, t, a);
  EPX_RETURN_IF_ERROR(cuda_status(cudaGetLastError(), "launch normal_combine_send_kernel"));
  normal_combine_recv_kernel<<<t.num_sms, kCombineThreads, shared, st>>>(s, l, t, a);
  return cuda_status(cudaGetLastError(), "launch normal_combine_recv_kernel");
}

}  // namespace epx::kernels
