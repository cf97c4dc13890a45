// Byte formats inside the low-latency spaces (low_latency_kernels.h's
// LowLatencyLayout) and inside a rank's private `state`: what a dispatched
// message, an arrival header and the state arrays look like. Shared by
// low_latency_layout() (sizes) and the kernels (offsets), so both agree.
//
// Plain C++17, no CUDA types; every function is usable on host and device.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define EPX_LL_HOST_DEVICE __host__ __device__
#else
#define EPX_LL_HOST_DEVICE
#endif

namespace epx::kernels::ll {

// Limits of the kernels (checked by low_latency_layout and the launchers):
// the send kernel keeps per-rank and per-expert counters in shared memory,
// and a message header holds num_topk expert ids and row positions.
inline constexpr int kMaxRanks = 1024;
inline constexpr int kMaxExperts = 8192;
inline constexpr int kMaxTopk = 32;
inline constexpr int kMaxHidden = 32768;

EPX_LL_HOST_DEVICE inline constexpr size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// One dispatched token (a message), at slot j of a (source, destination)
// region. The same bytes go to every destination of the token:
//   int32 token          the token's index on the source rank
//   int32 expert[K]      the token's global expert ids (-1: none, out of
//                        range, or an id repeated at a lower k)
//   int32 position[K]    the row of this token inside the (expert, source)
//                        range of the expert's block (token order)
//   int32 slot[K]        the source's combine_recv row reserved for this
//                        (token, k) pair's expert output (-1: none)
//   padding to 16, then the payload:
//     FP8:  hidden e4m3 bytes, then hidden/128 scales (float, or UE8M0
//           bytes), padded to 16
//     BF16: 2 * hidden bytes
EPX_LL_HOST_DEVICE inline constexpr size_t message_header_bytes(int num_topk) {
  return align16(sizeof(int32_t) * (1 + 3 * static_cast<size_t>(num_topk)));
}
inline constexpr size_t kMessageToken = 0;
EPX_LL_HOST_DEVICE inline constexpr size_t message_expert(int k) { return 4 + 4 * static_cast<size_t>(k); }
EPX_LL_HOST_DEVICE inline constexpr size_t message_position(int num_topk, int k) {
  return 4 + 4 * static_cast<size_t>(num_topk) + 4 * static_cast<size_t>(k);
}
EPX_LL_HOST_DEVICE inline constexpr size_t message_slot(int num_topk, int k) {
  return 4 + 8 * static_cast<size_t>(num_topk) + 4 * static_cast<size_t>(k);
}
EPX_LL_HOST_DEVICE inline constexpr size_t fp8_scale_bytes(int hidden, bool ue8m0) {
  return align16(static_cast<size_t>(hidden / 128) * (ue8m0 ? 1 : sizeof(float)));
}
EPX_LL_HOST_DEVICE inline constexpr size_t message_payload_bytes(int hidden, bool use_fp8, bool ue8m0) {
  return use_fp8 ? static_cast<size_t>(hidden) + fp8_scale_bytes(hidden, ue8m0) : 2 * static_cast<size_t>(hidden);
}
// Distance between messages of one call: only as large as that call's
// payload needs, so a remote post of FP8 messages moves half the bytes of
// BF16 ones. The layout reserves the largest (BF16).
EPX_LL_HOST_DEVICE inline constexpr size_t message_stride(int num_topk, int hidden, bool use_fp8, bool ue8m0) {
  return message_header_bytes(num_topk) + message_payload_bytes(hidden, use_fp8, ue8m0);
}

// Arrival header of a dispatch region (one per source rank):
//   uint64 seq            the source's call number of this half; NVLink:
//                         stored last, with release (remote: ignored, the
//                         signal says the region arrived)
//   int32  num_tokens     messages in the region
//   int32  pair_base      P: the first of the combine_recv rows the source
//                         reserved for this destination's expert outputs
//   int32  expert_count[local_experts]  tokens for each local expert of the
//                         destination
EPX_LL_HOST_DEVICE inline constexpr size_t dispatch_header_bytes(int local_experts) {
  return align16(sizeof(uint64_t) + 2 * sizeof(int32_t) + sizeof(int32_t) * static_cast<size_t>(local_experts));
}
inline constexpr size_t kDispatchHeaderSeq = 0;
inline constexpr size_t kDispatchHeaderTokens = 8;
inline constexpr size_t kDispatchHeaderPairBase = 12;
inline constexpr size_t kDispatchHeaderCounts = 16;

// Arrival header of a combine sender: uint64 seq (NVLink only), padding.
inline constexpr size_t kCombineHeaderBytes = 16;

// A rank's private state, zeroed once before the first launch. Counters
// first, then one block of arrays per half.
//   uint64 dispatch_calls[2]   dispatch sends of each half (the seq a sender stamps)
//   uint64 combine_calls[2]    combine sends of each half
//   uint32 dispatch_done[2]    blocks of the running dispatch send that finished
//   uint32 combine_done[2]     same for combine send
//   padding to 64
// per half:
//   uint64 dispatch_decision[R]  per source: (call << 2) | arrived/absent/polling,
//                                the one verdict every receiving block follows
//   uint64 combine_decision[R]   same for combine senders
//   uint64 combine_signals[R]    combine signals expected from each remote rank so far
//   int32  pairs_to[R]           (token, k) pairs this rank sent to each rank
//   int32  pair_base_from[R]     P that each source reserved for this rank
//   int32  rows_from[R]          rows this rank received from each source
//   int32  pair_slot[max_tokens * K]  combine_recv row of each (token, k), -1 none
//   int32  row_slot[total_rows]  for each received row: its source's combine_recv row
//   int32  row_source[total_rows]  and that source
//   int32  staged_row[R][max_tokens * K]  for a source on another node: the
//                                received row whose expert output goes back
//                                at staging index j (its slot - pair_base_from)
//   uint32 post_lock[R]          lock of the combine ring to each rank: the
//                                blocks that stage its chunks post in turn
struct StateLayout {
  size_t dispatch_calls = 0;
  size_t combine_calls = 0;
  size_t dispatch_done = 0;
  size_t combine_done = 0;
  size_t half_base = 0;   // first byte of half 0's arrays
  size_t half_bytes = 0;  // bytes of one half's arrays
  // Offsets inside one half's arrays.
  size_t dispatch_decision = 0;
  size_t combine_decision = 0;
  size_t combine_signals = 0;
  size_t pairs_to = 0;
  size_t pair_base_from = 0;
  size_t rows_from = 0;
  size_t pair_slot = 0;
  size_t row_slot = 0;
  size_t row_source = 0;
  size_t staged_row = 0;
  size_t post_lock = 0;
  size_t total_bytes = 0;
};

// Sizes in size_t; the caller (low_latency_layout) has bounded the shape so
// nothing here overflows 64 bits.
EPX_LL_HOST_DEVICE inline StateLayout state_layout(int num_ranks, int max_tokens, int num_topk, size_t total_rows) {
  StateLayout s;
  s.dispatch_calls = 0;
  s.combine_calls = 16;
  s.dispatch_done = 32;
  s.combine_done = 40;
  s.half_base = 64;
  const size_t r = static_cast<size_t>(num_ranks);
  size_t at = 0;
  s.dispatch_decision = at;
  at += align16(8 * r);
  s.combine_decision = at;
  at += align16(8 * r);
  s.combine_signals = at;
  at += align16(8 * r);
  s.pairs_to = at;
  at += align16(4 * r);
  s.pair_base_from = at;
  at += align16(4 * r);
  s.rows_from = at;
  at += align16(4 * r);
  s.pair_slot = at;
  at += align16(4 * static_cast<size_t>(max_tokens) * static_cast<size_t>(num_topk));
  s.row_slot = at;
  at += align16(4 * total_rows);
  s.row_source = at;
  at += align16(4 * total_rows);
  s.staged_row = at;
  at += align16(4 * r * static_cast<size_t>(max_tokens) * static_cast<size_t>(num_topk));
  s.post_lock = at;
  at += align16(4 * r);
  s.half_bytes = at;
  s.total_bytes = s.half_base + 2 * at;
  return s;
}

// States of a decision word's low two bits for the word's call: a verdict
// (kArrived, kAbsent), or kPolling: one thread claimed the poll of the rank's
// arrival word and the others wait for its verdict.
inline constexpr uint64_t kArrived = 1;
inline constexpr uint64_t kAbsent = 2;
inline constexpr uint64_t kPolling = 3;

}  // namespace epx::kernels::ll
