#include "daemon/dataplane/ring_placement.h"

#include <spdlog/spdlog.h>

#include "proto/ring/ring_host.h"

namespace epx::daemon {
namespace {

// How long a released ring's in-flight writes may take to complete.
constexpr std::chrono::milliseconds kDrainTimeout(2000);

}  // namespace

Result<v1::RegionReply> RingPlacement::open(uint64_t client_id, pid_t pid, const std::shared_ptr<JobPlane>& plane,
                                            uint32_t rank, uint32_t capacity, bool device_producers) {
  const std::string& job_id = plane->job_id();
  if (!ring::ring_capacity_valid(capacity) || capacity > config_.max_ring_capacity()) {
    return invalid_argument("ring capacity " + std::to_string(capacity) + ": must be a power of two in 2.." +
                            std::to_string(config_.max_ring_capacity()) + " (max_ring_capacity)");
  }
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    size_t count = 0;
    for (const auto& r : rings_) count += r.client_id == client_id ? 1 : 0;
    if (count >= config_.max_rings_per_client()) {
      return resource_exhausted("client already has " + std::to_string(count) + " rings (max_rings_per_client)");
    }
    id = next_ring_id_++;
  }
  const size_t proxy = proxies_.least_loaded();
  const uint64_t ring_bytes = ring::ring_bytes(capacity);
  EPX_RETURN_IF_ERROR(quota_.reserve(client_id, ring_bytes));
  QuotaReservation reservation(quota_, client_id, ring_bytes);  // counted in rings_ once recorded
  EPX_ASSIGN_OR_RETURN(auto region,
                       SharedRegion::create("epx-ring-" + job_id + "-" + std::to_string(rank), ring_bytes));
  std::shared_ptr<SharedRegion> shared(std::move(region));
  ring::ring_init(shared->data(), capacity,
                  device_producers ? ring::RingProducerKind::kDevice : ring::RingProducerKind::kHost);
  auto binding = std::make_shared<RingBinding>();
  binding->id = id;
  binding->client_id = client_id;
  binding->rank = rank;
  binding->views = plane->views();
  binding->region = shared;
  binding->header = ring::ring_header(shared->data());
  binding->slots = ring::ring_slots(binding->header);
  binding->capacity = capacity;
  EPX_RETURN_IF_ERROR(proxies_.proxy(proxy).add_ring(binding));
  OwnedRing owned{client_id, job_id, rank, proxy, binding, 0};
  bool recorded = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Checked under mu_: a release that removed the rank before this point
    // collects rings again after removing it (DataPlane::detach_rank), so a
    // ring recorded here is never missed.
    if (plane->is_local(rank)) {
      owned.token = regions_.add(shared, pid);
      rings_.push_back(owned);
      recorded = true;
    }
  }
  if (!recorded) {
    drain(owned);  // outside mu_: draining may take up to kDrainTimeout
    return failed_precondition("job " + job_id + " rank " + std::to_string(rank) + " was released meanwhile");
  }
  v1::RegionReply reply;
  reply.set_id(static_cast<uint32_t>(id));
  reply.set_token(owned.token);
  reply.set_bytes(shared->size());
  return reply;
}

void RingPlacement::drain(const OwnedRing& r) {
  Status s = proxies_.proxy(r.proxy).remove_ring(r.ring, kDrainTimeout);
  if (!s.ok()) spdlog::warn("job {} rank {}: {}", r.job_id, r.rank, s.to_string());
  if (r.token) regions_.remove(r.token);
}

size_t RingPlacement::close(uint64_t client_id, const std::string& job_id) {
  std::vector<OwnedRing> mine;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = rings_.begin(); it != rings_.end();) {
      if (it->client_id == client_id && it->job_id == job_id) {
        mine.push_back(std::move(*it));
        it = rings_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& r : mine) drain(r);
  return mine.size();
}

void RingPlacement::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  rings_.clear();
}

uint64_t RingPlacement::bytes(uint64_t client_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t total = 0;
  for (const auto& r : rings_) total += r.client_id == client_id ? r.ring->region->size() : 0;
  return total;
}

std::vector<v1::RingStatus> RingPlacement::status(uint64_t client_id) const {
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

}  // namespace epx::daemon
