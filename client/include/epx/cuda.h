// Host side of the device API: makes a Job's ring, signals and windows
// usable from CUDA kernels. Separate library (//client:epx_cuda) so the core
// SDK needs no CUDA.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "epx/client.h"
#include "epx/device.cuh"
#include "epx/status.h"

namespace epx {

// The PCI address of CUDA device `device` ("0000:19:00.0"), for
// JoinOptions::gpu_pci_address, so the daemon serves the rank from the NICs
// nearest that GPU. An error when CUDA has no such device.
Result<std::string> gpu_pci_address(int device);

// A kernel's rings: one single-producer ring per channel (proto/ring/ring.h
// v2), in one ring group the daemon serves through a doorbell, so idle
// channels cost its proxy nothing. Block (or warp group) b of a kernel posts
// through device().ring(b), i.e. channel b % channels; at most one thread or
// one warp of a channel may post at a time, so launch at most `channels`
// posting blocks (132 on an H100/H200: one per SM). The ring memory is
// registered with CUDA (mapped); each channel's tail and cached head live
// in device memory. Everything is released when the object is destroyed
// (after the kernels using device() have finished).
class CudaRingGroup {
 public:
  // channels: 1..ring::kMaxGroupChannels (the daemon's max_rings_per_client
  // bounds a client's rings in all). capacity: slots per ring (power of
  // two; small is fine per channel). post_timeout_ns: how long a kernel's
  // post waits for a full ring before giving up with kRingFullTimeout.
  // Blocks (daemon call, CUDA allocation and a synchronize).
  // FAILED_PRECONDITION when the daemon does not speak ring ABI v2.
  static Result<std::unique_ptr<CudaRingGroup>> open(Job& job, uint32_t channels, uint32_t capacity,
                                                     uint64_t post_timeout_ns = 1000000000ull);
  ~CudaRingGroup();
  // For kernels: the rings by channel.
  DeviceRingGroup device() const { return device_; }
  // One channel's ring, for a kernel that takes a single DeviceRing.
  const DeviceRing& ring(uint32_t channel) const { return rings_[channel]; }
  uint32_t channels() const { return static_cast<uint32_t>(rings_.size()); }
  // Ring ids (for `epxctl status`): first_id() + channel.
  uint32_t first_id() const { return first_id_; }
  // OK, or the first failure a kernel recorded (kRingFullTimeout,
  // kFlushTimeout, kBadArgument, ...); then the daemon's verdict on the
  // rings' descriptors (the first ring with a rejected one).
  Status device_error() const;
  // Its two parts: what kernels recorded, and the daemon's verdict on one
  // channel's ring (e.g. to overlook a ring whose destination was lost).
  Status kernel_error() const;
  Status channel_error(uint32_t channel) const;

 private:
  friend class CudaRing;
  CudaRingGroup() = default;
  // shared: each ring gets a lock word, so any threads may post to it.
  static Result<std::unique_ptr<CudaRingGroup>> open_rings(Job& job, uint32_t channels, uint32_t capacity,
                                                           uint64_t post_timeout_ns, bool shared);
  struct Resources;  // the mapped group and its CUDA resources (client/src/cuda/)
  std::unique_ptr<Resources> resources_;
  std::vector<DeviceRing> rings_;
  DeviceRingGroup device_ = {};
  uint32_t first_id_ = 0;
};

// One ring that any GPU threads may post to: a CudaRingGroup of one whose
// ring has a lock word in device memory (device.cuh, DeviceRing::lock), so
// concurrent posters take turns (two uncontended atomics a post; contended
// when many blocks post at once). Kernels whose blocks post concurrently
// and often should give each block its own channel of a CudaRingGroup.
class CudaRing {
 public:
  // capacity: slots (power of two). post_timeout_ns: how long a kernel's
  // post waits for a full ring before giving up with a DeviceError.
  // Blocks (daemon call, CUDA allocation and a synchronize).
  static Result<std::unique_ptr<CudaRing>> open(Job& job, uint32_t capacity, uint64_t post_timeout_ns = 1000000000ull);
  ~CudaRing();
  const DeviceRing& device() const { return group_->ring(0); }
  uint32_t id() const { return group_->first_id(); }
  // OK, or the first failure a kernel recorded; also the daemon's verdict
  // on the ring's descriptors.
  Status device_error() const { return group_->device_error(); }

 private:
  CudaRing() = default;
  std::unique_ptr<CudaRingGroup> group_;
};

// This rank's signals, readable by kernels: the signal array registered
// with CUDA (mapped), and an error record kernels' waits write to.
class CudaSignals {
 public:
  // Blocks (daemon call, CUDA registration).
  static Result<std::unique_ptr<CudaSignals>> open(Job& job, uint32_t count);
  ~CudaSignals();
  const DeviceSignals& device() const { return device_; }
  Signals& host();
  // OK, or the first failure a kernel's wait recorded (kSignalWaitTimeout,
  // kBadArgument for an index beyond the array).
  Status device_error() const;

  // Receiving without an SM: makes `stream` (a cudaStream_t of the calling
  // thread's current device) wait until
  // signal `index` >= `value` (cuStreamWaitValue64, CU_STREAM_WAIT_VALUE_GEQ
  // on the host-mapped word; the daemon's updates reach it over PCIe), so
  // later work on the stream starts only then and no kernel polls. Returns
  // once the wait is enqueued. The GPU-side wait CANNOT time out: if the
  // signal never comes (a peer lost, a daemon gone), the stream stays
  // blocked. Pair it with a host-side check: after enqueueing, the host
  // bounds its own wait (host().wait(index, value, timeout), which also
  // ends early naming a lost peer, or an event after the wait polled
  // against a deadline) and, on a timeout, abandons the stream (or
  // releases it by storing into the word, which is host memory). The
  // blocked stream also holds back work of any other stream that CUDA put
  // on the same hardware queue (CUDA_DEVICE_MAX_CONNECTIONS, 8 by default),
  // so the signal must not depend on a kernel of this GPU that could be
  // queued behind the wait. INVALID_ARGUMENT for an index beyond the array;
  // FAILED_PRECONDITION naming CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS
  // when the stream's device lacks 64-bit stream memory operations (or the
  // driver lacks cuStreamWaitValue64): launch a kernel that polls with
  // wait_signal() instead.
  Status enqueue_wait(uint32_t index, uint64_t value, void* stream);

 private:
  CudaSignals() = default;
  struct Resources;  // the signals and their CUDA resources (client/src/cuda/)
  std::unique_ptr<Resources> resources_;
  DeviceSignals device_ = {};
};

// Registers a window with CUDA so kernels can read and write it; returns
// the device pointer of its first byte. Unregistered when the returned
// object is destroyed, which must happen before the Window goes.
class CudaWindow {
 public:
  static Result<std::unique_ptr<CudaWindow>> map(const Window& window);
  ~CudaWindow();
  uint8_t* device_ptr() const { return device_ptr_; }

 private:
  CudaWindow() = default;
  struct Resources;  // the CUDA registration (client/src/cuda/)
  std::unique_ptr<Resources> resources_;
  uint8_t* device_ptr_ = nullptr;
};

// GPU memory allocated with the CUDA driver's virtual memory API
// (cuMemCreate, pinned, GPUDirect RDMA capable where the GPU supports it),
// mapped read/write for its GPU at an address reserved for it, and
// exportable as a dma-buf: what a device window is made of. Every handle
// (allocation, address range, mapping, dma-buf descriptor) is released
// when the object is destroyed.
class GpuAllocation {
 public:
  // At least `bytes` (rounded up to the allocation granularity, 2 MiB on
  // Hopper) on CUDA device `device`. Blocks; leaves the calling thread's
  // current device as it was. UNAVAILABLE without a driver or device;
  // FAILED_PRECONDITION when the GPU lacks the virtual memory API.
  static Result<std::unique_ptr<GpuAllocation>> create(int device, uint64_t bytes);
  ~GpuAllocation();
  GpuAllocation(const GpuAllocation&) = delete;
  GpuAllocation& operator=(const GpuAllocation&) = delete;

  uint8_t* device_ptr() const { return reinterpret_cast<uint8_t*>(va_); }
  size_t size() const { return size_; }
  int device() const { return device_; }
  const std::string& pci_bus_id() const { return pci_bus_id_; }
  // Whether the allocation was made GPUDirect RDMA capable (the GPU
  // reports CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED).
  bool gpu_direct_rdma() const { return gpu_direct_rdma_; }
  // A dma-buf descriptor of the whole allocation, exported on the first
  // call and owned by this object. FAILED_PRECONDITION when the GPU or
  // driver cannot export dma-bufs (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED).
  Result<int> dmabuf_fd();

 private:
  GpuAllocation() = default;
  struct Handles;  // RAII owners of the driver handles (client/src/cuda/)
  std::unique_ptr<Handles> handles_;
  uint64_t va_ = 0;
  size_t size_ = 0;
  int device_ = 0;
  bool gpu_direct_rdma_ = false;
  std::string pci_bus_id_;
};

struct GpuWindowOptions {
  // When the daemon (or the GPU) cannot do device windows, make a host
  // window mapped for the GPU instead (and say why in fallback_reason()).
  // false: return the refusal as the error.
  bool allow_host_fallback = true;
};

// A window for kernels on GPU `device`: GPU memory registered directly with
// the NICs (a device window: remote writes land in GPU memory, sends read
// from it) when the daemon's rails can take GPU memory; otherwise a host
// window mapped for the GPU (cudaHostRegister), with the reason kept in
// fallback_reason(). Either way kernels use device_ptr() and address the
// window by id() in descriptors (same id sequence as Job::create_window).
// Valid until the Job leaves; a device window's GPU memory stays
// registered (and allocated, held by the daemon's registration) until then.
class GpuWindow {
 public:
  // Blocks (allocation, registration on every rail, publication to the
  // job's daemons). Errors other than the daemon's or the GPU's refusal
  // of device windows are returned, never hidden by the fallback.
  static Result<std::unique_ptr<GpuWindow>> create(Job& job, uint64_t bytes, int device, GpuWindowOptions options = {});
  ~GpuWindow();

  uint32_t id() const { return id_; }
  uint8_t* device_ptr() const { return device_ptr_; }
  size_t size() const { return size_; }
  int device() const { return device_; }
  bool is_device() const { return allocation_ != nullptr; }
  // Why this is a host window; empty for a device window.
  const std::string& fallback_reason() const { return fallback_reason_; }
  // The host mapping of a fallback window (nullptr for a device window,
  // whose memory the CPU cannot read directly: use cudaMemcpy).
  uint8_t* host_ptr() const { return host_ ? host_->data() : nullptr; }

 private:
  GpuWindow() = default;
  uint32_t id_ = 0;
  uint8_t* device_ptr_ = nullptr;
  size_t size_ = 0;
  int device_ = 0;
  std::string fallback_reason_;
  std::unique_ptr<GpuAllocation> allocation_;  // device window
  std::optional<Window> host_;                 // fallback ...
  std::unique_ptr<CudaWindow> host_mapping_;   // ... and its GPU mapping
};

// Same-node peers: exchanges this rank's GPU buffer with the job's other
// ranks on this node (through the daemon) and maps theirs, giving kernels a
// pointer per same-node rank (DevicePeers). Ranks in this very process are
// resolved without IPC (CUDA IPC cannot open a handle in its own process):
// each posted handle says which process made it and at which address.
// Blocks until every same-node rank posted (at most `timeout`); the peers'
// mappings are closed when the object is destroyed.
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
  struct Resources;  // the peers' IPC mappings and the device table (client/src/cuda/)
  std::unique_ptr<Resources> resources_;
  std::vector<uint8_t*> pointers_;
  DevicePeers device_ = {};
};

// Number of CUDA devices; 0 when there is no driver or device, or the
// driver cannot be used (e.g. older than this binary's CUDA runtime).
int cuda_device_count();

}  // namespace epx
