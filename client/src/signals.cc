#include "epx/signals.h"

#include <thread>
#include <utility>

#include "client_session.h"
#include "mapped_region.h"
#include "proto/ring/ring.h"

namespace epx {

Signals::Signals(std::shared_ptr<ClientSession> session, std::string job_id, std::shared_ptr<MappedRegion> region,
                 uint32_t count)
    : session_(std::move(session)), job_id_(std::move(job_id)), region_(std::move(region)), count_(count) {}

uint64_t* Signals::words() const { return reinterpret_cast<uint64_t*>(region_->data()); }

uint64_t Signals::value(uint32_t index) const {
  if (index >= count_) return 0;
  // acquire: pairs with the daemon's release fetch_add when it applies a
  // remote write's immediate; the counted data is visible after this load.
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(region_->data()) + index, __ATOMIC_ACQUIRE);
}

Status Signals::check_peers(const std::string& waiting_for) const {
  return session_->job_health(job_id_).with_context("while waiting for " + waiting_for);
}

Status Signals::wait(uint32_t index, uint64_t target, std::chrono::milliseconds timeout) const {
  return wait_all({index}, target, timeout);
}

Status Signals::wait_all(const std::vector<uint32_t>& indices, uint64_t target,
                         std::chrono::milliseconds timeout) const {
  for (uint32_t i : indices) {
    if (i >= count_) {
      return invalid_argument("signal " + std::to_string(i) + " beyond this rank's " + std::to_string(count_) +
                              " signals");
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  auto next_check = start;
  for (uint64_t spins = 0;; ++spins) {
    bool all = true;
    for (uint32_t i : indices) all = all && value(i) >= target;
    if (all) return Status();
    if ((spins & 255) == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_check) {
        // Peers and the daemon: checked about every millisecond, so a lost
        // rank ends the wait long before the timeout.
        EPX_RETURN_IF_ERROR(check_peers("signals of job " + job_id_));
        next_check = now + std::chrono::milliseconds(1);
      }
      if (now >= deadline) {
        std::string short_of;
        int shown = 0;
        for (uint32_t i : indices) {
          const uint64_t v = value(i);
          if (v >= target) continue;
          if (shown++ < 8) {
            short_of += (short_of.empty() ? "" : ", ") + std::string("signal ") + std::to_string(i) + " is " +
                        std::to_string(v);
          }
        }
        return deadline_exceeded("job " + job_id_ + ": after " + std::to_string(timeout.count()) + " ms waiting for " +
                                 std::to_string(target) + ": " + short_of);
      }
      if (now - start > std::chrono::microseconds(200)) std::this_thread::yield();
    }
    ring::ring_pause();
  }
}

}  // namespace epx
