// Streaming writes at one size: A keeps up to `window` writes in flight, B
// counts them as they arrive. Both bandwidth and message rate are this loop.
//
// Every write is an fi_writedata, not only the last of a window: EPX signals
// its receivers with CQ data, and a provider that does not order writes
// (FI_ORDER_WAW is not asked for) could complete a window's last write before
// the others, so only per-write completions say that all bytes arrived.
#include <algorithm>

#include "tools/bench/measure.h"

namespace epx::bench {
namespace {

constexpr uint64_t kDataMask = 0xffffffffu;  // CQ data is at least 4 bytes

int64_t to_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

Result<StreamResult> measure_stream(EndpointPair& pair, const BaselineOptions& options, size_t bytes, size_t window) {
  PairControl control;
  StreamResult result;
  const uint64_t warmup = warmup_ops(options, bytes);
  const std::string size = std::to_string(bytes) + "-byte";

  auto side_a = [&](Channel& a) -> Status {
    if (a.in_flight() != 0 || pair.a->context_count() != window) {
      return internal_error(a.name() + ": stream needs " + std::to_string(window) + " free contexts");
    }
    uint64_t posted = 0;
    const uint64_t slots = std::max<uint64_t>(1, options.stream_span / bytes);
    // The window is the channel's context count: write() waits for a free
    // one, i.e. for the oldest outstanding writes to complete.
    auto post = [&]() -> Status {
      EPX_RETURN_IF_ERROR(a.write(bytes, posted & kDataMask, 0, (posted % slots) * bytes));
      ++posted;
      return Status();
    };
    auto until_arrived = [&](uint64_t n) {
      return a.wait([&] { return control.received.load(std::memory_order_acquire) >= n; },
                    [&] { return "side B to see " + size + " write " + std::to_string(n) + " arrive"; });
    };
    for (uint64_t i = 0; i < warmup; ++i) EPX_RETURN_IF_ERROR(post());
    // The pipe is empty when the clock starts: no warm-up write is counted.
    EPX_RETURN_IF_ERROR(until_arrived(warmup));
    const Clock::time_point start = Clock::now();
    do {
      EPX_RETURN_IF_ERROR(post());
    } while (Clock::now() - start < options.min_time);
    EPX_RETURN_IF_ERROR(until_arrived(posted));
    const uint64_t received = control.received.load(std::memory_order_acquire);
    const int64_t last_ns = control.last_received_ns.load(std::memory_order_relaxed);
    if (received != posted) {
      return internal_error(a.name() + ": side B saw " + std::to_string(received) + " writes arrive, " +
                            std::to_string(posted) + " were posted");
    }
    result.writes = posted - warmup;
    result.seconds = static_cast<double>(last_ns - to_ns(start)) / 1e9;
    EPX_RETURN_IF_ERROR(a.drain());
    control.stop.store(true, std::memory_order_release);
    return Status();
  };

  auto side_b = [&](Channel& b) -> Status {
    uint64_t seen = 0;
    for (;;) {
      EPX_RETURN_IF_ERROR(
          b.wait([&] { return b.remote_completions() != seen || control.stop.load(std::memory_order_acquire); },
                 [&] { return "side A's " + size + " write " + std::to_string(seen + 1); }));
      if (b.remote_completions() == seen) return Status();  // stopped: A saw every write arrive
      seen = b.remote_completions();
      // Time first, count second: A reads the count with acquire, so the
      // time it then reads is at least this batch's.
      control.last_received_ns.store(to_ns(Clock::now()), std::memory_order_relaxed);
      control.received.store(seen, std::memory_order_release);
    }
  };

  EPX_RETURN_IF_ERROR(run_pair(pair, control, options.stall_timeout, side_a, side_b, options.pin_threads)
                          .with_context("streaming " + size + " writes, window " + std::to_string(window)));
  if (result.writes == 0 || !(result.seconds > 0)) {
    return internal_error("streaming " + size + " writes: nothing timed (" + std::to_string(result.writes) +
                          " writes in " + std::to_string(result.seconds) + " s)");
  }
  return result;
}

}  // namespace epx::bench
