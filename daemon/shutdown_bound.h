// ShutdownBound: a watchdog that keeps a daemon shutdown finite. Once armed
// it waits, on its own thread, for the shutdown to finish; if it has not
// finished within the limit it reports the stage the shutdown is stuck in
// and ends the process (by default: logs, exits with status 3), so a stuck
// gRPC server, peer or provider can never keep a stopped epxd alive.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace epx::daemon {

class ShutdownBound {
 public:
  // What happens at the limit: `stage` is the last one named.
  using Expired = std::function<void(const std::string& stage, std::chrono::milliseconds limit)>;
  // The default action: logs the stage at error level and _exits with
  // kExitCode (no destructors: they may be what is stuck).
  static constexpr int kExitCode = 3;
  static void exit_process(const std::string& stage, std::chrono::milliseconds limit);

  explicit ShutdownBound(Expired expired = exit_process) : expired_(std::move(expired)) {}
  // Disarms (the shutdown finished) and joins the watchdog.
  ~ShutdownBound();
  ShutdownBound(const ShutdownBound&) = delete;
  ShutdownBound& operator=(const ShutdownBound&) = delete;

  // Starts the clock; later calls only name the stage. Never blocks.
  void arm(std::chrono::milliseconds limit, const std::string& stage);
  // Names what the shutdown does now (reported if it gets stuck here).
  void stage(const std::string& stage);
  // The shutdown finished: the watchdog ends without acting.
  void disarm();

 private:
  void watch(std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds limit);

  const Expired expired_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string stage_;
  bool armed_ = false;
  bool finished_ = false;
  std::thread watchdog_;
};

}  // namespace epx::daemon
