// StatusReport: the daemon's status as Local.Status and `epxctl status` show
// it: rails, clients with their rings and windows, proxies, jobs. The
// node's parts (rails, proxies) are in every report; clients and jobs only
// as the view allows (status_access.h).
#pragma once

#include "daemon/control/node.h"
#include "daemon/control/peer_health.h"
#include "daemon/control/status_access.h"
#include "daemon/dataplane/data_plane.h"
#include "daemon/jobs/client_table.h"
#include "daemon/jobs/coordinator.h"
#include "epx/v1/status.pb.h"

namespace epx::daemon {

class StatusReport {
 public:
  StatusReport(const Node& node, const ClientTable& clients, const DataPlane& data_plane,
               const Coordinator& coordinator, const PeerHealth& health)
      : node_(node), clients_(clients), data_plane_(data_plane), coordinator_(coordinator), health_(health) {}

  // With view.all = false: the clients of view.uid and the jobs they hold.
  v1::DaemonStatus status(const StatusView& view) const;

 private:
  const Node& node_;
  const ClientTable& clients_;
  const DataPlane& data_plane_;
  const Coordinator& coordinator_;
  const PeerHealth& health_;
};

}  // namespace epx::daemon
