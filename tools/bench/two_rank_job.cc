#include "tools/bench/two_rank_job.h"

#include <chrono>
#include <future>

namespace epx::bench {
namespace {

Status join_rank(BenchRank& r, const TwoRankJobShape& shape, const std::string& socket, uint32_t rank,
                 const std::string& coordinator) {
  ClientOptions co;
  co.name = shape.job_id + "-" + std::to_string(rank);
  auto c = Client::connect(socket, co);
  if (!c.ok()) return c.status();
  r.client = std::move(c.value());
  JoinOptions o;
  o.job_id = shape.job_id;
  o.world_size = 2;
  o.rank = rank;
  o.coordinator = coordinator;
  auto j = r.client->join(o);
  if (!j.ok()) return j.status();
  r.job.emplace(std::move(j.value()));
  auto s = r.job->create_window(shape.window_bytes);
  if (!s.ok()) return s.status();
  r.send.emplace(std::move(s.value()));
  auto v = r.job->create_window(shape.window_bytes);
  if (!v.ok()) return v.status();
  r.recv.emplace(std::move(v.value()));
  auto sig = r.job->open_signals(shape.signals);
  if (!sig.ok()) return sig.status();
  r.signals.emplace(std::move(sig.value()));
  auto ring = r.job->open_ring(shape.ring_capacity);
  if (!ring.ok()) return ring.status();
  r.ring = std::move(ring.value());
  return r.job->barrier(std::chrono::seconds(30));
}

}  // namespace

Status wait_while_rising(Signals& signals, uint32_t index, uint64_t target, std::chrono::milliseconds stall) {
  uint64_t seen = signals.value(index);
  for (;;) {
    Status s = signals.wait(index, target, stall);
    if (s.code() != StatusCode::kDeadlineExceeded) return s;
    const uint64_t now = signals.value(index);
    if (now == seen) {
      return s.with_context("no progress for " + std::to_string(stall.count()) + " ms at " + std::to_string(now));
    }
    seen = now;
  }
}

Status join_two_rank_job(TwoRankJob& job, const TwoRankJobShape& shape, const std::string& socket_a,
                         const std::string& socket_b, const std::string& coordinator) {
  auto second =
      std::async(std::launch::async, [&] { return join_rank(job.ranks[1], shape, socket_b, 1, coordinator); });
  Status first = join_rank(job.ranks[0], shape, socket_a, 0, coordinator);
  Status other = second.get();
  if (!first.ok()) return first.with_context("job " + shape.job_id + " rank 0");
  return other.with_context("job " + shape.job_id + " rank 1");
}

}  // namespace epx::bench
