// epx::LowLatencyBuffer: DeepEP's low-latency MoE dispatch and combine
// (deep_ep.Buffer.low_latency_dispatch / low_latency_combine) for one rank
// of a job on one GPU. Same-node ranks are reached by NVLink stores, ranks
// on other nodes through epxd (staged writes: dispatch posts one per
// destination rank per call, combine one per ~256 KiB chunk as it is
// staged; a token goes once to each rank that hosts any of its experts, and
// that rank expands it into each local expert's rows).
//
//   auto buffer = epx::LowLatencyBuffer::create(job, {.num_max_dispatch_tokens_per_rank = 128,
//                                                     .hidden = 7168, .num_experts = 288, .num_topk = 8});
//   auto d = (*buffer)->low_latency_dispatch(x, topk_idx, num_tokens, {}, stream);
//   ... grouped GEMM over d->recv_x, rows [0, recv_count[e]) of expert e ...
//   auto out = (*buffer)->low_latency_combine(y, topk_idx, topk_weights, d->handle, {}, stream);
//
// Tensors are raw device pointers (row-major, the layouts of
// kernels/low_latency_format.h, which are DeepEP's). Every call only
// enqueues work on the caller's stream (no host synchronisation), so a
// dispatch and a combine can be captured in a CUDA graph and replayed.
// Calls alternate between two halves of the buffer, so two calls may be in
// flight, as DeepEP allows; outputs of a call stay valid until the second
// dispatch after it.
//
// Failure: a rank that does not send within `timeout` makes the receiving
// kernel give up on it (its rows absent, its combine terms zero); check()
// then returns the error naming that rank. After a rank is lost (the
// daemon's RankLost), mask_rank() (or check(), which masks lost ranks
// itself) lets the survivors go on serving without it, as DeepEP's shrink
// mode does.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "epx/job.h"
#include "epx/status.h"

namespace epx {

class CudaSignals;
class GpuWindow;
struct DeviceError;

struct LowLatencyOptions {
  // DeepEP's size hint.
  int num_max_dispatch_tokens_per_rank = 128;
  int hidden = 7168;
  int num_experts = 0;
  int num_topk = 8;
  int device = 0;  // CUDA device of this rank
  // How long a receiving kernel waits for one rank before giving up on it.
  std::chrono::milliseconds timeout{10000};
  // Remote ranks' arrivals are counted in the job's signals. The buffer
  // opens them (4 * num_ranks words) unless the caller already did and lends
  // them here, with the first word the buffer may use: words no one else
  // has used (they must read 0). A rank has one signal array per job, so a
  // second buffer in the same job needs them lent (at another base).
  CudaSignals* signals = nullptr;
  uint32_t signal_base = 0;
  // Slots of each ring: one ring per (phase, rank), 2 * num_ranks rings,
  // which count against the daemon's max_rings_per_client (default 256).
  uint32_t ring_capacity = 64;
};

struct LowLatencyDispatchFlags {
  bool use_fp8 = true;
  bool round_scale = false;
  bool use_ue8m0 = false;
  // Only the send is enqueued; the returned hook enqueues the receive.
  bool return_recv_hook = false;
  // Optional device [local_experts]: += each call's recv_count.
  int32_t* cumulative_local_expert_recv_stats = nullptr;
};

// What a combine needs from its dispatch (DeepEP's handle). Points into the
// buffer; valid until the second dispatch after the one that returned it.
struct LowLatencyHandle {
  int half = 0;
  int num_tokens = 0;
  const int32_t* src_info = nullptr;      // [local_experts][num_ranks * num_max]
  const int64_t* layout_range = nullptr;  // [local_experts][num_ranks]
  const int32_t* recv_count = nullptr;    // [local_experts]
};

struct LowLatencyDispatchResult {
  // [local_experts][num_ranks * num_max][hidden]: e4m3 bytes or bf16.
  void* recv_x = nullptr;
  // FP8: float [local_experts][hidden / 128][rows] or, with use_ue8m0,
  // int32 [local_experts][hidden / 512][rows]; null for BF16.
  void* recv_scales = nullptr;
  int32_t* recv_count = nullptr;  // [local_experts]
  LowLatencyHandle handle;
  // With return_recv_hook: enqueues the receive on the dispatch's stream.
  std::function<Status()> hook;
};

struct LowLatencyCombineFlags {
  // x is the buffer get_next_low_latency_combine_buffer() returned.
  bool zero_copy = false;
  bool return_recv_hook = false;
  // Optional device [num_tokens][hidden] bf16; null: the buffer's own.
  void* out = nullptr;
};

struct LowLatencyCombineResult {
  void* combined_x = nullptr;  // [num_tokens][hidden] bf16
  std::function<Status()> hook;
};

class LowLatencyBuffer {
 public:
  // Allocates and registers everything (collective: every rank of the job
  // calls it, with the same options, at the same point of its window
  // sequence, because ranks address each other's window by id).
  // INVALID_ARGUMENT for a bad shape; errors of the daemon or CUDA otherwise.
  static Result<std::unique_ptr<LowLatencyBuffer>> create(Job& job, const LowLatencyOptions& options);
  ~LowLatencyBuffer();
  LowLatencyBuffer(const LowLatencyBuffer&) = delete;
  LowLatencyBuffer& operator=(const LowLatencyBuffer&) = delete;

  // x: [num_tokens][hidden] bf16; topk_idx: [num_tokens][num_topk] int64,
  // -1 for none. INVALID_ARGUMENT (nothing enqueued) for num_tokens beyond
  // num_max_dispatch_tokens_per_rank or bad pointers; an expert id beyond
  // num_experts is found by the kernel, skipped, and reported by check().
  Result<LowLatencyDispatchResult> low_latency_dispatch(const void* x, const int64_t* topk_idx, int num_tokens,
                                                        const LowLatencyDispatchFlags& flags, void* stream);

  // x: [local_experts][num_ranks * num_max][hidden] bf16 expert outputs,
  // rows as `handle`'s dispatch delivered them; topk_idx as given to that
  // dispatch; topk_weights: [num_tokens][num_topk] float.
  Result<LowLatencyCombineResult> low_latency_combine(const void* x, const int64_t* topk_idx,
                                                      const float* topk_weights, const LowLatencyHandle& handle,
                                                      const LowLatencyCombineFlags& flags, void* stream);

  // Where to write expert outputs for a zero-copy combine of `handle`.
  Result<void*> get_next_low_latency_combine_buffer(const LowLatencyHandle& handle);

  // Zeroes the buffer's outputs and receive regions (DeepEP's
  // clean_low_latency_buffer). Collective in spirit: call it on every rank
  // between calls, with nothing in flight. Blocks.
  Status clean_low_latency_buffer();

  // OK, or the first failure a kernel recorded (a rank that never sent,
  // named with its rank; a bad expert id; a refused post) or the daemon
  // reported on the buffer's ring. Also masks ranks the daemon reported
  // lost, so the next calls go on without them. Reads host memory only.
  Status check();
  // Neither send to nor wait for `rank` from the next call on.
  Status mask_rank(uint32_t rank);
  std::vector<uint32_t> masked_ranks() const;

  int local_experts() const;
  // Ranks reached by NVLink (this one included) and through the daemon.
  int nvlink_ranks() const;
  int remote_ranks() const;

  // This rank's spaces (kernels::LowLatencyLayout), for callers that alias
  // them (deep_ep's get_local_buffer_tensor); valid until the buffer goes.
  // The nvl space: device memory same-node ranks store into (CUDA IPC).
  void* nvl_buffer() const;
  size_t nvl_bytes() const;
  // With remote ranks, the rdma space: the window remote ranks' writes land
  // in (is_device(), or why it is a host window) and its laid-out bytes (the
  // window may be rounded up beyond them); null and 0 without remote ranks.
  const GpuWindow* rdma_window() const;
  size_t rdma_bytes() const;

 private:
  LowLatencyBuffer() = default;
  struct State;  // client/src/low_latency/low_latency_buffer.cc
  static Status describe_device_error(const State& s, uint32_t code, const DeviceError& e);
  std::unique_ptr<State> state_;
};

}  // namespace epx
