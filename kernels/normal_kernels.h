// GPU launchers of normal (high-throughput) dispatch and combine inside one
// node: the contract between the kernels (normal_*.cu) and the SDK's
// epx::NormalBuffer, which owns the memory and the per-call state.
//
// Host code includes this header without CUDA headers.
//
// How a call moves data (formats: normal_format.h):
//   layout    one thread per token: is_token_in_rank, per-rank, per-node and
//             per-expert counts (a token counts once per rank and expert).
//   notify    block r scans is_token_in_rank's column r into the handle's
//             send_index (the token's place in this rank's list for r) and
//             stores the count into every rank's notify slot for this rank
//             (so every rank learns the whole count matrix), and this rank's
//             per-expert counts for r's experts into r's slot; the last
//             block stores the slot's seq (release, system scope).
//   dispatch  every block waits for every source's notify, derives where
//             its rows start at each destination (counts of lower sources),
//             and warps copy tokens straight to their final rows in the
//             destinations' nvl spaces (NVLink stores); block 0 publishes
//             the receive counts (handle, host-mapped words). The last block
//             to finish stores this rank's arrival seq at every destination,
//             then waits for every source's arrival, so the kernel ends when
//             this rank's receive is complete.
//   combine   send: each received row goes back to its source, into the row
//             its token had in the source's send list to this rank; the last
//             block stores the arrival seqs. receive: every block waits for
//             every rank's arrival, then a warp per token sums the rows of
//             the ranks holding it (send_index >= 0), ranks ascending, fp32,
//             plus the biases, into bf16; and the weights the same way.
// Per-call sequence numbers live in device memory (`state`) and advance in
// the last kernel of a phase, so a call captured in a CUDA graph and
// replayed stays correct.
//
// Every wait is bounded by timeout_ns: a rank that does not report in time is
// named in a DeviceError (its data absent, its combine terms zero) and the
// kernel goes on. Ranks in rank_mask are neither written to nor waited for.
#pragma once

#include <cstddef>
#include <cstdint>

#include "epx/device.cuh"
#include "epx/status.h"
#include "kernels/normal_format.h"

namespace epx::kernels {

// DeviceError codes of normal-mode kernels (LL uses 16..19). `index` is the
// rank waited for or the token with the bad entry.
inline constexpr uint32_t kNormalNotifyTimeout = 24;    // index: source; expected: call; seen: last seen
inline constexpr uint32_t kNormalDispatchTimeout = 25;  // index: source whose rows never completed
inline constexpr uint32_t kNormalCombineTimeout = 26;   // index: rank that owed combine rows
inline constexpr uint32_t kNormalBadExpert = 27;        // index: token; expected: num_experts; seen: the id
inline constexpr uint32_t kNormalWorstExceeded = 28;    // expected: num_worst_tokens; seen: rows received

// Per-rank private device memory (zeroed once).
struct NormalState {
  uint64_t dispatch_calls;  // calls completed; a call's seq is this + 1
  uint64_t combine_calls;
  uint32_t finished[4];     // blocks of the running kernel that finished (last-block election)
};

// Receive counts the host reads without a device synchronisation: pinned
// memory mapped into the GPU. Stored by the dispatch kernel, `seq` last.
struct NormalHostCounts {
  uint64_t seq;             // the host_tag of the dispatch these counts belong to
  int32_t num_recv_tokens;
  int32_t expert_counts[1]; // [local_experts] (allocated to size), aligned
};
inline size_t normal_host_counts_bytes(int local_experts) {
  return offsetof(NormalHostCounts, expert_counts) + sizeof(int32_t) * static_cast<size_t>(local_experts);
}

// What a combine needs from its dispatch, in caller-owned device memory
// sized for the shape (DeepEP's handle).
struct NormalHandleArrays {
  int32_t* rank_prefix_matrix = nullptr;  // [ranks][ranks]
  int32_t* send_index = nullptr;          // [max_tokens][ranks]: row in the send list to r, or -1
  uint8_t* is_token_in_rank = nullptr;    // [max_tokens][ranks] (a copy)
  int32_t* num_recv_tokens = nullptr;     // [1]
};

struct NormalTransport {
  int rank = 0;
  DevicePeers peers = {};               // every rank's nvl space (this one's too); all same-node
  NormalState* state = nullptr;
  NormalHostCounts* host_counts = nullptr;  // device pointer of the mapped host words
  const int32_t* rank_mask = nullptr;   // device [ranks]: non-zero = lost
  DeviceError* error = nullptr;
  uint64_t timeout_ns = 0;
  int num_sms = 20;                     // blocks of the data kernels
};

struct NormalLayoutArgs {
  const int64_t* topk_idx = nullptr;   // [num_tokens][num_topk]
  int num_tokens = 0;
  int ranks_per_node = 0;              // > 0: fill tokens_per_node
  int32_t* tokens_per_rank = nullptr;  // [ranks]
  int32_t* tokens_per_node = nullptr;  // [ranks / ranks_per_node] or null
  int32_t* tokens_per_expert = nullptr;  // [experts]
  uint8_t* is_token_in_rank = nullptr;   // [num_tokens][ranks]
};

struct NormalDispatchArgs {
  const void* x = nullptr;            // [num_tokens][row_bytes]
  const uint32_t* x_scales = nullptr; // FP8: element (t, j) at t * scale_token_stride + j * scale_hidden_stride
  int scale_token_stride = 0;
  int scale_hidden_stride = 1;
  NormalPayload payload;
  const int64_t* topk_idx = nullptr;  // [num_tokens][num_topk] or null (cached mode: no top-k outputs)
  const float* topk_weights = nullptr;
  const uint8_t* is_token_in_rank = nullptr;   // [num_tokens][ranks]; null when cached
  const int32_t* tokens_per_expert = nullptr;  // [experts]; null when cached
  int num_tokens = 0;
  int expert_alignment = 1;
  int num_worst_tokens = 0;           // > 0: rows past the received pad with top-k -1
  bool cached = false;                // the handle already holds this layout
  // Stored into host_counts->seq with the counts: the host waits for its own
  // tag (a replayed CUDA graph stores a stale one, never the one awaited).
  uint64_t host_tag = 0;
  NormalHandleArrays handle;
};

struct NormalCombineArgs {
  const uint16_t* x = nullptr;            // [num_recv_tokens][hidden] bf16
  const float* topk_weights = nullptr;    // [num_recv_tokens][num_topk] or null
  const uint16_t* bias0 = nullptr;        // [num_tokens][hidden] bf16 or null
  const uint16_t* bias1 = nullptr;
  int num_tokens = 0;                     // this rank's tokens in the dispatch
  NormalHandleArrays handle;
  uint16_t* out = nullptr;                // [num_tokens][hidden] bf16
  float* out_topk_weights = nullptr;      // [num_tokens][num_topk] or null
};

// The transport's own checks (every launcher makes them).
Status check_normal_transport(const char* who, const NormalShape& shape, const NormalTransport& t);

// Each launcher checks its arguments and returns INVALID_ARGUMENT before
// enqueueing anything; a launch failure names the CUDA error.
Status launch_normal_layout(const NormalShape& shape, const NormalTransport& t, const NormalLayoutArgs& args,
                            void* stream);
Status launch_normal_dispatch(const NormalShape& shape, const NormalLayout& layout, const NormalTransport& t,
                              const NormalDispatchArgs& args, void* stream);
Status launch_normal_combine(const NormalShape& shape, const NormalLayout& layout, const NormalTransport& t,
                             const NormalCombineArgs& args, void* stream);

}  // namespace epx::kernels
