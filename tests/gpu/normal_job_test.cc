// Normal-mode dispatch/combine end to end, inside one node and across
// emulated nodes (a daemon each, shm between them): real daemons,
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

RankJob normal_job(uint32_t world, const std::string& mode, int nodes = 1) {
  RankJob job;
  job.nodes = nodes;
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

TEST_CASE("two nodes EP2, one rank each: every token crosses the daemons, no NVLink fan-out") {
  TempDir dir;
  run_rank_job(dir, normal_job(2, "check", 2));
}

TEST_CASE("two nodes EP4, two ranks each: the network hop and the NVLink fan-out both run") {
  TempDir dir;
  run_rank_job(dir, normal_job(4, "check", 2));
}

TEST_CASE("two nodes EP8, four ranks each") {
  TempDir dir;
  run_rank_job(dir, normal_job(8, "check", 2));
}

TEST_CASE("two nodes EP16, 8 ranks each (routing coverage)") {
  TempDir dir;
  run_rank_job(dir, normal_job(16, "check", 2));
}

TEST_CASE("four nodes EP16, four ranks each (three remote nodes per rank)") {
  TempDir dir;
  run_rank_job(dir, normal_job(16, "check", 4));
}

TEST_CASE("two nodes kill (EP4 as 2 x 2): a rank killed mid-job; every rank names it, masks it and goes on") {
  TempDir dir;
  RankJob job = normal_job(4, "kill", 2);
  job.extra = {"--timeout-ms", "3000"};
  job.victim = 3;
  run_rank_job(dir, job);
}

}  // namespace
}  // namespace epx::test
