#include "daemon/dataplane/data_plane.h"

#include <rdma/fi_domain.h>
#include <unistd.h>

#include <set>

#include <spdlog/spdlog.h>

#include "daemon/fabric/device_memory.h"
#include "proto/fd/fd_protocol.h"
#include "proto/ring/ring_host.h"

namespace epx::daemon {
namespace {

constexpr std::chrono::milliseconds kDrainTimeout(2000);
// dst_rank is 16 bits in the ring ABI.
constexpr uint32_t kMaxWorld = 65536;
// fi_getname() addresses are small (efa: 32 bytes, sockaddr_in6: 28).
constexpr size_t kMaxAddressBytes = 256;

}  // namespace

DataPlane::DataPlane(const v1::DaemonConfig& config, const std::vector<std::unique_ptr<Rail>>& rails,
                     PeerClient& peers, std::string self_address)
    : config_(config),
      rails_(rails),
      peers_(peers),
      self_address_(std::move(self_address)),
      submitted_(std::chrono::milliseconds(fdproto::kSubmitTtlMs)) {}

DataPlane::~DataPlane() {
  // Regions' registrations must close on their proxies; then the proxies stop.
  std::map<std::string, std::shared_ptr<JobPlane>> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs.swap(jobs_);
    rings_.clear();
  }
  for (auto& [id, plane] : jobs) {
    for (uint32_t r = 0; r < plane->world(); ++r) {
      auto released = plane->remove_local_rank(r);
      close_registrations(released.regions);
    }
  }
  proxies_.clear();
}

Status DataPlane::start() {
  av_cache_.resize(rails_.size());
  for (size_t i = 0; i < rails_.size(); ++i) {
    ProxyOptions o;
    o.core = i < static_cast<size_t>(config_.proxy_cores_size()) ? static_cast<int>(config_.proxy_cores(i)) : -1;
    o.batch = config_.proxy_batch();
    o.spin_us = config_.proxy_spin_us();
    o.idle_sleep_us = config_.proxy_busy_poll() ? 0 : config_.proxy_idle_sleep_us();
    o.max_write_bytes = uint64_t{config_.max_write_mib()} << 20;
    auto proxy = std::make_unique<Proxy>(*rails_[i], signals_, o);
    EPX_RETURN_IF_ERROR(proxy->start().with_context("proxy of rail " + std::to_string(i)));
    proxies_.push_back(std::move(proxy));
  }
  return Status();
}

std::shared_ptr<JobPlane> DataPlane::plane(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second;
}

Status DataPlane::attach_rank(uint64_t client_id, const v1::RankTable& table, uint32_t rank) {
  // The table came from a coordinator the client chose: check its shape
  // before anything indexes by it.
  if (table.world_size() == 0 || table.world_size() > kMaxWorld ||
      table.ranks_size() != static_cast<int>(table.world_size()) || rank >= table.world_size()) {
    return invalid_argument("rank table of job " + table.job_id() + " is malformed (" +
                            std::to_string(table.ranks_size()) + " entries for world " +
                            std::to_string(table.world_size()) + ")");
  }
  for (int i = 0; i < table.ranks_size(); ++i) {
    const auto& e = table.ranks(i);
    if (e.rank() != static_cast<uint32_t>(i)) return invalid_argument("rank table entry " + std::to_string(i) + " names rank " + std::to_string(e.rank()));
    for (const auto& rail : e.rails()) {
      if (rail.address().empty() || rail.address().size() > kMaxAddressBytes) {
        return invalid_argument("rank " + std::to_string(i) + " has a fabric address of " +
                                std::to_string(rail.address().size()) + " bytes");
      }
    }
  }
  std::shared_ptr<JobPlane> p = plane(table.job_id());
  if (p && p->table().SerializeAsString() != table.SerializeAsString()) {
    // Same id, different job (another coordinator or membership): two
    // tenants must never share a plane.
    return failed_precondition("job id " + table.job_id() +
                               " is already in use on this node by a different job (other coordinator or ranks)");
  }
  if (!p) {
    // Fabric addresses of every rank's daemon, on every local rail.
    std::vector<std::vector<fi_addr_t>> addrs(table.world_size(), std::vector<fi_addr_t>(rails_.size(), FI_ADDR_UNSPEC));
    for (size_t i = 0; i < proxies_.size(); ++i) {
      Status inserted;
      EPX_RETURN_IF_ERROR(proxies_[i]->execute([&] {
        for (uint32_t r = 0; r < table.world_size(); ++r) {
          const auto& entry = table.ranks(r);
          if (entry.rails_size() == 0) continue;
          const std::string& address = entry.rails(i % entry.rails_size()).address();
          auto& cache = av_cache_[i];
          auto hit = cache.find(address);
          if (hit == cache.end()) {
            fi_addr_t fa = FI_ADDR_UNSPEC;
            int n = fi_av_insert(rails_[i]->av(), address.data(), 1, &fa, 0, nullptr);
            if (n != 1) {
              inserted = internal_error("fi_av_insert of rank " + std::to_string(r) + "'s daemon on rail " +
                                        std::to_string(i) + " inserted " + std::to_string(n));
              return;
            }
            hit = cache.emplace(address, fa).first;
          }
          addrs[r][i] = hit->second;
        }
      }));
      EPX_RETURN_IF_ERROR(inserted);
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = jobs_[table.job_id()];
    if (!slot) slot = std::make_shared<JobPlane>(table, std::move(addrs), static_cast<uint32_t>(rails_.size()));
    p = slot;
  }
  // Under mu_, like detach_rank's "last local rank gone" check, so a plane
  // is never dropped while a rank is being added to it.
  std::lock_guard<std::mutex> lock(mu_);
  auto current = jobs_.find(table.job_id());
  if (current == jobs_.end() || current->second != p) {
    return unavailable("job " + table.job_id() + ": its data plane was released meanwhile; join again");
  }
  if (p->table().SerializeAsString() != table.SerializeAsString()) {
    return failed_precondition("job id " + table.job_id() + " is already in use on this node by a different job");
  }
  p->add_local_rank(rank);
  spdlog::debug("data plane: job {} rank {} attached (client {})", table.job_id(), rank, client_id);
  return Status();
}

void DataPlane::detach_rank(uint64_t client_id, const std::string& job_id, uint32_t rank) {
  std::vector<OwnedRing> mine;
  std::shared_ptr<JobPlane> p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = rings_.begin(); it != rings_.end();) {
      if (it->client_id == client_id && it->job_id == job_id) {
        mine.push_back(*it);
        it = rings_.erase(it);
      } else {
        ++it;
      }
    }
    auto j = jobs_.find(job_id);
    if (j != jobs_.end()) p = j->second;
  }
  for (auto& r : mine) {
    Status s = proxies_[r.proxy]->remove_ring(r.ring, kDrainTimeout);
    if (!s.ok()) spdlog::warn("job {} rank {}: {}", job_id, rank, s.to_string());
    regions_.remove(r.token);
  }
  if (!p) return;
  auto released = p->remove_local_rank(rank);
  for (auto& r : released.regions) regions_.remove(r.token);
  // Signal ids first; closing the registrations then runs a task on every
  // proxy, which is the grace period after which no proxy still holds a
  // pointer to these words; only then are the regions unmapped.
  if (released.signal_count) signals_.release(released.signal_base, released.signal_count);
  close_registrations(released.regions);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto current = jobs_.find(job_id);
    if (current != jobs_.end() && current->second == p && !p->has_local_ranks()) jobs_.erase(current);
  }
  spdlog::info("data plane: job {} rank {} released: {} ring(s), {} region(s)", job_id, rank, mine.size(),
               released.regions.size());
}

Result<LocalRegion> DataPlane::register_host(std::shared_ptr<SharedRegion> region, uint64_t client_id) {
  LocalRegion out;
  out.region = std::move(region);
  out.client_id = client_id;
  return register_region(std::move(out));
}

Result<LocalRegion> DataPlane::register_region(LocalRegion out) {
  out.mrs.resize(proxies_.size());
  out.keys.resize(proxies_.size());
  for (size_t i = 0; i < proxies_.size(); ++i) {
    uint64_t requested;
    {
      std::lock_guard<std::mutex> lock(mu_);
      requested = next_key_++;
    }
    Status reg;
    Status queued = proxies_[i]->execute([&] {
      Result<MrPtr> mr = out.is_device()
                             ? register_dmabuf(*rails_[i],
                                               DmabufRange{out.device->dmabuf.get(), out.device->size,
                                                           out.device->device_va, out.device->cuda_device},
                                               requested)
                             : register_memory(*rails_[i], out.region->data(), out.region->size(), requested);
      if (!mr.ok()) {
        reg = mr.status();
        return;
      }
      out.keys[i].key = fi_mr_key(mr->get());
      out.keys[i].base = (rails_[i]->mr_mode() & FI_MR_VIRT_ADDR) ? reinterpret_cast<uint64_t>(out.address()) : 0;
      out.mrs[i] = std::move(mr.value());
    });
    if (!queued.ok()) reg = queued;
    if (!reg.ok()) {
      std::vector<LocalRegion> undo;
      undo.push_back(std::move(out));
      close_registrations(undo);
      return reg;
    }
  }
  return out;
}

void DataPlane::close_registrations(std::vector<LocalRegion>& regions) {
  for (size_t i = 0; i < proxies_.size(); ++i) {
    Status s = proxies_[i]->execute([&] {
      for (auto& r : regions) {
        if (i < r.mrs.size()) r.mrs[i].reset();
      }
    });
    if (!s.ok()) spdlog::error("closing registrations on rail {}: {}", i, s.to_string());
  }
}

void DataPlane::publish(const std::shared_ptr<JobPlane>& p, uint32_t rank, std::function<void(Status)> done) {
  v1::RankPlane plane = p->describe(rank);
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
  const auto deadline = PeerClient::Clock::now() + std::chrono::milliseconds(config_.rpc_timeout_ms());
  for (const auto& address : daemons) {
    peers_.publish(address, plane, deadline, [st, address](const grpc::Status& s, v1::PublishReply&) {
      std::function<void(Status)> finish;
      Status result;
      {
        std::lock_guard<std::mutex> lock(st->mu);
        if (!s.ok() && st->first_error.ok()) {
          st->first_error = unavailable("publishing to daemon " + address + ": " + s.error_message());
        }
        if (--st->remaining == 0) {
          finish = std::move(st->done);
          result = st->first_error;
        }
      }
      if (finish) finish(result);
    });
  }
}

void DataPlane::create_window(uint64_t client_id, pid_t pid, const std::string& job_id, uint32_t rank,
                              uint64_t bytes, Done done) {
  auto p = plane(job_id);
  if (!p) return done(failed_precondition("job " + job_id + " has no formed rank on this daemon"));
  const uint64_t max_window = uint64_t{config_.max_window_mib()} << 20;
  if (bytes == 0 || bytes > max_window) {
    return done(invalid_argument("window of " + std::to_string(bytes) + " bytes: must be 1.." +
                                 std::to_string(max_window) + " (max_window_mib)"));
  }
  if (auto r = reserve(client_id, bytes); !r.ok()) return done(r);
  auto region = SharedRegion::create("epx-window-" + job_id + "-" + std::to_string(rank), bytes);
  if (!region.ok()) {
    unreserve(client_id, bytes);
    return done(region.status());
  }
  auto reg = register_host(std::shared_ptr<SharedRegion>(std::move(region.value())), client_id);
  if (!reg.ok()) {
    unreserve(client_id, bytes);
    return done(reg.status().with_context("registering window of job " + job_id));
  }
  reg->token = regions_.add(reg->region, pid);
  v1::RegionReply reply;
  reply.set_token(reg->token);
  reply.set_bytes(reg->region->size());
  add_window(p, rank, std::move(reg.value()), reply, std::move(done));
  unreserve(client_id, bytes);  // counted by the plane now, or given up
}

void DataPlane::add_window(const std::shared_ptr<JobPlane>& p, uint32_t rank, LocalRegion window,
                           v1::RegionReply reply, Done done) {
  LocalRegion undo;
  auto id = p->add_window(rank, std::move(window), &undo);
  if (!id.ok()) {
    regions_.remove(undo.token);
    std::vector<LocalRegion> drop;
    drop.push_back(std::move(undo));
    close_registrations(drop);
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
  auto p = plane(job_id);
  if (!p) return done(failed_precondition("job " + job_id + " has no formed rank on this daemon"));
  const uint64_t max_window = uint64_t{config_.max_window_mib()} << 20;
  if (bytes == 0 || bytes > max_window) {
    return done(invalid_argument(what + " of " + std::to_string(bytes) + " bytes: must be 1.." +
                                 std::to_string(max_window) + " (max_window_mib)"));
  }
  if (request.device_va() == 0 || request.device_va() + bytes < request.device_va()) {
    return done(invalid_argument(what + ": device address " + std::to_string(request.device_va()) + " + " +
                                 std::to_string(bytes) + " bytes is not a valid range"));
  }
  if (auto r = reserve(client_id, bytes); !r.ok()) return done(r.with_context(what));
  // From here every return gives the reservation back.
  struct Unreserve {
    DataPlane* plane;
    uint64_t client, bytes;
    ~Unreserve() { plane->unreserve(client, bytes); }
  } unreserve_at_end{this, client_id, bytes};
  if (auto s = device_window_support(); !s.ok()) {
    spdlog::info("client {}: {} refused: {}", client_id, what, s.message());
    return done(s);
  }
  if (!is_dmabuf(fd->get())) {
    return done(invalid_argument(what + ": the submitted descriptor is not a dma-buf (export GPU memory with "
                                        "cuMemGetHandleForAddressRange(CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD))"));
  }
  const off_t dmabuf_size = ::lseek(fd->get(), 0, SEEK_END);
  if (dmabuf_size >= 0 && static_cast<uint64_t>(dmabuf_size) < bytes) {
    return done(invalid_argument(what + ": the dma-buf holds " + std::to_string(dmabuf_size) + " bytes, fewer than " +
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
  auto reg = register_region(std::move(window));
  if (!reg.ok()) return done(reg.status().with_context("registering " + what));
  spdlog::info("client {}: {}: {} bytes of GPU {} ({}) at 0x{:x} registered on {} rail(s)", client_id, what, bytes,
               request.cuda_device(), request.pci_bus_id(), request.device_va(), rails_.size());
  v1::RegionReply reply;
  reply.set_token(0);  // nothing to fetch: the memory is the client's
  reply.set_bytes(bytes);
  add_window(p, rank, std::move(reg.value()), reply, std::move(done));
}

void DataPlane::open_signals(uint64_t client_id, pid_t pid, const std::string& job_id, uint32_t rank,
                             uint32_t count, Done done) {
  auto p = plane(job_id);
  if (!p) return done(failed_precondition("job " + job_id + " has no formed rank on this daemon"));
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
  auto reg = register_host(std::shared_ptr<SharedRegion>(std::move(region.value())), client_id);
  if (!reg.ok()) return done(reg.status().with_context("registering signals of job " + job_id));
  auto base = signals_.allocate(static_cast<uint64_t*>(reg->region->data()), count);
  if (!base.ok()) {
    std::vector<LocalRegion> undo;
    undo.push_back(std::move(reg.value()));
    close_registrations(undo);
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
    signals_.release(*base, count);
    std::vector<LocalRegion> drop;
    drop.push_back(std::move(undo));
    close_registrations(drop);
    return done(s);
  }
  publish(p, rank, [done, reply](Status s) {
    if (!s.ok()) return done(s);
    done(reply);
  });
}

Result<v1::RegionReply> DataPlane::open_ring(uint64_t client_id, pid_t pid, const std::string& job_id,
                                             uint32_t rank, uint32_t capacity, bool device_producers) {
  auto p = plane(job_id);
  if (!p) return failed_precondition("job " + job_id + " has no formed rank on this daemon");
  if (!ring::ring_capacity_valid(capacity) || capacity > config_.max_ring_capacity()) {
    return invalid_argument("ring capacity " + std::to_string(capacity) + ": must be a power of two in 2.." +
                            std::to_string(config_.max_ring_capacity()) + " (max_ring_capacity)");
  }
  size_t proxy = 0;
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    size_t count = 0;
    for (const auto& r : rings_) count += r.client_id == client_id ? 1 : 0;
    if (count >= config_.max_rings_per_client()) {
      return resource_exhausted("client already has " + std::to_string(count) + " rings (max_rings_per_client)");
    }
    for (size_t i = 1; i < proxies_.size(); ++i) {
      if (proxies_[i]->ring_count() < proxies_[proxy]->ring_count()) proxy = i;
    }
    id = next_ring_id_++;
  }
  const uint64_t ring_bytes = ring::ring_bytes(capacity);
  EPX_RETURN_IF_ERROR(reserve(client_id, ring_bytes));
  auto region = SharedRegion::create("epx-ring-" + job_id + "-" + std::to_string(rank), ring_bytes);
  if (!region.ok()) {
    unreserve(client_id, ring_bytes);
    return region.status();
  }
  std::shared_ptr<SharedRegion> shared(std::move(region.value()));
  ring::ring_init(shared->data(), capacity,
                  device_producers ? ring::RingProducerKind::kDevice : ring::RingProducerKind::kHost);
  auto binding = std::make_shared<RingBinding>();
  binding->id = id;
  binding->client_id = client_id;
  binding->rank = rank;
  binding->plane = p;
  binding->region = shared;
  binding->header = ring::ring_header(shared->data());
  binding->slots = ring::ring_slots(binding->header);
  binding->capacity = capacity;
  if (auto added = proxies_[proxy]->add_ring(binding); !added.ok()) {
    unreserve(client_id, ring_bytes);
    return added;
  }
  uint64_t token = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reserved_[client_id] -= ring_bytes;  // counted in rings_ from here on
    if (reserved_[client_id] == 0) reserved_.erase(client_id);
    if (jobs_.count(job_id) == 0 || !p->is_local(rank)) {
      // The rank was released while the ring was being set up.
      (void)proxies_[proxy]->remove_ring(binding, std::chrono::milliseconds(2000));
      return failed_precondition("job " + job_id + " rank " + std::to_string(rank) + " was released meanwhile");
    }
    token = regions_.add(shared, pid);
    rings_.push_back(OwnedRing{client_id, job_id, rank, proxy, binding, token});
  }
  v1::RegionReply reply;
  reply.set_id(static_cast<uint32_t>(id));
  reply.set_token(token);
  reply.set_bytes(shared->size());
  return reply;
}

Status DataPlane::apply_publish(const v1::RankPlane& plane_msg) {
  auto p = plane(plane_msg.job_id());
  if (!p) return Status();  // no local rank of that job (any more): nothing to route
  return p->apply(plane_msg);
}

void DataPlane::rank_lost(const std::string& job_id, uint32_t rank) {
  if (auto p = plane(job_id)) p->mark_lost(rank);
}

Status DataPlane::reserve(uint64_t client_id, uint64_t bytes) {
  const uint64_t windows = window_usage(client_id).bytes;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t rings = 0;
  for (const auto& r : rings_) rings += r.client_id == client_id ? r.ring->region->size() : 0;
  const uint64_t pending = reserved_.count(client_id) ? reserved_[client_id] : 0;
  const uint64_t max_client = uint64_t{config_.max_client_mib()} << 20;
  if (windows + rings + pending + bytes > max_client) {
    return resource_exhausted("client holds " + std::to_string(windows + rings + pending) +
                              " bytes of windows and rings; " + std::to_string(bytes) +
                              " more exceed max_client_mib (" + std::to_string(config_.max_client_mib()) + " MiB)");
  }
  reserved_[client_id] += bytes;
  return Status();
}

void DataPlane::unreserve(uint64_t client_id, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = reserved_.find(client_id);
  if (it == reserved_.end()) return;
  it->second -= std::min(it->second, bytes);
  if (it->second == 0) reserved_.erase(it);
}

std::vector<v1::RingStatus> DataPlane::ring_status(uint64_t client_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::RingStatus> out;
  for (const auto& r : rings_) {
    if (r.client_id != client_id) continue;
    v1::RingStatus s;
    s.set_id(static_cast<uint32_t>(r.ring->id));
    s.set_job_id(r.job_id);
    s.set_rank(r.rank);
    s.set_rail(static_cast<uint32_t>(r.proxy));
    s.set_consumed(r.ring->consumed.load(std::memory_order_relaxed));
    s.set_completed(r.ring->completed.load(std::memory_order_relaxed));
    s.set_rejected(r.ring->rejected.load(std::memory_order_relaxed));
    s.set_fabric_ops(r.ring->fabric_ops.load(std::memory_order_relaxed));
    {
      std::lock_guard<std::mutex> elock(r.ring->error_mu);
      s.set_first_error(r.ring->first_error);
    }
    out.push_back(std::move(s));
  }
  return out;
}

WindowUsage DataPlane::window_usage(uint64_t client_id) const {
  std::vector<std::shared_ptr<JobPlane>> planes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, p] : jobs_) planes.push_back(p);
  }
  WindowUsage total;
  for (const auto& p : planes) total += p->window_usage(client_id);
  return total;
}

std::vector<v1::ProxyStatus> DataPlane::proxy_status() const {
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
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace epx::daemon
