#include "daemon/proxy/task_queue.h"

#include <future>
#include <memory>

namespace epx::daemon {

void TaskQueue::submit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  has_tasks_.store(true, std::memory_order_release);
}

Status TaskQueue::execute(std::function<void()> task, std::chrono::milliseconds timeout) {
  enum : int { kQueued, kRunning, kCancelled };
  struct State {
    std::atomic<int> phase{kQueued};
    std::promise<void> done;
  };
  auto state = std::make_shared<State>();
  auto future = state->done.get_future();
  submit([task = std::move(task), state] {
    int queued = kQueued;
    // acq_rel: pairs with the caller's compare-exchange to kCancelled.
    if (!state->phase.compare_exchange_strong(queued, kRunning, std::memory_order_acq_rel)) return;
    task();
    state->done.set_value();
  });
  if (future.wait_for(timeout) == std::future_status::ready) return Status();
  int queued = kQueued;
  if (state->phase.compare_exchange_strong(queued, kCancelled, std::memory_order_acq_rel)) {
    return deadline_exceeded(owner_ + " did not take a task within " + std::to_string(timeout.count()) +
                             " ms (busy or stalled)");
  }
  future.wait();  // running now: it finishes on its own
  return Status();
}

bool TaskQueue::run_pending() {
  // acquire: pairs with submit()'s release store.
  if (!has_tasks_.load(std::memory_order_acquire)) return false;
  std::deque<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks.swap(tasks_);
    has_tasks_.store(false, std::memory_order_relaxed);
  }
  for (auto& t : tasks) t();
  return true;
}

}  // namespace epx::daemon
