#include "daemon/control/local_calls.h"

#include <vector>

#include "daemon/control/waiting_reactor.h"

namespace epx::daemon {

uint64_t LocalCalls::track(const std::shared_ptr<CallAnswer>& answer) {
  std::optional<grpc::Status> closed;
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) {
      closed = closed_;
    } else {
      ticket = next_ticket_++;
      waiting_.emplace(ticket, answer);
    }
  }
  if (closed) answer->finish(*closed);
  return ticket;
}

void LocalCalls::forget(uint64_t ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  waiting_.erase(ticket);
}

size_t LocalCalls::close_all(const grpc::Status& status) {
  std::vector<std::shared_ptr<CallAnswer>> answers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = status;
    for (auto& [ticket, answer] : waiting_) answers.push_back(answer);
  }
  // Unlocked: finishing a call runs its OnDone, which forgets it here.
  for (auto& answer : answers) answer->finish(status);
  return answers.size();
}

}  // namespace epx::daemon
