// JobPlane: this daemon's data-plane state of one job: the local ranks'
// windows and signal arrays, what the other daemons published about their
// ranks, and the fabric address of every rank's daemon on every rail.
// Mutations take a lock and publish a fresh JobView; proxies read the view.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/dataplane/local_region.h"
#include "daemon/dataplane/remote_rail_choice.h"
#include "daemon/proxy/job_view.h"
#include "epx/status.h"
#include "epx/v1/peer.pb.h"
#include "epx/v1/rank_table.pb.h"
#include "proto/fd/unique_fd.h"

namespace epx::daemon {

class JobPlane {
 public:
  // `by_remote[rank][local][remote]` is the fi_addr on local rail `local`
  // of rail `remote` of the rank's daemon (FI_ADDR_UNSPEC: not inserted
  // yet), `paired[rank]` the remote rail each local rail writes to first,
  // and `local` this node's rails as pairing sees them.
  JobPlane(const v1::RankTable& table, std::vector<std::vector<std::vector<fi_addr_t>>> by_remote,
           std::vector<std::vector<uint32_t>> paired, std::vector<RailEnd> local);

  const std::string& job_id() const { return job_id_; }
  uint32_t world() const { return world_; }
  const v1::RankTable& table() const { return table_; }
  std::shared_ptr<const JobView> view() const { return views_->load(); }
  // What the proxies serving this job's rings read.
  std::shared_ptr<const JobViewCell> views() const { return views_; }
  // The job's share of each rail relative to other jobs (config job_weights).
  void set_weight(uint32_t weight) { views_->set_weight(weight); }

  void add_local_rank(uint32_t rank);
  // Adds a window to a local rank; returns its id (1, 2, ... per rank). When
  // the rank is not (or no longer) local, fails and hands the window back
  // in *undo for the caller to release.
  Result<uint32_t> add_window(uint32_t rank, LocalRegion window, LocalRegion* undo);
  // Likewise for the rank's signal array (one per rank).
  Status set_signals(uint32_t rank, LocalRegion signals, uint32_t base, uint32_t count, LocalRegion* undo);
  bool is_local(uint32_t rank) const;
  // Removes a local rank; returns its regions so the caller can close their
  // registrations on the proxies and free the signal range.
  struct Released {
    std::vector<LocalRegion> regions;
    uint32_t signal_base = 0, signal_count = 0;
  };
  Released remove_local_rank(uint32_t rank);
  bool has_local_ranks() const;

  // What other daemons need to write to `rank` (a local rank).
  v1::RankPlane describe(uint32_t rank) const;
  // A remote (or local) rank's published windows and signals.
  Status apply(const v1::RankPlane& plane);
  void mark_lost(uint32_t rank);
  // Re-pairing after a peer's ping, in three steps so that address vectors
  // are touched only on proxy threads: the daemon at `daemon` reported
  // which of its rails are usable (by index; missing: usable); kept, and
  // the pairs the new choice needs whose addresses are not inserted yet
  // are returned (the caller inserts them: ProxySet::insert_pairs) ...
  std::vector<RailPairAddress> set_peer_rails(const std::string& daemon, const std::vector<bool>& usable);
  // ... and hands them back here ...
  void add_addresses(const std::vector<RailPairAddress>& addresses);
  // ... then re-pairs our rails with `daemon`'s rails for every rank it
  // holds (remote_rail_choice.h, unusable ones last; only pairs whose
  // address is known) by the latest report, and publishes a new view if a
  // pair changed. Returns what changed, for the log ("rank 3: local rail 1
  // -> peer rail 2 (was 0; ...)"), empty if nothing. Any order of these
  // calls for several reports ends at the latest report's pairs.
  std::vector<std::string> repair(const std::string& daemon);

  // The windows the client holds in this job.
  WindowUsage window_usage(uint64_t client_id) const;

 private:
  struct RankState {
    bool present = true;
    bool local = false;
    std::vector<LocalRegion> windows;  // local: index = id - 1
    LocalRegion signals;
    uint32_t signal_base = 0, signal_count = 0;
    v1::RankPlane published;  // remote: last Publish
  };
  void rebuild_locked();

  const std::string job_id_;
  const uint32_t world_;
  const v1::RankTable table_;
  // The pairs a rank's daemon's rails would get now by its latest report.
  std::vector<RemoteRailPair> ideal_pairs_locked(uint32_t rank) const;

  const std::vector<RailEnd> local_;
  // mu_ held:
  std::vector<std::vector<std::vector<fi_addr_t>>> by_remote_;
  std::vector<std::vector<uint32_t>> paired_;
  std::map<std::string, std::vector<bool>> peer_usable_;  // latest report per daemon
  mutable std::mutex mu_;
  std::vector<RankState> ranks_;
  const std::shared_ptr<JobViewCell> views_;
};

}  // namespace epx::daemon
