// SpawnedDaemon: an epxd child process for the benchmarks (two of them
// emulate two nodes), busy-polling or not, optionally with its proxy pinned;
// stopped with SIGTERM when destroyed.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "epx/status.h"
#include "epx/v1/status.pb.h"

namespace epx::bench {

class SpawnedDaemon {
 public:
  // `domain` may be empty (every domain of the provider); `proxy_core` < 0:
  // no pinning; `busy_poll`: proxies never sleep (else the daemon's default
  // back-off); `extra_args`: more epxd flags, then those of the environment's
  // EPXD_ARGS (space-separated words, no quoting; only flags not given here
  // already: epxd refuses a flag given twice). Logs go to <dir>/<name>.log.
  static Result<std::unique_ptr<SpawnedDaemon>> start(const std::string& epxd, const std::string& dir,
                                                      const std::string& name, const std::string& provider,
                                                      const std::string& domain, int proxy_core, bool busy_poll = true,
                                                      const std::vector<std::string>& extra_args = {});
  ~SpawnedDaemon();
  const std::string& socket() const { return socket_; }
  // The daemon's Status (rails, proxies, peer address).
  Result<v1::DaemonStatus> status() const;

 private:
  SpawnedDaemon() = default;
  pid_t pid_ = -1;
  std::string socket_;
};

// The Status of the epxd at control socket `socket` (a 5 s deadline).
Result<v1::DaemonStatus> daemon_status(const std::string& socket);

// epxd beside the running benchmark binary (bazel-bin layout or a flat
// pack), or "" when there is none.
std::string find_epxd(const std::string& relative_to_bazel_bin);

}  // namespace epx::bench
