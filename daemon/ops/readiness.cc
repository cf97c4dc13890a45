#include "daemon/ops/readiness.h"

namespace epx::daemon {

std::string HealthVerdict::text() const {
  std::string out;
  for (const auto& c : checks) out += (c.ok ? "ok " : "fail ") + c.name + ": " + c.detail + "\n";
  return out;
}

HealthCheck Readiness::control_loop() const {
  if (node_.shutting_down()) return {"control loop", false, "epxd is shutting down"};
  const auto idle = std::chrono::nanoseconds(now_ns() - last_tick_ns_.load(std::memory_order_relaxed));
  if (idle > kStallLimit) {
    return {"control loop", false,
            "the event loop has not ticked for " +
                std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(idle).count()) + " ms"};
  }
  return {"control loop", true, "answering"};
}

HealthVerdict Readiness::live() const {
  HealthVerdict v;
  v.checks.push_back(control_loop());
  v.ok = v.checks.back().ok;
  return v;
}

HealthVerdict Readiness::ready() const {
  HealthVerdict v = live();

  HealthCheck rails{"rails", true, ""};
  if (node_.rails.empty()) {
    rails = {"rails", false, "no rail is open"};
  } else {
    std::string stuck;
    for (const Status& s : data_plane_.proxies_answering(kProxyAnswer)) {
      if (!s.ok()) stuck += (stuck.empty() ? "" : "; ") + s.message();
    }
    const std::string provider = node_.rails.front()->provider();
    rails = stuck.empty()
                ? HealthCheck{"rails", true,
                              std::to_string(node_.rails.size()) + " open (" + provider + "), proxies answering"}
                : HealthCheck{"rails", false, stuck};
  }
  v.checks.push_back(rails);

  std::string down;
  size_t count = 0;
  for (const auto& p : peers_.peers()) {
    ++count;
    if (!p.up) down += (down.empty() ? "" : ", ") + p.address;
  }
  v.checks.push_back(down.empty() ? HealthCheck{"peers", true, std::to_string(count) + " reachable"}
                                  : HealthCheck{"peers", false, "not answering pings: " + down});

  v.checks.push_back(node_.is_draining() ? HealthCheck{"draining", false, "epxctl drain: new joins are refused"}
                                         : HealthCheck{"draining", true, "no"});
  v.ok = true;
  for (const auto& c : v.checks) v.ok = v.ok && c.ok;
  return v;
}

}  // namespace epx::daemon
