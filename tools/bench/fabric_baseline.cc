// The public entry points: check the arguments, open a pair of endpoints
// sized for the run, and measure each size on it (latency.cc, exchange.cc,
// stream.cc).
#include "tools/bench/fabric_baseline.h"

#include <algorithm>
#include <thread>

#include "tools/bench/measure.h"

namespace epx::bench {
namespace {

constexpr uint64_t kWarmupBytesCap = uint64_t{16} << 20;
// As many pairs as epxd allows rails per domain.
constexpr size_t kMaxExchangePairs = 16;

Status check_options(const BaselineOptions& options) {
  if (options.provider.empty()) return invalid_argument("no provider given (tcp, shm, efa or verbs)");
  if (options.warmup < 0) return invalid_argument("warmup " + std::to_string(options.warmup) + " is negative");
  if (options.min_time.count() < 0) return invalid_argument("min_time is negative");
  if (options.stall_timeout.count() <= 0) return invalid_argument("stall_timeout must be positive");
  return Status();
}

// A write of 0 bytes with CQ data is not portable (provider_probe.h reports
// whether it works), so sizes start at 1.
Status check_sizes(const std::vector<size_t>& sizes) {
  if (sizes.empty()) return invalid_argument("no sizes given");
  for (size_t s : sizes) {
    if (s == 0) return invalid_argument("size 0: writes must carry at least 1 byte");
  }
  return Status();
}

std::vector<size_t> powers_of_two(size_t from, size_t to) {
  std::vector<size_t> sizes;
  for (size_t s = from; s <= to; s *= 2) sizes.push_back(s);
  return sizes;
}

}  // namespace

uint64_t warmup_ops(const BaselineOptions& options, size_t bytes) {
  const uint64_t wanted = static_cast<uint64_t>(std::max(options.warmup, 0));
  const uint64_t cap = std::max<uint64_t>(1, kWarmupBytesCap / std::max<size_t>(bytes, 1));
  return std::min(wanted, cap);
}

Result<std::vector<LatencyPoint>> baseline_latency(const BaselineOptions& options, const std::vector<size_t>& sizes) {
  EPX_RETURN_IF_ERROR(check_options(options));
  EPX_RETURN_IF_ERROR(check_sizes(sizes));
  const size_t largest = *std::max_element(sizes.begin(), sizes.end());
  auto pair = open_pair(options.provider, options.domains, largest, kPingPongContexts);
  if (!pair.ok()) return pair.status().with_context("latency baseline");
  std::vector<LatencyPoint> points;
  for (size_t bytes : sizes) {
    auto point = measure_latency(*pair, options, bytes);
    if (!point.ok()) return point.status();
    points.push_back(*point);
  }
  return points;
}

Result<std::vector<ExchangePoint>> baseline_exchange(const BaselineOptions& options, const std::vector<size_t>& sizes,
                                                     size_t pairs) {
  EPX_RETURN_IF_ERROR(check_options(options));
  EPX_RETURN_IF_ERROR(check_sizes(sizes));
  if (pairs == 0 || pairs > kMaxExchangePairs) {
    return invalid_argument("exchange pairs " + std::to_string(pairs) + " is outside 1.." +
                            std::to_string(kMaxExchangePairs));
  }
  if (options.writes == 0) return invalid_argument("exchange writes per round must be at least 1");
  for (size_t s : sizes) {
    if (s < pairs * options.writes) {
      return invalid_argument("size " + std::to_string(s) + " cannot be split over " + std::to_string(pairs) +
                              " pairs of " + std::to_string(options.writes) + " writes");
    }
  }
  if (!options.peer_binary.empty()) return exchange_across_processes(options, sizes, pairs);
  const size_t largest = *std::max_element(sizes.begin(), sizes.end());
  std::vector<EndpointPair> open;
  for (size_t p = 0; p < pairs; ++p) {
    auto pair = open_pair(options.provider, options.domains, share_of(largest, pairs, 0), kPingPongContexts);
    if (!pair.ok()) return pair.status().with_context("exchange baseline, pair " + std::to_string(p));
    open.push_back(std::move(*pair));
  }
  BaselineOptions each = options;
  if (pairs > 1) each.pin_threads = false;
  std::vector<ExchangePoint> points;
  for (size_t bytes : sizes) {
    std::vector<Result<ExchangePoint>> shares(pairs, Status());
    std::vector<std::thread> threads;
    for (size_t p = 1; p < pairs; ++p) {
      threads.emplace_back([&, p] { shares[p] = measure_exchange(open[p], each, share_of(bytes, pairs, p)); });
    }
    shares[0] = measure_exchange(open[0], each, share_of(bytes, pairs, 0));
    for (std::thread& t : threads) t.join();
    ExchangePoint slowest{bytes, 0, 0};
    for (size_t p = 0; p < pairs; ++p) {
      if (!shares[p].ok()) return shares[p].status().with_context("exchange pair " + std::to_string(p));
      slowest.round_us = std::max(slowest.round_us, shares[p]->round_us);
      slowest.p99_us = std::max(slowest.p99_us, shares[p]->p99_us);
    }
    points.push_back(slowest);
  }
  return points;
}

Result<std::vector<BandwidthPoint>> baseline_bandwidth(const BaselineOptions& options, const std::vector<size_t>& sizes,
                                                       size_t window) {
  EPX_RETURN_IF_ERROR(check_options(options));
  EPX_RETURN_IF_ERROR(check_sizes(sizes));
  if (window == 0) return invalid_argument("window must be at least 1");
  const size_t largest = *std::max_element(sizes.begin(), sizes.end());
  auto pair = open_pair(options.provider, options.domains, std::max(largest, options.stream_span), window);
  if (!pair.ok()) return pair.status().with_context("bandwidth baseline");
  std::vector<BandwidthPoint> points;
  for (size_t bytes : sizes) {
    auto run = measure_stream(*pair, options, bytes, window);
    if (!run.ok()) return run.status();
    points.push_back({bytes, static_cast<double>(run->writes) * static_cast<double>(bytes) / run->seconds / 1e9});
  }
  return points;
}

Result<RatePoint> baseline_message_rate(const BaselineOptions& options, size_t bytes, size_t window) {
  EPX_RETURN_IF_ERROR(check_options(options));
  EPX_RETURN_IF_ERROR(check_sizes({bytes}));
  if (window == 0) return invalid_argument("window must be at least 1");
  auto pair = open_pair(options.provider, options.domains, std::max(bytes, options.stream_span), window);
  if (!pair.ok()) return pair.status().with_context("message rate baseline");
  auto run = measure_stream(*pair, options, bytes, window);
  if (!run.ok()) return run.status();
  return RatePoint{bytes, static_cast<double>(run->writes) / run->seconds / 1e6};
}

std::vector<size_t> default_latency_sizes() { return powers_of_two(8, size_t{1} << 20); }
std::vector<size_t> default_bandwidth_sizes() { return powers_of_two(4096, size_t{16} << 20); }

}  // namespace epx::bench
