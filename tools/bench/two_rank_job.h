// TwoRankJob: the job every daemon benchmark runs, rank 0 on daemon A and
// rank 1 on daemon B, each with a send and a receive window, a signal array
// and one ring. Joined at once (the bootstrap needs both ranks) and past a
// first barrier when join_two_rank_job returns.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "epx/client.h"

namespace epx::bench {

struct BenchRank {
  std::unique_ptr<Client> client;
  std::optional<Job> job;
  std::optional<Window> send, recv;
  std::optional<Signals> signals;
  std::unique_ptr<Ring> ring;
};

struct TwoRankJobShape {
  std::string job_id = "bench";
  uint64_t window_bytes = 16ull << 20;
  uint32_t signals = 8;
  uint32_t ring_capacity = 8192;
};

struct TwoRankJob {
  BenchRank ranks[2];
};

// Waits until signal `index` reaches `target`, for as long as it keeps
// rising: fails only after `stall` without progress. A stream queued deep in
// a ring drains at the rail's rate, which a loaded machine can make slow; a
// fixed deadline would call that slowness a failure.
Status wait_while_rising(Signals& signals, uint32_t index, uint64_t target, std::chrono::milliseconds stall);

// Errors name the job and the rank that failed.
Status join_two_rank_job(TwoRankJob& job, const TwoRankJobShape& shape, const std::string& socket_a,
                         const std::string& socket_b, const std::string& coordinator);

}  // namespace epx::bench
