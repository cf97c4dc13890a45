// LocalRegion: a local window or signal array (host memory the daemon
// shares with a client, or a client's GPU memory) with its registration on
// every rail; and what a client holds in windows.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/fabric/fi_handles.h"
#include "daemon/proxy/job_view.h"
#include "daemon/shm/shared_region.h"
#include "proto/fd/unique_fd.h"

namespace epx::daemon {

// GPU memory of a client, registered from the dma-buf it exported (a device
// window). The daemon never maps it: `device_va` is the client's CUDA
// address, used as the registrations' base and as the source address of
// writes posted from the window, which the NIC reads by DMA.
struct DeviceRegion {
  UniqueFd dmabuf;  // open while registered
  uint64_t device_va = 0;
  uint64_t size = 0;
  int cuda_device = 0;
  std::string pci_bus_id;
};

// A local window or signal array with its registration on every rail.
struct LocalRegion {
  std::shared_ptr<SharedRegion> region;  // host memory (memfd) ...
  std::shared_ptr<DeviceRegion> device;  // ... or GPU memory (device windows only)
  std::vector<MrPtr> mrs;  // by rail; closed on the rail's proxy thread (before the memory goes)
  std::vector<RemoteRail> keys;
  uint64_t token = 0;      // fd-socket token while the client may fetch it (host memory)
  uint64_t client_id = 0;

  bool is_device() const { return device != nullptr; }
  uint64_t size() const { return device ? device->size : (region ? region->size() : 0); }
  // Byte 0 as the registrations and the proxies name it: the daemon's
  // mapping of host memory, the client's VA of GPU memory (never
  // dereferenced by the daemon).
  uint8_t* address() const {
    return device ? reinterpret_cast<uint8_t*>(device->device_va)
                  : (region ? static_cast<uint8_t*>(region->data()) : nullptr);
  }
};

// What a client holds in windows (status, quota).
struct WindowUsage {
  uint32_t windows = 0, device_windows = 0;
  uint64_t bytes = 0, device_bytes = 0;
  WindowUsage& operator+=(const WindowUsage& o) {
    windows += o.windows;
    device_windows += o.device_windows;
    bytes += o.bytes;
    device_bytes += o.device_bytes;
    return *this;
  }
};

}  // namespace epx::daemon
