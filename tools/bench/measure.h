// Internal: one measurement at one size on an open pair (run with
// pair_runner.h's harness). fabric_baseline.cc loops over sizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

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

// Timed rounds per size of an exchange: both sides must know the count
// (neither can stop the other mid-round without leaving a write in flight).
constexpr uint64_t kExchangeRounds = 20;
constexpr uint64_t kExchangeDataMask = 0xffffffffu;

// One side's part of the exchange on its channel: `warmup` + kExchangeRounds
// rounds of `bytes` each way, as `writes` writes of about equal size posted
// together (consecutive parts of the buffer); the timed rounds' durations go
// to `round_ns` when given (side B passes none). Used in one process
// (measure_exchange) and across two (process_exchange.cc).
Status exchange_rounds(Channel& c, size_t bytes, size_t writes, uint64_t warmup, std::vector<double>* round_ns);

// The exchange with every pair's B side in options.peer_binary, spawned
// for the run (process_exchange.cc); sizes and pairs checked by the caller.
Result<std::vector<ExchangePoint>> exchange_across_processes(const BaselineOptions& options,
                                                             const std::vector<size_t>& sizes, size_t pairs);
// The peer program's part, on its end `fd` of the control socket.
Status serve_exchange_peer(int fd, const BaselineOptions& options, const std::vector<size_t>& sizes, size_t pairs);

// Pair p's share of `bytes` split over `pairs`: equal parts, the first ones
// a byte larger where it does not divide.
inline size_t share_of(size_t bytes, size_t pairs, size_t p) { return bytes / pairs + (p < bytes % pairs ? 1 : 0); }

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
