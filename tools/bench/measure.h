// Internal: one measurement at one size on an open pair (run with
// pair_runner.h's harness). fabric_baseline.cc loops over sizes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "epx/status.h"
#include "tools/bench/bench_endpoint.h"
#include "tools/bench/channel.h"
#include "tools/bench/fabric_baseline.h"
#include "tools/bench/pair_runner.h"

namespace epx::bench {

// Untimed operations before a size's measurement: options.warmup, but at
// most 16 MiB of data so large sizes do not spend seconds warming up.
uint64_t warmup_ops(const BaselineOptions& options, size_t bytes);

// Ping-pong at one size (latency.cc).
Result<LatencyPoint> measure_latency(EndpointPair& pair, const BaselineOptions& options, size_t bytes);

// Both sides writing at one size at once, round after round (exchange.cc).
Result<ExchangePoint> measure_exchange(EndpointPair& pair, const BaselineOptions& options, size_t bytes);

// Streaming writes at one size with `window` in flight (stream.cc).
struct StreamResult {
  uint64_t writes = 0;  // timed writes, all seen by B
  double seconds = 0;   // A's first timed post to B's last arrival
};
Result<StreamResult> measure_stream(EndpointPair& pair, const BaselineOptions& options, size_t bytes, size_t window);

// The most contexts a ping-pong side uses: its own writes whose local
// completion has not been read yet.
constexpr size_t kPingPongContexts = 16;

}  // namespace epx::bench
