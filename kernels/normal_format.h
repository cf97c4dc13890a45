// The shapes, outputs and memory layout of normal (high-throughput) dispatch
// and combine, shared by the GPU kernels, their launchers and the CPU
// reference (normal_reference.h). They follow deep_ep.Buffer's normal mode
// (get_dispatch_layout / dispatch / combine), so an engine reads EPX's
// outputs as it reads DeepEP's:
//
//   layout      num_tokens_per_rank [ranks] int32, num_tokens_per_expert
//               [experts] int32, is_token_in_rank [tokens][ranks] bool (a
//               token counts once per rank and once per expert, however many
//               of its top-k entries name them); num_tokens_per_node [nodes]
//               int32 when the job spans nodes
//   recv_x      [num_recv_tokens][hidden] bf16, or e4m3 bytes with
//               recv_x_scales [num_recv_tokens][num_scales] (4-byte float or
//               packed UE8M0 int32, copied, never recomputed)
//   order       rows grouped by source rank ascending, token order inside a
//               source (DeepEP's order too: its channels are contiguous
//               token ranges, read in channel order)
//   recv_src_idx      [num_recv_tokens] int32: the row's token on its source
//   recv_topk_idx     [num_recv_tokens][num_topk] int64: the source's entry
//                     minus this rank's first expert where it names a local
//                     expert, else -1; recv_topk_weights the same entries'
//                     weights, 0 where recv_topk_idx is -1
//   per-expert counts tokens each local expert received, each rounded up to
//                     a multiple of expert_alignment
//   rank_prefix_matrix [ranks][ranks] int32: [s][r] = tokens ranks 0..s send
//                     to rank r (inclusive prefix over sources)
//   combine     out[t] = bf16(sum over ranks r holding t, r ascending, of the
//               fp32 value of r's row for t; then + bias0[t], + bias1[t]),
//               in fp32, unweighted (DeepEP's normal combine is unweighted:
//               the expert side applies the weights); combined_topk_weights
//               [t][k] = the fp32 sum of the rows' weights the same way.
//
// Plain C++17 with no CUDA types; usable on host and device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "epx/status.h"
#include "kernels/fp8_format.h"
#include "kernels/router_check.h"

#if defined(__CUDACC__)
#define EPX_NORMAL_HOST_DEVICE __host__ __device__
#else
#define EPX_NORMAL_HOST_DEVICE
#endif

namespace epx::kernels {

// What sizes a normal-mode buffer. max_tokens_per_rank bounds every call's
// num_tokens; a rank can receive at most num_ranks * max_tokens_per_rank
// rows (every source sending it everything), and the buffer holds that many,
// so no routing can overrun it.
struct NormalShape {
  int num_ranks = 0;
  int num_experts = 0;
  int hidden = 0;
  int num_topk = 0;
  int max_tokens_per_rank = 0;

  EPX_NORMAL_HOST_DEVICE int local_experts() const { return num_ranks > 0 ? num_experts / num_ranks : 0; }
  EPX_NORMAL_HOST_DEVICE size_t max_recv_rows() const {
    return static_cast<size_t>(num_ranks) * static_cast<size_t>(max_tokens_per_rank);
  }
};

// The payload of one dispatch call.
struct NormalPayload {
  bool fp8 = false;    // x holds e4m3 bytes and comes with scales
  int num_scales = 0;  // FP8: scale words per token, 1..hidden/128 (DeepEP: hidden/128 floats or hidden/512 UE8M0 words)
  EPX_NORMAL_HOST_DEVICE size_t row_bytes(int hidden) const {
    return static_cast<size_t>(hidden) * (fp8 ? 1 : 2);
  }
};

// Limits of the kernels: a block keeps a source's counts for every rank in
// shared memory.
inline constexpr int kNormalMaxRanks = 1024;
inline constexpr int kNormalMaxTopk = 32;

EPX_NORMAL_HOST_DEVICE inline constexpr size_t normal_align16(size_t n) { return (n + 15) / 16 * 16; }

// One rank's nvl space (CUDA IPC to same-node ranks); every rank computes
// the same layout from the same shape, so a rank addresses a peer's space by
// offset. All offsets are multiples of 16.
//   notify    [ranks] slots, slot s written by source s:
//               uint64 seq (stored last, release), int32 counts[ranks] (the
//               source's tokens for every rank), int32 expert_counts
//               [local_experts] (its tokens for this rank's experts)
//   arrivals  [2][ranks] uint64: dispatch data / combine rows of rank s
//             complete for call seq (stored after the data, release)
//   recv_x, recv_scales, recv_topk_idx, recv_topk_weights, recv_src_idx:
//             max_recv_rows rows each, written by the sources at their final
//             row (the rank_prefix_matrix gives each source its range)
//   combine_x [ranks][max_tokens] rows of hidden bf16: rank r's rows for
//             this rank's tokens, at the index the token had in this rank's
//             send list to r; combine_weights the same [ranks][max_tokens]
//             [num_topk] floats
struct NormalLayout {
  size_t notify_slot_bytes = 0;
  size_t notify = 0;
  size_t arrivals = 0;
  size_t recv_x = 0;
  size_t recv_scales = 0;
  size_t recv_topk_idx = 0;
  size_t recv_topk_weights = 0;
  size_t recv_src_idx = 0;
  size_t combine_x = 0;
  size_t combine_weights = 0;
  size_t nvl_bytes = 0;
};

inline constexpr size_t kNotifySeq = 0;
inline constexpr size_t kNotifyCounts = 16;
EPX_NORMAL_HOST_DEVICE inline constexpr size_t notify_expert_counts(int num_ranks) {
  return kNotifyCounts + 4 * static_cast<size_t>(num_ranks);
}

inline Status check_normal_shape(const char* who, const NormalShape& s) {
  const std::string prefix = std::string(who) + ": ";
  auto n = [](long long v) { return std::to_string(v); };
  if (s.num_ranks <= 0 || s.num_ranks > kNormalMaxRanks) {
    return invalid_argument(prefix + "num_ranks=" + n(s.num_ranks) + " is not in 1.." + n(kNormalMaxRanks));
  }
  if (s.num_experts <= 0 || s.num_experts % s.num_ranks != 0) {
    return invalid_argument(prefix + "num_experts=" + n(s.num_experts) + " is not a positive multiple of num_ranks=" +
                            n(s.num_ranks));
  }
  if (s.hidden <= 0 || s.hidden % kFp8BlockSize != 0) {
    return invalid_argument(prefix + "hidden=" + n(s.hidden) + " is not a positive multiple of 128");
  }
  if (s.num_topk <= 0 || s.num_topk > kNormalMaxTopk) {
    return invalid_argument(prefix + "num_topk=" + n(s.num_topk) + " is not in 1.." + n(kNormalMaxTopk));
  }
  if (s.max_tokens_per_rank <= 0) {
    return invalid_argument(prefix + "num_max_tokens_per_rank=" + n(s.max_tokens_per_rank) + " is not positive");
  }
  if (s.max_recv_rows() > (1ull << 31) - 1) {
    return invalid_argument(prefix + "num_ranks * num_max_tokens_per_rank exceeds 2^31 - 1 rows");
  }
  return Status();
}

inline Status check_normal_payload(const char* who, const NormalShape& s, const NormalPayload& p) {
  const std::string prefix = std::string(who) + ": ";
  if (!p.fp8) {
    if (p.num_scales != 0) return invalid_argument(prefix + "BF16 x takes no scales");
    return Status();
  }
  if (p.num_scales <= 0 || p.num_scales > s.hidden / kFp8BlockSize) {
    return invalid_argument(prefix + "FP8 x needs 1.." + std::to_string(s.hidden / kFp8BlockSize) +
                            " scale words per token, got " + std::to_string(p.num_scales));
  }
  return Status();
}

// Every expert id -1 or below num_experts; names the first bad entry.
inline Status check_normal_topk(const char* who, const NormalShape& s, int num_tokens, const int64_t* topk_idx) {
  return check_router_output(std::string(who) + ": ", num_tokens, s.max_tokens_per_rank, "num_max_tokens_per_rank",
                             s.num_topk, s.num_experts, topk_idx);
}

// INVALID_ARGUMENT (from check_normal_shape) for a bad shape.
inline Status normal_layout(const NormalShape& s, NormalLayout* out) {
  EPX_RETURN_IF_ERROR(check_normal_shape("normal_layout", s));
  NormalLayout l;
  const size_t rows = s.max_recv_rows();
  l.notify_slot_bytes = normal_align16(notify_expert_counts(s.num_ranks) + 4 * static_cast<size_t>(s.local_experts()));
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t here = at;
    at += normal_align16(bytes);
    return here;
  };
  l.notify = take(l.notify_slot_bytes * s.num_ranks);
  l.arrivals = take(2 * sizeof(uint64_t) * s.num_ranks);
  l.recv_x = take(rows * 2 * s.hidden);
  l.recv_scales = take(rows * 4 * (s.hidden / kFp8BlockSize));
  l.recv_topk_idx = take(rows * sizeof(int64_t) * s.num_topk);
  l.recv_topk_weights = take(rows * sizeof(float) * s.num_topk);
  l.recv_src_idx = take(rows * sizeof(int32_t));
  l.combine_x = take(rows * 2 * s.hidden);
  l.combine_weights = take(rows * sizeof(float) * s.num_topk);
  l.nvl_bytes = at;
  *out = l;
  return Status();
}

}  // namespace epx::kernels
