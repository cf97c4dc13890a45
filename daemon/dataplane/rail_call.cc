#include "daemon/dataplane/rail_call.h"

#include <utility>

namespace epx::daemon {

RailCall::RailCall(size_t rails, DeadlineTimer& timer, std::function<void(Status)> done)
    : timer_(timer), answered_(rails, false), remaining_(rails), done_(std::move(done)) {}

std::shared_ptr<RailCall> RailCall::start(size_t rails, DeadlineTimer& timer, DeadlineTimer::Clock::duration timeout,
                                          std::string what, std::function<void(Status)> done) {
  std::shared_ptr<RailCall> call(new RailCall(rails, timer, std::move(done)));
  if (rails == 0) {
    call->finished_ = true;
    call->done_(Status());
    return call;
  }
  // Scheduled under the lock so the timer id is set before any answer reads
  // it to cancel.
  std::lock_guard<std::mutex> lock(call->mu_);
  call->timer_id_ = timer.schedule(DeadlineTimer::Clock::now() + timeout,
                                   [call, what = std::move(what), timeout] { call->expire(what, timeout); });
  return call;
}

bool RailCall::answer(size_t rail, Status s) {
  std::function<void(Status)> fire;
  Status result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return false;
    answered_[rail] = true;
    if (!s.ok() && first_error_.ok()) first_error_ = std::move(s);
    if (--remaining_ > 0) return true;
    finished_ = true;
    fire = std::move(done_);
    result = first_error_;
  }
  timer_.cancel(timer_id_);
  fire(std::move(result));
  return true;
}

bool RailCall::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

void RailCall::expire(const std::string& what, DeadlineTimer::Clock::duration timeout) {
  std::function<void(Status)> fire;
  std::string missing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    fire = std::move(done_);
    for (size_t i = 0; i < answered_.size(); ++i) {
      if (!answered_[i]) missing += (missing.empty() ? "" : ", ") + std::to_string(i);
    }
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
  fire(deadline_exceeded((what.empty() ? "" : what + ": ") + "the proxies of rail(s) " + missing +
                         " did not answer within " + std::to_string(ms) + " ms (busy or stalled)"));
}

}  // namespace epx::daemon
