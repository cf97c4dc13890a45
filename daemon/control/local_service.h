// The Local gRPC service (clients on this node, unix socket). Handlers check
// and translate; the decisions live in ClientTable and Coordinator.
#pragma once

#include "daemon/control/call_measurements.h"
#include "daemon/control/local_calls.h"
#include "daemon/control/local_connections.h"
#include "daemon/control/node.h"
#include "daemon/control/peer_client.h"
#include "daemon/control/rank_release.h"
#include "daemon/control/status_report.h"
#include "daemon/dataplane/data_plane.h"
#include "daemon/jobs/client_table.h"
#include "daemon/jobs/ipc_exchange.h"
#include "epx/v1/local.grpc.pb.h"

namespace epx::daemon {

// What the Local service and its client sessions use.
struct LocalParts {
  const Node& node;
  ClientTable& clients;
  LocalConnections& connections;
  PeerClient& peers;
  DataPlane& data_plane;
  IpcExchange& ipc;
  RankRelease& release;
  const StatusReport& status;
  LocalCalls& calls;  // calls that wait on others, answered at shutdown
  CallMeasurements& measurements;
};

// Local: the service clients on this node call (unix socket). Handlers check
// the caller and hand work on; none of them blocks.
class LocalService final : public v1::Local::CallbackService {
 public:
  explicit LocalService(LocalParts parts) : parts_(parts) {}

  grpc::ServerWriteReactor<v1::ClientEvent>* Hello(grpc::CallbackServerContext* context,
                                                   const v1::HelloRequest* request) override;
  grpc::ServerUnaryReactor* JoinJob(grpc::CallbackServerContext* context, const v1::JoinJobRequest* request,
                                    v1::JoinJobReply* reply) override;
  grpc::ServerUnaryReactor* LeaveJob(grpc::CallbackServerContext* context, const v1::LeaveJobRequest* request,
                                     v1::LeaveJobReply* reply) override;
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context, const v1::StatusRequest* request,
                                   v1::DaemonStatus* reply) override;
  grpc::ServerUnaryReactor* CreateWindow(grpc::CallbackServerContext* context,
                                         const v1::CreateWindowRequest* request, v1::RegionReply* reply) override;
  grpc::ServerUnaryReactor* CreateDeviceWindow(grpc::CallbackServerContext* context,
                                               const v1::CreateDeviceWindowRequest* request,
                                               v1::RegionReply* reply) override;
  grpc::ServerUnaryReactor* OpenSignals(grpc::CallbackServerContext* context, const v1::OpenSignalsRequest* request,
                                        v1::RegionReply* reply) override;
  grpc::ServerUnaryReactor* OpenRing(grpc::CallbackServerContext* context, const v1::OpenRingRequest* request,
                                     v1::RegionReply* reply) override;
  grpc::ServerUnaryReactor* Barrier(grpc::CallbackServerContext* context, const v1::BarrierRequest* request,
                                    v1::BarrierReply* reply) override;
  grpc::ServerUnaryReactor* ExchangeIpc(grpc::CallbackServerContext* context, const v1::ExchangeIpcRequest* request,
                                        v1::ExchangeIpcReply* reply) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context, const v1::DrainRequest* request,
                                  v1::DrainReply* reply) override;

 private:
  LocalParts parts_;
};

}  // namespace epx::daemon
