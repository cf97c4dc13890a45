// CPU reference of low-latency dispatch and combine over a whole job: every
// rank's inputs in, every rank's outputs out, in the layouts of
// low_latency_format.h. The oracle the GPU kernels are tested against (FP8
// bytes and combine bf16 bits exactly), and the meaning of the API written
// as plain loops.
#pragma once

#include <cstdint>
#include <vector>

#include "epx/status.h"
#include "kernels/low_latency_format.h"

namespace epx::kernels {

// One rank's side of a call. Pointers are host memory the caller keeps.
struct LowLatencyRankInput {
  int num_tokens = 0;
  const uint16_t* x = nullptr;             // [num_tokens][hidden] bf16 (dispatch)
  const int64_t* topk_idx = nullptr;       // [num_tokens][num_topk], -1 = no expert
  const float* topk_weights = nullptr;     // [num_tokens][num_topk] (combine)
};

// One rank's dispatch output (and the handle combine needs).
struct LowLatencyReceived {
  std::vector<uint8_t> recv_x;        // total_rows * row bytes: e4m3 codes, or bf16 as little-endian pairs
  std::vector<float> scales;          // FP8 with float scales: [local_experts][hidden/128][rows]
  std::vector<int32_t> ue8m0_scales;  // FP8 with UE8M0: [local_experts][hidden/512][rows]
  std::vector<int32_t> recv_count;    // [local_experts]
  std::vector<int32_t> src_info;      // [local_experts][rows], -1 past recv_count
  std::vector<int64_t> layout_range;  // [local_experts][num_ranks]: (begin << 32) | count
};

// inputs[r] is rank r's tokens; on success (*out)[r] is what rank r receives.
// Rows never written (past recv_count) are zero.
Status low_latency_dispatch_reference(const LowLatencyShape& shape, const LowLatencyDispatchOptions& options,
                                      const std::vector<LowLatencyRankInput>& inputs,
                                      std::vector<LowLatencyReceived>* out);

// expert_out[r] is rank r's [local_experts][rows][hidden] bf16 expert outputs,
// row for row as rank r received them (dispatch's handle). On success
// (*combined)[r] is rank r's [num_tokens][hidden] bf16 result.
Status low_latency_combine_reference(const LowLatencyShape& shape, const std::vector<LowLatencyRankInput>& inputs,
                                     const std::vector<LowLatencyReceived>& handles,
                                     const std::vector<const uint16_t*>& expert_out,
                                     std::vector<std::vector<uint16_t>>* combined);

}  // namespace epx::kernels
