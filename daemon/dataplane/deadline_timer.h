// DeadlineTimer: runs callbacks at deadlines on one thread of its own, so a
// call handed to proxies ends on time even when a proxy is stalled.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

namespace epx::daemon {

class DeadlineTimer {
 public:
  using Clock = std::chrono::steady_clock;

  DeadlineTimer();
  ~DeadlineTimer();  // joins the thread; callbacks not yet due never run
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

  // Runs `fn` on the timer thread at `at` unless cancelled first. Callbacks
  // must not block: they share the one thread.
  uint64_t schedule(Clock::time_point at, std::function<void()> fn);
  // Drops a callback not yet started; no effect on one running or done.
  void cancel(uint64_t id);

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<Clock::time_point, uint64_t>, std::function<void()>> due_;
  std::map<uint64_t, Clock::time_point> by_id_;
  uint64_t next_id_ = 1;
  bool stop_ = false;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace epx::daemon
