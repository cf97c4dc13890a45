#include "kernels/low_latency_reference.h"

#include <cmath>
#include <cstring>
#include <string>

#include "kernels/fp8_reference.h"

namespace epx::kernels {
namespace {

// A token that names one expert twice would need two rows from one source
// rank's share of the block; routers never do it, so it is refused.
Status check_unique_experts(const char* who, const LowLatencyShape& s, int rank, const LowLatencyRankInput& in) {
  for (int t = 0; t < in.num_tokens; ++t) {
    const int64_t* row = in.topk_idx + static_cast<size_t>(t) * s.num_topk;
    for (int a = 0; a < s.num_topk; ++a) {
      for (int b = a + 1; b < s.num_topk; ++b) {
        if (row[a] >= 0 && row[a] == row[b]) {
          return invalid_argument(std::string(who) + ": rank " + std::to_string(rank) + " token " + std::to_string(t) +
                                  " names expert " + std::to_string(row[a]) + " twice (topk_idx[" + std::to_string(t) +
                                  "][" + std::to_string(a) + "] and [" + std::to_string(b) + "])");
        }
      }
    }
  }
  return Status();
}

Status check_inputs(const char* who, const LowLatencyShape& s, const LowLatencyDispatchOptions& o,
                    const std::vector<LowLatencyRankInput>& inputs) {
  EPX_RETURN_IF_ERROR(check_low_latency_shape(who, s, o));
  if (inputs.size() != static_cast<size_t>(s.num_ranks)) {
    return invalid_argument(std::string(who) + ": " + std::to_string(inputs.size()) + " ranks' inputs for num_ranks=" +
                            std::to_string(s.num_ranks));
  }
  for (int r = 0; r < s.num_ranks; ++r) {
    EPX_RETURN_IF_ERROR(check_low_latency_topk(who, s, inputs[r].num_tokens, inputs[r].topk_idx)
                            .with_context("rank " + std::to_string(r)));
    EPX_RETURN_IF_ERROR(check_unique_experts(who, s, r, inputs[r]));
  }
  return Status();
}

}  // namespace

Status low_latency_dispatch_reference(const LowLatencyShape& s, const LowLatencyDispatchOptions& o,
                                      const std::vector<LowLatencyRankInput>& inputs,
                                      std::vector<LowLatencyReceived>* out) {
  const char* who = "low_latency_dispatch_reference";
  EPX_RETURN_IF_ERROR(check_inputs(who, s, o, inputs));
  for (int r = 0; r < s.num_ranks; ++r) {
    if (inputs[r].num_tokens > 0 && inputs[r].x == nullptr) {
      return invalid_argument(std::string(who) + ": rank " + std::to_string(r) + ": null x");
    }
  }
  const int local = s.local_experts();
  const int rows = s.rows_per_expert();
  const int blocks = s.hidden / kFp8BlockSize;
  const size_t row_bytes = low_latency_row_bytes(s, o);
  const Fp8CastOptions fp8 = o.fp8();

  out->assign(s.num_ranks, LowLatencyReceived());
  for (int d = 0; d < s.num_ranks; ++d) {
    LowLatencyReceived& rx = (*out)[d];
    rx.recv_x.assign(s.total_rows() * row_bytes, 0);
    if (o.use_fp8 && o.use_ue8m0) {
      rx.ue8m0_scales.assign(static_cast<size_t>(local) * (s.hidden / kUe8m0ChannelsPerWord) * rows, 0);
    } else if (o.use_fp8) {
      rx.scales.assign(static_cast<size_t>(local) * blocks * rows, 0.0f);
    }
    rx.recv_count.assign(local, 0);
    rx.src_info.assign(s.total_rows(), -1);
    rx.layout_range.assign(static_cast<size_t>(local) * s.num_ranks, 0);

    std::vector<uint8_t> q(s.hidden);
    std::vector<uint8_t> scale_bytes(static_cast<size_t>(blocks) * sizeof(float));
    for (int le = 0; le < local; ++le) {
      const int64_t expert = static_cast<int64_t>(d) * local + le;
      int begin = 0;
      for (int r = 0; r < s.num_ranks; ++r) {
        const LowLatencyRankInput& in = inputs[r];
        int count = 0;
        for (int t = 0; t < in.num_tokens; ++t) {
          const int64_t* idx = in.topk_idx + static_cast<size_t>(t) * s.num_topk;
          bool chosen = false;
          for (int k = 0; k < s.num_topk; ++k) chosen |= idx[k] == expert;
          if (!chosen) continue;
          const size_t row = static_cast<size_t>(le) * rows + begin + count;
          const uint16_t* token = in.x + static_cast<size_t>(t) * s.hidden;
          uint8_t* dst = rx.recv_x.data() + row * row_bytes;
          rx.src_info[row] = t;
          if (!o.use_fp8) {
            std::memcpy(dst, token, row_bytes);
          } else {
            EPX_RETURN_IF_ERROR(fp8_cast_reference(token, 1, s.hidden, dst,
                                                   reinterpret_cast<float*>(scale_bytes.data()), fp8));
            const size_t in_block = static_cast<size_t>(begin + count);
            for (int b = 0; b < blocks; ++b) {
              if (o.use_ue8m0) {
                // Byte b of the token's scales lands in word b / 4, byte b % 4.
                const size_t word = (static_cast<size_t>(le) * (s.hidden / kUe8m0ChannelsPerWord) + b / 4) * rows +
                                    in_block;
                uint32_t w = static_cast<uint32_t>(rx.ue8m0_scales[word]);
                w |= uint32_t{scale_bytes[b]} << (8 * (b % 4));
                rx.ue8m0_scales[word] = static_cast<int32_t>(w);
              } else {
                float v;
                std::memcpy(&v, scale_bytes.data() + b * sizeof(float), sizeof v);
                rx.scales[(static_cast<size_t>(le) * blocks + b) * rows + in_block] = v;
              }
            }
          }
          ++count;
        }
        rx.layout_range[static_cast<size_t>(le) * s.num_ranks + r] =
            (static_cast<int64_t>(begin) << 32) | static_cast<uint32_t>(count);
        begin += count;
      }
      rx.recv_count[le] = begin;
    }
  }
  return Status();
}

Status low_latency_combine_reference(const LowLatencyShape& s, const std::vector<LowLatencyRankInput>& inputs,
                                     const std::vector<LowLatencyReceived>& handles,
                                     const std::vector<const uint16_t*>& expert_out,
                                     std::vector<std::vector<uint16_t>>* combined) {
  const char* who = "low_latency_combine_reference";
  EPX_RETURN_IF_ERROR(check_inputs(who, s, LowLatencyDispatchOptions{false, false, false}, inputs));
  if (handles.size() != static_cast<size_t>(s.num_ranks) || expert_out.size() != static_cast<size_t>(s.num_ranks)) {
    return invalid_argument(std::string(who) + ": handles and expert outputs must be given for each of the " +
                            std::to_string(s.num_ranks) + " ranks");
  }
  const int local = s.local_experts();
  const int rows = s.rows_per_expert();
  for (int d = 0; d < s.num_ranks; ++d) {
    if (handles[d].src_info.size() != s.total_rows() ||
        handles[d].layout_range.size() != static_cast<size_t>(local) * s.num_ranks) {
      return invalid_argument(std::string(who) + ": rank " + std::to_string(d) + "'s handle has another shape");
    }
    if (expert_out[d] == nullptr) return invalid_argument(std::string(who) + ": rank " + std::to_string(d) + ": null expert output");
  }

  combined->assign(s.num_ranks, {});
  std::vector<float> acc(s.hidden);
  for (int r = 0; r < s.num_ranks; ++r) {
    const LowLatencyRankInput& in = inputs[r];
    if (in.num_tokens > 0 && in.topk_weights == nullptr) {
      return invalid_argument(std::string(who) + ": rank " + std::to_string(r) + ": null topk_weights");
    }
    std::vector<uint16_t>& y = (*combined)[r];
    y.assign(static_cast<size_t>(in.num_tokens) * s.hidden, 0);
    for (int t = 0; t < in.num_tokens; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int k = 0; k < s.num_topk; ++k) {
        const size_t at = static_cast<size_t>(t) * s.num_topk + k;
        const int64_t e = in.topk_idx[at];
        if (e < 0) continue;
        const int d = static_cast<int>(e / local), le = static_cast<int>(e % local);
        const int64_t range = handles[d].layout_range[static_cast<size_t>(le) * s.num_ranks + r];
        const int begin = static_cast<int>(range >> 32), count = static_cast<int>(range & 0xFFFFFFFF);
        int row = -1;
        for (int i = begin; i < begin + count && row < 0; ++i) {
          if (handles[d].src_info[static_cast<size_t>(le) * rows + i] == t) row = i;
        }
        if (row < 0) {
          return invalid_argument(std::string(who) + ": rank " + std::to_string(d) + "'s handle has no row of rank " +
                                  std::to_string(r) + " token " + std::to_string(t) + " for expert " +
                                  std::to_string(e) + " (a handle from another dispatch?)");
        }
        const uint16_t* src = expert_out[d] + (static_cast<size_t>(le) * rows + row) * s.hidden;
        const float w = in.topk_weights[at];
        for (int h = 0; h < s.hidden; ++h) acc[h] = std::fmaf(bf16_to_float(src[h]), w, acc[h]);
      }
      for (int h = 0; h < s.hidden; ++h) y[static_cast<size_t>(t) * s.hidden + h] = float_to_bf16(acc[h]);
    }
  }
  return Status();
}

}  // namespace epx::kernels
