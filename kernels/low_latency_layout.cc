// low_latency_layout(): the byte layout of one rank's LL memory, computed the
// same way on every rank from the shape alone.
#include <cstdint>
#include <limits>
#include <string>

#include "kernels/low_latency_kernels.h"
#include "kernels/low_latency_memory.h"

namespace epx::kernels {
namespace {

// a * b + c into *out, false on size_t overflow (huge shapes must be refused,
// never wrap into a small buffer).
bool mul_add(size_t a, size_t b, size_t c, size_t* out) {
  size_t product;
  if (__builtin_mul_overflow(a, b, &product)) return false;
  return !__builtin_add_overflow(product, c, out);
}

}  // namespace

Status low_latency_layout(const LowLatencyShape& shape, LowLatencyLayout* layout) {
  const char* who = "low_latency_layout";
  // The layout holds every call's options: BF16 messages are the largest, and
  // the FP8-only checks (UE8M0 needs hidden % 512) belong to each call.
  LowLatencyDispatchOptions bf16;
  bf16.use_fp8 = false;
  EPX_RETURN_IF_ERROR(check_low_latency_shape(who, shape, bf16));
  if (layout == nullptr) return invalid_argument(std::string(who) + ": null layout");
  const std::string prefix = std::string(who) + ": ";
  auto n = [](long long v) { return std::to_string(v); };
  if (shape.num_ranks > ll::kMaxRanks) {
    return invalid_argument(prefix + "num_ranks=" + n(shape.num_ranks) + " exceeds the kernels' limit of " +
                            n(ll::kMaxRanks));
  }
  if (shape.num_experts > ll::kMaxExperts) {
    return invalid_argument(prefix + "num_experts=" + n(shape.num_experts) + " exceeds the kernels' limit of " +
                            n(ll::kMaxExperts));
  }
  if (shape.num_topk > ll::kMaxTopk) {
    return invalid_argument(prefix + "num_topk=" + n(shape.num_topk) + " exceeds the kernels' limit of " +
                            n(ll::kMaxTopk));
  }
  if (shape.hidden > ll::kMaxHidden) {
    return invalid_argument(prefix + "hidden=" + n(shape.hidden) + " exceeds the kernels' limit of " +
                            n(ll::kMaxHidden));
  }

  const size_t ranks = static_cast<size_t>(shape.num_ranks);
  const size_t max_tokens = static_cast<size_t>(shape.max_tokens_per_rank);
  const size_t pairs = max_tokens * static_cast<size_t>(shape.num_topk);  // < 2^31 * 32: no overflow
  const std::string too_large = prefix + "num_max_dispatch_tokens_per_rank=" + n(shape.max_tokens_per_rank) +
                                " with num_ranks=" + n(shape.num_ranks) + ", hidden=" + n(shape.hidden) +
                                ", num_topk=" + n(shape.num_topk) + " needs more memory than ";

  LowLatencyLayout l;
  l.message_bytes = ll::message_stride(shape.num_topk, shape.hidden, /*use_fp8=*/false, /*ue8m0=*/false);
  l.dispatch_header_bytes = ll::dispatch_header_bytes(shape.local_experts());
  l.combine_row_bytes = 2 * static_cast<size_t>(shape.hidden);
  l.combine_header_bytes = ll::kCombineHeaderBytes;
  bool ok = mul_add(max_tokens, l.message_bytes, l.dispatch_header_bytes, &l.dispatch_region_bytes);
  size_t combine_rows_bytes = 0;
  ok = ok && mul_add(pairs, l.combine_row_bytes, 0, &combine_rows_bytes);
  ok = ok && mul_add(1, combine_rows_bytes, l.combine_header_bytes, &l.combine_region_bytes);
  if (!ok) return invalid_argument(too_large + "size_t holds");
  // One ring write moves a whole region (its length is 32 bits).
  constexpr size_t kMaxPost = std::numeric_limits<uint32_t>::max();
  if (l.dispatch_region_bytes > kMaxPost || combine_rows_bytes > kMaxPost) {
    return invalid_argument(too_large + "one ring write carries (4 GiB - 1 per region)");
  }

  l.dispatch_recv = 0;
  ok = mul_add(ranks, l.dispatch_region_bytes, 0, &l.combine_recv);
  size_t combine_headers = ranks * l.combine_header_bytes;
  ok = ok && mul_add(1, l.combine_recv, combine_headers, &l.recv_bytes);
  ok = ok && mul_add(1, l.recv_bytes, combine_rows_bytes, &l.recv_bytes);
  l.dispatch_send = 0;
  ok = ok && mul_add(ranks, l.dispatch_region_bytes, 0, &l.combine_send);
  ok = ok && mul_add(ranks, l.combine_region_bytes, l.combine_send, &l.send_bytes);
  ok = ok && mul_add(2, l.recv_bytes, 0, &l.nvl_bytes);
  ok = ok && mul_add(2, l.send_bytes, l.nvl_bytes, &l.rdma_bytes);
  if (!ok) return invalid_argument(too_large + "size_t holds");
  // Ring descriptors address 48-bit offsets inside a window.
  if (l.rdma_bytes > (uint64_t{1} << 48)) return invalid_argument(too_large + "a window can address (2^48 bytes)");

  l.signal_count = 4 * static_cast<uint32_t>(shape.num_ranks);
  l.state_bytes =
      ll::state_layout(shape.num_ranks, shape.max_tokens_per_rank, shape.num_topk, shape.total_rows()).total_bytes;
  *layout = l;
  return Status();
}

}  // namespace epx::kernels
