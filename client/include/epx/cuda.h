// Host side of the device API: makes a Job's ring, signals and windows
// usable from CUDA kernels. Separate library (//client:epx_cuda) so the core
// SDK needs no CUDA.
#pragma once

#include <memory>
#include <chrono>
#include <string>
#include <vector>

#include "epx/client.h"
#include "epx/device.cuh"
#include "epx/status.h"

namespace epx {

// A ring whose producers are GPU threads: the ring memory registered with
// CUDA (mapped), and the producers' counters in device memory.
class CudaRing {
 public:
  // capacity: slots (power of two). post_timeout_ns: how long a kernel's
  // post waits for a full ring before giving up with a DeviceError.
  static Result<std::unique_ptr<CudaRing>> open(Job& job, uint32_t capacity, uint64_t post_timeout_ns = 1000000000ull);
  ~CudaRing();
  const DeviceRing& device() const { return device_; }
  uint32_t id() const { return id_; }
  // OK, or the first failure a kernel recorded; also the daemon's verdict
  // on the ring's descriptors.
  Status device_error() const;

 private:
  CudaRing() = default;
  std::shared_ptr<MappedRegion> region_;
  DeviceRing device_ = {};
  DeviceError* error_host_ = nullptr;
  void* counters_ = nullptr;  // device memory
  uint32_t id_ = 0;
};

// This rank's signals, readable by kernels.
class CudaSignals {
 public:
  static Result<std::unique_ptr<CudaSignals>> open(Job& job, uint32_t count);
  ~CudaSignals();
  const DeviceSignals& device() const { return device_; }
  Signals& host() { return *signals_; }
  Status device_error() const;

 private:
  CudaSignals() = default;
  std::unique_ptr<Signals> signals_;
  DeviceSignals device_ = {};
  DeviceError* error_host_ = nullptr;
};

// Registers a window with CUDA so kernels can read and write it; returns
// the device pointer of its first byte. Unregistered when the returned
// object is destroyed.
class CudaWindow {
 public:
  static Result<std::unique_ptr<CudaWindow>> map(const Window& window);
  ~CudaWindow();
  uint8_t* device_ptr() const { return device_ptr_; }

 private:
  CudaWindow() = default;
  void* host_ = nullptr;
  uint8_t* device_ptr_ = nullptr;
};

// Same-node peers: exchanges this rank's GPU buffer with the job's other
// ranks on this node (through the daemon) and maps theirs, giving kernels a
// pointer per same-node rank (DevicePeers). Ranks in this very process are
// resolved without IPC (CUDA IPC cannot open a handle in its own process).
class CudaPeers {
 public:
  static Result<std::unique_ptr<CudaPeers>> open(Job& job, void* device_buffer, size_t bytes,
                                                 std::chrono::milliseconds timeout = std::chrono::seconds(60));
  ~CudaPeers();
  const DevicePeers& device() const { return device_; }
  // Host view of the table (null for ranks on other nodes).
  const std::vector<uint8_t*>& pointers() const { return pointers_; }

 private:
  CudaPeers() = default;
  std::vector<uint8_t*> pointers_;
  std::vector<void*> opened_;  // cudaIpcOpenMemHandle results, closed on destruction
  void* table_ = nullptr;      // device memory
  DevicePeers device_ = {};
  std::string own_handle_;
};

// Number of CUDA devices; 0 when there is no driver or device.
int cuda_device_count();

}  // namespace epx
