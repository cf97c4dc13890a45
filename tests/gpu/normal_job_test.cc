// Normal-mode dispatch/combine end to end inside one node: real daemons,
// one process per rank (tools/device/normal_rank.cc), outputs checked
// against the CPU reference by every rank (tests/gpu/rank_job.h says how the
// job is laid out). Each rank's suite covers tokens 0/1/128/4096, hidden
// 2048/7168, top-k 1/8, FP8 and BF16, expert_alignment 1/128, cached-handle
// reuse, worst-case mode in a CUDA graph, biases, async_finish, more than 128
// experts per rank, and the adversarial routings (everything to one rank,
// nothing to one rank).
#include <doctest/doctest.h>

#include "tests/gpu/gpu_test.h"
#include "tests/gpu/rank_job.h"

namespace epx::test {
namespace {

RankJob normal_job(uint32_t world, const std::string& mode) {
  RankJob job;
  job.binary = "tools/device/normal_rank";
  job.done = "NORMAL_DONE";
  job.world = world;
  job.mode = mode;
  return job;
}

TEST_CASE("EP2 inside one node matches the reference") {
  TempDir dir;
  run_rank_job(dir, normal_job(2, "check"));
}

TEST_CASE("EP8 inside one node matches the reference") {
  TempDir dir;
  run_rank_job(dir, normal_job(8, "check"));
}

TEST_CASE("EP16 inside one node matches the reference (routing coverage)") {
  TempDir dir;
  run_rank_job(dir, normal_job(16, "check"));
}

TEST_CASE("a rank killed mid-job: the others get its name within the timeout, mask it, and go on") {
  TempDir dir;
  RankJob job = normal_job(4, "kill");
  job.extra = {"--timeout-ms", "3000"};
  job.victim = 3;
  run_rank_job(dir, job);
}

}  // namespace
}  // namespace epx::test
