#include "daemon/dataplane/data_plane.h"

#include <atomic>

#include <unistd.h>

#include <future>
#include <set>

#include <spdlog/spdlog.h>

#include "daemon/config/config.h"
#include "daemon/fabric/device_memory.h"
#include "proto/fd/fd_protocol.h"

namespace epx::daemon {

namespace {

std::vector<bool> usable_of(const std::vector<PeerRail>& rails) {
  std::vector<bool> out;
  for (const auto& r : rails) out.push_back(r.usable);
  return out;
}

}  // namespace

DataPlane::DataPlane(const v1::DaemonConfig& config, const std::vector<std::unique_ptr<Rail>>& rails, PublishFn publish,
                     std::string self_address)
    : config_(config),
      rails_(rails),
      publish_(std::move(publish)),
      self_address_(std::move(self_address)),
      submitted_(std::chrono::milliseconds(fdproto::kSubmitTtlMs)),
      proxies_(config, rails),
      jobs_(proxies_),
      quota_(uint64_t{config.max_client_mib()} << 20,
             [this](uint64_t client) { return jobs_.window_usage(client).bytes + rings_.bytes(client); }),
      rings_(config, proxies_, regions_, quota_),
      weights_(config.job_weights()) {}

DataPlane::~DataPlane() {
  // Registrations must close on their proxies before the proxies stop
  // (proxies_ is destroyed after jobs_): wait for them, bounded.
  rings_.clear();
  std::vector<LocalRegion> regions;
  for (auto& plane : jobs_.take_all()) {
    for (uint32_t r = 0; r < plane->world(); ++r) {
      auto released = plane->remove_local_rank(r);
      for (auto& region : released.regions) regions.push_back(std::move(region));
    }
  }
  auto closed = std::make_shared<std::promise<void>>();
  auto future = closed->get_future();
  proxies_.close_registrations(std::move(regions), [closed] { closed->set_value(); });
  if (future.wait_for(ProxySet::kRailCallTimeout + std::chrono::seconds(1)) != std::future_status::ready) {
    spdlog::error("data plane teardown: registrations not closed within {} ms", ProxySet::kRailCallTimeout.count());
  }
}

Status DataPlane::start() {
  const std::string root = config_.sysfs_root().empty() ? "/sys" : config_.sysfs_root();
  std::vector<PciLocation> locations;
  std::vector<std::vector<int>> cpus;
  for (const auto& rail : rails_) {
    RailDevice d = rail_device(root, rail->domain_name(), rail->nic_pci_address());
    // Watched only where sysfs answers now: a missing state file means no
    // link state, not a link that is down.
    if (read_link_state(d.link_file) == LinkState::kUnknown) d.link_file.clear();
    spdlog::info("rail {}: {}, PCI {}, NUMA node {}", rail->index(),
                 d.sysfs_name.empty() ? "no sysfs entry" : d.sysfs_name,
                 d.location.known() ? d.location.address : "none", d.location.numa_node);
    locations.push_back(d.location);
    cpus.push_back(numa_cpus(root, d.location.numa_node));
    rail_devices_.push_back(std::move(d));
  }
  auto affinity = RailAffinity::create(config_, std::move(locations));
  if (!affinity.ok()) return affinity.status();
  affinity_.emplace(std::move(*affinity));
  {
    std::lock_guard<std::mutex> lock(links_mu_);
    // Assumed up: check_links() below tells the proxies of a link already down.
    links_.assign(rails_.size(), LinkState::kUp);
  }
  EPX_RETURN_IF_ERROR(proxies_.start(cpus));
  check_links();
  return Status();
}

void DataPlane::check_links() {
  for (size_t i = 0; i < rail_devices_.size(); ++i) {
    const RailDevice& d = rail_devices_[i];
    if (d.link_file.empty()) continue;
    const LinkState now = read_link_state(d.link_file);
    LinkState before;
    {
      std::lock_guard<std::mutex> lock(links_mu_);
      before = links_[i];
      links_[i] = now;
    }
    if (now == before) continue;
    // A link file that went away is an interface that went away.
    const bool up = now == LinkState::kUp;
    if (!up) {
      const std::string why = d.sysfs_name + (now == LinkState::kDown ? " reports the link down" : " is gone");
      spdlog::error("rail {}: {}", i, why);
      proxies_.proxy(i).set_link(false, why);
    } else {
      const std::string why = d.sysfs_name + " reports the link up";
      spdlog::warn("rail {}: {}", i, why);
      proxies_.proxy(i).set_link(true, why);
    }
  }
}

void DataPlane::fill_rail_status(size_t rail, v1::RailStatus* out) const {
  proxies_.fill_rail_status(rail, out);
  if (rail >= rail_devices_.size()) return;
  const RailDevice& d = rail_devices_[rail];
  out->set_pci_address(d.location.address);
  out->set_numa_node(d.location.numa_node);
  out->set_sysfs_device(d.sysfs_name);
  if (d.link_file.empty()) {
    out->set_link(link_state_name(LinkState::kUnknown));
    return;
  }
  std::lock_guard<std::mutex> lock(links_mu_);
  out->set_link(link_state_name(links_[rail]));
}

void DataPlane::attach_rank(uint64_t client_id, const v1::RankTable& table, uint32_t rank,
                            std::function<void(Status)> done) {
  jobs_.attach(table, rank, [this, client_id, job = table.job_id(), rank, done = std::move(done)](Status s) {
    if (s.ok()) {
      // Before the client hears of it, so its first ring already has its weight.
      if (auto plane = jobs_.find(job)) {
        weigh(*plane);
        // Peer rails already known to be down are not paired with.
        std::map<std::string, std::vector<PeerRail>> known;
        {
          std::lock_guard<std::mutex> lock(peer_rails_mu_);
          known = peer_rails_;
        }
        for (const auto& [daemon, rails] : known) repair_plane(plane, daemon, usable_of(rails));
      }
      spdlog::debug("data plane: job {} rank {} attached (client {})", job, rank, client_id);
    }
    done(std::move(s));
  });
}

void DataPlane::weigh(JobPlane& plane) const {
  std::lock_guard<std::mutex> lock(weights_mu_);
  plane.set_weight(job_weight(weights_, plane.job_id()));
}

void DataPlane::set_job_weights(const google::protobuf::RepeatedPtrField<v1::JobWeight>& weights) {
  {
    std::lock_guard<std::mutex> lock(weights_mu_);
    weights_ = weights;
  }
  for (const auto& plane : jobs_.all()) {
    weigh(*plane);
    spdlog::info("data plane: job {} weighs {}", plane->job_id(), plane->views()->weight());
  }
}

void DataPlane::detach_rank(uint64_t client_id, const std::string& job_id, uint32_t rank, std::function<void()> done) {
  rings_.close(client_id, job_id, [this, client_id, job_id, rank, done = std::move(done)](size_t rings) mutable {
    std::shared_ptr<JobPlane> p = jobs_.find(job_id);
    if (!p) {
      if (done) done();
      return;
    }
    release_rank_regions(p, client_id, rank, rings, std::move(done));
  });
}

void DataPlane::release_rank_regions(const std::shared_ptr<JobPlane>& p, uint64_t client_id, uint32_t rank,
                                     size_t rings, std::function<void()> done) {
  auto released = std::make_shared<JobPlane::Released>(p->remove_local_rank(rank));
  // A ring opened while the rank was being removed was recorded before the
  // removal (RingPlacement::open checks under its lock): collect it too.
  rings_.close(client_id, p->job_id(), [this, p, rank, rings, released, done = std::move(done)](size_t late) mutable {
    quiesce_leaving(p, rank, [this, p, rank, rings, released, late, done = std::move(done)]() mutable {
      close_rank_regions(p, rank, rings + late, released, std::move(done));
    });
  });
}

void DataPlane::close_rank_regions(const std::shared_ptr<JobPlane>& p, uint32_t rank, size_t rings,
                                   const std::shared_ptr<JobPlane::Released>& released, std::function<void()> done) {
  for (auto& r : released->regions) regions_.remove(r.token);
  // Signal ids first; closing the registrations then runs a task on every
  // proxy, which is the grace period after which no proxy still holds a
  // pointer to these words; only then are the regions unmapped.
  if (released->signal_count) proxies_.signals().release(released->signal_base, released->signal_count);
  const size_t regions = released->regions.size();
  proxies_.close_registrations(std::move(released->regions), [this, p, rank, rings, regions, done] {
    jobs_.release_if_empty(p);
    spdlog::info("data plane: job {} rank {} released: {} ring(s), {} region(s)", p->job_id(), rank, rings, regions);
    if (done) done();
  });
}

Result<std::shared_ptr<JobPlane>> DataPlane::formed(const std::string& job_id) const {
  auto p = jobs_.find(job_id);
  if (!p) return failed_precondition("job " + job_id + " has no formed rank on this daemon");
  return p;
}

Status DataPlane::check_window_bytes(const std::string& what, uint64_t bytes) const {
  const uint64_t max_window = uint64_t{config_.max_window_mib()} << 20;
  if (bytes == 0 || bytes > max_window) {
    return invalid_argument(what + " of " + std::to_string(bytes) + " bytes: must be 1.." + std::to_string(max_window) +
                            " (max_window_mib)");
  }
  return Status();
}

void DataPlane::publish(const std::shared_ptr<JobPlane>& p, uint32_t rank, std::function<void(Status)> done) {
  send_to_peers(p, p->describe(rank), std::move(done));
}

void DataPlane::send_to_peers(const std::shared_ptr<JobPlane>& p, const v1::RankPlane& plane,
                              std::function<void(Status)> done) {
  std::set<std::string> daemons;
  for (const auto& r : p->table().ranks()) {
    if (r.daemon_address() != self_address_) daemons.insert(r.daemon_address());
  }
  if (daemons.empty()) {
    done(Status());
    return;
  }
  struct State {
    std::mutex mu;
    size_t remaining;
    Status first_error;
    std::function<void(Status)> done;
  };
  auto st = std::make_shared<State>();
  st->remaining = daemons.size();
  st->done = std::move(done);
  for (const auto& address : daemons) {
    publish_(address, plane, [st, address](Status s) {
      std::function<void(Status)> finish;
      Status result;
      {
        std::lock_guard<std::mutex> lock(st->mu);
        if (!s.ok() && st->first_error.ok()) st->first_error = s.with_context("publishing to daemon " + address);
        if (--st->remaining == 0) {
          finish = std::move(st->done);
          result = st->first_error;
        }
      }
      if (finish) finish(result);
    });
  }
}

std::chrono::milliseconds DataPlane::quiesce_timeout() const {
  return std::chrono::milliseconds(std::max<uint64_t>(1, uint64_t{config_.rpc_timeout_ms()} * 3 / 4));
}

void DataPlane::quiesce_leaving(const std::shared_ptr<JobPlane>& p, uint32_t rank, std::function<void()> done) {
  // Two waits at once: this daemon's proxies (its other local ranks write
  // to the rank through the fabric too) and every other daemon of the job.
  auto remaining = std::make_shared<std::atomic<int>>(2);
  auto finish = [p, rank, remaining, done = std::move(done)](const char* who, Status s) {
    if (!s.ok()) {
      // A peer that does not answer (gone, or stalled past the deadline)
      // is not waited for forever; say what may still arrive.
      spdlog::warn("job {} rank {}: {} did not confirm that writes to the rank stopped: {}", p->job_id(), rank, who,
                   s.to_string());
    }
    if (remaining->fetch_sub(1, std::memory_order_acq_rel) == 1 && done) done();
  };
  proxies_.quiesce(p->views(), rank, quiesce_timeout(), [finish](Status s) { finish("this daemon's proxies", s); });
  v1::RankPlane leaving;
  leaving.set_job_id(p->job_id());
  leaving.set_rank(rank);
  leaving.set_leaving(true);
  leaving.set_formation(p->table().formation());
  send_to_peers(p, leaving, [finish](Status s) { finish("another daemon", s); });
}

void DataPlane::create_window(uint64_t client_id, pid_t pid, const std::string& job_id, uint32_t rank, uint64_t bytes,
                              Done done) {
  auto p = formed(job_id);
  if (!p.ok()) return done(p.status());
  if (auto s = check_window_bytes("window", bytes); !s.ok()) return done(s);
  if (auto r = quota_.reserve(client_id, bytes); !r.ok()) return done(r);
  // Given back just before the answer: by then the plane counts the window
  // (or it failed), so the client's next call never sees it twice.
  auto reservation = std::make_shared<QuotaReservation>(quota_, client_id, bytes);
  auto region = SharedRegion::create("epx-window-" + job_id + "-" + std::to_string(rank), bytes);
  if (!region.ok()) {
    reservation->release();
    return done(region.status());
  }
  LocalRegion window;
  window.region = std::shared_ptr<SharedRegion>(std::move(region.value()));
  window.client_id = client_id;
  proxies_.register_region(std::move(window), [this, plane = *p, rank, pid, job_id, reservation,
                                               done = std::move(done)](Result<LocalRegion> reg) {
    if (!reg.ok()) {
      reservation->release();
      return done(reg.status().with_context("registering window of job " + job_id));
    }
    reg->token = regions_.add(reg->region, pid);
    v1::RegionReply reply;
    reply.set_token(reg->token);
    reply.set_bytes(reg->region->size());
    // The plane counts the window once add_window recorded it, which is
    // before `done` runs: give the reservation back just before answering.
    add_window(plane, rank, std::move(reg.value()), reply, [reservation, done](Result<v1::RegionReply> r) {
      reservation->release();
      done(std::move(r));
    });
  });
}

void DataPlane::add_window(const std::shared_ptr<JobPlane>& p, uint32_t rank, LocalRegion window, v1::RegionReply reply,
                           Done done) {
  LocalRegion undo;
  auto id = p->add_window(rank, std::move(window), &undo);
  if (!id.ok()) {
    regions_.remove(undo.token);
    std::vector<LocalRegion> drop;
    drop.push_back(std::move(undo));
    proxies_.close_registrations(std::move(drop));
    return done(id.status());
  }
  reply.set_id(*id);
  publish(p, rank, [done, reply](Status s) {
    if (!s.ok()) return done(s);
    done(reply);
  });
}

Status DataPlane::device_window_support() const {
  std::string why;
  for (const auto& rail : rails_) {
    Status s = daemon::device_window_support(*rail);
    if (!s.ok()) why += (why.empty() ? "" : " | ") + s.message();
  }
  if (why.empty()) return Status();
  return failed_precondition("device windows need every rail to register GPU memory: " + why);
}

void DataPlane::create_device_window(uint64_t client_id, pid_t pid, uint32_t rank,
                                     const v1::CreateDeviceWindowRequest& request, Done done) {
  const std::string& job_id = request.job_id();
  const uint64_t bytes = request.bytes();
  const std::string what = "device window of job " + job_id + " rank " + std::to_string(rank);
  if (request.fd_token() == 0) {
    return done(invalid_argument(what + ": no fd token; send the dma-buf descriptor on the fd socket first"));
  }
  // Claimed before anything else can fail, so the descriptor is closed by
  // the end of this call whatever happens below (or kept by the window).
  auto fd = submitted_.take(request.fd_token(), pid, client_id);
  if (!fd.ok()) return done(fd.status().with_context(what));
  auto p = formed(job_id);
  if (!p.ok()) return done(p.status());
  if (auto s = check_window_bytes(what, bytes); !s.ok()) return done(s);
  if (request.device_va() == 0 || request.device_va() + bytes < request.device_va()) {
    return done(invalid_argument(what + ": device address " + std::to_string(request.device_va()) + " + " +
                                 std::to_string(bytes) + " bytes is not a valid range"));
  }
  if (auto r = quota_.reserve(client_id, bytes); !r.ok()) return done(r.with_context(what));
  auto reservation = std::make_shared<QuotaReservation>(quota_, client_id, bytes);
  // Every answer gives the reservation back first (see create_window).
  auto refuse = [&](const Status& s) {
    reservation->release();
    done(s);
  };
  if (auto s = device_window_support(); !s.ok()) {
    spdlog::info("client {}: {} refused: {}", client_id, what, s.message());
    return refuse(s);
  }
  if (!is_dmabuf(fd->get())) {
    return refuse(invalid_argument(what + ": the submitted descriptor is not a dma-buf (export GPU memory with "
                                          "cuMemGetHandleForAddressRange(CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD))"));
  }
  const off_t dmabuf_size = ::lseek(fd->get(), 0, SEEK_END);
  if (dmabuf_size >= 0 && static_cast<uint64_t>(dmabuf_size) < bytes) {
    return refuse(invalid_argument(what + ": the dma-buf holds " + std::to_string(dmabuf_size) + " bytes, fewer than " +
                                   std::to_string(bytes)));
  }
  LocalRegion window;
  window.client_id = client_id;
  window.device = std::make_shared<DeviceRegion>();
  window.device->dmabuf = std::move(fd.value());
  window.device->device_va = request.device_va();
  window.device->size = bytes;
  window.device->cuda_device = request.cuda_device();
  window.device->pci_bus_id = request.pci_bus_id().substr(0, 32);
  proxies_.register_region(std::move(window), [this, plane = *p, rank, client_id, what, request, reservation,
                                               done = std::move(done)](Result<LocalRegion> reg) {
    if (!reg.ok()) {
      reservation->release();
      return done(reg.status().with_context("registering " + what));
    }
    spdlog::info("client {}: {}: {} bytes of GPU {} ({}) at 0x{:x} registered on {} rail(s)", client_id, what,
                 request.bytes(), request.cuda_device(), request.pci_bus_id(), request.device_va(), rails_.size());
    v1::RegionReply reply;
    reply.set_token(0);  // nothing to fetch: the memory is the client's
    reply.set_bytes(request.bytes());
    add_window(plane, rank, std::move(reg.value()), reply, [reservation, done](Result<v1::RegionReply> r) {
      reservation->release();
      done(std::move(r));
    });
  });
}

void DataPlane::open_signals(uint64_t client_id, pid_t pid, const std::string& job_id, uint32_t rank, uint32_t count,
                             Done done) {
  auto formed_plane = formed(job_id);
  if (!formed_plane.ok()) return done(formed_plane.status());
  const std::shared_ptr<JobPlane>& p = *formed_plane;
  if (count == 0 || count > config_.max_signals()) {
    return done(invalid_argument("signal count " + std::to_string(count) + ": must be 1.." +
                                 std::to_string(config_.max_signals()) + " (max_signals)"));
  }
  if (p->view()->ranks[rank].signal_count != 0) {
    return done(already_exists("job " + job_id + " rank " + std::to_string(rank) + " already has signals"));
  }
  // count words, then the scratch word that signal-only writes land on.
  auto region = SharedRegion::create("epx-signals-" + job_id + "-" + std::to_string(rank),
                                     (uint64_t{count} + 1) * sizeof(uint64_t));
  if (!region.ok()) return done(region.status());
  LocalRegion signals;
  signals.region = std::shared_ptr<SharedRegion>(std::move(region.value()));
  signals.client_id = client_id;
  proxies_.register_region(
      std::move(signals), [this, p, rank, pid, count, job_id, done = std::move(done)](Result<LocalRegion> reg) {
        if (!reg.ok()) return done(reg.status().with_context("registering signals of job " + job_id));
        auto base = proxies_.signals().allocate(static_cast<uint64_t*>(reg->region->data()), count);
        if (!base.ok()) {
          std::vector<LocalRegion> drop;
          drop.push_back(std::move(reg.value()));
          proxies_.close_registrations(std::move(drop));
          return done(base.status());
        }
        reg->token = regions_.add(reg->region, pid);
        v1::RegionReply reply;
        reply.set_token(reg->token);
        reply.set_bytes(reg->region->size());
        reply.set_id(*base);
        LocalRegion undo;
        if (auto s = p->set_signals(rank, std::move(reg.value()), *base, count, &undo); !s.ok()) {
          regions_.remove(undo.token);
          proxies_.signals().release(*base, count);
          std::vector<LocalRegion> drop;
          drop.push_back(std::move(undo));
          proxies_.close_registrations(std::move(drop));
          return done(s);
        }
        publish(p, rank, [done, reply](Status s) {
          if (!s.ok()) return done(s);
          done(reply);
        });
      });
}

void DataPlane::open_ring(uint64_t client_id, pid_t pid, uint32_t rank, const std::string& gpu,
                          const v1::OpenRingRequest& request, Done done) {
  auto p = formed(request.job_id());
  if (!p.ok()) return done(p.status());
  std::vector<uint32_t> rails = affinity_ ? affinity_->rails_for(gpu).rails : std::vector<uint32_t>{};
  rings_.open(client_id, pid, *p, rank, std::move(rails), request, std::move(done));
}

void DataPlane::apply_publish(const v1::RankPlane& plane_msg, const std::string& from,
                              std::function<void(Status)> done) {
  auto p = jobs_.find_or_keep(plane_msg, from);
  if (!p) return done(Status());  // kept until a local rank of the job attaches
  if (!plane_msg.leaving()) return done(p->apply(plane_msg));
  if (plane_msg.formation() != p->table().formation()) return done(Status());  // another job of that id left
  if (plane_msg.rank() >= p->world() || p->is_local(plane_msg.rank())) {
    return done(invalid_argument("job " + p->job_id() + ": rank " + std::to_string(plane_msg.rank()) +
                                 " cannot leave through another daemon"));
  }
  p->mark_lost(plane_msg.rank());
  proxies_.quiesce(p->views(), plane_msg.rank(), quiesce_timeout(), std::move(done));
}

void DataPlane::peer_rails(const std::string& daemon, std::vector<PeerRail> rails) {
  std::vector<PeerRail> before;
  {
    std::lock_guard<std::mutex> lock(peer_rails_mu_);
    auto [it, inserted] = peer_rails_.try_emplace(daemon, rails);
    if (!inserted) {
      if (it->second == rails) return;
      before = it->second;
      it->second = rails;
    }
  }
  for (size_t i = 0; i < rails.size(); ++i) {
    const bool was = i < before.size() ? before[i].usable : true;
    if (rails[i].usable == was) continue;
    if (rails[i].usable) {
      spdlog::info("peer daemon {}: its rail {} is usable again", daemon, i);
    } else {
      spdlog::warn("peer daemon {}: its rail {} is not usable: {}", daemon, i, rails[i].why);
    }
  }
  const std::vector<bool> usable = usable_of(rails);
  for (const auto& plane : jobs_.all()) repair_plane(plane, daemon, usable);
}

void DataPlane::repair_plane(const std::shared_ptr<JobPlane>& plane, const std::string& daemon,
                             const std::vector<bool>& usable) {
  auto finish = [plane, daemon] {
    for (const auto& change : plane->repair(daemon)) {
      spdlog::warn("job {}: rails to daemon {} re-paired: {}", plane->job_id(), daemon, change);
    }
  };
  std::vector<RailPairAddress> missing = plane->set_peer_rails(daemon, usable);
  if (missing.empty()) return finish();
  // The new pairs' addresses first, on their rails' proxies.
  proxies_.insert_pairs(plane->table(), std::move(missing),
                        [plane, daemon, finish](Result<std::vector<RailPairAddress>> inserted) {
                          if (!inserted.ok()) {
                            spdlog::error("job {}: rails to daemon {} not re-paired: {}", plane->job_id(), daemon,
                                          inserted.status().to_string());
                            return;
                          }
                          plane->add_addresses(*inserted);
                          finish();
                        });
}

void DataPlane::forget_peer(const std::string& daemon) {
  std::lock_guard<std::mutex> lock(peer_rails_mu_);
  peer_rails_.erase(daemon);
}

std::vector<PeerRail> DataPlane::rails_for_peers() const {
  std::vector<PeerRail> out;
  for (size_t i = 0; i < proxies_.size(); ++i) {
    const RailHealth& h = proxies_.proxy(i).health();
    out.push_back(h.usable() ? PeerRail{} : PeerRail{false, h.report().why});
  }
  return out;
}

void DataPlane::rank_lost(const std::string& job_id, uint32_t rank) {
  if (auto p = jobs_.find(job_id)) p->mark_lost(rank);
}

}  // namespace epx::daemon
