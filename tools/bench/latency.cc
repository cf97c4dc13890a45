// Ping-pong latency at one size: A writes `bytes` with CQ data into B's
// buffer, B's thread sees the remote completion and writes the same size
// back, A sees B's write arrive. Half of each round trip is one sample.
#include <vector>

#include "tools/bench/measure.h"
#include "tools/bench/stats.h"

namespace epx::bench {
namespace {

// At least this many round trips per size, however short min_time is, so the
// median and p99 mean something; at most this many, to bound memory.
constexpr size_t kMinSamples = 20;
constexpr size_t kMaxSamples = size_t{1} << 21;

// CQ data is at least 4 bytes on every usable provider (rail discovery checks).
constexpr uint64_t kDataMask = 0xffffffffu;

}  // namespace

Result<LatencyPoint> measure_latency(EndpointPair& pair, const BaselineOptions& options, size_t bytes) {
  PairControl control;
  std::vector<double> round_trip_ns;
  const uint64_t warmup = warmup_ops(options, bytes);
  const std::string size = std::to_string(bytes) + "-byte";

  auto side_a = [&](Channel& a) -> Status {
    uint64_t pings = 0;
    // One round trip: ping, then wait for B's write to arrive.
    auto round_trip = [&]() -> Status {
      const uint64_t data = pings & kDataMask;
      EPX_RETURN_IF_ERROR(a.write(bytes, data, options.write_flags));
      ++pings;
      EPX_RETURN_IF_ERROR(a.wait([&] { return a.remote_completions() == pings; },
                                 [&] { return "side B's reply to " + size + " ping " + std::to_string(pings); }));
      // B echoes the ping's CQ data: catches a reply that is not this one.
      if (a.last_remote_data() != data) {
        return internal_error(a.name() + ": reply to ping " + std::to_string(pings) + " carries CQ data " +
                              std::to_string(a.last_remote_data()) + ", expected " + std::to_string(data));
      }
      return Status();
    };
    for (uint64_t i = 0; i < warmup; ++i) EPX_RETURN_IF_ERROR(round_trip());
    const Clock::time_point start = Clock::now();
    for (;;) {
      const Clock::time_point t0 = Clock::now();
      EPX_RETURN_IF_ERROR(round_trip());
      const Clock::time_point t1 = Clock::now();
      round_trip_ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
      if (round_trip_ns.size() >= kMaxSamples) break;
      if (round_trip_ns.size() >= kMinSamples && t1 - start >= options.min_time) break;
    }
    // B has answered every ping, so nothing is in flight towards A.
    control.stop.store(true, std::memory_order_release);
    return a.drain();
  };

  auto side_b = [&](Channel& b) -> Status {
    uint64_t answered = 0;
    for (;;) {
      EPX_RETURN_IF_ERROR(
          b.wait([&] { return b.remote_completions() > answered || control.stop.load(std::memory_order_acquire); },
                 [&] { return "side A's " + size + " ping " + std::to_string(answered + 1); }));
      if (b.remote_completions() == answered) break;  // stopped, nothing pending
      while (answered < b.remote_completions()) {
        ++answered;
        EPX_RETURN_IF_ERROR(b.write(bytes, b.last_remote_data(), options.write_flags));
      }
    }
    return b.drain();
  };

  EPX_RETURN_IF_ERROR(run_pair(pair, control, options.stall_timeout, side_a, side_b, options.pin_threads)
                          .with_context("latency at " + std::to_string(bytes) + " bytes"));
  // One-way = half the round trip; ns -> us.
  return LatencyPoint{bytes, quantile(round_trip_ns, 0.5) / 2e3, quantile(round_trip_ns, 0.99) / 2e3};
}

}  // namespace epx::bench
