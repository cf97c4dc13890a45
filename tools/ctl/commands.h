// epxctl's operations commands (health, drain, top), each in its own file;
// status, jobs, ping and join live in tools/epxctl.cc. Each returns the
// process exit code: 0 ok, 1 the operation failed or found a problem
// (message on stderr), 2 bad usage.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "epx/status.h"
#include "epx/v1/status.pb.h"

namespace epx::ctl {

// Local.Status over the daemon's unix socket (status_fetch.cc).
Result<v1::DaemonStatus> fetch_status(const std::string& socket, std::chrono::milliseconds timeout,
                                      bool own_only = false);

// grpc.health.v1 of the Local service, the daemon's rails, peers and
// drain state, and /readyz when the daemon serves it. 0 when ready.
int health(const std::string& socket, std::chrono::milliseconds timeout);

struct DrainOptions {
  bool cancel = false;                     // accept joins again
  std::chrono::milliseconds wait{600000};  // how long to wait for running jobs
  std::chrono::milliseconds poll{500};     // how often to look
};
// Stops new joins, then waits until no job is left on the daemon (0) or
// the wait ends (1, naming the jobs still running).
int drain(const std::string& socket, const DrainOptions& options, std::chrono::milliseconds timeout);

struct TopOptions {
  std::chrono::milliseconds interval{1000};
  uint32_t count = 0;  // intervals to show; 0: until SIGINT/SIGTERM
  bool json = false;   // one JSON object per line and interval
};
// A live view of rails, jobs and peers, refreshed every interval.
int top(const std::string& socket, const TopOptions& options, std::chrono::milliseconds timeout);

}  // namespace epx::ctl
