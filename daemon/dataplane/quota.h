// Quota: shared memory a client holds (windows and rings) counts against
// max_client_mib. A creation reserves its bytes first, so concurrent calls
// cannot overshoot, and gives the reservation back once the region is
// recorded (where `held` counts it) or failed.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

#include "epx/status.h"

namespace epx::daemon {

class Quota {
 public:
  // `held(client)`: bytes the client holds now (windows and rings).
  Quota(uint64_t max_bytes, std::function<uint64_t(uint64_t client_id)> held)
      : max_bytes_(max_bytes), held_(std::move(held)) {}

  Status reserve(uint64_t client_id, uint64_t bytes);
  void unreserve(uint64_t client_id, uint64_t bytes);

 private:
  const uint64_t max_bytes_;
  const std::function<uint64_t(uint64_t)> held_;
  std::mutex mu_;
  std::map<uint64_t, uint64_t> reserved_;  // client -> bytes being created
};

// A reservation, given back by release() (once the region is recorded where
// Quota's `held` counts it, and before the caller is answered, so the next
// call never sees it twice) or, at the latest, when it is destroyed.
class QuotaReservation {
 public:
  QuotaReservation(Quota& quota, uint64_t client_id, uint64_t bytes)
      : quota_(quota), client_id_(client_id), bytes_(bytes) {}
  ~QuotaReservation() { release(); }
  QuotaReservation(const QuotaReservation&) = delete;
  QuotaReservation& operator=(const QuotaReservation&) = delete;

  void release() {
    // acq_rel: one caller gives the bytes back, whichever thread it is.
    if (!released_.exchange(true, std::memory_order_acq_rel)) quota_.unreserve(client_id_, bytes_);
  }

 private:
  Quota& quota_;
  const uint64_t client_id_, bytes_;
  std::atomic<bool> released_{false};
};

}  // namespace epx::daemon
