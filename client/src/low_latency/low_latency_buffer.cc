// LowLatencyBuffer (epx/low_latency.h): the memory, transport and per-call
// bookkeeping around the LL kernels (kernels/low_latency_kernels.h).
#include "epx/low_latency.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "client/src/cuda/cuda_handles.h"
#include "client/src/cuda/rank_mask.h"
#include "cuda/cuda_status.h"
#include "epx/cuda.h"
#include "kernels/low_latency_kernels.h"

namespace epx {
namespace {

using cuda_handles::DeviceAllocation;
using cuda_handles::DeviceScope;

Result<DeviceAllocation> zeroed(size_t bytes, const std::string& what) {
  return cuda_handles::allocate_zeroed_device(bytes, what);
}

template <typename T>
T* as(const DeviceAllocation& a) {
  return static_cast<T*>(a.get());
}

}  // namespace

struct LowLatencyBuffer::State {
  Job* job = nullptr;  // the caller's; outlives the buffer
  LowLatencyOptions options;
  kernels::LowLatencyShape shape;
  kernels::LowLatencyLayout layout;

  DeviceAllocation nvl;                     // nvl space, shared with same-node ranks
  std::unique_ptr<CudaPeers> peers;         // their nvl spaces
  std::unique_ptr<GpuWindow> rdma;          // rdma space (only with remote ranks)
  std::unique_ptr<CudaRingGroup> rings;     // posts to remote ranks, a ring per (phase, rank)
  std::unique_ptr<CudaSignals> own_signals; // when the buffer opened them
  CudaSignals* signals = nullptr;
  DeviceAllocation kernel_state;
  cuda_handles::RankMask mask;  // ranks the kernels skip
  cuda_handles::ErrorRecord error;

  // Outputs of the calls made on one half.
  struct Half {
    DeviceAllocation recv_x, recv_scales, recv_count, src_info, layout_range, combined;
    DeviceAllocation zero_copy;  // allocated on the first get_next_low_latency_combine_buffer
    int num_tokens = 0;
  };
  Half halves[2];
  int next_half = 0;

  kernels::LowLatencyTransport transport;
  int nvlink_ranks = 0;
  int remote_ranks = 0;

  size_t rows() const { return shape.total_rows(); }
  std::string who() const {
    return "LowLatencyBuffer(job " + job->job_id() + " rank " + std::to_string(job->rank()) + ")";
  }
};

Result<std::unique_ptr<LowLatencyBuffer>> LowLatencyBuffer::create(Job& job, const LowLatencyOptions& options) {
  std::unique_ptr<LowLatencyBuffer> buffer(new LowLatencyBuffer());
  buffer->state_ = std::make_unique<State>();
  State& s = *buffer->state_;
  s.job = &job;
  s.options = options;
  s.shape.num_ranks = static_cast<int>(job.world_size());
  s.shape.num_experts = options.num_experts;
  s.shape.hidden = options.hidden;
  s.shape.max_tokens_per_rank = options.num_max_dispatch_tokens_per_rank;
  s.shape.num_topk = options.num_topk;
  // The widest options size the buffer: BF16 rows, float scales.
  kernels::LowLatencyDispatchOptions widest;
  widest.use_fp8 = false;
  EPX_RETURN_IF_ERROR(kernels::check_low_latency_shape("LowLatencyBuffer::create", s.shape, widest));
  if (options.timeout.count() <= 0) {
    return invalid_argument("LowLatencyBuffer::create: timeout must be positive");
  }
  EPX_RETURN_IF_ERROR(kernels::low_latency_layout(s.shape, &s.layout));

  DeviceScope scope(options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  const std::string who = s.who();

  EPX_ASSIGN_OR_RETURN(s.nvl, zeroed(s.layout.nvl_bytes, who + " nvl space"));
  EPX_ASSIGN_OR_RETURN(s.peers, CudaPeers::open(job, s.nvl.get(), s.layout.nvl_bytes));
  for (uint8_t* p : s.peers->pointers()) (p != nullptr ? s.nvlink_ranks : s.remote_ranks) += 1;

  kernels::LowLatencyTransport& t = s.transport;
  t.rank = static_cast<int>(job.rank());
  t.peers = s.peers->device();
  if (s.remote_ranks > 0) {
    EPX_ASSIGN_OR_RETURN(s.rdma, GpuWindow::create(job, s.layout.rdma_bytes, options.device));
    EPX_RETURN_IF_ERROR(cuda_status(cudaMemset(s.rdma->device_ptr(), 0, s.layout.rdma_bytes), "cudaMemset rdma space"));
    const uint64_t post_timeout_ns = static_cast<uint64_t>(options.timeout.count()) * 1000000ull;
    EPX_ASSIGN_OR_RETURN(s.rings, CudaRingGroup::open(job, 2 * job.world_size(), options.ring_capacity,
                                                      post_timeout_ns));
    if (options.signals != nullptr) {
      s.signals = options.signals;
      if (static_cast<uint64_t>(options.signal_base) + s.layout.signal_count > s.signals->device().count) {
        return invalid_argument(who + ": signals " + std::to_string(options.signal_base) + ".." +
                                std::to_string(options.signal_base + s.layout.signal_count - 1) +
                                " are beyond the " + std::to_string(s.signals->device().count) + " lent");
      }
      t.signal_base = options.signal_base;
      // Arrivals are counted from zero: words a previous user left counting
      // would look like arrivals that never happened.
      for (uint32_t i = 0; i < s.layout.signal_count; ++i) {
        const uint64_t v = s.signals->host().value(options.signal_base + i);
        if (v != 0) {
          return invalid_argument(who + ": lent signal " + std::to_string(options.signal_base + i) + " is " +
                                  std::to_string(v) + ", not 0: give the buffer words nothing else has used");
        }
      }
    } else {
      auto opened = CudaSignals::open(job, s.layout.signal_count);
      if (!opened.ok()) {
        return Status(opened.status().code(),
                      who + ": opening " + std::to_string(s.layout.signal_count) +
                          " signals for remote arrivals (a job's rank has one signal array: lend it through "
                          "LowLatencyOptions::signals if it is already open): " + opened.status().message());
      }
      s.own_signals = std::move(*opened);
      s.signals = s.own_signals.get();
    }
    t.rdma_local = s.rdma->device_ptr();
    t.rdma_window = s.rdma->id();
    t.rings = s.rings->device();
    t.signals = s.signals->device();
  }
  EPX_ASSIGN_OR_RETURN(s.kernel_state, zeroed(s.layout.state_bytes, who + " kernel state"));
  EPX_ASSIGN_OR_RETURN(s.mask, cuda_handles::RankMask::create(s.shape.num_ranks, job.rank(), who));
  EPX_ASSIGN_OR_RETURN(s.error, cuda_handles::new_error_record());
  t.state = as<uint8_t>(s.kernel_state);
  t.rank_mask = s.mask.device();
  t.error = s.error.device;
  t.timeout_ns = static_cast<uint64_t>(options.timeout.count()) * 1000000ull;

  const size_t rows = s.rows();
  const int local = s.shape.local_experts();
  const size_t scale_words = rows * static_cast<size_t>(s.shape.hidden / kernels::kFp8BlockSize);
  for (State::Half& h : s.halves) {
    EPX_ASSIGN_OR_RETURN(h.recv_x, zeroed(rows * s.shape.hidden * 2, who + " recv_x"));
    EPX_ASSIGN_OR_RETURN(h.recv_scales, zeroed(scale_words * sizeof(float), who + " recv scales"));
    EPX_ASSIGN_OR_RETURN(h.recv_count, zeroed(sizeof(int32_t) * local, who + " recv_count"));
    EPX_ASSIGN_OR_RETURN(h.src_info, zeroed(sizeof(int32_t) * rows, who + " src_info"));
    EPX_ASSIGN_OR_RETURN(h.layout_range, zeroed(sizeof(int64_t) * local * s.shape.num_ranks, who + " layout_range"));
    EPX_ASSIGN_OR_RETURN(h.combined, zeroed(static_cast<size_t>(s.shape.max_tokens_per_rank) * s.shape.hidden * 2,
                                            who + " combine output"));
  }
  // Every rank's memory is zeroed before any rank may write into it.
  EPX_RETURN_IF_ERROR(cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize after zeroing"));
  EPX_RETURN_IF_ERROR(job.barrier());
  return buffer;
}

LowLatencyBuffer::~LowLatencyBuffer() = default;

Result<LowLatencyDispatchResult> LowLatencyBuffer::low_latency_dispatch(const void* x, const int64_t* topk_idx,
                                                                        int num_tokens,
                                                                        const LowLatencyDispatchFlags& flags,
                                                                        void* stream) {
  State& s = *state_;
  const std::string who = s.who() + "::low_latency_dispatch";
  if (num_tokens < 0 || num_tokens > s.shape.max_tokens_per_rank) {
    return invalid_argument(who + ": " + std::to_string(num_tokens) +
                            " tokens exceed num_max_dispatch_tokens_per_rank=" +
                            std::to_string(s.shape.max_tokens_per_rank));
  }
  if (num_tokens > 0 && (x == nullptr || topk_idx == nullptr)) return invalid_argument(who + ": null x or topk_idx");
  kernels::LowLatencyDispatchArgs a;
  a.options.use_fp8 = flags.use_fp8;
  a.options.round_scale = flags.round_scale || flags.use_ue8m0;
  a.options.use_ue8m0 = flags.use_ue8m0;
  EPX_RETURN_IF_ERROR(kernels::check_low_latency_shape(who.c_str(), s.shape, a.options));

  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  const int half = s.next_half;
  State::Half& h = s.halves[half];
  a.half = half;
  a.x = static_cast<const uint16_t*>(x);
  a.topk_idx = topk_idx;
  a.num_tokens = num_tokens;
  a.recv_x = as<uint8_t>(h.recv_x);
  a.recv_scales = flags.use_fp8 ? h.recv_scales.get() : nullptr;
  a.recv_count = as<int32_t>(h.recv_count);
  a.src_info = as<int32_t>(h.src_info);
  a.layout_range = as<int64_t>(h.layout_range);
  a.cumulative_recv_stats = flags.cumulative_local_expert_recv_stats;
  EPX_RETURN_IF_ERROR(kernels::launch_low_latency_dispatch_send(s.shape, s.layout, s.transport, a, stream));

  LowLatencyDispatchResult r;
  r.recv_x = a.recv_x;
  r.recv_scales = a.recv_scales;
  r.recv_count = a.recv_count;
  r.handle.half = half;
  r.handle.num_tokens = num_tokens;
  r.handle.src_info = a.src_info;
  r.handle.layout_range = a.layout_range;
  r.handle.recv_count = a.recv_count;
  auto receive = [state = &s, a, stream]() -> Status {
    DeviceScope scope(state->options.device);
    EPX_RETURN_IF_ERROR(scope.status());
    return kernels::launch_low_latency_dispatch_recv(state->shape, state->layout, state->transport, a, stream);
  };
  if (flags.return_recv_hook) {
    r.hook = receive;
  } else {
    EPX_RETURN_IF_ERROR(receive());
  }
  h.num_tokens = num_tokens;
  s.next_half ^= 1;
  return r;
}

Result<LowLatencyCombineResult> LowLatencyBuffer::low_latency_combine(const void* x, const int64_t* topk_idx,
                                                                      const float* topk_weights,
                                                                      const LowLatencyHandle& handle,
                                                                      const LowLatencyCombineFlags& flags,
                                                                      void* stream) {
  State& s = *state_;
  const std::string who = s.who() + "::low_latency_combine";
  if (handle.half != 0 && handle.half != 1) return invalid_argument(who + ": the handle is not one dispatch returned");
  State::Half& h = s.halves[handle.half];
  if (handle.src_info != h.src_info.get() || handle.num_tokens != h.num_tokens) {
    return invalid_argument(who + ": the handle's dispatch was overwritten by a later dispatch on the same half "
                                  "(a handle is valid until the second dispatch after it)");
  }
  if (flags.zero_copy) {
    if (h.zero_copy == nullptr) {
      return invalid_argument(who + ": zero_copy without get_next_low_latency_combine_buffer()");
    }
    x = h.zero_copy.get();
  }
  if (handle.num_tokens > 0 && (topk_idx == nullptr || topk_weights == nullptr)) {
    return invalid_argument(who + ": null topk_idx or topk_weights");
  }
  if (x == nullptr && s.shape.total_rows() > 0) return invalid_argument(who + ": null x");

  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  kernels::LowLatencyCombineArgs a;
  a.half = handle.half;
  a.x = static_cast<const uint16_t*>(x);
  a.src_info = handle.src_info;
  a.layout_range = handle.layout_range;
  a.recv_count = handle.recv_count;
  a.topk_idx = topk_idx;
  a.topk_weights = topk_weights;
  a.num_tokens = handle.num_tokens;
  a.out = static_cast<uint16_t*>(flags.out != nullptr ? flags.out : h.combined.get());
  EPX_RETURN_IF_ERROR(kernels::launch_low_latency_combine_send(s.shape, s.layout, s.transport, a, stream));
  LowLatencyCombineResult r;
  r.combined_x = a.out;
  auto receive = [state = &s, a, stream]() -> Status {
    DeviceScope scope(state->options.device);
    EPX_RETURN_IF_ERROR(scope.status());
    return kernels::launch_low_latency_combine_recv(state->shape, state->layout, state->transport, a, stream);
  };
  if (flags.return_recv_hook) {
    r.hook = receive;
  } else {
    EPX_RETURN_IF_ERROR(receive());
  }
  return r;
}

Result<void*> LowLatencyBuffer::get_next_low_latency_combine_buffer(const LowLatencyHandle& handle) {
  State& s = *state_;
  if (handle.half != 0 && handle.half != 1) {
    return invalid_argument(s.who() + "::get_next_low_latency_combine_buffer: the handle is not one dispatch returned");
  }
  State::Half& h = s.halves[handle.half];
  if (h.zero_copy == nullptr) {
    // Allocated on first use: [local_experts][rows][hidden] bf16 is the
    // largest buffer of all and most engines never ask for it.
    DeviceScope scope(s.options.device);
    EPX_RETURN_IF_ERROR(scope.status());
    EPX_ASSIGN_OR_RETURN(h.zero_copy, zeroed(s.rows() * s.shape.hidden * 2, s.who() + " zero-copy combine input"));
    // The memset is asynchronous and on the legacy stream, which the
    // caller's non-blocking stream does not wait for.
    EPX_RETURN_IF_ERROR(cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize after zeroing"));
  }
  return h.zero_copy.get();
}

Status LowLatencyBuffer::clean_low_latency_buffer() {
  State& s = *state_;
  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  const size_t rows = s.rows();
  for (State::Half& h : s.halves) {
    EPX_RETURN_IF_ERROR(cuda_status(cudaMemset(h.recv_x.get(), 0, rows * s.shape.hidden * 2), "cudaMemset recv_x"));
    EPX_RETURN_IF_ERROR(cuda_status(cudaMemset(h.recv_count.get(), 0, sizeof(int32_t) * s.shape.local_experts()),
                                    "cudaMemset recv_count"));
  }
  return cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize after clean_low_latency_buffer");
}

Status LowLatencyBuffer::mask_rank(uint32_t rank) {
  State& s = *state_;
  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  return s.mask.mask(rank, s.who() + "::mask_rank");
}

std::vector<uint32_t> LowLatencyBuffer::masked_ranks() const { return state_->mask.ranks(); }

Status LowLatencyBuffer::check() {
  State& s = *state_;
  for (uint32_t lost : s.job->lost_ranks()) EPX_RETURN_IF_ERROR(mask_rank(lost));
  const DeviceError* e = s.error.host();
  // acquire: pairs with record_error's system fence before it publishes the
  // code (epx/device.cuh); the other fields are then visible.
  const uint32_t code = __atomic_load_n(&e->code, __ATOMIC_ACQUIRE);
  if (code != 0) {
    // Reported once: the caller masks the rank (or fixes its input) and the
    // next calls record afresh. The copy below is what gets reported.
    const DeviceError seen = *e;
    __atomic_store_n(&const_cast<DeviceError*>(e)->code, 0u, __ATOMIC_RELEASE);
    return describe_device_error(s, code, seen);
  }
  if (s.rings != nullptr) {
    EPX_RETURN_IF_ERROR(s.rings->kernel_error());
    // Channel c carries posts to rank c % num_ranks. The daemon refuses
    // posts to a rank it knows is lost, and a ring stops at its first
    // refusal; once the rank is masked nothing more goes there, so that
    // refusal is the loss already reported, not a new failure.
    for (uint32_t c = 0; c < s.rings->channels(); ++c) {
      if (s.mask.masked(c % s.shape.num_ranks)) continue;
      EPX_RETURN_IF_ERROR(s.rings->channel_error(c));
    }
  }
  if (s.signals != nullptr) EPX_RETURN_IF_ERROR(s.signals->device_error());
  return Status();
}

Status LowLatencyBuffer::describe_device_error(const State& s, uint32_t code, const DeviceError& err) {
  const DeviceError* e = &err;
  const std::string who = s.who();
  const int local = s.shape.local_experts();
  auto experts_of = [&](uint64_t rank) {
    return "experts " + std::to_string(rank * local) + ".." + std::to_string((rank + 1) * local - 1);
  };
  switch (code) {
    case kernels::kLowLatencyDispatchTimeout:
      return deadline_exceeded(who + ": dispatch gave up on rank " + std::to_string(e->index) + " (" +
                               experts_of(e->index) + ") after " + std::to_string(s.options.timeout.count()) +
                               " ms: its tokens were not received (call " + std::to_string(e->expected) +
                               ", last seen " + std::to_string(e->seen) + ")");
    case kernels::kLowLatencyCombineTimeout:
      return deadline_exceeded(who + ": combine gave up on rank " + std::to_string(e->index) + " (" +
                               experts_of(e->index) + ") after " + std::to_string(s.options.timeout.count()) +
                               " ms: its expert outputs count as zeros (call " + std::to_string(e->expected) +
                               ", last seen " + std::to_string(e->seen) + ")");
    case kernels::kLowLatencyBadExpert:
      return invalid_argument(who + ": topk_idx of token " + std::to_string(e->index) + " names expert " +
                              std::to_string(static_cast<int64_t>(e->seen)) + ", beyond num_experts=" +
                              std::to_string(e->expected) + " (the entry was skipped)");
    case kernels::kLowLatencyPostFailed:
      return unavailable(who + ": posting to rank " + std::to_string(e->index) + " through the daemon failed");
  }
  return internal_error(who + ": device error code " + std::to_string(code));
}

int LowLatencyBuffer::local_experts() const { return state_->shape.local_experts(); }
int LowLatencyBuffer::nvlink_ranks() const { return state_->nvlink_ranks; }
int LowLatencyBuffer::remote_ranks() const { return state_->remote_ranks; }
void* LowLatencyBuffer::nvl_buffer() const { return state_->nvl.get(); }
size_t LowLatencyBuffer::nvl_bytes() const { return state_->layout.nvl_bytes; }
const GpuWindow* LowLatencyBuffer::rdma_window() const { return state_->rdma.get(); }
size_t LowLatencyBuffer::rdma_bytes() const { return state_->rdma != nullptr ? state_->layout.rdma_bytes : 0; }

}  // namespace epx
