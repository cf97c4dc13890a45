// epx::NormalBuffer: DeepEP's normal (high-throughput) MoE dispatch and
// combine (deep_ep.Buffer.get_dispatch_layout / dispatch / combine) for one
// rank of a job on one GPU, for prefill and training where thousands of
// tokens per rank move per layer.
//
//   auto buffer = epx::NormalBuffer::create(job, {.num_max_tokens_per_rank = 4096, .hidden = 7168,
//                                                 .num_experts = 256, .num_topk = 8});
//   auto handle = (*buffer)->new_handle();
//   (*buffer)->get_dispatch_layout(topk_idx, num_tokens, layout, {});
//   auto d = (*buffer)->dispatch({.x = x, .num_tokens = num_tokens, .topk_idx = topk_idx, ...layout...}, *handle, {}, {});
//   ... experts over d->recv_x rows [0, d->num_recv_tokens) ...
//   auto c = (*buffer)->combine({.x = y}, *handle, {}, {});
//
// Semantics (normal_format.h has them in full): rows arrive grouped by
// source rank, token order inside a source; recv_topk_idx is remapped to
// local expert ids (-1 elsewhere, weight 0); combine is DeepEP's unweighted
// sum over the ranks holding a token, in fp32, plus up to two biases, into
// bf16 (the expert side applies the weights); the top-k weights come back
// summed the same way.
//
// Memory: the buffer holds every receive (num_ranks * num_max_tokens_per_rank
// rows, so no routing can overrun it) and the combine inputs; a dispatch's
// outputs point into it and stay valid until this rank's next dispatch. A
// NormalHandle (DeepEP's handle) is the caller's: it outlives any number of
// calls, and a dispatch given it as `cached` reuses its layout.
//
// Transport: same-node ranks by NVLink stores into each other's buffer
// (CUDA IPC). A job spanning nodes (every node the same number of ranks,
// ranks of a node consecutive) sends each token across the network at most
// once per destination node, through epxd, to the rank with the sender's
// local index there, which forwards it over NVLink; combine sums inside the
// destination node first and sends one partial per token and node back.
// Such a buffer also opens a GpuWindow (create it at the same point of
// every rank's window sequence), a ring group and signals.
//
// Failure: every wait is bounded by `timeout`; a rank that does not report
// is named (DEADLINE_EXCEEDED from the call when it waits on the host, or
// from check()), its rows absent and its combine terms zero. mask_rank()
// (or check(), for ranks the daemon reported lost) lets the rest go on.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "epx/job.h"
#include "epx/status.h"

namespace epx {

class CudaSignals;
class GpuWindow;

struct NormalOptions {
  int num_max_tokens_per_rank = 4096;  // bounds num_tokens of every call
  int hidden = 7168;
  int num_experts = 0;
  int num_topk = 8;
  int device = 0;  // CUDA device of this rank
  std::chrono::milliseconds timeout{10000};
  // Across nodes only: arrivals from other nodes are counted in the job's
  // signals (NormalBuffer::signal_words(nodes) words: the metas and 16 row
  // chunks per node and phase, for each call parity). The buffer opens them
  // unless the caller lends them here with the first word the buffer may
  // use: words no one else has used (they must read 0). A rank has one signal array per job, so a
  // second buffer spanning nodes in the same job needs them lent.
  CudaSignals* signals = nullptr;
  uint32_t signal_base = 0;
  // Slots of each ring (2 * nodes rings, counted against the daemon's
  // max_rings_per_client). A call posts 17 writes per ring and two calls
  // may be in flight.
  uint32_t ring_capacity = 64;
};

// DeepEP's Config. num_sms: blocks of the data kernels (0: the default, 20,
// DeepEP's intranode default).
struct NormalConfig {
  int num_sms = 0;
};

// A CUDA event recorded after a call's work (DeepEP's EventOverlap).
class NormalEvent {
 public:
  ~NormalEvent();
  NormalEvent(const NormalEvent&) = delete;
  NormalEvent& operator=(const NormalEvent&) = delete;
  void* get() const { return event_; }  // cudaEvent_t
  // Makes `stream` wait for the call (no host blocking).
  Status current_stream_wait(void* stream) const;
  Status synchronize() const;

 private:
  friend class NormalBuffer;
  NormalEvent() = default;
  void* event_ = nullptr;
};

// Where a call runs (DeepEP's previous_event / async_finish /
// allocate_on_comm_stream). By default on `stream`, in order with the
// caller's work. With async_finish (or a previous_event) on the buffer's
// communication stream instead, after previous_event (or everything queued
// on `stream` so far); async_finish returns an event to wait on, otherwise
// `stream` waits for the communication stream.
struct NormalStreams {
  void* stream = nullptr;          // cudaStream_t of the caller; null: the legacy default stream
  void* previous_event = nullptr;  // cudaEvent_t
  bool async_finish = false;
};

// get_dispatch_layout's outputs: device memory of the caller.
struct NormalLayoutOutputs {
  int32_t* num_tokens_per_rank = nullptr;       // [num_ranks]
  int32_t* num_tokens_per_rdma_rank = nullptr;  // [nodes], or null (none inside one node)
  int32_t* num_tokens_per_expert = nullptr;     // [num_experts]
  bool* is_token_in_rank = nullptr;             // [num_tokens][num_ranks]
};

class NormalBuffer;

// DeepEP's handle: what a combine (or a cached dispatch) needs from a
// dispatch. Device arrays sized for the buffer's shape; owned here.
class NormalHandle {
 public:
  ~NormalHandle();
  NormalHandle(const NormalHandle&) = delete;
  NormalHandle& operator=(const NormalHandle&) = delete;
  bool filled() const { return num_tokens_ >= 0; }
  int num_tokens() const { return num_tokens_; }
  // -1 after a worst-case-mode dispatch (the count stayed on the device).
  int num_recv_tokens() const { return num_recv_tokens_; }
  // [ranks][ranks]: [s][r] = tokens ranks 0..s send to r (columns of this
  // rank's node: the rows it forwards go only there).
  const int32_t* rank_prefix_matrix() const;
  // One node: [num_tokens][ranks], the token's row in the send list to r, or
  // -1. Across nodes: [nodes][num_max_tokens_per_rank][ranks_per_node], the
  // same for each virtual source (own tokens, or those node v relayed).
  const int32_t* send_index() const;
  const bool* is_token_in_rank() const;       // [num_tokens][ranks]
  const int32_t* device_num_recv_tokens() const;

 private:
  friend class NormalBuffer;
  NormalHandle() = default;
  struct Arrays;
  std::unique_ptr<Arrays> arrays_;
  const NormalBuffer* owner_ = nullptr;
  int num_tokens_ = -1;
  int num_recv_tokens_ = -1;
};

struct NormalDispatchInput {
  // [num_tokens][hidden] bf16, or e4m3 bytes with scales.
  const void* x = nullptr;
  int num_tokens = 0;
  // FP8: 4-byte scales (float, or packed UE8M0 int32); element (t, j) at
  // x_scales[t * scale_token_stride + j * scale_hidden_stride], j < num_scales.
  const void* x_scales = nullptr;
  int num_scales = 0;
  int scale_token_stride = 0;  // 0: num_scales
  int scale_hidden_stride = 1;
  // [num_tokens][num_topk]; may be null only with a cached handle (then no
  // top-k outputs).
  const int64_t* topk_idx = nullptr;
  const float* topk_weights = nullptr;
  // get_dispatch_layout's outputs (not read with a cached handle).
  const bool* is_token_in_rank = nullptr;
  const int32_t* num_tokens_per_expert = nullptr;
  // Reuse this handle's layout instead (DeepEP's dispatch(handle=...)).
  bool cached = false;
  int expert_alignment = 1;
  // > 0: no host synchronisation (CUDA-graph capturable); outputs have this
  // many rows, rows past the received count have top-k ids -1.
  int num_worst_tokens = 0;
};

struct NormalDispatchResult {
  void* recv_x = nullptr;              // [rows][hidden] bf16 or e4m3
  void* recv_x_scales = nullptr;       // [rows][num_scales] (FP8)
  int64_t* recv_topk_idx = nullptr;    // [rows][num_topk] (null without top-k)
  float* recv_topk_weights = nullptr;  // [rows][num_topk]
  int32_t* recv_src_idx = nullptr;     // [rows]
  // Rows received; -1 in worst-case mode (read handle.device_num_recv_tokens()).
  int num_recv_tokens = -1;
  // Per local expert, aligned up to expert_alignment; empty in worst-case
  // and cached mode (as DeepEP).
  std::vector<int> num_recv_tokens_per_expert_list;
  std::shared_ptr<NormalEvent> event;  // with async_finish
};

struct NormalCombineInput {
  const void* x = nullptr;              // [num_recv_tokens][hidden] bf16, rows as the dispatch delivered them
  const float* topk_weights = nullptr;  // [num_recv_tokens][num_topk], or null
  const void* bias0 = nullptr;          // [num_tokens][hidden] bf16 of this rank's tokens, or null
  const void* bias1 = nullptr;
  void* out = nullptr;                  // [num_tokens][hidden] bf16; null: the buffer's own
  float* out_topk_weights = nullptr;    // [num_tokens][num_topk]; null: the buffer's own (with topk_weights)
};

struct NormalCombineResult {
  void* combined_x = nullptr;
  float* combined_topk_weights = nullptr;  // null without topk_weights
  std::shared_ptr<NormalEvent> event;
};

// How long one kernel of a call took (NormalBuffer::last_dispatch_stages).
struct NormalStageTime {
  std::string kernel;
  double us = 0;
};

class NormalBuffer {
 public:
  // Allocates and registers everything. Collective: every rank of the job
  // calls it with the same options. INVALID_ARGUMENT for a bad shape;
  // FAILED_PRECONDITION when the job's nodes hold different numbers of
  // ranks or a node's ranks are not consecutive.
  static Result<std::unique_ptr<NormalBuffer>> create(Job& job, const NormalOptions& options);
  // Signal words a buffer of a job over `nodes` nodes takes (0 for one node).
  static uint32_t signal_words(int nodes);
  ~NormalBuffer();
  NormalBuffer(const NormalBuffer&) = delete;
  NormalBuffer& operator=(const NormalBuffer&) = delete;

  Result<std::unique_ptr<NormalHandle>> new_handle() const;

  // topk_idx: [num_tokens][num_topk] int64 on the device. Expert ids beyond
  // num_experts are skipped and reported by check().
  Result<std::shared_ptr<NormalEvent>> get_dispatch_layout(const int64_t* topk_idx, int num_tokens,
                                                           const NormalLayoutOutputs& out,
                                                           const NormalStreams& streams);

  // Fills `handle` (unless in.cached: then reads it). Without
  // num_worst_tokens, waits on the host for the receive counts, at most the
  // timeout, and names the ranks that did not report.
  Result<NormalDispatchResult> dispatch(const NormalDispatchInput& in, NormalHandle& handle,
                                        const NormalConfig& config, const NormalStreams& streams);

  Result<NormalCombineResult> combine(const NormalCombineInput& in, const NormalHandle& handle,
                                      const NormalConfig& config, const NormalStreams& streams);

  // OK, or the first failure a kernel recorded (a rank that never reported,
  // a bad expert id, worst-case rows exceeded). Masks ranks the daemon
  // reported lost.
  Status check();
  Status mask_rank(uint32_t rank);

  // Profiling aid, off by default: each later dispatch and combine (not
  // one captured in a CUDA graph) records CUDA events between its kernels,
  // a few microseconds a call, and last_dispatch_stages() /
  // last_combine_stages() say how long each kernel of the last such call
  // took, waiting for it to finish. FAILED_PRECONDITION when timing is off
  // or no call was timed yet.
  Status set_stage_timing(bool on);
  Result<std::vector<NormalStageTime>> last_dispatch_stages() const;
  Result<std::vector<NormalStageTime>> last_combine_stages() const;

  int num_ranks() const;
  int local_experts() const;
  int ranks_per_node() const;
  // Across nodes: the rdma space (is_device(), or why it is a host window);
  // null inside one node.
  const GpuWindow* rdma_window() const;
  // Bytes of the rdma space the kernels lay out (kernels::NormalRdmaLayout;
  // the window may be rounded up beyond them); 0 inside one node.
  size_t rdma_bytes() const;
  // Bytes of GPU memory the buffer holds (its receive space, shared by CUDA IPC).
  size_t nvl_bytes() const;
  // That receive space (kernels::NormalLayout): device memory of this rank
  // that same-node ranks store into during every call. For callers that
  // alias it (deep_ep's get_local_buffer_tensor); valid until the buffer goes.
  void* nvl_buffer() const;

 private:
  NormalBuffer() = default;
  static std::shared_ptr<NormalEvent> new_event();  // null when cudaEventCreate fails
  struct State;
  // "rank 3" or "ranks 3, 5": the ranks whose counts for `call` never came.
  static std::string missing_ranks(const State& s, uint64_t call, uint32_t first);  // client/src/normal/normal_buffer.cc
  // Across nodes: the rdma window, rings and signals, and their errors.
  static Status open_network(State& s, Job& job, const NormalOptions& options);
  static Status network_check(const State& s);
  std::unique_ptr<State> state_;
};

}  // namespace epx
