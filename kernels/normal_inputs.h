// Random but reproducible inputs of a whole normal-mode job, for tests and
// benchmarks: every rank (each its own process) builds the same job from the
// same seed, runs the CPU reference of the whole job (normal_reference.h)
// and checks its own GPU outputs without gathering anything.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/normal_format.h"
#include "kernels/normal_reference.h"

namespace epx::kernels {

// Who the router sends tokens to.
enum class NormalRouting {
  kRandom,       // up to num_topk distinct experts anywhere, some entries -1
  kAllToRank0,   // every token's experts live on rank 0 (one receiver takes everything)
  kNoneToLast,   // no token picks an expert of the last rank (it receives nothing)
  kBalanced,     // DeepEP's benchmark router: num_topk distinct random experts, no -1
};

struct NormalJobInputs {
  NormalShape shape;
  NormalPayload payload;
  std::vector<std::vector<uint8_t>> x;        // per rank: [tokens][row_bytes]
  std::vector<std::vector<uint32_t>> scales;  // per rank: [tokens][num_scales] (FP8)
  std::vector<std::vector<int64_t>> topk;     // per rank: [tokens][num_topk]
  std::vector<std::vector<float>> weights;    // per rank: [tokens][num_topk]
  std::vector<NormalRankInput> inputs;        // views of the above

  // tokens[r] tokens on rank r (one entry: every rank). BF16 values are
  // random normals; FP8 bytes are random finite e4m3 codes and the scales
  // random positive floats (dispatch copies them, so any bits do).
  static NormalJobInputs random(const NormalShape& shape, const NormalPayload& payload, uint32_t seed,
                                const std::vector<int>& tokens, NormalRouting routing = NormalRouting::kRandom);
  void refresh_views();
};

// Random bf16 expert outputs for one rank's received rows: [rows][hidden].
std::vector<uint16_t> normal_expert_outputs(int rows, int hidden, uint32_t seed);

}  // namespace epx::kernels
