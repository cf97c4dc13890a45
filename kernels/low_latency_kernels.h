// GPU launchers of low-latency (LL) dispatch and combine: the contract
// between the kernels (low_latency_*.cu) and the SDK's epx::LowLatencyBuffer,
// which owns the memory, the transport and the per-call state.
//
// Host code includes this header without CUDA headers (device.cuh's structs
// are plain integers and pointers; the stream is a void* cudaStream_t).
//
// How a call moves data (DESIGN.md, Kernels):
//   dispatch send  casts each token once (FP8 or BF16) and sends it ONCE to
//                  every rank that hosts at least one of its experts, with a
//                  header naming the token and its top-k expert ids. A
//                  same-node rank gets NVLink stores straight into its
//                  receive region, then an arrival header whose `seq` is
//                  stored last (release, system scope). A rank on another
//                  node gets the messages staged contiguously in this rank's
//                  rdma window and ONE ring write+signal per destination.
//   dispatch recv  waits for every unmasked source's arrival (header seq or
//                  signal), then expands each message into the rows of each
//                  local expert it names: recv_x, scales, src_info,
//                  layout_range, recv_count in low_latency_format.h's layout
//                  and order (an expert's rows grouped by source rank in
//                  ascending order, token order within a source).
//   combine send   sends each received row's expert output back to its
//                  source rank, into the slot the source reserved for that
//                  (token, k) pair; same transport split as dispatch.
//   combine recv   waits for every unmasked rank that got tokens from this
//                  one, then out[t] = bf16(fma over k ascending of
//                  w[t][k] * y(t, k)) in fp32, skipping -1 entries and pairs
//                  whose rank is masked.
// Send and receive are separate launches so the SDK can offer DeepEP's
// return_recv_hook (the receive launch is the hook).
//
// Per-call sequence numbers live in device memory (`state`), so a call
// captured in a CUDA graph and replayed stays correct: each launch reads and
// advances its own counters; the host never passes a sequence number.
#pragma once

#include <cstddef>
#include <cstdint>

#include "epx/device.cuh"
#include "epx/status.h"
#include "kernels/low_latency_format.h"

namespace epx::kernels {

// DeviceError codes LL kernels record (device.cuh's ring and signal codes
// stay below 16). `index` is the rank the kernel waited for or the token
// with the bad entry; `expected` / `seen` as each code says.
inline constexpr uint32_t kLowLatencyDispatchTimeout = 16;  // index: source rank; expected: sequence waited for; seen: last seen
inline constexpr uint32_t kLowLatencyCombineTimeout = 17;   // index: rank that owed expert outputs; same fields
inline constexpr uint32_t kLowLatencyBadExpert = 18;        // index: token; expected: num_experts; seen: the expert id
inline constexpr uint32_t kLowLatencyPostFailed = 19;       // index: destination rank (the ring refused or timed out)

// Byte layout of one rank's LL memory. Every rank computes the same layout
// from the same shape, so a rank addresses a peer's region by offset.
//
// Two spaces, each double-buffered (half 0, half 1):
//   nvl space   [half 0 recv][half 1 recv]                        cudaMalloc, CUDA IPC to same-node ranks
//   rdma space  [half 0 recv][half 1 recv][half 0 send][half 1 send]  a window of the daemon (remote ranks' writes land here)
// recv part of a half:
//   dispatch_recv  [num_ranks] regions, one per source rank:
//                  arrival header, then max_tokens messages
//   combine_recv   [num_ranks] arrival headers (one per rank sending back),
//                  then max_tokens * num_topk rows of 2 * hidden bytes
// send part of a half (staging for ranks on other nodes):
//   dispatch_send  [num_ranks] regions laid out like a dispatch_recv region
//   combine_send   [num_ranks] regions: arrival header, then up to
//                  max_tokens * num_topk rows
struct LowLatencyLayout {
  size_t message_bytes = 0;          // one dispatched token: header + largest payload, multiple of 16
  size_t dispatch_header_bytes = 0;  // arrival header of a dispatch region, multiple of 16
  size_t dispatch_region_bytes = 0;  // header + max_tokens * message_bytes
  size_t combine_row_bytes = 0;      // 2 * hidden
  size_t combine_header_bytes = 0;   // arrival header of a combine region, multiple of 16
  size_t combine_region_bytes = 0;   // header + max_tokens * num_topk * combine_row_bytes (staging)
  // Offsets inside one half's recv part / send part.
  size_t dispatch_recv = 0;
  size_t combine_recv = 0;
  size_t recv_bytes = 0;  // one half's recv part
  size_t dispatch_send = 0;
  size_t combine_send = 0;
  size_t send_bytes = 0;  // one half's send part
  size_t nvl_bytes = 0;   // 2 * recv_bytes
  size_t rdma_bytes = 0;  // 2 * recv_bytes + 2 * send_bytes
  // Signal words a rank needs (2 halves x 2 phases x num_ranks), counted
  // from LowLatencyTransport::signal_base.
  uint32_t signal_count = 0;
  // Device memory private to a rank (sequence counters, the handle's
  // internal arrays per half); zeroed once before the first launch.
  size_t state_bytes = 0;
};

// INVALID_ARGUMENT (from check_low_latency_shape) for a bad shape.
Status low_latency_layout(const LowLatencyShape& shape, LowLatencyLayout* layout);

// How this rank reaches the others; built once by the SDK.
struct LowLatencyTransport {
  int rank = 0;
  // ptrs[r]: rank r's nvl space mapped into this GPU (this rank's own
  // included); nullptr when r is on another node.
  DevicePeers peers = {};
  uint8_t* rdma_local = nullptr;     // this rank's rdma space (device pointer); nullptr when no rank is remote
  uint32_t rdma_window = 0;          // its window id, the same on every rank (checked by the SDK)
  // Posts to remote ranks, one single-producer ring per (phase, rank):
  // channel d carries dispatch posts to rank d, channel num_ranks + s
  // combine posts to rank s, so the threads posting for different ranks
  // never share a ring (2 * num_ranks channels).
  DeviceRingGroup rings = {};
  DeviceSignals signals = {};        // this rank's signal words
  uint32_t signal_base = 0;          // first of layout.signal_count words
  uint8_t* state = nullptr;          // device memory, layout.state_bytes
  const int32_t* rank_mask = nullptr;  // device [num_ranks]: non-zero = rank lost, neither sent to nor waited for
  DeviceError* error = nullptr;      // host-mapped: first failure (a wait's timeout names the rank)
  uint64_t timeout_ns = 0;           // how long a receive waits for one rank before giving up
};

struct LowLatencyDispatchArgs {
  int half = 0;  // 0 or 1
  const uint16_t* x = nullptr;        // [num_tokens][hidden] bf16
  const int64_t* topk_idx = nullptr;  // [num_tokens][num_topk], -1 = none
  int num_tokens = 0;                 // <= max_tokens_per_rank
  LowLatencyDispatchOptions options;
  // Outputs (device memory, low_latency_format.h layouts, sized for the shape):
  uint8_t* recv_x = nullptr;          // e4m3 or bf16 rows
  void* recv_scales = nullptr;        // float or packed UE8M0 int32 (FP8 only)
  int32_t* recv_count = nullptr;      // [local_experts]
  int32_t* src_info = nullptr;        // [local_experts][rows]
  int64_t* layout_range = nullptr;    // [local_experts][num_ranks]
  int32_t* cumulative_recv_stats = nullptr;  // optional [local_experts]: += recv_count
};

struct LowLatencyCombineArgs {
  int half = 0;  // the half of the dispatch whose handle this combines
  const uint16_t* x = nullptr;        // [local_experts][rows][hidden] bf16, rows as that dispatch delivered them
  const int32_t* src_info = nullptr;  // that dispatch's handle
  const int64_t* layout_range = nullptr;
  const int32_t* recv_count = nullptr;
  const int64_t* topk_idx = nullptr;  // this rank's, as given to that dispatch
  const float* topk_weights = nullptr;  // [num_tokens][num_topk]
  int num_tokens = 0;
  uint16_t* out = nullptr;            // [num_tokens][hidden] bf16
};

// Each launcher checks its arguments (shape, pointers, alignment, half,
// num_tokens) and returns INVALID_ARGUMENT before enqueueing anything; a
// launch failure names the CUDA error. Expert ids beyond num_experts are the
// SDK's check (check_low_latency_topk on a host copy) or, on the device, a
// DeviceError; they never index out of bounds.
Status launch_low_latency_dispatch_send(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                        const LowLatencyTransport& transport, const LowLatencyDispatchArgs& args,
                                        void* stream);
Status launch_low_latency_dispatch_recv(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                        const LowLatencyTransport& transport, const LowLatencyDispatchArgs& args,
                                        void* stream);
Status launch_low_latency_combine_send(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                       const LowLatencyTransport& transport, const LowLatencyCombineArgs& args,
                                       void* stream);
Status launch_low_latency_combine_recv(const LowLatencyShape& shape, const LowLatencyLayout& layout,
                                       const LowLatencyTransport& transport, const LowLatencyCombineArgs& args,
                                       void* stream);

}  // namespace epx::kernels
