// LL dispatch/combine end to end: real daemons, one process per rank
// (tools/device/ll_rank.cc), outputs checked against the CPU reference by
// every rank (tests/gpu/rank_job.h says how the job is laid out).
#include <doctest/doctest.h>

#include "tests/gpu/gpu_test.h"
#include "tests/gpu/rank_job.h"

namespace epx::test {
namespace {

RankJob ll_job(int nodes, uint32_t world, const std::string& mode) {
  RankJob job;
  job.binary = "tools/device/ll_rank";
  job.done = "LL_DONE";
  job.nodes = nodes;
  job.world = world;
  job.mode = mode;
  return job;
}

TEST_CASE("EP2 over NVLink: two ranks of one node match the reference") {
  TempDir dir;
  run_rank_job(dir, ll_job(1, 2, "check"));
}

TEST_CASE("EP2 through two daemons (shm): every byte crosses the proxies") {
  TempDir dir;
  run_rank_job(dir, ll_job(2, 2, "check"));
}

TEST_CASE("EP16 as two nodes of 8 ranks: NVLink and daemon paths at once") {
  TempDir dir;
  run_rank_job(dir, ll_job(2, 16, "check"));
}

TEST_CASE("a rank killed mid-job: the others get its name within the timeout, mask it, and go on") {
  TempDir dir;
  RankJob job = ll_job(2, 4, "kill");
  job.extra = {"--timeout-ms", "3000"};
  job.victim = 3;
  run_rank_job(dir, job);
}

}  // namespace
}  // namespace epx::test
