// Random but reproducible inputs of a whole LL job, for tests and
// benchmarks: every rank of a job (each its own process) builds the same
// job from the same seed, so each can run the CPU reference of the whole job
// and check its own GPU outputs without gathering anything.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/low_latency_format.h"
#include "kernels/low_latency_reference.h"

namespace epx::kernels {

struct LowLatencyJobInputs {
  LowLatencyShape shape;
  std::vector<std::vector<uint16_t>> x;      // per rank: [tokens][hidden] bf16
  std::vector<std::vector<int64_t>> topk;    // per rank: [tokens][num_topk]
  std::vector<std::vector<float>> weights;   // per rank: [tokens][num_topk]
  std::vector<LowLatencyRankInput> inputs;   // views of the above

  // Each token picks up to num_topk distinct experts among the first
  // num_experts - idle (so the last `idle` experts get nothing), and about
  // one entry in `none_every` is -1 (0: none). tokens < 0: each rank a random
  // count in [0, max_tokens_per_rank]; else exactly `tokens` per rank.
  static LowLatencyJobInputs random(const LowLatencyShape& shape, uint32_t seed, int tokens = -1, int idle = 2,
                                    int none_every = 5);

  // Points `inputs` at the vectors again (after a copy or an edit).
  void refresh_views();
};

// Expert outputs for rank `rank`'s received rows: random bf16 below each
// expert's recv_count, zero past it; [local_experts][rows][hidden].
std::vector<uint16_t> random_expert_outputs(const LowLatencyShape& shape, const LowLatencyReceived& received,
                                            uint32_t seed);

}  // namespace epx::kernels
