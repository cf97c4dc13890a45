// Host side of the device API (epx/cuda.h): CudaRing, CudaSignals,
// CudaWindow. CudaPeers is in cuda_peers.cc, device windows in gpu_window.cc.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "client/src/cuda/cuda_handles.h"
#include "client/src/cuda/driver_api.h"
#include "client/src/mapped_region.h"
#include "cuda/cuda_device.h"
#include "cuda/cuda_status.h"
#include "epx/cuda.h"
#include "proto/ring/ring_host.h"

namespace epx {

using cuda_handles::DeviceAllocation;
using cuda_handles::ErrorRecord;
using cuda_handles::MappedHost;

int cuda_device_count() {
  const Result<int> count = count_cuda_devices();
  return count.ok() ? *count : 0;
}

// Declared in the order they are made: destroyed in reverse, so the group
// is unregistered before it is unmapped.
struct CudaRingGroup::Resources {
  std::shared_ptr<MappedRegion> region;
  MappedHost mapped;
  ErrorRecord error;
  DeviceAllocation counters;  // per channel: tail, cached head, lock word
  DeviceAllocation table;     // DeviceRing[channels], for DeviceRingGroup
};

Result<std::unique_ptr<CudaRingGroup>> CudaRingGroup::open(Job& job, uint32_t channels, uint32_t capacity,
                                                           uint64_t post_timeout_ns) {
  return open_rings(job, channels, capacity, post_timeout_ns, /*shared=*/false);
}

Result<std::unique_ptr<CudaRingGroup>> CudaRingGroup::open_rings(Job& job, uint32_t channels, uint32_t capacity,
                                                                 uint64_t post_timeout_ns, bool shared) {
  EPX_ASSIGN_OR_RETURN(auto opened, job.open_ring_region(capacity, /*device_producers=*/true, channels));
  std::unique_ptr<CudaRingGroup> g(new CudaRingGroup());
  g->first_id_ = opened.first;
  g->resources_ = std::make_unique<Resources>();
  Resources& res = *g->resources_;
  res.region = std::move(opened.second);
  const std::string what = "ring group " + std::to_string(g->first_id_);
  EPX_ASSIGN_OR_RETURN(res.mapped, cuda_handles::map_host(res.region->data(), res.region->size(), what));
  EPX_ASSIGN_OR_RETURN(res.error, cuda_handles::new_error_record());
  const size_t counter_bytes = 3 * sizeof(unsigned long long) * channels;
  EPX_ASSIGN_OR_RETURN(res.counters, cuda_handles::allocate_device(counter_bytes, what + " counters"));
  const size_t table_bytes = sizeof(DeviceRing) * channels;
  EPX_ASSIGN_OR_RETURN(res.table, cuda_handles::allocate_device(table_bytes, what + " table"));
  auto* base = static_cast<uint8_t*>(res.mapped.device);
  auto* counters = static_cast<unsigned long long*>(res.counters.get());
  for (uint32_t c = 0; c < channels; ++c) {
    DeviceRing r = {};
    r.header = ring::ring_header(base + ring::group_ring_offset(c, capacity));
    r.slots = reinterpret_cast<ring::RingSlot*>(base + ring::group_ring_offset(c, capacity) + ring::kRingHeaderBytes);
    r.capacity = capacity;
    r.doorbell = base + offsetof(ring::RingGroupHeader, doorbell) + c;
    r.tail = counters + 3 * c;
    r.cached_head = counters + 3 * c + 1;
    r.lock = shared ? reinterpret_cast<unsigned int*>(counters + 3 * c + 2) : nullptr;
    r.error = res.error.device;
    r.timeout_ns = post_timeout_ns;
    g->rings_.push_back(r);
  }
  // Zeroed and copied, and waited for here: a memset or copy may still be
  // queued when it returns, and kernels on a non-blocking stream would not
  // wait for it.
  EPX_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(res.counters.get(), 0, counter_bytes, 0), "cudaMemsetAsync"));
  EPX_RETURN_IF_ERROR(cuda_status(
      cudaMemcpyAsync(res.table.get(), g->rings_.data(), table_bytes, cudaMemcpyHostToDevice, 0), "cudaMemcpyAsync"));
  EPX_RETURN_IF_ERROR(cuda_status(cudaStreamSynchronize(0), "cudaStreamSynchronize after setting up ring channels"));
  g->device_ = DeviceRingGroup{static_cast<const DeviceRing*>(res.table.get()), channels};
  return g;
}

CudaRingGroup::~CudaRingGroup() = default;

Status CudaRingGroup::kernel_error() const { return cuda_handles::device_error_status(resources_->error); }

Status CudaRingGroup::channel_error(uint32_t channel) const {
  if (channel >= rings_.size()) {
    return invalid_argument("channel " + std::to_string(channel) + " of a group of " + std::to_string(rings_.size()));
  }
  const uint32_t capacity = ring::group_header(resources_->region->data())->capacity;
  const auto* header = ring::ring_header(ring::group_ring(resources_->region->data(), channel, capacity));
  // acquire: pairs with the daemon's release compare-exchange of the error word.
  const uint64_t e = ring::ring_load_acquire(&header->error);
  if (e == 0) return Status();
  return failed_precondition("ring " + std::to_string(first_id_ + channel) + " (channel " + std::to_string(channel) +
                             "): the daemon rejected the descriptor at position " +
                             std::to_string(ring::error_position(e)) + " (" +
                             ring::ring_error_message(ring::error_code(e)) + ")");
}

Status CudaRingGroup::device_error() const {
  EPX_RETURN_IF_ERROR(kernel_error());
  for (uint32_t c = 0; c < rings_.size(); ++c) EPX_RETURN_IF_ERROR(channel_error(c));
  return Status();
}

Result<std::unique_ptr<CudaRing>> CudaRing::open(Job& job, uint32_t capacity, uint64_t post_timeout_ns) {
  std::unique_ptr<CudaRing> r(new CudaRing());
  EPX_ASSIGN_OR_RETURN(r->group_, CudaRingGroup::open_rings(job, 1, capacity, post_timeout_ns, /*shared=*/true));
  return r;
}

CudaRing::~CudaRing() = default;

// ---------------------------------------------------------------------------

struct CudaSignals::Resources {
  explicit Resources(Signals s) : signals(std::move(s)) {}
  Signals signals;  // first: its mapping outlives the registration below
  MappedHost words;
  ErrorRecord error;
};

Result<std::unique_ptr<CudaSignals>> CudaSignals::open(Job& job, uint32_t count) {
  EPX_ASSIGN_OR_RETURN(Signals signals, job.open_signals(count));
  std::unique_ptr<CudaSignals> out(new CudaSignals());
  out->resources_ = std::make_unique<Resources>(std::move(signals));
  Resources& res = *out->resources_;
  // Register the whole page-rounded mapping: count words plus the scratch word.
  const size_t page = 4096;
  const size_t bytes = ((uint64_t{count} + 1) * sizeof(uint64_t) + page - 1) / page * page;
  EPX_ASSIGN_OR_RETURN(res.words, cuda_handles::map_host(res.signals.words(), bytes, "signals"));
  EPX_ASSIGN_OR_RETURN(res.error, cuda_handles::new_error_record());
  out->device_ = DeviceSignals{static_cast<uint64_t*>(res.words.device), count, res.error.device};
  return out;
}

CudaSignals::~CudaSignals() = default;

Signals& CudaSignals::host() { return resources_->signals; }

Status CudaSignals::device_error() const { return cuda_handles::device_error_status(resources_->error); }

Status CudaSignals::enqueue_wait(uint32_t index, uint64_t value, void* stream) {
  if (index >= device_.count) {
    return invalid_argument("enqueue_wait: signal " + std::to_string(index) + " beyond the " +
                            std::to_string(device_.count) + " signals");
  }
  EPX_ASSIGN_OR_RETURN(const cuda_driver::Api* api, cuda_driver::api());
  if (api->stream_wait_value64 == nullptr) {
    return failed_precondition("enqueue_wait: the CUDA driver has no cuStreamWaitValue64; launch a kernel that "
                               "polls with wait_signal() instead");
  }
  // The stream belongs to the calling thread's current device (cuda.h).
  auto cu_stream = static_cast<CUstream>(stream);
  int device = 0;
  EPX_RETURN_IF_ERROR(cuda_status(cudaGetDevice(&device), "cudaGetDevice"));
  CUdevice cu_device = 0;
  EPX_RETURN_IF_ERROR(cuda_driver::status(*api, api->device_get(&cu_device, device), "cuDeviceGet"));
  int supported = 0;
  EPX_RETURN_IF_ERROR(cuda_driver::status(
      *api,
      api->device_get_attribute(&supported, CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS, cu_device),
      "cuDeviceGetAttribute(CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS)"));
  if (supported == 0) {
    return failed_precondition("enqueue_wait: CUDA device " + std::to_string(device) +
                               " reports CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS = 0 (no cuStreamWaitValue64); "
                               "launch a kernel that polls with wait_signal() instead");
  }
  const auto address = reinterpret_cast<CUdeviceptr>(device_.words + index);
  return cuda_driver::status(*api, api->stream_wait_value64(cu_stream, address, value, CU_STREAM_WAIT_VALUE_GEQ),
                             "cuStreamWaitValue64(signal " + std::to_string(index) + " >= " + std::to_string(value) +
                                 ")");
}

// ---------------------------------------------------------------------------

struct CudaWindow::Resources {
  MappedHost mapped;
};

Result<std::unique_ptr<CudaWindow>> CudaWindow::map(const Window& window) {
  std::unique_ptr<CudaWindow> w(new CudaWindow());
  w->resources_ = std::make_unique<Resources>();
  EPX_ASSIGN_OR_RETURN(w->resources_->mapped, cuda_handles::map_host(window.data(), window.size(),
                                                                     "window " + std::to_string(window.id())));
  w->device_ptr_ = static_cast<uint8_t*>(w->resources_->mapped.device);
  return w;
}

CudaWindow::~CudaWindow() = default;

}  // namespace epx
