#include "daemon/jobs/client_table.h"

namespace epx::daemon {
namespace {

// One answer whether the id is unknown or another connection's: a caller
// learns nothing about other tenants' clients from it.
Status not_callers_client(uint64_t client_id) {
  return permission_denied("client " + std::to_string(client_id) +
                           " is not attached on this connection (call Hello first)");
}

}  // namespace

Result<uint64_t> ClientTable::attach(const std::string& name, const std::string& connection,
                                     const Credentials& creds, EventSink* sink) {
  std::lock_guard<std::mutex> lock(mu_);
  if (clients_.size() >= max_clients_) {
    return resource_exhausted("daemon already serves " + std::to_string(clients_.size()) +
                              " clients (max_clients)");
  }
  const uint64_t id = next_id_++;
  clients_[id] = Client{name, connection, creds, sink, {}};
  return id;
}

std::vector<Membership> ClientTable::detach(uint64_t client_id) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Membership> held;
  auto it = clients_.find(client_id);
  if (it == clients_.end()) return held;
  for (auto& [job, m] : it->second.jobs) held.push_back(std::move(m));
  clients_.erase(it);
  return held;
}

Result<Credentials> ClientTable::check_caller(uint64_t client_id, const std::string& connection) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end() || it->second.connection != connection) return not_callers_client(client_id);
  return it->second.creds;
}

Status ClientTable::check_process(uint64_t client_id, pid_t pid) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end() || it->second.creds.pid != pid) {
    return permission_denied("client " + std::to_string(client_id) + " is not attached by this process");
  }
  return Status();
}

Status ClientTable::begin_join(uint64_t client_id, const std::string& connection, const Membership& membership) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end() || it->second.connection != connection) return not_callers_client(client_id);
  Client& c = it->second;
  if (c.jobs.count(membership.job_id)) {
    return already_exists("this client already holds rank " + std::to_string(c.jobs[membership.job_id].rank) +
                          " of job " + membership.job_id);
  }
  if (c.jobs.size() >= max_jobs_per_client_) {
    return resource_exhausted("client " + std::to_string(client_id) + " already holds " +
                              std::to_string(c.jobs.size()) + " jobs (max_jobs_per_client)");
  }
  c.jobs[membership.job_id] = membership;
  c.jobs[membership.job_id].client_id = client_id;
  return Status();
}

bool ClientTable::complete_join(uint64_t client_id, const std::string& job_id, const v1::RankTable& table) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end()) return false;
  auto m = it->second.jobs.find(job_id);
  if (m == it->second.jobs.end() || m->second.formed) return false;
  m->second.formed = true;
  m->second.table = table;
  return true;
}

Result<Membership> ClientTable::membership(uint64_t client_id, const std::string& connection,
                                          const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end() || it->second.connection != connection) return not_callers_client(client_id);
  auto m = it->second.jobs.find(job_id);
  if (m == it->second.jobs.end() || !m->second.formed) {
    return failed_precondition("this client holds no formed rank of job " + job_id + " (join it first)");
  }
  return m->second;
}

void ClientTable::abort_join(uint64_t client_id, const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = clients_.find(client_id);
  if (it != clients_.end()) it->second.jobs.erase(job_id);
}

Result<Membership> ClientTable::leave(uint64_t client_id, const std::string& connection, const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end() || it->second.connection != connection) return not_callers_client(client_id);
  auto m = it->second.jobs.find(job_id);
  if (m == it->second.jobs.end()) return not_found("this client holds no rank of job " + job_id);
  Membership out = std::move(m->second);
  it->second.jobs.erase(m);
  return out;
}

void ClientTable::deliver(const std::string& job_id, int64_t skip_rank, const v1::ClientEvent& event) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, c] : clients_) {
    auto m = c.jobs.find(job_id);
    if (m == c.jobs.end() || static_cast<int64_t>(m->second.rank) == skip_rank) continue;
    if (event.has_rank_lost()) m->second.lost_ranks.push_back(event.rank_lost().rank());
    // The sink only queues; holding the lock here keeps detach() from
    // racing with the push (the sink is freed after detach).
    if (c.sink) c.sink->push(event);
  }
}

std::vector<Membership> ClientTable::close_all(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Membership> held;
  v1::ClientEvent bye;
  bye.mutable_daemon_shutdown()->set_reason(reason);
  for (auto& [id, c] : clients_) {
    for (auto& [job, m] : c.jobs) held.push_back(m);
    c.jobs.clear();
    if (c.sink) {
      c.sink->push(bye);
      c.sink->close(unavailable("epxd shutting down: " + reason));
    }
  }
  return held;
}

std::vector<v1::RankTable> ClientTable::formed_tables() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, v1::RankTable> tables;
  for (const auto& [id, c] : clients_) {
    for (const auto& [job, m] : c.jobs) {
      if (m.formed) tables.emplace(job, m.table);
    }
  }
  std::vector<v1::RankTable> out;
  for (auto& [job, t] : tables) out.push_back(std::move(t));
  return out;
}

std::vector<v1::ClientStatus> ClientTable::client_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::ClientStatus> out;
  for (const auto& [id, c] : clients_) {
    v1::ClientStatus s;
    s.set_client_id(id);
    s.set_name(c.name);
    s.set_pid(c.creds.pid);
    s.set_uid(c.creds.uid);
    s.set_gid(c.creds.gid);
    for (const auto& [job, m] : c.jobs) s.add_jobs(job + "/" + std::to_string(m.rank));
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<v1::JobStatus> ClientTable::job_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, v1::JobStatus> jobs;
  for (const auto& [id, c] : clients_) {
    for (const auto& [job_id, m] : c.jobs) {
      v1::JobStatus& s = jobs[job_id];
      s.set_job_id(job_id);
      s.set_world_size(m.world_size);
      s.set_coordinator(m.coordinator);
      s.set_state(m.formed ? "formed" : "forming");
      auto* ms = s.add_members();
      ms->set_rank(m.rank);
      ms->set_local_rank(m.local_rank);
      ms->set_present(true);
      for (uint32_t lost : m.lost_ranks) {
        auto* l = s.add_members();
        l->set_rank(lost);
        l->set_present(false);
      }
    }
  }
  std::vector<v1::JobStatus> out;
  for (auto& [id, s] : jobs) out.push_back(std::move(s));
  return out;
}

size_t ClientTable::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return clients_.size();
}

}  // namespace epx::daemon
