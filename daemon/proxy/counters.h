// Counters the proxy thread alone writes (others only read them).
#pragma once

#include <atomic>
#include <cstdint>

namespace epx::daemon {

// A plain load and store, not a locked read-modify-write on every
// descriptor: only the proxy thread writes these counters.
inline void bump(std::atomic<uint64_t>& counter, uint64_t n) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace epx::daemon
