#include "client/src/cuda/cuda_handles.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "cuda/cuda_status.h"

namespace epx::cuda_handles {

void DeviceFree::operator()(void* p) const { check_cuda_release(cudaFree(p), "cudaFree"); }
void PinnedHostFree::operator()(void* p) const { check_cuda_release(cudaFreeHost(p), "cudaFreeHost"); }
void HostUnregister::operator()(void* p) const { check_cuda_release(cudaHostUnregister(p), "cudaHostUnregister"); }
void IpcClose::operator()(void* p) const { check_cuda_release(cudaIpcCloseMemHandle(p), "cudaIpcCloseMemHandle"); }
void EventDestroy::operator()(cudaEvent_t e) const { check_cuda_release(cudaEventDestroy(e), "cudaEventDestroy"); }

Result<TimingEvent> create_timing_event(const std::string& what) {
  cudaEvent_t e = nullptr;
  EPX_RETURN_IF_ERROR(cuda_status(cudaEventCreate(&e), "cudaEventCreate for " + what));
  return TimingEvent(e);
}

Result<DeviceAllocation> allocate_device(size_t bytes, const std::string& what) {
  void* p = nullptr;
  EPX_RETURN_IF_ERROR(cuda_status(cudaMalloc(&p, bytes), "cudaMalloc of " + what));
  return DeviceAllocation(p);
}

Result<IpcMapping> open_ipc(const cudaIpcMemHandle_t& handle, const std::string& what) {
  void* p = nullptr;
  EPX_RETURN_IF_ERROR(cuda_status(cudaIpcOpenMemHandle(&p, handle, cudaIpcMemLazyEnablePeerAccess),
                                  "cudaIpcOpenMemHandle of " + what));
  return IpcMapping(p);
}

Result<MappedHost> map_host(void* host, size_t bytes, const std::string& what) {
  EPX_RETURN_IF_ERROR(cuda_status(cudaHostRegister(host, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable),
                                  "cudaHostRegister of " + what));
  MappedHost mapped;
  mapped.registration = HostRegistration(host);  // owned from here: a failure below unregisters it
  EPX_RETURN_IF_ERROR(
      cuda_status(cudaHostGetDevicePointer(&mapped.device, host, 0), "cudaHostGetDevicePointer of " + what));
  return mapped;
}

Result<DeviceAllocation> allocate_zeroed_device(size_t bytes, const std::string& what) {
  const size_t size = std::max<size_t>(bytes, 16);
  EPX_ASSIGN_OR_RETURN(DeviceAllocation a, allocate_device(size, what));
  // Zeroed before this returns. A plain cudaMemset runs on the legacy
  // stream, which nothing orders against the non-blocking streams the
  // kernels use: a memset still queued could land after a kernel wrote the
  // memory (a new handle's arrays were wiped under a running dispatch that
  // way when 16 ranks shared one GPU).
  EPX_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(a.get(), 0, size, cudaStreamLegacy), "cudaMemset " + what));
  EPX_RETURN_IF_ERROR(cuda_status(cudaStreamSynchronize(cudaStreamLegacy), "zeroing " + what));
  return a;
}

DeviceScope::DeviceScope(int device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
  status_ = cuda_status(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
}

DeviceScope::~DeviceScope() {
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
}

Result<ErrorRecord> new_error_record() {
  void* host = nullptr;
  EPX_RETURN_IF_ERROR(
      cuda_status(cudaHostAlloc(&host, sizeof(DeviceError), cudaHostAllocMapped | cudaHostAllocPortable),
                  "cudaHostAlloc of the device error record"));
  ErrorRecord record;
  record.memory = PinnedHostAllocation(host);
  std::memset(host, 0, sizeof(DeviceError));
  void* device = nullptr;
  EPX_RETURN_IF_ERROR(cuda_status(cudaHostGetDevicePointer(&device, host, 0), "device pointer of the error record"));
  record.device = static_cast<DeviceError*>(device);
  return record;
}

namespace {

const char* argument_name(uint32_t which) {
  switch (static_cast<DeviceArgument>(which)) {
    case DeviceArgument::kDstRank: return "destination rank";
    case DeviceArgument::kSignalIndex: return "signal index";
    case DeviceArgument::kIncrement: return "signal increment";
    case DeviceArgument::kSrcOffset: return "source offset";
    case DeviceArgument::kDstOffset: return "destination offset";
    case DeviceArgument::kCount: return "strided element count";
    case DeviceArgument::kLength: return "strided element length";
  }
  return "argument";
}

}  // namespace

Status device_error_status(const ErrorRecord& record) {
  const DeviceError* e = record.host();
  // acquire: pairs with record_error's __threadfence_system before it
  // publishes the code (epx/device.cuh); the other fields are then visible.
  const uint32_t code = __atomic_load_n(&e->code, __ATOMIC_ACQUIRE);
  switch (static_cast<DeviceErrorCode>(code)) {
    case DeviceErrorCode::kNone:
      return Status();
    case DeviceErrorCode::kRingFullTimeout:
      return deadline_exceeded("kRingFullTimeout: a kernel found its ring full until its timeout (ticket " +
                               std::to_string(e->expected) + ", head " + std::to_string(e->seen) +
                               "): is the daemon's proxy alive?");
    case DeviceErrorCode::kSignalWaitTimeout:
      return deadline_exceeded("kSignalWaitTimeout: a kernel's wait for signal " + std::to_string(e->index) +
                               " timed out: expected " + std::to_string(e->expected) + ", saw " +
                               std::to_string(e->seen));
    case DeviceErrorCode::kFlushTimeout:
      return deadline_exceeded("kFlushTimeout: a kernel's flush timed out: waited for completion watermark " +
                               std::to_string(e->expected) + ", saw " + std::to_string(e->seen));
    case DeviceErrorCode::kBadArgument:
      return invalid_argument("kBadArgument: a kernel passed " + std::string(argument_name(e->index)) + " " +
                              std::to_string(e->seen) + ", beyond what the descriptor carries (at most " +
                              std::to_string(e->expected) + "); nothing was posted");
    case DeviceErrorCode::kRingBusyTimeout:
      return deadline_exceeded("kRingBusyTimeout: a kernel waited for a shared ring's lock until its timeout "
                               "(another thread holding it stalled; give each block its own CudaRingGroup channel)");
    case DeviceErrorCode::kPeerTimeout:
      return deadline_exceeded("kPeerTimeout: a kernel's wait for rank " + std::to_string(e->index) +
                               " timed out: expected " + std::to_string(e->expected) + ", saw " +
                               std::to_string(e->seen));
  }
  return internal_error("device error code " + std::to_string(code) + " (index " + std::to_string(e->index) +
                        ", expected " + std::to_string(e->expected) + ", seen " + std::to_string(e->seen) + ")");
}

}  // namespace epx::cuda_handles
