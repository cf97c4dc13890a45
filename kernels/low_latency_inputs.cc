#include "kernels/low_latency_inputs.h"

#include <random>
#include <set>

#include "kernels/fp8_reference.h"

namespace epx::kernels {

LowLatencyJobInputs LowLatencyJobInputs::random(const LowLatencyShape& s, uint32_t seed, int tokens, int idle,
                                                int none_every) {
  LowLatencyJobInputs job;
  job.shape = s;
  std::mt19937 rng(seed);
  std::normal_distribution<float> value(0.0f, 3.0f);
  std::uniform_real_distribution<float> weight(0.0f, 1.0f);
  const int usable = s.num_experts - idle;
  for (int r = 0; r < s.num_ranks; ++r) {
    const int n = tokens >= 0 ? tokens : static_cast<int>(rng() % (s.max_tokens_per_rank + 1));
    job.x.emplace_back(static_cast<size_t>(n) * s.hidden);
    for (auto& v : job.x.back()) v = float_to_bf16(value(rng));
    job.topk.emplace_back(static_cast<size_t>(n) * s.num_topk, -1);
    job.weights.emplace_back(static_cast<size_t>(n) * s.num_topk);
    for (int t = 0; t < n; ++t) {
      std::set<int64_t> picked;
      for (int k = 0; k < s.num_topk; ++k) {
        job.weights.back()[static_cast<size_t>(t) * s.num_topk + k] = weight(rng);
        if (none_every > 0 && rng() % none_every == 0) continue;  // -1: no expert in this slot
        if (static_cast<int>(picked.size()) >= usable) break;
        int64_t e = rng() % usable;
        while (picked.count(e)) e = (e + 1) % usable;
        picked.insert(e);
        job.topk.back()[static_cast<size_t>(t) * s.num_topk + k] = e;
      }
    }
  }
  job.refresh_views();
  return job;
}

void LowLatencyJobInputs::refresh_views() {
  inputs.clear();
  for (size_t r = 0; r < x.size(); ++r) {
    inputs.push_back({static_cast<int>(topk[r].size() / shape.num_topk), x[r].data(), topk[r].data(),
                      weights[r].data()});
  }
}

std::vector<uint16_t> random_expert_outputs(const LowLatencyShape& s, const LowLatencyReceived& received,
                                            uint32_t seed) {
  std::vector<uint16_t> out(s.total_rows() * s.hidden, 0);
  // xorshift64 to uniform [-4, 4): tens of millions of values per call in
  // the big test shapes, where a normal distribution took seconds.
  uint64_t x = 0x9E3779B97F4A7C15ull ^ seed;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return static_cast<float>(x >> 40) * (8.0f / 16777216.0f) - 4.0f;
  };
  for (int e = 0; e < s.local_experts(); ++e) {
    for (int row = 0; row < received.recv_count[e]; ++row) {
      uint16_t* y = out.data() + (static_cast<size_t>(e) * s.rows_per_expert() + row) * s.hidden;
      for (int h = 0; h < s.hidden; ++h) y[h] = float_to_bf16(next());
    }
  }
  return out;
}

}  // namespace epx::kernels
