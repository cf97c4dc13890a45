// The GPU's PCI address for JoinOptions::gpu_pci_address: what the daemon
// needs to serve a rank from the NICs under the GPU's PCIe switch.
#include <cuda_runtime_api.h>

#include "cuda/cuda_status.h"
#include "epx/cuda.h"

namespace epx {

Result<std::string> gpu_pci_address(int device) {
  char bus_id[32] = {};
  EPX_RETURN_IF_ERROR(cuda_status(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device),
                                  "cudaDeviceGetPCIBusId(device " + std::to_string(device) + ")"));
  return std::string(bus_id);
}

}  // namespace epx
