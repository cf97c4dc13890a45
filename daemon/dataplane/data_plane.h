// DataPlane: the daemon's byte-moving half, composed of one part per
// concern: the proxies and registrations (ProxySet), the job planes
// (JobPlanes), the rings (RingPlacement), the per-client quota (Quota), the
// regions clients fetch over the fd socket (RegionTable) and the dma-bufs
// they submitted (SubmittedFds). gRPC handlers call it; every libfabric
// operation runs on the proxy that owns the rail.
//
// Nothing here blocks its caller: work that needs a proxy is handed to it,
// and the call's `done` runs when it finished, on the caller's thread, a
// proxy's, or the deadline thread (a rail that does not answer within
// ProxySet::kRailCallTimeout is an error naming it). `done` must not block.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/dataplane/job_planes.h"
#include "daemon/dataplane/proxy_set.h"
#include "daemon/dataplane/quota.h"
#include "daemon/dataplane/rail_affinity.h"
#include "daemon/dataplane/ring_placement.h"
#include "daemon/shm/region_table.h"
#include "daemon/shm/submitted_fds.h"
#include "epx/v1/config.pb.h"
#include "epx/v1/local.pb.h"
#include "epx/v1/peer.pb.h"
#include "epx/v1/status.pb.h"

namespace epx::daemon {

// Sends one rank's plane to the daemon at `address` (the control layer's
// Peer client); `done` runs once it answered or failed.
// One rail of a daemon as peers see it (the Ping reply).
struct PeerRail {
  bool usable = true;  // healthy or retrying, link up
  std::string why;     // when not usable
  bool operator==(const PeerRail& o) const { return usable == o.usable && why == o.why; }
};

using PublishFn =
    std::function<void(const std::string& address, const v1::RankPlane& plane, std::function<void(Status)> done)>;

class DataPlane {
 public:
  DataPlane(const v1::DaemonConfig& config, const std::vector<std::unique_ptr<Rail>>& rails, PublishFn publish,
            std::string self_address);
  ~DataPlane();  // closes registrations, then stops the proxies

  // Reads where each rail's NIC sits (sysfs_root), checks config gpu_rails
  // and starts the proxies, each on its NIC's NUMA node.
  Status start();
  // Reads each rail's link state; a change goes to the rail's health (a
  // link down makes it unhealthy at once). Called periodically.
  void check_links();

  // A local rank's job formed: create the job's plane (and fabric addresses
  // of every rank's daemon) if this is its first local rank.
  void attach_rank(uint64_t client_id, const v1::RankTable& table, uint32_t rank, std::function<void(Status)> done);
  // The rank left or its client died: stop its rings (after their in-flight
  // writes completed), deregister its windows, free its signals; then `done`.
  void detach_rank(uint64_t client_id, const std::string& job_id, uint32_t rank, std::function<void()> done = {});

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
  void open_signals(uint64_t client_id, pid_t pid, const std::string& job_id, uint32_t rank, uint32_t count, Done done);
  // The ring group is served from the rails nearest `gpu` (the PCI address
  // the rank joined with; empty: any rail): rail_affinity.h.
  void open_ring(uint64_t client_id, pid_t pid, uint32_t rank, const std::string& gpu,
                 const v1::OpenRingRequest& request, Done done);

  // Another daemon (`from`, its advertise address) published one of its
  // ranks; for a leaving rank, `done` runs once this daemon's proxies can
  // no longer write to it. The caller checked `from` against the job's rank
  // table when the job has a plane here; a plane kept for a job not formed
  // here yet is checked when it forms.
  void apply_publish(const v1::RankPlane& plane, const std::string& from, std::function<void(Status)> done);
  // The job's plane while a rank of it is attached here (its rank table
  // names each rank's daemon: the Peer service checks callers against it);
  // null otherwise.
  std::shared_ptr<const JobPlane> job_plane(const std::string& job_id) const { return jobs_.find(job_id); }
  // Replaces the operator's job weights (config job_weights, validated) and
  // re-weighs every job already here (SIGHUP); later jobs get them too.
  void set_job_weights(const google::protobuf::RepeatedPtrField<v1::JobWeight>& weights);
  void rank_lost(const std::string& job_id, uint32_t rank);
  // A peer daemon's rails as its last ping answered (by index): when their
  // usability changed it is logged, and every job with ranks there re-pairs
  // our rails with its usable ones (JobPlane::repair). Jobs formed later
  // start from it.
  void peer_rails(const std::string& daemon, std::vector<PeerRail> rails);
  // We share no job with `daemon` any more: its last report is dropped (a
  // job formed with it later starts from every rail usable again).
  void forget_peer(const std::string& daemon);
  // This daemon's rails, for a peer's ping.
  std::vector<PeerRail> rails_for_peers() const;

  const RegionTable& regions() const { return regions_; }
  // Descriptors clients sent for device windows, not yet claimed.
  SubmittedFds& submitted_fds() { return submitted_; }
  // OK when every rail can register GPU memory; else why not, per rail.
  Status device_window_support() const;
  std::vector<v1::RingStatus> ring_status(uint64_t client_id) const { return rings_.status(client_id); }
  WindowUsage window_usage(uint64_t client_id) const { return jobs_.window_usage(client_id); }
  std::vector<v1::ProxyStatus> proxy_status() const { return proxies_.status(); }
  // The rail's health, counters, NIC location and link.
  void fill_rail_status(size_t rail, v1::RailStatus* out) const;
  std::vector<v1::GpuRailsStatus> gpu_rails_status() const {
    return affinity_ ? affinity_->status() : std::vector<v1::GpuRailsStatus>{};
  }
  std::vector<ProxyStats> proxy_stats() const { return proxies_.stats(); }
  std::vector<Status> proxies_answering(std::chrono::milliseconds timeout) const { return proxies_.answering(timeout); }

 private:
  Result<std::shared_ptr<JobPlane>> formed(const std::string& job_id) const;
  Status check_window_bytes(const std::string& what, uint64_t bytes) const;
  // After a rank's rings are gone: its regions, signals and plane.
  void release_rank_regions(const std::shared_ptr<JobPlane>& p, uint64_t client_id, uint32_t rank, size_t rings,
                            std::function<void()> done);
  // After the quiesce: frees the signal ids, closes the registrations.
  void close_rank_regions(const std::shared_ptr<JobPlane>& p, uint32_t rank, size_t rings,
                          const std::shared_ptr<JobPlane::Released>& released, std::function<void()> done);
  // Records a registered window for `rank` and publishes it; answers `done`.
  void add_window(const std::shared_ptr<JobPlane>& p, uint32_t rank, LocalRegion window, v1::RegionReply reply,
                  Done done);
  // Sends `rank`'s current windows/signals to every other daemon of the job.
  void publish(const std::shared_ptr<JobPlane>& plane, uint32_t rank, std::function<void(Status)> done);
  // Sends `plane` to every other daemon of the job; `done` gets the first error.
  void send_to_peers(const std::shared_ptr<JobPlane>& p, const v1::RankPlane& plane, std::function<void(Status)> done);
  // A local rank is leaving (already absent from the job's view): waits
  // until neither this daemon's proxies nor any other daemon's can still
  // write to it, so closing its registrations cannot hit a write in flight.
  void quiesce_leaving(const std::shared_ptr<JobPlane>& p, uint32_t rank, std::function<void()> done);

  // Longest wait for writes towards a leaving rank to drain, on each daemon:
  // three quarters of rpc_timeout_ms, so a peer answers within the call.
  std::chrono::milliseconds quiesce_timeout() const;

  // Re-pairs the plane's rails with `daemon`'s by its usable rails,
  // inserting the new pairs' addresses first (JobPlane::set_peer_rails).
  void repair_plane(const std::shared_ptr<JobPlane>& plane, const std::string& daemon,
                    const std::vector<bool>& usable);
  // Sets the plane's weight from the current job weights.
  void weigh(JobPlane& plane) const;

  const v1::DaemonConfig& config_;
  const std::vector<std::unique_ptr<Rail>>& rails_;
  const PublishFn publish_;
  const std::string self_address_;
  RegionTable regions_;
  SubmittedFds submitted_;
  ProxySet proxies_;
  JobPlanes jobs_;
  Quota quota_;
  RingPlacement rings_;
  // Set by start(), read-only afterwards.
  std::vector<RailDevice> rail_devices_;
  std::optional<RailAffinity> affinity_;
  mutable std::mutex peer_rails_mu_;
  std::map<std::string, std::vector<PeerRail>> peer_rails_;  // by daemon address
  mutable std::mutex links_mu_;
  std::vector<LinkState> links_;  // by rail, as check_links last read them
  // Held while a weight is computed and set, so a reload never races a
  // job's first weighing with the old table.
  mutable std::mutex weights_mu_;
  google::protobuf::RepeatedPtrField<v1::JobWeight> weights_;
};

}  // namespace epx::daemon
