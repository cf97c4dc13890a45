#include "daemon/dataplane/job_planes.h"

#include <spdlog/spdlog.h>

namespace epx::daemon {
namespace {

// dst_rank is 16 bits in the ring ABI.
constexpr uint32_t kMaxWorld = 65536;
// fi_getname() addresses are small (efa: 32 bytes, sockaddr_in6: 28).
constexpr size_t kMaxAddressBytes = 256;

Status check_table(const v1::RankTable& table, uint32_t rank) {
  if (table.world_size() == 0 || table.world_size() > kMaxWorld ||
      table.ranks_size() != static_cast<int>(table.world_size()) || rank >= table.world_size()) {
    return invalid_argument("rank table of job " + table.job_id() + " is malformed (" +
                            std::to_string(table.ranks_size()) + " entries for world " +
                            std::to_string(table.world_size()) + ")");
  }
  for (int i = 0; i < table.ranks_size(); ++i) {
    const auto& e = table.ranks(i);
    if (e.rank() != static_cast<uint32_t>(i)) {
      return invalid_argument("rank table entry " + std::to_string(i) + " names rank " + std::to_string(e.rank()));
    }
    for (const auto& rail : e.rails()) {
      if (rail.address().empty() || rail.address().size() > kMaxAddressBytes) {
        return invalid_argument("rank " + std::to_string(i) + " has a fabric address of " +
                                std::to_string(rail.address().size()) + " bytes");
      }
    }
  }
  return Status();
}

Status other_job(const std::string& job_id) {
  // Same id, different job (another coordinator or membership): two tenants
  // must never share a plane.
  return failed_precondition("job id " + job_id +
                             " is already in use on this node by a different job (other coordinator or ranks)");
}

}  // namespace

void JobPlanes::attach(const v1::RankTable& table, uint32_t rank, std::function<void(Status)> done) {
  if (auto s = check_table(table, rank); !s.ok()) return done(s);
  std::shared_ptr<JobPlane> p = find(table.job_id());
  if (p) return done(add_rank(p, table, rank));
  proxies_.insert_addresses(table, [this, table, rank, done = std::move(done)](Result<ProxySet::Addresses> addrs) {
    if (!addrs.ok()) return done(addrs.status().with_context("job " + table.job_id()));
    std::shared_ptr<JobPlane> plane;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto& slot = jobs_[table.job_id()];
      if (!slot) {
        slot = std::make_shared<JobPlane>(table, std::move(addrs->by_remote), std::move(addrs->remote_rails),
                                          proxies_.local_ends());
        // Under the lock: a newer Publish of the same rank waits for mu_ and
        // so is applied after the older, kept one.
        auto first = early_.lower_bound({table.job_id(), 0});
        auto it = first;
        for (; it != early_.end() && it->first.first == table.job_id(); ++it) {
          const v1::RankPlane& early = it->second.plane;
          if (early.rank() >= table.world_size() ||
              table.ranks(static_cast<int>(early.rank())).daemon_address() != it->second.from) {
            spdlog::warn("job {}: dropped a plane of rank {} published early by {}, which does not host it",
                         table.job_id(), early.rank(), it->second.from);
          } else if (early.leaving()) {
            if (early.formation() == table.formation()) slot->mark_lost(early.rank());
          } else if (auto s = slot->apply(early); !s.ok()) {
            spdlog::warn("job {}: an early published plane of rank {} is invalid: {}", table.job_id(), it->first.second,
                         s.to_string());
          }
        }
        early_.erase(first, it);
      }
      plane = slot;
    }
    done(add_rank(plane, table, rank));
  });
}

Status JobPlanes::add_rank(const std::shared_ptr<JobPlane>& p, const v1::RankTable& table, uint32_t rank) {
  // Under mu_, like release_if_empty's check, so a plane is never dropped
  // while a rank is being added to it.
  std::lock_guard<std::mutex> lock(mu_);
  auto current = jobs_.find(table.job_id());
  if (current == jobs_.end() || current->second != p) {
    return unavailable("job " + table.job_id() + ": its data plane was released meanwhile; join again");
  }
  if (p->table().SerializeAsString() != table.SerializeAsString()) return other_job(table.job_id());
  p->add_local_rank(rank);
  return Status();
}

std::shared_ptr<JobPlane> JobPlanes::find(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second;
}

std::shared_ptr<JobPlane> JobPlanes::find_or_keep(const v1::RankPlane& published, const std::string& from) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(published.job_id());
  if (it != jobs_.end()) return it->second;
  forget_old_early_planes_locked();
  const auto key = std::make_pair(published.job_id(), published.rank());
  auto kept = early_.find(key);
  if (kept != early_.end()) {
    // A rank that left stays gone: its windows' Publish may arrive after its
    // leaving one (separate calls), and must not bring it back.
    if (!kept->second.plane.leaving()) kept->second = EarlyPlane{published, from, std::chrono::steady_clock::now()};
  } else if (early_.size() < kMaxEarlyPlanes) {
    early_.emplace(key, EarlyPlane{published, from, std::chrono::steady_clock::now()});
  } else {
    spdlog::warn(
        "job {}: plane of rank {} published before the job formed here, and {} such planes are kept "
        "already: dropped",
        published.job_id(), published.rank(), kMaxEarlyPlanes);
  }
  return nullptr;
}

void JobPlanes::forget_old_early_planes_locked() {
  const auto oldest = std::chrono::steady_clock::now() - kEarlyPlaneLifetime;
  for (auto it = early_.begin(); it != early_.end();) {
    it = it->second.received < oldest ? early_.erase(it) : std::next(it);
  }
}

void JobPlanes::release_if_empty(const std::shared_ptr<JobPlane>& plane) {
  std::lock_guard<std::mutex> lock(mu_);
  auto current = jobs_.find(plane->job_id());
  if (current != jobs_.end() && current->second == plane && !plane->has_local_ranks()) jobs_.erase(current);
}

std::vector<std::shared_ptr<JobPlane>> JobPlanes::all() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<JobPlane>> out;
  for (const auto& [id, p] : jobs_) out.push_back(p);
  return out;
}

std::vector<std::shared_ptr<JobPlane>> JobPlanes::take_all() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<JobPlane>> out;
  for (auto& [id, p] : jobs_) out.push_back(std::move(p));
  jobs_.clear();
  return out;
}

WindowUsage JobPlanes::window_usage(uint64_t client_id) const {
  std::vector<std::shared_ptr<JobPlane>> planes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, p] : jobs_) planes.push_back(p);
  }
  WindowUsage total;
  for (const auto& p : planes) total += p->window_usage(client_id);
  return total;
}

}  // namespace epx::daemon
