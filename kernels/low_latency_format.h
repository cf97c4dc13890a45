// The shapes and layouts of low-latency (LL) dispatch and combine, shared by
// the GPU kernels, their host launchers and the CPU reference
// (low_latency_reference.h). They follow DeepEP's low_latency_dispatch /
// low_latency_combine, so an engine's grouped GEMM reads EPX's buffers as it
// reads DeepEP's:
//
//   recv_x        [local_experts][ranks * max_tokens][hidden]   e4m3 bytes (FP8) or bf16
//   scales        [local_experts][hidden / 128][ranks * max_tokens]  float: column-major
//                 in the last two dims (row r, block b at b * rows + r)
//   ue8m0 scales  [local_experts][hidden / 512][ranks * max_tokens]  int32, 4 UE8M0 bytes
//                 per word, block 4w+j in byte j (little-endian); same column-major order
//   recv_count    [local_experts]  rows received by each local expert, packed
//                 from row 0 (a masked grouped GEMM reads rows [0, recv_count))
//   src_info      [local_experts][ranks * max_tokens]  the row's token index on
//                 its source rank (-1 past recv_count)
//   layout_range  [local_experts][ranks]  (begin << 32) | count: the rows of
//                 each source rank in the expert's block
//
// EPX fixes an order DeepEP leaves to arrival: an expert's rows are grouped
// by source rank in ascending order, and within a source rank are in token
// order. Combine is out[t] = bf16(sum over k of w[t][k] * y), y the bf16 row
// expert topk_idx[t][k] produced for token t, accumulated in fp32 with one
// fused multiply-add per k in ascending k, starting from 0; entries with
// expert -1 are skipped (a token with none gets zeros).
//
// Plain C++17 with no CUDA types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "epx/status.h"
#include "kernels/fp8_format.h"
#include "kernels/router_check.h"

namespace epx::kernels {

// Channels per packed UE8M0 word: four 128-channel blocks.
inline constexpr int kUe8m0ChannelsPerWord = 4 * kFp8BlockSize;

// What sizes every LL buffer: DeepEP's size hint (num_max_dispatch_tokens_per_rank,
// hidden, num_ranks, num_experts) plus the router's top-k.
struct LowLatencyShape {
  int num_ranks = 0;
  int num_experts = 0;
  int hidden = 0;
  int max_tokens_per_rank = 0;
  int num_topk = 0;

  int local_experts() const { return num_ranks > 0 ? num_experts / num_ranks : 0; }
  // Rows of one local expert's block: room for every rank's every token.
  int rows_per_expert() const { return num_ranks * max_tokens_per_rank; }
  size_t total_rows() const { return static_cast<size_t>(local_experts()) * rows_per_expert(); }
};

struct LowLatencyDispatchOptions {
  bool use_fp8 = true;      // false: recv_x holds bf16 rows, no scales
  bool round_scale = false; // FP8 scales rounded up to powers of two
  bool use_ue8m0 = false;   // FP8 scales as packed UE8M0 bytes (implies round_scale)

  Fp8CastOptions fp8() const {
    Fp8CastOptions o;
    o.round_scale_to_pow2 = round_scale;
    o.ue8m0 = use_ue8m0;
    return o;
  }
};

// Bytes of one recv_x row.
inline size_t low_latency_row_bytes(const LowLatencyShape& s, const LowLatencyDispatchOptions& o) {
  return static_cast<size_t>(s.hidden) * (o.use_fp8 ? 1 : 2);
}

// The checks every implementation makes before touching memory; `who` names
// the caller in the message.
inline Status check_low_latency_shape(const char* who, const LowLatencyShape& s, const LowLatencyDispatchOptions& o) {
  const std::string prefix = std::string(who) + ": ";
  auto n = [](int v) { return std::to_string(v); };
  if (s.num_ranks <= 0 || s.num_ranks > 65536) return invalid_argument(prefix + "num_ranks=" + n(s.num_ranks) + " is not in 1..65536");
  if (s.num_experts <= 0 || s.num_experts % s.num_ranks != 0) {
    return invalid_argument(prefix + "num_experts=" + n(s.num_experts) + " is not a positive multiple of num_ranks=" +
                            n(s.num_ranks));
  }
  if (s.hidden <= 0 || s.hidden % kFp8BlockSize != 0) {
    return invalid_argument(prefix + "hidden=" + n(s.hidden) + " is not a positive multiple of 128");
  }
  if (o.use_fp8 && o.use_ue8m0 && s.hidden % kUe8m0ChannelsPerWord != 0) {
    return invalid_argument(prefix + "hidden=" + n(s.hidden) +
                            " is not a multiple of 512 (UE8M0 scales pack four 128-channel blocks per int32)");
  }
  if (o.use_ue8m0 && !o.use_fp8) return invalid_argument(prefix + "use_ue8m0 needs use_fp8");
  if (s.max_tokens_per_rank <= 0) {
    return invalid_argument(prefix + "num_max_dispatch_tokens_per_rank=" + n(s.max_tokens_per_rank) + " is not positive");
  }
  if (s.num_topk <= 0) return invalid_argument(prefix + "num_topk=" + n(s.num_topk) + " is not positive");
  if (static_cast<uint64_t>(s.num_ranks) * static_cast<uint64_t>(s.max_tokens_per_rank) > (1ull << 31) - 1) {
    return invalid_argument(prefix + "num_ranks * num_max_dispatch_tokens_per_rank exceeds 2^31 - 1 rows");
  }
  return Status();
}

// One rank's router output: num_tokens <= max_tokens_per_rank, every expert
// id -1 or in [0, num_experts). Names the first bad entry.
inline Status check_low_latency_topk(const char* who, const LowLatencyShape& s, int num_tokens, const int64_t* topk_idx) {
  return check_router_output(std::string(who) + ": ", num_tokens, s.max_tokens_per_rank,
                             "num_max_dispatch_tokens_per_rank", s.num_topk, s.num_experts, topk_idx);
}

}  // namespace epx::kernels
