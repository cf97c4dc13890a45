#include "daemon/dataplane/proxy_set.h"

#include <rdma/fi_domain.h>

#include <spdlog/spdlog.h>

#include "daemon/dataplane/rail_call.h"
#include "daemon/dataplane/remote_rail_choice.h"
#include "daemon/fabric/device_memory.h"
#include "daemon/fabric/fault_transport.h"
#include "daemon/fabric/memory_registration.h"

namespace epx::daemon {
namespace {

FaultPlan fault_plan(const v1::FaultInjection& f, uint32_t rail) {
  FaultPlan p;
  p.seed = f.seed() + rail;
  p.eagain_per_mille = f.eagain_per_mille();
  if (f.eagain_burst()) p.eagain_burst = f.eagain_burst();
  p.fail_write_per_mille = f.fail_write_per_mille();
  p.fail_completion_per_mille = f.fail_completion_per_mille();
  p.hold_count = f.hold_count();
  p.hold_us = f.hold_us();
  p.reorder = f.reorder();
  return p;
}

// AUTO bounds a lone job on shm with one rail per domain only: there the
// receiving proxy copies every write queued at it inside one completion read
// (measured in docs/PERFORMANCE.md, session 13). With several shm rails per
// domain the bound made the hop's dispatch slower in every run, for reasons
// not yet known; providers whose NIC moves the bytes (efa, verbs) gain
// nothing from it, and tcp is unmeasured.
bool single_job_bound(const v1::DaemonConfig& config, const Rail& rail) {
  switch (config.single_job_bound()) {
    case v1::SINGLE_JOB_BOUND_ON: return true;
    case v1::SINGLE_JOB_BOUND_OFF: return false;
    default: {
      const std::string& p = rail.provider();
      return p.substr(0, p.find(';')) == "shm" && config.rails_per_domain() <= 1;
    }
  }
}

}  // namespace

ProxySet::ProxySet(const v1::DaemonConfig& config, const std::vector<std::unique_ptr<Rail>>& rails)
    : config_(config), rails_(rails) {}

ProxySet::~ProxySet() {
  // All threads first: a proxy still running may hand a relayed write's
  // answer to another (relayed_write.h).
  for (auto& p : proxies_) p->stop();
  proxies_.clear();
}

Status ProxySet::start(const std::vector<std::vector<int>>& numa_cpus) {
  EPX_ASSIGN_OR_RETURN(signals_, SignalSpace::create());
  av_cache_.resize(rails_.size());
  for (size_t i = 0; i < rails_.size(); ++i) {
    ProxyOptions o;
    o.core = i < static_cast<size_t>(config_.proxy_cores_size()) ? static_cast<int>(config_.proxy_cores(i)) : -1;
    if (i < numa_cpus.size()) o.cpus = numa_cpus[i];
    o.batch = config_.proxy_batch();
    o.spin_us = config_.proxy_spin_us();
    o.idle_sleep_us = config_.proxy_busy_poll() ? 0 : config_.proxy_idle_sleep_us();
    o.max_write_bytes = uint64_t{config_.max_write_mib()} << 20;
    o.quantum_bytes = uint64_t{config_.proxy_quantum_kib()} << 10;
    o.job_inflight_ops = config_.job_inflight_ops();
    o.job_inflight_bytes = uint64_t{config_.job_inflight_kib()} << 10;
    o.bound_single_job = single_job_bound(config_, *rails_[i]);
    if (o.bound_single_job) {
      spdlog::info("rail {}: a job alone here is held to {} writes and {} KiB in flight (single_job_bound)", i,
                   o.job_inflight_ops, o.job_inflight_bytes >> 10);
    }
    o.health.failures = config_.rail_failures();
    o.health.stall = std::chrono::milliseconds(config_.rail_stall_ms());
    o.health.cooldown = std::chrono::milliseconds(config_.rail_cooldown_ms());
    std::unique_ptr<Transport> transport = std::make_unique<RailTransport>(*rails_[i]);
    if (config_.has_fault_injection()) {
      spdlog::warn("rail {}: fault injection on (test-only config): {}", i,
                   config_.fault_injection().ShortDebugString());
      transport = std::make_unique<FaultTransport>(std::move(transport),
                                                   fault_plan(config_.fault_injection(), static_cast<uint32_t>(i)));
    }
    o.stripe_min_bytes = config_.stripe_off() ? 0 : uint64_t{config_.stripe_min_kib()} << 10;
    o.spread_bytes = config_.spread_off() ? 0 : uint64_t{config_.spread_inflight_kib()} << 10;
    proxies_.push_back(std::make_unique<Proxy>(std::move(transport), *signals_, o));
  }
  std::vector<Proxy*> all;
  for (auto& p : proxies_) all.push_back(p.get());
  for (auto& p : proxies_) p->set_node_rails(all);
  for (size_t i = 0; i < proxies_.size(); ++i) {
    EPX_RETURN_IF_ERROR(proxies_[i]->start().with_context("proxy of rail " + std::to_string(i)));
  }
  return Status();
}

size_t ProxySet::least_loaded(const std::vector<uint32_t>& rails) const {
  if (!rails.empty()) {
    size_t best = proxies_.size();
    for (uint32_t i : rails) {
      if (i >= proxies_.size() || !proxies_[i]->health().usable()) continue;
      if (best == proxies_.size() || proxies_[i]->ring_count() < proxies_[best]->ring_count()) best = i;
    }
    if (best != proxies_.size()) return best;
  }
  // Healthy (or retrying) rails first: a group placed on an unhealthy rail
  // would wait for it. With every rail unhealthy, the least loaded of all.
  size_t best = proxies_.size();
  for (size_t i = 0; i < proxies_.size(); ++i) {
    const bool usable = proxies_[i]->health().usable();
    if (best == proxies_.size()) {
      best = i;
      continue;
    }
    const bool best_usable = proxies_[best]->health().usable();
    if (usable != best_usable) {
      if (usable) best = i;
    } else if (proxies_[i]->ring_count() < proxies_[best]->ring_count()) {
      best = i;
    }
  }
  return best == proxies_.size() ? 0 : best;
}

void ProxySet::fill_rail_status(size_t rail, v1::RailStatus* out) const {
  if (rail >= proxies_.size()) return;
  const RailHealthReport h = proxies_[rail]->health().report();
  const ProxyStats st = proxies_[rail]->stats();
  out->set_health(rail_state_name(h.state));
  out->set_health_reason(h.why);
  out->set_health_since_ms(static_cast<uint64_t>(h.since_unix_ms));
  out->set_health_changes(h.changes);
  out->set_failed_ops(h.failed_ops);
  out->set_stalled_ops(h.stalled_ops);
  out->set_posted_bytes(st.posted_bytes);
  out->set_posted_ops(st.fabric_ops);
  out->set_striped_writes(st.striped_writes);
  out->set_spread_writes(st.spread_writes);
  out->set_failover_writes(st.failover_writes);
}

void ProxySet::on_every_rail(std::function<Status(size_t)> task, std::function<void(size_t)> undo, bool run_late,
                             std::function<void(Status)> done) {
  const size_t n = proxies_.size();
  auto call = RailCall::start(n, deadlines_, kRailCallTimeout, "", std::move(done));
  auto shared_task = std::make_shared<std::function<Status(size_t)>>(std::move(task));
  auto shared_undo = std::make_shared<std::function<void(size_t)>>(std::move(undo));
  for (size_t i = 0; i < n; ++i) {
    proxies_[i]->submit([call, i, shared_task, shared_undo, run_late] {
      if (call->finished() && !run_late) return;  // the caller gave up before this rail got to it
      Status s = (*shared_task)(i);
      const bool ok = s.ok();
      const bool in_time = call->answer(i, std::move(s));
      if (!in_time && ok && *shared_undo) (*shared_undo)(i);
    });
  }
}

std::vector<RailEnd> ProxySet::local_ends() const {
  std::vector<RailEnd> out;
  for (const auto& rail : rails_) out.push_back(RailEnd{rail->fabric_name(), true});
  return out;
}

void ProxySet::insert_addresses(const v1::RankTable& table, std::function<void(Result<Addresses>)> done) {
  auto out = std::make_shared<Addresses>();
  out->by_remote.resize(table.world_size());
  out->remote_rails.assign(table.world_size(), std::vector<uint32_t>(rails_.size(), RemoteRailPair::kNone));
  const std::vector<RailEnd> local = local_ends();
  for (uint32_t r = 0; r < table.world_size(); ++r) {
    const auto& entry = table.ranks(static_cast<int>(r));
    std::vector<RailEnd> remote;
    for (const auto& rail : entry.rails()) remote.push_back(RailEnd{rail.fabric(), true});
    const std::vector<RemoteRailPair> pairs = choose_remote_rails(local, remote);
    for (size_t i = 0; i < pairs.size(); ++i) out->remote_rails[r][i] = pairs[i].remote;
    out->by_remote[r].assign(rails_.size(), std::vector<fi_addr_t>(remote.size(), FI_ADDR_UNSPEC));
  }
  auto shared_table = std::make_shared<v1::RankTable>(table);
  on_every_rail(
      [this, out, shared_table](size_t i) -> Status {
        const v1::RankTable& t = *shared_table;
        for (uint32_t r = 0; r < t.world_size(); ++r) {
          const uint32_t remote = out->remote_rails[r][i];
          if (remote == RemoteRailPair::kNone) continue;
          EPX_ASSIGN_OR_RETURN(out->by_remote[r][i][remote],
                               insert_address(i, r, t.ranks(r).rails(static_cast<int>(remote)).address()));
        }
        return Status();
      },
      nullptr, false,
      [out, done = std::move(done)](Status s) {
        if (!s.ok()) return done(s);
        done(std::move(*out));
      });
}

Result<fi_addr_t> ProxySet::insert_address(size_t rail, uint32_t rank, const std::string& address) {
  auto& cache = av_cache_[rail];
  auto hit = cache.find(address);
  if (hit != cache.end()) return hit->second;
  std::string bytes = address;
  const size_t addrlen = rails_[rail]->address().size();
  if (rails_[rail]->info().addr_format == FI_ADDR_STR) {
    // A string address (shm: "fi_shm://PID...") is read up to its NUL, and
    // its length varies with the peer (its pid's digits): any length up to
    // the provider's limit, terminated here if the peer's was not.
    if (bytes.empty() || bytes.size() > kMaxStringAddress) {
      return invalid_argument("rank " + std::to_string(rank) + "'s address for rail " + std::to_string(rail) + " is " +
                              std::to_string(bytes.size()) + " bytes; the " + rails_[rail]->provider() +
                              " provider's string addresses are 1.." + std::to_string(kMaxStringAddress));
    }
    if (bytes.back() != '\0') bytes.push_back('\0');
  } else if (address.size() != addrlen) {
    // fi_av_insert reads the provider's address length from the pointer,
    // whatever the table says: an address from a peer daemon must be
    // exactly that long (a shorter one was read past its end).
    return invalid_argument("rank " + std::to_string(rank) + "'s address for rail " + std::to_string(rail) + " is " +
                            std::to_string(address.size()) + " bytes; the " + rails_[rail]->provider() +
                            " provider's addresses are " + std::to_string(addrlen));
  }
  fi_addr_t fa = FI_ADDR_UNSPEC;
  int n = fi_av_insert(rails_[rail]->av(), bytes.data(), 1, &fa, 0, nullptr);
  if (n != 1) {
    return internal_error("fi_av_insert of rank " + std::to_string(rank) + "'s daemon on rail " +
                          std::to_string(rail) + " inserted " + std::to_string(n));
  }
  cache.emplace(address, fa);
  return fa;
}

void ProxySet::insert_pairs(const v1::RankTable& table, std::vector<RailPairAddress> pairs,
                            std::function<void(Result<std::vector<RailPairAddress>>)> done) {
  auto out = std::make_shared<std::vector<RailPairAddress>>(std::move(pairs));
  auto shared_table = std::make_shared<v1::RankTable>(table);
  on_every_rail(
      [this, out, shared_table](size_t i) -> Status {
        // Each rail touches only its own entries.
        for (auto& p : *out) {
          if (p.local != i) continue;
          if (p.rank >= static_cast<uint32_t>(shared_table->ranks_size()) ||
              p.remote >= static_cast<uint32_t>(shared_table->ranks(p.rank).rails_size())) {
            return invalid_argument("no rail " + std::to_string(p.remote) + " of rank " + std::to_string(p.rank));
          }
          EPX_ASSIGN_OR_RETURN(p.addr,
                               insert_address(i, p.rank, shared_table->ranks(p.rank).rails(p.remote).address()));
        }
        return Status();
      },
      nullptr, false,
      [out, done = std::move(done)](Status s) {
        if (!s.ok()) return done(s);
        done(std::move(*out));
      });
}

void ProxySet::register_region(LocalRegion region, std::function<void(Result<LocalRegion>)> done) {
  auto out = std::make_shared<LocalRegion>(std::move(region));
  out->mrs.resize(proxies_.size());
  out->keys.resize(proxies_.size());
  std::vector<uint64_t> keys(proxies_.size());
  {
    std::lock_guard<std::mutex> lock(key_mu_);
    for (auto& k : keys) k = next_key_++;
  }
  // Each rail's mrs[i] and keys[i] are touched only on rail i's thread.
  on_every_rail(
      [this, out, keys](size_t i) -> Status {
        EPX_ASSIGN_OR_RETURN(MrPtr mr,
                             out->is_device()
                                 ? register_dmabuf(*rails_[i],
                                                   DmabufRange{out->device->dmabuf.get(), out->device->size,
                                                               out->device->device_va, out->device->cuda_device},
                                                   keys[i])
                                 : register_memory(*rails_[i], out->region->data(), out->region->size(), keys[i]));
        out->keys[i].key = fi_mr_key(mr.get());
        out->keys[i].base = (rails_[i]->mr_mode() & FI_MR_VIRT_ADDR) ? reinterpret_cast<uint64_t>(out->address()) : 0;
        out->mrs[i] = std::move(mr);
        return Status();
      },
      [out](size_t i) { out->mrs[i].reset(); }, false,
      [this, out, done = std::move(done)](Status s) {
        if (s.ok()) return done(std::move(*out));
        // Close what was registered; a rail that answers late undoes its own.
        on_every_rail(
            [out](size_t i) {
              out->mrs[i].reset();
              return Status();
            },
            nullptr, true, [](Status) {});
        done(s);
      });
}

void ProxySet::close_registrations(std::vector<LocalRegion> regions, std::function<void()> done) {
  auto shared = std::make_shared<std::vector<LocalRegion>>(std::move(regions));
  on_every_rail(
      [shared](size_t i) {
        for (auto& r : *shared) {
          if (i < r.mrs.size()) r.mrs[i].reset();
        }
        return Status();
      },
      nullptr, true,
      [shared, done = std::move(done)](Status s) {
        if (!s.ok()) spdlog::error("closing registrations: {}", s.to_string());
        if (done) done();
      });
}

void ProxySet::quiesce(std::shared_ptr<const JobViewCell> views, uint32_t rank, std::chrono::milliseconds timeout,
                       std::function<void(Status)> done) {
  // Each proxy answers by `timeout` on its own; the call's deadline, a
  // second later, is the backstop for a proxy that is stalled.
  auto call =
      RailCall::start(proxies_.size(), deadlines_, timeout + std::chrono::seconds(1), "quiesce", std::move(done));
  for (size_t i = 0; i < proxies_.size(); ++i) {
    proxies_[i]->quiesce_async(views, rank, timeout, [call, i](Status s) { call->answer(i, std::move(s)); });
  }
}

std::vector<ProxyStats> ProxySet::stats() const {
  std::vector<ProxyStats> out;
  for (const auto& p : proxies_) out.push_back(p->stats());
  return out;
}

std::vector<Status> ProxySet::answering(std::chrono::milliseconds timeout) const {
  std::vector<Status> out;
  for (size_t i = 0; i < proxies_.size(); ++i) {
    Status s = proxies_[i]->execute([] {}, timeout);
    out.push_back(s.ok() ? s : s.with_context("rail " + std::to_string(i) + " proxy"));
  }
  return out;
}

std::vector<v1::ProxyStatus> ProxySet::status() const {
  std::vector<v1::ProxyStatus> out;
  for (size_t i = 0; i < proxies_.size(); ++i) {
    const ProxyStats st = proxies_[i]->stats();
    v1::ProxyStatus s;
    s.set_rail(static_cast<uint32_t>(i));
    s.set_rings(static_cast<uint32_t>(proxies_[i]->ring_count()));
    s.set_descriptors(st.descriptors);
    s.set_fabric_ops(st.fabric_ops);
    s.set_signals_applied(st.signals_applied);
    s.set_bad_immediates(st.bad_immediates);
    s.set_busy_ns(st.busy_ns);
    s.set_progress_ns(st.progress_ns);
    s.set_lone_job_bound(proxies_[i]->bounds_lone_job());
    s.set_fabric_bytes(st.posted_bytes);
    s.set_rejected(st.rejected_total());
    s.set_fabric_errors(st.rejected[static_cast<size_t>(ring::RingError::kTransport)]);
    s.set_refused(st.refused);
    for (const JobShareStats& j : proxies_[i]->published_job_stats()) {
      v1::ProxyJobStatus* pj = s.add_jobs();
      pj->set_job_id(j.job_id);
      pj->set_descriptors(j.descriptors);
      pj->set_fabric_ops(j.fabric_ops);
      pj->set_fabric_bytes(j.fabric_bytes);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace epx::daemon
