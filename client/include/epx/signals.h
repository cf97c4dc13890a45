// Signals: this rank's array of 64-bit counters. Remote writes that carry a
// signal (Ring::post_write_signal, post_signal) add to a word here once
// their data is in place; waiting on a count is how a rank knows data has
// arrived. EFA delivers writes in any order, so completion is counted,
// never inferred from order.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "epx/status.h"

namespace epx {

class MappedRegion;
class ClientSession;

class Signals {
 public:
  Signals(std::shared_ptr<ClientSession> session, std::string job_id, std::shared_ptr<MappedRegion> region,
          uint32_t count);

  uint32_t count() const { return count_; }
  // The words themselves (host mapping), e.g. to register them with CUDA.
  uint64_t* words() const;
  // Current value (acquire: data counted by it is visible).
  uint64_t value(uint32_t index) const;

  // Blocks until word `index` >= `target`. DEADLINE_EXCEEDED after
  // `timeout` ("signal 3 is 1, waited for 2"); UNAVAILABLE as soon as a rank
  // of the job is lost or the daemon goes away, naming it.
  Status wait(uint32_t index, uint64_t target, std::chrono::milliseconds timeout) const;
  // Waits until every word in `indices` >= `target`; on timeout the error
  // names the words (by convention one per peer rank) that are short.
  Status wait_all(const std::vector<uint32_t>& indices, uint64_t target, std::chrono::milliseconds timeout) const;

 private:
  Status check_peers(const std::string& waiting_for) const;

  std::shared_ptr<ClientSession> session_;
  std::string job_id_;
  std::shared_ptr<MappedRegion> region_;
  uint32_t count_;
};

}  // namespace epx
