// DaemonState: everything the daemon's services share. Built once at start,
// alive until the gRPC servers are shut down.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <thread>
#include <mutex>
#include <memory>
#include <string>
#include <vector>

#include "daemon/control/local_connections.h"
#include "daemon/control/peer_client.h"
#include "daemon/dataplane/data_plane.h"
#include "epx/v1/config.pb.h"
#include "epx/v1/status.pb.h"
#include "daemon/fabric/rail.h"
#include "daemon/jobs/client_table.h"
#include "daemon/jobs/coordinator.h"
#include "daemon/jobs/ipc_exchange.h"

namespace epx::daemon {

extern const char kVersion[];

class DaemonState {
 public:
  DaemonState(v1::DaemonConfig config, std::string advertise_address, std::vector<std::unique_ptr<Rail>> rails);
  ~DaemonState();
  // Starts the proxies.
  Status start_data_plane();

  const v1::DaemonConfig& config() const { return config_; }
  const std::string& advertise_address() const { return advertise_address_; }
  const std::vector<std::unique_ptr<Rail>>& rails() const { return rails_; }
  Coordinator& coordinator() { return coordinator_; }
  IpcExchange& ipc_exchange() { return ipc_exchange_; }
  ClientTable& clients() { return clients_; }
  PeerClient& peers() { return peers_; }
  LocalConnections& connections() { return connections_; }
  DataPlane& data_plane() { return *data_plane_; }
  const std::string& fd_socket() const { return fd_socket_; }
  bool shutting_down() const { return shutting_down_.load(std::memory_order_acquire); }
  uint64_t uptime_ms() const;

  // Deadline for a plain daemon-to-daemon call.
  PeerClient::Clock::time_point rpc_deadline() const;

  // A JobEvent from a coordinator, turned into client events for the local
  // ranks of that job.
  void deliver_job_event(const v1::JobEvent& event);
  // Sends coordinator notices to member daemons (locally when it is us).
  // `done` runs once every notice was delivered or failed.
  void send_notices(const std::vector<Coordinator::Notice>& notices, std::function<void()> done = {});
  // Releases ranks at their coordinators (async, logged). `done` runs once
  // all answered or failed.
  void release(const std::vector<Membership>& held, const std::string& reason, std::function<void()> done = {});
  // The same, on the teardown thread: for gRPC callbacks, which must not
  // block while rings drain (up to seconds per ring).
  void release_later(std::vector<Membership> held, std::string reason);

  // Liveness: pings every daemon that holds ranks of our jobs; one silent
  // for longer than peer_timeout_ms has its ranks reported lost to our
  // clients (RankLost naming it). Called periodically by the Daemon.
  void check_peers();

  // Graceful shutdown: tells clients and peers; waits at most rpc_timeout
  // for the peers to acknowledge.
  void begin_shutdown(const std::string& reason);

  v1::DaemonStatus status() const;

 private:
  const v1::DaemonConfig config_;
  const std::string advertise_address_;
  const std::vector<std::unique_ptr<Rail>> rails_;
  const std::chrono::steady_clock::time_point started_;
  Coordinator coordinator_;
  IpcExchange ipc_exchange_;
  ClientTable clients_;
  PeerClient peers_;
  LocalConnections connections_;
  const std::string fd_socket_;
  // Declared last: destroyed first, while rails and peers still exist.
  std::unique_ptr<DataPlane> data_plane_;
  std::atomic<bool> shutting_down_{false};
  struct PeerHealth {
    std::chrono::steady_clock::time_point last_ok;
    bool declared_lost = false;
  };
  std::mutex teardown_mu_;
  std::condition_variable teardown_cv_;
  std::deque<std::pair<std::vector<Membership>, std::string>> teardown_queue_;
  bool teardown_stop_ = false;
  std::thread teardown_;  // started last, joined first
  std::mutex health_mu_;
  std::map<std::string, PeerHealth> health_;  // by daemon address
};

}  // namespace epx::daemon
