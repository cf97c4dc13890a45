#include "daemon/shutdown_bound.h"

#include <cstdlib>

#include <spdlog/spdlog.h>

namespace epx::daemon {

void ShutdownBound::exit_process(const std::string& stage, std::chrono::milliseconds limit) {
  spdlog::error("shutdown did not finish within shutdown_timeout_ms ({} ms); stuck while {}; exiting with status {}",
                limit.count(), stage, kExitCode);
  spdlog::default_logger()->flush();
  std::_Exit(kExitCode);
}

ShutdownBound::~ShutdownBound() {
  disarm();
  if (watchdog_.joinable()) watchdog_.join();
}

void ShutdownBound::arm(std::chrono::milliseconds limit, const std::string& stage) {
  std::lock_guard<std::mutex> lock(mu_);
  stage_ = stage;
  if (armed_ || finished_) return;
  armed_ = true;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  watchdog_ = std::thread([this, deadline, limit] { watch(deadline, limit); });
}

void ShutdownBound::stage(const std::string& stage) {
  std::lock_guard<std::mutex> lock(mu_);
  stage_ = stage;
}

void ShutdownBound::disarm() {
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  cv_.notify_all();
}

void ShutdownBound::watch(std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(mu_);
  if (cv_.wait_until(lock, deadline, [this] { return finished_; })) return;
  const std::string stage = stage_;
  lock.unlock();  // the action may end the process or take time; never under the lock
  expired_(stage, limit);
}

}  // namespace epx::daemon
