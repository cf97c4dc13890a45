#include "kernels/normal_reference.h"

#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "kernels/fp8_reference.h"
#include "kernels/normal_inputs.h"

namespace epx::kernels {
namespace {

NormalShape shape(int ranks, int experts, int hidden, int topk, int max_tokens) {
  NormalShape s;
  s.num_ranks = ranks;
  s.num_experts = experts;
  s.hidden = hidden;
  s.num_topk = topk;
  s.max_tokens_per_rank = max_tokens;
  return s;
}

TEST_CASE("layout of a hand-made router output") {
  // 4 ranks of 2 experts, 2 ranks per node; top-3.
  const NormalShape s = shape(4, 8, 128, 3, 8);
  const std::vector<int64_t> topk = {0, 1, 6,     // ranks 0 and 3; experts 0, 1, 6
                                     -1, -1, -1,  // nowhere
                                     5, 4, -1,    // rank 2 (two experts, one rank)
                                     7, 2, 3};    // ranks 3, 1
  NormalDispatchLayout l;
  REQUIRE(normal_layout_reference(s, 2, 4, topk.data(), &l).ok());
  CHECK(l.tokens_per_rank == std::vector<int32_t>{1, 1, 1, 2});
  CHECK(l.tokens_per_node == std::vector<int32_t>{2, 3});
  CHECK(l.tokens_per_expert == std::vector<int32_t>{1, 1, 1, 1, 1, 1, 1, 1});
  CHECK(l.is_token_in_rank == std::vector<uint8_t>{1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1});
}

TEST_CASE("layout refuses an expert id beyond num_experts, naming the entry") {
  const NormalShape s = shape(2, 4, 128, 2, 4);
  const std::vector<int64_t> topk = {0, 4};
  NormalDispatchLayout l;
  const Status st = normal_layout_reference(s, 2, 1, topk.data(), &l);
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK(st.message().find("topk_idx[0][1]=4") != std::string::npos);
}

TEST_CASE("dispatch: rows by source then token, ids remapped, weights zeroed elsewhere, counts aligned") {
  const NormalShape s = shape(2, 4, 128, 2, 4);
  NormalJobInputs job = NormalJobInputs::random(s, NormalPayload{}, 7, {3, 2});
  // Rank 0: t0 -> experts 0, 3 (both ranks); t1 -> 2 (rank 1); t2 -> none.
  // Rank 1: t0 -> 1 (rank 0); t1 -> 3, 2 (rank 1, two experts).
  job.topk = {{0, 3, 2, -1, -1, -1}, {1, -1, 3, 2}};
  job.refresh_views();
  std::vector<NormalReceived> out;
  REQUIRE(normal_dispatch_reference(s, job.payload, 4, job.inputs, &out).ok());
  CHECK(out[0].rank_prefix_matrix == std::vector<int32_t>{1, 2, 2, 3});
  CHECK(out[0].num_recv_tokens == 2);
  CHECK(out[0].recv_src_idx == std::vector<int32_t>{0, 0});
  CHECK(out[0].recv_topk_idx == std::vector<int64_t>{0, -1, 1, -1});
  CHECK(out[0].expert_counts == std::vector<int32_t>{4, 4});  // 1 and 1, aligned to 4
  CHECK(out[1].num_recv_tokens == 3);
  CHECK(out[1].recv_src_idx == std::vector<int32_t>{0, 1, 1});
  CHECK(out[1].recv_topk_idx == std::vector<int64_t>{-1, 1, 0, -1, 1, 0});
  CHECK(out[1].recv_topk_weights[0] == 0.0f);
  CHECK(out[1].recv_topk_weights[1] == job.weights[0][1]);
  CHECK(out[1].expert_counts == std::vector<int32_t>{4, 4});  // 2 and 2
  // Row 2 of rank 1 is token 1 of rank 1, byte for byte.
  CHECK(std::memcmp(out[1].recv_x.data() + 2 * 256, job.x[1].data() + 256, 256) == 0);
}

TEST_CASE("dispatch copies FP8 payloads and scales byte for byte") {
  const NormalShape s = shape(4, 16, 256, 4, 32);
  NormalPayload p;
  p.fp8 = true;
  p.num_scales = 2;
  const NormalJobInputs job = NormalJobInputs::random(s, p, 11, {32, 0, 17, 5});
  std::vector<NormalReceived> out;
  REQUIRE(normal_dispatch_reference(s, p, 1, job.inputs, &out).ok());
  int total = 0;
  for (int r = 0; r < 4; ++r) {
    const NormalReceived& o = out[r];
    total += o.num_recv_tokens;
    REQUIRE(o.recv_x.size() == static_cast<size_t>(o.num_recv_tokens) * 256);
    REQUIRE(o.recv_scales.size() == static_cast<size_t>(o.num_recv_tokens) * 2);
    int src = 0;
    for (int i = 0; i < o.num_recv_tokens; ++i) {
      while (o.rank_prefix_matrix[src * 4 + r] <= i) ++src;
      const int t = o.recv_src_idx[i];
      CHECK(std::memcmp(o.recv_x.data() + i * 256, job.x[src].data() + t * 256, 256) == 0);
      CHECK(o.recv_scales[i * 2 + 1] == job.scales[src][t * 2 + 1]);
    }
  }
  NormalDispatchLayout l;
  int want = 0;
  for (int r = 0; r < 4; ++r) {
    REQUIRE(normal_layout_reference(s, 4, job.inputs[r].num_tokens, job.topk[r].data(), &l).ok());
    for (int32_t c : l.tokens_per_rank) want += c;
  }
  CHECK(total == want);
}

TEST_CASE("adversarial routings: all tokens to rank 0, none to the last rank") {
  const NormalShape s = shape(4, 8, 128, 2, 16);
  std::vector<NormalReceived> out;
  const NormalJobInputs all = NormalJobInputs::random(s, NormalPayload{}, 3, {16}, NormalRouting::kAllToRank0);
  REQUIRE(normal_dispatch_reference(s, NormalPayload{}, 1, all.inputs, &out).ok());
  CHECK(out[1].num_recv_tokens == 0);
  CHECK(out[2].num_recv_tokens == 0);
  CHECK(out[3].num_recv_tokens == 0);
  CHECK(out[0].num_recv_tokens > 40);  // every token with any expert (about 1 in 25 has none)
  const NormalJobInputs none = NormalJobInputs::random(s, NormalPayload{}, 3, {16}, NormalRouting::kNoneToLast);
  REQUIRE(normal_dispatch_reference(s, NormalPayload{}, 1, none.inputs, &out).ok());
  CHECK(out[3].num_recv_tokens == 0);
  CHECK(out[0].num_recv_tokens > 0);
}

TEST_CASE("combine returns every rank's rows summed, with the weights put back together") {
  const NormalShape s = shape(4, 16, 256, 4, 24);
  const NormalJobInputs job = NormalJobInputs::random(s, NormalPayload{}, 5, {24, 3, 0, 24});
  std::vector<NormalReceived> got;
  REQUIRE(normal_dispatch_reference(s, job.payload, 1, job.inputs, &got).ok());
  // Experts that return their input unchanged: each token comes back times
  // the number of ranks that held it.
  std::vector<NormalCombineInput> in(4);
  std::vector<std::vector<uint16_t>> bias(4);
  for (int r = 0; r < 4; ++r) {
    in[r].x = reinterpret_cast<const uint16_t*>(got[r].recv_x.data());
    in[r].topk_weights = got[r].recv_topk_weights.data();
  }
  std::vector<NormalCombined> out;
  REQUIRE(normal_combine_reference(s, job.inputs, got, in, &out).ok());
  for (int r = 0; r < 4; ++r) {
    NormalDispatchLayout l;
    REQUIRE(normal_layout_reference(s, 4, job.inputs[r].num_tokens, job.topk[r].data(), &l).ok());
    const uint16_t* x = reinterpret_cast<const uint16_t*>(job.x[r].data());
    for (int t = 0; t < job.inputs[r].num_tokens; ++t) {
      int holders = 0;
      for (int d = 0; d < 4; ++d) holders += l.is_token_in_rank[t * 4 + d];
      for (int h = 0; h < 256; h += 37) {
        const float want = holders * bf16_to_float(x[t * 256 + h]);
        CHECK(bf16_to_float(out[r].x[t * 256 + h]) == doctest::Approx(want).epsilon(0.01));
      }
      for (int k = 0; k < 4; ++k) {
        const bool sent = job.topk[r][t * 4 + k] >= 0;
        CHECK(out[r].topk_weights[t * 4 + k] == (sent ? job.weights[r][t * 4 + k] : 0.0f));
      }
    }
  }
  // A bias adds to the sum.
  for (int r = 0; r < 4; ++r) {
    bias[r].assign(static_cast<size_t>(job.inputs[r].num_tokens) * 256, float_to_bf16(1.0f));
    in[r].bias0 = bias[r].data();
  }
  std::vector<NormalCombined> biased;
  REQUIRE(normal_combine_reference(s, job.inputs, got, in, &biased).ok());
  CHECK(bf16_to_float(biased[0].x[0]) == doctest::Approx(bf16_to_float(out[0].x[0]) + 1.0f).epsilon(0.01));
}

}  // namespace
}  // namespace epx::kernels

namespace epx::kernels {
namespace {

// Four ranks, hidden 128, top-3; rank 0's one token goes to ranks 0, 2 and
// 3 (one expert each), dispatched by the reference into *got. Ranks 2 and 3
// form the second node when ranks_per_node is 2.
NormalJobInputs one_token_across_nodes(const NormalShape& s, std::vector<NormalReceived>* got) {
  NormalJobInputs job = NormalJobInputs::random(s, NormalPayload{}, 1, {1, 0, 0, 0});
  job.topk[0] = {0, 2, 3};
  job.refresh_views();
  REQUIRE(normal_dispatch_reference(s, job.payload, 1, job.inputs, got).ok());
  return job;
}

TEST_CASE("combine across nodes: another node's rows come back as one bf16 partial") {
  const NormalShape s = shape(4, 4, 128, 3, 2);
  std::vector<NormalReceived> got;
  const NormalJobInputs job = one_token_across_nodes(s, &got);
  REQUIRE(got[0].num_recv_tokens == 1);
  REQUIRE(got[2].num_recv_tokens == 1);
  REQUIRE(got[3].num_recv_tokens == 1);
  const uint16_t small = float_to_bf16(1.0f / 256), one = float_to_bf16(1.0f);
  std::vector<std::vector<uint16_t>> y = {std::vector<uint16_t>(128, small), {}, std::vector<uint16_t>(128, one),
                                          std::vector<uint16_t>(128, small)};
  std::vector<NormalCombineInput> in(4);
  for (int r = 0; r < 4; ++r) in[r].x = y[r].data();
  std::vector<NormalCombined> one_node, two_nodes;
  REQUIRE(normal_combine_reference(s, job.inputs, got, in, &one_node).ok());
  REQUIRE(normal_combine_reference(s, job.inputs, got, in, &two_nodes, 2).ok());
  // One node: 1/256 + 1 + 1/256 = 1 + 2^-7, exact in bf16.
  CHECK(bf16_to_float(one_node[0].x[5]) == 1.0f + 1.0f / 128);
  // Two nodes: the other node's 1 + 2^-8 rounds to 1 (a tie, to even);
  // then 1/256 + 1 rounds to 1 again.
  CHECK(bf16_to_float(two_nodes[0].x[5]) == 1.0f);
  CHECK(normal_combine_reference(s, job.inputs, got, in, &two_nodes, 3).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("combine across nodes: another node's weights are summed there, then added") {
  const NormalShape s = shape(4, 4, 128, 3, 2);
  std::vector<NormalReceived> got;
  const NormalJobInputs job = one_token_across_nodes(s, &got);
  const float tiny = 1.0f / (1 << 24);  // half an ulp of 1.0f
  std::vector<std::vector<float>> w = {{1.0f, 0, 0}, {}, {tiny, 0, 0}, {tiny, 0, 0}};
  std::vector<uint16_t> y(128, 0);
  std::vector<NormalCombineInput> in(4);
  for (int r = 0; r < 4; ++r) {
    in[r].x = y.data();
    in[r].topk_weights = w[r].data();
  }
  std::vector<NormalCombined> one_node, two_nodes;
  REQUIRE(normal_combine_reference(s, job.inputs, got, in, &one_node).ok());
  REQUIRE(normal_combine_reference(s, job.inputs, got, in, &two_nodes, 2).ok());
  // One node: (1 + 2^-24) + 2^-24, each a tie that rounds back to 1.
  CHECK(one_node[0].topk_weights[0] == 1.0f);
  // Two nodes: the other node's 2^-24 + 2^-24 = 2^-23 first, then 1 + 2^-23.
  CHECK(two_nodes[0].topk_weights[0] == 1.0f + 2 * tiny);
}

}  // namespace
}  // namespace epx::kernels

namespace epx::kernels {
namespace {

TEST_CASE("rdma layout across nodes: regions apart, each holds its worst case") {
  NormalShape s = shape(16, 256, 7168, 8, 4096);
  s.ranks_per_node = 8;
  REQUIRE(s.nodes() == 2);
  NormalRdmaLayout r;
  REQUIRE(normal_rdma_layout(s, &r).ok());
  NormalPayload bf16, fp8;
  fp8.fp8 = true;
  fp8.num_scales = s.hidden / 128;
  const size_t T = static_cast<size_t>(s.max_tokens_per_rank);
  // Every token to every node, with either payload, fits one region.
  CHECK(r.message_region >= kMessageHeader + T * normal_message_bytes(s, bf16));
  CHECK(r.message_region >= kMessageHeader + T * normal_message_bytes(s, fp8));
  CHECK(r.partial_region >= kPartialHeader + T * normal_partial_bytes(s.hidden, s.num_topk));
  // Message T - 1's row ends inside its region, with either payload; metas
  // come before every row.
  for (const NormalPayload& p : {bf16, fp8}) {
    CHECK(normal_row_offset(s, p, s.max_tokens_per_rank - 1) + normal_message_row(s, p) <= r.message_region);
    CHECK(normal_row_offset(s, p, 0) == normal_meta_offset(s, s.max_tokens_per_rank));
    CHECK(normal_row_offset(s, p, 1) % 16 == 0);
  }
  CHECK(normal_partial_offset(s, s.max_tokens_per_rank - 1) + normal_partial_bytes(s.hidden, s.num_topk) <=
        r.partial_region);
  // The meta holds top-k ids, weights, the source index and the tag; the
  // partial row holds the bf16 row, the weights and the tag.
  CHECK(normal_message_meta(s.num_topk) >= 12 * 8 + 8);
  CHECK(normal_partial_bytes(s.hidden, s.num_topk) >= 2 * 7168 + 4 * 8 + 4);
  // [2 parities][N nodes] regions of each kind, one after the other, 16-byte aligned.
  const size_t regions = 2 * static_cast<size_t>(s.nodes());
  CHECK(r.dispatch_recv == r.dispatch_send + regions * r.message_region);
  CHECK(r.combine_send == r.dispatch_recv + regions * r.message_region);
  CHECK(r.combine_recv == r.combine_send + regions * r.partial_region);
  CHECK(r.rdma_bytes == r.combine_recv + regions * r.partial_region);
  CHECK(r.message_region % 16 == 0);
  CHECK(r.partial_region % 16 == 0);
  CHECK(normal_region(r.dispatch_send, r.message_region, 2, 1, 1) + r.message_region == r.dispatch_recv);
  CHECK(normal_region(r.combine_recv, r.partial_region, 2, 3, 0) ==
        normal_region(r.combine_recv, r.partial_region, 2, 1, 0));  // parity is the call's low bit
  // Per parity and node: the metas, 16 row chunks, 16 partial chunks.
  CHECK(r.signal_count == 2 * 2 * (1 + 2 * kNormalChunks));
}

TEST_CASE("chunks: every message in exactly one chunk, each signal word used once") {
  for (int T : {1, 7, 16, 17, 128, 4096, 4097}) {
    const int M = normal_chunk_tokens(T);
    CHECK(M * kNormalChunks >= T);
    for (int count : {0, 1, T / 2, T}) {
      int total = 0;
      for (int c = 0; c < kNormalChunks; ++c) {
        const int n = normal_chunk_count(T, count, c);
        CHECK(n >= 0);
        CHECK(n <= M);
        if (n > 0) CHECK(c * M + n <= count);  // chunk c holds [c * M, c * M + n)
        total += n;
      }
      CHECK(total == count);
    }
  }
  // Signal words: all distinct and below signal_count, for both parities.
  for (int N : {2, 3, 4}) {
    std::vector<int> used(2 * normal_parity_signals(N), 0);
    for (uint64_t parity : {0, 1}) {
      for (int v = 0; v < N; ++v) {
        ++used.at(normal_meta_signal(N, v, parity));
        for (int c = 0; c < kNormalChunks; ++c) {
          ++used.at(normal_dispatch_chunk_signal(N, v, c, parity));
          ++used.at(normal_combine_chunk_signal(N, v, c, parity));
        }
      }
    }
    for (int u : used) CHECK(u == 1);
  }
  // A word counts one write per call of its parity.
  CHECK(normal_signal_target(1) == 1);
  CHECK(normal_signal_target(2) == 1);
  CHECK(normal_signal_target(3) == 2);
  CHECK(normal_signal_target(4) == 2);
}

TEST_CASE("ranks_per_node must divide the ranks; the nvl layout is per node") {
  NormalShape s = shape(12, 24, 1024, 2, 8);
  s.ranks_per_node = 5;
  NormalLayout l;
  CHECK(normal_layout(s, &l).code() == StatusCode::kInvalidArgument);
  s.ranks_per_node = 4;
  REQUIRE(normal_layout(s, &l).ok());
  // Notify slots: one per local rank, counts for N x P virtual sources and
  // per-expert counts for N sources.
  CHECK(l.notify_slot_bytes >= notify_expert_counts(3 * 4) + 4 * 3 * 2);
  CHECK(l.arrivals - l.notify >= 4 * l.notify_slot_bytes);
  NormalShape one = s;
  one.ranks_per_node = 0;
  NormalLayout lone;
  REQUIRE(normal_layout(one, &lone).ok());
  CHECK(one.nodes() == 1);
  CHECK(lone.recv_x - lone.arrivals >= 2 * 8 * 12);  // arrivals for every rank of the one node
}

}  // namespace
}  // namespace epx::kernels
