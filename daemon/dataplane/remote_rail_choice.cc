#include "daemon/dataplane/remote_rail_choice.h"

namespace epx::daemon {

std::vector<RemoteRailPair> choose_remote_rails(const std::vector<RailEnd>& local, const std::vector<RailEnd>& remote) {
  std::vector<RemoteRailPair> out(local.size());
  std::vector<uint32_t> used(remote.size(), 0);
  const size_t n = remote.size();
  for (size_t i = 0; i < local.size(); ++i) {
    const std::string& fabric = local[i].fabric;
    auto reachable = [&](size_t r) { return remote[r].fabric.empty() || fabric.empty() || remote[r].fabric == fabric; };
    bool any_reachable = false;
    for (size_t r = 0; r < n && !any_reachable; ++r) any_reachable = reachable(r);
    // Ranked by: reachable, healthy, least used so far, distance from our own
    // index (i pairs with i when the lists agree).
    size_t best = n;
    auto better = [&](size_t a, size_t b) {
      if (b == n) return true;
      if (remote[a].healthy != remote[b].healthy) return remote[a].healthy;
      if (used[a] != used[b]) return used[a] < used[b];
      return (a + n - i % n) % n < (b + n - i % n) % n;
    };
    for (size_t r = 0; r < n; ++r) {
      if (any_reachable && !reachable(r)) continue;
      if (better(r, best)) best = r;
    }
    if (best == n) {
      out[i].why = "the peer has no rails";
      continue;
    }
    ++used[best];
    out[i].remote = static_cast<uint32_t>(best);
    if (!any_reachable) {
      out[i].why = "no rail of the peer is on fabric " + fabric + "; tried rail " + std::to_string(best);
    } else {
      out[i].why = (remote[best].fabric.empty() ? std::string("peer rail of unknown fabric")
                                                : "same fabric " + remote[best].fabric) +
                   (remote[best].healthy ? "" : ", unhealthy (no healthy one)") + ", used by " +
                   std::to_string(used[best]) + " local rail(s)";
    }
  }
  return out;
}

}  // namespace epx::daemon
