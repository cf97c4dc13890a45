// ProxySet: the node's proxies, one per rail, with what only they may touch:
// each rail's transport (wrapped in a FaultTransport when the test-only
// fault_injection config is set), its address vector, and the registrations
// of windows and signal arrays. Also owns the node's signal id space, which
// the proxies apply remote signals to.
#pragma once

#include <rdma/fabric.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/dataplane/deadline_timer.h"
#include "daemon/dataplane/local_region.h"
#include "daemon/dataplane/remote_rail_choice.h"
#include "daemon/proxy/proxy.h"
#include "daemon/proxy/signal_space.h"
#include "epx/status.h"
#include "epx/v1/config.pb.h"
#include "epx/v1/rank_table.pb.h"
#include "epx/v1/status.pb.h"

namespace epx::daemon {

class ProxySet {
 public:
  ProxySet(const v1::DaemonConfig& config, const std::vector<std::unique_ptr<Rail>>& rails);
  ~ProxySet();  // stops the proxies

  // Creates the signal space and starts one proxy per rail; `numa_cpus[i]`
  // (may be shorter) are the CPUs near rail i, where its proxy runs unless
  // config proxy_cores names its core.
  Status start(const std::vector<std::vector<int>>& numa_cpus = {});

  size_t size() const { return proxies_.size(); }
  Proxy& proxy(size_t rail) { return *proxies_[rail]; }
  const Proxy& proxy(size_t rail) const { return *proxies_[rail]; }
  SignalSpace& signals() { return *signals_; }
  DeadlineTimer& deadlines() { return deadlines_; }
  // The usable rail (rail_health.h) whose proxy serves the fewest rings,
  // among `rails` (empty: every rail); with none of them usable, the least
  // loaded usable rail of the node.
  size_t least_loaded(const std::vector<uint32_t>& rails = {}) const;
  // The rail's health and traffic counters, for Status.
  void fill_rail_status(size_t rail, v1::RailStatus* out) const;

  // Everything below hands its work to the proxies and returns at once;
  // `done` runs on a proxy thread (or the deadline thread, when a rail did
  // not answer within kRailCallTimeout) and must not block.
  static constexpr std::chrono::milliseconds kRailCallTimeout{5000};

  // Runs `task(rail)` on every rail's proxy thread, all rails at once;
  // `done` gets the first error, or DEADLINE_EXCEEDED naming the rails that
  // did not answer in time. A task not started by then never runs, unless
  // `run_late` (cleanup that must happen whenever the proxy gets to it); a
  // task that finished after the timeout calls `undo(rail)` on its thread.
  void on_every_rail(std::function<Status(size_t rail)> task, std::function<void(size_t rail)> undo, bool run_late,
                     std::function<void(Status)> done);

  // Per rank, for each local rail: the fi_addr there of each rail of the
  // rank's daemon (FI_ADDR_UNSPEC: not inserted), and the rail it pairs
  // with (remote_rail_choice.h).
  struct Addresses {
    std::vector<std::vector<std::vector<fi_addr_t>>> by_remote;  // [rank][local rail][remote rail]
    std::vector<std::vector<uint32_t>> remote_rails;             // [rank][local rail]
  };
  // Pairs each local rail with one of every rank's daemon's rails (by fabric,
  // then spread), inserts that address into the rail's address vector (once
  // per address) and answers the pairs with their fi_addrs. Only the pairs
  // in use are inserted: a 32-NIC node with many peers would otherwise hold
  // 32 address handles per peer daemon on every NIC.
  void insert_addresses(const v1::RankTable& table, std::function<void(Result<Addresses>)> done);
  // Inserts the addresses of further pairs (a re-pairing), each on its
  // local rail's proxy, and answers them with their fi_addrs.
  void insert_pairs(const v1::RankTable& table, std::vector<RailPairAddress> pairs,
                    std::function<void(Result<std::vector<RailPairAddress>>)> done);
  // The longest string address (FI_ADDR_STR, e.g. shm's) taken from a peer.
  static constexpr size_t kMaxStringAddress = 256;
  // The node's rails as pairing sees them (their fabrics).
  std::vector<RailEnd> local_ends() const;

  // Registers `region`'s memory (host region or device dma-buf) on every
  // rail, each on its proxy thread; fills its mrs and keys. On failure the
  // registrations made are closed.
  void register_region(LocalRegion region, std::function<void(Result<LocalRegion>)> done);
  // Closes the regions' registrations, each on its rail's proxy thread, and
  // then drops the regions. `done` (optional) runs after every rail closed
  // its registrations: the grace period after which no proxy still holds a
  // pointer into these regions.
  void close_registrations(std::vector<LocalRegion> regions, std::function<void()> done = {});

  // Proxy::quiesce_async on every rail (the caller marked `rank` absent in
  // the job's view first); `done` gets the first rail's error, if any, once
  // every rail answered. A rail that does not answer within `timeout` plus
  // a second is an error naming it.
  void quiesce(std::shared_ptr<const JobViewCell> views, uint32_t rank, std::chrono::milliseconds timeout,
               std::function<void(Status)> done);

  // Per rail: the proxy's counters and each job's share as the proxy last
  // published it (Proxy::published_job_stats: never waits for a proxy).
  std::vector<v1::ProxyStatus> status() const;
  // The proxies' counters, by rail.
  std::vector<ProxyStats> stats() const;
  // Per rail: OK when its proxy thread ran an empty task within `timeout`
  // (it is alive and not stuck), else DEADLINE_EXCEEDED naming the rail.
  std::vector<Status> answering(std::chrono::milliseconds timeout) const;

 private:
  const v1::DaemonConfig& config_;
  const std::vector<std::unique_ptr<Rail>>& rails_;
  DeadlineTimer deadlines_;
  std::unique_ptr<SignalSpace> signals_;
  std::vector<std::unique_ptr<Proxy>> proxies_;
  // Per rail: fabric address bytes -> fi_addr (touched only on that proxy).
  std::vector<std::map<std::string, fi_addr_t>> av_cache_;
  // On rail `rail`'s proxy thread: the fi_addr of rank `rank`'s daemon's
  // address there, inserted on first use. A fixed-format address must have
  // the provider's length; a string address any length up to
  // kMaxStringAddress (shm's vary with the pid).
  Result<fi_addr_t> insert_address(size_t rail, uint32_t rank, const std::string& address);
  std::mutex key_mu_;
  uint64_t next_key_ = 1;
};

}  // namespace epx::daemon
