// RingPlacement: the descriptor ring groups clients opened (proto/ring/ring.h:
// `channels` rings and their doorbell in one region). Each group is created
// in shared memory, placed whole on the proxy with the fewest rings (its
// doorbell is read by one proxy), drained when its rank is released, and
// its rings reported in status.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/dataplane/job_plane.h"
#include "daemon/dataplane/proxy_set.h"
#include "daemon/dataplane/quota.h"
#include "daemon/proxy/ring_binding.h"
#include "daemon/shm/region_table.h"
#include "epx/status.h"
#include "epx/v1/config.pb.h"
#include "epx/v1/local.pb.h"
#include "epx/v1/status.pb.h"

namespace epx::daemon {

class RingPlacement {
 public:
  RingPlacement(const v1::DaemonConfig& config, ProxySet& proxies, RegionTable& regions, Quota& quota)
      : config_(config), proxies_(proxies), regions_(regions), quota_(quota) {}

  // Opens a ring group for local rank `rank` of `plane`, owned by
  // `client_id` (process `pid` may fetch its memory). Refuses
  // (FAILED_PRECONDITION) an ABI version other than ring::kRingVersion or
  // capabilities this daemon does not give such rings, and more rings than
  // max_rings_per_client (RESOURCE_EXHAUSTED). `done` runs once the proxy
  // serves every ring of it, on this thread or a proxy's; it must not block.
  // The group goes to the least loaded usable rail of `rails` (the rank's
  // GPU's, rail_affinity.h; empty: any), which its rings also stripe over.
  void open(uint64_t client_id, pid_t pid, const std::shared_ptr<JobPlane>& plane, uint32_t rank,
            std::vector<uint32_t> rails, const v1::OpenRingRequest& request,
            std::function<void(Result<v1::RegionReply>)> done);
  // Stops the client's rings of `job_id`; once their in-flight writes
  // completed (bounded by kDrainTimeout) drops their memory and runs
  // `done(count)`, on this thread or a proxy's.
  void close(uint64_t client_id, const std::string& job_id, std::function<void(size_t)> done);
  // Forgets every ring without draining (daemon teardown).
  void clear();

  uint64_t bytes(uint64_t client_id) const;
  std::vector<v1::RingStatus> status(uint64_t client_id) const;

 private:
  struct OwnedGroup {
    uint64_t client_id;
    std::string job_id;
    uint32_t rank;
    size_t proxy;
    std::vector<std::shared_ptr<RingBinding>> rings;  // by channel
    uint64_t token;                                   // fd-socket token of the group's region
  };
  // Takes the group's rings off its proxy once drained; then `done`.
  void drain(OwnedGroup g, std::function<void()> done);
  size_t rings_of(uint64_t client_id) const;  // mu_ held

  const v1::DaemonConfig& config_;
  ProxySet& proxies_;
  RegionTable& regions_;
  Quota& quota_;
  mutable std::mutex mu_;
  std::vector<OwnedGroup> groups_;
  uint64_t next_ring_id_ = 1;
};

}  // namespace epx::daemon
