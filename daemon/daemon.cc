#include "daemon/daemon.h"

#include <condition_variable>
#include <mutex>

#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "daemon/config/config.h"
#include "daemon/control/countdown.h"
#include "daemon/fabric/device_memory.h"
#include "daemon/fabric/rail_discovery.h"
#include "daemon/logging.h"

namespace epx::daemon {
namespace {

// How often barrier deadlines are checked: the error for a missing rank comes
// at most this much after the timeout the client asked for.
constexpr std::chrono::milliseconds kExpiryTick(100);
// Peers are pinged every kPeerCheckTicks ticks (500 ms).
constexpr uint64_t kPeerCheckTicks = 5;

bool is_wildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]";
}

}  // namespace

Daemon::Parts::Parts(v1::DaemonConfig config, std::string advertise, std::vector<std::unique_ptr<Rail>> rails,
                     std::string provider_fallback, const std::shared_ptr<const PeerSecurity>& security)
    : node(std::move(config), std::move(advertise), std::move(rails), std::move(provider_fallback)),
      gate(security),
      coordinator(node.advertise_address),
      clients(node.config.max_clients(), node.config.max_jobs_per_client()),
      peers(security, node.advertise_address),
      data_plane(
          node.config, node.rails,
          [this](const std::string& address, const v1::RankPlane& plane, std::function<void(Status)> done) {
            peers.publish(address, plane, node.rpc_deadline(),
                          [done = std::move(done)](const grpc::Status& s, v1::PublishReply&) {
                            done(s.ok() ? Status() : unavailable(s.error_message()));
                          });
          },
          node.advertise_address),
      events(node, clients, data_plane, peers),
      release(node, data_plane, ipc, peers),
      health(node, clients, peers, events, data_plane),
      status(node, clients, data_plane, coordinator, health),
      local{node, clients, connections, peers, data_plane, ipc, release, status, local_calls, measurements},
      peer{node, coordinator, events, data_plane, clients, gate},
      readiness(node, data_plane, health),
      metrics(node, status, data_plane, measurements, readiness) {}

Daemon::Daemon() : signals_(io_, SIGTERM, SIGINT, SIGHUP), expiry_timer_(io_) {}

Daemon::~Daemon() {
  if (listener_) listener_->close();
  if (fd_server_) fd_server_->close();
  // The members go next (servers, data plane, proxies, rails): still within
  // the bound armed by shutdown().
  shutdown_bound_.stage("stopping the data plane and closing the rails");
}

Result<std::unique_ptr<Daemon>> Daemon::start(v1::DaemonConfig config) {
  std::unique_ptr<Daemon> d(new Daemon());
  auto security = PeerSecurity::load(config);
  if (!security.ok()) return security.status().with_context("peer security");
  if ((*security)->mode() == PeerSecurity::Mode::kNone) {
    spdlog::warn("peer security: {}", (*security)->describe());
  } else {
    spdlog::info("peer security: {}", (*security)->describe());
  }

  std::vector<std::string> domains(config.rail_domains().begin(), config.rail_domains().end());
  auto choice = choose_provider(config.provider(), config.require_provider());
  if (!choice.ok()) return choice.status().with_context("opening rails");
  if (!choice->fallback.empty()) spdlog::warn("rails: {}", choice->fallback);
  auto rails = open_rails(choice->provider, domains, config.rails_per_domain());
  if (!rails.ok()) return rails.status().with_context("opening rails");
  for (const auto& rail : *rails) {
    spdlog::info("rail {}: provider {} fabric {} domain {} mr_mode {} hmem {}", rail->index(), rail->provider(),
                 rail->fabric_name(), rail->domain_name(), mr_mode_string(rail->mr_mode()), rail->supports_hmem());
    Status gpu = device_window_support(*rail);
    spdlog::info("rail {}: device windows {}", rail->index(), gpu.ok() ? "possible" : "not possible: " + gpu.message());
  }
  spdlog::info("libfabric {}", libfabric_description());

  // grpc.health.v1 on both servers (probes, load balancers, epxctl health).
  grpc::EnableDefaultHealthCheckService(true);
  int port = 0;
  grpc::ServerBuilder peer_builder;
  peer_builder.AddListeningPort(config.peer_listen(), (*security)->server_credentials(), &port);
  peer_builder.RegisterService(&d->peer_service_);
  peer_builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // gRPC sets SO_REUSEPORT by default: a second daemon on a taken port would
  // start and share the peers' calls with the first. Without it, it fails.
  peer_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  peer_builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  d->peer_server_ = peer_builder.BuildAndStart();
  if (!d->peer_server_ || port == 0) {
    return unavailable("cannot listen for peers on " + config.peer_listen() +
                       " (address in use, e.g. by another epxd, or not local)");
  }

  std::string advertise = config.advertise_address();
  if (advertise.empty()) {
    auto hp = split_host_port(config.peer_listen());
    std::string host = is_wildcard(hp->first) ? config.node_name() : hp->first;
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    advertise = host + ":" + std::to_string(port);
  }
  if (auto hp = split_host_port(advertise);
      (*security)->mode() == PeerSecurity::Mode::kTls && hp.ok() && !(*security)->certificate_names(hp->first)) {
    spdlog::warn(
        "peer security: the certificate does not name this daemon's advertise host {}: peers that dial {} "
        "will refuse it (add it as a subject alternative name, or set advertise_address to a name it has)",
        hp->first, advertise);
  }
  d->parts_ = std::make_unique<Parts>(config, advertise, std::move(rails.value()), choice->fallback, *security);
  Parts& parts = *d->parts_;
  EPX_RETURN_IF_ERROR(parts.data_plane.start());
  d->peer_service_.attach(&parts.peer);

  d->local_service_ = std::make_unique<LocalService>(parts.local);
  grpc::ServerBuilder local_builder;
  local_builder.RegisterService(d->local_service_.get());
  d->local_server_ = local_builder.BuildAndStart();
  if (!d->local_server_) return internal_error("cannot start the Local gRPC server");
  d->listener_ = std::make_unique<UnixListener>(d->io_, parts.connections);
  EPX_RETURN_IF_ERROR(d->listener_->listen(config.control_socket(), config.socket_group(), d->local_server_.get()));
  ClientTable& clients = parts.clients;
  d->fd_server_ = std::make_unique<FdServer>(
      d->io_, parts.data_plane.regions(), parts.data_plane.submitted_fds(),
      [&clients](uint64_t client_id, pid_t pid) { return clients.check_process(client_id, pid); });
  EPX_RETURN_IF_ERROR(d->fd_server_->listen(parts.node.fd_socket, config.socket_group()));

  d->update_health();
  if (!config.metrics_listen().empty()) {
    Daemon* raw = d.get();
    auto http =
        HttpEndpoint::start(config.metrics_listen(), [raw](const std::string& path) { return raw->serve_http(path); });
    if (!http.ok()) return http.status();
    d->http_ = std::move(http.value());
    parts.node.metrics_port.store(d->http_->port(), std::memory_order_relaxed);
    spdlog::info("metrics endpoint: /metrics, /healthz, /readyz on {} (port {})", config.metrics_listen(),
                 d->http_->port());
  }

  spdlog::info("epxd {} on node {}: control socket {}, peers at {} (listening on {})", kVersion, config.node_name(),
               config.control_socket(), advertise, config.peer_listen());
  return d;
}

void Daemon::wait_signal() {
  signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    if (signo == SIGHUP) {
      if (auto s = reopen_logs(); !s.ok()) spdlog::error("SIGHUP: {}", s.to_string());
      spdlog::info("SIGHUP: logs reopened");
      reload_settings();
      wait_signal();
      return;
    }
    shutdown(signo == SIGTERM ? "stopped by SIGTERM" : "stopped by SIGINT");
  });
}

void Daemon::reload_settings() {
  if (!reload_) return;
  auto config = reload_();
  if (!config.ok()) {
    spdlog::error("SIGHUP: configuration not reloaded, job weights unchanged: {}", config.status().to_string());
    return;
  }
  parts_->data_plane.set_job_weights(config->job_weights());
  spdlog::info("SIGHUP: {} job weight entries applied; other settings change only at a restart",
               config->job_weights_size());
}

void Daemon::schedule_expiry() {
  expiry_timer_.expires_after(kExpiryTick);
  expiry_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    parts_->coordinator.expire(Coordinator::Clock::now());
    parts_->ipc.expire(IpcExchange::Clock::now());
    parts_->data_plane.submitted_fds().expire(SubmittedFds::Clock::now());
    parts_->data_plane.check_links();
    if (++ticks_ % kPeerCheckTicks == 0) parts_->health.check();
    parts_->readiness.tick();
    update_health();
    schedule_expiry();
  });
}

void Daemon::shutdown(const std::string& reason) {
  const Node& node = parts_->node;
  shutdown_bound_.arm(std::chrono::milliseconds(node.config.shutdown_timeout_ms()), "closing the listeners");
  listener_->close();  // no new clients
  fd_server_->close();
  shutdown_bound_.stage("leaving jobs (telling coordinators and member daemons)");
  leave_everything(reason);
  // Calls waiting on others (joins, barriers, exchanges) would otherwise
  // wait for ranks that may never come: answer them now, naming this daemon.
  shutdown_bound_.stage("answering waiting local calls");
  const size_t answered = parts_->local_calls.close_all(grpc::Status(
      grpc::StatusCode::UNAVAILABLE,
      "daemon " + node.config.node_name() + " (" + node.advertise_address + ") is shutting down: " + reason));
  if (answered > 0) spdlog::info("shutdown: answered {} waiting local call(s)", answered);
  // Calls still in flight get a second to finish, then are cancelled; every
  // waiting call finishes on cancellation, so these return.
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(1);
  shutdown_bound_.stage("stopping the Local gRPC server");
  local_server_->Shutdown(deadline);
  shutdown_bound_.stage("stopping the Peer gRPC server");
  peer_server_->Shutdown(deadline);
  shutdown_bound_.stage("stopping the event loop");
  expiry_timer_.cancel();
  signals_.cancel();
  io_.stop();
  spdlog::info("epxd stopped");
}

void Daemon::leave_everything(const std::string& reason) {
  Parts& p = *parts_;
  if (p.node.stopping.exchange(true, std::memory_order_acq_rel)) return;
  spdlog::info("shutting down: {}", reason);
  const std::string why = "daemon " + p.node.config.node_name() + " (" + p.node.advertise_address + ") " + reason;
  std::vector<Membership> held = p.clients.close_all(why);

  // Shared with the callbacks, which may outlive this frame when a
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
  p.release.release(held, why, group_done);
  p.events.send(p.coordinator.shutdown(why), group_done);
  std::unique_lock<std::mutex> lock(wait->mu);
  // Bounded: every leave call carries rpc_deadline().
  if (!wait->cv.wait_for(lock, std::chrono::milliseconds(p.node.config.rpc_timeout_ms() + 1000),
                         [&] { return wait->released; })) {
    spdlog::warn("shutdown: some coordinators did not acknowledge within {} ms", p.node.config.rpc_timeout_ms());
  }
}

void Daemon::update_health() {
  const bool draining = parts_->node.is_draining();
  if (draining == health_draining_ && ticks_ > 1) return;
  health_draining_ = draining;
  // The Local service takes no joins while draining; the Peer service goes
  // on serving the jobs that run. gRPC's Shutdown sets NOT_SERVING itself.
  if (auto* h = local_server_->GetHealthCheckService()) {
    h->SetServingStatus(true);
    h->SetServingStatus("epx.v1.Local", !draining);
  }
  if (auto* h = peer_server_->GetHealthCheckService()) {
    h->SetServingStatus(true);
    h->SetServingStatus("epx.v1.Peer", true);
  }
}

HttpResponse Daemon::serve_http(const std::string& path) const {
  if (path == "/metrics") {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, parts_->metrics.Collect());
    return {200, "text/plain; version=0.0.4; charset=utf-8", out.str()};
  }
  if (path == "/healthz" || path == "/readyz") {
    const HealthVerdict v = path == "/healthz" ? parts_->readiness.live() : parts_->readiness.ready();
    return {v.ok ? 200 : 503, "text/plain; charset=utf-8", v.text()};
  }
  return {404, "text/plain; charset=utf-8", "no such path: " + path + " (served: /metrics, /healthz, /readyz)\n"};
}

int Daemon::run() {
  wait_signal();
  schedule_expiry();
  io_.run();
  return 0;
}

}  // namespace epx::daemon
