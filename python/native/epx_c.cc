// libepx_c (epx_c.h): the C ABI over the client SDK. Each entry point runs
// its body in `guarded`, which turns an epx::Status into a code plus the
// thread's last-error message, and any C++ exception into INTERNAL. Buffers
// spanning nodes share their job's one signal array (lend_signals,
// signal_words.h).
#include "python/native/epx_c.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "epx/client.h"
#include "epx/cuda.h"
#include "epx/job.h"
#include "epx/low_latency.h"
#include "epx/normal.h"
#include "epx/status.h"
#include "kernels/low_latency_kernels.h"
#include "kernels/low_latency_memory.h"
#include "kernels/normal_format.h"
#include "python/native/signal_words.h"

struct epx_client {
  std::unique_ptr<epx::Client> client;
};

// The job's one signal array (signal_words.h), opened by its first buffer
// spanning nodes; declared after `job`, so it is closed first.
struct epx_job {
  epx::Job job;
  std::mutex signals_mutex;  // ctypes releases the GIL: two threads may create buffers at once
  std::shared_ptr<epx::CudaSignals> signals;
  std::unique_ptr<epx::c_abi::SignalWords> words;
};

// A buffer holds the job's signal array (when lent) until it is gone: the
// buffer, declared last, is destroyed first.
struct epx_ll_buffer {
  std::shared_ptr<epx::CudaSignals> signals;
  std::unique_ptr<epx::LowLatencyBuffer> buffer;
};

struct epx_normal_buffer {
  std::shared_ptr<epx::CudaSignals> signals;
  std::unique_ptr<epx::NormalBuffer> buffer;
};

struct epx_normal_handle {
  std::unique_ptr<epx::NormalHandle> handle;
};

struct epx_ll_hook {
  std::function<epx::Status()> run;
  bool ran = false;
};

namespace {

static_assert(2 * epx::kernels::normal_parity_signals(1) == epx::c_abi::kLargestWordsPerRank,
              "signal_words.h sizes the array for a normal-mode buffer's words per node");

thread_local std::string last_error;

int record(const epx::Status& status) {
  if (status.ok()) return EPX_OK;
  last_error = status.to_string();
  return static_cast<int>(status.code());
}

// Runs `body` (returning epx::Status); no exception leaves.
template <typename Body>
int guarded(const char* call, Body&& body) {
  try {
    return record(body());
  } catch (const std::bad_alloc&) {
    return record(epx::resource_exhausted(std::string(call) + ": out of host memory"));
  } catch (const std::exception& e) {
    return record(epx::internal_error(std::string(call) + ": " + e.what()));
  } catch (...) {
    return record(epx::internal_error(std::string(call) + ": unknown C++ exception"));
  }
}

epx::Status require(bool ok, const char* call, const char* what) {
  if (ok) return epx::Status();
  return epx::invalid_argument(std::string(call) + ": " + what);
}

epx::Status copy_out(const std::string& value, char* buffer, size_t length, const char* what) {
  if (buffer == nullptr || value.size() + 1 > length) {
    return epx::Status(epx::StatusCode::kOutOfRange, std::string("epx_client_daemon_info: ") + what + " needs " +
                                                         std::to_string(value.size() + 1) + " bytes, " +
                                                         std::to_string(length) + " given");
  }
  std::memcpy(buffer, value.c_str(), value.size() + 1);
  return epx::Status();
}

void copy_ranks(const std::vector<uint32_t>& ranks, uint32_t* out, size_t capacity, size_t* count) {
  *count = ranks.size();
  if (out != nullptr) std::copy_n(ranks.begin(), std::min(capacity, ranks.size()), out);
}

epx_ll_handle to_c(const epx::LowLatencyHandle& h) {
  return epx_ll_handle{h.half, h.num_tokens, h.src_info, h.layout_range, h.recv_count};
}

epx::LowLatencyHandle from_c(const epx_ll_handle& h) {
  epx::LowLatencyHandle out;
  out.half = h.half;
  out.num_tokens = h.num_tokens;
  out.src_info = h.src_info;
  out.layout_range = h.layout_range;
  out.recv_count = h.recv_count;
  return out;
}

epx_ll_hook* make_hook(std::function<epx::Status()> run) {
  if (!run) return nullptr;
  auto* hook = new epx_ll_hook();
  hook->run = std::move(run);
  return hook;
}

// Rank r's node: ranks of the same node name and daemon (RankTable's
// same_node_ranks), numbered by their first rank.
std::vector<uint32_t> node_of_rank(const epx::RankTable& table) {
  std::vector<uint32_t> out(table.ranks.size(), 0);
  std::map<std::pair<std::string, std::string>, uint32_t> index;
  for (size_t r = 0; r < table.ranks.size(); ++r) {
    const auto key = std::make_pair(table.ranks[r].node, table.ranks[r].daemon_address);
    out[r] = index.emplace(key, static_cast<uint32_t>(index.size())).first->second;
  }
  return out;
}

uint32_t node_count(const epx::RankTable& table) {
  const std::vector<uint32_t> nodes = node_of_rank(table);
  return nodes.empty() ? 0 : *std::max_element(nodes.begin(), nodes.end()) + 1;
}

// Makes `device` current for its lifetime (opening signals registers host
// memory in the current device's context).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    const cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      status_ = epx::failed_precondition("cudaSetDevice(" + std::to_string(device) + "): " + cudaGetErrorName(e));
    }
  }
  ~DeviceScope() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  const epx::Status& status() const { return status_; }

 private:
  int previous_ = -1;
  epx::Status status_;
};

struct LentSignals {
  std::shared_ptr<epx::CudaSignals> signals;  // null: the buffer needs none
  uint32_t base = 0;
};

// `need` fresh words of the job's signal array for a buffer spanning nodes
// (signal_words.h), opening the array on first use. `who` names the call.
epx::Status lend_signals(epx_job& job, uint32_t need, int device, const std::string& who, LentSignals* out) {
  std::lock_guard<std::mutex> lock(job.signals_mutex);
  if (job.signals == nullptr) {
    DeviceScope scope(device);
    EPX_RETURN_IF_ERROR(scope.status().with_context(who));
    uint32_t words = epx::c_abi::signal_array_words(job.job.world_size(), need);
    for (;;) {
      auto opened = epx::CudaSignals::open(job.job, words);
      if (opened.ok()) {
        job.signals = std::shared_ptr<epx::CudaSignals>(std::move(opened).value());
        job.words = std::make_unique<epx::c_abi::SignalWords>(words);
        break;
      }
      const uint32_t fewer = epx::c_abi::smaller_signal_array(words, need);
      // The daemon refuses a count beyond its max_signals as INVALID_ARGUMENT.
      if (opened.status().code() != epx::StatusCode::kInvalidArgument || fewer == 0) {
        return opened.status().with_context(who + ": opening the job's signal array of " + std::to_string(words) +
                                            " words (one per rank and job, shared by its buffers spanning nodes)");
      }
      words = fewer;
    }
  }
  EPX_ASSIGN_OR_RETURN(out->base, job.words->take(need, who));
  out->signals = job.signals;
  return epx::Status();
}

// A buffer's region (epx_region): its nvl space, or its rdma window
// (null when the job has no rank on another node). `call` names the entry point.
epx::Status region_of(const char* call, int kind, void* nvl, size_t nvl_bytes, const epx::GpuWindow* window,
                      size_t rdma_bytes, epx_region* out) {
  EPX_RETURN_IF_ERROR(require(out != nullptr, call, "out is NULL"));
  *out = epx_region{nullptr, 0, 0};
  switch (kind) {
    case EPX_REGION_NVL: *out = epx_region{nvl, nvl_bytes, 1}; return epx::Status();
    case EPX_REGION_RDMA:
      if (window == nullptr) {
        return epx::failed_precondition(std::string(call) +
                                        ": the buffer has no rdma space: every rank it reaches is on this node "
                                        "(NVLink), so nothing comes through the network; its memory is "
                                        "EPX_REGION_NVL");
      }
      *out = epx_region{window->device_ptr(), rdma_bytes, window->is_device() ? 1 : 0};
      return epx::Status();
    default:
      return epx::invalid_argument(std::string(call) + ": kind " + std::to_string(kind) +
                                   " is neither EPX_REGION_NVL (0) nor EPX_REGION_RDMA (1)");
  }
}

}  // namespace

extern "C" {

int epx_abi_version(void) { return EPX_C_ABI_VERSION; }

const char* epx_last_error(void) { return last_error.c_str(); }

int epx_client_connect(const char* socket_path, const char* name, int rpc_timeout_ms, epx_client** out) {
  return guarded("epx_client_connect", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(out != nullptr, "epx_client_connect", "out is NULL"));
    *out = nullptr;
    EPX_RETURN_IF_ERROR(
        require(socket_path != nullptr && *socket_path != 0, "epx_client_connect", "socket_path is empty"));
    epx::ClientOptions options;
    if (name != nullptr) options.name = name;
    if (rpc_timeout_ms > 0) options.rpc_timeout = std::chrono::milliseconds(rpc_timeout_ms);
    auto client = epx::Client::connect(socket_path, options);
    if (!client.ok()) return client.status();
    *out = new epx_client{std::move(client).value()};
    return epx::Status();
  });
}

void epx_client_destroy(epx_client* client) {
  try {
    delete client;
  } catch (...) {
  }
}

int epx_client_daemon_info(epx_client* client, char* node, size_t node_len, char* peer_address,
                           size_t peer_address_len) {
  return guarded("epx_client_daemon_info", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(client != nullptr, "epx_client_daemon_info", "client is NULL"));
    EPX_ASSIGN_OR_RETURN(epx::DaemonInfo info, client->client->status());
    EPX_RETURN_IF_ERROR(copy_out(info.node, node, node_len, "node"));
    return copy_out(info.peer_address, peer_address, peer_address_len, "peer_address");
  });
}

int epx_gpu_pci_address(int device, char* out, size_t len) {
  return guarded("epx_gpu_pci_address", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(out != nullptr, "epx_gpu_pci_address", "out is NULL"));
    EPX_ASSIGN_OR_RETURN(std::string address, epx::gpu_pci_address(device));
    return copy_out(address, out, len, "gpu_pci_address");
  });
}

int epx_client_join(epx_client* client, const char* job_id, uint32_t world_size, uint32_t rank, uint32_t local_rank,
                    const char* coordinator, int timeout_ms, const char* gpu_pci_address, epx_job** out) {
  return guarded("epx_client_join", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(out != nullptr, "epx_client_join", "out is NULL"));
    *out = nullptr;
    EPX_RETURN_IF_ERROR(require(client != nullptr, "epx_client_join", "client is NULL"));
    EPX_RETURN_IF_ERROR(require(job_id != nullptr && *job_id != 0, "epx_client_join", "job_id is empty"));
    epx::JoinOptions options;
    options.job_id = job_id;
    options.world_size = world_size;
    options.rank = rank;
    options.local_rank = local_rank;
    if (coordinator != nullptr) options.coordinator = coordinator;
    if (gpu_pci_address != nullptr) options.gpu_pci_address = gpu_pci_address;
    if (timeout_ms > 0) options.timeout = std::chrono::milliseconds(timeout_ms);
    auto job = client->client->join(options);
    if (!job.ok()) return job.status();
    *out = new epx_job{std::move(job).value()};
    return epx::Status();
  });
}

void epx_job_destroy(epx_job* job) {
  try {
    delete job;
  } catch (...) {
  }
}

int epx_job_barrier(epx_job* job, int timeout_ms) {
  return guarded("epx_job_barrier", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(job != nullptr, "epx_job_barrier", "job is NULL"));
    return job->job.barrier(std::chrono::milliseconds(timeout_ms > 0 ? timeout_ms : 60000));
  });
}

int epx_job_nodes(epx_job* job, uint32_t* node_of_rank_out, size_t capacity, size_t* count) {
  return guarded("epx_job_nodes", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(job != nullptr && count != nullptr, "epx_job_nodes", "job or count is NULL"));
    copy_ranks(node_of_rank(job->job.table()), node_of_rank_out, capacity, count);
    return epx::Status();
  });
}

int epx_job_lost_ranks(epx_job* job, uint32_t* ranks, size_t capacity, size_t* count) {
  return guarded("epx_job_lost_ranks", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(job != nullptr && count != nullptr, "epx_job_lost_ranks", "job or count is NULL"));
    copy_ranks(job->job.lost_ranks(), ranks, capacity, count);
    return epx::Status();
  });
}

int epx_ll_size_hint(int num_max_dispatch_tokens_per_rank, int hidden, int num_ranks, int num_experts,
                     uint64_t* bytes) {
  return guarded("epx_ll_size_hint", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(bytes != nullptr, "epx_ll_size_hint", "bytes is NULL"));
    epx::kernels::LowLatencyShape shape;
    shape.num_ranks = num_ranks;
    shape.num_experts = num_experts;
    shape.hidden = hidden;
    shape.max_tokens_per_rank = num_max_dispatch_tokens_per_rank;
    shape.num_topk = epx::kernels::ll::kMaxTopk;
    epx::kernels::LowLatencyLayout layout;
    EPX_RETURN_IF_ERROR(epx::kernels::low_latency_layout(shape, &layout));
    *bytes = layout.rdma_bytes;
    return epx::Status();
  });
}

int epx_ll_create(epx_job* job, const epx_ll_options* options, epx_ll_buffer** out) {
  return guarded("epx_ll_create", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(out != nullptr, "epx_ll_create", "out is NULL"));
    *out = nullptr;
    EPX_RETURN_IF_ERROR(require(job != nullptr && options != nullptr, "epx_ll_create", "job or options is NULL"));
    epx::LowLatencyOptions o;
    o.num_max_dispatch_tokens_per_rank = options->num_max_dispatch_tokens_per_rank;
    o.hidden = options->hidden;
    o.num_experts = options->num_experts;
    o.num_topk = options->num_topk;
    o.device = options->device;
    if (options->timeout_ms > 0) o.timeout = std::chrono::milliseconds(options->timeout_ms);
    // Across nodes: words of the job's signal array. A shape the layout
    // refuses gets none; create() then says what is wrong with it.
    LentSignals lent;
    epx::kernels::LowLatencyShape shape;
    shape.num_ranks = static_cast<int>(job->job.world_size());
    shape.num_experts = o.num_experts;
    shape.hidden = o.hidden;
    shape.max_tokens_per_rank = o.num_max_dispatch_tokens_per_rank;
    shape.num_topk = o.num_topk;
    epx::kernels::LowLatencyLayout layout;
    if (node_count(job->job.table()) > 1 && epx::kernels::low_latency_layout(shape, &layout).ok()) {
      EPX_RETURN_IF_ERROR(lend_signals(*job, layout.signal_count, o.device, "epx_ll_create", &lent));
      o.signals = lent.signals.get();
      o.signal_base = lent.base;
    }
    EPX_ASSIGN_OR_RETURN(auto buffer, epx::LowLatencyBuffer::create(job->job, o));
    *out = new epx_ll_buffer{std::move(lent.signals), std::move(buffer)};
    return epx::Status();
  });
}

void epx_ll_destroy(epx_ll_buffer* buffer) {
  try {
    delete buffer;
  } catch (...) {
  }
}

int epx_ll_local_experts(epx_ll_buffer* buffer, int* out) {
  return guarded("epx_ll_local_experts", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr && out != nullptr, "epx_ll_local_experts", "NULL argument"));
    *out = buffer->buffer->local_experts();
    return epx::Status();
  });
}

int epx_ll_dispatch(epx_ll_buffer* buffer, const void* x, const int64_t* topk_idx, int num_tokens, int use_fp8,
                    int round_scale, int use_ue8m0, int return_recv_hook, int32_t* cumulative_recv_stats, void* stream,
                    epx_ll_dispatch_out* out, epx_ll_hook** hook) {
  return guarded("epx_ll_dispatch", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr && out != nullptr && hook != nullptr, "epx_ll_dispatch",
                                "buffer, out or hook is NULL"));
    *hook = nullptr;
    epx::LowLatencyDispatchFlags flags;
    flags.use_fp8 = use_fp8 != 0;
    flags.round_scale = round_scale != 0;
    flags.use_ue8m0 = use_ue8m0 != 0;
    flags.return_recv_hook = return_recv_hook != 0;
    flags.cumulative_local_expert_recv_stats = cumulative_recv_stats;
    EPX_ASSIGN_OR_RETURN(auto result, buffer->buffer->low_latency_dispatch(x, topk_idx, num_tokens, flags, stream));
    out->recv_x = result.recv_x;
    out->recv_scales = result.recv_scales;
    out->recv_count = result.recv_count;
    out->handle = to_c(result.handle);
    *hook = make_hook(std::move(result.hook));
    return epx::Status();
  });
}

int epx_ll_combine(epx_ll_buffer* buffer, const void* x, const int64_t* topk_idx, const float* topk_weights,
                   const epx_ll_handle* handle, int zero_copy, int return_recv_hook, void* out_x, void* stream,
                   void** combined_x, epx_ll_hook** hook) {
  return guarded("epx_ll_combine", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr && handle != nullptr && combined_x != nullptr && hook != nullptr,
                                "epx_ll_combine", "buffer, handle, combined_x or hook is NULL"));
    *hook = nullptr;
    epx::LowLatencyCombineFlags flags;
    flags.zero_copy = zero_copy != 0;
    flags.return_recv_hook = return_recv_hook != 0;
    flags.out = out_x;
    EPX_ASSIGN_OR_RETURN(
        auto result, buffer->buffer->low_latency_combine(x, topk_idx, topk_weights, from_c(*handle), flags, stream));
    *combined_x = result.combined_x;
    *hook = make_hook(std::move(result.hook));
    return epx::Status();
  });
}

int epx_ll_next_combine_buffer(epx_ll_buffer* buffer, const epx_ll_handle* handle, void** out) {
  return guarded("epx_ll_next_combine_buffer", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr && handle != nullptr && out != nullptr, "epx_ll_next_combine_buffer",
                                "NULL argument"));
    EPX_ASSIGN_OR_RETURN(*out, buffer->buffer->get_next_low_latency_combine_buffer(from_c(*handle)));
    return epx::Status();
  });
}

int epx_ll_clean(epx_ll_buffer* buffer) {
  return guarded("epx_ll_clean", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr, "epx_ll_clean", "buffer is NULL"));
    return buffer->buffer->clean_low_latency_buffer();
  });
}

int epx_ll_check(epx_ll_buffer* buffer) {
  return guarded("epx_ll_check", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr, "epx_ll_check", "buffer is NULL"));
    return buffer->buffer->check();
  });
}

int epx_ll_region(epx_ll_buffer* buffer, int kind, epx_region* out) {
  return guarded("epx_ll_region", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr, "epx_ll_region", "buffer is NULL"));
    const epx::LowLatencyBuffer& b = *buffer->buffer;
    return region_of("epx_ll_region", kind, b.nvl_buffer(), b.nvl_bytes(), b.rdma_window(), b.rdma_bytes(), out);
  });
}

int epx_ll_mask_rank(epx_ll_buffer* buffer, uint32_t rank) {
  return guarded("epx_ll_mask_rank", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr, "epx_ll_mask_rank", "buffer is NULL"));
    return buffer->buffer->mask_rank(rank);
  });
}

int epx_ll_masked_ranks(epx_ll_buffer* buffer, uint32_t* ranks, size_t capacity, size_t* count) {
  return guarded("epx_ll_masked_ranks", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr && count != nullptr, "epx_ll_masked_ranks", "NULL argument"));
    copy_ranks(buffer->buffer->masked_ranks(), ranks, capacity, count);
    return epx::Status();
  });
}

int epx_ll_hook_run(epx_ll_hook* hook) {
  return guarded("epx_ll_hook_run", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(hook != nullptr, "epx_ll_hook_run", "hook is NULL"));
    if (hook->ran) return epx::failed_precondition("epx_ll_hook_run: this receive hook already ran");
    hook->ran = true;
    return hook->run();
  });
}

void epx_ll_hook_destroy(epx_ll_hook* hook) {
  try {
    delete hook;
  } catch (...) {
  }
}

}  // extern "C"

// ---- Normal-mode buffer ----

int epx_normal_size(int num_max_tokens_per_rank, int hidden, int num_ranks, int num_experts, int num_topk,
                    uint64_t* bytes) {
  return guarded("epx_normal_size", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(bytes != nullptr, "epx_normal_size", "bytes is NULL"));
    epx::kernels::NormalShape s;
    s.num_ranks = num_ranks;
    s.num_experts = num_experts;
    s.hidden = hidden;
    s.num_topk = num_topk;
    s.max_tokens_per_rank = num_max_tokens_per_rank;
    epx::kernels::NormalLayout l;
    EPX_RETURN_IF_ERROR(epx::kernels::normal_layout(s, &l));
    *bytes = l.nvl_bytes;
    return epx::Status();
  });
}

int epx_normal_create(epx_job* job, const epx_normal_options* options, epx_normal_buffer** out) {
  return guarded("epx_normal_create", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(out != nullptr, "epx_normal_create", "out is NULL"));
    *out = nullptr;
    EPX_RETURN_IF_ERROR(require(job != nullptr && options != nullptr, "epx_normal_create", "job or options is NULL"));
    epx::NormalOptions o;
    o.num_max_tokens_per_rank = options->num_max_tokens_per_rank;
    o.hidden = options->hidden;
    o.num_experts = options->num_experts;
    o.num_topk = options->num_topk;
    o.device = options->device;
    if (options->timeout_ms > 0) o.timeout = std::chrono::milliseconds(options->timeout_ms);
    // Across nodes: words of the job's signal array. Nodes of unequal size
    // or a shape the layout refuses get none; create() then says what is wrong.
    LentSignals lent;
    const uint32_t nodes = node_count(job->job.table());
    if (nodes > 1 && job->job.world_size() % nodes == 0) {
      epx::kernels::NormalShape shape;
      shape.num_ranks = static_cast<int>(job->job.world_size());
      shape.num_experts = o.num_experts;
      shape.hidden = o.hidden;
      shape.num_topk = o.num_topk;
      shape.max_tokens_per_rank = o.num_max_tokens_per_rank;
      shape.ranks_per_node = static_cast<int>(job->job.world_size() / nodes);
      epx::kernels::NormalRdmaLayout layout;
      if (epx::kernels::normal_rdma_layout(shape, &layout).ok()) {
        EPX_RETURN_IF_ERROR(lend_signals(*job, layout.signal_count, o.device, "epx_normal_create", &lent));
        o.signals = lent.signals.get();
        o.signal_base = lent.base;
      }
    }
    EPX_ASSIGN_OR_RETURN(auto buffer, epx::NormalBuffer::create(job->job, o));
    *out = new epx_normal_buffer{std::move(lent.signals), std::move(buffer)};
    return epx::Status();
  });
}

void epx_normal_destroy(epx_normal_buffer* buffer) {
  try {
    delete buffer;
  } catch (...) {
  }
}

int epx_normal_new_handle(epx_normal_buffer* buffer, epx_normal_handle** out) {
  return guarded("epx_normal_new_handle", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr && out != nullptr, "epx_normal_new_handle", "NULL argument"));
    *out = nullptr;
    EPX_ASSIGN_OR_RETURN(auto handle, buffer->buffer->new_handle());
    *out = new epx_normal_handle{std::move(handle)};
    return epx::Status();
  });
}

void epx_normal_handle_destroy(epx_normal_handle* handle) {
  try {
    delete handle;
  } catch (...) {
  }
}

int epx_normal_handle_get(const epx_normal_handle* handle, epx_normal_handle_info* out) {
  return guarded("epx_normal_handle_get", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(handle != nullptr && out != nullptr, "epx_normal_handle_get", "NULL argument"));
    const epx::NormalHandle& h = *handle->handle;
    out->num_tokens = h.num_tokens();
    out->num_recv_tokens = h.num_recv_tokens();
    out->rank_prefix_matrix = h.rank_prefix_matrix();
    out->send_index = h.send_index();
    out->is_token_in_rank = h.is_token_in_rank();
    out->device_num_recv_tokens = h.device_num_recv_tokens();
    return epx::Status();
  });
}

int epx_normal_layout(epx_normal_buffer* buffer, const int64_t* topk_idx, int num_tokens, int32_t* num_tokens_per_rank,
                      int32_t* num_tokens_per_rdma_rank, int32_t* num_tokens_per_expert, void* is_token_in_rank,
                      void* stream) {
  return guarded("epx_normal_layout", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr, "epx_normal_layout", "buffer is NULL"));
    epx::NormalLayoutOutputs o;
    o.num_tokens_per_rank = num_tokens_per_rank;
    o.num_tokens_per_rdma_rank = num_tokens_per_rdma_rank;
    o.num_tokens_per_expert = num_tokens_per_expert;
    o.is_token_in_rank = static_cast<bool*>(is_token_in_rank);
    epx::NormalStreams streams;
    streams.stream = stream;
    return buffer->buffer->get_dispatch_layout(topk_idx, num_tokens, o, streams).status();
  });
}

int epx_normal_dispatch(epx_normal_buffer* buffer, epx_normal_handle* handle, const epx_normal_dispatch_in* in,
                        void* stream, epx_normal_dispatch_out* out, int* expert_counts, int* expert_counts_written) {
  return guarded("epx_normal_dispatch", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(
        buffer != nullptr && handle != nullptr && in != nullptr && out != nullptr && expert_counts_written != nullptr,
        "epx_normal_dispatch", "NULL argument"));
    *expert_counts_written = 0;
    epx::NormalDispatchInput d;
    d.x = in->x;
    d.num_tokens = in->num_tokens;
    d.x_scales = in->x_scales;
    d.num_scales = in->num_scales;
    d.scale_token_stride = in->scale_token_stride;
    d.scale_hidden_stride = in->scale_hidden_stride;
    d.topk_idx = in->topk_idx;
    d.topk_weights = in->topk_weights;
    d.is_token_in_rank = static_cast<const bool*>(in->is_token_in_rank);
    d.num_tokens_per_expert = in->num_tokens_per_expert;
    d.cached = in->cached != 0;
    d.expert_alignment = in->expert_alignment;
    d.num_worst_tokens = in->num_worst_tokens;
    epx::NormalStreams streams;
    streams.stream = stream;
    EPX_ASSIGN_OR_RETURN(auto r, buffer->buffer->dispatch(d, *handle->handle, {in->num_sms}, streams));
    out->recv_x = r.recv_x;
    out->recv_x_scales = r.recv_x_scales;
    out->recv_topk_idx = r.recv_topk_idx;
    out->recv_topk_weights = r.recv_topk_weights;
    out->recv_src_idx = r.recv_src_idx;
    out->num_recv_tokens = r.num_recv_tokens;
    if (!r.num_recv_tokens_per_expert_list.empty()) {
      EPX_RETURN_IF_ERROR(require(expert_counts != nullptr, "epx_normal_dispatch", "expert_counts is NULL"));
      std::copy(r.num_recv_tokens_per_expert_list.begin(), r.num_recv_tokens_per_expert_list.end(), expert_counts);
      *expert_counts_written = 1;
    }
    return epx::Status();
  });
}

int epx_normal_combine(epx_normal_buffer* buffer, const epx_normal_handle* handle, const void* x,
                       const float* topk_weights, const void* bias0, const void* bias1, void* out_x,
                       float* out_topk_weights, int num_sms, void* stream, void** combined_x,
                       float** combined_topk_weights) {
  return guarded("epx_normal_combine", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(
        require(buffer != nullptr && handle != nullptr && combined_x != nullptr && combined_topk_weights != nullptr,
                "epx_normal_combine", "NULL argument"));
    epx::NormalCombineInput c;
    c.x = x;
    c.topk_weights = topk_weights;
    c.bias0 = bias0;
    c.bias1 = bias1;
    c.out = out_x;
    c.out_topk_weights = out_topk_weights;
    epx::NormalStreams streams;
    streams.stream = stream;
    EPX_ASSIGN_OR_RETURN(auto r, buffer->buffer->combine(c, *handle->handle, {num_sms}, streams));
    *combined_x = r.combined_x;
    *combined_topk_weights = r.combined_topk_weights;
    return epx::Status();
  });
}

int epx_normal_ranks_per_node(epx_normal_buffer* buffer, int* out) {
  return guarded("epx_normal_ranks_per_node", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr && out != nullptr, "epx_normal_ranks_per_node", "NULL argument"));
    *out = buffer->buffer->ranks_per_node();
    return epx::Status();
  });
}

int epx_normal_check(epx_normal_buffer* buffer) {
  return guarded("epx_normal_check", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr, "epx_normal_check", "buffer is NULL"));
    return buffer->buffer->check();
  });
}

int epx_normal_region(epx_normal_buffer* buffer, int kind, epx_region* out) {
  return guarded("epx_normal_region", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr, "epx_normal_region", "buffer is NULL"));
    const epx::NormalBuffer& b = *buffer->buffer;
    return region_of("epx_normal_region", kind, b.nvl_buffer(), b.nvl_bytes(), b.rdma_window(), b.rdma_bytes(), out);
  });
}

int epx_normal_mask_rank(epx_normal_buffer* buffer, uint32_t rank) {
  return guarded("epx_normal_mask_rank", [&]() -> epx::Status {
    EPX_RETURN_IF_ERROR(require(buffer != nullptr, "epx_normal_mask_rank", "buffer is NULL"));
    return buffer->buffer->mask_rank(rank);
  });
}
