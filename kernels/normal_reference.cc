#include "kernels/normal_reference.h"

#include <cstring>
#include <string>

#include "kernels/fp8_reference.h"

namespace epx::kernels {
namespace {

// The ranks token t of `in` goes to: marks[r] != 0.
std::vector<uint8_t> ranks_of(const NormalShape& s, const int64_t* topk, int t) {
  std::vector<uint8_t> marks(s.num_ranks, 0);
  for (int k = 0; k < s.num_topk; ++k) {
    const int64_t e = topk[static_cast<size_t>(t) * s.num_topk + k];
    if (e >= 0) marks[e / s.local_experts()] = 1;
  }
  return marks;
}

}  // namespace

Status normal_layout_reference(const NormalShape& s, int ranks_per_node, int num_tokens, const int64_t* topk_idx,
                               NormalDispatchLayout* out) {
  EPX_RETURN_IF_ERROR(check_normal_shape("normal_layout_reference", s));
  if (ranks_per_node <= 0 || s.num_ranks % ranks_per_node != 0) {
    return invalid_argument("normal_layout_reference: ranks_per_node=" + std::to_string(ranks_per_node) +
                            " does not divide num_ranks=" + std::to_string(s.num_ranks));
  }
  EPX_RETURN_IF_ERROR(check_normal_topk("normal_layout_reference", s, num_tokens, topk_idx));
  NormalDispatchLayout l;
  l.tokens_per_rank.assign(s.num_ranks, 0);
  l.tokens_per_node.assign(s.num_ranks / ranks_per_node, 0);
  l.tokens_per_expert.assign(s.num_experts, 0);
  l.is_token_in_rank.assign(static_cast<size_t>(num_tokens) * s.num_ranks, 0);
  for (int t = 0; t < num_tokens; ++t) {
    std::vector<uint8_t> experts(s.num_experts, 0);
    for (int k = 0; k < s.num_topk; ++k) {
      const int64_t e = topk_idx[static_cast<size_t>(t) * s.num_topk + k];
      if (e >= 0) experts[e] = 1;
    }
    for (int e = 0; e < s.num_experts; ++e) l.tokens_per_expert[e] += experts[e];
    const std::vector<uint8_t> ranks = ranks_of(s, topk_idx, t);
    std::vector<uint8_t> nodes(l.tokens_per_node.size(), 0);
    for (int r = 0; r < s.num_ranks; ++r) {
      l.is_token_in_rank[static_cast<size_t>(t) * s.num_ranks + r] = ranks[r];
      l.tokens_per_rank[r] += ranks[r];
      if (ranks[r]) nodes[r / ranks_per_node] = 1;
    }
    for (size_t n = 0; n < nodes.size(); ++n) l.tokens_per_node[n] += nodes[n];
  }
  *out = std::move(l);
  return Status();
}

Status normal_dispatch_reference(const NormalShape& s, const NormalPayload& p, int expert_alignment,
                                 const std::vector<NormalRankInput>& inputs, std::vector<NormalReceived>* out) {
  EPX_RETURN_IF_ERROR(check_normal_shape("normal_dispatch_reference", s));
  EPX_RETURN_IF_ERROR(check_normal_payload("normal_dispatch_reference", s, p));
  if (expert_alignment < 1) return invalid_argument("normal_dispatch_reference: expert_alignment must be >= 1");
  if (static_cast<int>(inputs.size()) != s.num_ranks) {
    return invalid_argument("normal_dispatch_reference: one input per rank");
  }
  for (const NormalRankInput& in : inputs) {
    EPX_RETURN_IF_ERROR(check_normal_topk("normal_dispatch_reference", s, in.num_tokens, in.topk_idx));
  }
  const int R = s.num_ranks, K = s.num_topk, L = s.local_experts();
  const size_t row = p.row_bytes(s.hidden);
  // counts[src][dst], then the inclusive prefix over sources.
  std::vector<int32_t> prefix(static_cast<size_t>(R) * R, 0);
  for (int src = 0; src < R; ++src) {
    for (int t = 0; t < inputs[src].num_tokens; ++t) {
      const std::vector<uint8_t> ranks = ranks_of(s, inputs[src].topk_idx, t);
      for (int dst = 0; dst < R; ++dst) prefix[static_cast<size_t>(src) * R + dst] += ranks[dst];
    }
  }
  for (int src = 1; src < R; ++src) {
    for (int dst = 0; dst < R; ++dst) prefix[static_cast<size_t>(src) * R + dst] += prefix[(src - 1) * R + dst];
  }
  out->assign(R, NormalReceived());
  for (int dst = 0; dst < R; ++dst) {
    NormalReceived& o = (*out)[dst];
    o.rank_prefix_matrix = prefix;
    o.expert_counts.assign(L, 0);
    for (int src = 0; src < R; ++src) {
      const NormalRankInput& in = inputs[src];
      for (int t = 0; t < in.num_tokens; ++t) {
        if (!ranks_of(s, in.topk_idx, t)[dst]) continue;
        o.recv_x.insert(o.recv_x.end(), in.x + t * row, in.x + (t + 1) * row);
        if (p.fp8) {
          o.recv_scales.insert(o.recv_scales.end(), in.x_scales + static_cast<size_t>(t) * p.num_scales,
                               in.x_scales + static_cast<size_t>(t + 1) * p.num_scales);
        }
        o.recv_src_idx.push_back(t);
        std::vector<uint8_t> counted(L, 0);
        for (int k = 0; k < K; ++k) {
          const int64_t e = in.topk_idx[static_cast<size_t>(t) * K + k];
          const bool local = e >= static_cast<int64_t>(dst) * L && e < static_cast<int64_t>(dst + 1) * L;
          o.recv_topk_idx.push_back(local ? e - static_cast<int64_t>(dst) * L : -1);
          o.recv_topk_weights.push_back(local ? in.topk_weights[static_cast<size_t>(t) * K + k] : 0.0f);
          if (local && !counted[e - dst * L]) {
            counted[e - dst * L] = 1;
            ++o.expert_counts[e - dst * L];
          }
        }
      }
    }
    o.num_recv_tokens = static_cast<int>(o.recv_src_idx.size());
    for (int32_t& c : o.expert_counts) c = (c + expert_alignment - 1) / expert_alignment * expert_alignment;
  }
  return Status();
}

Status normal_combine_reference(const NormalShape& s, const std::vector<NormalRankInput>& inputs,
                                const std::vector<NormalReceived>& received,
                                const std::vector<NormalCombineInput>& combine_inputs,
                                std::vector<NormalCombined>* out, int ranks_per_node) {
  EPX_RETURN_IF_ERROR(check_normal_shape("normal_combine_reference", s));
  const int R = s.num_ranks, K = s.num_topk, H = s.hidden;
  const int P = ranks_per_node > 0 ? ranks_per_node : R;
  if (R % P != 0) {
    return invalid_argument("normal_combine_reference: ranks_per_node=" + std::to_string(P) +
                            " does not divide num_ranks=" + std::to_string(R));
  }
  if (static_cast<int>(inputs.size()) != R || static_cast<int>(received.size()) != R ||
      static_cast<int>(combine_inputs.size()) != R) {
    return invalid_argument("normal_combine_reference: one input, received and combine input per rank");
  }
  out->assign(R, NormalCombined());
  // For each expert rank, the row each (source, token) landed on.
  std::vector<std::vector<int>> row_of(R);  // [expert rank][src * max + t]
  for (int r = 0; r < R; ++r) {
    row_of[r].assign(s.max_recv_rows(), -1);
    const NormalReceived& got = received[r];
    for (int i = 0; i < got.num_recv_tokens; ++i) {
      int src = 0;
      while (got.rank_prefix_matrix[static_cast<size_t>(src) * R + r] <= i) ++src;
      row_of[r][static_cast<size_t>(src) * s.max_tokens_per_rank + got.recv_src_idx[i]] = i;
    }
  }
  for (int owner = 0; owner < R; ++owner) {
    const int T = inputs[owner].num_tokens;
    NormalCombined& o = (*out)[owner];
    o.x.assign(static_cast<size_t>(T) * H, 0);
    const bool weights = combine_inputs[0].topk_weights != nullptr;
    if (weights) o.topk_weights.assign(static_cast<size_t>(T) * K, 0.0f);
    std::vector<float> acc(H), partial(H);
    const int home = owner / P;
    for (int t = 0; t < T; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::vector<float> wacc(K, 0.0f);
      // The owner's node first, then every other node ascending; another
      // node's rows arrive as one partial sum, rounded to bf16 once (its
      // weights stay fp32).
      for (int step = 0; step < R / P; ++step) {
        const int node = step == 0 ? home : (step <= home ? step - 1 : step);
        const bool remote = node != home;
        std::fill(partial.begin(), partial.end(), 0.0f);
        std::vector<float> wpartial(K, 0.0f);
        std::vector<float>& sum = remote ? partial : acc;
        std::vector<float>& wsum = remote ? wpartial : wacc;
        bool any = false;
        for (int r = node * P; r < (node + 1) * P; ++r) {
          const int i = row_of[r][static_cast<size_t>(owner) * s.max_tokens_per_rank + t];
          if (i < 0) continue;
          any = true;
          const uint16_t* y = combine_inputs[r].x + static_cast<size_t>(i) * H;
          for (int h = 0; h < H; ++h) sum[h] += bf16_to_float(y[h]);
          if (weights) {
            for (int k = 0; k < K; ++k) wsum[k] += combine_inputs[r].topk_weights[static_cast<size_t>(i) * K + k];
          }
        }
        if (remote && any) {
          for (int h = 0; h < H; ++h) acc[h] += bf16_to_float(float_to_bf16(partial[h]));
          for (int k = 0; k < K; ++k) wacc[k] += wpartial[k];
        }
      }
      for (const uint16_t* bias : {combine_inputs[owner].bias0, combine_inputs[owner].bias1}) {
        if (bias == nullptr) continue;
        for (int h = 0; h < H; ++h) acc[h] += bf16_to_float(bias[static_cast<size_t>(t) * H + h]);
      }
      for (int h = 0; h < H; ++h) o.x[static_cast<size_t>(t) * H + h] = float_to_bf16(acc[h]);
      if (weights) std::copy(wacc.begin(), wacc.end(), o.topk_weights.begin() + static_cast<size_t>(t) * K);
    }
  }
  return Status();
}

}  // namespace epx::kernels
