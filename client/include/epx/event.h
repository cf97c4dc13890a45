// Events the daemon sends a client on its session.
#pragma once

#include <cstdint>
#include <string>

namespace epx {

struct Event {
  enum class Kind {
    kRankLost,        // a rank of one of the client's jobs left or died
    kJobAborted,      // the job cannot continue (its coordinator went away)
    kDaemonShutdown,  // the local daemon is stopping; the session ends
    kSessionLost,     // the session ended without a goodbye (daemon crashed)
  };
  Kind kind = Kind::kRankLost;
  std::string job_id;  // kRankLost, kJobAborted
  uint32_t rank = 0;   // kRankLost
  std::string node;    // kRankLost: the node the rank was on
  std::string reason;

  // "rank 3 of job j1 lost (node b): client pid 77 on b disconnected"
  std::string to_string() const;
};

}  // namespace epx
