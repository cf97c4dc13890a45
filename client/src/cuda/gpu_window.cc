// GpuAllocation and GpuWindow (epx/cuda.h): device windows, with the host
// window fallback.
#include <cuda_runtime_api.h>
#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "client/src/cuda/driver_api.h"
#include "cuda/cuda_status.h"
#include "epx/cuda.h"
#include "proto/fd/unique_fd.h"

namespace epx {
namespace {

using cuda_driver::Api;

// One RAII owner per driver handle, so a failure half-way through create()
// releases exactly what was made, in reverse order. A failed release is
// logged (cuda_driver::check_release).
class MemoryHandle {
 public:
  MemoryHandle(const Api& api, CUmemGenericAllocationHandle h) : api_(&api), handle_(h) {}
  MemoryHandle(const MemoryHandle&) = delete;
  MemoryHandle& operator=(const MemoryHandle&) = delete;
  ~MemoryHandle() { cuda_driver::check_release(*api_, api_->mem_release(handle_), "cuMemRelease"); }
  CUmemGenericAllocationHandle get() const { return handle_; }

 private:
  const Api* api_;
  CUmemGenericAllocationHandle handle_;
};

class AddressRange {
 public:
  AddressRange(const Api& api, CUdeviceptr va, size_t size) : api_(&api), va_(va), size_(size) {}
  AddressRange(const AddressRange&) = delete;
  AddressRange& operator=(const AddressRange&) = delete;
  ~AddressRange() { cuda_driver::check_release(*api_, api_->mem_address_free(va_, size_), "cuMemAddressFree"); }

 private:
  const Api* api_;
  CUdeviceptr va_;
  size_t size_;
};

class Mapping {
 public:
  Mapping(const Api& api, CUdeviceptr va, size_t size) : api_(&api), va_(va), size_(size) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { cuda_driver::check_release(*api_, api_->mem_unmap(va_, size_), "cuMemUnmap"); }

 private:
  const Api* api_;
  CUdeviceptr va_;
  size_t size_;
};

// Makes `device` current for the calling thread (creating its primary
// context, which the driver calls need) and restores the previous one.
class CurrentDevice {
 public:
  static Result<std::unique_ptr<CurrentDevice>> set(int device) {
    std::unique_ptr<CurrentDevice> g(new CurrentDevice());
    if (cudaGetDevice(&g->previous_) != cudaSuccess) {
      (void)cudaGetLastError();
      g->previous_ = -1;
    }
    // cudaGetDevice says 0 on a thread that never chose a device, and
    // "restoring" that would create a context (hundreds of MiB) on GPU 0:
    // restore only a device whose context exists.
    if (g->previous_ == device || (g->previous_ >= 0 && !has_context(g->previous_))) g->previous_ = -1;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaFree(nullptr);  // forces the primary context into existence
    Status made = cuda_status(e, "making CUDA device " + std::to_string(device) + " current");
    // No such device is the machine's lack of it, as with no device at all.
    if (e == cudaErrorInvalidDevice) made = Status(StatusCode::kUnavailable, made.message());
    EPX_RETURN_IF_ERROR(made);
    return g;
  }
  ~CurrentDevice() {
    if (previous_ >= 0) check_cuda_release(cudaSetDevice(previous_), "restoring the calling thread's CUDA device");
  }

 private:
  static bool has_context(int device) {
    auto api = cuda_driver::api();
    if (!api.ok()) return true;  // cannot tell: restore, as the caller would expect
    CUdevice dev = 0;
    if ((*api)->device_get(&dev, device) != CUDA_SUCCESS) return false;
    unsigned int flags = 0;
    int active = 0;
    if ((*api)->primary_ctx_get_state(dev, &flags, &active) != CUDA_SUCCESS) return true;
    return active != 0;
  }

  CurrentDevice() = default;
  int previous_ = -1;
};

int attribute(const Api& api, CUdevice dev, CUdevice_attribute a) {
  int value = 0;
  if (api.device_get_attribute(&value, a, dev) != CUDA_SUCCESS) return 0;
  return value;
}

}  // namespace

struct GpuAllocation::Handles {
  // Declared in creation order: destroyed as dma-buf fd, mapping, address
  // range, memory (the order the driver wants them released).
  std::unique_ptr<MemoryHandle> memory;
  std::unique_ptr<AddressRange> range;
  std::unique_ptr<Mapping> mapping;
  UniqueFd dmabuf;
};

Result<std::unique_ptr<GpuAllocation>> GpuAllocation::create(int device, uint64_t bytes) {
  if (bytes == 0) return invalid_argument("GPU allocation of 0 bytes");
  EPX_ASSIGN_OR_RETURN(const Api* driver, cuda_driver::api());
  const Api& api = *driver;
  EPX_ASSIGN_OR_RETURN(auto current, CurrentDevice::set(device));
  const std::string where = "GPU " + std::to_string(device);

  CUdevice dev = 0;
  EPX_RETURN_IF_ERROR(cuda_driver::status(api, api.device_get(&dev, device), "cuDeviceGet(" + where + ")"));
  if (!attribute(api, dev, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED)) {
    return failed_precondition(where + " does not support the CUDA virtual memory API (cuMemCreate)");
  }
  std::unique_ptr<GpuAllocation> a(new GpuAllocation());
  a->handles_ = std::make_unique<Handles>();
  a->device_ = device;
  char bus[32] = {};
  if (cudaDeviceGetPCIBusId(bus, sizeof(bus), device) == cudaSuccess) {
    a->pci_bus_id_ = bus;
  } else {
    (void)cudaGetLastError();
  }

  CUmemAllocationProp prop = {};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  // A POSIX fd handle lets the memory be shared with other processes by
  // cuMemExportToShareableHandle; the NICs get the dma-buf below instead.
  if (attribute(api, dev, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED)) {
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  }
  // Without this flag a NIC may not be able to DMA to memory from cuMemCreate.
  a->gpu_direct_rdma_ = attribute(api, dev, CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED) != 0;
  prop.allocFlags.gpuDirectRDMACapable = a->gpu_direct_rdma_ ? 1 : 0;

  size_t granularity = 0;
  EPX_RETURN_IF_ERROR(cuda_driver::status(
      api, api.mem_get_allocation_granularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
      "cuMemGetAllocationGranularity(" + where + ")"));
  if (granularity == 0) granularity = 2 << 20;
  a->size_ = (bytes + granularity - 1) / granularity * granularity;
  const std::string what = std::to_string(a->size_) + " bytes on " + where;

  CUmemGenericAllocationHandle handle = 0;
  EPX_RETURN_IF_ERROR(cuda_driver::status(api, api.mem_create(&handle, a->size_, &prop, 0), "cuMemCreate of " + what));
  a->handles_->memory = std::make_unique<MemoryHandle>(api, handle);

  CUdeviceptr va = 0;
  EPX_RETURN_IF_ERROR(cuda_driver::status(api, api.mem_address_reserve(&va, a->size_, granularity, 0, 0),
                                          "cuMemAddressReserve for " + what));
  a->handles_->range = std::make_unique<AddressRange>(api, va, a->size_);

  EPX_RETURN_IF_ERROR(cuda_driver::status(api, api.mem_map(va, a->size_, 0, handle, 0), "cuMemMap of " + what));
  a->handles_->mapping = std::make_unique<Mapping>(api, va, a->size_);

  CUmemAccessDesc access = {};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = device;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  EPX_RETURN_IF_ERROR(
      cuda_driver::status(api, api.mem_set_access(va, a->size_, &access, 1), "cuMemSetAccess of " + what));
  a->va_ = va;
  return a;
}

GpuAllocation::~GpuAllocation() {
  if (!handles_) return;
  // The driver calls act on the allocation's device context.
  auto current = CurrentDevice::set(device_);
  if (!current.ok()) log_release_failure(current.status().with_context("releasing GPU memory"));
  handles_.reset();
}

Result<int> GpuAllocation::dmabuf_fd() {
  if (handles_->dmabuf.get() >= 0) return handles_->dmabuf.get();
  EPX_ASSIGN_OR_RETURN(const Api* driver, cuda_driver::api());
  const Api& api = *driver;
  EPX_ASSIGN_OR_RETURN(auto current, CurrentDevice::set(device_));
  CUdevice dev = 0;
  EPX_RETURN_IF_ERROR(cuda_driver::status(api, api.device_get(&dev, device_), "cuDeviceGet"));
  if (!attribute(api, dev, CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED)) {
    return failed_precondition("GPU " + std::to_string(device_) +
                               " cannot export dma-bufs (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED is 0: driver or "
                               "kernel too old, or an open kernel module is needed)");
  }
  int fd = -1;
  EPX_RETURN_IF_ERROR(cuda_driver::status(
      api, api.mem_get_handle_for_address_range(&fd, va_, size_, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0),
      "cuMemGetHandleForAddressRange(DMA_BUF_FD) of " + std::to_string(size_) + " bytes on GPU " +
          std::to_string(device_)));
  handles_->dmabuf.reset(fd);
  // A child the process forks must not keep the GPU memory pinned.
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return internal_error(std::string("fcntl(FD_CLOEXEC) on the dma-buf: ") + std::strerror(errno));
  }
  return fd;
}

// ---------------------------------------------------------------------------

Result<std::unique_ptr<GpuWindow>> GpuWindow::create(Job& job, uint64_t bytes, int device, GpuWindowOptions options) {
  std::unique_ptr<GpuWindow> w(new GpuWindow());
  w->device_ = device;
  // Device window first. A refusal (the daemon's rails cannot take GPU
  // memory, or this GPU cannot export it) becomes the fallback reason;
  // any other error is the caller's to see.
  Status refused;
  {
    auto allocation = GpuAllocation::create(device, bytes);
    if (!allocation.ok()) {
      if (allocation.status().code() != StatusCode::kFailedPrecondition) return allocation.status();
      refused = allocation.status();
    } else {
      auto fd = (*allocation)->dmabuf_fd();
      if (!fd.ok()) {
        if (fd.status().code() != StatusCode::kFailedPrecondition) return fd.status();
        refused = fd.status();
      } else {
        auto token = job.send_fd(*fd);
        if (!token.ok()) return token.status().with_context("device window of " + std::to_string(bytes) + " bytes");
        DeviceMemory memory;
        memory.bytes = (*allocation)->size();
        memory.device_va = reinterpret_cast<uint64_t>((*allocation)->device_ptr());
        memory.cuda_device = device;
        memory.pci_bus_id = (*allocation)->pci_bus_id();
        auto id = job.create_device_window(*token, memory);
        if (id.ok()) {
          w->id_ = *id;
          w->allocation_ = std::move(allocation.value());
          w->device_ptr_ = w->allocation_->device_ptr();
          w->size_ = w->allocation_->size();
          return w;
        }
        if (id.status().code() != StatusCode::kFailedPrecondition) return id.status();
        refused = id.status();
      }
    }
  }  // a refused allocation is freed here, before the host window exists
  if (!options.allow_host_fallback) return refused;

  auto host = job.create_window(bytes);
  if (!host.ok()) return host.status().with_context("host window after the device window was refused (" +
                                                     refused.message() + ")");
  w->host_.emplace(std::move(host.value()));
  EPX_ASSIGN_OR_RETURN(auto current, CurrentDevice::set(device));
  EPX_ASSIGN_OR_RETURN(w->host_mapping_, CudaWindow::map(*w->host_));
  w->id_ = w->host_->id();
  w->device_ptr_ = w->host_mapping_->device_ptr();
  w->size_ = w->host_->size();
  w->fallback_reason_ = refused.message();
  return w;
}

GpuWindow::~GpuWindow() = default;

}  // namespace epx
