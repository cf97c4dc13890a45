#include "daemon/control/peer_service.h"

#include <spdlog/spdlog.h>

#include "daemon/control/local_service.h"
#include "grpc_status.h"

namespace epx::daemon {
namespace {

grpc::ServerUnaryReactor* finish_now(grpc::CallbackServerContext* context, const grpc::Status& status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// A rank waiting at the barrier. If the member daemon's call goes away, the
// rank is taken off the barrier (cancel_registration answers the reply, which
// finishes this reactor).
class RegisterReactor final : public grpc::ServerUnaryReactor {
 public:
  RegisterReactor(Coordinator& coordinator, std::string job_id, uint32_t rank)
      : coordinator_(coordinator), job_id_(std::move(job_id)), rank_(rank) {}
  void set_ticket(uint64_t ticket) { ticket_.store(ticket, std::memory_order_release); }
  void OnCancel() override {
    coordinator_.cancel_registration(job_id_, rank_, ticket_.load(std::memory_order_acquire));
  }
  void OnDone() override { delete this; }

 private:
  Coordinator& coordinator_;
  const std::string job_id_;
  const uint32_t rank_;
  std::atomic<uint64_t> ticket_{0};  // pairs set_ticket() with OnCancel() on another thread
};

const grpc::Status kStarting(grpc::StatusCode::UNAVAILABLE, "epxd is starting");

}  // namespace

PeerParts* PeerService::parts() { return parts_.load(std::memory_order_acquire); }

grpc::ServerUnaryReactor* PeerService::Register(grpc::CallbackServerContext* context,
                                                const v1::RegisterRequest* request, v1::RegisterReply* reply) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  if (st->node.shutting_down()) {
    return finish_now(context, grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator is shutting down"));
  }
  if (auto s = check_job_id(request->job_id()); !s.ok()) return finish_now(context, to_grpc(s));
  const uint32_t timeout_ms = std::min(request->timeout_ms(), st->node.config.max_join_timeout_ms());
  auto* reactor = new RegisterReactor(st->coordinator, request->job_id(), request->entry().rank());
  const auto deadline = Coordinator::Clock::now() + std::chrono::milliseconds(timeout_ms);
  spdlog::info("job {}: rank {} from {} registers (world {})", request->job_id(), request->entry().rank(),
               request->entry().node(), request->world_size());
  const uint64_t ticket = st->coordinator.register_rank(request->job_id(), request->world_size(), request->entry(), deadline,
                                     [reactor, reply](Result<v1::RankTable> table) {
                                       if (!table.ok()) {
                                         reactor->Finish(to_grpc(table.status()));
                                         return;
                                       }
                                       *reply->mutable_table() = std::move(table.value());
                                       reactor->Finish(grpc::Status::OK);
                                     });
  // Not touched after this if the reply above already finished it: a
  // reactor lives until OnDone, which cannot run before this handler returns.
  reactor->set_ticket(ticket);
  return reactor;
}

grpc::ServerUnaryReactor* PeerService::Leave(grpc::CallbackServerContext* context,
                                             const v1::PeerLeaveRequest* request, v1::PeerLeaveReply*) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  auto notices = st->coordinator.leave(request->job_id(), request->rank(), request->reason());
  if (!notices.ok()) return finish_now(context, to_grpc(notices.status()));
  spdlog::info("job {}: rank {} left: {}", request->job_id(), request->rank(), request->reason());
  st->events.send(*notices);
  return finish_now(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* PeerService::Notify(grpc::CallbackServerContext* context, const v1::JobEvent* request,
                                              v1::NotifyReply*) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  st->events.deliver(*request);
  return finish_now(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* PeerService::Ping(grpc::CallbackServerContext* context, const v1::PingRequest*,
                                            v1::PingReply* reply) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  reply->set_node(st->node.config.node_name());
  reply->set_version(kVersion);
  reply->set_uptime_ms(st->node.uptime_ms());
  return finish_now(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* PeerService::Publish(grpc::CallbackServerContext* context, const v1::RankPlane* request,
                                               v1::PublishReply*) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  auto* reactor = context->DefaultReactor();
  st->data_plane.apply_publish(*request, [reactor](Status s) { reactor->Finish(to_grpc(s)); });
  return reactor;
}

grpc::ServerUnaryReactor* PeerService::Barrier(grpc::CallbackServerContext* context,
                                               const v1::PeerBarrierRequest* request, v1::PeerBarrierReply*) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  auto* reactor = context->DefaultReactor();
  const uint32_t timeout_ms = std::min(request->timeout_ms(), st->node.config.max_join_timeout_ms());
  st->coordinator.barrier(request->job_id(), request->rank(),
                            Coordinator::Clock::now() + std::chrono::milliseconds(timeout_ms),
                            [reactor](Status s) { reactor->Finish(to_grpc(s)); });
  return reactor;
}

}  // namespace epx::daemon
