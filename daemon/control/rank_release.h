// RankRelease: gives back ranks a client held (it left, died, or the daemon
// stops): their data plane on this node, their IPC handles, and their place
// at the job's coordinator.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "daemon/control/node.h"
#include "daemon/control/peer_client.h"
#include "daemon/dataplane/data_plane.h"
#include "daemon/jobs/client_table.h"
#include "daemon/jobs/ipc_exchange.h"

namespace epx::daemon {

class RankRelease {
 public:
  RankRelease(const Node& node, DataPlane& data_plane, IpcExchange& ipc, PeerClient& peers)
      : node_(node), data_plane_(data_plane), ipc_(ipc), peers_(peers) {}

  // Releases every rank in `held`; never blocks. `done` runs once each
  // rank's data plane is released and its coordinator answered or failed.
  void release(const std::vector<Membership>& held, const std::string& reason, std::function<void()> done = {});

 private:
  const Node& node_;
  DataPlane& data_plane_;
  IpcExchange& ipc_;
  PeerClient& peers_;
};

}  // namespace epx::daemon
