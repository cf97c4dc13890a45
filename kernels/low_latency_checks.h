// Host-side argument checks of the four LL launchers (low_latency_kernels.h):
// everything a launch can verify without touching device memory, with the
// launcher and the bad field named.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/low_latency_kernels.h"
#include "proto/ring/ring.h"

namespace epx::kernels::ll {

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The layout must be the one low_latency_layout() gives for this shape (a
// stale layout would address another rank's memory wrongly).
inline Status check_layout_and_transport(const char* who, const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                         const LowLatencyTransport& t) {
  const std::string prefix = std::string(who) + ": ";
  LowLatencyLayout want;
  EPX_RETURN_IF_ERROR(low_latency_layout(shape, &want).with_context(who));
  if (layout.message_bytes != want.message_bytes || layout.recv_bytes != want.recv_bytes ||
      layout.send_bytes != want.send_bytes || layout.combine_recv != want.combine_recv ||
      layout.combine_send != want.combine_send || layout.state_bytes != want.state_bytes ||
      layout.dispatch_region_bytes != want.dispatch_region_bytes ||
      layout.combine_region_bytes != want.combine_region_bytes ||
      layout.dispatch_header_bytes != want.dispatch_header_bytes) {
    return invalid_argument(prefix + "the layout is not low_latency_layout() of this shape");
  }
  if (t.rank < 0 || t.rank >= shape.num_ranks) {
    return invalid_argument(prefix + "rank " + std::to_string(t.rank) + " is not in [0, " +
                            std::to_string(shape.num_ranks) + ")");
  }
  if (t.peers.ptrs == nullptr || t.peers.world != static_cast<uint32_t>(shape.num_ranks)) {
    return invalid_argument(prefix + "peers must list all " + std::to_string(shape.num_ranks) + " ranks");
  }
  if (t.state == nullptr || t.error == nullptr) return invalid_argument(prefix + "null state or error pointer");
  if (static_cast<uint64_t>(t.signal_base) + layout.signal_count > uint64_t{ring::kMaxSignalIndex} + 1) {
    return invalid_argument(prefix + "signal_base=" + std::to_string(t.signal_base) + " + " +
                            std::to_string(layout.signal_count) + " signals exceed the ring's signal indices");
  }
  if (t.timeout_ns == 0) return invalid_argument(prefix + "timeout_ns is 0 (every wait needs a limit)");
  return Status();
}

inline Status check_half_and_tokens(const char* who, const LowLatencyShape& shape, int half, int num_tokens,
                                    const int64_t* topk_idx) {
  const std::string prefix = std::string(who) + ": ";
  if (half != 0 && half != 1) return invalid_argument(prefix + "half=" + std::to_string(half) + " is neither 0 nor 1");
  if (num_tokens < 0 || num_tokens > shape.max_tokens_per_rank) {
    return invalid_argument(prefix + "num_tokens=" + std::to_string(num_tokens) + " is not in [0, " +
                            std::to_string(shape.max_tokens_per_rank) + "]");
  }
  if (num_tokens > 0 && topk_idx == nullptr) return invalid_argument(prefix + "null topk_idx");
  return Status();
}

}  // namespace epx::kernels::ll
