// CPU reference of normal-mode get_dispatch_layout, dispatch and combine
// over a whole job (normal_format.h's semantics): the GPU tests' oracle.
//
// Plain C++17, no CUDA. Every rank of a test job builds the same inputs from
// one seed and runs this on the whole job, so it can check its own GPU
// outputs without gathering anything.
#pragma once

#include <cstdint>
#include <vector>

#include "epx/status.h"
#include "kernels/normal_format.h"

namespace epx::kernels {

// One rank's inputs to a dispatch.
struct NormalRankInput {
  int num_tokens = 0;
  const uint8_t* x = nullptr;          // [num_tokens][payload.row_bytes(hidden)]
  const uint32_t* x_scales = nullptr;  // FP8: [num_tokens][num_scales] 4-byte words
  const int64_t* topk_idx = nullptr;   // [num_tokens][num_topk], -1 = none
  const float* topk_weights = nullptr; // [num_tokens][num_topk]
};

struct NormalDispatchLayout {
  std::vector<int32_t> tokens_per_rank;    // [ranks]
  std::vector<int32_t> tokens_per_node;    // [ranks / ranks_per_node]
  std::vector<int32_t> tokens_per_expert;  // [experts]
  std::vector<uint8_t> is_token_in_rank;   // [tokens][ranks], 0 or 1
};

// get_dispatch_layout for one rank's router output. ranks_per_node divides
// num_ranks. INVALID_ARGUMENT for a bad shape or expert id.
Status normal_layout_reference(const NormalShape& shape, int ranks_per_node, int num_tokens, const int64_t* topk_idx,
                               NormalDispatchLayout* out);

// One rank's dispatch outputs.
struct NormalReceived {
  int num_recv_tokens = 0;
  std::vector<uint8_t> recv_x;             // [num_recv_tokens][row_bytes]
  std::vector<uint32_t> recv_scales;       // [num_recv_tokens][num_scales] (FP8)
  std::vector<int32_t> recv_src_idx;       // [num_recv_tokens]
  std::vector<int64_t> recv_topk_idx;      // [num_recv_tokens][num_topk]
  std::vector<float> recv_topk_weights;    // [num_recv_tokens][num_topk]
  std::vector<int32_t> expert_counts;      // [local_experts], aligned up to expert_alignment
  std::vector<int32_t> rank_prefix_matrix; // [ranks][ranks], the same on every rank
};

// Dispatch of a whole job: inputs[r] is rank r's. expert_alignment >= 1.
Status normal_dispatch_reference(const NormalShape& shape, const NormalPayload& payload, int expert_alignment,
                                 const std::vector<NormalRankInput>& inputs, std::vector<NormalReceived>* out);

// One rank's combine inputs: its expert outputs for the rows it received.
struct NormalCombineInput {
  const uint16_t* x = nullptr;           // [num_recv_tokens][hidden] bf16
  const float* topk_weights = nullptr;   // [num_recv_tokens][num_topk], or null: no combined weights
  const uint16_t* bias0 = nullptr;       // [num_tokens][hidden] bf16 of the token's owner, or null
  const uint16_t* bias1 = nullptr;
};

struct NormalCombined {
  std::vector<uint16_t> x;        // [num_tokens][hidden] bf16
  std::vector<float> topk_weights;  // [num_tokens][num_topk] (empty without weights)
};

// Combine of a whole job after `received` (normal_dispatch_reference's
// output for `inputs`). combine_inputs[r] holds rank r's expert outputs and
// the biases of rank r's own tokens. With ranks_per_node (P) below
// num_ranks the job spans nodes of P consecutive ranks, and the sum follows
// the network design (docs/ARCHITECTURE.md): the owner's node's rows in
// fp32, ranks ascending, then, node by node ascending, each other node's
// rows summed in fp32 there and sent as one bf16 partial; the weights the
// same way (summed per node in fp32, then added), without rounding. 0: one
// node.
Status normal_combine_reference(const NormalShape& shape, const std::vector<NormalRankInput>& inputs,
                                const std::vector<NormalReceived>& received,
                                const std::vector<NormalCombineInput>& combine_inputs,
                                std::vector<NormalCombined>* out, int ranks_per_node = 0);

}  // namespace epx::kernels
