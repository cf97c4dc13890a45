// PeerClient: asynchronous calls to other daemons' Peer service. One channel
// per peer address, reused, with the cluster's credentials (PeerSecurity);
// every call states this daemon's advertise address and carries its proof.
// Every call has a deadline; completions run on a gRPC thread and must not
// block.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/control/peer_security.h"
#include "epx/v1/peer.grpc.pb.h"

namespace epx::daemon {

class PeerClient {
 public:
  using Clock = std::chrono::system_clock;
  template <typename Resp>
  using Done = std::function<void(const grpc::Status&, Resp&)>;

  // `self_address`: this daemon's advertise address, which the calls state.
  PeerClient(std::shared_ptr<const PeerSecurity> security, std::string self_address)
      : security_(std::move(security)), self_address_(std::move(self_address)) {}

  // `context` may be kept by the caller to TryCancel() the barrier wait.
  void register_rank(const std::string& address, const v1::RegisterRequest& req, Clock::time_point deadline,
                     std::shared_ptr<grpc::ClientContext> context, Done<v1::RegisterReply> done);
  void leave(const std::string& address, const v1::PeerLeaveRequest& req, Clock::time_point deadline,
             Done<v1::PeerLeaveReply> done);
  void notify(const std::string& address, const v1::JobEvent& req, Clock::time_point deadline,
              Done<v1::NotifyReply> done);
  void ping(const std::string& address, Clock::time_point deadline, Done<v1::PingReply> done);
  void publish(const std::string& address, const v1::RankPlane& req, Clock::time_point deadline,
               Done<v1::PublishReply> done);
  void barrier(const std::string& address, const v1::PeerBarrierRequest& req, Clock::time_point deadline,
               Done<v1::PeerBarrierReply> done);

 private:
  v1::Peer::Stub* stub(const std::string& address);

  template <typename Req, typename Resp, typename Start>
  void call(const char* method, const std::string& address, const Req& req, Clock::time_point deadline,
            std::shared_ptr<grpc::ClientContext> context, Done<Resp> done, Start start);

  const std::shared_ptr<const PeerSecurity> security_;
  const std::string self_address_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<v1::Peer::Stub>> stubs_;
};

}  // namespace epx::daemon
