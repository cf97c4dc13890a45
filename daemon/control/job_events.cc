#include "daemon/control/job_events.h"

#include <spdlog/spdlog.h>

#include "daemon/control/countdown.h"

namespace epx::daemon {

void JobEvents::deliver(const v1::JobEvent& event) {
  v1::ClientEvent out;
  int64_t skip = -1;
  if (event.has_rank_left()) {
    auto* lost = out.mutable_rank_lost();
    lost->set_job_id(event.job_id());
    lost->set_rank(event.rank_left().rank());
    lost->set_node(event.rank_left().node());
    lost->set_reason(event.rank_left().reason());
    skip = event.rank_left().rank();
    data_plane_.rank_lost(event.job_id(), event.rank_left().rank());
    spdlog::info("job {}: rank {} on {} left: {}", event.job_id(), lost->rank(), lost->node(), lost->reason());
  } else if (event.has_coordinator_gone()) {
    auto* aborted = out.mutable_job_aborted();
    aborted->set_job_id(event.job_id());
    aborted->set_reason("coordinator gone: " + event.coordinator_gone().reason());
    spdlog::warn("job {}: {}", event.job_id(), aborted->reason());
  } else {
    return;
  }
  clients_.deliver(event.job_id(), skip, out);
}

void JobEvents::send(const std::vector<Coordinator::Notice>& notices, std::function<void()> done) {
  auto one_done = countdown(notices.size(), std::move(done));
  for (const auto& n : notices) {
    if (n.daemon_address == node_.advertise_address) {
      deliver(n.event);
      one_done();
      continue;
    }
    peers_.notify(n.daemon_address, n.event, node_.rpc_deadline(),
                  [address = n.daemon_address, job = n.event.job_id(), one_done](const grpc::Status& s,
                                                                                 v1::NotifyReply&) {
                    if (!s.ok()) {
                      spdlog::warn("job {}: could not notify daemon {}: {}", job, address, s.error_message());
                    }
                    one_done();
                  });
  }
}

}  // namespace epx::daemon
