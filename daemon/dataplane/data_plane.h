// DataPlane: the daemon's byte-moving half. Owns the proxies (one per rail),
// the node's signal id space, the shared regions handed to clients, and one
// JobPlane per job with local ranks. gRPC handlers call it; it hands every
// libfabric operation to the proxy that owns the rail.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/control/peer_client.h"
#include "daemon/dataplane/job_plane.h"
#include "daemon/dataplane/signal_space.h"
#include "daemon/proxy/proxy.h"
#include "daemon/shm/region_table.h"
#include "daemon/shm/submitted_fds.h"
#include "epx/v1/config.pb.h"
#include "epx/v1/local.pb.h"
#include "epx/v1/status.pb.h"

namespace epx::daemon {

class DataPlane {
 public:
  DataPlane(const v1::DaemonConfig& config, const std::vector<std::unique_ptr<Rail>>& rails, PeerClient& peers,
            std::string self_address);
  ~DataPlane();  // stops the proxies

  Status start();

  // A local rank's job formed: create the job's plane (and fabric addresses
  // of every rank's daemon) if this is its first local rank.
  Status attach_rank(uint64_t client_id, const v1::RankTable& table, uint32_t rank);
  // The rank left or its client died: stop its rings (after their in-flight
  // writes completed), deregister its windows, free its signals.
  void detach_rank(uint64_t client_id, const std::string& job_id, uint32_t rank);

  using Done = std::function<void(Result<v1::RegionReply>)>;
  // Each creates a region for `pid` and answers through `done` (after the
  // peers acknowledged, for windows and signals).
  void create_window(uint64_t client_id, pid_t pid, const std::string& job_id, uint32_t rank, uint64_t bytes,
                     Done done);
  // A device window: registers the client's GPU memory (the dma-buf it
  // submitted on the fd socket under request.fd_token()) on every rail,
  // when every rail can (device_window_support); otherwise
  // FAILED_PRECONDITION naming each rail that cannot and why. The submitted
  // descriptor is consumed whatever the outcome.
  void create_device_window(uint64_t client_id, pid_t pid, uint32_t rank, const v1::CreateDeviceWindowRequest& request,
                            Done done);
  void open_signals(uint64_t client_id, pid_t pid, const std::string& job_id, uint32_t rank, uint32_t count,
                    Done done);
  Result<v1::RegionReply> open_ring(uint64_t client_id, pid_t pid, const std::string& job_id, uint32_t rank,
                                    uint32_t capacity, bool device_producers);

  // Another daemon published one of its ranks.
  Status apply_publish(const v1::RankPlane& plane);
  void rank_lost(const std::string& job_id, uint32_t rank);

  const RegionTable& regions() const { return regions_; }
  // Descriptors clients sent for device windows, not yet claimed.
  SubmittedFds& submitted_fds() { return submitted_; }
  // OK when every rail can register GPU memory; else why not, per rail.
  Status device_window_support() const;
  std::vector<v1::RingStatus> ring_status(uint64_t client_id) const;
  WindowUsage window_usage(uint64_t client_id) const;
  std::vector<v1::ProxyStatus> proxy_status() const;

 private:
  struct OwnedRing {
    uint64_t client_id;
    std::string job_id;
    uint32_t rank;
    size_t proxy;
    std::shared_ptr<RingBinding> ring;
    uint64_t token;  // fd-socket token of the ring's region
  };

  std::shared_ptr<JobPlane> plane(const std::string& job_id) const;
  // Shared memory a client holds (windows and rings) counts against
  // max_client_mib; a creation reserves its bytes first, so concurrent
  // calls cannot overshoot. unreserve() once the region is recorded (or
  // failed).
  Status reserve(uint64_t client_id, uint64_t bytes);
  void unreserve(uint64_t client_id, uint64_t bytes);
  // Registers `out`'s memory (host region or device dma-buf) on every rail,
  // on each rail's proxy thread; fills its mrs and keys.
  Result<LocalRegion> register_region(LocalRegion out);
  Result<LocalRegion> register_host(std::shared_ptr<SharedRegion> region, uint64_t client_id);
  // Records a registered window for `rank` and publishes it; answers `done`.
  void add_window(const std::shared_ptr<JobPlane>& p, uint32_t rank, LocalRegion window, v1::RegionReply reply,
                  Done done);
  void close_registrations(std::vector<LocalRegion>& regions);
  // Sends `rank`'s current windows/signals to every other daemon of the job.
  void publish(const std::shared_ptr<JobPlane>& plane, uint32_t rank, std::function<void(Status)> done);

  const v1::DaemonConfig& config_;
  const std::vector<std::unique_ptr<Rail>>& rails_;
  PeerClient& peers_;
  const std::string self_address_;
  SignalSpace signals_;
  RegionTable regions_;
  SubmittedFds submitted_;
  std::vector<std::unique_ptr<Proxy>> proxies_;
  // Per rail: fabric address bytes -> fi_addr (touched only on that proxy).
  std::vector<std::map<std::string, fi_addr_t>> av_cache_;

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<JobPlane>> jobs_;
  std::vector<OwnedRing> rings_;
  uint64_t next_ring_id_ = 1;
  uint64_t next_key_ = 1;
  std::map<uint64_t, uint64_t> reserved_;  // client -> bytes being created
};

}  // namespace epx::daemon
