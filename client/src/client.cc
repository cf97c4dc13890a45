#include "epx/client.h"

#include "client_session.h"

namespace epx {
namespace {

// Extra time beyond the barrier timeout the SDK gives the daemon, so the
// coordinator's error (naming the missing ranks) arrives before ours.
constexpr std::chrono::milliseconds kJoinGrace(5000);

RankTable from_proto(const v1::RankTable& t) {
  RankTable table;
  table.job_id = t.job_id();
  table.world_size = t.world_size();
  table.coordinator = t.coordinator();
  for (const auto& r : t.ranks()) {
    RankInfo info;
    info.rank = r.rank();
    info.local_rank = r.local_rank();
    info.node = r.node();
    info.daemon_address = r.daemon_address();
    info.pid = r.pid();
    for (const auto& rail : r.rails()) info.rails.push_back({rail.provider(), rail.domain(), rail.address()});
    table.ranks.push_back(std::move(info));
  }
  return table;
}

}  // namespace

Result<std::unique_ptr<Client>> Client::connect(const std::string& socket_path, ClientOptions options) {
  auto session = std::make_shared<ClientSession>(socket_path, std::move(options));
  EPX_RETURN_IF_ERROR(session->open());
  return std::unique_ptr<Client>(new Client(std::move(session)));
}

Client::Client(std::shared_ptr<ClientSession> session) : session_(std::move(session)) {}
Client::~Client() = default;

Result<Job> Client::join(const JoinOptions& options) {
  if (options.world_size == 0) return invalid_argument("join " + options.job_id + ": world_size must be at least 1");
  if (options.rank >= options.world_size) {
    return invalid_argument("join " + options.job_id + ": rank " + std::to_string(options.rank) +
                            " out of range for world size " + std::to_string(options.world_size));
  }
  v1::JoinJobRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(options.job_id);
  req.set_world_size(options.world_size);
  req.set_rank(options.rank);
  req.set_local_rank(options.local_rank);
  req.set_gpu_pci_address(options.gpu_pci_address);
  req.set_coordinator(options.coordinator);
  req.set_timeout_ms(static_cast<uint32_t>(options.timeout.count()));
  v1::JoinJobReply reply;
  auto ctx = session_->context(options.timeout + kJoinGrace);
  grpc::Status s = session_->stub().JoinJob(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "join " + options.job_id + " as rank " + std::to_string(options.rank));
  RankTable table = from_proto(reply.table());
  if (table.ranks.size() != table.world_size) {
    return internal_error("join " + options.job_id + ": daemon sent a table of " + std::to_string(table.ranks.size()) +
                          " ranks for world size " + std::to_string(table.world_size));
  }
  return Job(session_, std::move(table), options.rank, reply.provider_fallback());
}

Result<DaemonInfo> Client::status() {
  v1::DaemonStatus reply;
  auto ctx = session_->context(session_->options().rpc_timeout);
  grpc::Status s = session_->stub().Status(ctx.get(), v1::StatusRequest(), &reply);
  if (!s.ok()) return session_->explain(s, "status");
  DaemonInfo info;
  info.node = reply.node();
  info.version = reply.version();
  info.peer_address = reply.peer_address();
  info.provider = reply.provider();
  info.rails = reply.rails_size();
  info.clients = reply.clients_size();
  info.jobs = reply.jobs_size();
  return info;
}

std::optional<Event> Client::next_event(std::chrono::milliseconds timeout) { return session_->next_event(timeout); }
Status Client::session_status() const { return session_->session_status(); }
uint64_t Client::client_id() const { return session_->client_id(); }

}  // namespace epx
