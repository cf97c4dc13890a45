// Runs a job of rank processes (tools/device/ll_rank, normal_rank) through
// real daemons, as engines run it, and checks each rank's verdict. Emulated
// nodes are daemons on one machine (DEVICE.md); ranks of one node share the
// GPUs round-robin, so with one GPU every rank runs on it (NVLink stores
// become stores to the same GPU's memory through CUDA IPC: the same code
// path, not the same speed).
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "epx/cuda.h"
#include "tests/harness/daemon_process.h"
#include "tests/harness/process.h"

namespace epx::test {

struct RankJob {
  std::string binary;  // runfile path of the rank program
  std::string done;    // the line every surviving rank prints at the end
  int nodes = 1;
  uint32_t world = 2;
  std::string mode = "check";
  std::vector<std::string> extra;  // more flags for every rank
  int victim = -1;                 // this rank kills itself (exit by SIGKILL expected)
  std::chrono::seconds limit{600};
};

// Every rank must exit 0 having printed job.done (the victim: killed).
inline void run_rank_job(const TempDir& dir, const RankJob& job) {
  struct Node {
    std::unique_ptr<DaemonProcess> daemon;
  };
  std::vector<Node> node(job.nodes);
  for (int n = 0; n < job.nodes; ++n) {
    node[n].daemon = std::make_unique<DaemonProcess>(
        dir, DaemonOptions{std::string(1, static_cast<char>('a' + n)), "shm", {"--proxy-busy-poll", "true"}});
  }
  const std::string coordinator = node[0].daemon->peer_address();
  const int gpus = cuda_device_count();
  const uint32_t per_node = job.world / job.nodes;
  std::vector<std::unique_ptr<Process>> ranks;
  for (uint32_t r = 0; r < job.world; ++r) {
    const int n = static_cast<int>(r / per_node);
    const uint32_t local = r % per_node;
    std::vector<std::string> argv = {runfile(job.binary),
                                     "--socket",
                                     node[n].daemon->socket(),
                                     "--job",
                                     job.mode + "-job",
                                     "--world",
                                     std::to_string(job.world),
                                     "--rank",
                                     std::to_string(r),
                                     "--local-rank",
                                     std::to_string(local),
                                     "--coordinator",
                                     coordinator,
                                     "--device",
                                     std::to_string(static_cast<int>(local) % gpus),
                                     "--mode",
                                     job.mode};
    if (job.victim >= 0) {
      argv.push_back("--victim");
      argv.push_back(std::to_string(job.victim));
    }
    argv.insert(argv.end(), job.extra.begin(), job.extra.end());
    // Under MPS (several ranks sharing a GPU), each rank gets its share of
    // the SMs, as it would have a GPU of its own: a rank whose waiting
    // blocks fill every SM would starve the senders they wait for. Without
    // MPS the variable is ignored (time slicing).
    const int sharing = static_cast<int>((per_node + gpus - 1) / gpus) * job.nodes;
    const std::string share = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=" + std::to_string(std::max(1, 100 / sharing));
    ranks.push_back(std::make_unique<Process>(argv, dir.path() + "/rank" + std::to_string(r) + ".log",
                                              std::vector<std::string>{share}));
  }
  for (uint32_t r = 0; r < job.world; ++r) {
    CAPTURE(r);
    const auto code = ranks[r]->wait(job.limit);
    const std::string out = ranks[r]->output();
    if (static_cast<int>(r) == job.victim) {
      CHECK_MESSAGE(code == 128 + 9, out);  // SIGKILLed itself, as planned
      continue;
    }
    REQUIRE_MESSAGE(code.has_value(), "rank " << r << " still running after the limit:\n" << out);
    CHECK_MESSAGE(*code == 0, out);
    CHECK_MESSAGE(out.find(job.done) != std::string::npos, out);
    if (r == 0) MESSAGE(out);
  }
  // On failure, what the daemons said (rejected descriptors name their reason there).
  for (int n = 0; n < job.nodes; ++n) {
    const std::string log = node[n].daemon->process().output();
    if (log.find("rejected") != std::string::npos || log.find("error") != std::string::npos) {
      MESSAGE("daemon " << n << " log (last 4000 bytes):\n" << log.substr(log.size() > 4000 ? log.size() - 4000 : 0));
    }
  }
}

}  // namespace epx::test
