// PeerHealth: liveness of the daemons that hold ranks of our jobs. Each is
// pinged periodically; one silent for longer than peer_timeout_ms has its
// ranks reported lost to our clients (RankLost naming it). Each answer also
// says which of the peer's rails are usable: the data plane re-pairs our
// rails away from those that are not (DataPlane::peer_rails).
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/control/job_events.h"
#include "daemon/control/node.h"
#include "daemon/control/peer_client.h"
#include "daemon/dataplane/data_plane.h"
#include "daemon/jobs/client_table.h"

namespace epx::daemon {

class PeerHealth {
 public:
  PeerHealth(const Node& node, ClientTable& clients, PeerClient& peers, JobEvents& events, DataPlane& data_plane)
      : node_(node), clients_(clients), peers_(peers), events_(events), data_plane_(data_plane) {}

  // Called periodically by the Daemon; never blocks.
  void check();

  struct PeerState {
    std::string address;
    bool up = false;  // answered a ping within peer_timeout_ms
  };
  // The daemons we share jobs with, as of the last check.
  std::vector<PeerState> peers() const;

 private:
  struct Peer {
    std::chrono::steady_clock::time_point last_ok;
    bool declared_lost = false;
  };

  const Node& node_;
  ClientTable& clients_;
  PeerClient& peers_;
  JobEvents& events_;
  DataPlane& data_plane_;
  mutable std::mutex mu_;
  std::map<std::string, Peer> peers_by_address_;
};

}  // namespace epx::daemon
