#include "epx/event.h"

namespace epx {

std::string Event::to_string() const {
  switch (kind) {
    case Kind::kRankLost:
      return "rank " + std::to_string(rank) + " of job " + job_id + " lost (node " + node + "): " + reason;
    case Kind::kJobAborted:
      return "job " + job_id + " aborted: " + reason;
    case Kind::kDaemonShutdown:
      return "daemon shutting down: " + reason;
    case Kind::kSessionLost:
      return "session lost: " + reason;
  }
  return "unknown event";
}

}  // namespace epx
