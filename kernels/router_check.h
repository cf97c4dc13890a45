// The check of a router output every dispatch makes before touching memory:
// num_tokens within the buffer's bound, every expert id -1 or below
// num_experts. Shared by the low-latency and normal-mode formats.
#pragma once

#include <cstdint>
#include <string>

#include "epx/status.h"

namespace epx::kernels {

// `prefix` starts the message ("who: "); `bound_name` names the option
// that bounds num_tokens. Names the first bad entry.
inline Status check_router_output(const std::string& prefix, int num_tokens, int max_tokens, const char* bound_name,
                                  int num_topk, int num_experts, const int64_t* topk_idx) {
  if (num_tokens < 0 || num_tokens > max_tokens) {
    return invalid_argument(prefix + std::to_string(num_tokens) + " tokens exceed " + bound_name + "=" +
                            std::to_string(max_tokens));
  }
  if (num_tokens > 0 && topk_idx == nullptr) return invalid_argument(prefix + "null topk_idx");
  for (int t = 0; t < num_tokens; ++t) {
    for (int k = 0; k < num_topk; ++k) {
      const int64_t e = topk_idx[static_cast<size_t>(t) * num_topk + k];
      if (e < -1 || e >= num_experts) {
        return invalid_argument(prefix + "topk_idx[" + std::to_string(t) + "][" + std::to_string(k) +
                                "]=" + std::to_string(e) + " is neither -1 nor an expert below num_experts=" +
                                std::to_string(num_experts));
      }
    }
  }
  return Status();
}

}  // namespace epx::kernels
