// CallMeasurements: what the Local service measures about the calls that
// wait on others, for the metrics endpoint: how long joins took (a
// histogram) and how many waits ended at their deadline. Any thread
// records; the metrics endpoint reads.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace epx::daemon {

// A histogram of durations with fixed bounds, in seconds. Record and read
// without a lock: each bucket is its own counter, so a read taken while a
// record is in progress may see the count one ahead of the sum (harmless
// for a scrape).
class DurationHistogram {
 public:
  // Upper bounds in seconds: a bootstrap takes milliseconds on one host and
  // up to minutes while a large job's ranks arrive.
  static constexpr std::array<double, 12> kBounds{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300};

  void record(std::chrono::steady_clock::duration d) {
    const double seconds = std::chrono::duration<double>(d).count();
    size_t i = 0;
    while (i < kBounds.size() && seconds > kBounds[i]) ++i;
    // Relaxed: independent counters; readers want totals, not an order.
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()),
                      std::memory_order_relaxed);
  }
  // Count of bucket i (kBounds.size(): above the last bound), not cumulative.
  uint64_t count(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  double sum_seconds() const { return static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) * 1e-9; }

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> counts_{};
  std::atomic<uint64_t> sum_ns_{0};
};

struct CallMeasurements {
  DurationHistogram join_seconds;  // successful joins, call to rank table
  // Waits that ended DEADLINE_EXCEEDED (ranks missing at the deadline).
  // Relaxed counters.
  std::atomic<uint64_t> join_timeouts{0};
  std::atomic<uint64_t> barrier_timeouts{0};
  std::atomic<uint64_t> joins_refused_draining{0};
};

}  // namespace epx::daemon
