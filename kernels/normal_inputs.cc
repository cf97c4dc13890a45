#include "kernels/normal_inputs.h"

#include <cstring>
#include <random>
#include <set>

#include "kernels/fp8_reference.h"

namespace epx::kernels {
namespace {

// xorshift64: tens of millions of values per job in the big shapes, where
// std::normal_distribution takes seconds.
class Xorshift {
 public:
  explicit Xorshift(uint64_t seed) : x_(0x9E3779B97F4A7C15ull ^ seed) {}
  uint64_t next() {
    x_ ^= x_ << 13;
    x_ ^= x_ >> 7;
    x_ ^= x_ << 17;
    return x_;
  }
  float uniform(float lo, float hi) { return lo + static_cast<float>(next() >> 40) * ((hi - lo) / 16777216.0f); }

 private:
  uint64_t x_;
};

}  // namespace

NormalJobInputs NormalJobInputs::random(const NormalShape& s, const NormalPayload& p, uint32_t seed,
                                        const std::vector<int>& tokens, NormalRouting routing) {
  NormalJobInputs job;
  job.shape = s;
  job.payload = p;
  std::mt19937 rng(seed);
  Xorshift fast(seed);
  const int L = s.local_experts();
  for (int r = 0; r < s.num_ranks; ++r) {
    const int n = tokens.size() == 1 ? tokens[0] : tokens.at(r);
    const size_t row = p.row_bytes(s.hidden);
    job.x.emplace_back(static_cast<size_t>(n) * row);
    if (p.fp8) {
      // 0x7F / 0xFF are NaN; every other code is a finite e4m3.
      for (auto& b : job.x.back()) {
        b = static_cast<uint8_t>(fast.next() >> 56);
        if ((b & 0x7F) == 0x7F) b ^= 1;
      }
      job.scales.emplace_back(static_cast<size_t>(n) * p.num_scales);
      for (auto& w : job.scales.back()) {
        const float f = fast.uniform(1e-3f, 4.0f);
        std::memcpy(&w, &f, 4);
      }
    } else {
      uint16_t* v = reinterpret_cast<uint16_t*>(job.x.back().data());
      for (size_t i = 0; i < static_cast<size_t>(n) * s.hidden; ++i) v[i] = float_to_bf16(fast.uniform(-4.0f, 4.0f));
      job.scales.emplace_back();
    }
    job.topk.emplace_back(static_cast<size_t>(n) * s.num_topk, -1);
    job.weights.emplace_back(static_cast<size_t>(n) * s.num_topk);
    for (int t = 0; t < n; ++t) {
      int lo = 0, hi = s.num_experts;  // experts [lo, hi) are allowed
      if (routing == NormalRouting::kAllToRank0) hi = L;
      if (routing == NormalRouting::kNoneToLast) hi = s.num_experts - L;
      const int usable = hi - lo;
      std::set<int64_t> picked;
      for (int k = 0; k < s.num_topk; ++k) {
        job.weights.back()[static_cast<size_t>(t) * s.num_topk + k] = fast.uniform(0.0f, 1.0f);
        if (usable <= 0 || static_cast<int>(picked.size()) >= usable) break;
        if (routing != NormalRouting::kBalanced && rng() % 5 == 0) continue;  // -1: no expert in this slot
        int64_t e = lo + static_cast<int64_t>(rng() % usable);
        while (picked.count(e)) e = lo + (e - lo + 1) % usable;
        picked.insert(e);
        job.topk.back()[static_cast<size_t>(t) * s.num_topk + k] = e;
      }
    }
  }
  job.refresh_views();
  return job;
}

void NormalJobInputs::refresh_views() {
  inputs.clear();
  for (size_t r = 0; r < x.size(); ++r) {
    NormalRankInput in;
    in.num_tokens = static_cast<int>(topk[r].size() / shape.num_topk);
    in.x = x[r].data();
    in.x_scales = payload.fp8 ? scales[r].data() : nullptr;
    in.topk_idx = topk[r].data();
    in.topk_weights = weights[r].data();
    inputs.push_back(in);
  }
}

std::vector<uint16_t> normal_expert_outputs(int rows, int hidden, uint32_t seed) {
  std::vector<uint16_t> out(static_cast<size_t>(rows) * hidden);
  Xorshift fast(seed);
  for (auto& v : out) v = float_to_bf16(fast.uniform(-4.0f, 4.0f));
  return out;
}

}  // namespace epx::kernels
