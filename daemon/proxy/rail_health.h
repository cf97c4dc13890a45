// RailHealth: whether a rail's writes are getting through, and since when.
//
// A rail fails in two ways the proxy can see: its writes or their
// completions fail (a NIC error, a peer gone), or its writes stop
// completing at all (a link that went down stalls tcp writes without any
// error until TCP gives up, minutes later). So a rail is marked unhealthy
// after `failures` consecutive failed writes or completions, or when a
// write has been in flight longer than `stall` (the proxy reports its
// oldest write's age at each tick). An unhealthy rail takes no new ring
// groups; once it has neither failed nor stalled for `cooldown` it is
// retried, and it is healthy again once a
// write completes on it while none is stalled. The daemon also watches each
// rail's link in sysfs (on_link): a link that goes down is unhealthy at
// once, without waiting for a write to stall.
//
// Written by the rail's proxy thread only; report() and usable() may be
// called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace epx::daemon {

struct RailHealthOptions {
  uint32_t failures = 3;                     // consecutive failures that make a rail unhealthy
  std::chrono::milliseconds stall{2000};     // a write in flight longer than this is stalled
  std::chrono::milliseconds cooldown{2000};  // unhealthy this long, then retried
};

enum class RailState : uint8_t { kHealthy, kUnhealthy, kRetrying };

const char* rail_state_name(RailState state);

struct RailHealthReport {
  RailState state = RailState::kHealthy;
  std::string why;            // the cause of the last change to unhealthy (kept while retrying)
  int64_t since_unix_ms = 0;  // when the state last changed
  uint64_t changes = 0;       // times it went unhealthy
  uint64_t failed_ops = 0;
  uint64_t stalled_ops = 0;
};

class RailHealth {
 public:
  using Clock = std::chrono::steady_clock;

  RailHealth(uint32_t rail, RailHealthOptions options);

  // Proxy thread. A write completed (or was accepted and completed).
  void on_success(Clock::time_point now);
  // A write was refused with an error or its completion failed.
  void on_failure(const std::string& why, Clock::time_point now);
  // The rail's link (sysfs operstate or port state) went down or came up:
  // down marks it unhealthy at once and holds it there; up retries it at
  // once instead of after the cool-down.
  void on_link(bool up, const std::string& why, Clock::time_point now);
  // Called every tick with the age of the oldest write in flight (zero when
  // none) and how many are older than the stall time: marks a stall,
  // starts retrying after the cool-down, declares a retried rail healthy.
  void tick(Clock::duration oldest, uint64_t stalled, Clock::time_point now);

  // Any thread: the rail may take new work (healthy or retrying).
  bool usable() const {
    // relaxed: a lone flag read to steer new work; nothing is published with it.
    return state_.load(std::memory_order_relaxed) != RailState::kUnhealthy;
  }
  RailState state() const { return state_.load(std::memory_order_relaxed); }
  RailHealthReport report() const;
  const RailHealthOptions& options() const { return options_; }

 private:
  void change(RailState to, const std::string& why, Clock::time_point now);

  const uint32_t rail_;
  const RailHealthOptions options_;
  std::atomic<RailState> state_{RailState::kHealthy};
  // Proxy thread only.
  uint32_t consecutive_failures_ = 0;
  uint64_t successes_since_change_ = 0;
  // The last time it failed or was found stalled: the cool-down runs from
  // here, so a rail that keeps failing is not retried meanwhile.
  Clock::time_point last_bad_{};
  bool stalled_now_ = false;
  bool link_down_ = false;
  // Guards the report (read by status from gRPC threads).
  mutable std::mutex mu_;
  RailHealthReport report_;
};

}  // namespace epx::daemon
