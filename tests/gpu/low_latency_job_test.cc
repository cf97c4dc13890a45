// LL dispatch/combine end to end: real daemons, one process per rank
// (tools/device/ll_rank.cc), outputs checked against the CPU
// reference by every rank. Emulated nodes are daemons on one machine
// (DEVICE.md); ranks of one node share the GPUs round-robin, so with one GPU
// every rank runs on it (NVLink stores become stores to the same GPU's
// memory through CUDA IPC: the same code path, not the same speed).
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "epx/cuda.h"
#include "tests/gpu/gpu_test.h"
#include "tests/harness/daemon_process.h"
#include "tests/harness/process.h"

namespace epx::test {
namespace {

struct Node {
  std::unique_ptr<DaemonProcess> daemon;
  std::vector<uint32_t> ranks;
};

// Runs `world` ranks split over `nodes` daemons (provider shm), each with
// the given extra flags; every rank must print LL_DONE and exit 0.
void run_job(const TempDir& dir, int nodes, uint32_t world, const std::string& mode,
             std::vector<std::string> extra = {}, int victim = -1,
             std::chrono::seconds limit = std::chrono::seconds(600)) {
  std::vector<Node> node(nodes);
  for (int n = 0; n < nodes; ++n) {
    node[n].daemon = std::make_unique<DaemonProcess>(
        dir, DaemonOptions{std::string(1, static_cast<char>('a' + n)), "shm", {"--proxy-busy-poll", "true"}});
  }
  const std::string coordinator = node[0].daemon->peer_address();
  const int gpus = cuda_device_count();
  const uint32_t per_node = world / nodes;
  std::vector<std::unique_ptr<Process>> ranks;
  for (uint32_t r = 0; r < world; ++r) {
    const int n = static_cast<int>(r / per_node);
    const uint32_t local = r % per_node;
    std::vector<std::string> argv = {runfile("tools/device/ll_rank"),
                                     "--socket",
                                     node[n].daemon->socket(),
                                     "--job",
                                     "ll-" + mode,
                                     "--world",
                                     std::to_string(world),
                                     "--rank",
                                     std::to_string(r),
                                     "--local-rank",
                                     std::to_string(local),
                                     "--coordinator",
                                     coordinator,
                                     "--device",
                                     std::to_string(static_cast<int>(local) % gpus),
                                     "--mode",
                                     mode};
    if (victim >= 0) {
      argv.push_back("--victim");
      argv.push_back(std::to_string(victim));
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    // Under MPS (several ranks sharing a GPU), each rank gets its share of
    // the SMs, as it would have a GPU of its own: a rank whose receive
    // blocks fill every SM while they wait would starve the senders they
    // wait for. Without MPS the variable is ignored (time slicing).
    const int sharing = static_cast<int>((per_node + gpus - 1) / gpus) * nodes;
    const std::string share = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=" + std::to_string(std::max(1, 100 / sharing));
    ranks.push_back(std::make_unique<Process>(argv, dir.path() + "/rank" + std::to_string(r) + ".log",
                                              std::vector<std::string>{share}));
  }
  for (uint32_t r = 0; r < world; ++r) {
    CAPTURE(r);
    const auto code = ranks[r]->wait(limit);
    const std::string out = ranks[r]->output();
    if (static_cast<int>(r) == victim) {
      CHECK_MESSAGE(code == 128 + 9, out);  // SIGKILLed itself, as planned
      continue;
    }
    REQUIRE_MESSAGE(code.has_value(), "rank " << r << " still running after the limit:\n" << out);
    CHECK_MESSAGE(*code == 0, out);
    CHECK_MESSAGE(out.find("LL_DONE") != std::string::npos, out);
    if (r == 0) MESSAGE(out);
  }
  // On failure, what the daemons said (rejected descriptors name their reason there).
  for (int n = 0; n < nodes && doctest::getContextOptions() != nullptr; ++n) {
    const std::string log = node[n].daemon->process().output();
    if (log.find("rejected") != std::string::npos || log.find("error") != std::string::npos) {
      MESSAGE("daemon " << n << " log (last 4000 bytes):\n" << log.substr(log.size() > 4000 ? log.size() - 4000 : 0));
    }
  }
}

TEST_CASE("EP2 over NVLink: two ranks of one node match the reference") {
  TempDir dir;
  run_job(dir, 1, 2, "check");
}

TEST_CASE("EP2 through two daemons (shm): every byte crosses the proxies") {
  TempDir dir;
  run_job(dir, 2, 2, "check");
}

TEST_CASE("EP16 as two nodes of 8 ranks: NVLink and daemon paths at once") {
  TempDir dir;
  run_job(dir, 2, 16, "check");
}

TEST_CASE("a rank killed mid-job: the others get its name within the timeout, mask it, and go on") {
  TempDir dir;
  run_job(dir, 2, 4, "kill", {"--timeout-ms", "3000"}, /*victim=*/3);
}

}  // namespace
}  // namespace epx::test
