// Is there a GPU? Lets GPU tests, the SDK and the data plane pick the CUDA
// path or the CPU reference. No CUDA headers needed by includers.
#pragma once

#include "epx/status.h"

namespace epx {

// Number of CUDA devices this process can use.
//   * OK(0) when the machine has no CUDA driver (libcuda.so.1 cannot be
//     loaded) or the driver reports no device: the normal state of a CPU-only
//     machine such as CI.
//   * An error Status when a driver is installed but unusable (e.g. older than
//     the CUDA runtime this binary links): a GPU machine that is misconfigured
//     should fail loudly, not silently skip its GPU work.
// The runtime's error state is cleared in every case, so a later
// cudaGetLastError() does not report this probe.
Result<int> count_cuda_devices();

// count_cuda_devices() is OK and > 0.
bool cuda_device_present();

}  // namespace epx
