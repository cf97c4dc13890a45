// Baseline figures for EPX's data-plane benchmark: plain libfabric RMA writes
// between two endpoints opened in this process on one provider, with none of
// EPX's layers (rings, proxies, signals). EPX's bench runs these in the same
// process and prints every EPX figure beside its baseline, so a slow figure
// can be told apart from a slow fabric.
//
// Each call opens its own pair of rails (side A on the calling thread, side B
// on a thread of its own, because FI_THREAD_DOMAIN gives every domain one
// owning thread), measures, and closes them. Every wait has a stall timeout:
// a provider that stops completing work gives DEADLINE_EXCEEDED naming what
// was awaited, never a hang.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "epx/status.h"

namespace epx::bench {

struct BaselineOptions {
  std::string provider;              // "tcp" | "shm" | "efa" | "verbs"
  std::vector<std::string> domains;  // e.g. {"lo"} for tcp; empty: the provider's first domain
  // Untimed operations before each size's measurement (connection set-up,
  // page faults, provider caches), at most 16 MiB of data per size.
  int warmup = 100;
  std::chrono::milliseconds min_time{300};  // timed part of each size
  // A wait that sees no completion for this long fails with DEADLINE_EXCEEDED.
  std::chrono::milliseconds stall_timeout{10000};
  // Pin the two sides' threads to two different CPUs during each run (when
  // at least two are allowed); see pair_runner.h.
  bool pin_threads = true;
  // When set, baseline_exchange runs side B of every pair in this program
  // (//tools/bench:fabric_exchange_peer), another process, as EPX's two
  // daemons on one host are two processes; empty: both sides in this one.
  std::string peer_binary;
  // baseline_exchange only: each side moves its bytes of a round as this
  // many writes of about equal size, posted back to back with up to the
  // channel's 16 contexts in flight (1: one write, the provider's best case;
  // EPX's hop uses 1 + 16 per local rank and call).
  size_t writes = 1;
  // baseline_bandwidth and baseline_message_rate only: the writes walk this
  // many bytes of the buffers, each at the next offset (wrapping), as EPX's
  // benchmarks walk their windows; 0: every write at offset 0, the same
  // bytes again and again (cache-hot: the provider's best case).
  size_t stream_span = 0;
  // baseline_latency only: flags every write is posted with (fi_writemsg),
  // e.g. FI_DELIVERY_COMPLETE, which EPX's proxies post every write with;
  // 0: plain fi_writedata.
  uint64_t write_flags = 0;
};

struct LatencyPoint {
  size_t bytes;
  double one_way_us;  // half of the ping-pong round trip, median
  double p99_us;      // half of the round trip, 99th percentile
};

struct ExchangePoint {
  size_t bytes;
  double round_us;  // both sides' writes of `bytes` moving at once, median
  double p99_us;
};

struct BandwidthPoint {
  size_t bytes;
  double gbytes_per_s;  // 1e9 bytes per second
};

struct RatePoint {
  size_t bytes;
  double mops_per_s;  // 1e6 writes per second
};

// Ping-pong: A fi_writedata()s `bytes` into B's buffer; B sees the remote CQ
// data completion and writes the same size back; A's round trip / 2 is the
// one-way latency. Writes of 0 bytes are refused (see provider_probe.h).
Result<std::vector<LatencyPoint>> baseline_latency(const BaselineOptions& options, const std::vector<size_t>& sizes);

// Exchange: A and B each fi_writedata() `bytes` into the other's buffer at
// the same time, and start the next round once the peer's write arrived and
// their own completed: what two ranks sending each other their share of a
// call do. One round's time is both writes moving together.
//
// With `pairs` > 1, `pairs` independent endpoint pairs (2 x pairs threads)
// each exchange an equal share of every size at once, as a daemon with
// that many rails per side stripes its writes (epxd --rails-per-domain): the
// fair reference for EPX on several rails. A round's time is then the
// slowest pair's median. Threads are not pinned in that form (run_pair pins
// every pair to the same two CPUs). With options.peer_binary the B sides run
// in that process (process_exchange.cc).
Result<std::vector<ExchangePoint>> baseline_exchange(const BaselineOptions& options, const std::vector<size_t>& sizes,
                                                     size_t pairs = 1);

// Streaming: A keeps up to `window` fi_writedata()s of each size in flight
// into the same destination buffer for min_time; every write carries CQ data
// so B counts each arrival, as EPX's receivers do. The clock runs from A's
// first timed post to B's completion of A's last write.
Result<std::vector<BandwidthPoint>> baseline_bandwidth(const BaselineOptions& options, const std::vector<size_t>& sizes,
                                                       size_t window);

// The streaming loop with small writes (64 B by default), in writes per second.
Result<RatePoint> baseline_message_rate(const BaselineOptions& options, size_t bytes, size_t window);

// Sizes the CLI and EPX's bench use: powers of two, 8 B .. 1 MiB for latency,
// 4 KiB .. 16 MiB for bandwidth.
std::vector<size_t> default_latency_sizes();
std::vector<size_t> default_bandwidth_sizes();

}  // namespace epx::bench
