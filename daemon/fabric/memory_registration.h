// Host memory registration on a rail: what windows, signal arrays and the
// proxy's scratch word need so the NIC can read and write them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "daemon/fabric/fi_handles.h"
#include "daemon/fabric/rail.h"
#include "epx/status.h"

namespace epx::daemon {

// Registers `length` bytes at `data` on `rail` for local use and remote
// writes. `requested_key` is used when the provider does not choose keys.
// Must run on the rail's proxy thread (it owns the domain's fids).
Result<MrPtr> register_memory(Rail& rail, void* data, size_t length, uint64_t requested_key);

}  // namespace epx::daemon
