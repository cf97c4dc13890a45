#include "daemon/dataplane/deadline_timer.h"

#include <pthread.h>

namespace epx::daemon {

DeadlineTimer::DeadlineTimer() : thread_([this] { run(); }) {}

DeadlineTimer::~DeadlineTimer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t DeadlineTimer::schedule(Clock::time_point at, std::function<void()> fn) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
    due_.emplace(std::make_pair(at, id), std::move(fn));
    by_id_.emplace(id, at);
  }
  cv_.notify_all();
  return id;
}

void DeadlineTimer::cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  due_.erase({it->second, id});
  by_id_.erase(it);
}

void DeadlineTimer::run() {
  pthread_setname_np(pthread_self(), "epx-deadlines");
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (due_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto first = due_.begin();
    if (Clock::now() < first->first.first) {
      // A copy: wait_until reads the deadline again after waking, and
      // cancel() may have erased this entry while the lock was released.
      const Clock::time_point next = first->first.first;
      cv_.wait_until(lock, next);
      continue;
    }
    std::function<void()> fn = std::move(first->second);
    by_id_.erase(first->first.second);
    due_.erase(first);
    lock.unlock();
    fn();
    lock.lock();
  }
}

}  // namespace epx::daemon
