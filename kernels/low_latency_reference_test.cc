#include "kernels/low_latency_reference.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "kernels/fp8_reference.h"
#include "kernels/low_latency_inputs.h"

namespace epx::kernels {
namespace {

// A job's worth of random router output (low_latency_inputs.h).
struct Job : LowLatencyJobInputs {
  Job(LowLatencyShape s, uint32_t seed, int idle = 2) : LowLatencyJobInputs(random(s, seed, -1, idle)) {}
};

int64_t range_of(int begin, int count) { return (static_cast<int64_t>(begin) << 32) | count; }

void check_dispatch(const Job& job, const LowLatencyDispatchOptions& o, const std::vector<LowLatencyReceived>& out) {
  const LowLatencyShape& s = job.shape;
  const int local = s.local_experts(), rows = s.rows_per_expert(), blocks = s.hidden / kFp8BlockSize;
  const size_t row_bytes = low_latency_row_bytes(s, o);
  REQUIRE(out.size() == static_cast<size_t>(s.num_ranks));
  for (int d = 0; d < s.num_ranks; ++d) {
    const LowLatencyReceived& rx = out[d];
    for (int le = 0; le < local; ++le) {
      const int64_t e = static_cast<int64_t>(d) * local + le;
      int row = 0;
      for (int r = 0; r < s.num_ranks; ++r) {
        // Expected rows: rank r's tokens that chose e, in token order.
        std::vector<int> tokens;
        for (int t = 0; t < job.inputs[r].num_tokens; ++t) {
          for (int k = 0; k < s.num_topk; ++k) {
            if (job.topk[r][static_cast<size_t>(t) * s.num_topk + k] == e) tokens.push_back(t);
          }
        }
        CHECK(rx.layout_range[static_cast<size_t>(le) * s.num_ranks + r] == range_of(row, static_cast<int>(tokens.size())));
        for (int t : tokens) {
          const size_t at = static_cast<size_t>(le) * rows + row;
          CHECK(rx.src_info[at] == t);
          const uint16_t* token = job.x[r].data() + static_cast<size_t>(t) * s.hidden;
          if (!o.use_fp8) {
            CHECK(std::memcmp(rx.recv_x.data() + at * row_bytes, token, row_bytes) == 0);
          } else {
            std::vector<uint8_t> q(s.hidden);
            std::vector<float> sc(blocks);
            REQUIRE(fp8_cast_reference(token, 1, s.hidden, q.data(), sc.data(), o.fp8()).ok());
            CHECK(std::memcmp(rx.recv_x.data() + at * row_bytes, q.data(), row_bytes) == 0);
            const auto* scale_bytes = reinterpret_cast<const uint8_t*>(sc.data());
            for (int b = 0; b < blocks; ++b) {
              if (o.use_ue8m0) {
                const uint32_t w = static_cast<uint32_t>(
                    rx.ue8m0_scales[(static_cast<size_t>(le) * (s.hidden / 512) + b / 4) * rows + row]);
                CHECK(((w >> (8 * (b % 4))) & 0xFF) == scale_bytes[b]);
              } else {
                CHECK(rx.scales[(static_cast<size_t>(le) * blocks + b) * rows + row] == sc[b]);
              }
            }
          }
          ++row;
        }
      }
      CHECK(rx.recv_count[le] == row);
      // Past recv_count: no source, zero bytes.
      for (int i = row; i < rows; ++i) {
        const size_t at = static_cast<size_t>(le) * rows + i;
        CHECK(rx.src_info[at] == -1);
        for (size_t b = 0; b < row_bytes; ++b) REQUIRE(rx.recv_x[at * row_bytes + b] == 0);
      }
    }
  }
}

}  // namespace

TEST_CASE("dispatch places every chosen (token, expert) once, grouped by source rank, in token order") {
  for (uint32_t seed : {1u, 2u, 3u}) {
    Job job({4, 16, 256, 8, 4}, seed);
    for (LowLatencyDispatchOptions o : {LowLatencyDispatchOptions{true, false, false},
                                        LowLatencyDispatchOptions{true, true, false},
                                        LowLatencyDispatchOptions{false, false, false}}) {
      CAPTURE(seed);
      CAPTURE(o.use_fp8);
      CAPTURE(o.round_scale);
      std::vector<LowLatencyReceived> out;
      REQUIRE(low_latency_dispatch_reference(job.shape, o, job.inputs, &out).ok());
      check_dispatch(job, o, out);
    }
  }
}

TEST_CASE("UE8M0 scales pack four blocks per int32, column-major") {
  Job job({2, 8, 1024, 5, 3}, 7);
  LowLatencyDispatchOptions o{true, false, true};
  std::vector<LowLatencyReceived> out;
  REQUIRE(low_latency_dispatch_reference(job.shape, o, job.inputs, &out).ok());
  CHECK(out[0].scales.empty());
  CHECK(out[0].ue8m0_scales.size() == static_cast<size_t>(4) * 2 * 10);
  check_dispatch(job, o, out);
}

TEST_CASE("experts nobody chose receive nothing") {
  Job job({2, 8, 128, 6, 2}, 11, /*idle=*/2);
  std::vector<LowLatencyReceived> out;
  REQUIRE(low_latency_dispatch_reference(job.shape, {}, job.inputs, &out).ok());
  // Experts 6 and 7 are rank 1's local experts 2 and 3.
  CHECK(out[1].recv_count[2] == 0);
  CHECK(out[1].recv_count[3] == 0);
}

TEST_CASE("combine sums each expert's row for the token, weighted, in k order") {
  Job job({4, 16, 256, 8, 5}, 5);
  std::vector<LowLatencyReceived> out;
  LowLatencyDispatchOptions bf16{false, false, false};
  REQUIRE(low_latency_dispatch_reference(job.shape, bf16, job.inputs, &out).ok());
  const LowLatencyShape& s = job.shape;
  // Expert e's output for a token is x + e (in bf16), so a row taken from the
  // wrong expert or token changes the sum.
  std::vector<std::vector<uint16_t>> expert_out(s.num_ranks);
  std::vector<const uint16_t*> ptrs;
  for (int d = 0; d < s.num_ranks; ++d) {
    expert_out[d].resize(s.total_rows() * s.hidden);
    const auto* rows_in = reinterpret_cast<const uint16_t*>(out[d].recv_x.data());
    for (size_t i = 0; i < s.total_rows(); ++i) {
      const int e = d * s.local_experts() + static_cast<int>(i / s.rows_per_expert());
      for (int h = 0; h < s.hidden; ++h) {
        expert_out[d][i * s.hidden + h] = float_to_bf16(bf16_to_float(rows_in[i * s.hidden + h]) + e);
      }
    }
    ptrs.push_back(expert_out[d].data());
  }
  std::vector<std::vector<uint16_t>> combined;
  REQUIRE(low_latency_combine_reference(s, job.inputs, out, ptrs, &combined).ok());
  for (int r = 0; r < s.num_ranks; ++r) {
    for (int t = 0; t < job.inputs[r].num_tokens; ++t) {
      for (int h = 0; h < s.hidden; ++h) {
        float acc = 0.0f;
        for (int k = 0; k < s.num_topk; ++k) {
          const int64_t e = job.topk[r][static_cast<size_t>(t) * s.num_topk + k];
          if (e < 0) continue;
          const float y = bf16_to_float(float_to_bf16(bf16_to_float(job.x[r][static_cast<size_t>(t) * s.hidden + h]) + e));
          acc = std::fmaf(y, job.weights[r][static_cast<size_t>(t) * s.num_topk + k], acc);
        }
        REQUIRE(combined[r][static_cast<size_t>(t) * s.hidden + h] == float_to_bf16(acc));
      }
    }
  }
}

TEST_CASE("a token with no expert combines to zeros") {
  LowLatencyShape s{2, 4, 128, 2, 2};
  std::vector<uint16_t> x(2 * 128, float_to_bf16(1.0f));
  std::vector<int64_t> none = {-1, -1, -1, -1};
  std::vector<float> w = {1, 1, 1, 1};
  std::vector<LowLatencyRankInput> in = {{2, x.data(), none.data(), w.data()}, {0, nullptr, nullptr, nullptr}};
  std::vector<LowLatencyReceived> out;
  REQUIRE(low_latency_dispatch_reference(s, {}, in, &out).ok());
  std::vector<uint16_t> zeros(s.total_rows() * s.hidden, 0);
  std::vector<std::vector<uint16_t>> combined;
  REQUIRE(low_latency_combine_reference(s, in, out, {zeros.data(), zeros.data()}, &combined).ok());
  for (uint16_t v : combined[0]) REQUIRE(v == 0);
  CHECK(combined[1].empty());
}

TEST_CASE("bad arguments are refused with the value named") {
  LowLatencyShape s{2, 8, 256, 4, 2};
  std::vector<uint16_t> x(5 * 256);
  std::vector<int64_t> topk(5 * 2, 0);
  std::vector<LowLatencyRankInput> in = {{5, x.data(), topk.data(), nullptr}, {0, nullptr, nullptr, nullptr}};
  std::vector<LowLatencyReceived> out;
  auto message = [&](const LowLatencyShape& shape, LowLatencyDispatchOptions o) {
    Status st = low_latency_dispatch_reference(shape, o, in, &out);
    CHECK(st.code() == StatusCode::kInvalidArgument);
    return st.message();
  };
  CHECK(message(s, {}).find("5 tokens exceed num_max_dispatch_tokens_per_rank=4") != std::string::npos);

  in[0].num_tokens = 2;
  topk = {0, 8, 1, 2};  // expert 8 of 8
  CHECK(message(s, {}).find("topk_idx[0][1]=8") != std::string::npos);
  topk = {3, 3, 1, 2};
  CHECK(message(s, {}).find("names expert 3 twice") != std::string::npos);
  topk = {0, -2, 1, 2};
  CHECK(message(s, {}).find("topk_idx[0][1]=-2") != std::string::npos);
  topk = {0, 1, 1, 2};
  CHECK(message({2, 7, 256, 4, 2}, {}).find("num_experts=7") != std::string::npos);
  CHECK(message({2, 8, 640, 4, 2}, {true, false, true}).find("multiple of 512") != std::string::npos);
  CHECK(message({2, 8, 200, 4, 2}, {}).find("hidden=200") != std::string::npos);
  CHECK(message({3, 9, 256, 4, 2}, {}).find("2 ranks' inputs for num_ranks=3") != std::string::npos);
}

TEST_CASE("combine refuses a handle that does not hold the token's row") {
  Job job({2, 4, 128, 4, 2}, 3, 0);
  std::vector<LowLatencyReceived> out;
  REQUIRE(low_latency_dispatch_reference(job.shape, {false, false, false}, job.inputs, &out).ok());
  // Another routing for the same tokens: the handle no longer matches.
  Job other = job;
  bool changed = false;
  for (auto& r : other.topk) {
    for (auto& e : r) {
      if (e >= 0 && !changed) {
        e = -1;
        changed = true;
      }
    }
  }
  REQUIRE(changed);
  other.refresh_views();
  // Combine the original routing with the handle of the changed one.
  std::vector<LowLatencyReceived> other_out;
  REQUIRE(low_latency_dispatch_reference(other.shape, {false, false, false}, other.inputs, &other_out).ok());
  std::vector<uint16_t> zeros(job.shape.total_rows() * job.shape.hidden, 0);
  std::vector<std::vector<uint16_t>> combined;
  Status st = low_latency_combine_reference(job.shape, job.inputs, other_out, {zeros.data(), zeros.data()}, &combined);
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK(st.message().find("has no row of rank") != std::string::npos);
}

}  // namespace epx::kernels
