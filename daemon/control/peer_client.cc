#include "daemon/control/peer_client.h"

namespace epx::daemon {

v1::Peer::Stub* PeerClient::stub(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& stub = stubs_[address];
  if (!stub) {
    grpc::ChannelArguments args;
    // Peers that vanish must be noticed quickly, not after TCP's minutes.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    // Daemons talk to each other directly: an http_proxy from the
    // environment would answer for unreachable peers (seen as an HTTP 404
    // status in 3 ms) instead of UNAVAILABLE.
    args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
    // Always a TCP target: with no scheme gRPC would read "unix:80" or
    // "ipv4:..." as a URI. Addresses from clients are checked
    // (local_arguments.h); ones from peers' rank tables are not.
    stub = v1::Peer::NewStub(
        grpc::CreateCustomChannel("dns:///" + address, security_->channel_credentials(), args));
  }
  return stub.get();
}

template <typename Req, typename Resp, typename Start>
void PeerClient::call(const char* method, const std::string& address, const Req& req, Clock::time_point deadline,
                      std::shared_ptr<grpc::ClientContext> context, Done<Resp> done, Start start) {
  struct Call {
    std::shared_ptr<grpc::ClientContext> context;
    Req req;
    Resp resp;
    Done<Resp> done;
  };
  auto* c = new Call{context ? std::move(context) : std::make_shared<grpc::ClientContext>(), req, Resp(),
                     std::move(done)};
  c->context->set_deadline(deadline);
  security_->prove(c->context.get(), method, c->req, self_address_, Clock::now());
  start(stub(address)->async(), c->context.get(), &c->req, &c->resp, [c](grpc::Status status) {
    if (c->done) c->done(status, c->resp);
    delete c;
  });
}

void PeerClient::register_rank(const std::string& address, const v1::RegisterRequest& req,
                               Clock::time_point deadline, std::shared_ptr<grpc::ClientContext> context,
                               Done<v1::RegisterReply> done) {
  call<v1::RegisterRequest, v1::RegisterReply>(
      kPeerRegister, address, req, deadline, std::move(context), std::move(done),
      [](auto* async, auto* ctx, auto* rq, auto* rs, auto cb) { async->Register(ctx, rq, rs, std::move(cb)); });
}

void PeerClient::leave(const std::string& address, const v1::PeerLeaveRequest& req, Clock::time_point deadline,
                       Done<v1::PeerLeaveReply> done) {
  call<v1::PeerLeaveRequest, v1::PeerLeaveReply>(
      kPeerLeave, address, req, deadline, nullptr, std::move(done),
      [](auto* async, auto* ctx, auto* rq, auto* rs, auto cb) { async->Leave(ctx, rq, rs, std::move(cb)); });
}

void PeerClient::notify(const std::string& address, const v1::JobEvent& req, Clock::time_point deadline,
                        Done<v1::NotifyReply> done) {
  call<v1::JobEvent, v1::NotifyReply>(
      kPeerNotify, address, req, deadline, nullptr, std::move(done),
      [](auto* async, auto* ctx, auto* rq, auto* rs, auto cb) { async->Notify(ctx, rq, rs, std::move(cb)); });
}

void PeerClient::ping(const std::string& address, Clock::time_point deadline, Done<v1::PingReply> done) {
  call<v1::PingRequest, v1::PingReply>(
      kPeerPing, address, v1::PingRequest(), deadline, nullptr, std::move(done),
      [](auto* async, auto* ctx, auto* rq, auto* rs, auto cb) { async->Ping(ctx, rq, rs, std::move(cb)); });
}

void PeerClient::publish(const std::string& address, const v1::RankPlane& req, Clock::time_point deadline,
                         Done<v1::PublishReply> done) {
  call<v1::RankPlane, v1::PublishReply>(
      kPeerPublish, address, req, deadline, nullptr, std::move(done),
      [](auto* async, auto* ctx, auto* rq, auto* rs, auto cb) { async->Publish(ctx, rq, rs, std::move(cb)); });
}

void PeerClient::barrier(const std::string& address, const v1::PeerBarrierRequest& req, Clock::time_point deadline,
                         Done<v1::PeerBarrierReply> done) {
  call<v1::PeerBarrierRequest, v1::PeerBarrierReply>(
      kPeerBarrier, address, req, deadline, nullptr, std::move(done),
      [](auto* async, auto* ctx, auto* rq, auto* rs, auto cb) { async->Barrier(ctx, rq, rs, std::move(cb)); });
}

}  // namespace epx::daemon
