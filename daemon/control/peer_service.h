// The Peer gRPC service (other daemons, TCP): bootstrap barrier, leave,
// job events, ping. Every call but Ping is admitted by the PeerGate (the
// caller proves it is a daemon of the cluster and which one), then may only
// concern ranks the caller hosts: Register, Leave, Barrier and Publish come
// from the daemon named in the rank's RankEntry, Notify from the job's
// coordinator. Refusals: UNAUTHENTICATED (no valid proof), PERMISSION_DENIED
// (another daemon's rank), INVALID_ARGUMENT (values out of bounds, naming
// the field); none of them changes any job.
#pragma once

#include <atomic>

#include "daemon/control/job_events.h"
#include "daemon/control/node.h"
#include "daemon/control/peer_gate.h"
#include "daemon/dataplane/data_plane.h"
#include "daemon/jobs/client_table.h"
#include "daemon/jobs/coordinator.h"
#include "epx/v1/peer.grpc.pb.h"

namespace epx::daemon {

// What the Peer service uses.
struct PeerParts {
  const Node& node;
  Coordinator& coordinator;
  JobEvents& events;
  DataPlane& data_plane;
  ClientTable& clients;
  PeerGate& gate;
};

// Peer: the service other daemons call (TCP): bootstrap, leaves, notices,
// liveness, published planes, barriers.
class PeerService final : public v1::Peer::CallbackService {
 public:
  // The Peer server must listen (to learn its port) before the daemon state
  // exists; calls that arrive before attach() get UNAVAILABLE.
  PeerService() = default;
  void attach(PeerParts* parts) { parts_.store(parts, std::memory_order_release); }

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context, const v1::RegisterRequest* request,
                                     v1::RegisterReply* reply) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* context, const v1::PeerLeaveRequest* request,
                                  v1::PeerLeaveReply* reply) override;
  grpc::ServerUnaryReactor* Notify(grpc::CallbackServerContext* context, const v1::JobEvent* request,
                                   v1::NotifyReply* reply) override;
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context, const v1::PingRequest* request,
                                 v1::PingReply* reply) override;
  grpc::ServerUnaryReactor* Publish(grpc::CallbackServerContext* context, const v1::RankPlane* request,
                                    v1::PublishReply* reply) override;
  grpc::ServerUnaryReactor* Barrier(grpc::CallbackServerContext* context, const v1::PeerBarrierRequest* request,
                                    v1::PeerBarrierReply* reply) override;

 private:
  PeerParts* parts();  // null until attach()
  std::atomic<PeerParts*> parts_{nullptr};  // release in attach() pairs with acquire in parts()
};

}  // namespace epx::daemon
