// RailCall: one call answered by several rails (one proxy thread each), with
// a deadline. It records who answered and the first error, and runs its
// `done` exactly once: when the last rail answers, or at the deadline with
// the rails that did not answer named. Shared by every ProxySet operation
// that waits for all rails, so that bookkeeping lives in one place.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/dataplane/deadline_timer.h"
#include "epx/status.h"

namespace epx::daemon {

class RailCall {
 public:
  // `what` prefixes the deadline error ("quiesce: ..."); empty for none.
  static std::shared_ptr<RailCall> start(size_t rails, DeadlineTimer& timer, DeadlineTimer::Clock::duration timeout,
                                         std::string what, std::function<void(Status)> done);

  // Records rail `rail`'s answer; the last one runs `done` with the first
  // error seen. Returns false when the call had already finished (the
  // answer came after the deadline): the caller may then undo its work.
  bool answer(size_t rail, Status s);
  // True once `done` ran or is running.
  bool finished() const;

 private:
  RailCall(size_t rails, DeadlineTimer& timer, std::function<void(Status)> done);
  void expire(const std::string& what, DeadlineTimer::Clock::duration timeout);

  DeadlineTimer& timer_;
  mutable std::mutex mu_;
  std::vector<bool> answered_;
  size_t remaining_;
  bool finished_ = false;
  Status first_error_;
  std::function<void(Status)> done_;
  uint64_t timer_id_ = 0;
};

}  // namespace epx::daemon
