// get_dispatch_layout: one thread per token; per-block histograms in shared
// memory, added to the outputs once per block.
#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_status.h"
#include "kernels/normal_device.cuh"
#include "kernels/normal_kernels.h"

namespace epx::kernels {
namespace {

constexpr int kLayoutThreads = 256;

__global__ void __launch_bounds__(kLayoutThreads)
    normal_layout_kernel(NormalShape s, NormalLayoutArgs a, DeviceError* error) {
  extern __shared__ int32_t counts[];  // [experts][ranks][nodes]
  const int R = s.num_ranks, E = s.num_experts, L = s.local_experts(), K = s.num_topk;
  const int nodes = a.ranks_per_node > 0 ? R / a.ranks_per_node : 0;
  int32_t* per_expert = counts;
  int32_t* per_rank = counts + E;
  int32_t* per_node = per_rank + R;
  for (int i = threadIdx.x; i < E + R + nodes; i += blockDim.x) counts[i] = 0;
  __syncthreads();
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < a.num_tokens) {
    const int64_t* row = a.topk_idx + static_cast<size_t>(t) * K;
    uint8_t* in_rank = a.is_token_in_rank + static_cast<size_t>(t) * R;
    for (int r = 0; r < R; ++r) in_rank[r] = 0;
    for (int k = 0; k < K; ++k) {
      const int64_t e = row[k];
      if (e < 0) continue;
      if (e >= E) {
        record_error(error, kNormalBadExpert, static_cast<uint32_t>(t), E, static_cast<uint64_t>(e));
        continue;
      }
      bool seen_expert = false, seen_rank = false;
      for (int j = 0; j < k; ++j) {
        const int64_t f = row[j];
        if (f < 0 || f >= E) continue;
        seen_expert |= f == e;
        seen_rank |= f / L == e / L;
      }
      if (!seen_expert) atomicAdd(&per_expert[e], 1);
      if (!seen_rank) {
        const int r = static_cast<int>(e / L);
        in_rank[r] = 1;
        atomicAdd(&per_rank[r], 1);
      }
    }
    if (nodes > 0) {
      // A node counts once: mark it from the ranks the token reaches.
      for (int n = 0; n < nodes; ++n) {
        bool any = false;
        for (int r = n * a.ranks_per_node; r < (n + 1) * a.ranks_per_node; ++r) any |= in_rank[r] != 0;
        if (any) atomicAdd(&per_node[n], 1);
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < E; i += blockDim.x) {
    if (per_expert[i] != 0) atomicAdd(&a.tokens_per_expert[i], per_expert[i]);
  }
  for (int i = threadIdx.x; i < R; i += blockDim.x) {
    if (per_rank[i] != 0) atomicAdd(&a.tokens_per_rank[i], per_rank[i]);
  }
  for (int i = threadIdx.x; i < nodes; i += blockDim.x) {
    if (per_node[i] != 0) atomicAdd(&a.tokens_per_node[i], per_node[i]);
  }
}

}  // namespace

Status launch_normal_layout(const NormalShape& s, const NormalTransport& t, const NormalLayoutArgs& a, void* stream) {
  const char* who = "launch_normal_layout";
  EPX_RETURN_IF_ERROR(check_normal_shape(who, s));
  if (a.num_tokens < 0 || a.num_tokens > s.max_tokens_per_rank) {
    return invalid_argument(std::string(who) + ": num_tokens=" + std::to_string(a.num_tokens) + " is not in [0, " +
                            std::to_string(s.max_tokens_per_rank) + "]");
  }
  if (a.tokens_per_rank == nullptr || a.tokens_per_expert == nullptr ||
      (a.num_tokens > 0 && (a.topk_idx == nullptr || a.is_token_in_rank == nullptr))) {
    return invalid_argument(std::string(who) + ": null topk_idx or output");
  }
  if (a.ranks_per_node > 0 && (s.num_ranks % a.ranks_per_node != 0 || a.tokens_per_node == nullptr)) {
    return invalid_argument(std::string(who) + ": ranks_per_node must divide num_ranks, with an output per node");
  }
  if (t.error == nullptr) return invalid_argument(std::string(who) + ": null error record");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int nodes = a.ranks_per_node > 0 ? s.num_ranks / a.ranks_per_node : 0;
  EPX_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(a.tokens_per_rank, 0, sizeof(int32_t) * s.num_ranks, st),
                                  "launch_normal_layout: zero tokens_per_rank"));
  EPX_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(a.tokens_per_expert, 0, sizeof(int32_t) * s.num_experts, st),
                                  "launch_normal_layout: zero tokens_per_expert"));
  if (nodes > 0) {
    EPX_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(a.tokens_per_node, 0, sizeof(int32_t) * nodes, st),
                                    "launch_normal_layout: zero tokens_per_node"));
  }
  if (a.num_tokens == 0) return Status();
  const size_t shared = sizeof(int32_t) * (s.num_experts + s.num_ranks + nodes);
  if (shared > 48 * 1024) {
    return invalid_argument(std::string(who) + ": " + std::to_string(s.num_experts) +
                            " experts need more than 48 KiB of counters per block");
  }
  const int blocks = (a.num_tokens + kLayoutThreads - 1) / kLayoutThreads;
  normal_layout_kernel<<<blocks, kLayoutThreads, shared, st>>>(s, a, t.error);
  return cuda_status(cudaGetLastError(), "launch normal_layout_kernel");
}

}  // namespace epx::kernels
