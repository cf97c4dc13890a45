// JobEvents: coordinator notices (a rank left, the coordinator is gone) to
// the daemons that host the job's ranks, and from there to the local
// clients, whose data planes stop routing to the lost rank.
#pragma once

#include <functional>
#include <vector>

#include "daemon/control/node.h"
#include "daemon/control/peer_client.h"
#include "daemon/dataplane/data_plane.h"
#include "daemon/jobs/client_table.h"
#include "daemon/jobs/coordinator.h"

namespace epx::daemon {

class JobEvents {
 public:
  JobEvents(const Node& node, ClientTable& clients, DataPlane& data_plane, PeerClient& peers)
      : node_(node), clients_(clients), data_plane_(data_plane), peers_(peers) {}

  // A JobEvent from a coordinator, turned into client events for the local
  // ranks of that job.
  void deliver(const v1::JobEvent& event);
  // Sends coordinator notices to member daemons (locally when it is us).
  // `done` runs once every notice was delivered or failed.
  void send(const std::vector<Coordinator::Notice>& notices, std::function<void()> done = {});

 private:
  const Node& node_;
  ClientTable& clients_;
  DataPlane& data_plane_;
  PeerClient& peers_;
};

}  // namespace epx::daemon
