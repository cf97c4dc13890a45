// Host side of the device API (epx/cuda.h).
#include <cuda_runtime_api.h>

#include <cstring>
#include <map>
#include <mutex>

#include "epx/cuda.h"
#include "proto/ring/ring_host.h"
#include "client/src/mapped_region.h"

namespace epx {
namespace {

Status cuda_status(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status();
  (void)cudaGetLastError();  // clear the sticky copy so later calls are not blamed
  return Status(e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ? StatusCode::kUnavailable
                                                                            : StatusCode::kInternal,
                what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

// Host memory the GPU may access: registered (mapped), with its device pointer.
template <typename T>
Result<T*> map_host(void* host, size_t bytes, const std::string& what) {
  EPX_RETURN_IF_ERROR(cuda_status(cudaHostRegister(host, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable),
                                  "cudaHostRegister of " + what));
  void* dev = nullptr;
  EPX_RETURN_IF_ERROR(cuda_status(cudaHostGetDevicePointer(&dev, host, 0), "cudaHostGetDevicePointer of " + what));
  return static_cast<T*>(dev);
}

// A zeroed DeviceError in mapped host memory: *host for the host to read
// (freed by the owner with cudaFreeHost), the result for kernels to write.
Result<DeviceError*> new_error_record(DeviceError** host) {
  EPX_RETURN_IF_ERROR(cuda_status(cudaHostAlloc(reinterpret_cast<void**>(host), sizeof(DeviceError),
                                                cudaHostAllocMapped | cudaHostAllocPortable),
                                  "cudaHostAlloc of the device error record"));
  std::memset(*host, 0, sizeof(DeviceError));
  DeviceError* dev = nullptr;
  EPX_RETURN_IF_ERROR(cuda_status(cudaHostGetDevicePointer(reinterpret_cast<void**>(&dev), *host, 0),
                                  "device pointer of the error record"));
  return dev;
}

Status error_status(const DeviceError* e) {
  const uint32_t code = __atomic_load_n(&e->code, __ATOMIC_ACQUIRE);
  switch (code) {
    case 0:
      return Status();
    case 1:
      return deadline_exceeded("a kernel found the ring full until its timeout (ticket " + std::to_string(e->expected) +
                               ", head " + std::to_string(e->seen) + "): is the daemon's proxy alive?");
    case 2:
      return deadline_exceeded("a kernel's wait for signal " + std::to_string(e->index) + " timed out: expected " +
                               std::to_string(e->expected) + ", saw " + std::to_string(e->seen));
    case 3:
      return deadline_exceeded("a kernel's flush timed out: fence " + std::to_string(e->expected) + ", done " +
                               std::to_string(e->seen));
  }
  return internal_error("device error code " + std::to_string(code));
}

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

Result<std::unique_ptr<CudaRing>> CudaRing::open(Job& job, uint32_t capacity, uint64_t post_timeout_ns) {
  auto region = job.open_ring_region(capacity, /*device_producers=*/true);
  if (!region.ok()) return region.status();
  std::unique_ptr<CudaRing> r(new CudaRing());
  r->id_ = region->first;
  r->region_ = std::move(region->second);
  auto base = map_host<uint8_t>(r->region_->data(), r->region_->size(), "ring " + std::to_string(r->id_));
  if (!base.ok()) return base.status();
  auto error_dev = new_error_record(&r->error_host_);
  if (!error_dev.ok()) return error_dev.status();
  EPX_RETURN_IF_ERROR(cuda_status(cudaMalloc(&r->counters_, 3 * sizeof(unsigned long long)), "cudaMalloc of ring counters"));
  // Zeroed and waited for here: a memset may still be queued when it
  // returns, and kernels on a non-blocking stream would not wait for it.
  EPX_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(r->counters_, 0, 3 * sizeof(unsigned long long), 0), "cudaMemsetAsync"));
  EPX_RETURN_IF_ERROR(cuda_status(cudaStreamSynchronize(0), "cudaStreamSynchronize after zeroing ring counters"));
  auto* counters = static_cast<unsigned long long*>(r->counters_);
  r->device_.header = reinterpret_cast<ring::RingHeader*>(*base);
  r->device_.slots = reinterpret_cast<ring::RingSlot*>(*base + ring::kRingHeaderBytes);
  r->device_.capacity = capacity;
  r->device_.claim = counters;
  r->device_.cached_head = counters + 1;
  r->device_.fences = counters + 2;
  r->device_.error = *error_dev;
  r->device_.timeout_ns = post_timeout_ns;
  return r;
}

CudaRing::~CudaRing() {
  if (counters_) cudaFree(counters_);
  if (error_host_) cudaFreeHost(error_host_);
  if (region_) cudaHostUnregister(region_->data());
}

Status CudaRing::device_error() const {
  if (error_host_) EPX_RETURN_IF_ERROR(error_status(error_host_));
  const auto* header = ring::ring_header(region_->data());
  const uint64_t e = ring::ring_load_acquire(&header->error);
  if (e == 0) return Status();
  return failed_precondition("ring " + std::to_string(id_) + ": the daemon rejected the descriptor at position " +
                             std::to_string(ring::error_position(e)) + " (" +
                             ring::ring_error_message(ring::error_code(e)) + ")");
}

Result<std::unique_ptr<CudaSignals>> CudaSignals::open(Job& job, uint32_t count) {
  auto s = job.open_signals(count);
  if (!s.ok()) return s.status();
  std::unique_ptr<CudaSignals> out(new CudaSignals());
  out->signals_ = std::make_unique<Signals>(std::move(s.value()));
  // Register the whole page-rounded mapping: count words plus the scratch word.
  const size_t page = 4096;
  const size_t bytes = ((uint64_t{count} + 1) * sizeof(uint64_t) + page - 1) / page * page;
  auto words = map_host<uint64_t>(out->signals_->words(), bytes, "signals");
  if (!words.ok()) return words.status();
  auto error_dev = new_error_record(&out->error_host_);
  if (!error_dev.ok()) return error_dev.status();
  out->device_ = DeviceSignals{*words, count, *error_dev};
  return out;
}

CudaSignals::~CudaSignals() {
  if (error_host_) cudaFreeHost(error_host_);
  if (signals_) cudaHostUnregister(signals_->words());
}

Status CudaSignals::device_error() const { return error_host_ ? error_status(error_host_) : Status(); }

Result<std::unique_ptr<CudaWindow>> CudaWindow::map(const Window& window) {
  std::unique_ptr<CudaWindow> w(new CudaWindow());
  auto dev = map_host<uint8_t>(window.data(), window.size(), "window " + std::to_string(window.id()));
  if (!dev.ok()) return dev.status();
  w->host_ = window.data();
  w->device_ptr_ = *dev;
  return w;
}

CudaWindow::~CudaWindow() {
  if (host_) cudaHostUnregister(host_);
}

namespace {

// Buffers this process exported, by handle bytes: a same-process peer's
// handle resolves here (CUDA IPC refuses handles from its own process).
std::mutex g_exported_mu;
std::map<std::string, void*>& exported() {
  static std::map<std::string, void*> m;
  return m;
}

}  // namespace

Result<std::unique_ptr<CudaPeers>> CudaPeers::open(Job& job, void* device_buffer, size_t bytes,
                                                   std::chrono::milliseconds timeout) {
  std::unique_ptr<CudaPeers> p(new CudaPeers());
  cudaIpcMemHandle_t h;
  EPX_RETURN_IF_ERROR(cuda_status(cudaIpcGetMemHandle(&h, device_buffer), "cudaIpcGetMemHandle"));
  p->own_handle_.assign(reinterpret_cast<const char*>(&h), sizeof(h));
  {
    std::lock_guard<std::mutex> lock(g_exported_mu);
    exported()[p->own_handle_] = device_buffer;
  }
  auto peers = job.exchange_ipc(p->own_handle_, bytes, timeout);
  if (!peers.ok()) return peers.status();
  int current = 0;
  EPX_RETURN_IF_ERROR(cuda_status(cudaGetDevice(&current), "cudaGetDevice"));
  p->pointers_.assign(job.world_size(), nullptr);
  for (const PeerBuffer& peer : *peers) {
    if (peer.rank >= job.world_size() || peer.handle.size() != sizeof(cudaIpcMemHandle_t)) {
      return internal_error("bad handle for rank " + std::to_string(peer.rank) + " from the daemon");
    }
    void* ptr = nullptr;
    {
      std::lock_guard<std::mutex> lock(g_exported_mu);
      auto it = exported().find(peer.handle);
      if (it != exported().end()) ptr = it->second;
    }
    if (ptr != nullptr) {
      // Same process: reach the owner's device with peer access.
      cudaPointerAttributes attr = {};
      EPX_RETURN_IF_ERROR(cuda_status(cudaPointerGetAttributes(&attr, ptr), "cudaPointerGetAttributes"));
      if (attr.device != current) {
        cudaError_t e = cudaDeviceEnablePeerAccess(attr.device, 0);
        if (e != cudaErrorPeerAccessAlreadyEnabled) {
          EPX_RETURN_IF_ERROR(cuda_status(e, "peer access from GPU " + std::to_string(current) + " to GPU " +
                                                 std::to_string(attr.device)));
        }
        (void)cudaGetLastError();
      }
    } else {
      cudaIpcMemHandle_t ph;
      std::memcpy(&ph, peer.handle.data(), sizeof(ph));
      EPX_RETURN_IF_ERROR(cuda_status(cudaIpcOpenMemHandle(&ptr, ph, cudaIpcMemLazyEnablePeerAccess),
                                      "cudaIpcOpenMemHandle of rank " + std::to_string(peer.rank) + "'s buffer"));
      p->opened_.push_back(ptr);
    }
    p->pointers_[peer.rank] = static_cast<uint8_t*>(ptr);
  }
  EPX_RETURN_IF_ERROR(cuda_status(cudaMalloc(&p->table_, sizeof(uint8_t*) * p->pointers_.size()), "cudaMalloc"));
  EPX_RETURN_IF_ERROR(cuda_status(cudaMemcpy(p->table_, p->pointers_.data(), sizeof(uint8_t*) * p->pointers_.size(),
                                             cudaMemcpyHostToDevice),
                                  "copying the peer table"));
  p->device_ = DevicePeers{static_cast<uint8_t* const*>(p->table_), static_cast<uint32_t>(p->pointers_.size())};
  return p;
}

CudaPeers::~CudaPeers() {
  for (void* ptr : opened_) cudaIpcCloseMemHandle(ptr);
  if (table_) cudaFree(table_);
  std::lock_guard<std::mutex> lock(g_exported_mu);
  exported().erase(own_handle_);
}

}  // namespace epx
