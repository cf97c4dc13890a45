// JobPlanes: the JobPlane of every job with a local rank, by job id. A plane
// is created when a job's first local rank attaches (with every rank's
// daemon address inserted on every rail) and dropped with its last one.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/dataplane/job_plane.h"
#include "daemon/dataplane/proxy_set.h"
#include "epx/status.h"
#include "epx/v1/rank_table.pb.h"

namespace epx::daemon {

class JobPlanes {
 public:
  explicit JobPlanes(ProxySet& proxies) : proxies_(proxies) {}

  // Checks the table's shape (it came from a coordinator the client chose),
  // creates the job's plane if this is its first local rank (its addresses
  // inserted on every rail by the proxies), and adds `rank`. `done` runs on
  // this thread or a proxy's and must not block.
  void attach(const v1::RankTable& table, uint32_t rank, std::function<void(Status)> done);
  std::shared_ptr<JobPlane> find(const std::string& job_id) const;
  // The job's plane, or (when none exists yet) nullptr after keeping
  // `published` for the plane to apply when it is created: another daemon's
  // rank may publish its windows before this daemon's own rank of the job
  // finished attaching. A leaving rank is kept as such (the plane marks it
  // lost when created) and no later Publish of it is kept.
  // `from` is the publishing daemon's address: a kept plane is applied only
  // if the job's rank table places the rank there.
  std::shared_ptr<JobPlane> find_or_keep(const v1::RankPlane& published, const std::string& from);
  // Drops `plane` if it is still the job's plane and has no local rank left.
  void release_if_empty(const std::shared_ptr<JobPlane>& plane);
  // Every plane now.
  std::vector<std::shared_ptr<JobPlane>> all() const;
  // Removes and returns every plane (daemon teardown).
  std::vector<std::shared_ptr<JobPlane>> take_all();

  WindowUsage window_usage(uint64_t client_id) const;

 private:
  Status add_rank(const std::shared_ptr<JobPlane>& plane, const v1::RankTable& table, uint32_t rank);

  // Planes published for jobs with no plane here yet; bounded, and dropped
  // after kEarlyPlaneLifetime (the job never formed here).
  struct EarlyPlane {
    v1::RankPlane plane;
    std::string from;
    std::chrono::steady_clock::time_point received;
  };
  static constexpr size_t kMaxEarlyPlanes = 4096;
  static constexpr std::chrono::seconds kEarlyPlaneLifetime{120};
  void forget_old_early_planes_locked();

  ProxySet& proxies_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<JobPlane>> jobs_;
  std::map<std::pair<std::string, uint32_t>, EarlyPlane> early_;  // by (job, rank)
};

}  // namespace epx::daemon
