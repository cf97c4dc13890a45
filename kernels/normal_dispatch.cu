// Normal-mode dispatch inside one node: the notify kernel (send lists and
// the count exchange) and the dispatch kernel (rows straight to their final
// place in every destination's nvl space), with their launcher. Contract and
// protocol: normal_kernels.h; formats: normal_format.h.
#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_status.h"
#include "kernels/normal_device.cuh"
#include "kernels/normal_kernels.h"

namespace epx::kernels {
namespace {

using namespace normal;

constexpr int kNotifyThreads = 1024;
constexpr int kDispatchThreads = 512;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

__device__ inline uint64_t current_call(const uint64_t* calls) {
  return *reinterpret_cast<const volatile uint64_t*>(calls) + 1;
}

__device__ inline int32_t* slot_counts(uint8_t* space, const NormalLayout& l, int src) {
  return reinterpret_cast<int32_t*>(space + l.notify + src * l.notify_slot_bytes + kNotifyCounts);
}

// Block `dst`: this rank's send list for dst and its count, told to every rank.
__global__ void __launch_bounds__(kNotifyThreads)
    normal_notify_kernel(NormalShape s, NormalLayout l, NormalTransport t, NormalDispatchArgs a) {
  __shared__ int32_t warp_sums[32];
  __shared__ int32_t running;
  const int R = s.num_ranks, L = s.local_experts(), me = t.rank, dst = blockIdx.x;
  const uint64_t seq = current_call(&t.state->dispatch_calls);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int32_t count = 0;
  if (!a.cached) {
    if (threadIdx.x == 0) running = 0;
    __syncthreads();
    for (int base = 0; base < a.num_tokens; base += blockDim.x) {
      const int tok = base + threadIdx.x;
      const int flag = tok < a.num_tokens && a.is_token_in_rank[static_cast<size_t>(tok) * R + dst] != 0 ? 1 : 0;
      int incl = flag;
      for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(kFullMask, incl, o);
        if (lane >= o) incl += v;
      }
      if (lane == 31) warp_sums[warp] = incl;
      __syncthreads();
      if (warp == 0) {
        int w = lane < warps ? warp_sums[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
          const int v = __shfl_up_sync(kFullMask, w, o);
          if (lane >= o) w += v;
        }
        warp_sums[lane] = w;  // inclusive over warps
      }
      __syncthreads();
      const int excl = running + (warp > 0 ? warp_sums[warp - 1] : 0) + incl - flag;
      if (tok < a.num_tokens) {
        const size_t at = static_cast<size_t>(tok) * R + dst;
        a.handle.send_index[at] = flag ? excl : -1;
        a.handle.is_token_in_rank[at] = static_cast<uint8_t>(flag);
      }
      __syncthreads();
      if (threadIdx.x == 0) running += warp_sums[warps - 1];
      __syncthreads();
    }
    count = running;
  } else {
    const int32_t* p = a.handle.rank_prefix_matrix;
    count = p[me * R + dst] - (me > 0 ? p[(me - 1) * R + dst] : 0);
  }
  for (int p = threadIdx.x; p < R; p += blockDim.x) {
    if (!masked(t, p)) slot_counts(t.peers.ptrs[p], l, me)[dst] = count;
  }
  if (!masked(t, dst)) {
    int32_t* experts = slot_counts(t.peers.ptrs[dst], l, me) + R;
    for (int j = threadIdx.x; j < L; j += blockDim.x) experts[j] = a.cached ? 0 : a.tokens_per_expert[dst * L + j];
  }
  __threadfence_system();
  if (last_block(&t.state->finished[0])) {
    for (int p = threadIdx.x; p < R; p += blockDim.x) {
      if (!masked(t, p)) store_seq(t.peers.ptrs[p] + l.notify + me * l.notify_slot_bytes + kNotifySeq, seq);
    }
  }
}

__global__ void __launch_bounds__(kDispatchThreads)
    normal_dispatch_kernel(NormalShape s, NormalLayout l, NormalTransport t, NormalDispatchArgs a) {
  extern __shared__ int32_t shared[];
  __shared__ int32_t num_recv;
  const int R = s.num_ranks, L = s.local_experts(), K = s.num_topk, me = t.rank;
  int32_t* start = shared;     // [R]: where this rank's rows begin at each destination
  int32_t* lost = shared + R;  // [R]: masked, or its notify never came
  const uint64_t seq = current_call(&t.state->dispatch_calls);
  uint8_t* own = t.peers.ptrs[me];

  for (int src = threadIdx.x; src < R; src += blockDim.x) {
    lost[src] = masked(t, src) ||
                !wait_seq(t, own + l.notify + src * l.notify_slot_bytes + kNotifySeq, seq, src, kNormalNotifyTimeout);
  }
  __syncthreads();
  for (int dst = threadIdx.x; dst < R; dst += blockDim.x) {
    int32_t sum = 0;
    if (a.cached) {
      sum = me > 0 ? a.handle.rank_prefix_matrix[(me - 1) * R + dst] : 0;
    } else {
      for (int src = 0; src < me; ++src) sum += lost[src] ? 0 : slot_counts(own, l, src)[dst];
    }
    start[dst] = sum;
  }
  if (threadIdx.x == 0) {
    int32_t sum = 0;
    if (a.cached) {
      sum = a.handle.rank_prefix_matrix[(R - 1) * R + me];
    } else {
      for (int src = 0; src < R; ++src) sum += lost[src] ? 0 : slot_counts(own, l, src)[me];
    }
    num_recv = sum;
  }
  __syncthreads();

  if (blockIdx.x == 0) {
    if (!a.cached) {
      for (int dst = threadIdx.x; dst < R; dst += blockDim.x) {
        int32_t sum = 0;
        for (int src = 0; src < R; ++src) {
          sum += lost[src] ? 0 : slot_counts(own, l, src)[dst];
          a.handle.rank_prefix_matrix[src * R + dst] = sum;
        }
      }
      for (int j = threadIdx.x; j < L; j += blockDim.x) {
        int32_t sum = 0;
        for (int src = 0; src < R; ++src) sum += lost[src] ? 0 : (slot_counts(own, l, src) + R)[j];
        const int align = a.expert_alignment;
        t.host_counts->expert_counts[j] = (sum + align - 1) / align * align;
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      *a.handle.num_recv_tokens = num_recv;
      if (a.num_worst_tokens > 0 && num_recv > a.num_worst_tokens) {
        record_error(t.error, kNormalWorstExceeded, static_cast<uint32_t>(me), a.num_worst_tokens, num_recv);
      }
      t.host_counts->num_recv_tokens = num_recv;
      __threadfence_system();
      ring::ring_store_release(reinterpret_cast<volatile uint64_t*>(&t.host_counts->seq), a.host_tag);
    }
  }

  // Rows: a warp per token, every destination of the token in turn.
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t row_bytes = a.payload.row_bytes(s.hidden);
  const uint8_t* x = static_cast<const uint8_t*>(a.x);
  for (int tok = blockIdx.x * warps + warp; tok < a.num_tokens; tok += gridDim.x * warps) {
    const int32_t* index = a.handle.send_index + static_cast<size_t>(tok) * R;
    for (int base = 0; base < R; base += 32) {
      const int mine = base + lane;
      const int32_t pos = mine < R && !lost[mine] ? index[mine] : -1;
      unsigned todo = __ballot_sync(kFullMask, pos >= 0);
      while (todo != 0) {
        const int b = __ffs(todo) - 1;
        todo &= todo - 1;
        const int d = base + b;
        const size_t row = static_cast<size_t>(start[d]) + __shfl_sync(kFullMask, pos, b);
        uint8_t* peer = t.peers.ptrs[d];
        warp_copy(peer + l.recv_x + row * row_bytes, x + static_cast<size_t>(tok) * row_bytes, row_bytes, lane);
        if (a.payload.fp8) {
          uint32_t* scales = reinterpret_cast<uint32_t*>(peer + l.recv_scales) + row * a.payload.num_scales;
          for (int j = lane; j < a.payload.num_scales; j += 32) {
            scales[j] = a.x_scales[static_cast<size_t>(tok) * a.scale_token_stride +
                                   static_cast<size_t>(j) * a.scale_hidden_stride];
          }
        }
        if (a.topk_idx != nullptr && lane < K) {
          const int64_t e = a.topk_idx[static_cast<size_t>(tok) * K + lane];
          const bool local = e >= static_cast<int64_t>(d) * L && e < static_cast<int64_t>(d + 1) * L;
          reinterpret_cast<int64_t*>(peer + l.recv_topk_idx)[row * K + lane] = local ? e - static_cast<int64_t>(d) * L : -1;
          reinterpret_cast<float*>(peer + l.recv_topk_weights)[row * K + lane] =
              local ? a.topk_weights[static_cast<size_t>(tok) * K + lane] : 0.0f;
        }
        if (lane == 0) reinterpret_cast<int32_t*>(peer + l.recv_src_idx)[row] = tok;
      }
    }
  }
  // Worst-case mode: the rows past what arrives read as "no expert".
  if (a.num_worst_tokens > 0 && a.topk_idx != nullptr) {
    const size_t first = static_cast<size_t>(num_recv) * K, end = static_cast<size_t>(a.num_worst_tokens) * K;
    for (size_t i = first + blockIdx.x * blockDim.x + threadIdx.x; i < end; i += gridDim.x * blockDim.x) {
      reinterpret_cast<int64_t*>(own + l.recv_topk_idx)[i] = -1;
      reinterpret_cast<float*>(own + l.recv_topk_weights)[i] = 0.0f;
    }
  }

  __threadfence_system();
  if (last_block(&t.state->finished[1])) {
    for (int p = threadIdx.x; p < R; p += blockDim.x) {
      if (!lost[p]) store_seq(t.peers.ptrs[p] + l.arrivals + sizeof(uint64_t) * me, seq);
    }
    for (int src = threadIdx.x; src < R; src += blockDim.x) {
      if (!lost[src]) wait_seq(t, own + l.arrivals + sizeof(uint64_t) * src, seq, src, kNormalDispatchTimeout);
    }
    __syncthreads();
    if (threadIdx.x == 0) *reinterpret_cast<volatile uint64_t*>(&t.state->dispatch_calls) = seq;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

Status check_normal_transport(const char* who, const NormalShape& s, const NormalTransport& t) {
  const std::string prefix = std::string(who) + ": ";
  if (t.rank < 0 || t.rank >= s.num_ranks) return invalid_argument(prefix + "rank " + std::to_string(t.rank) + " is not in the job");
  if (t.peers.ptrs == nullptr || t.peers.world != static_cast<uint32_t>(s.num_ranks)) {
    return invalid_argument(prefix + "peers must list all " + std::to_string(s.num_ranks) + " ranks");
  }
  if (t.state == nullptr || t.error == nullptr || t.rank_mask == nullptr || t.host_counts == nullptr) {
    return invalid_argument(prefix + "null state, error, rank mask or host counts");
  }
  if (t.timeout_ns == 0) return invalid_argument(prefix + "timeout_ns is 0 (every wait needs a limit)");
  if (t.num_sms <= 0 || t.num_sms > 1024) return invalid_argument(prefix + "num_sms=" + std::to_string(t.num_sms) + " is not in 1..1024");
  return Status();
}

Status launch_normal_dispatch(const NormalShape& s, const NormalLayout& l, const NormalTransport& t,
                              const NormalDispatchArgs& a, void* stream) {
  const char* who = "launch_normal_dispatch";
  const std::string prefix = std::string(who) + ": ";
  EPX_RETURN_IF_ERROR(check_normal_shape(who, s));
  EPX_RETURN_IF_ERROR(check_normal_payload(who, s, a.payload));
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
  if (a.num_tokens > 0 && (a.x == nullptr || !aligned16(a.x))) return invalid_argument(prefix + "x is null or not 16-byte aligned");
  if (a.payload.fp8 && a.num_tokens > 0 && a.x_scales == nullptr) return invalid_argument(prefix + "FP8 x without scales");
  if (a.cached) {
    if (a.handle.rank_prefix_matrix == nullptr) return invalid_argument(prefix + "cached dispatch without a handle");
  } else if (a.num_tokens > 0 && (a.is_token_in_rank == nullptr || a.tokens_per_expert == nullptr)) {
    return invalid_argument(prefix + "null is_token_in_rank or num_tokens_per_expert");
  }
  if ((a.topk_idx == nullptr) != (a.topk_weights == nullptr)) {
    return invalid_argument(prefix + "topk_idx and topk_weights come together");
  }
  if (a.expert_alignment < 1) return invalid_argument(prefix + "expert_alignment must be >= 1");
  if (a.num_worst_tokens < 0 || static_cast<size_t>(a.num_worst_tokens) > s.max_recv_rows()) {
    return invalid_argument(prefix + "num_worst_tokens=" + std::to_string(a.num_worst_tokens) +
                            " is beyond the buffer's " + std::to_string(s.max_recv_rows()) + " rows");
  }
  if (a.handle.send_index == nullptr || a.handle.is_token_in_rank == nullptr || a.handle.num_recv_tokens == nullptr ||
      a.handle.rank_prefix_matrix == nullptr) {
    return invalid_argument(prefix + "the handle's arrays are not allocated");
  }
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  normal_notify_kernel<<<s.num_ranks, kNotifyThreads, 0, st>>>(s, l, t, a);
  EPX_RETURN_IF_ERROR(cuda_status(cudaGetLastError(), "launch normal_notify_kernel"));
  const size_t shared = sizeof(int32_t) * 2 * s.num_ranks;
  normal_dispatch_kernel<<<t.num_sms, kDispatchThreads, shared, st>>>(s, l, t, a);
  return cuda_status(cudaGetLastError(), "launch normal_dispatch_kernel");
}

}  // namespace epx::kernels
