#include "daemon/ops/metrics_collector.h"

#include <algorithm>
#include <array>
#include <limits>

#include "daemon/proxy/proxy.h"

namespace epx::daemon {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// Descriptor rejection reasons by ring::RingError code (ring.h).
constexpr std::array<const char*, kRejectReasons> kReasons = {
    "none",     "bad_op",     "unsupported_op", "bad_flags",  "bad_fields",
    "bad_rank", "bad_window", "out_of_bounds",  "bad_signal", "transport"};
static_assert(kReasons.size() == kRejectReasons, "a name for every RingError");

class Families {
 public:
  MetricFamily& family(const std::string& name, const std::string& help, MetricType type) {
    auto it = index_.find(name);
    if (it != index_.end()) return families_[it->second];
    index_[name] = families_.size();
    families_.push_back(MetricFamily{name, help, type, {}});
    return families_.back();
  }
  void counter(const std::string& name, const std::string& help, Labels labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = value;
    family(name, help, MetricType::Counter).metric.push_back(std::move(m));
  }
  void gauge(const std::string& name, const std::string& help, Labels labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = value;
    family(name, help, MetricType::Gauge).metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> take() { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;
  std::map<std::string, size_t> index_;
};

Labels rail_label(uint32_t rail) { return {{"rail", std::to_string(rail)}}; }

}  // namespace

std::string MetricsCollector::job_label(const std::string& job_id, const std::set<std::string>& present) const {
  for (auto it = labelled_jobs_.begin(); it != labelled_jobs_.end();) {
    it = present.count(*it) ? std::next(it) : labelled_jobs_.erase(it);
  }
  if (labelled_jobs_.count(job_id)) return job_id;
  if (labelled_jobs_.size() < node_.config.metrics_max_jobs()) {
    labelled_jobs_.insert(job_id);
    return job_id;
  }
  return "_other";
}

std::vector<MetricFamily> MetricsCollector::Collect() const {
  std::lock_guard<std::mutex> lock(mu_);
  Families f;
  StatusView all;
  all.all = true;
  const v1::DaemonStatus st = status_.status(all);
  const std::vector<ProxyStats> stats = data_plane_.proxy_stats();

  f.gauge("epx_info", "The daemon: node, version, provider of its rails, libfabric",
          {{"node", st.node()}, {"version", st.version()}, {"provider", st.provider()}, {"libfabric", st.libfabric()}},
          1);
  f.gauge("epx_provider_fallback",
          "1 when provider auto found no efa or verbs device and the rails fell back to another provider",
          {{"configured", node_.config.provider()}, {"provider", st.provider()}},
          st.provider_fallback().empty() ? 0 : 1);
  f.gauge("epx_uptime_seconds", "Time since the daemon started", {}, static_cast<double>(st.uptime_ms()) / 1e3);
  f.gauge("epx_draining", "1 while epxctl drain keeps new joins away", {}, st.draining() ? 1 : 0);

  const HealthVerdict ready = readiness_.ready();
  const auto answering = data_plane_.proxies_answering(Readiness::kProxyAnswer);
  for (const auto& r : st.rails()) {
    const Labels labels = {{"rail", std::to_string(r.index())}, {"provider", r.provider()}, {"domain", r.domain()}};
    const bool alive = r.index() < answering.size() && answering[r.index()].ok();
    f.gauge("epx_rail_healthy", "1 when the rail is open and its proxy thread answers", labels, alive ? 1 : 0);
    f.gauge("epx_rail_device_windows_supported", "1 when GPU memory (device windows) can be registered on the rail",
            rail_label(r.index()), r.device_windows() ? 1 : 0);
    f.gauge("epx_rail_usable", "1 when the rail takes work (healthy or retrying), 0 while unhealthy",
            rail_label(r.index()), r.health() == "unhealthy" ? 0 : 1);
    if (r.link() != "unknown") {
      f.gauge("epx_rail_link_up", "1 when sysfs reports the rail's link up", rail_label(r.index()),
              r.link() == "up" ? 1 : 0);
    }
    f.counter("epx_rail_unhealthy_total", "Times the rail was marked unhealthy", rail_label(r.index()),
              static_cast<double>(r.health_changes()));
    f.counter("epx_rail_striped_writes_total", "Writes of the rail's rings split over their GPU's rails",
              rail_label(r.index()), static_cast<double>(r.striped_writes()));
    f.counter("epx_rail_spread_writes_total", "Writes of the rail's rings moved to a quieter rail of their GPU",
              rail_label(r.index()), static_cast<double>(r.spread_writes()));
    f.counter("epx_rail_failover_writes_total",
              "Writes of the rail's rings moved off it (unhealthy, refused, stalled or failed)", rail_label(r.index()),
              static_cast<double>(r.failover_writes()));
  }
  f.gauge("epx_ready", "1 when /readyz answers 200 (rails, peers, not draining)", {}, ready.ok ? 1 : 0);

  const auto now = std::chrono::steady_clock::now();
  const double interval = last_scrape_ == std::chrono::steady_clock::time_point{}
                              ? 0
                              : std::chrono::duration<double>(now - last_scrape_).count();
  for (const auto& p : st.proxies()) {
    const uint32_t rail = p.rail();
    f.counter("epx_rail_write_bytes_total", "Bytes of the fabric writes posted on the rail", rail_label(rail),
              static_cast<double>(p.fabric_bytes()));
    f.counter("epx_rail_writes_total", "Fabric writes posted on the rail (after coalescing)", rail_label(rail),
              static_cast<double>(p.fabric_ops()));
    f.counter("epx_rail_descriptors_total", "Descriptors the rail's proxy took from rings", rail_label(rail),
              static_cast<double>(p.descriptors()));
    f.counter("epx_rail_fabric_errors_total", "Writes the fabric failed on the rail (post or completion)",
              rail_label(rail), static_cast<double>(p.fabric_errors()));
    f.counter("epx_rail_writes_refused_total",
              "Writes the provider refused for now (-FI_EAGAIN, its queue full); offered again", rail_label(rail),
              static_cast<double>(p.refused()));
    f.counter("epx_signals_applied_total", "Remote writes' immediates applied to local signal words", rail_label(rail),
              static_cast<double>(p.signals_applied()));
    f.counter("epx_bad_immediates_total", "Incoming immediates that named no signal (stale or forged)",
              rail_label(rail), static_cast<double>(p.bad_immediates()));
    f.counter("epx_proxy_busy_seconds_total", "Time the rail's proxy thread spent in passes that did work",
              rail_label(rail), static_cast<double>(p.busy_ns()) / 1e9);
    const uint64_t before = last_busy_ns_.count(rail) ? last_busy_ns_[rail] : p.busy_ns();
    const double ratio = interval > 0 ? static_cast<double>(p.busy_ns() - before) / 1e9 / interval : 0;
    f.gauge("epx_proxy_busy_ratio", "Fraction of the time since the previous scrape the proxy thread was busy",
            rail_label(rail), std::min(1.0, std::max(0.0, ratio)));
    last_busy_ns_[rail] = p.busy_ns();
    f.gauge("epx_rings", "Rings the rail's proxy serves", rail_label(rail), p.rings());
    f.gauge("epx_ring_uncompleted_descriptors",
            "Descriptors taken from the rail's rings whose writes have not completed (ring occupancy)",
            rail_label(rail), static_cast<double>(p.uncompleted()));
    if (rail < stats.size()) {
      for (size_t reason = 1; reason < kRejectReasons; ++reason) {
        f.counter("epx_descriptors_rejected_total", "Descriptors rejected, by rail and reason",
                  {{"rail", std::to_string(rail)}, {"reason", kReasons[reason]}},
                  static_cast<double>(stats[rail].rejected[reason]));
      }
    }
  }
  last_scrape_ = now;

  // Per job and rail: jobs beyond metrics_max_jobs summed under "_other".
  std::set<std::string> present;
  for (const auto& p : st.proxies()) {
    for (const auto& j : p.jobs()) present.insert(j.job_id());
  }
  std::map<std::pair<std::string, uint32_t>, std::pair<uint64_t, uint64_t>> by_job;  // (job, rail) -> (bytes, writes)
  for (const auto& p : st.proxies()) {
    for (const auto& j : p.jobs()) {
      auto& v = by_job[{job_label(j.job_id(), present), p.rail()}];
      v.first += j.fabric_bytes();
      v.second += j.fabric_ops();
    }
  }
  f.family("epx_job_write_bytes_total",
           "Bytes of the fabric writes posted for a job on a rail, while the job has rings there", MetricType::Counter);
  f.family("epx_job_writes_total", "Fabric writes posted for a job on a rail, while the job has rings there",
           MetricType::Counter);
  for (const auto& [key, v] : by_job) {
    const Labels labels = {{"job", key.first}, {"rail", std::to_string(key.second)}};
    f.counter("epx_job_write_bytes_total", "", labels, static_cast<double>(v.first));
    f.counter("epx_job_writes_total", "", labels, static_cast<double>(v.second));
  }

  size_t up = 0, down = 0;
  for (const auto& p : st.peers()) {
    f.gauge("epx_peer_up", "1 when the peer daemon (sharing a job with this one) answers its pings",
            {{"peer", p.address()}}, p.up() ? 1 : 0);
    (p.up() ? up : down) += 1;
  }
  f.gauge("epx_peers", "Peer daemons sharing a job with this one, by state", {{"state", "up"}},
          static_cast<double>(up));
  f.gauge("epx_peers", "", {{"state", "down"}}, static_cast<double>(down));

  f.gauge("epx_clients", "Clients connected", {}, st.clients_size());
  size_t coordinated = 0;
  for (const auto& j : st.jobs()) coordinated += j.coordinated_here() ? 1 : 0;
  f.gauge("epx_jobs", "Jobs this daemon knows of (with ranks here, or coordinated here)", {}, st.jobs_size());
  f.gauge("epx_jobs_coordinated", "Jobs this daemon coordinates", {}, static_cast<double>(coordinated));

  {
    MetricFamily& h =
        f.family("epx_join_duration_seconds", "Time from a JoinJob call to its rank table (joins that succeeded)",
                 MetricType::Histogram);
    ClientMetric m;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < DurationHistogram::kBounds.size(); ++i) {
      cumulative += measurements_.join_seconds.count(i);
      m.histogram.bucket.push_back({cumulative, DurationHistogram::kBounds[i]});
    }
    cumulative += measurements_.join_seconds.count(DurationHistogram::kBounds.size());
    m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = measurements_.join_seconds.sum_seconds();
    h.metric.push_back(std::move(m));
  }
  f.counter("epx_waits_timed_out_total", "Waits for other ranks that ended at their deadline, by call",
            {{"call", "join"}}, static_cast<double>(measurements_.join_timeouts.load(std::memory_order_relaxed)));
  f.counter("epx_waits_timed_out_total", "", {{"call", "barrier"}},
            static_cast<double>(measurements_.barrier_timeouts.load(std::memory_order_relaxed)));
  f.counter("epx_joins_refused_draining_total", "Joins refused because the daemon was draining", {},
            static_cast<double>(measurements_.joins_refused_draining.load(std::memory_order_relaxed)));
  return f.take();
}

}  // namespace epx::daemon
