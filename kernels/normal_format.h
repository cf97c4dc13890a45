// The shapes, outputs and memory layout of normal (high-throughput) dispatch
// and combine, shared by the GPU kernels, their launchers and the CPU
// reference (normal_reference.h). They follow deep_ep.Buffer's normal mode
// (get_dispatch_layout / dispatch / combine), so an engine reads EPX's
// outputs as it reads DeepEP's:
//
//   layout      num_tokens_per_rank [ranks] int32, num_tokens_per_expert
//               [experts] int32, is_token_in_rank [tokens][ranks] bool (a
//               token counts once per rank and once per expert, however many
//               of its top-k entries name them); num_tokens_per_node [nodes]
//               int32 when the job spans nodes
//   recv_x      [num_recv_tokens][hidden] bf16, or e4m3 bytes with
//               recv_x_scales [num_recv_tokens][num_scales] (4-byte float or
//               packed UE8M0 int32, copied, never recomputed)
//   order       rows grouped by source rank ascending, token order inside a
//               source (DeepEP's order too: its channels are contiguous
//               token ranges, read in channel order)
//   recv_src_idx      [num_recv_tokens] int32: the row's token on its source
//   recv_topk_idx     [num_recv_tokens][num_topk] int64: the source's entry
//                     minus this rank's first expert where it names a local
//                     expert, else -1; recv_topk_weights the same entries'
//                     weights, 0 where recv_topk_idx is -1
//   per-expert counts tokens each local expert received, each rounded up to
//                     a multiple of expert_alignment
//   rank_prefix_matrix [ranks][ranks] int32: [s][r] = tokens ranks 0..s send
//                     to rank r (inclusive prefix over sources)
//   combine     out[t] = bf16(sum over ranks r holding t, r ascending, of the
//               fp32 value of r's row for t; then + bias0[t], + bias1[t]),
//               in fp32, unweighted (DeepEP's normal combine is unweighted:
//               the expert side applies the weights); combined_topk_weights
//               [t][k] = the fp32 sum of the rows' weights the same way.
//
// Plain C++17 with no CUDA types; usable on host and device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "epx/status.h"
#include "kernels/fp8_format.h"
#include "kernels/router_check.h"

#if defined(__CUDACC__)
#define EPX_NORMAL_HOST_DEVICE __host__ __device__
#else
#define EPX_NORMAL_HOST_DEVICE
#endif

namespace epx::kernels {

// What sizes a normal-mode buffer. max_tokens_per_rank bounds every call's
// num_tokens; a rank can receive at most num_ranks * max_tokens_per_rank
// rows (every source sending it everything), and the buffer holds that many,
// so no routing can overrun it.
struct NormalShape {
  int num_ranks = 0;
  int num_experts = 0;
  int hidden = 0;
  int num_topk = 0;
  int max_tokens_per_rank = 0;
  // Ranks per node (P): node n holds ranks [n * P, (n + 1) * P). 0: every
  // rank on one node.
  int ranks_per_node = 0;

  EPX_NORMAL_HOST_DEVICE int local_experts() const { return num_ranks > 0 ? num_experts / num_ranks : 0; }
  EPX_NORMAL_HOST_DEVICE int local_ranks() const { return ranks_per_node > 0 ? ranks_per_node : num_ranks; }
  EPX_NORMAL_HOST_DEVICE int nodes() const { return local_ranks() > 0 ? num_ranks / local_ranks() : 0; }
  EPX_NORMAL_HOST_DEVICE size_t max_recv_rows() const {
    return static_cast<size_t>(num_ranks) * static_cast<size_t>(max_tokens_per_rank);
  }
};

// The payload of one dispatch call.
struct NormalPayload {
  bool fp8 = false;    // x holds e4m3 bytes and comes with scales
  int num_scales = 0;  // FP8: scale words per token, 1..hidden/128 (DeepEP: hidden/128 floats or hidden/512 UE8M0 words)
  EPX_NORMAL_HOST_DEVICE size_t row_bytes(int hidden) const {
    return static_cast<size_t>(hidden) * (fp8 ? 1 : 2);
  }
};

// Limits of the kernels: a block keeps a source's counts for every rank in
// shared memory.
inline constexpr int kNormalMaxRanks = 1024;
inline constexpr int kNormalMaxTopk = 32;

EPX_NORMAL_HOST_DEVICE inline constexpr size_t normal_align16(size_t n) { return (n + 15) / 16 * 16; }

// One rank's nvl space (CUDA IPC to same-node ranks); every rank computes
// the same layout from the same shape, so a rank addresses a peer's space by
// offset. All offsets are multiples of 16. N nodes of P ranks (one node:
// P = ranks). A rank forwards over NVLink N *virtual sources*: v = its own
// node is its own tokens, any other v the tokens the rank with its local
// index on node v relayed to it over the network (docs/ARCHITECTURE.md).
//   notify    [P] slots, slot i written by local rank i:
//               uint64 seq (stored last, release), int32 counts[N][P]
//               (virtual source v's tokens for local rank j), int32
//               expert_counts[N][local_experts] (for this rank's experts)
//   arrivals  [2][P] uint64: dispatch data / combine rows of local rank i
//             complete for call seq (stored after the data, release)
//   recv_x, recv_scales, recv_topk_idx, recv_topk_weights, recv_src_idx:
//             max_recv_rows rows each, written at their final row, grouped
//             by global source rank (the rank_prefix_matrix's ranges)
//   combine_x [N][P][max_tokens] rows of hidden bf16: [v][j][i] is local
//             rank j's row for token i of virtual source v's send list to
//             j; combine_weights the same rows of [num_topk] floats
struct NormalLayout {
  size_t notify_slot_bytes = 0;
  size_t notify = 0;
  size_t arrivals = 0;
  size_t recv_x = 0;
  size_t recv_scales = 0;
  size_t recv_topk_idx = 0;
  size_t recv_topk_weights = 0;
  size_t recv_src_idx = 0;
  size_t combine_x = 0;
  size_t combine_weights = 0;
  size_t nvl_bytes = 0;
};

inline constexpr size_t kNotifySeq = 0;
inline constexpr size_t kNotifyCounts = 16;
// `sources` = N * P count words.
EPX_NORMAL_HOST_DEVICE inline constexpr size_t notify_expert_counts(int sources) {
  return kNotifyCounts + 4 * static_cast<size_t>(sources);
}

// One rank's rdma space (a GpuWindow with the same id on every rank), only
// when the job spans nodes. Each region is double-buffered by the call's
// parity: a sender writes call c + 2 only after every rank of the job
// finished call c (docs/ARCHITECTURE.md says why that holds).
//   dispatch_send / dispatch_recv [2][N] regions: a 16-byte head (uint32
//     count, uint32 tag), then max_tokens metas (normal_message_meta():
//     the token's top-k ids (int64) and weights (float), its index at the
//     source (int32), the tag (uint32)), then max_tokens rows (payload row
//     and scales, normal_message_row()); message i is meta i and row i.
//     dispatch_send[p][v] is what this rank sends node v; dispatch_recv[p][v]
//     what node v's rank with this rank's local index relayed to it.
//   combine_send / combine_recv [2][N] regions: 16 bytes a write with no
//     rows carries, then max_tokens partial rows (normal_partial_bytes():
//     hidden bf16, num_topk float weights, the tag), at the index the token
//     had in the message (combine_send[p][v]: this rank's sums for node
//     v's tokens; combine_recv[p][v]: node v's sums for this rank's tokens).
//   The tag is the call's seq (low 32 bits): a receiver reads a head, meta
//   or partial only once its tag says it belongs to the call, so it never
//   acts on bytes of an older call, whatever the fabric's order.
// Each region travels in pieces, so the fabric moves the first while the
// GPU still stages the last and the receiver uses each as it lands: the
// head and metas in one write, then the rows (or partials) in
// kNormalChunks writes of normal_chunk_tokens() messages each (chunk c:
// messages [c * M, (c + 1) * M)); every piece is posted every call, a
// chunk with no messages as a 16-byte write. Signal words come in two
// sets, one per call parity (2 * normal_parity_signals() words from the
// buffer's base), and each word counts one write per call of its parity:
// a call's word reaches normal_signal_target(seq) only once that call's
// write landed, since the write of call seq + 2 (the next to count there)
// waits for every rank to finish call seq, even on a fabric that completes
// writes out of order. Per parity: word v, the metas from node v; word
// normal_dispatch_chunk_signal(N, v, c, p), node v's row chunk c; word
// normal_combine_chunk_signal(N, v, c, p), node v's partial chunk c.
struct NormalRdmaLayout {
  size_t message_region = 0;  // bytes of one dispatch region
  size_t partial_region = 0;  // bytes of one combine region
  size_t dispatch_send = 0;
  size_t dispatch_recv = 0;
  size_t combine_send = 0;
  size_t combine_recv = 0;
  size_t rdma_bytes = 0;
  uint32_t signal_count = 0;
};

inline constexpr size_t kMessageHeader = 16;  // count and tag before the metas
inline constexpr size_t kPartialHeader = 16;  // what a chunk with no partials writes
inline constexpr int kNormalChunks = 16;      // row writes per region and call
// Meta of one message: top-k ids at 0, weights at 8K, source index at 12K,
// tag at 12K + 4.
EPX_NORMAL_HOST_DEVICE inline constexpr size_t normal_message_meta(int num_topk) {
  return normal_align16(12 * static_cast<size_t>(num_topk) + 8);
}
// Row of one message: the payload row, then its scales.
EPX_NORMAL_HOST_DEVICE inline size_t normal_message_row(const NormalShape& s, const NormalPayload& p) {
  return p.row_bytes(s.hidden) + normal_align16(4 * static_cast<size_t>(p.num_scales));
}
// Bytes one message puts on the wire: its meta and its row.
EPX_NORMAL_HOST_DEVICE inline size_t normal_message_bytes(const NormalShape& s, const NormalPayload& p) {
  return normal_message_meta(s.num_topk) + normal_message_row(s, p);
}
// Offsets in a dispatch region of message i's meta and row.
EPX_NORMAL_HOST_DEVICE inline size_t normal_meta_offset(const NormalShape& s, int i) {
  return kMessageHeader + static_cast<size_t>(i) * normal_message_meta(s.num_topk);
}
EPX_NORMAL_HOST_DEVICE inline size_t normal_row_offset(const NormalShape& s, const NormalPayload& p, int i) {
  return normal_meta_offset(s, s.max_tokens_per_rank) + static_cast<size_t>(i) * normal_message_row(s, p);
}
// Messages (and partials) per chunk: M, so chunk c holds [c * M, (c + 1) * M).
EPX_NORMAL_HOST_DEVICE inline constexpr int normal_chunk_tokens(int max_tokens) {
  return (max_tokens + kNormalChunks - 1) / kNormalChunks;
}
// Messages of chunk c when a region holds `count`.
EPX_NORMAL_HOST_DEVICE inline int normal_chunk_count(int max_tokens, int count, int c) {
  const int m = normal_chunk_tokens(max_tokens), first = c * m;
  return count <= first ? 0 : (count - first < m ? count - first : m);
}
// Signal words of one parity: the metas from node v, then node v's row
// chunks, then its partial chunks.
EPX_NORMAL_HOST_DEVICE inline constexpr uint32_t normal_parity_signals(int nodes) {
  return static_cast<uint32_t>(nodes * (1 + 2 * kNormalChunks));
}
EPX_NORMAL_HOST_DEVICE inline constexpr uint32_t normal_meta_signal(int nodes, int node, uint64_t parity) {
  return static_cast<uint32_t>((parity & 1) * normal_parity_signals(nodes) + node);
}
EPX_NORMAL_HOST_DEVICE inline constexpr uint32_t normal_dispatch_chunk_signal(int nodes, int node, int c, uint64_t parity) {
  return static_cast<uint32_t>((parity & 1) * normal_parity_signals(nodes) + nodes + node * kNormalChunks + c);
}
EPX_NORMAL_HOST_DEVICE inline constexpr uint32_t normal_combine_chunk_signal(int nodes, int node, int c, uint64_t parity) {
  return static_cast<uint32_t>((parity & 1) * normal_parity_signals(nodes) + nodes * (1 + kNormalChunks) +
                               node * kNormalChunks + c);
}
// What a word of call seq's parity reads once call seq's write landed: it
// counts one write per call of that parity.
EPX_NORMAL_HOST_DEVICE inline constexpr uint64_t normal_signal_target(uint64_t seq) { return (seq + 1) / 2; }
// One partial row: hidden bf16 at 0, weights at 2H, tag at 2H + 4K.
EPX_NORMAL_HOST_DEVICE inline constexpr size_t normal_partial_bytes(int hidden, int num_topk) {
  return normal_align16(2 * static_cast<size_t>(hidden) + 4 * static_cast<size_t>(num_topk) + 4);
}
// Offset of partial i in a combine region.
EPX_NORMAL_HOST_DEVICE inline size_t normal_partial_offset(const NormalShape& s, int i) {
  return kPartialHeader + static_cast<size_t>(i) * normal_partial_bytes(s.hidden, s.num_topk);
}
// Offset of region `parity`, `node` of an array of 2 * N regions at `base`.
EPX_NORMAL_HOST_DEVICE inline size_t normal_region(size_t base, size_t region, int nodes, uint64_t parity, int node) {
  return base + region * (static_cast<size_t>(parity & 1) * nodes + node);
}

inline Status check_normal_shape(const char* who, const NormalShape& s) {
  const std::string prefix = std::string(who) + ": ";
  auto n = [](long long v) { return std::to_string(v); };
  if (s.num_ranks <= 0 || s.num_ranks > kNormalMaxRanks) {
    return invalid_argument(prefix + "num_ranks=" + n(s.num_ranks) + " is not in 1.." + n(kNormalMaxRanks));
  }
  if (s.num_experts <= 0 || s.num_experts % s.num_ranks != 0) {
    return invalid_argument(prefix + "num_experts=" + n(s.num_experts) + " is not a positive multiple of num_ranks=" +
                            n(s.num_ranks));
  }
  if (s.hidden <= 0 || s.hidden % kFp8BlockSize != 0) {
    return invalid_argument(prefix + "hidden=" + n(s.hidden) + " is not a positive multiple of 128");
  }
  if (s.num_topk <= 0 || s.num_topk > kNormalMaxTopk) {
    return invalid_argument(prefix + "num_topk=" + n(s.num_topk) + " is not in 1.." + n(kNormalMaxTopk));
  }
  if (s.max_tokens_per_rank <= 0) {
    return invalid_argument(prefix + "num_max_tokens_per_rank=" + n(s.max_tokens_per_rank) + " is not positive");
  }
  if (s.ranks_per_node < 0 || (s.ranks_per_node > 0 && s.num_ranks % s.ranks_per_node != 0)) {
    return invalid_argument(prefix + "ranks_per_node=" + n(s.ranks_per_node) + " does not divide num_ranks=" +
                            n(s.num_ranks));
  }
  if (s.max_recv_rows() > (1ull << 31) - 1) {
    return invalid_argument(prefix + "num_ranks * num_max_tokens_per_rank exceeds 2^31 - 1 rows");
  }
  return Status();
}

inline Status check_normal_payload(const char* who, const NormalShape& s, const NormalPayload& p) {
  const std::string prefix = std::string(who) + ": ";
  if (!p.fp8) {
    if (p.num_scales != 0) return invalid_argument(prefix + "BF16 x takes no scales");
    return Status();
  }
  if (p.num_scales <= 0 || p.num_scales > s.hidden / kFp8BlockSize) {
    return invalid_argument(prefix + "FP8 x needs 1.." + std::to_string(s.hidden / kFp8BlockSize) +
                            " scale words per token, got " + std::to_string(p.num_scales));
  }
  return Status();
}

// Every expert id -1 or below num_experts; names the first bad entry.
inline Status check_normal_topk(const char* who, const NormalShape& s, int num_tokens, const int64_t* topk_idx) {
  return check_router_output(std::string(who) + ": ", num_tokens, s.max_tokens_per_rank, "num_max_tokens_per_rank",
                             s.num_topk, s.num_experts, topk_idx);
}

// INVALID_ARGUMENT (from check_normal_shape) for a bad shape.
inline Status normal_layout(const NormalShape& s, NormalLayout* out) {
  EPX_RETURN_IF_ERROR(check_normal_shape("normal_layout", s));
  NormalLayout l;
  const size_t rows = s.max_recv_rows();
  const int N = s.nodes(), P = s.local_ranks();
  l.notify_slot_bytes =
      normal_align16(notify_expert_counts(N * P) + 4 * static_cast<size_t>(N) * static_cast<size_t>(s.local_experts()));
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t here = at;
    at += normal_align16(bytes);
    return here;
  };
  l.notify = take(l.notify_slot_bytes * P);
  l.arrivals = take(2 * sizeof(uint64_t) * P);
  l.recv_x = take(rows * 2 * s.hidden);
  l.recv_scales = take(rows * 4 * (s.hidden / kFp8BlockSize));
  l.recv_topk_idx = take(rows * sizeof(int64_t) * s.num_topk);
  l.recv_topk_weights = take(rows * sizeof(float) * s.num_topk);
  l.recv_src_idx = take(rows * sizeof(int32_t));
  l.combine_x = take(rows * 2 * s.hidden);
  l.combine_weights = take(rows * sizeof(float) * s.num_topk);
  l.nvl_bytes = at;
  *out = l;
  return Status();
}

// The rdma space of a job spanning nodes (sized for BF16 rows and
// hidden / 128 scales, the widest payload).
inline Status normal_rdma_layout(const NormalShape& s, NormalRdmaLayout* out) {
  EPX_RETURN_IF_ERROR(check_normal_shape("normal_rdma_layout", s));
  NormalPayload widest;
  widest.num_scales = s.hidden / kFp8BlockSize;
  NormalRdmaLayout l;
  const size_t T = static_cast<size_t>(s.max_tokens_per_rank);
  l.message_region = normal_align16(kMessageHeader + T * normal_message_bytes(s, widest));
  l.partial_region = normal_align16(kPartialHeader + T * normal_partial_bytes(s.hidden, s.num_topk));
  const size_t regions = 2 * static_cast<size_t>(s.nodes());
  l.dispatch_send = 0;
  l.dispatch_recv = l.dispatch_send + regions * l.message_region;
  l.combine_send = l.dispatch_recv + regions * l.message_region;
  l.combine_recv = l.combine_send + regions * l.partial_region;
  l.rdma_bytes = l.combine_recv + regions * l.partial_region;
  l.signal_count = 2 * normal_parity_signals(s.nodes());
  *out = l;
  return Status();
}

}  // namespace epx::kernels
