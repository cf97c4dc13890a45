#include "daemon/dataplane/job_plane.h"

#include <atomic>

namespace epx::daemon {

JobPlane::JobPlane(const v1::RankTable& table, std::vector<std::vector<std::vector<fi_addr_t>>> by_remote,
                   std::vector<std::vector<uint32_t>> paired, std::vector<RailEnd> local)
    : job_id_(table.job_id()),
      world_(table.world_size()),
      table_(table),
      local_(std::move(local)),
      by_remote_(std::move(by_remote)),
      paired_(std::move(paired)),
      ranks_(table.world_size()),
      views_(std::make_shared<JobViewCell>(nullptr)) {
  std::lock_guard<std::mutex> lock(mu_);
  rebuild_locked();
}

void JobPlane::add_local_rank(uint32_t rank) {
  std::lock_guard<std::mutex> lock(mu_);
  if (rank < world_) {
    ranks_[rank].local = true;
    ranks_[rank].present = true;
  }
  rebuild_locked();
}

Result<uint32_t> JobPlane::add_window(uint32_t rank, LocalRegion window, LocalRegion* undo) {
  std::lock_guard<std::mutex> lock(mu_);
  if (rank >= world_ || !ranks_[rank].local) {
    *undo = std::move(window);
    return failed_precondition("job " + job_id_ + " rank " + std::to_string(rank) + " is not on this daemon any more");
  }
  if (ranks_[rank].windows.size() >= 0xFFFE) {
    *undo = std::move(window);
    return resource_exhausted("rank " + std::to_string(rank) + " already has 65534 windows (16-bit window ids)");
  }
  ranks_[rank].windows.push_back(std::move(window));
  rebuild_locked();
  return static_cast<uint32_t>(ranks_[rank].windows.size());
}

Status JobPlane::set_signals(uint32_t rank, LocalRegion signals, uint32_t base, uint32_t count, LocalRegion* undo) {
  std::lock_guard<std::mutex> lock(mu_);
  if (rank >= world_ || !ranks_[rank].local) {
    *undo = std::move(signals);
    return failed_precondition("job " + job_id_ + " rank " + std::to_string(rank) + " is not on this daemon any more");
  }
  if (ranks_[rank].signals.region) {
    *undo = std::move(signals);
    return already_exists("job " + job_id_ + " rank " + std::to_string(rank) + " already has signals");
  }
  ranks_[rank].signals = std::move(signals);
  ranks_[rank].signal_base = base;
  ranks_[rank].signal_count = count;
  rebuild_locked();
  return Status();
}

bool JobPlane::is_local(uint32_t rank) const {
  std::lock_guard<std::mutex> lock(mu_);
  return rank < world_ && ranks_[rank].local;
}

JobPlane::Released JobPlane::remove_local_rank(uint32_t rank) {
  std::lock_guard<std::mutex> lock(mu_);
  Released out;
  if (rank >= world_ || !ranks_[rank].local) return out;
  RankState& r = ranks_[rank];
  for (auto& w : r.windows) out.regions.push_back(std::move(w));
  if (r.signals.region) out.regions.push_back(std::move(r.signals));
  out.signal_base = r.signal_base;
  out.signal_count = r.signal_count;
  r = RankState();
  r.present = false;
  rebuild_locked();
  return out;
}

bool JobPlane::has_local_ranks() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& r : ranks_) {
    if (r.local) return true;
  }
  return false;
}

v1::RankPlane JobPlane::describe(uint32_t rank) const {
  std::lock_guard<std::mutex> lock(mu_);
  v1::RankPlane p;
  p.set_job_id(job_id_);
  p.set_rank(rank);
  p.set_formation(table_.formation());
  const RankState& r = ranks_[rank];
  for (size_t i = 0; i < r.windows.size(); ++i) {
    auto* w = p.add_windows();
    w->set_id(static_cast<uint32_t>(i + 1));
    w->set_bytes(r.windows[i].size());
    for (const auto& k : r.windows[i].keys) {
      auto* rk = w->add_rails();
      rk->set_key(k.key);
      rk->set_base(k.base);
    }
  }
  p.set_signal_base(r.signal_base);
  p.set_signal_count(r.signal_count);
  for (const auto& k : r.signals.keys) {
    auto* rk = p.add_signal_target();
    rk->set_key(k.key);
    // The scratch word follows the signal words.
    rk->set_base(k.base + uint64_t{r.signal_count} * sizeof(uint64_t));
  }
  return p;
}

Status JobPlane::apply(const v1::RankPlane& plane) {
  if (plane.formation() != table_.formation()) {
    return failed_precondition("job " + job_id_ + ": plane of rank " + std::to_string(plane.rank()) +
                               " is from another formation of the job id (an earlier or other job)");
  }
  // From the network: check everything the view will index by.
  if (plane.windows_size() > 0xFFFE || plane.signal_target_size() > 64) {
    return invalid_argument("job " + job_id_ + ": published plane too large");
  }
  for (const auto& w : plane.windows()) {
    if (w.id() == 0 || w.id() > 0xFFFE || w.rails_size() > 64) {
      return invalid_argument("job " + job_id_ + ": published window id " + std::to_string(w.id()) + " invalid");
    }
  }
  if (uint64_t{plane.signal_base()} + plane.signal_count() > (1u << 20)) {
    return invalid_argument("job " + job_id_ + ": published signal range beyond the 20-bit id space");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (plane.rank() >= world_) {
    return invalid_argument("job " + job_id_ + ": published rank " + std::to_string(plane.rank()) + " out of range");
  }
  RankState& r = ranks_[plane.rank()];
  if (!r.local) r.published = plane;
  rebuild_locked();
  return Status();
}

void JobPlane::mark_lost(uint32_t rank) {
  std::lock_guard<std::mutex> lock(mu_);
  if (rank < world_ && !ranks_[rank].local) ranks_[rank].present = false;
  rebuild_locked();
}

std::vector<RemoteRailPair> JobPlane::ideal_pairs_locked(uint32_t rank) const {
  const auto& entry = table_.ranks(static_cast<int>(rank));
  auto reported = peer_usable_.find(entry.daemon_address());
  std::vector<RailEnd> remote;
  for (int j = 0; j < entry.rails_size(); ++j) {
    const bool usable = reported == peer_usable_.end() || static_cast<size_t>(j) >= reported->second.size() ||
                        reported->second[j];
    remote.push_back(RailEnd{entry.rails(j).fabric(), usable});
  }
  return choose_remote_rails(local_, remote);
}

std::vector<RailPairAddress> JobPlane::set_peer_rails(const std::string& daemon, const std::vector<bool>& usable) {
  std::vector<RailPairAddress> missing;
  std::lock_guard<std::mutex> lock(mu_);
  peer_usable_[daemon] = usable;
  for (uint32_t r = 0; r < world_ && r < by_remote_.size(); ++r) {
    if (table_.ranks(static_cast<int>(r)).daemon_address() != daemon || ranks_[r].local) continue;
    const std::vector<RemoteRailPair> pairs = ideal_pairs_locked(r);
    for (uint32_t i = 0; i < pairs.size() && i < by_remote_[r].size(); ++i) {
      const uint32_t to = pairs[i].remote;
      if (to < by_remote_[r][i].size() && by_remote_[r][i][to] == FI_ADDR_UNSPEC) missing.push_back({r, i, to});
    }
  }
  return missing;
}

void JobPlane::add_addresses(const std::vector<RailPairAddress>& addresses) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& a : addresses) {
    if (a.rank < by_remote_.size() && a.local < by_remote_[a.rank].size() &&
        a.remote < by_remote_[a.rank][a.local].size()) {
      by_remote_[a.rank][a.local][a.remote] = a.addr;
    }
  }
}

std::vector<std::string> JobPlane::repair(const std::string& daemon) {
  std::vector<std::string> changes;
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t r = 0; r < world_ && r < paired_.size() && r < by_remote_.size(); ++r) {
    if (table_.ranks(static_cast<int>(r)).daemon_address() != daemon || ranks_[r].local) continue;
    const std::vector<RemoteRailPair> pairs = ideal_pairs_locked(r);
    for (size_t i = 0; i < pairs.size() && i < paired_[r].size(); ++i) {
      const uint32_t to = pairs[i].remote;
      // Only to a rail whose address this rail holds.
      if (to == paired_[r][i] || to >= by_remote_[r][i].size() || by_remote_[r][i][to] == FI_ADDR_UNSPEC) continue;
      changes.push_back("rank " + std::to_string(r) + ": local rail " + std::to_string(i) + " -> peer rail " +
                        std::to_string(to) + " (was " + std::to_string(paired_[r][i]) + "; " + pairs[i].why + ")");
      paired_[r][i] = to;
    }
  }
  if (!changes.empty()) rebuild_locked();
  return changes;
}

WindowUsage JobPlane::window_usage(uint64_t client_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  WindowUsage u;
  for (const auto& r : ranks_) {
    for (const auto& w : r.windows) {
      if (w.client_id != client_id) continue;
      ++u.windows;
      u.bytes += w.size();
      if (w.is_device()) {
        ++u.device_windows;
        u.device_bytes += w.size();
      }
    }
  }
  return u;
}

void JobPlane::rebuild_locked() {
  static std::atomic<uint64_t> next_generation{1};
  auto v = std::make_shared<JobView>();
  v->generation = next_generation.fetch_add(1, std::memory_order_relaxed);
  v->job_id = job_id_;
  v->world = world_;
  v->ranks.resize(world_);
  for (uint32_t i = 0; i < world_; ++i) {
    const RankState& r = ranks_[i];
    RankView& rv = v->ranks[i];
    rv.present = r.present;
    rv.node = table_.ranks(i).node();
    if (i < paired_.size() && i < by_remote_.size()) {
      rv.paired_rail = paired_[i];
      for (size_t l = 0; l < paired_[i].size() && l < by_remote_[i].size(); ++l) {
        const uint32_t remote = paired_[i][l];
        rv.addrs.push_back(remote < by_remote_[i][l].size() ? by_remote_[i][l][remote] : FI_ADDR_UNSPEC);
      }
    }
    rv.remote_rails = static_cast<uint32_t>(table_.ranks(i).rails_size());
    auto to_remote = [](const v1::WindowKeys& w) {
      RemoteWindow out;
      out.size = w.bytes();
      for (const auto& k : w.rails()) out.rails.push_back({k.key(), k.base()});
      return out;
    };
    if (r.local) {
      // Our own rank: the published form comes from our registrations.
      v1::RankPlane self;
      rv.windows.resize(r.windows.size() + 1);
      rv.local_windows.resize(r.windows.size() + 1);
      for (size_t w = 0; w < r.windows.size(); ++w) {
        const LocalRegion& lr = r.windows[w];
        rv.windows[w + 1].size = lr.size();
        rv.windows[w + 1].rails = lr.keys;
        LocalWindow lw;
        lw.data = lr.address();  // a device window's is the client's GPU address: only the NIC reads it
        lw.size = lr.size();
        for (const auto& mr : lr.mrs) lw.descs.push_back(mr ? fi_mr_desc(mr.get()) : nullptr);
        rv.local_windows[w + 1] = std::move(lw);
      }
      rv.signal_base = r.signal_base;
      rv.signal_count = r.signal_count;
      for (const auto& k : r.signals.keys) {
        rv.signal_target.rails.push_back({k.key, k.base + uint64_t{r.signal_count} * sizeof(uint64_t)});
      }
      rv.signal_target.size = r.signal_count ? sizeof(uint64_t) : 0;
    } else {
      const v1::RankPlane& p = r.published;
      uint32_t max_id = 0;
      for (const auto& w : p.windows()) max_id = std::max(max_id, w.id());
      rv.windows.resize(max_id + 1);
      for (const auto& w : p.windows()) rv.windows[w.id()] = to_remote(w);
      rv.signal_base = p.signal_base();
      rv.signal_count = p.signal_count();
      for (const auto& k : p.signal_target()) rv.signal_target.rails.push_back({k.key(), k.base()});
      rv.signal_target.size = p.signal_count() ? sizeof(uint64_t) : 0;
    }
  }
  views_->store(std::shared_ptr<const JobView>(std::move(v)));
}

}  // namespace epx::daemon
