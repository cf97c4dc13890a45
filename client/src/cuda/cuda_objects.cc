// Host side of the device API (epx/cuda.h): CudaRing, CudaSignals,
// CudaWindow. CudaPeers is in cuda_peers.cc, device windows in gpu_window.cc.
#include <cuda_runtime_api.h>

#include <string>
#include <utility>

#include "client/src/cuda/cuda_handles.h"
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

// Declared in the order they are made: destroyed in reverse, so the ring is
// unregistered before it is unmapped.
struct CudaRing::Resources {
  std::shared_ptr<MappedRegion> region;
  MappedHost mapped;
  ErrorRecord error;
  DeviceAllocation counters;  // claim, cached head, fences
};

Result<std::unique_ptr<CudaRing>> CudaRing::open(Job& job, uint32_t capacity, uint64_t post_timeout_ns) {
  EPX_ASSIGN_OR_RETURN(auto opened, job.open_ring_region(capacity, /*device_producers=*/true));
  std::unique_ptr<CudaRing> r(new CudaRing());
  r->id_ = opened.first;
  r->resources_ = std::make_unique<Resources>();
  Resources& res = *r->resources_;
  res.region = std::move(opened.second);
  const std::string what = "ring " + std::to_string(r->id_);
  EPX_ASSIGN_OR_RETURN(res.mapped, cuda_handles::map_host(res.region->data(), res.region->size(), what));
  EPX_ASSIGN_OR_RETURN(res.error, cuda_handles::new_error_record());
  constexpr size_t kCounterBytes = 3 * sizeof(unsigned long long);
  EPX_ASSIGN_OR_RETURN(res.counters, cuda_handles::allocate_device(kCounterBytes, "ring counters"));
  // Zeroed and waited for here: a memset may still be queued when it
  // returns, and kernels on a non-blocking stream would not wait for it.
  EPX_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(res.counters.get(), 0, kCounterBytes, 0), "cudaMemsetAsync"));
  EPX_RETURN_IF_ERROR(cuda_status(cudaStreamSynchronize(0), "cudaStreamSynchronize after zeroing ring counters"));
  auto* base = static_cast<uint8_t*>(res.mapped.device);
  auto* counters = static_cast<unsigned long long*>(res.counters.get());
  r->device_.header = reinterpret_cast<ring::RingHeader*>(base);
  r->device_.slots = reinterpret_cast<ring::RingSlot*>(base + ring::kRingHeaderBytes);
  r->device_.capacity = capacity;
  r->device_.claim = counters;
  r->device_.cached_head = counters + 1;
  r->device_.fences = counters + 2;
  r->device_.error = res.error.device;
  r->device_.timeout_ns = post_timeout_ns;
  return r;
}

CudaRing::~CudaRing() = default;

Status CudaRing::device_error() const {
  EPX_RETURN_IF_ERROR(cuda_handles::device_error_status(resources_->error));
  const auto* header = ring::ring_header(resources_->region->data());
  const uint64_t e = ring::ring_load_acquire(&header->error);
  if (e == 0) return Status();
  return failed_precondition("ring " + std::to_string(id_) + ": the daemon rejected the descriptor at position " +
                             std::to_string(ring::error_position(e)) + " (" +
                             ring::ring_error_message(ring::error_code(e)) + ")");
}

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
