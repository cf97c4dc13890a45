#include "daemon/control/peer_health.h"

#include <spdlog/spdlog.h>

#include <vector>

namespace epx::daemon {

std::vector<PeerHealth::PeerState> PeerHealth::peers() const {
  const auto now = std::chrono::steady_clock::now();
  const auto limit = std::chrono::milliseconds(node_.config.peer_timeout_ms());
  std::vector<PeerState> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [address, peer] : peers_by_address_) {
    out.push_back(PeerState{address, !peer.declared_lost && now - peer.last_ok <= limit});
  }
  return out;
}

void PeerHealth::check() {
  if (node_.shutting_down()) return;
  const auto now = std::chrono::steady_clock::now();
  const auto limit = std::chrono::milliseconds(node_.config.peer_timeout_ms());
  std::map<std::string, std::vector<std::pair<std::string, v1::RankEntry>>> by_daemon;
  for (const auto& t : clients_.formed_tables()) {
    for (const auto& r : t.ranks()) {
      if (r.daemon_address() != node_.advertise_address) by_daemon[r.daemon_address()].emplace_back(t.job_id(), r);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = peers_by_address_.begin(); it != peers_by_address_.end();) {
    if (by_daemon.count(it->first)) {
      ++it;
      continue;
    }
    data_plane_.forget_peer(it->first);  // no shared job any more: its rails' report goes too
    it = peers_by_address_.erase(it);
  }
  for (const auto& [address, ranks] : by_daemon) {
    auto [h, inserted] = peers_by_address_.try_emplace(address, Peer{now, false});
    if (!h->second.declared_lost && now - h->second.last_ok > limit) {
      h->second.declared_lost = true;
      spdlog::error("peer daemon {} silent for more than {} ms: reporting its ranks lost", address, limit.count());
      for (const auto& [job, entry] : ranks) {
        v1::JobEvent e;
        e.set_job_id(job);
        e.mutable_rank_left()->set_rank(entry.rank());
        e.mutable_rank_left()->set_node(entry.node());
        e.mutable_rank_left()->set_reason("daemon " + address + " on " + entry.node() + " unreachable for " +
                                          std::to_string(limit.count()) + " ms");
        events_.deliver(e);
      }
    }
    if (h->second.declared_lost) continue;
    const auto deadline = PeerClient::Clock::now() + std::min(limit, std::chrono::milliseconds(1000));
    // A named copy for the callback: C++17 lambdas cannot capture a
    // structured binding (gcc allows it, clang refuses).
    std::string peer = address;
    peers_.ping(address, deadline, [this, peer](const grpc::Status& s, v1::PingReply& reply) {
      if (!s.ok()) return;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = peers_by_address_.find(peer);
        if (it != peers_by_address_.end()) it->second.last_ok = std::chrono::steady_clock::now();
      }
      // From the network: at most as many rails as a rank table may list.
      if (reply.rails_size() > 64) return;
      std::vector<PeerRail> rails;
      for (const auto& r : reply.rails()) rails.push_back(PeerRail{r.usable(), r.why().substr(0, 512)});
      data_plane_.peer_rails(peer, std::move(rails));
    });
  }
}

}  // namespace epx::daemon
