#include "daemon/control/peer_service.h"

#include <spdlog/spdlog.h>

#include <set>

#include "daemon/control/local_arguments.h"
#include "daemon/control/waiting_reactor.h"
#include "daemon/proxy/signal_space.h"
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

std::string rank_of(const std::string& job_id, uint32_t rank) {
  return "rank " + std::to_string(rank) + " of job " + job_id;
}

// A refusal of an admitted caller: logged (rate-limited), then answered.
grpc::ServerUnaryReactor* refuse(PeerParts& st, grpc::CallbackServerContext* context, const char* method,
                                 const Status& why) {
  st.gate.log_refusal(context->peer(), method, why);
  return finish_now(context, to_grpc(why));
}

Result<PeerCaller> admit(PeerParts& st, grpc::CallbackServerContext* context, const char* method,
                         const google::protobuf::Message& request) {
  return st.gate.admit(PeerCallFacts::of(*context), method, request, PeerGate::Clock::now());
}

// The rank table's entry of `rank` (tables list ranks in order, but a peer's
// table is not trusted to).
const v1::RankEntry* entry_of(const v1::RankTable& table, uint32_t rank) {
  if (rank < static_cast<uint32_t>(table.ranks_size()) && table.ranks(rank).rank() == rank) return &table.ranks(rank);
  for (const auto& e : table.ranks()) {
    if (e.rank() == rank) return &e;
  }
  return nullptr;
}

// A published plane from the network, checked against what its owner
// (`owner`, from the rank table) can have registered under this daemon's
// limits: the cluster's daemons are expected to share them.
Status check_published(const v1::RankPlane& plane, const v1::RankEntry& owner, const v1::DaemonConfig& config) {
  const std::string where = "Publish of " + rank_of(plane.job_id(), plane.rank()) + ": ";
  const uint64_t rails = owner.rails_size();
  const uint64_t max_window = uint64_t{config.max_window_mib()} << 20;
  const uint64_t max_total = uint64_t{config.max_client_mib()} << 20;
  if (plane.windows_size() > 0xFFFE) {
    return invalid_argument(where + "windows: " + std::to_string(plane.windows_size()) + " (at most 65534)");
  }
  std::set<uint32_t> ids;
  uint64_t total = 0;
  for (int i = 0; i < plane.windows_size(); ++i) {
    const auto& w = plane.windows(i);
    const std::string field = where + "windows[" + std::to_string(i) + "].";
    if (w.id() == 0 || w.id() > 0xFFFE || !ids.insert(w.id()).second) {
      return invalid_argument(field + "id: " + std::to_string(w.id()) + " is 0, above 65534 or repeated");
    }
    if (w.bytes() == 0 || w.bytes() > max_window) {
      return invalid_argument(field + "bytes: " + std::to_string(w.bytes()) + " is not within 1.." +
                              std::to_string(max_window) + " (max_window_mib " +
                              std::to_string(config.max_window_mib()) + ")");
    }
    total += w.bytes();  // at most 65534 windows of at most 4 PiB each: no overflow
    if (w.rails_size() == 0 || static_cast<uint64_t>(w.rails_size()) > rails) {
      return invalid_argument(field + "rails: " + std::to_string(w.rails_size()) +
                              " keys, but the owner's daemon has " + std::to_string(rails) +
                              " rails (one key per rail)");
    }
    for (int k = 0; k < w.rails_size(); ++k) {
      if (w.rails(k).base() > UINT64_MAX - w.bytes()) {
        return invalid_argument(field + "rails[" + std::to_string(k) +
                                "].base: the window would wrap the "
                                "64-bit address space");
      }
    }
  }
  if (total > max_total) {
    return invalid_argument(where + "windows: " + std::to_string(total) + " bytes in all, beyond max_client_mib (" +
                            std::to_string(config.max_client_mib()) + " MiB)");
  }
  if (plane.signal_count() > config.max_signals()) {
    return invalid_argument(where + "signal_count: " + std::to_string(plane.signal_count()) +
                            " is beyond max_signals (" + std::to_string(config.max_signals()) + ")");
  }
  if (uint64_t{plane.signal_base()} + plane.signal_count() > SignalSpace::kIds) {
    return invalid_argument(where + "signal_base: " + std::to_string(plane.signal_base()) + " + " +
                            std::to_string(plane.signal_count()) + " signals is beyond the " +
                            std::to_string(SignalSpace::kIds) + " signal ids");
  }
  if (static_cast<uint64_t>(plane.signal_target_size()) > rails) {
    return invalid_argument(where + "signal_target: " + std::to_string(plane.signal_target_size()) +
                            " keys, but the owner's daemon has " + std::to_string(rails) + " rails");
  }
  return Status();
}

// The coordinator's address of a job with a rank on this daemon, as its rank
// table names it; empty when no rank of the job is here.
std::string coordinator_of(PeerParts& st, const std::string& job_id) {
  if (auto plane = st.data_plane.job_plane(job_id)) return plane->table().coordinator();
  // A rank whose job formed but whose plane is not attached yet.
  for (const auto& table : st.clients.formed_tables()) {
    if (table.job_id() == job_id) return table.coordinator();
  }
  return "";
}

}  // namespace

PeerParts* PeerService::parts() { return parts_.load(std::memory_order_acquire); }

grpc::ServerUnaryReactor* PeerService::Register(grpc::CallbackServerContext* context,
                                                const v1::RegisterRequest* request, v1::RegisterReply* reply) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  if (st->node.shutting_down()) {
    return finish_now(context, grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator is shutting down"));
  }
  auto caller = admit(*st, context, kPeerRegister, *request);
  if (!caller.ok()) return finish_now(context, to_grpc(caller.status()));
  if (auto s = check_job_id(request->job_id()); !s.ok()) return refuse(*st, context, kPeerRegister, s);
  // A daemon registers its own clients' ranks only: the entry names it.
  if (auto s = caller->may_act_for(request->entry().daemon_address(),
                                   "register " + rank_of(request->job_id(), request->entry().rank()));
      !s.ok()) {
    return refuse(*st, context, kPeerRegister, s);
  }
  const uint32_t timeout_ms = std::min(request->timeout_ms(), st->node.config.max_join_timeout_ms());
  auto* reactor = new RegisterReactor(st->coordinator, request->job_id(), request->entry().rank());
  const auto deadline = Coordinator::Clock::now() + std::chrono::milliseconds(timeout_ms);
  spdlog::info("job {}: rank {} from {} registers (world {})", request->job_id(), request->entry().rank(),
               request->entry().node(), request->world_size());
  const uint64_t ticket = st->coordinator.register_rank(request->job_id(), request->world_size(), request->entry(),
                                                        deadline, [reactor, reply](Result<v1::RankTable> table) {
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

grpc::ServerUnaryReactor* PeerService::Leave(grpc::CallbackServerContext* context, const v1::PeerLeaveRequest* request,
                                             v1::PeerLeaveReply*) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  auto caller = admit(*st, context, kPeerLeave, *request);
  if (!caller.ok()) return finish_now(context, to_grpc(caller.status()));
  if (auto s = check_job_id(request->job_id()); !s.ok()) return refuse(*st, context, kPeerLeave, s);
  const std::string what = "release " + rank_of(request->job_id(), request->rank());
  auto notices = st->coordinator.leave(request->job_id(), request->rank(), request->reason(),
                                       [&](const std::string& owner) { return caller->may_act_for(owner, what); });
  if (notices.status().code() == StatusCode::kPermissionDenied) {
    return refuse(*st, context, kPeerLeave, notices.status());
  }
  if (!notices.ok()) return finish_now(context, to_grpc(notices.status()));
  spdlog::info("job {}: rank {} left: {}", request->job_id(), request->rank(), request->reason());
  st->events.send(*notices);
  return finish_now(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* PeerService::Notify(grpc::CallbackServerContext* context, const v1::JobEvent* request,
                                              v1::NotifyReply*) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  auto caller = admit(*st, context, kPeerNotify, *request);
  if (!caller.ok()) return finish_now(context, to_grpc(caller.status()));
  if (auto s = check_job_id(request->job_id()); !s.ok()) return refuse(*st, context, kPeerNotify, s);
  const std::string coordinator = coordinator_of(*st, request->job_id());
  if (coordinator.empty()) {
    // No rank of the job here (any more): nobody to tell.
    spdlog::debug("job {}: event from {} for no local rank", request->job_id(), caller->address);
    return finish_now(context, grpc::Status::OK);
  }
  if (auto s =
          caller->may_act_for(coordinator, "send events of job " + request->job_id() + " (only its coordinator does)");
      !s.ok()) {
    return refuse(*st, context, kPeerNotify, s);
  }
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
  for (const auto& rail : st->data_plane.rails_for_peers()) {
    auto* r = reply->add_rails();
    r->set_usable(rail.usable);
    r->set_why(rail.why);
  }
  return finish_now(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* PeerService::Publish(grpc::CallbackServerContext* context, const v1::RankPlane* request,
                                               v1::PublishReply*) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  auto caller = admit(*st, context, kPeerPublish, *request);
  if (!caller.ok()) return finish_now(context, to_grpc(caller.status()));
  if (auto s = check_job_id(request->job_id()); !s.ok()) return refuse(*st, context, kPeerPublish, s);
  auto plane = st->data_plane.job_plane(request->job_id());
  if (plane) {
    const v1::RankEntry* owner = entry_of(plane->table(), request->rank());
    if (owner == nullptr) {
      return refuse(*st, context, kPeerPublish,
                    invalid_argument("Publish: rank " + std::to_string(request->rank()) + " is not in job " +
                                     request->job_id() + " (world " + std::to_string(plane->world()) + ")"));
    }
    if (auto s = caller->may_act_for(owner->daemon_address(), "publish " + rank_of(request->job_id(), request->rank()));
        !s.ok()) {
      return refuse(*st, context, kPeerPublish, s);
    }
    if (auto s = check_published(*request, *owner, st->node.config); !s.ok()) {
      return refuse(*st, context, kPeerPublish, s);
    }
  } else {
    // The job has not formed here yet: the plane is kept, and applied when
    // it forms only if the rank table places the rank on the caller. Bounds
    // are checked now, against the most rails a daemon can have.
    v1::RankEntry any_owner;
    for (int i = 0; i < 64; ++i) any_owner.add_rails();
    if (auto s = check_published(*request, any_owner, st->node.config); !s.ok()) {
      return refuse(*st, context, kPeerPublish, s);
    }
  }
  auto* reactor = context->DefaultReactor();
  st->data_plane.apply_publish(*request, caller->address, [reactor](Status s) { reactor->Finish(to_grpc(s)); });
  return reactor;
}

grpc::ServerUnaryReactor* PeerService::Barrier(grpc::CallbackServerContext* context,
                                               const v1::PeerBarrierRequest* request, v1::PeerBarrierReply*) {
  PeerParts* st = parts();
  if (st == nullptr) return finish_now(context, kStarting);
  auto caller = admit(*st, context, kPeerBarrier, *request);
  if (!caller.ok()) return finish_now(context, to_grpc(caller.status()));
  if (auto s = check_job_id(request->job_id()); !s.ok()) return refuse(*st, context, kPeerBarrier, s);
  const std::string from = context->peer();  // the reactor may finish inside barrier()
  // Cancellable: a barrier call the coordinator never answers (a bug, a
  // rank that never comes) still ends when the caller goes or the server
  // stops, so it cannot hold up this daemon's shutdown.
  auto* waiting = new WaitingReactor(nullptr);
  std::shared_ptr<CallAnswer> answer = waiting->answer();
  const uint32_t timeout_ms = std::min(request->timeout_ms(), st->node.config.max_join_timeout_ms());
  const std::string what = "bring " + rank_of(request->job_id(), request->rank()) + " to a barrier";
  Status refused;
  st->coordinator.barrier(
      request->job_id(), request->rank(), Coordinator::Clock::now() + std::chrono::milliseconds(timeout_ms),
      [answer](Status s) { answer->finish(to_grpc(s)); },
      [&](const std::string& owner) {
        refused = caller->may_act_for(owner, what);
        return refused;
      });
  if (!refused.ok()) st->gate.log_refusal(from, kPeerBarrier, refused);
  return waiting;
}

}  // namespace epx::daemon
