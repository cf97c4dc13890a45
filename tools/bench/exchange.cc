// Exchange at one size: A and B each write `bytes` into the other's buffer
// at the same time, as the two ranks of a job do in one dispatch or combine
// across nodes (each sends its share to the other). A side starts round i
// once the peer's write of round i - 1 has arrived, so a round takes as long
// as both writes moving together; A times each round.
#include <vector>

#include "tools/bench/measure.h"
#include "tools/bench/stats.h"

namespace epx::bench {
namespace {

// Timed rounds per size: both sides must know the count (neither can stop
// the other mid-round without leaving a write in flight).
constexpr uint64_t kRounds = 20;
constexpr uint64_t kDataMask = 0xffffffffu;

}  // namespace

Result<ExchangePoint> measure_exchange(EndpointPair& pair, const BaselineOptions& options, size_t bytes) {
  PairControl control;
  std::vector<double> round_ns;
  const uint64_t warmup = warmup_ops(options, bytes), rounds = warmup + kRounds;
  const std::string size = std::to_string(bytes) + "-byte";

  auto exchange = [&](Channel& c, bool timed) -> Status {
    for (uint64_t i = 0; i < rounds; ++i) {
      const Clock::time_point t0 = Clock::now();
      EPX_RETURN_IF_ERROR(c.write(bytes, i & kDataMask));
      EPX_RETURN_IF_ERROR(c.wait([&] { return c.remote_completions() > i; },
                                 [&] { return "the peer's " + size + " write of round " + std::to_string(i + 1); }));
      EPX_RETURN_IF_ERROR(c.drain());  // this side's write completed too
      if (timed && i >= warmup) {
        round_ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
      }
    }
    return Status();
  };
  auto side_a = [&](Channel& a) -> Status { return exchange(a, true); };
  auto side_b = [&](Channel& b) -> Status { return exchange(b, false); };
  EPX_RETURN_IF_ERROR(run_pair(pair, control, options.stall_timeout, side_a, side_b, options.pin_threads)
                          .with_context("exchange at " + std::to_string(bytes) + " bytes"));
  return ExchangePoint{bytes, quantile(round_ns, 0.5) / 1e3, quantile(round_ns, 0.99) / 1e3};
}

}  // namespace epx::bench
