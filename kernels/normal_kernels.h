// GPU launchers of normal (high-throughput) dispatch and combine, inside a
// node and across nodes: the contract between the kernels (normal_*.cu) and
// the SDK's epx::NormalBuffer, which owns the memory and the per-call state.
//
// Host code includes this header without CUDA headers.
//
// N nodes of P ranks (normal_format.h). A rank's *virtual sources* are its
// own tokens (v = its node) and, for every other node v, the tokens that
// node's rank with this rank's local index relayed to it: every token
// crosses the network at most once per destination node, then NVLink.
//
// How a call moves data (formats: normal_format.h):
//   layout    one thread per token: is_token_in_rank, per-rank, per-node and
//             per-expert counts (a token counts once per rank and expert).
//   node send (N > 1) block v scans which tokens node v needs into the
//             handle's node_index and writes the head (count) and each such
//             token's meta into the rdma space; then warps stage each
//             token's row once per node, and one extra block's warp posts,
//             per node, the head and metas at once, then each row chunk as
//             soon as its rows are staged, to the rank with this rank's
//             local index there (the relay): the fabric moves the first
//             chunks while the last are staged.
//   relay wait (N > 1) one thread per other node waits for its relay's
//             metas (signal, then the head's tag) and records, once for
//             all blocks after it, the count or that the relay is late.
//   notify    block (v, j) learns virtual source v's tokens for local rank j
//             (own tokens: is_token_in_rank; relayed ones: their top-k ids)
//             into the handle's send_index, and
//             stores the count into every local rank's notify slot for this
//             rank (so every local rank learns the whole count matrix), and
//             the per-expert counts into j's slot; the last block stores
//             the slot's seq (release, system scope).
//   dispatch  every block waits for every local rank's notify, derives where
//             each virtual source's rows start at each local rank (rows are
//             grouped by global source rank), and warps copy tokens straight
//             to their final rows in the local ranks' nvl spaces (NVLink
//             stores): own tokens first, then each relayed row chunk once
//             its signal says it landed (one thread per chunk polls it; the
//             others read its verdict in device memory). Block 0 publishes
//             the receive counts (handle, host-mapped words). The last block
//             to finish stores this rank's arrival seq at every local rank,
//             then waits for every local rank's arrival, so the kernel ends
//             when this rank's receive is complete.
//   combine   send: each received row goes back to the local rank that
//             forwarded it, into the row its token had in that rank's send
//             list; the last block stores the arrival seqs. relay (N > 1):
//             a warp per relayed token sums its rows (local ranks ascending,
//             fp32) into one bf16 partial, and one extra block's warp posts
//             each chunk of partials back to the tokens' owner as soon as
//             it is summed. receive: a warp per token sums its own node's
//             rows (ranks ascending, fp32), then each other node's partial
//             (nodes ascending; each chunk once it landed), plus the
//             biases, into bf16; and the weights the same way.
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
#include <string>
#include <vector>

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
inline constexpr uint32_t kNormalRelayTimeout = 29;     // index: the remote rank whose dispatch message never came
inline constexpr uint32_t kNormalPartialTimeout = 30;   // index: the remote rank whose combine sums never came
inline constexpr uint32_t kNormalPostFailed = 31;       // index: destination rank; expected: bytes (the ring refused)
inline constexpr uint32_t kNormalStaleData = 32;        // index: the remote rank; expected: the call's tag; seen: the tag read
inline constexpr uint32_t kNormalBadCount = 33;         // index: the rank whose count it is; expected: the bound; seen: the count

// Per-rank private device memory (zeroed once).
struct NormalState {
  uint64_t dispatch_calls;  // calls completed; a call's seq is this + 1
  uint64_t combine_calls;
  uint32_t finished[8];     // blocks of the running kernel that finished (last-block election)
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
  int32_t* rank_prefix_matrix = nullptr;  // [ranks][ranks]; columns of this node's ranks
  // [N][max_tokens][P]: virtual source v's token t's row in this rank's
  // send list to local rank j, or -1 (one node: [max_tokens][ranks]).
  int32_t* send_index = nullptr;
  uint8_t* is_token_in_rank = nullptr;    // [max_tokens][ranks] (a copy)
  int32_t* num_recv_tokens = nullptr;     // [1]
  int32_t* send_counts = nullptr;         // [N][P]: rows of virtual source v for local rank j
  int32_t* node_index = nullptr;          // [max_tokens][N]: own token's message index to node v, or -1
  int32_t* node_counts = nullptr;         // [N]: messages to node v
  int32_t* relay_counts = nullptr;        // [N]: messages node v relayed to this rank
};

struct NormalTransport {
  int rank = 0;
  DevicePeers peers = {};               // nvl spaces of this node's ranks (this one's too); null elsewhere
  NormalState* state = nullptr;
  NormalHostCounts* host_counts = nullptr;  // device pointer of the mapped host words
  const int32_t* rank_mask = nullptr;   // device [ranks]: non-zero = lost
  DeviceError* error = nullptr;
  uint64_t timeout_ns = 0;
  int num_sms = 20;                     // blocks of the data kernels
  // Across nodes only (shape.nodes() > 1):
  uint8_t* rdma = nullptr;              // this rank's rdma space (NormalRdmaLayout)
  uint32_t rdma_window = 0;             // its window id, the same on every rank
  DeviceRingGroup rings = {};           // channel v: dispatch to node v; N + v: combine to node v
  DeviceSignals signals = {};
  uint32_t signal_base = 0;             // first of NormalRdmaLayout::signal_count words
  NormalRdmaLayout rdma_layout;
  // Device [2N], written each call by the relay-wait kernel: [v] tokens
  // node v relayed to this rank (0 when lost), [N + v] that relay's rank + 1
  // when its message never came, else 0.
  int32_t* relayed = nullptr;
  // Device, per phase (0 dispatch, 1 combine), node and chunk:
  // chunk_gates [2][N][kNormalChunks] the verdict on a chunk from node v for
  // a call ((seq << 2) | kChunk*), chunk_staged [2][N][kNormalChunks] the
  // messages (partials) of a chunk to node v staged so far this call.
  uint64_t* chunk_gates = nullptr;
  int32_t* chunk_staged = nullptr;
};

// States of a chunk gate's low two bits for the gate's call.
inline constexpr uint64_t kChunkLanded = 1;
inline constexpr uint64_t kChunkLost = 2;
inline constexpr uint64_t kChunkPolling = 3;
EPX_NORMAL_HOST_DEVICE inline constexpr size_t normal_chunk_cell(int phase, int nodes, int node, int c) {
  return (static_cast<size_t>(phase) * nodes + node) * kNormalChunks + c;
}

struct NormalLayoutArgs {
  const int64_t* topk_idx = nullptr;   // [num_tokens][num_topk]
  int num_tokens = 0;
  int ranks_per_node = 0;              // > 0: fill tokens_per_node
  int32_t* tokens_per_rank = nullptr;  // [ranks]
  int32_t* tokens_per_node = nullptr;  // [ranks / ranks_per_node] or null
  int32_t* tokens_per_expert = nullptr;  // [experts]
  uint8_t* is_token_in_rank = nullptr;   // [num_tokens][ranks]
};

// Profiling (NormalBuffer::set_stage_timing): when a call's args carry
// `stage_events` (cudaEvent_t as void*), the launcher records event 0 on the
// stream before the first kernel and event i + 1 after kernel i; these name
// the kernels of a call, in order.
inline std::vector<std::string> normal_dispatch_kernels(int nodes) {
  if (nodes > 1) return {"node_scan", "pack_post", "relay_wait", "notify", "dispatch"};
  return {"notify", "dispatch"};
}
inline std::vector<std::string> normal_combine_kernels(int nodes) {
  if (nodes > 1) return {"send", "relay_post", "recv"};
  return {"send", "recv"};
}

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
  void* const* stage_events = nullptr;  // [normal_dispatch_kernels(nodes).size() + 1] or null
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
  void* const* stage_events = nullptr;    // [normal_combine_kernels(nodes).size() + 1] or null
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
