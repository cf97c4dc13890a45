// main() of the GPU test binaries (doctest). Where there is no CUDA device
// it runs no test: it prints "EPX_TEST_SKIPPED: <why>" and exits 0, which
// tools/test.sh and tools/device/run.sh count as skipped, never as passed.
// A driver that is installed but unusable is a failure (exit 1), so a
// misconfigured GPU machine does not pass by skipping.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

#include "cuda/cuda_device.h"

int main(int argc, char** argv) {
  const char* slash = argc > 0 ? std::strrchr(argv[0], '/') : nullptr;
  const char* name = slash != nullptr ? slash + 1 : (argc > 0 ? argv[0] : "this GPU test");
  const epx::Result<int> devices = epx::count_cuda_devices();
  if (!devices.ok()) {
    std::printf("FAILED: %s: cannot query CUDA devices: %s\n", name, devices.status().to_string().c_str());
    return 1;
  }
  if (devices.value() == 0) {
    std::printf("EPX_TEST_SKIPPED: no CUDA device (%s needs a GPU; tools/device/run.sh runs it on a GPU machine)\n",
                name);
    return 0;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
