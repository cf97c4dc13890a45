#include "daemon/proxy/rail_health.h"

#include <spdlog/spdlog.h>

namespace epx::daemon {
namespace {

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

const char* rail_state_name(RailState state) {
  switch (state) {
    case RailState::kHealthy: return "healthy";
    case RailState::kUnhealthy: return "unhealthy";
    case RailState::kRetrying: return "retrying";
  }
  return "?";
}

RailHealth::RailHealth(uint32_t rail, RailHealthOptions options) : rail_(rail), options_(options) {
  report_.since_unix_ms = unix_ms();
}

void RailHealth::change(RailState to, const std::string& why, Clock::time_point) {
  const RailState from = state_.load(std::memory_order_relaxed);
  state_.store(to, std::memory_order_relaxed);
  successes_since_change_ = 0;
  std::lock_guard<std::mutex> lock(mu_);
  report_.state = to;
  report_.since_unix_ms = unix_ms();
  if (to == RailState::kUnhealthy) {
    report_.why = why;
    ++report_.changes;
    if (link_down_) {
      spdlog::error("rail {}: unhealthy ({}): {}; new ring groups go to other rails, retried when the link is up",
                    rail_, rail_state_name(from), why);
    } else {
      spdlog::error("rail {}: unhealthy ({}): {}; new ring groups go to other rails, retried in {} ms", rail_,
                    rail_state_name(from), why, options_.cooldown.count());
    }
  } else if (to == RailState::kRetrying) {
    if (why.empty()) {
      spdlog::warn("rail {}: retrying after {} ms without failures or stalls (was unhealthy: {})", rail_,
                   options_.cooldown.count(), report_.why);
    } else {
      spdlog::warn("rail {}: retrying: {} (was unhealthy: {})", rail_, why, report_.why);
    }
  } else {
    spdlog::warn("rail {}: healthy again ({}; was: {})", rail_, why, report_.why);
    report_.why.clear();
  }
}

void RailHealth::on_success(Clock::time_point now) {
  consecutive_failures_ = 0;
  ++successes_since_change_;
  if (state_.load(std::memory_order_relaxed) == RailState::kRetrying && !stalled_now_) {
    change(RailState::kHealthy, "a write completed after it was retried", now);
  }
}

void RailHealth::on_failure(const std::string& why, Clock::time_point now) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++report_.failed_ops;
  }
  ++consecutive_failures_;
  last_bad_ = now;
  const RailState s = state_.load(std::memory_order_relaxed);
  // While retrying one failure is enough: the retry failed.
  const uint32_t limit = s == RailState::kRetrying ? 1 : std::max<uint32_t>(options_.failures, 1);
  if (s != RailState::kUnhealthy && consecutive_failures_ >= limit) {
    change(RailState::kUnhealthy, std::to_string(consecutive_failures_) + " consecutive failed writes, last: " + why,
           now);
  }
}

void RailHealth::on_link(bool up, const std::string& why, Clock::time_point now) {
  link_down_ = !up;
  const RailState s = state_.load(std::memory_order_relaxed);
  if (!up) {
    last_bad_ = now;
    if (s != RailState::kUnhealthy) change(RailState::kUnhealthy, "link down: " + why, now);
  } else if (s == RailState::kUnhealthy) {
    // No cool-down: the link says it works, and a write that fails or
    // stalls again marks it unhealthy again.
    change(RailState::kRetrying, "link up again: " + why, now);
  }
}

void RailHealth::tick(Clock::duration oldest, uint64_t stalled, Clock::time_point now) {
  stalled_now_ = oldest > options_.stall;
  const RailState s = state_.load(std::memory_order_relaxed);
  if (stalled_now_) {
    last_bad_ = now;
    {
      std::lock_guard<std::mutex> lock(mu_);
      report_.stalled_ops = std::max(report_.stalled_ops, stalled);
    }
    if (s != RailState::kUnhealthy) {
      change(RailState::kUnhealthy,
             std::to_string(stalled) + " write(s) in flight longer than " + std::to_string(options_.stall.count()) +
                 " ms (oldest " +
                 std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(oldest).count()) +
                 " ms): link down or peer unreachable",
             now);
    }
    return;
  }
  if (s == RailState::kUnhealthy && !link_down_ && now - last_bad_ >= options_.cooldown) {
    change(RailState::kRetrying, "", now);
  } else if (s == RailState::kRetrying && successes_since_change_ > 0) {
    change(RailState::kHealthy, "writes complete and none is stalled", now);
  }
}

RailHealthReport RailHealth::report() const {
  std::lock_guard<std::mutex> lock(mu_);
  return report_;
}

}  // namespace epx::daemon
