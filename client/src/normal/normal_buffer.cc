// NormalBuffer (epx/normal.h): the memory, streams and per-call bookkeeping
// around the normal-mode kernels (kernels/normal_kernels.h).
#include "epx/normal.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "client/src/cuda/cuda_handles.h"
#include "client/src/cuda/rank_mask.h"
#include "client/src/normal/stage_clock.h"
#include "cuda/cuda_status.h"
#include "epx/cuda.h"
#include "kernels/normal_kernels.h"

namespace epx {
namespace {

using cuda_handles::DeviceAllocation;
using cuda_handles::DeviceScope;
using cuda_handles::PinnedHostAllocation;

constexpr int kDefaultSms = 20;

template <typename T>
T* as(const DeviceAllocation& a) {
  return static_cast<T*>(a.get());
}

// Whether work enqueued on `st` is being captured into a CUDA graph (its
// calls are not timed: events recorded in a graph time its replays, not
// the call).
bool capturing(cudaStream_t st) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(st, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone;
}

// Tags the host waits for: unique across buffers of the process, so a
// stale store (a replayed graph's) never matches.
std::atomic<uint64_t> next_host_tag{1};

// P: the ranks of each node, which must be consecutive and as many on
// every node (the kernels address node v's ranks as [v * P, (v + 1) * P)).
Result<int> ranks_per_node_of(const RankTable& table, const std::string& who) {
  const size_t R = table.ranks.size();
  if (R == 0) return invalid_argument(who + ": the job has no ranks");
  size_t P = 1;
  while (P < R && table.ranks[P].node == table.ranks[0].node) ++P;
  std::set<std::string> nodes;
  for (size_t r = 0; r < R; ++r) {
    if (r % P == 0 && !nodes.insert(table.ranks[r].node).second) {
      return failed_precondition(who + ": normal mode needs each node's ranks consecutive; node " +
                                 table.ranks[r].node + " holds ranks apart from each other. Rank table:\n" +
                                 table.to_string());
    }
    const bool same_as_first = table.ranks[r].node == table.ranks[r - r % P].node;
    const bool new_node = r % P != 0 || r == 0 || table.ranks[r].node != table.ranks[r - 1].node;
    if (R % P != 0 || !same_as_first || !new_node) {
      return failed_precondition(who + ": normal mode needs every node to hold the same number of consecutive ranks (" +
                                 std::to_string(P) + " on node " + table.ranks[0].node + "); rank " +
                                 std::to_string(r) + " is on node " + table.ranks[r].node + ". Rank table:\n" +
                                 table.to_string());
    }
  }
  return static_cast<int>(P);
}

}  // namespace

// ---- NormalEvent ----

NormalEvent::~NormalEvent() {
  if (event_ != nullptr) check_cuda_release(cudaEventDestroy(static_cast<cudaEvent_t>(event_)), "cudaEventDestroy");
}

Status NormalEvent::current_stream_wait(void* stream) const {
  return cuda_status(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event_), 0),
                     "NormalEvent::current_stream_wait");
}

Status NormalEvent::synchronize() const {
  return cuda_status(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)), "NormalEvent::synchronize");
}

// ---- NormalHandle ----

struct NormalHandle::Arrays {
  DeviceAllocation rank_prefix_matrix, send_index, is_token_in_rank, num_recv_tokens, send_counts;
  DeviceAllocation node_index, node_counts, relay_counts;  // across nodes only
  kernels::NormalHandleArrays view() const {
    kernels::NormalHandleArrays v;
    v.rank_prefix_matrix = as<int32_t>(rank_prefix_matrix);
    v.send_index = as<int32_t>(send_index);
    v.is_token_in_rank = as<uint8_t>(is_token_in_rank);
    v.num_recv_tokens = as<int32_t>(num_recv_tokens);
    v.send_counts = as<int32_t>(send_counts);
    v.node_index = as<int32_t>(node_index);
    v.node_counts = as<int32_t>(node_counts);
    v.relay_counts = as<int32_t>(relay_counts);
    return v;
  }
};

NormalHandle::~NormalHandle() = default;
const int32_t* NormalHandle::rank_prefix_matrix() const { return as<int32_t>(arrays_->rank_prefix_matrix); }
const int32_t* NormalHandle::send_index() const { return as<int32_t>(arrays_->send_index); }
const bool* NormalHandle::is_token_in_rank() const { return as<bool>(arrays_->is_token_in_rank); }
const int32_t* NormalHandle::device_num_recv_tokens() const { return as<int32_t>(arrays_->num_recv_tokens); }

// ---- NormalBuffer ----

struct NormalBuffer::State {
  Job* job = nullptr;  // the caller's; outlives the buffer
  NormalOptions options;
  kernels::NormalShape shape;
  kernels::NormalLayout layout;

  DeviceAllocation nvl;              // receive space, shared with same-node ranks
  std::unique_ptr<CudaPeers> peers;  // their spaces
  // Across nodes only:
  std::unique_ptr<GpuWindow> rdma;           // messages and partial sums (kernels::NormalRdmaLayout)
  std::unique_ptr<CudaRingGroup> rings;      // channel v: dispatch to node v; nodes + v: combine
  std::unique_ptr<CudaSignals> own_signals;  // when the buffer opened them
  CudaSignals* signals = nullptr;
  DeviceAllocation relayed;                  // [2 * nodes] int32 (kernels::NormalTransport::relayed)
  DeviceAllocation chunk_gates;              // [2][nodes][kNormalChunks] uint64 (NormalTransport::chunk_gates)
  DeviceAllocation chunk_staged;             // [2][nodes][kNormalChunks] int32
  DeviceAllocation kernel_state;
  cuda_handles::RankMask mask;  // ranks the kernels skip
  PinnedHostAllocation host_counts;  // mapped; kernels::NormalHostCounts
  cuda_handles::ErrorRecord error;
  DeviceAllocation combined, combined_weights;  // combine outputs when the caller gives none
  cudaStream_t comm_stream = nullptr;
  cudaStream_t probe_stream = nullptr;  // reads the notify slots while kernels may still run
  std::optional<StageClock> dispatch_clock, combine_clock;  // set_stage_timing(true)

  kernels::NormalTransport transport;

  ~State() {
    if (comm_stream != nullptr) check_cuda_release(cudaStreamDestroy(comm_stream), "cudaStreamDestroy");
    if (probe_stream != nullptr) check_cuda_release(cudaStreamDestroy(probe_stream), "cudaStreamDestroy");
  }
  std::string who() const {
    return "NormalBuffer(job " + job->job_id() + " rank " + std::to_string(job->rank()) + ")";
  }
  const kernels::NormalHostCounts* counts() const {
    return static_cast<const kernels::NormalHostCounts*>(host_counts.get());
  }
};

uint32_t NormalBuffer::signal_words(int nodes) { return nodes > 1 ? 2 * kernels::normal_parity_signals(nodes) : 0; }

Result<std::unique_ptr<NormalBuffer>> NormalBuffer::create(Job& job, const NormalOptions& options) {
  std::unique_ptr<NormalBuffer> buffer(new NormalBuffer());
  buffer->state_ = std::make_unique<State>();
  State& s = *buffer->state_;
  s.job = &job;
  s.options = options;
  s.shape.num_ranks = static_cast<int>(job.world_size());
  s.shape.num_experts = options.num_experts;
  s.shape.hidden = options.hidden;
  s.shape.num_topk = options.num_topk;
  s.shape.max_tokens_per_rank = options.num_max_tokens_per_rank;
  EPX_ASSIGN_OR_RETURN(s.shape.ranks_per_node, ranks_per_node_of(job.table(), s.who()));
  EPX_RETURN_IF_ERROR(kernels::check_normal_shape("NormalBuffer::create", s.shape));
  if (options.timeout.count() <= 0) return invalid_argument("NormalBuffer::create: timeout must be positive");
  EPX_RETURN_IF_ERROR(kernels::normal_layout(s.shape, &s.layout));

  DeviceScope scope(options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  const std::string who = s.who();
  EPX_ASSIGN_OR_RETURN(s.nvl, cuda_handles::allocate_zeroed_device(s.layout.nvl_bytes, who + " receive space (" +
                                                                       std::to_string(s.layout.nvl_bytes >> 20) + " MiB)"));
  EPX_ASSIGN_OR_RETURN(s.peers, CudaPeers::open(job, s.nvl.get(), s.layout.nvl_bytes));
  // The kernels store into exactly the ranks of this node and no others:
  // the peer table must say the same as the rank table, or a store would
  // go to a null or foreign mapping.
  const int P = s.shape.local_ranks(), first = static_cast<int>(job.rank()) / P * P;
  for (int r = 0; r < s.shape.num_ranks; ++r) {
    const bool local = r >= first && r < first + P, mapped = s.peers->pointers()[r] != nullptr;
    if (local != mapped) {
      return failed_precondition(who + ": rank " + std::to_string(r) + (local ? " is on this node but its buffer is not mapped" : " is on another node but its buffer is mapped") +
                                 " (CUDA IPC and the rank table disagree)");
    }
  }
  kernels::NormalTransport& t = s.transport;
  if (s.shape.nodes() > 1) {
    EPX_RETURN_IF_ERROR(open_network(s, job, options));
  }
  EPX_ASSIGN_OR_RETURN(s.kernel_state, cuda_handles::allocate_zeroed_device(sizeof(kernels::NormalState), who + " state"));
  EPX_ASSIGN_OR_RETURN(s.mask, cuda_handles::RankMask::create(s.shape.num_ranks, job.rank(), who));
  EPX_ASSIGN_OR_RETURN(s.error, cuda_handles::new_error_record());
  const size_t count_bytes = kernels::normal_host_counts_bytes(s.shape.local_experts());
  void* host = nullptr;
  EPX_RETURN_IF_ERROR(cuda_status(cudaHostAlloc(&host, count_bytes, cudaHostAllocMapped | cudaHostAllocPortable),
                                  who + ": cudaHostAlloc of the receive counts"));
  s.host_counts = PinnedHostAllocation(host);
  std::memset(host, 0, count_bytes);
  void* host_device = nullptr;
  EPX_RETURN_IF_ERROR(cuda_status(cudaHostGetDevicePointer(&host_device, host, 0), who + ": receive counts"));
  EPX_ASSIGN_OR_RETURN(s.combined, cuda_handles::allocate_zeroed_device(
                                       static_cast<size_t>(s.shape.max_tokens_per_rank) * s.shape.hidden * 2,
                                       who + " combine output"));
  EPX_ASSIGN_OR_RETURN(s.combined_weights, cuda_handles::allocate_zeroed_device(
                                               static_cast<size_t>(s.shape.max_tokens_per_rank) * s.shape.num_topk * 4,
                                               who + " combined weights"));
  EPX_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&s.comm_stream, cudaStreamNonBlocking),
                                  who + ": communication stream"));
  EPX_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&s.probe_stream, cudaStreamNonBlocking),
                                  who + ": probe stream"));

  t.rank = static_cast<int>(job.rank());
  t.peers = s.peers->device();
  t.state = static_cast<kernels::NormalState*>(s.kernel_state.get());
  t.host_counts = static_cast<kernels::NormalHostCounts*>(host_device);
  t.rank_mask = s.mask.device();
  t.error = s.error.device;
  t.timeout_ns = static_cast<uint64_t>(options.timeout.count()) * 1000000ull;
  t.num_sms = kDefaultSms;
  // Every rank's space is zeroed before any rank may write into it.
  EPX_RETURN_IF_ERROR(cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize after zeroing"));
  EPX_RETURN_IF_ERROR(job.barrier());
  return buffer;
}

Status NormalBuffer::open_network(State& s, Job& job, const NormalOptions& options) {
  const std::string who = s.who();
  kernels::NormalRdmaLayout& r = s.transport.rdma_layout;
  EPX_RETURN_IF_ERROR(kernels::normal_rdma_layout(s.shape, &r));
  EPX_ASSIGN_OR_RETURN(s.rdma, GpuWindow::create(job, r.rdma_bytes, options.device));
  // Zeroed by whoever owns the memory: the CPU for a host window. GPU stores
  // into host memory the daemon then writes into would give the GPU's
  // caches a say in what later reads of that memory see.
  if (s.rdma->is_device()) {
    EPX_RETURN_IF_ERROR(cuda_status(cudaMemset(s.rdma->device_ptr(), 0, r.rdma_bytes), who + ": zeroing the rdma space"));
  } else {
    std::memset(s.rdma->host_ptr(), 0, r.rdma_bytes);
  }
  const uint64_t post_timeout_ns = static_cast<uint64_t>(options.timeout.count()) * 1000000ull;
  EPX_ASSIGN_OR_RETURN(s.rings, CudaRingGroup::open(job, 2 * static_cast<uint32_t>(s.shape.nodes()),
                                                    options.ring_capacity, post_timeout_ns));
  if (options.signals != nullptr) {
    s.signals = options.signals;
    if (static_cast<uint64_t>(options.signal_base) + r.signal_count > s.signals->device().count) {
      return invalid_argument(who + ": signals " + std::to_string(options.signal_base) + ".." +
                              std::to_string(options.signal_base + r.signal_count - 1) + " are beyond the " +
                              std::to_string(s.signals->device().count) + " lent");
    }
    // Arrivals are counted from zero: a word a previous user left counting
    // would look like an arrival that never happened.
    for (uint32_t i = 0; i < r.signal_count; ++i) {
      const uint64_t v = s.signals->host().value(options.signal_base + i);
      if (v != 0) {
        return invalid_argument(who + ": lent signal " + std::to_string(options.signal_base + i) + " is " +
                                std::to_string(v) + ", not 0: give the buffer words nothing else has used");
      }
    }
    s.transport.signal_base = options.signal_base;
  } else {
    auto opened = CudaSignals::open(job, r.signal_count);
    if (!opened.ok()) {
      return Status(opened.status().code(),
                    who + ": opening " + std::to_string(r.signal_count) +
                        " signals for arrivals from other nodes (a job's rank has one signal array: lend it through "
                        "NormalOptions::signals if it is already open): " + opened.status().message());
    }
    s.own_signals = std::move(*opened);
    s.signals = s.own_signals.get();
  }
  EPX_ASSIGN_OR_RETURN(s.relayed,
                       cuda_handles::allocate_zeroed_device(2 * sizeof(int32_t) * s.shape.nodes(), who + " relayed"));
  const size_t chunks = 2 * static_cast<size_t>(s.shape.nodes()) * kernels::kNormalChunks;
  EPX_ASSIGN_OR_RETURN(s.chunk_gates,
                       cuda_handles::allocate_zeroed_device(chunks * sizeof(uint64_t), who + " chunk gates"));
  EPX_ASSIGN_OR_RETURN(s.chunk_staged,
                       cuda_handles::allocate_zeroed_device(chunks * sizeof(int32_t), who + " chunk counts"));
  kernels::NormalTransport& t = s.transport;
  t.rdma = s.rdma->device_ptr();
  t.rdma_window = s.rdma->id();
  t.rings = s.rings->device();
  t.signals = s.signals->device();
  t.relayed = as<int32_t>(s.relayed);
  t.chunk_gates = as<uint64_t>(s.chunk_gates);
  t.chunk_staged = as<int32_t>(s.chunk_staged);
  return Status();
}

NormalBuffer::~NormalBuffer() = default;

Result<std::unique_ptr<NormalHandle>> NormalBuffer::new_handle() const {
  const State& s = *state_;
  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  std::unique_ptr<NormalHandle> h(new NormalHandle());
  h->owner_ = this;
  h->arrays_ = std::make_unique<NormalHandle::Arrays>();
  const size_t R = s.shape.num_ranks, T = s.shape.max_tokens_per_rank, N = s.shape.nodes();
  const std::string who = s.who() + " handle";
  EPX_ASSIGN_OR_RETURN(h->arrays_->rank_prefix_matrix, cuda_handles::allocate_zeroed_device(4 * R * R, who));
  // [N][T][P] = T * R entries: the same size as inside one node.
  EPX_ASSIGN_OR_RETURN(h->arrays_->send_index, cuda_handles::allocate_zeroed_device(4 * T * R, who));
  EPX_ASSIGN_OR_RETURN(h->arrays_->send_counts, cuda_handles::allocate_zeroed_device(4 * R, who));
  if (N > 1) {
    EPX_ASSIGN_OR_RETURN(h->arrays_->node_index, cuda_handles::allocate_zeroed_device(4 * T * N, who));
    EPX_ASSIGN_OR_RETURN(h->arrays_->node_counts, cuda_handles::allocate_zeroed_device(4 * N, who));
    EPX_ASSIGN_OR_RETURN(h->arrays_->relay_counts, cuda_handles::allocate_zeroed_device(4 * N, who));
  }
  EPX_ASSIGN_OR_RETURN(h->arrays_->is_token_in_rank, cuda_handles::allocate_zeroed_device(T * R, who));
  EPX_ASSIGN_OR_RETURN(h->arrays_->num_recv_tokens, cuda_handles::allocate_zeroed_device(4, who));
  return h;
}

namespace {

// Runs `enqueue` where NormalStreams says, with DeepEP's stream semantics.
template <typename Enqueue>
Result<std::shared_ptr<NormalEvent>> run_on_streams(cudaStream_t comm, const NormalStreams& streams,
                                                    const std::string& who, Enqueue enqueue,
                                                    std::shared_ptr<NormalEvent> (*new_event)()) {
  cudaStream_t caller = static_cast<cudaStream_t>(streams.stream);
  const bool on_comm = streams.async_finish || streams.previous_event != nullptr;
  if (!on_comm) {
    EPX_RETURN_IF_ERROR(enqueue(caller));
    return std::shared_ptr<NormalEvent>();
  }
  cudaEvent_t before = static_cast<cudaEvent_t>(streams.previous_event);
  std::shared_ptr<NormalEvent> caller_point;
  if (before == nullptr) {
    caller_point = new_event();
    if (caller_point == nullptr) return internal_error(who + ": cudaEventCreate failed");
    before = static_cast<cudaEvent_t>(caller_point->get());
    EPX_RETURN_IF_ERROR(cuda_status(cudaEventRecord(before, caller), who + ": cudaEventRecord on the caller's stream"));
  }
  EPX_RETURN_IF_ERROR(cuda_status(cudaStreamWaitEvent(comm, before, 0), who + ": communication stream wait"));
  EPX_RETURN_IF_ERROR(enqueue(comm));
  std::shared_ptr<NormalEvent> done = new_event();
  if (done == nullptr) return internal_error(who + ": cudaEventCreate failed");
  EPX_RETURN_IF_ERROR(cuda_status(cudaEventRecord(static_cast<cudaEvent_t>(done->get()), comm),
                                  who + ": cudaEventRecord on the communication stream"));
  if (streams.async_finish) return done;
  EPX_RETURN_IF_ERROR(done->current_stream_wait(caller));
  return std::shared_ptr<NormalEvent>();
}

}  // namespace

Result<std::shared_ptr<NormalEvent>> NormalBuffer::get_dispatch_layout(const int64_t* topk_idx, int num_tokens,
                                                                       const NormalLayoutOutputs& out,
                                                                       const NormalStreams& streams) {
  State& s = *state_;
  const std::string who = s.who() + "::get_dispatch_layout";
  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  kernels::NormalLayoutArgs a;
  a.topk_idx = topk_idx;
  a.num_tokens = num_tokens;
  a.tokens_per_rank = out.num_tokens_per_rank;
  a.tokens_per_expert = out.num_tokens_per_expert;
  a.is_token_in_rank = reinterpret_cast<uint8_t*>(out.is_token_in_rank);
  if (out.num_tokens_per_rdma_rank != nullptr) {
    // One node: DeepEP returns None; a caller that asks gets the one count.
    a.ranks_per_node = s.shape.local_ranks();
    a.tokens_per_node = out.num_tokens_per_rdma_rank;
  }
  auto enqueue = [&](cudaStream_t st) -> Status {
    return kernels::launch_normal_layout(s.shape, s.transport, a, st).with_context(who);
  };
  return run_on_streams(s.comm_stream, streams, who, enqueue, &NormalBuffer::new_event);
}

Result<NormalDispatchResult> NormalBuffer::dispatch(const NormalDispatchInput& in, NormalHandle& handle,
                                                    const NormalConfig& config, const NormalStreams& streams) {
  State& s = *state_;
  const std::string who = s.who() + "::dispatch";
  if (handle.owner_ != this || handle.arrays_ == nullptr) {
    return invalid_argument(who + ": the handle was made by another buffer (new_handle() of this one)");
  }
  if (in.cached && !handle.filled()) return invalid_argument(who + ": cached dispatch with a handle no dispatch filled");
  if (in.cached && in.num_tokens != handle.num_tokens()) {
    return invalid_argument(who + ": cached dispatch of " + std::to_string(in.num_tokens) +
                            " tokens with a handle of " + std::to_string(handle.num_tokens()));
  }
  if (!in.cached && in.num_tokens > 0 && in.topk_idx == nullptr) {
    return invalid_argument(who + ": topk_idx is required without a cached handle");
  }
  if (config.num_sms < 0) return invalid_argument(who + ": num_sms=" + std::to_string(config.num_sms) + " is negative");
  kernels::NormalDispatchArgs a;
  a.x = in.x;
  a.payload.fp8 = in.x_scales != nullptr;
  a.payload.num_scales = a.payload.fp8 ? in.num_scales : 0;
  a.x_scales = static_cast<const uint32_t*>(in.x_scales);
  a.scale_token_stride = in.scale_token_stride > 0 ? in.scale_token_stride : in.num_scales;
  a.scale_hidden_stride = in.scale_hidden_stride;
  a.topk_idx = in.topk_idx;
  a.topk_weights = in.topk_weights;
  a.is_token_in_rank = reinterpret_cast<const uint8_t*>(in.is_token_in_rank);
  a.tokens_per_expert = in.num_tokens_per_expert;
  a.num_tokens = in.num_tokens;
  a.expert_alignment = in.expert_alignment;
  a.num_worst_tokens = in.num_worst_tokens;
  a.cached = in.cached;
  a.handle = handle.arrays_->view();
  a.host_tag = next_host_tag.fetch_add(1);
  kernels::NormalTransport t = s.transport;
  if (config.num_sms > 0) t.num_sms = config.num_sms;

  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  auto enqueue = [&](cudaStream_t st) -> Status {
    if (s.dispatch_clock && !capturing(st)) a.stage_events = s.dispatch_clock->arm();
    return kernels::launch_normal_dispatch(s.shape, s.layout, t, a, st).with_context(who);
  };
  EPX_ASSIGN_OR_RETURN(std::shared_ptr<NormalEvent> event,
                       run_on_streams(s.comm_stream, streams, who, enqueue, &NormalBuffer::new_event));

  NormalDispatchResult r;
  uint8_t* space = as<uint8_t>(s.nvl);
  r.recv_x = space + s.layout.recv_x;
  r.recv_x_scales = a.payload.fp8 ? space + s.layout.recv_scales : nullptr;
  r.recv_topk_idx = in.topk_idx != nullptr ? reinterpret_cast<int64_t*>(space + s.layout.recv_topk_idx) : nullptr;
  r.recv_topk_weights = in.topk_idx != nullptr ? reinterpret_cast<float*>(space + s.layout.recv_topk_weights) : nullptr;
  r.recv_src_idx = reinterpret_cast<int32_t*>(space + s.layout.recv_src_idx);
  r.event = std::move(event);
  handle.num_tokens_ = in.num_tokens;
  if (in.cached) {
    r.num_recv_tokens = in.num_worst_tokens > 0 ? -1 : handle.num_recv_tokens_;
    return r;
  }
  if (in.num_worst_tokens > 0) {
    handle.num_recv_tokens_ = -1;
    return r;
  }
  // The counts reach host memory while the rows are still moving: wait for
  // them, not for the stream.
  // Across nodes a count can wait for a relay, then for a local rank: two timeouts.
  const auto waits = s.shape.nodes() > 1 ? 2 : 1;
  const auto deadline = std::chrono::steady_clock::now() + waits * s.options.timeout + std::chrono::seconds(5);
  const kernels::NormalHostCounts* counts = s.counts();
  for (int spins = 0;; ++spins) {
    if (__atomic_load_n(&counts->seq, __ATOMIC_ACQUIRE) == a.host_tag) break;
    if (__atomic_load_n(&s.error.host()->code, __ATOMIC_ACQUIRE) != 0) break;  // a kernel gave up: say whom
    if (std::chrono::steady_clock::now() > deadline) {
      return deadline_exceeded(who + ": waited " + std::to_string(waits * s.options.timeout.count() + 5000) +
                               " ms for the receive counts and the kernels reported nothing: is the stream blocked "
                               "behind other work, or did a peer never call dispatch?");
    }
    if (spins > 1000) std::this_thread::yield();
  }
  EPX_RETURN_IF_ERROR(check());
  handle.num_recv_tokens_ = counts->num_recv_tokens;
  r.num_recv_tokens = counts->num_recv_tokens;
  r.num_recv_tokens_per_expert_list.assign(counts->expert_counts, counts->expert_counts + s.shape.local_experts());
  return r;
}

Result<NormalCombineResult> NormalBuffer::combine(const NormalCombineInput& in, const NormalHandle& handle,
                                                  const NormalConfig& config, const NormalStreams& streams) {
  State& s = *state_;
  const std::string who = s.who() + "::combine";
  if (handle.owner_ != this || handle.arrays_ == nullptr || !handle.filled()) {
    return invalid_argument(who + ": the handle is not one a dispatch of this buffer filled");
  }
  if (config.num_sms < 0) return invalid_argument(who + ": num_sms=" + std::to_string(config.num_sms) + " is negative");
  if (in.x == nullptr && handle.num_recv_tokens() != 0) return invalid_argument(who + ": null x");
  kernels::NormalCombineArgs a;
  a.x = static_cast<const uint16_t*>(in.x);
  a.topk_weights = in.topk_weights;
  a.bias0 = static_cast<const uint16_t*>(in.bias0);
  a.bias1 = static_cast<const uint16_t*>(in.bias1);
  a.num_tokens = handle.num_tokens();
  a.handle = handle.arrays_->view();
  a.out = static_cast<uint16_t*>(in.out != nullptr ? in.out : s.combined.get());
  a.out_topk_weights =
      in.topk_weights == nullptr ? nullptr : (in.out_topk_weights != nullptr ? in.out_topk_weights : as<float>(s.combined_weights));
  kernels::NormalTransport t = s.transport;
  if (config.num_sms > 0) t.num_sms = config.num_sms;
  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  auto enqueue = [&](cudaStream_t st) -> Status {
    if (s.combine_clock && !capturing(st)) a.stage_events = s.combine_clock->arm();
    return kernels::launch_normal_combine(s.shape, s.layout, t, a, st).with_context(who);
  };
  EPX_ASSIGN_OR_RETURN(std::shared_ptr<NormalEvent> event,
                       run_on_streams(s.comm_stream, streams, who, enqueue, &NormalBuffer::new_event));
  NormalCombineResult r;
  r.combined_x = a.out;
  r.combined_topk_weights = a.out_topk_weights;
  r.event = std::move(event);
  return r;
}

Status NormalBuffer::mask_rank(uint32_t rank) {
  State& s = *state_;
  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  return s.mask.mask(rank, s.who() + "::mask_rank");
}

Status NormalBuffer::check() {
  State& s = *state_;
  for (uint32_t lost : s.job->lost_ranks()) EPX_RETURN_IF_ERROR(mask_rank(lost));
  const DeviceError* e = s.error.host();
  // acquire: pairs with record_error's system fence before it publishes the code.
  const uint32_t code = __atomic_load_n(&e->code, __ATOMIC_ACQUIRE);
  if (code == 0) return network_check(s);
  const DeviceError seen = *e;
  __atomic_store_n(&const_cast<DeviceError*>(e)->code, 0u, __ATOMIC_RELEASE);
  const std::string who = s.who();
  const std::string rank = std::to_string(seen.index);
  const std::string ms = std::to_string(s.options.timeout.count());
  switch (code) {
    case kernels::kNormalNotifyTimeout:
      return deadline_exceeded(who + ": " + missing_ranks(s, seen.expected, static_cast<uint32_t>(seen.index)) +
                               " did not report send counts within " + ms +
                               " ms (did they call dispatch?); their tokens are absent from this call");
    case kernels::kNormalDispatchTimeout:
      return deadline_exceeded(who + ": rank " + rank + "'s dispatched rows did not complete within " + ms + " ms");
    case kernels::kNormalCombineTimeout:
      return deadline_exceeded(who + ": rank " + rank + " did not send its combine rows within " + ms +
                               " ms; they count as zeros");
    case kernels::kNormalBadExpert:
      return invalid_argument(who + ": topk_idx of token " + rank + " names expert " +
                              std::to_string(static_cast<int64_t>(seen.seen)) + ", beyond num_experts=" +
                              std::to_string(seen.expected) + " (the entry was skipped)");
    case kernels::kNormalRelayTimeout:
      return deadline_exceeded(who + ": rank " + rank + " (on another node) did not send its dispatch message within " +
                               ms + " ms; the tokens it relays are absent from this call");
    case kernels::kNormalPartialTimeout:
      return deadline_exceeded(who + ": rank " + rank + " (on another node) did not send its combine sums within " + ms +
                               " ms; its node's terms count as zeros");
    case kernels::kNormalStaleData:
      return internal_error(who + ": data from rank " + rank + " (on another node) still carried tag " +
                            std::to_string(seen.seen) + " instead of this call's " + std::to_string(seen.expected) +
                            " " + ms + " ms after its signal: the rows it carries were used as they were");
    case kernels::kNormalBadCount:
      return internal_error(who + ": a count for rank " + rank + " was " + std::to_string(seen.seen) +
                            ", beyond its bound " + std::to_string(seen.expected) + " (the rows it named were skipped)");
    case kernels::kNormalPostFailed:
      return Status(StatusCode::kUnavailable,
                    who + ": the ring refused a " + std::to_string(seen.expected) + "-byte write to rank " + rank +
                        " (or stayed full for " + ms + " ms): " + network_check(s).to_string());
    case kernels::kNormalWorstExceeded:
      return Status(StatusCode::kOutOfRange, who + ": " + std::to_string(seen.seen) + " rows arrived, more than num_worst_tokens=" +
                          std::to_string(seen.expected) + " (the rows past it are not in the outputs)");
  }
  return internal_error(who + ": device error code " + std::to_string(code));
}

Status NormalBuffer::network_check(const State& s) {
  if (s.rings != nullptr) {
    EPX_RETURN_IF_ERROR(s.rings->kernel_error());
    // Channel c carries posts to node c % nodes. The daemon refuses posts to
    // a lost rank and the ring stops at that refusal: once the rank is
    // masked, that is the loss already reported, not a new failure.
    const int P = s.shape.local_ranks(), li = s.job->rank() % P;
    for (uint32_t c = 0; c < s.rings->channels(); ++c) {
      if (s.mask.masked(static_cast<int>(c % s.shape.nodes()) * P + li)) continue;
      EPX_RETURN_IF_ERROR(s.rings->channel_error(c));
    }
  }
  if (s.signals != nullptr) EPX_RETURN_IF_ERROR(s.signals->device_error());
  return Status();
}

std::string NormalBuffer::missing_ranks(const State& s, uint64_t call, uint32_t first) {
  // Every rank whose notify slot still holds an older call: read on a
  // stream of its own, since the dispatch kernel may still be running.
  const int P = s.shape.local_ranks(), first_local = static_cast<int>(s.job->rank()) / P * P;
  std::vector<uint64_t> seqs(P, 0);
  const uint8_t* space = static_cast<const uint8_t*>(s.nvl.get());
  bool read = true;
  for (int i = 0; i < P && read; ++i) {
    read = cudaMemcpyAsync(&seqs[i], space + s.layout.notify + i * s.layout.notify_slot_bytes + kernels::kNotifySeq,
                           sizeof(uint64_t), cudaMemcpyDeviceToHost, s.probe_stream) == cudaSuccess;
  }
  read = read && cudaStreamSynchronize(s.probe_stream) == cudaSuccess;
  std::string names;
  for (int i = 0; i < P && read; ++i) {
    if (seqs[i] < call && !s.mask.masked(first_local + i)) names += (names.empty() ? "" : ", ") + std::to_string(first_local + i);
  }
  if (!read || names.empty()) return "rank " + std::to_string(first);  // the slots moved on since: the one recorded
  return (names.find(',') == std::string::npos ? "rank " : "ranks ") + names;
}

int NormalBuffer::num_ranks() const { return state_->shape.num_ranks; }
int NormalBuffer::local_experts() const { return state_->shape.local_experts(); }
int NormalBuffer::ranks_per_node() const { return state_->shape.local_ranks(); }
const GpuWindow* NormalBuffer::rdma_window() const { return state_->rdma.get(); }
size_t NormalBuffer::nvl_bytes() const { return state_->layout.nvl_bytes; }
size_t NormalBuffer::rdma_bytes() const {
  return state_->rdma != nullptr ? state_->transport.rdma_layout.rdma_bytes : 0;
}
void* NormalBuffer::nvl_buffer() const { return state_->nvl.get(); }

Status NormalBuffer::set_stage_timing(bool on) {
  State& s = *state_;
  if (!on) {
    s.dispatch_clock.reset();
    s.combine_clock.reset();
    return Status();
  }
  if (s.dispatch_clock) return Status();
  DeviceScope scope(s.options.device);
  EPX_RETURN_IF_ERROR(scope.status());
  EPX_ASSIGN_OR_RETURN(StageClock d, StageClock::create(kernels::normal_dispatch_kernels(s.shape.nodes()), s.who()));
  EPX_ASSIGN_OR_RETURN(StageClock c, StageClock::create(kernels::normal_combine_kernels(s.shape.nodes()), s.who()));
  s.dispatch_clock = std::move(d);
  s.combine_clock = std::move(c);
  return Status();
}

Result<std::vector<NormalStageTime>> NormalBuffer::last_dispatch_stages() const {
  const State& s = *state_;
  if (!s.dispatch_clock) return failed_precondition(s.who() + ": stage timing is off (set_stage_timing(true))");
  return s.dispatch_clock->times(s.who() + "::last_dispatch_stages");
}

Result<std::vector<NormalStageTime>> NormalBuffer::last_combine_stages() const {
  const State& s = *state_;
  if (!s.combine_clock) return failed_precondition(s.who() + ": stage timing is off (set_stage_timing(true))");
  return s.combine_clock->times(s.who() + "::last_combine_stages");
}

std::shared_ptr<NormalEvent> NormalBuffer::new_event() {
  cudaEvent_t e = nullptr;
  if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) return nullptr;
  std::shared_ptr<NormalEvent> event(new NormalEvent());
  event->event_ = e;
  return event;
}

}  // namespace epx
