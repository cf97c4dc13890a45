#include "daemon/control/daemon_state.h"

#include <pthread.h>
#include <unistd.h>

#include <condition_variable>

#include <spdlog/spdlog.h>

#include "daemon/fabric/device_memory.h"

namespace epx::daemon {

const char kVersion[] = "0.1.0";

DaemonState::DaemonState(v1::DaemonConfig config, std::string advertise_address,
                         std::vector<std::unique_ptr<Rail>> rails)
    : config_(std::move(config)),
      advertise_address_(std::move(advertise_address)),
      rails_(std::move(rails)),
      started_(std::chrono::steady_clock::now()),
      coordinator_(advertise_address_),
      clients_(config_.max_clients(), config_.max_jobs_per_client()),
      fd_socket_(config_.control_socket() + ".fd"),
      data_plane_(std::make_unique<DataPlane>(
          config_, rails_,
          [this](const std::string& address, const v1::RankPlane& plane, std::function<void(Status)> done) {
            peers_.publish(address, plane, rpc_deadline(),
                           [done = std::move(done)](const grpc::Status& s, v1::PublishReply&) {
                             done(s.ok() ? Status() : unavailable(s.error_message()));
                           });
          },
          advertise_address_)) {
  teardown_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "epx-teardown");
    std::unique_lock<std::mutex> lock(teardown_mu_);
    for (;;) {
      teardown_cv_.wait(lock, [&] { return teardown_stop_ || !teardown_queue_.empty(); });
      if (teardown_queue_.empty()) return;  // stopping, nothing left
      auto [held, reason] = std::move(teardown_queue_.front());
      teardown_queue_.pop_front();
      lock.unlock();
      release(held, reason);
      lock.lock();
    }
  });
}

DaemonState::~DaemonState() {
  {
    std::lock_guard<std::mutex> lock(teardown_mu_);
    teardown_stop_ = true;
  }
  teardown_cv_.notify_all();
  teardown_.join();
  data_plane_.reset();
}

void DaemonState::release_later(std::vector<Membership> held, std::string reason) {
  {
    std::lock_guard<std::mutex> lock(teardown_mu_);
    teardown_queue_.emplace_back(std::move(held), std::move(reason));
  }
  teardown_cv_.notify_one();
}

Status DaemonState::start_data_plane() { return data_plane_->start(); }

uint64_t DaemonState::uptime_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count();
}

PeerClient::Clock::time_point DaemonState::rpc_deadline() const {
  return PeerClient::Clock::now() + std::chrono::milliseconds(config_.rpc_timeout_ms());
}

void DaemonState::deliver_job_event(const v1::JobEvent& event) {
  v1::ClientEvent out;
  int64_t skip = -1;
  if (event.has_rank_left()) {
    auto* lost = out.mutable_rank_lost();
    lost->set_job_id(event.job_id());
    lost->set_rank(event.rank_left().rank());
    lost->set_node(event.rank_left().node());
    lost->set_reason(event.rank_left().reason());
    skip = event.rank_left().rank();
    data_plane_->rank_lost(event.job_id(), event.rank_left().rank());
    spdlog::info("job {}: rank {} on {} left: {}", event.job_id(), lost->rank(), lost->node(), lost->reason());
  } else if (event.has_coordinator_gone()) {
    auto* aborted = out.mutable_job_aborted();
    aborted->set_job_id(event.job_id());
    aborted->set_reason("coordinator gone: " + event.coordinator_gone().reason());
    spdlog::warn("job {}: {}", event.job_id(), aborted->reason());
  } else {
    return;
  }
  clients_.deliver(event.job_id(), skip, out);
}

namespace {

// Runs `done` when the last of `count` asynchronous calls finished.
std::function<void()> countdown(size_t count, std::function<void()> done) {
  if (count == 0) {
    if (done) done();
    return [] {};
  }
  auto remaining = std::make_shared<std::atomic<size_t>>(count);
  auto shared_done = std::make_shared<std::function<void()>>(std::move(done));
  return [remaining, shared_done] {
    if (remaining->fetch_sub(1) == 1 && *shared_done) (*shared_done)();
  };
}

}  // namespace

void DaemonState::send_notices(const std::vector<Coordinator::Notice>& notices, std::function<void()> done) {
  auto one_done = countdown(notices.size(), std::move(done));
  for (const auto& n : notices) {
    if (n.daemon_address == advertise_address_) {
      deliver_job_event(n.event);
      one_done();
      continue;
    }
    peers_.notify(n.daemon_address, n.event, rpc_deadline(),
                  [address = n.daemon_address, job = n.event.job_id(), one_done](const grpc::Status& s,
                                                                                 v1::NotifyReply&) {
                    if (!s.ok()) {
                      spdlog::warn("job {}: could not notify daemon {}: {}", job, address, s.error_message());
                    }
                    one_done();
                  });
  }
}

void DaemonState::release(const std::vector<Membership>& held, const std::string& reason,
                          std::function<void()> done) {
  auto one_done = countdown(held.size(), std::move(done));
  for (const auto& m : held) {
    if (m.formed) data_plane_->detach_rank(m.client_id, m.job_id, m.rank);
    ipc_exchange_.forget(m.job_id, m.rank);
    v1::PeerLeaveRequest req;
    req.set_job_id(m.job_id);
    req.set_rank(m.rank);
    req.set_reason(reason);
    spdlog::info("job {}: releasing rank {} at coordinator {}: {}", m.job_id, m.rank, m.coordinator, reason);
    peers_.leave(m.coordinator, req, rpc_deadline(), [m, one_done](const grpc::Status& s, v1::PeerLeaveReply&) {
      if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) {
        spdlog::warn("job {}: coordinator {} did not take rank {}'s leave: {}", m.job_id, m.coordinator, m.rank,
                     s.error_message());
      }
      one_done();
    });
  }
}

void DaemonState::begin_shutdown(const std::string& reason) {
  if (shutting_down_.exchange(true)) return;
  spdlog::info("shutting down: {}", reason);
  const std::string why = "daemon " + config_.node_name() + " (" + advertise_address_ + ") " + reason;
  std::vector<Membership> held = clients_.close_all(why);

  // Shared with the leave callbacks, which may outlive this frame when a
  // coordinator does not answer in time.
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    bool released = false;
  };
  auto wait = std::make_shared<Wait>();
  // Two groups of calls: our ranks' leaves, and the coordinator's goodbyes.
  auto group_done = countdown(2, [wait] {
    std::lock_guard<std::mutex> lock(wait->mu);
    wait->released = true;
    wait->cv.notify_all();
  });
  release(held, why, group_done);
  send_notices(coordinator_.shutdown(why), group_done);
  std::unique_lock<std::mutex> lock(wait->mu);
  // Bounded: every leave call carries rpc_deadline().
  if (!wait->cv.wait_for(lock, std::chrono::milliseconds(config_.rpc_timeout_ms() + 1000),
                         [&] { return wait->released; })) {
    spdlog::warn("shutdown: some coordinators did not acknowledge within {} ms", config_.rpc_timeout_ms());
  }
}

void DaemonState::check_peers() {
  if (shutting_down()) return;
  const auto now = std::chrono::steady_clock::now();
  const auto limit = std::chrono::milliseconds(config_.peer_timeout_ms());
  std::map<std::string, std::vector<std::pair<std::string, v1::RankEntry>>> by_daemon;
  for (const auto& t : clients_.formed_tables()) {
    for (const auto& r : t.ranks()) {
      if (r.daemon_address() != advertise_address_) by_daemon[r.daemon_address()].emplace_back(t.job_id(), r);
    }
  }
  std::lock_guard<std::mutex> lock(health_mu_);
  for (auto it = health_.begin(); it != health_.end();) {
    it = by_daemon.count(it->first) ? std::next(it) : health_.erase(it);  // no shared job any more
  }
  for (const auto& [address, ranks] : by_daemon) {
    auto [h, inserted] = health_.try_emplace(address, PeerHealth{now, false});
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
        deliver_job_event(e);
      }
    }
    if (h->second.declared_lost) continue;
    const auto deadline = PeerClient::Clock::now() + std::min(limit, std::chrono::milliseconds(1000));
    peers_.ping(address, deadline, [this, address](const grpc::Status& s, v1::PingReply&) {
      if (!s.ok()) return;
      std::lock_guard<std::mutex> lock(health_mu_);
      auto it = health_.find(address);
      if (it != health_.end()) it->second.last_ok = std::chrono::steady_clock::now();
    });
  }
}

v1::DaemonStatus DaemonState::status() const {
  v1::DaemonStatus s;
  s.set_node(config_.node_name());
  s.set_version(kVersion);
  s.set_pid(static_cast<uint32_t>(getpid()));
  s.set_uptime_ms(uptime_ms());
  s.set_peer_address(advertise_address_);
  s.set_control_socket(config_.control_socket());
  s.set_provider(rails_.empty() ? config_.provider() : rails_.front()->provider());
  for (const auto& rail : rails_) {
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
  }
  s.set_libfabric(libfabric_description());
  for (auto& c : clients_.client_status()) {
    for (auto& r : data_plane_->ring_status(c.client_id())) *c.add_rings() = std::move(r);
    const WindowUsage usage = data_plane_->window_usage(c.client_id());
    c.set_windows(usage.windows);
    c.set_window_bytes(usage.bytes);
    c.set_host_windows(usage.windows - usage.device_windows);
    c.set_device_windows(usage.device_windows);
    c.set_device_window_bytes(usage.device_bytes);
    *s.add_clients() = std::move(c);
  }
  for (auto& p : data_plane_->proxy_status()) *s.add_proxies() = std::move(p);
  s.set_fd_socket(fd_socket_);
  std::map<std::string, v1::JobStatus> jobs;
  for (auto& j : coordinator_.status()) jobs[j.job_id()] = std::move(j);
  for (auto& j : clients_.job_status()) {
    auto it = jobs.find(j.job_id());
    if (it == jobs.end()) jobs[j.job_id()] = std::move(j);  // coordinated elsewhere: local view
  }
  for (auto& [id, j] : jobs) *s.add_jobs() = std::move(j);
  return s;
}

}  // namespace epx::daemon
