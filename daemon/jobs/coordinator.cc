#include "daemon/jobs/coordinator.h"

#include <random>

#include <set>

namespace epx::daemon {

void Coordinator::run(Pending& pending) {
  for (auto& [reply, result] : pending) reply(std::move(result));
}

std::string Coordinator::missing_ranks(const Job& job) {
  std::string out;
  int shown = 0, missing = 0;
  for (uint32_t r = 0; r < job.world_size; ++r) {
    if (job.members.count(r)) continue;
    ++missing;
    if (shown < 16) {
      out += (out.empty() ? "" : ",") + std::to_string(r);
      ++shown;
    }
  }
  if (missing > shown) out += ",... (" + std::to_string(missing) + " in all)";
  return out;
}

uint64_t Coordinator::new_formation() {
  static std::mt19937_64 rng(std::random_device{}());
  uint64_t f = 0;
  while (f == 0) f = rng();  // 0 is "unset" on the wire
  return f;
}

v1::RankTable Coordinator::table_of(const std::string& job_id, const Job& job) const {
  v1::RankTable table;
  table.set_job_id(job_id);
  table.set_world_size(job.world_size);
  table.set_coordinator(self_address_);
  table.set_formation(job.formation);
  for (const auto& [rank, member] : job.members) *table.add_ranks() = member.entry;
  return table;
}

uint64_t Coordinator::register_rank(const std::string& job_id, uint32_t world_size, const v1::RankEntry& entry,
                                    Clock::time_point deadline, Reply reply) {
  Pending pending;
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const uint32_t rank = entry.rank();
    if (world_size == 0 || world_size > kMaxWorld) {
      pending.emplace_back(std::move(reply), invalid_argument("job " + job_id + ": world size must be 1.." +
                                                              std::to_string(kMaxWorld)));
    } else if (rank >= world_size) {
      pending.emplace_back(std::move(reply), invalid_argument("job " + job_id + ": rank " + std::to_string(rank) +
                                                                  " out of range for world size " +
                                                                  std::to_string(world_size)));
    } else {
      auto it = jobs_.find(job_id);
      if (it != jobs_.end() && it->second.world_size != world_size) {
        pending.emplace_back(std::move(reply),
                             failed_precondition("job " + job_id + " has world size " +
                                                 std::to_string(it->second.world_size) + " but rank " +
                                                 std::to_string(rank) + " asked for " + std::to_string(world_size)));
      } else if (it != jobs_.end() && it->second.members.count(rank)) {
        const auto& m = it->second.members.at(rank);
        pending.emplace_back(std::move(reply),
                             already_exists("job " + job_id + ": rank " + std::to_string(rank) +
                                            " already joined from node " + m.entry.node() + " (pid " +
                                            std::to_string(m.entry.pid()) + ")" + (m.present ? "" : " and left")));
      } else if (it != jobs_.end() && it->second.formed) {
        pending.emplace_back(std::move(reply),
                             failed_precondition("job " + job_id + " already formed; rank " + std::to_string(rank) +
                                                 " cannot join it now (use a new job id)"));
      } else {
        Job& job = jobs_[job_id];
        job.world_size = world_size;
        Member& m = job.members[rank];
        m.entry = entry;
        m.reply = std::move(reply);
        m.deadline = deadline;
        m.ticket = ticket = next_ticket_++;
        if (job.members.size() == world_size) {
          job.formed = true;
          job.formation = new_formation();
          v1::RankTable table = table_of(job_id, job);
          for (auto& [r, member] : job.members) {
            pending.emplace_back(std::move(member.reply), table);
            member.reply = nullptr;
          }
        }
      }
    }
  }
  run(pending);
  return ticket;
}

void Coordinator::cancel_registration(const std::string& job_id, uint32_t rank, uint64_t ticket) {
  Pending pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end() || it->second.formed) return;
    auto m = it->second.members.find(rank);
    if (m == it->second.members.end() || m->second.ticket != ticket || !m->second.reply) return;
    pending.emplace_back(std::move(m->second.reply),
                         Status(StatusCode::kCancelled, "job " + job_id + ": rank " + std::to_string(rank) +
                                                            " registration cancelled by its daemon"));
    it->second.members.erase(m);
    if (it->second.members.empty()) jobs_.erase(it);
  }
  run(pending);
}

Result<std::vector<Coordinator::Notice>> Coordinator::leave(const std::string& job_id, uint32_t rank,
                                                            const std::string& reason, const OwnerCheck& owner) {
  std::vector<Notice> notices;
  Pending pending;
  Answers barrier_answers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return not_found("job " + job_id + " is not coordinated here");
    Job& job = it->second;
    auto m = job.members.find(rank);
    if (m == job.members.end() || !m->second.present) {
      return not_found("job " + job_id + ": rank " + std::to_string(rank) + " is not a member");
    }
    EPX_RETURN_IF_ERROR(owner(m->second.entry.daemon_address()));
    if (!job.formed) {
      // Still at the barrier: the slot is free again for a retry.
      if (m->second.reply) {
        pending.emplace_back(std::move(m->second.reply),
                             Status(StatusCode::kCancelled, "job " + job_id + ": rank " + std::to_string(rank) +
                                                                " left before the job formed: " + reason));
      }
      job.members.erase(m);
    } else {
      m->second.present = false;
      // The leaving rank's own arrival is answered too: its caller (a
      // server-side barrier call) must finish, or the server that holds it
      // cannot shut down.
      if (auto own = job.barrier.find(rank); own != job.barrier.end()) {
        barrier_answers.emplace_back(std::move(own->second.reply),
                                     Status(StatusCode::kCancelled, "job " + job_id + ": rank " +
                                                                        std::to_string(rank) +
                                                                        " left while at the barrier: " + reason));
        job.barrier.erase(own);
      }
      for (auto& [r, a] : job.barrier) {
        barrier_answers.emplace_back(std::move(a.reply),
                                     unavailable("job " + job_id + ": rank " + std::to_string(rank) + " on " +
                                                 m->second.entry.node() + " left during the barrier: " + reason));
      }
      job.barrier.clear();
      std::set<std::string> daemons;
      for (const auto& [r, member] : job.members) {
        if (member.present) daemons.insert(member.entry.daemon_address());
      }
      for (const auto& address : daemons) {
        Notice n{address, {}};
        n.event.set_job_id(job_id);
        n.event.mutable_rank_left()->set_rank(rank);
        n.event.mutable_rank_left()->set_node(m->second.entry.node());
        n.event.mutable_rank_left()->set_reason(reason);
        notices.push_back(std::move(n));
      }
    }
    bool anyone = false;
    for (const auto& [r, member] : job.members) anyone = anyone || member.present;
    if (!anyone) jobs_.erase(it);
  }
  run(pending);
  for (auto& [r, s] : barrier_answers) r(s);
  return notices;
}

void Coordinator::check_barrier(Job& job, Answers& answers) {
  if (job.barrier.empty()) return;
  for (const auto& [rank, m] : job.members) {
    if (m.present && !job.barrier.count(rank)) return;
  }
  for (auto& [rank, a] : job.barrier) answers.emplace_back(std::move(a.reply), Status());
  job.barrier.clear();
}

void Coordinator::barrier(const std::string& job_id, uint32_t rank, Clock::time_point deadline,
                          std::function<void(Status)> reply, const OwnerCheck& owner) {
  Answers answers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end() || !it->second.formed) {
      answers.emplace_back(std::move(reply), failed_precondition("job " + job_id + " is not formed here"));
    } else {
      Job& job = it->second;
      auto m = job.members.find(rank);
      if (m == job.members.end() || !m->second.present) {
        answers.emplace_back(std::move(reply), failed_precondition("job " + job_id + ": rank " +
                                                                   std::to_string(rank) + " is not a member"));
      } else if (Status refused = owner(m->second.entry.daemon_address()); !refused.ok()) {
        answers.emplace_back(std::move(reply), std::move(refused));
      } else if (job.barrier.count(rank)) {
        answers.emplace_back(std::move(reply), already_exists("job " + job_id + ": rank " + std::to_string(rank) +
                                                              " is already at the barrier"));
      } else {
        job.barrier[rank] = Arrival{std::move(reply), deadline};
        check_barrier(job, answers);
      }
    }
  }
  for (auto& [r, s] : answers) r(s);
}

void Coordinator::expire(Clock::time_point now) {
  Pending pending;
  Answers answers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      Job& job = it->second;
      for (auto a = job.barrier.begin(); a != job.barrier.end();) {
        if (a->second.deadline > now) {
          ++a;
          continue;
        }
        std::string absent;
        for (const auto& [rank, m] : job.members) {
          if (m.present && !job.barrier.count(rank)) absent += (absent.empty() ? "" : ",") + std::to_string(rank);
        }
        answers.emplace_back(std::move(a->second.reply),
                             deadline_exceeded("job " + it->first + ": barrier timed out; ranks not arrived: " + absent));
        a = job.barrier.erase(a);
      }
      if (!job.formed) {
        std::string missing;  // built only when a registration expires
        for (auto m = job.members.begin(); m != job.members.end();) {
          if (m->second.reply && m->second.deadline <= now) {
            if (missing.empty()) missing = missing_ranks(job);
            pending.emplace_back(std::move(m->second.reply),
                                 deadline_exceeded("job " + it->first + ": bootstrap barrier timed out with " +
                                                   std::to_string(job.members.size()) + "/" +
                                                   std::to_string(job.world_size) +
                                                   " ranks joined; missing ranks: " + missing));
            m = job.members.erase(m);
          } else {
            ++m;
          }
        }
      }
      it = job.members.empty() ? jobs_.erase(it) : std::next(it);
    }
  }
  run(pending);
  for (auto& [r, s] : answers) r(s);
}

std::vector<Coordinator::Notice> Coordinator::shutdown(const std::string& reason) {
  std::vector<Notice> notices;
  Pending pending;
  Answers answers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [job_id, job] : jobs_) {
      for (auto& [rank, a] : job.barrier) {
        answers.emplace_back(std::move(a.reply), unavailable("coordinator shutting down: " + reason));
      }
      std::set<std::string> daemons;
      for (auto& [rank, m] : job.members) {
        if (m.reply) pending.emplace_back(std::move(m.reply), unavailable("coordinator shutting down: " + reason));
        if (job.formed && m.present) daemons.insert(m.entry.daemon_address());
      }
      for (const auto& address : daemons) {
        Notice n{address, {}};
        n.event.set_job_id(job_id);
        n.event.mutable_coordinator_gone()->set_reason(reason);
        notices.push_back(std::move(n));
      }
    }
    jobs_.clear();
  }
  run(pending);
  for (auto& [r, s] : answers) r(s);
  return notices;
}

std::vector<v1::JobStatus> Coordinator::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::JobStatus> out;
  for (const auto& [job_id, job] : jobs_) {
    v1::JobStatus s;
    s.set_job_id(job_id);
    s.set_world_size(job.world_size);
    s.set_coordinator(self_address_);
    s.set_state(job.formed ? "formed" : "forming");
    s.set_coordinated_here(true);
    for (const auto& [rank, m] : job.members) {
      auto* ms = s.add_members();
      ms->set_rank(rank);
      ms->set_local_rank(m.entry.local_rank());
      ms->set_node(m.entry.node());
      ms->set_present(m.present);
    }
    out.push_back(std::move(s));
  }
  return out;
}

size_t Coordinator::job_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

}  // namespace epx::daemon
