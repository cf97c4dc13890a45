// Daemon: epxd's process-level object. Opens the rails, starts the Peer
// (TCP) and Local (unix socket) gRPC servers, and runs until SIGTERM/SIGINT.
#pragma once

#include <grpcpp/grpcpp.h>

#include <boost/asio.hpp>
#include <functional>
#include <memory>

#include "daemon/control/call_measurements.h"
#include "daemon/control/job_events.h"
#include "daemon/control/local_connections.h"
#include "daemon/control/local_service.h"
#include "daemon/control/node.h"
#include "daemon/control/peer_client.h"
#include "daemon/control/peer_gate.h"
#include "daemon/control/peer_health.h"
#include "daemon/control/peer_security.h"
#include "daemon/control/peer_service.h"
#include "daemon/control/rank_release.h"
#include "daemon/control/status_report.h"
#include "daemon/control/unix_listener.h"
#include "daemon/dataplane/data_plane.h"
#include "daemon/ops/http_endpoint.h"
#include "daemon/ops/metrics_collector.h"
#include "daemon/ops/readiness.h"
#include "daemon/jobs/client_table.h"
#include "daemon/jobs/coordinator.h"
#include "daemon/jobs/ipc_exchange.h"
#include "daemon/shm/fd_server.h"
#include "daemon/shutdown_bound.h"
#include "epx/status.h"
#include "epx/v1/config.pb.h"

namespace epx::daemon {

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> start(v1::DaemonConfig config);
  ~Daemon();

  // Serves until SIGTERM or SIGINT, then shuts down gracefully. SIGHUP
  // reopens the log file and, given set_reload, applies the job weights of
  // the configuration read again. Returns the process exit code.
  int run();
  // How SIGHUP reads the configuration again (file and flags, as at start).
  void set_reload(std::function<Result<v1::DaemonConfig>()> reload) { reload_ = std::move(reload); }

 private:
  Daemon();
  void wait_signal();
  // SIGHUP: the settings that apply while running (job weights).
  void reload_settings();
  void schedule_expiry();
  void shutdown(const std::string& reason);
  // Tells clients and peers; waits at most rpc_timeout_ms for the peers to
  // acknowledge.
  void leave_everything(const std::string& reason);
  // Keeps the gRPC health services in step with draining.
  void update_health();
  // /metrics, /healthz, /readyz.
  HttpResponse serve_http(const std::string& path) const;

  // The node's parts, built once the rails are open; each service gets the
  // few it uses. Declared in dependency order: destroyed in reverse.
  struct Parts {
    Parts(v1::DaemonConfig config, std::string advertise, std::vector<std::unique_ptr<Rail>> rails,
          std::string provider_fallback, const std::shared_ptr<const PeerSecurity>& security);

    Node node;
    PeerGate gate;
    Coordinator coordinator;
    IpcExchange ipc;
    ClientTable clients;
    PeerClient peers;
    LocalConnections connections;
    DataPlane data_plane;
    JobEvents events;
    RankRelease release;
    PeerHealth health;
    StatusReport status;
    LocalCalls local_calls;
    CallMeasurements measurements;
    LocalParts local;
    PeerParts peer;
    Readiness readiness;
    MetricsCollector metrics;
  };

  // First: destroyed last, so it bounds the whole teardown (servers, data
  // plane, rails) as well as shutdown().
  ShutdownBound shutdown_bound_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer expiry_timer_;
  uint64_t ticks_ = 0;
  std::function<Result<v1::DaemonConfig>()> reload_;
  PeerService peer_service_;
  std::unique_ptr<grpc::Server> peer_server_;
  std::unique_ptr<Parts> parts_;
  std::unique_ptr<LocalService> local_service_;
  std::unique_ptr<grpc::Server> local_server_;
  std::unique_ptr<UnixListener> listener_;
  std::unique_ptr<FdServer> fd_server_;
  bool health_draining_ = false;  // what the health services say now (event loop only)
  // Last: stopped first, while the parts it reads still exist.
  std::unique_ptr<HttpEndpoint> http_;
};

}  // namespace epx::daemon
