// IpcExchange: the same-node rendezvous of GPU buffer handles. Every rank of
// a job on this daemon posts its handle; when the last one has, all of them
// get the full set. Pure logic with callbacks, like the Coordinator.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "epx/status.h"
#include "epx/v1/local.pb.h"

namespace epx::daemon {

class IpcExchange {
 public:
  using Clock = std::chrono::steady_clock;
  using Reply = std::function<void(Result<std::vector<v1::PeerHandle>>)>;

  // `expected`: the job's ranks on this node (from its rank table).
  void post(const std::string& job_id, const std::vector<uint32_t>& expected, const v1::PeerHandle& handle,
            Clock::time_point deadline, Reply reply);
  // Fails posts whose deadline passed, naming the local ranks missing.
  void expire(Clock::time_point now);
  // A rank left: its waiting post (if any) is cancelled, and the other
  // ranks of the round, which can no longer complete, get UNAVAILABLE
  // naming it.
  void forget(const std::string& job_id, uint32_t rank);

 private:
  struct Waiter {
    v1::PeerHandle handle;
    Reply reply;
    Clock::time_point deadline;
  };
  struct Round {
    std::vector<uint32_t> expected;
    std::map<uint32_t, Waiter> posted;
  };
  std::mutex mu_;
  std::map<std::string, Round> rounds_;
};

}  // namespace epx::daemon
