#include "daemon/control/status_report.h"

#include <unistd.h>

#include <map>
#include <set>

#include "daemon/fabric/device_memory.h"

namespace epx::daemon {

const char kVersion[] = "0.1.0";

v1::DaemonStatus StatusReport::status(const StatusView& view) const {
  v1::DaemonStatus s;
  s.set_node(node_.config.node_name());
  s.set_version(kVersion);
  s.set_pid(static_cast<uint32_t>(getpid()));
  s.set_uptime_ms(node_.uptime_ms());
  s.set_peer_address(node_.advertise_address);
  s.set_control_socket(node_.config.control_socket());
  s.set_provider(node_.rails.empty() ? node_.config.provider() : node_.rails.front()->provider());
  for (const auto& rail : node_.rails) {
    auto* r = s.add_rails();
    r->set_index(rail->index());
    r->set_provider(rail->provider());
    r->set_fabric(rail->fabric_name());
    r->set_domain(rail->domain_name());
    r->set_address(rail->address());
    r->set_max_msg_size(rail->max_msg_size());
    r->set_fi_hmem(rail->supports_hmem());
    r->set_mr_mode(mr_mode_string(rail->mr_mode()));
    Status gpu = device_window_support(*rail);
    r->set_device_windows(gpu.ok());
    r->set_device_windows_reason(gpu.message());
    data_plane_.fill_rail_status(rail->index(), r);
  }
  for (auto& g : data_plane_.gpu_rails_status()) *s.add_gpu_rails() = std::move(g);
  s.set_libfabric(libfabric_description());
  s.set_provider_fallback(node_.provider_fallback);
  s.set_draining(node_.is_draining());
  if (const int port = node_.metrics_port.load(std::memory_order_relaxed); port != 0) {
    const std::string& listen = node_.config.metrics_listen();
    s.set_metrics_address(listen.substr(0, listen.rfind(':') + 1) + std::to_string(port));
  }
  s.set_view(view.all ? "all" : "own (uid " + std::to_string(view.uid) + ")");
  std::set<std::string> own_jobs;
  // Every client's rings count towards their rail's occupancy, whatever
  // the view: the proxies serve them all.
  std::map<uint32_t, uint64_t> uncompleted_by_rail;
  for (auto& c : clients_.client_status()) {
    for (const auto& r : data_plane_.ring_status(c.client_id())) {
      uncompleted_by_rail[r.rail()] += r.consumed() > r.completed() ? r.consumed() - r.completed() : 0;
    }
    if (!view.all) {
      if (c.uid() != view.uid) continue;
      // ClientStatus names a job as "job/rank"; job ids hold no '/'.
      for (const auto& j : c.jobs()) own_jobs.insert(j.substr(0, j.rfind('/')));
    }
    for (auto& r : data_plane_.ring_status(c.client_id())) *c.add_rings() = std::move(r);
    const WindowUsage usage = data_plane_.window_usage(c.client_id());
    c.set_windows(usage.windows);
    c.set_window_bytes(usage.bytes);
    c.set_host_windows(usage.windows - usage.device_windows);
    c.set_device_windows(usage.device_windows);
    c.set_device_window_bytes(usage.device_bytes);
    *s.add_clients() = std::move(c);
  }
  for (auto& p : data_plane_.proxy_status()) {
    p.set_uncompleted(uncompleted_by_rail[p.rail()]);
    // Job names are a tenant's business: others see their own jobs' shares.
    if (!view.all) {
      auto* jobs = p.mutable_jobs();
      for (int i = jobs->size() - 1; i >= 0; --i) {
        if (!own_jobs.count(jobs->Get(i).job_id())) jobs->DeleteSubrange(i, 1);
      }
    }
    *s.add_proxies() = std::move(p);
  }
  for (const auto& peer : health_.peers()) {
    auto* ps = s.add_peers();
    ps->set_address(peer.address);
    ps->set_up(peer.up);
  }
  s.set_fd_socket(node_.fd_socket);
  std::map<std::string, v1::JobStatus> jobs;
  for (auto& j : coordinator_.status()) jobs[j.job_id()] = std::move(j);
  for (auto& j : clients_.job_status()) {
    auto it = jobs.find(j.job_id());
    if (it == jobs.end()) jobs[j.job_id()] = std::move(j);  // coordinated elsewhere: local view
  }
  for (auto& [id, j] : jobs) {
    if (view.all || own_jobs.count(id)) *s.add_jobs() = std::move(j);
  }
  return s;
}

}  // namespace epx::daemon
