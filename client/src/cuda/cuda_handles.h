// RAII owners of the CUDA runtime resources the device API holds: one type
// per kind, each released exactly once by the unique_ptr that owns it. A
// release that fails is logged (check_cuda_release), not silently dropped:
// destructors cannot return it, and it usually means a corrupt context.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <string>

#include "epx/device.cuh"
#include "epx/status.h"

namespace epx::cuda_handles {

struct DeviceFree {
  void operator()(void* p) const;  // cudaFree
};
struct PinnedHostFree {
  void operator()(void* p) const;  // cudaFreeHost
};
struct HostUnregister {
  void operator()(void* p) const;  // cudaHostUnregister
};
struct IpcClose {
  void operator()(void* p) const;  // cudaIpcCloseMemHandle
};
struct EventDestroy {
  void operator()(cudaEvent_t e) const;  // cudaEventDestroy
};

using DeviceAllocation = std::unique_ptr<void, DeviceFree>;          // cudaMalloc
using PinnedHostAllocation = std::unique_ptr<void, PinnedHostFree>;  // cudaHostAlloc
using HostRegistration = std::unique_ptr<void, HostUnregister>;      // cudaHostRegister (holds the host address)
using IpcMapping = std::unique_ptr<void, IpcClose>;                  // cudaIpcOpenMemHandle
using TimingEvent = std::unique_ptr<CUevent_st, EventDestroy>;       // cudaEventCreate (timing enabled)

// An event that can time (cudaEventElapsedTime); `what` names it in errors.
Result<TimingEvent> create_timing_event(const std::string& what);

// `bytes` of device memory on the current device; `what` names it in errors.
Result<DeviceAllocation> allocate_device(size_t bytes, const std::string& what);

// The same, zeroed (at least 16 bytes, so an empty shape still gets a
// valid pointer). The memset is synchronous with respect to the host.
Result<DeviceAllocation> allocate_zeroed_device(size_t bytes, const std::string& what);

// Makes `device` current for the calling thread and restores the previous
// one when it goes: the SDK must not leave a serving engine's threads on
// another GPU.
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  const Status& status() const { return status_; }

 private:
  int previous_ = -1;
  Status status_;
};

// Opens another process's buffer on the current device (peer access
// enabled lazily, as NVLink stores need).
Result<IpcMapping> open_ipc(const cudaIpcMemHandle_t& handle, const std::string& what);

// Host memory the GPU reads and writes through a device pointer: the
// registration (mapped, portable: every device may use it) and that pointer.
// Unregistered when `registration` goes, which must happen before the host
// memory is unmapped.
struct MappedHost {
  HostRegistration registration;
  void* device = nullptr;
};
Result<MappedHost> map_host(void* host, size_t bytes, const std::string& what);

// A zeroed DeviceError in mapped pinned host memory: kernels write it
// through `device`, the host reads `host()`.
struct ErrorRecord {
  PinnedHostAllocation memory;
  DeviceError* device = nullptr;
  const DeviceError* host() const { return static_cast<const DeviceError*>(memory.get()); }
};
Result<ErrorRecord> new_error_record();

// What a kernel recorded in `record` (OK when nothing): DEADLINE_EXCEEDED
// naming the ring, signal or fence it gave up on.
Status device_error_status(const ErrorRecord& record);

}  // namespace epx::cuda_handles
