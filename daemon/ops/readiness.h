// Readiness: what /healthz, /readyz, the gRPC health service and
// `epxctl health` say about the daemon.
//
// - live (/healthz): the process runs and its control loop turns: the
//   event loop that expires barriers and pings peers ticked within
//   kStallLimit, and the daemon is not shutting down. A failure here means
//   restart it.
// - ready (/readyz): live, every rail's proxy thread answers within
//   kProxyAnswer, every peer daemon we share a job with answers its pings,
//   and the daemon is not draining. A failure here means send no new jobs.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "daemon/control/node.h"
#include "daemon/control/peer_health.h"
#include "daemon/dataplane/data_plane.h"

namespace epx::daemon {

struct HealthCheck {
  std::string name;  // "control loop", "rails", "peers", "draining"
  bool ok = false;
  std::string detail;
};

struct HealthVerdict {
  bool ok = false;
  std::vector<HealthCheck> checks;
  // One line per check: "ok rails: 2 open, proxies answering".
  std::string text() const;
};

class Readiness {
 public:
  static constexpr std::chrono::seconds kStallLimit{3};
  static constexpr std::chrono::milliseconds kProxyAnswer{250};

  Readiness(const Node& node, const DataPlane& data_plane, const PeerHealth& peers)
      : node_(node), data_plane_(data_plane), peers_(peers) {}

  // The event loop calls this on every tick.
  void tick() { last_tick_ns_.store(now_ns(), std::memory_order_relaxed); }

  HealthVerdict live() const;
  // Blocks up to kProxyAnswer per rail (the proxies' answer).
  HealthVerdict ready() const;

 private:
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  HealthCheck control_loop() const;

  const Node& node_;
  const DataPlane& data_plane_;
  const PeerHealth& peers_;
  // Relaxed: a timestamp read on its own, not ordering other data.
  std::atomic<int64_t> last_tick_ns_{now_ns()};
};

}  // namespace epx::daemon
