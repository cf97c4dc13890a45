#include "daemon/control/local_service.h"

#include <spdlog/spdlog.h>

#include "daemon/config/config.h"
#include "daemon/control/local_arguments.h"
#include "daemon/control/session_stream.h"
#include "daemon/control/status_access.h"
#include "daemon/control/waiting_reactor.h"
#include "daemon/fabric/pci_location.h"
#include "grpc_status.h"

namespace epx::daemon {
namespace {

// Extra time the daemon gives the coordinator beyond the barrier timeout, so
// the coordinator's own DEADLINE_EXCEEDED (naming the missing ranks) arrives
// before gRPC's generic one.
constexpr std::chrono::milliseconds kBarrierGrace(2000);
// Errors a client receives travel in its gRPC trailers; one that outgrew
// the client's metadata limit would make it drop the connection, and with
// it the session and every rank it holds. Text from other daemons is cut
// to this.
constexpr size_t kMaxForwardedMessageBytes = 1024;

grpc::ServerUnaryReactor* finish_now(grpc::CallbackServerContext* context, const grpc::Status& status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::Status forwarded(grpc::StatusCode code, std::string message) {
  if (message.size() > kMaxForwardedMessageBytes) {
    message = message.substr(0, kMaxForwardedMessageBytes) + "... (cut)";
  }
  return grpc::Status(code, message);
}

// The checks every call naming a job runs first: a malformed id fails the
// call with INVALID_ARGUMENT (quoting the id bounded), never reaching a
// lookup whose error would echo it whole.
grpc::ServerUnaryReactor* refuse_job_id(grpc::CallbackServerContext* context, const std::string& job_id) {
  if (auto s = check_job_id(job_id); !s.ok()) return finish_now(context, to_grpc(s));
  return nullptr;
}

}  // namespace

grpc::ServerWriteReactor<v1::ClientEvent>* LocalService::Hello(grpc::CallbackServerContext* context,
                                                               const v1::HelloRequest* request) {
  return new SessionStream(parts_, context, *request);
}

grpc::ServerUnaryReactor* LocalService::JoinJob(grpc::CallbackServerContext* context, const v1::JoinJobRequest* request,
                                                v1::JoinJobReply* reply) {
  if (parts_.node.shutting_down())
    return finish_now(context, grpc::Status(grpc::StatusCode::UNAVAILABLE, "epxd is shutting down"));
  if (parts_.node.is_draining()) {
    parts_.measurements.joins_refused_draining.fetch_add(1, std::memory_order_relaxed);
    return finish_now(context, grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                            "epxd on " + parts_.node.config.node_name() +
                                                " is draining (epxctl drain): it takes no new jobs; join through "
                                                "another node or wait until it is back"));
  }
  const std::string connection = context->peer();
  auto creds = parts_.clients.check_caller(request->client_id(), connection);
  if (!creds.ok()) return finish_now(context, to_grpc(creds.status()));
  if (auto s = check_job_id(request->job_id()); !s.ok()) return finish_now(context, to_grpc(s));
  if (request->world_size() == 0 || request->world_size() > Coordinator::kMaxWorld) {
    return finish_now(context, to_grpc(invalid_argument("job " + request->job_id() + ": world size must be 1.." +
                                                        std::to_string(Coordinator::kMaxWorld))));
  }
  if (request->rank() >= request->world_size()) {
    return finish_now(
        context, to_grpc(invalid_argument("job " + request->job_id() + ": rank " + std::to_string(request->rank()) +
                                          " out of range for world size " + std::to_string(request->world_size()))));
  }
  uint32_t timeout_ms = request->timeout_ms() ? request->timeout_ms() : 60000;
  if (timeout_ms > parts_.node.config.max_join_timeout_ms()) {
    return finish_now(
        context, to_grpc(invalid_argument("timeout_ms " + std::to_string(timeout_ms) + " exceeds max_join_timeout_ms " +
                                          std::to_string(parts_.node.config.max_join_timeout_ms()))));
  }
  // Checked before anything is dialled: a bad address fails only this call.
  if (!request->coordinator().empty()) {
    if (auto s = check_coordinator(request->coordinator()); !s.ok()) {
      return finish_now(context, to_grpc(s.with_context("job " + request->job_id())));
    }
  }
  const std::string coordinator =
      request->coordinator().empty() ? parts_.node.advertise_address : request->coordinator();
  std::string gpu;
  if (!request->gpu_pci_address().empty()) {
    auto normalized = normalize_pci_address(request->gpu_pci_address());
    if (!normalized.ok()) {
      return finish_now(context,
                        to_grpc(normalized.status().with_context("job " + request->job_id() + ": gpu_pci_address")));
    }
    gpu = *normalized;
  }

  Membership m;
  m.job_id = request->job_id();
  m.rank = request->rank();
  m.local_rank = request->local_rank();
  m.gpu = gpu;
  m.world_size = request->world_size();
  m.coordinator = coordinator;
  const uint64_t client_id = request->client_id();
  if (auto s = parts_.clients.begin_join(client_id, connection, m); !s.ok()) return finish_now(context, to_grpc(s));

  v1::RegisterRequest reg;
  reg.set_job_id(m.job_id);
  reg.set_world_size(m.world_size);
  reg.set_timeout_ms(timeout_ms);
  v1::RankEntry* entry = reg.mutable_entry();
  entry->set_rank(m.rank);
  entry->set_local_rank(m.local_rank);
  entry->set_node(parts_.node.config.node_name());
  entry->set_daemon_address(parts_.node.advertise_address);
  entry->set_pid(creds->pid);
  for (const auto& rail : parts_.node.rails) {
    auto* r = entry->add_rails();
    r->set_provider(rail->provider());
    r->set_domain(rail->domain_name());
    r->set_address(rail->address());
    r->set_fabric(rail->fabric_name());
  }

  // JoinJob waits at a remote barrier; if the client goes away meanwhile,
  // the outgoing Register call is cancelled too, and the answer waits for
  // the rank to be given back (below).
  auto outgoing = std::make_shared<grpc::ClientContext>();
  auto* waiting = new WaitingReactor(&parts_.calls, [outgoing] { outgoing->TryCancel(); });
  std::shared_ptr<CallAnswer> reactor = waiting->answer();
  spdlog::info("client {} joining job {} as rank {}/{} via coordinator {}", client_id, m.job_id, m.rank, m.world_size,
               coordinator);
  const auto deadline = PeerClient::Clock::now() + std::chrono::milliseconds(timeout_ms) + kBarrierGrace;
  const auto started = std::chrono::steady_clock::now();
  parts_.peers.register_rank(
      coordinator, reg, deadline, outgoing,
      [this, reactor, reply, client_id, m, coordinator, timeout_ms, started](const grpc::Status& s,
                                                                             v1::RegisterReply& r) {
        if (!s.ok()) {
          if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
            parts_.measurements.join_timeouts.fetch_add(1, std::memory_order_relaxed);
          }
          parts_.clients.abort_join(client_id, m.job_id);
          std::string message = s.error_message();
          grpc::StatusCode code = s.error_code();
          if (code == grpc::StatusCode::UNAVAILABLE) {
            message = "coordinator " + coordinator + " unreachable: " + message;
          } else if (code == grpc::StatusCode::DEADLINE_EXCEEDED &&
                     message.find("missing ranks") == std::string::npos) {
            message = "coordinator " + coordinator + " did not answer within " + std::to_string(timeout_ms) + " ms";
          }
          spdlog::warn("job {}: rank {} could not join: {}", m.job_id, m.rank, message);
          if (code == grpc::StatusCode::CANCELLED || code == grpc::StatusCode::DEADLINE_EXCEEDED ||
              code == grpc::StatusCode::UNAVAILABLE) {
            // The coordinator may have registered the rank (even formed the
            // job) just as the call ended: take it back there, so the job
            // does not keep a rank nobody holds. Answered after that, so a
            // retry of the join cannot be the one the leave removes.
            parts_.release.release({m}, "join failed: " + message,
                                   [reactor, code, message] { reactor->finish(forwarded(code, message)); });
            return;
          }
          reactor->finish(forwarded(code, message));
          return;
        }
        parts_.measurements.join_seconds.record(std::chrono::steady_clock::now() - started);
        const v1::RankTable table = r.table();
        parts_.data_plane.attach_rank(
            client_id, table, m.rank, [this, reactor, reply, client_id, m, table](epx::Status s) {
              if (!s.ok()) {
                parts_.clients.abort_join(client_id, m.job_id);
                parts_.release.release({m}, "data plane setup failed: " + s.message());
                reactor->finish(to_grpc(s.with_context("job " + m.job_id)));
                return;
              }
              if (!parts_.clients.complete_join(client_id, m.job_id, table)) {
                // The client left or died while waiting: give the rank back
                // (its data plane as well: it was just attached).
                Membership attached = m;
                attached.client_id = client_id;
                attached.formed = true;
                parts_.release.release({attached}, "client left during bootstrap");
                reactor->finish(grpc::Status(grpc::StatusCode::CANCELLED, "client left during bootstrap"));
                return;
              }
              spdlog::info("job {}: rank {} joined; {} ranks in table", m.job_id, m.rank, table.ranks_size());
              reactor->finish(grpc::Status::OK, [this, reply, &table] {
                *reply->mutable_table() = table;
                reply->set_provider_fallback(parts_.node.provider_fallback);
              });
            });
      });
  return waiting;
}

grpc::ServerUnaryReactor* LocalService::LeaveJob(grpc::CallbackServerContext* context,
                                                 const v1::LeaveJobRequest* request, v1::LeaveJobReply*) {
  if (auto* refused = refuse_job_id(context, request->job_id())) return refused;
  auto m = parts_.clients.leave(request->client_id(), context->peer(), request->job_id());
  if (!m.ok()) return finish_now(context, to_grpc(m.status()));
  auto* reactor = context->DefaultReactor();
  // Answer once the coordinator took the leave, so a following status or
  // rejoin sees it; the rank is released locally either way.
  parts_.release.release({*m}, "rank " + std::to_string(m->rank) + " left",
                         [reactor] { reactor->Finish(grpc::Status::OK); });
  return reactor;
}

grpc::ServerUnaryReactor* LocalService::Status(grpc::CallbackServerContext* context, const v1::StatusRequest* request,
                                               v1::DaemonStatus* reply) {
  auto creds = parts_.connections.lookup(context->peer());
  if (!creds) {
    return finish_now(context,
                      grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "unknown local connection " + context->peer()));
  }
  StatusView view;
  view.uid = creds->uid;
  view.all = !request->own_only() && sees_every_tenant(*creds, parts_.node.config.admin_group());
  *reply = parts_.status.status(view);
  return finish_now(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* LocalService::Drain(grpc::CallbackServerContext* context, const v1::DrainRequest* request,
                                              v1::DrainReply* reply) {
  auto creds = parts_.connections.lookup(context->peer());
  if (!creds) {
    return finish_now(context,
                      grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "unknown local connection " + context->peer()));
  }
  // Draining turns every tenant's joins away: an operator's decision.
  if (!sees_every_tenant(*creds, parts_.node.config.admin_group())) {
    return finish_now(context, grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                            "drain: uid " + std::to_string(creds->uid) +
                                                " is not an operator of this epxd (root, its user, or admin_group)"));
  }
  const bool draining = !request->cancel();
  if (parts_.node.draining.exchange(draining, std::memory_order_relaxed) != draining) {
    if (draining) {
      spdlog::warn("draining: new joins are refused; running jobs go on (uid {} asked)", creds->uid);
    } else {
      spdlog::info("drain cancelled: joins accepted again (uid {} asked)", creds->uid);
    }
  }
  reply->set_draining(draining);
  // What `epxctl drain` then waits for: jobs with ranks here and jobs this
  // daemon coordinates (their barriers need it).
  StatusView all;
  const v1::DaemonStatus status = parts_.status.status(all);
  for (const auto& j : status.jobs()) reply->add_jobs(j.job_id());
  return finish_now(context, grpc::Status::OK);
}

namespace {

void finish_region(grpc::ServerUnaryReactor* reactor, v1::RegionReply* reply, Result<v1::RegionReply> result) {
  if (!result.ok()) {
    reactor->Finish(to_grpc(result.status()));
    return;
  }
  *reply = std::move(result.value());
  reactor->Finish(grpc::Status::OK);
}

}  // namespace

grpc::ServerUnaryReactor* LocalService::CreateWindow(grpc::CallbackServerContext* context,
                                                     const v1::CreateWindowRequest* request, v1::RegionReply* reply) {
  if (auto* refused = refuse_job_id(context, request->job_id())) return refused;
  auto m = parts_.clients.membership(request->client_id(), context->peer(), request->job_id());
  if (!m.ok()) return finish_now(context, to_grpc(m.status()));
  auto creds = parts_.connections.lookup(context->peer());
  auto* reactor = context->DefaultReactor();
  parts_.data_plane.create_window(
      request->client_id(), creds ? creds->pid : 0, request->job_id(), m->rank, request->bytes(),
      [reactor, reply](Result<v1::RegionReply> r) { finish_region(reactor, reply, std::move(r)); });
  return reactor;
}

grpc::ServerUnaryReactor* LocalService::CreateDeviceWindow(grpc::CallbackServerContext* context,
                                                           const v1::CreateDeviceWindowRequest* request,
                                                           v1::RegionReply* reply) {
  auto creds = parts_.connections.lookup(context->peer());
  epx::Status argument = check_job_id(request->job_id());
  if (argument.ok()) argument = check_pci_bus_id(request->pci_bus_id());
  Result<Membership> m = argument.ok()
                             ? parts_.clients.membership(request->client_id(), context->peer(), request->job_id())
                             : Result<Membership>(argument);
  if (!m.ok()) {
    // The submitted descriptor is consumed by this call whatever happens:
    // close it now rather than at its time limit.
    if (creds) (void)parts_.data_plane.submitted_fds().take(request->fd_token(), creds->pid, request->client_id());
    return finish_now(context, to_grpc(m.status()));
  }
  auto* reactor = context->DefaultReactor();
  parts_.data_plane.create_device_window(
      request->client_id(), creds ? creds->pid : 0, m->rank, *request,
      [reactor, reply](Result<v1::RegionReply> r) { finish_region(reactor, reply, std::move(r)); });
  return reactor;
}

grpc::ServerUnaryReactor* LocalService::OpenSignals(grpc::CallbackServerContext* context,
                                                    const v1::OpenSignalsRequest* request, v1::RegionReply* reply) {
  if (auto* refused = refuse_job_id(context, request->job_id())) return refused;
  auto m = parts_.clients.membership(request->client_id(), context->peer(), request->job_id());
  if (!m.ok()) return finish_now(context, to_grpc(m.status()));
  auto creds = parts_.connections.lookup(context->peer());
  auto* reactor = context->DefaultReactor();
  parts_.data_plane.open_signals(
      request->client_id(), creds ? creds->pid : 0, request->job_id(), m->rank, request->count(),
      [reactor, reply](Result<v1::RegionReply> r) { finish_region(reactor, reply, std::move(r)); });
  return reactor;
}

grpc::ServerUnaryReactor* LocalService::OpenRing(grpc::CallbackServerContext* context,
                                                 const v1::OpenRingRequest* request, v1::RegionReply* reply) {
  if (auto* refused = refuse_job_id(context, request->job_id())) return refused;
  auto m = parts_.clients.membership(request->client_id(), context->peer(), request->job_id());
  if (!m.ok()) return finish_now(context, to_grpc(m.status()));
  auto creds = parts_.connections.lookup(context->peer());
  auto* reactor = context->DefaultReactor();
  parts_.data_plane.open_ring(
      request->client_id(), creds ? creds->pid : 0, m->rank, m->gpu, *request,
      [reactor, reply](Result<v1::RegionReply> r) { finish_region(reactor, reply, std::move(r)); });
  return reactor;
}

grpc::ServerUnaryReactor* LocalService::Barrier(grpc::CallbackServerContext* context, const v1::BarrierRequest* request,
                                                v1::BarrierReply*) {
  if (auto* refused = refuse_job_id(context, request->job_id())) return refused;
  auto m = parts_.clients.membership(request->client_id(), context->peer(), request->job_id());
  if (!m.ok()) return finish_now(context, to_grpc(m.status()));
  const uint32_t timeout_ms =
      request->timeout_ms() ? std::min(request->timeout_ms(), parts_.node.config.max_join_timeout_ms()) : 60000;
  v1::PeerBarrierRequest req;
  req.set_job_id(request->job_id());
  req.set_rank(m->rank);
  req.set_timeout_ms(timeout_ms);
  auto* waiting = new WaitingReactor(&parts_.calls);
  std::shared_ptr<CallAnswer> reactor = waiting->answer();
  const std::string coordinator = m->coordinator;
  parts_.peers.barrier(
      coordinator, req, PeerClient::Clock::now() + std::chrono::milliseconds(timeout_ms) + kBarrierGrace,
      [this, reactor, coordinator](const grpc::Status& s, v1::PeerBarrierReply&) {
        if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
          parts_.measurements.barrier_timeouts.fetch_add(1, std::memory_order_relaxed);
        }
        if (s.ok() || s.error_code() != grpc::StatusCode::UNAVAILABLE) {
          reactor->finish(forwarded(s.error_code(), s.error_message()));
          return;
        }
        reactor->finish(forwarded(s.error_code(), "barrier at coordinator " + coordinator + ": " + s.error_message()));
      });
  return waiting;
}

grpc::ServerUnaryReactor* LocalService::ExchangeIpc(grpc::CallbackServerContext* context,
                                                    const v1::ExchangeIpcRequest* request,
                                                    v1::ExchangeIpcReply* reply) {
  if (auto* refused = refuse_job_id(context, request->job_id())) return refused;
  auto m = parts_.clients.membership(request->client_id(), context->peer(), request->job_id());
  if (!m.ok()) return finish_now(context, to_grpc(m.status()));
  if (request->handle().empty() || request->handle().size() > 256) {
    return finish_now(context, to_grpc(invalid_argument("IPC handle must be 1..256 bytes")));
  }
  auto creds = parts_.connections.lookup(context->peer());
  std::vector<uint32_t> local;
  for (const auto& r : m->table.ranks()) {
    if (r.daemon_address() == parts_.node.advertise_address) local.push_back(r.rank());
  }
  v1::PeerHandle h;
  h.set_rank(m->rank);
  h.set_local_rank(m->local_rank);
  h.set_pid(creds ? creds->pid : 0);
  h.set_handle(request->handle());
  h.set_bytes(request->bytes());
  const uint32_t timeout_ms =
      request->timeout_ms() ? std::min(request->timeout_ms(), parts_.node.config.max_join_timeout_ms()) : 60000;
  auto* waiting = new WaitingReactor(&parts_.calls);
  std::shared_ptr<CallAnswer> reactor = waiting->answer();
  parts_.ipc.post(request->job_id(), local, h, IpcExchange::Clock::now() + std::chrono::milliseconds(timeout_ms),
                  [reactor, reply](Result<std::vector<v1::PeerHandle>> r) {
                    if (!r.ok()) {
                      reactor->finish(to_grpc(r.status()));
                      return;
                    }
                    reactor->finish(grpc::Status::OK, [&] {
                      for (auto& p : r.value()) *reply->add_peers() = std::move(p);
                    });
                  });
  return waiting;
}

}  // namespace epx::daemon
