// MetricsCollector: the daemon's state as Prometheus metric families, built
// at each scrape from the same sources as Local.Status (no second set of
// counters to keep in step). Names follow Prometheus conventions: prefix
// epx_, base units (_bytes, _seconds), _total on counters only. Label sets
// are bounded: rail, reason (a fixed set), peer (daemons sharing a job),
// call (join, barrier), and job, capped at metrics_max_jobs distinct ids
// (further jobs are summed under job="_other"). README "Metrics" lists
// every family.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "daemon/control/call_measurements.h"
#include "daemon/control/status_report.h"
#include "daemon/dataplane/data_plane.h"
#include "daemon/ops/readiness.h"

namespace epx::daemon {

class MetricsCollector : public prometheus::Collectable {
 public:
  MetricsCollector(const Node& node, const StatusReport& status, const DataPlane& data_plane,
                   const CallMeasurements& measurements, const Readiness& readiness)
      : node_(node), status_(status), data_plane_(data_plane), measurements_(measurements), readiness_(readiness) {}

  std::vector<prometheus::MetricFamily> Collect() const override;

  // The job label for `job_id`: itself while fewer than metrics_max_jobs
  // jobs hold a label, "_other" beyond. A job keeps its label while it is
  // present; labels of jobs gone are given to newcomers.
  std::string job_label(const std::string& job_id, const std::set<std::string>& present) const;

 private:
  const Node& node_;
  const StatusReport& status_;
  const DataPlane& data_plane_;
  const CallMeasurements& measurements_;
  const Readiness& readiness_;

  // Between scrapes: which jobs hold a label, and each proxy's busy time at
  // the previous scrape (for epx_proxy_busy_ratio).
  mutable std::mutex mu_;
  mutable std::set<std::string> labelled_jobs_;
  mutable std::map<uint32_t, uint64_t> last_busy_ns_;
  mutable std::chrono::steady_clock::time_point last_scrape_{};
};

}  // namespace epx::daemon
