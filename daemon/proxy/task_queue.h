// TaskQueue: work other threads hand to a proxy thread, which alone may
// touch its rail's libfabric objects. The proxy drains it between passes.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include "epx/status.h"

namespace epx::daemon {

class TaskQueue {
 public:
  explicit TaskQueue(std::string owner) : owner_(std::move(owner)) {}

  // Queues `task` and returns at once; it runs on the proxy thread.
  void submit(std::function<void()> task);
  // Runs `task` on the proxy thread and waits for it, at most `timeout`.
  // A task still queued at the timeout is cancelled (it never runs, so it
  // may capture the caller's stack); one already running is waited for.
  Status execute(std::function<void()> task, std::chrono::milliseconds timeout);

  // Proxy thread: runs every queued task; true when there was any.
  bool run_pending();

 private:
  const std::string owner_;  // "proxy of rail 0": for errors
  std::mutex mu_;
  std::deque<std::function<void()>> tasks_;
  std::atomic<bool> has_tasks_{false};  // release in submit() pairs with acquire in run_pending()
};

}  // namespace epx::daemon
