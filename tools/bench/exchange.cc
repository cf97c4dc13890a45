// Exchange at one size: A and B each write `bytes` into the other's buffer
// at the same time, as the two ranks of a job do in one dispatch or combine
// across nodes (each sends its share to the other). A side starts round i
// once the peer's write of round i - 1 has arrived, so a round takes as long
// as both writes moving together; A times each round.
#include <vector>

#include "tools/bench/measure.h"
#include "tools/bench/stats.h"

namespace epx::bench {

Status exchange_rounds(Channel& c, size_t bytes, size_t writes, uint64_t warmup, std::vector<double>* round_ns) {
  if (writes == 0 || writes > bytes) {
    return invalid_argument(std::to_string(bytes) + " bytes cannot go as " + std::to_string(writes) + " writes");
  }
  const std::string size = std::to_string(bytes) + "-byte";
  for (uint64_t i = 0; i < warmup + kExchangeRounds; ++i) {
    const Clock::time_point t0 = Clock::now();
    size_t offset = 0;
    for (size_t w = 0; w < writes; ++w) {
      const size_t len = share_of(bytes, writes, w);
      EPX_RETURN_IF_ERROR(c.write(len, i & kExchangeDataMask, 0, offset));
      offset += len;
    }
    EPX_RETURN_IF_ERROR(c.wait([&] { return c.remote_completions() >= (i + 1) * writes; },
                               [&] { return "the peer's " + size + " writes of round " + std::to_string(i + 1); }));
    EPX_RETURN_IF_ERROR(c.drain());  // this side's write completed too
    if (round_ns != nullptr && i >= warmup) {
      round_ns->push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
    }
  }
  return Status();
}

Result<ExchangePoint> measure_exchange(EndpointPair& pair, const BaselineOptions& options, size_t bytes) {
  PairControl control;
  std::vector<double> round_ns;
  const uint64_t warmup = warmup_ops(options, bytes);
  auto side_a = [&](Channel& a) -> Status { return exchange_rounds(a, bytes, options.writes, warmup, &round_ns); };
  auto side_b = [&](Channel& b) -> Status { return exchange_rounds(b, bytes, options.writes, warmup, nullptr); };
  EPX_RETURN_IF_ERROR(run_pair(pair, control, options.stall_timeout, side_a, side_b, options.pin_threads)
                          .with_context("exchange at " + std::to_string(bytes) + " bytes"));
  return ExchangePoint{bytes, quantile(round_ns, 0.5) / 1e3, quantile(round_ns, 0.99) / 1e3};
}

}  // namespace epx::bench
