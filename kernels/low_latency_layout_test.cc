// low_latency_layout(): sizes add up, every offset a kernel stores at with
// 16-byte vectors is 16-byte aligned, and shapes that would overflow or
// exceed the kernels' limits are refused by name.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "kernels/low_latency_kernels.h"
#include "kernels/low_latency_memory.h"

namespace epx::kernels {
namespace {

bool aligned16(size_t v) { return v % 16 == 0; }

TEST_CASE("layout of DeepEP's benchmark shape") {
  const LowLatencyShape s = LowLatencyShape{2, 288, 7168, 128, 8};
  LowLatencyLayout l;
  REQUIRE(low_latency_layout(s, &l).ok());
  // Header: token, then 8 experts, 8 positions, 8 slots = 100 bytes -> 112.
  CHECK(l.message_bytes == 112 + 2 * 7168);
  // seq, tokens, pair base, 144 expert counts = 592 bytes (already 16-aligned).
  CHECK(l.dispatch_header_bytes == 592);
  CHECK(l.dispatch_region_bytes == 592 + 128 * l.message_bytes);
  CHECK(l.combine_row_bytes == 2 * 7168);
  CHECK(l.combine_header_bytes == 16);
  CHECK(l.combine_region_bytes == 16 + 128 * 8 * l.combine_row_bytes);
  CHECK(l.dispatch_recv == 0);
  CHECK(l.combine_recv == 2 * l.dispatch_region_bytes);
  CHECK(l.recv_bytes == l.combine_recv + 2 * 16 + 128 * 8 * l.combine_row_bytes);
  CHECK(l.dispatch_send == 0);
  CHECK(l.combine_send == 2 * l.dispatch_region_bytes);
  CHECK(l.send_bytes == l.combine_send + 2 * l.combine_region_bytes);
  CHECK(l.nvl_bytes == 2 * l.recv_bytes);
  CHECK(l.rdma_bytes == 2 * l.recv_bytes + 2 * l.send_bytes);
  CHECK(l.signal_count == 8);
  const ll::StateLayout st = ll::state_layout(2, 128, 8, s.total_rows());
  CHECK(l.state_bytes == st.total_bytes);
  // Both halves' row maps fit: 144 experts x 256 rows, two int32 arrays each.
  CHECK(l.state_bytes >= 2 * 2 * 4 * s.total_rows());
}

TEST_CASE("every offset is 16-byte aligned, and the regions do not overlap") {
  for (int ranks : {1, 2, 3, 16, 17}) {
    for (int topk : {1, 3, 4, 8, 9}) {
      for (int hidden : {128, 384, 2048, 7168}) {
        for (int tokens : {1, 7, 128}) {
          const int experts = ranks * (topk + 2) + (ranks == 3 ? 3 : 0);
          const LowLatencyShape s = LowLatencyShape{ranks, experts, hidden, tokens, topk};
          CAPTURE(ranks);
          CAPTURE(topk);
          CAPTURE(hidden);
          CAPTURE(tokens);
          LowLatencyLayout l;
          REQUIRE(low_latency_layout(s, &l).ok());
          for (size_t v : {l.message_bytes, l.dispatch_header_bytes, l.dispatch_region_bytes, l.combine_row_bytes,
                           l.combine_header_bytes, l.combine_region_bytes, l.dispatch_recv, l.combine_recv,
                           l.recv_bytes, l.dispatch_send, l.combine_send, l.send_bytes, l.nvl_bytes, l.rdma_bytes}) {
            CHECK(aligned16(v));
          }
          for (bool fp8 : {false, true}) {
            for (bool ue8m0 : {false, true}) {
              const size_t stride = ll::message_stride(topk, hidden, fp8, ue8m0);
              CHECK(aligned16(stride));
              CHECK(stride <= l.message_bytes);
              CHECK(aligned16(ll::message_header_bytes(topk)));
            }
          }
          // The header holds three int32 per top-k entry plus the token.
          CHECK(ll::message_header_bytes(topk) >= 4 * (1 + 3 * static_cast<size_t>(topk)));
          CHECK(ll::message_slot(topk, topk - 1) + 4 <= ll::message_header_bytes(topk));
          CHECK(l.dispatch_header_bytes >= 16 + 4 * static_cast<size_t>(s.local_experts()));
          // recv part: dispatch regions, then combine headers and rows.
          CHECK(l.combine_recv >= l.dispatch_recv + static_cast<size_t>(ranks) * l.dispatch_region_bytes);
          CHECK(l.recv_bytes >= l.combine_recv + static_cast<size_t>(ranks) * l.combine_header_bytes +
                                    static_cast<size_t>(tokens) * topk * l.combine_row_bytes);
          CHECK(l.send_bytes >= l.combine_send + static_cast<size_t>(ranks) * l.combine_region_bytes);
          const ll::StateLayout st = ll::state_layout(ranks, tokens, topk, s.total_rows());
          CHECK(st.half_base % 16 == 0);
          CHECK(st.half_bytes % 16 == 0);
          CHECK(st.row_source + 4 * s.total_rows() <= st.half_bytes);
          CHECK(st.pair_slot + 4 * static_cast<size_t>(tokens) * topk <= st.row_slot);
          CHECK(l.state_bytes == st.half_base + 2 * st.half_bytes);
        }
      }
    }
  }
}

TEST_CASE("bad shapes are refused with the field named") {
  LowLatencyLayout l;
  const Status hidden = low_latency_layout(LowLatencyShape{2, 16, 100, 8, 2}, &l);
  CHECK(hidden.code() == StatusCode::kInvalidArgument);
  CHECK(hidden.message().find("hidden=100") != std::string::npos);
  CHECK(low_latency_layout(LowLatencyShape{0, 16, 128, 8, 2}, &l).code() == StatusCode::kInvalidArgument);
  CHECK(low_latency_layout(LowLatencyShape{3, 16, 128, 8, 2}, &l).code() == StatusCode::kInvalidArgument);  // 16 % 3
  CHECK(low_latency_layout(LowLatencyShape{2, 16, 128, 0, 2}, &l).code() == StatusCode::kInvalidArgument);
  CHECK(low_latency_layout(LowLatencyShape{2, 16, 128, 8, 0}, &l).code() == StatusCode::kInvalidArgument);
  CHECK(low_latency_layout(LowLatencyShape{2, 16, 128, 8, 2}, nullptr).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("the kernels' limits are refused by name") {
  LowLatencyLayout l;
  const Status ranks = low_latency_layout(LowLatencyShape{2048, 2048, 128, 8, 2}, &l);
  CHECK(ranks.code() == StatusCode::kInvalidArgument);
  CHECK(ranks.message().find("num_ranks=2048") != std::string::npos);
  const Status experts = low_latency_layout(LowLatencyShape{2, 16384, 128, 8, 2}, &l);
  CHECK(experts.message().find("num_experts=16384") != std::string::npos);
  const Status topk = low_latency_layout(LowLatencyShape{2, 64, 128, 8, 33}, &l);
  CHECK(topk.message().find("num_topk=33") != std::string::npos);
  const Status hidden = low_latency_layout(LowLatencyShape{2, 64, 65536, 8, 2}, &l);
  CHECK(hidden.message().find("hidden=65536") != std::string::npos);
  CHECK(low_latency_layout(LowLatencyShape{1024, 8192, 32768, 1, 32}, &l).ok());  // every limit at once still fits
}

TEST_CASE("a region larger than one ring write is refused, not wrapped") {
  LowLatencyLayout l;
  // 2^20 tokens x (header + 2 * 32768) bytes > 4 GiB for one dispatch region.
  const Status big = low_latency_layout(LowLatencyShape{2, 16, 32768, 1 << 20, 1}, &l);
  CHECK(big.code() == StatusCode::kInvalidArgument);
  CHECK(big.message().find("ring write") != std::string::npos);
  // The largest row count the format allows still computes without overflow
  // (or is refused), never a small wrapped size.
  const Status huge = low_latency_layout(LowLatencyShape{1, 8, 128, 1 << 30, 32}, &l);
  CHECK(huge.code() == StatusCode::kInvalidArgument);
  CHECK(huge.message().find("num_max_dispatch_tokens_per_rank=1073741824") != std::string::npos);
}

}  // namespace
}  // namespace epx::kernels
