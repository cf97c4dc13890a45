// Channel: the single thread that drives one BenchEndpoint during a
// measurement. It posts writes into the peer's buffer, reads the rail's CQ
// (with manual progress, reading the CQ is what moves data), and tells apart
// completions of its own writes from the peer's writes arriving with CQ data.
//
// Every wait gives up with DEADLINE_EXCEEDED after stall_timeout without a
// completion, and with ABORTED as soon as the other side reports failure.
#pragma once

#include <rdma/fabric.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "epx/status.h"
#include "tools/bench/bench_endpoint.h"

namespace epx::bench {

using Clock = std::chrono::steady_clock;

// What the two sides' threads share. Control only: the measured data always
// crosses the fabric.
struct PairControl {
  std::atomic<bool> stop{false};    // A -> B: no more work is coming
  std::atomic<bool> failed{false};  // either side failed; the other gives up
  // B -> A in streaming runs: writes B has seen arrive, and the
  // steady_clock time (ns) of the latest; the time is stored first.
  std::atomic<uint64_t> received{0};
  std::atomic<int64_t> last_received_ns{0};
};

class Channel {
 public:
  // Uses all of `ep`'s operation contexts; one Channel per endpoint at a time.
  Channel(BenchEndpoint& ep, const PairControl& control, std::chrono::milliseconds stall_timeout);

  // Posts a write of `len` bytes from `offset` in this side's buffer to the
  // same offset in the peer's, carrying `data` as remote CQ data when given.
  // `msg_flags` other than 0 goes through fi_writemsg with those flags.
  // Waits (polling) for a free context and while the provider says EAGAIN.
  Status write(size_t len, std::optional<uint64_t> data, uint64_t msg_flags = 0, size_t offset = 0);

  // Reads whatever completions are there, once.
  Status poll();

  // Polls until done() holds. `what` (a callable giving a string) names the
  // awaited event in the error; it is only called on failure.
  template <typename Done, typename Describe>
  Status wait(Done done, Describe what);

  // Waits until every write this channel posted has completed locally.
  Status drain();

  uint64_t remote_completions() const { return remote_; }
  uint64_t last_remote_data() const { return last_data_; }
  uint64_t local_completions() const { return local_; }
  size_t in_flight() const { return slots_ - free_.size(); }
  const std::string& name() const { return ep_.name(); }

 private:
  Status cq_error();
  Status stalled(const std::string& what) const;
  Status peer_failed(const std::string& what) const;

  BenchEndpoint& ep_;
  const PairControl& control_;
  const std::chrono::milliseconds stall_timeout_;
  const size_t slots_;
  std::vector<uint32_t> free_;  // indices of ep_.contexts() not owned by the provider
  uint64_t remote_ = 0, local_ = 0, last_data_ = 0;
  uint64_t events_ = 0;  // completions of any kind: what counts as progress
};

template <typename Done, typename Describe>
Status Channel::wait(Done done, Describe what) {
  Clock::time_point since = Clock::now();
  uint64_t seen = events_;
  for (uint32_t spin = 1; !done(); ++spin) {
    EPX_RETURN_IF_ERROR(poll());
    // Looking at the clock on every empty poll would cost as much as the
    // poll; every 64th is still far finer than any stall timeout.
    if ((spin & 63) != 0) continue;
    if (events_ != seen) {
      seen = events_;
      since = Clock::now();
    } else if (Clock::now() - since > stall_timeout_) {
      return stalled(what());
    }
    if (control_.failed.load(std::memory_order_relaxed)) return peer_failed(what());
  }
  return Status();
}

}  // namespace epx::bench
