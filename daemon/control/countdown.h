// Runs `done` when the last of `count` asynchronous calls finished.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>

namespace epx::daemon {

inline std::function<void()> countdown(size_t count, std::function<void()> done) {
  if (count == 0) {
    if (done) done();
    return [] {};
  }
  auto remaining = std::make_shared<std::atomic<size_t>>(count);
  auto shared_done = std::make_shared<std::function<void()>>(std::move(done));
  return [remaining, shared_done] {
    if (remaining->fetch_sub(1) == 1 && *shared_done) (*shared_done)();
  };
}

}  // namespace epx::daemon
