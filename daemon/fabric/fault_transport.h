// FaultTransport: a decorator over any Transport that injects what a real
// fabric does on a bad day, so the proxy's error and reordering paths run
// without hardware: bursts of -FI_EAGAIN from writes, writes that fail,
// completions that fail, and completions held back and handed out late, in
// bursts and out of order (as EFA's SRD delivers them).
//
// Used by the proxy's unit tests and, through the daemon's test-only
// `fault_injection` config field, by integration tests with real daemons.
// Proxy thread only, like every Transport.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <random>
#include <string>

#include "daemon/fabric/transport.h"

namespace epx::daemon {

struct FaultPlan {
  uint64_t seed = 1;
  // A write starts a burst of `eagain_burst` -FI_EAGAIN answers with this
  // probability (per mille).
  uint32_t eagain_per_mille = 0;
  uint32_t eagain_burst = 4;
  // A write fails with -FI_EIO (nothing posted) with this probability.
  uint32_t fail_write_per_mille = 0;
  // A successful local completion is reported as an FI_EIO error entry with
  // this probability (the data may well have arrived: as after a lost ack).
  uint32_t fail_completion_per_mille = 0;
  // Completions wait until `hold_count` are held or the oldest waited
  // `hold_us`; then they are handed out together. 0 and 0: no holding.
  uint32_t hold_count = 0;
  uint32_t hold_us = 0;
  // Hand held completions out in random order.
  bool reorder = false;

  bool any() const {
    return eagain_per_mille || fail_write_per_mille || fail_completion_per_mille || hold_count || hold_us || reorder;
  }
};

struct FaultStats {
  std::atomic<uint64_t> eagain{0};
  std::atomic<uint64_t> failed_writes{0};
  std::atomic<uint64_t> failed_completions{0};
  std::atomic<uint64_t> completions{0};     // handed out (data and errors)
  std::atomic<uint64_t> reordered{0};       // handed out at another position than they came
};

class FaultTransport final : public Transport {
 public:
  FaultTransport(std::unique_ptr<Transport> inner, FaultPlan plan);

  Rail& rail() override { return inner_->rail(); }
  ssize_t write(const fi_msg_rma& msg, uint64_t flags) override;
  ssize_t read_completions(fi_cq_data_entry* entries, size_t count) override;
  ssize_t read_error(fi_cq_err_entry* entry) override;
  std::string error_text(const fi_cq_err_entry& entry) override;

  const FaultStats& stats() const { return stats_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Held {
    fi_cq_data_entry entry;
    Clock::time_point since;
    uint64_t order;  // arrival number, to count reordering
  };
  struct Failed {
    fi_cq_err_entry entry;
    std::string text;
  };

  bool roll(uint32_t per_mille);
  // Moves everything the inner CQ has into held_ / failed_.
  void pull();
  bool due(Clock::time_point now) const;

  const std::unique_ptr<Transport> inner_;
  const FaultPlan plan_;
  std::mt19937_64 rng_;
  uint32_t eagain_left_ = 0;
  uint64_t arrivals_ = 0;
  uint64_t next_in_order_ = 0;  // one past the latest arrival handed out
  std::deque<Held> held_;
  std::deque<Failed> failed_;
  std::string last_error_text_;
  FaultStats stats_;
};

}  // namespace epx::daemon
