#include "daemon/control/rank_release.h"

#include <spdlog/spdlog.h>

#include "daemon/control/countdown.h"

namespace epx::daemon {

void RankRelease::release(const std::vector<Membership>& held, const std::string& reason,
                          std::function<void()> done) {
  // Two steps per rank: its data plane, and its leave at the coordinator.
  auto one_done = countdown(2 * held.size(), std::move(done));
  for (const auto& m : held) {
    if (m.formed) {
      data_plane_.detach_rank(m.client_id, m.job_id, m.rank, one_done);
    } else {
      one_done();
    }
    ipc_.forget(m.job_id, m.rank);
    v1::PeerLeaveRequest req;
    req.set_job_id(m.job_id);
    req.set_rank(m.rank);
    req.set_reason(reason);
    spdlog::info("job {}: releasing rank {} at coordinator {}: {}", m.job_id, m.rank, m.coordinator, reason);
    peers_.leave(m.coordinator, req, node_.rpc_deadline(), [m, one_done](const grpc::Status& s, v1::PeerLeaveReply&) {
      if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) {
        spdlog::warn("job {}: coordinator {} did not take rank {}'s leave: {}", m.job_id, m.coordinator, m.rank,
                     s.error_message());
      }
      one_done();
    });
  }
}

}  // namespace epx::daemon
