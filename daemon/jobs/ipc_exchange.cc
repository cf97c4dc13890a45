#include "daemon/jobs/ipc_exchange.h"

#include <algorithm>

namespace epx::daemon {

void IpcExchange::post(const std::string& job_id, const std::vector<uint32_t>& expected, const v1::PeerHandle& handle,
                       Clock::time_point deadline, Reply reply) {
  std::vector<std::pair<Reply, Result<std::vector<v1::PeerHandle>>>> answers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (std::find(expected.begin(), expected.end(), handle.rank()) == expected.end()) {
      answers.emplace_back(std::move(reply), invalid_argument("rank " + std::to_string(handle.rank()) +
                                                              " is not on this node in job " + job_id));
    } else {
      Round& round = rounds_[job_id];
      round.expected = expected;
      auto old = round.posted.find(handle.rank());
      if (old != round.posted.end()) {
        answers.emplace_back(std::move(old->second.reply),
                             Status(StatusCode::kAborted, "replaced by a newer exchange from the same rank"));
      }
      round.posted[handle.rank()] = Waiter{handle, std::move(reply), deadline};
      if (round.posted.size() == round.expected.size()) {
        std::vector<v1::PeerHandle> all;
        for (auto& [rank, w] : round.posted) all.push_back(w.handle);
        for (auto& [rank, w] : round.posted) answers.emplace_back(std::move(w.reply), all);
        rounds_.erase(job_id);
      }
    }
  }
  for (auto& [r, result] : answers) r(std::move(result));
}

void IpcExchange::expire(Clock::time_point now) {
  std::vector<std::pair<Reply, Result<std::vector<v1::PeerHandle>>>> answers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = rounds_.begin(); it != rounds_.end();) {
      Round& round = it->second;
      std::string missing;
      for (uint32_t r : round.expected) {
        if (!round.posted.count(r)) missing += (missing.empty() ? "" : ",") + std::to_string(r);
      }
      for (auto w = round.posted.begin(); w != round.posted.end();) {
        if (w->second.deadline <= now) {
          answers.emplace_back(std::move(w->second.reply),
                               deadline_exceeded("job " + it->first + ": same-node handle exchange timed out; local "
                                                 "ranks missing: " + missing));
          w = round.posted.erase(w);
        } else {
          ++w;
        }
      }
      it = round.posted.empty() ? rounds_.erase(it) : std::next(it);
    }
  }
  for (auto& [r, result] : answers) r(std::move(result));
}

void IpcExchange::forget(const std::string& job_id, uint32_t rank) {
  std::vector<std::pair<Reply, Status>> answers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = rounds_.find(job_id);
    if (it == rounds_.end()) return;
    Round& round = it->second;
    if (std::find(round.expected.begin(), round.expected.end(), rank) == round.expected.end()) return;
    // The round waits for every local rank, so without this one it can
    // never complete: answer the others now instead of at their deadlines.
    for (auto& [r, w] : round.posted) {
      answers.emplace_back(std::move(w.reply),
                           r == rank ? Status(StatusCode::kCancelled, "rank " + std::to_string(rank) + " left")
                                     : unavailable("job " + job_id + ": local rank " + std::to_string(rank) +
                                                   " left before the same-node handle exchange completed"));
    }
    rounds_.erase(it);
  }
  for (auto& [reply, status] : answers) reply(std::move(status));
}

}  // namespace epx::daemon
