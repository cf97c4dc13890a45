#include "daemon/dataplane/ring_placement.h"

#include <atomic>

#include <spdlog/spdlog.h>

#include "proto/ring/ring_host.h"

namespace epx::daemon {
namespace {

// How long a released ring's in-flight writes may take to complete.
constexpr std::chrono::milliseconds kDrainTimeout(2000);

}  // namespace

void RingPlacement::open(uint64_t client_id, pid_t pid, const std::shared_ptr<JobPlane>& plane, uint32_t rank,
                         uint32_t capacity, bool device_producers,
                         std::function<void(Result<v1::RegionReply>)> done) {
  const std::string& job_id = plane->job_id();
  if (!ring::ring_capacity_valid(capacity) || capacity > config_.max_ring_capacity()) {
    return done(invalid_argument("ring capacity " + std::to_string(capacity) + ": must be a power of two in 2.." +
                                 std::to_string(config_.max_ring_capacity()) + " (max_ring_capacity)"));
  }
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    size_t count = 0;
    for (const auto& r : rings_) count += r.client_id == client_id ? 1 : 0;
    if (count >= config_.max_rings_per_client()) {
      return done(
          resource_exhausted("client already has " + std::to_string(count) + " rings (max_rings_per_client)"));
    }
    id = next_ring_id_++;
  }
  const size_t proxy = proxies_.least_loaded();
  const uint64_t ring_bytes = ring::ring_bytes(capacity);
  if (auto s = quota_.reserve(client_id, ring_bytes); !s.ok()) return done(s);
  // Given back once the ring is recorded in rings_ (or failed).
  auto reservation = std::make_shared<QuotaReservation>(quota_, client_id, ring_bytes);
  auto region = SharedRegion::create("epx-ring-" + job_id + "-" + std::to_string(rank), ring_bytes);
  if (!region.ok()) {
    reservation->release();
    return done(region.status());
  }
  std::shared_ptr<SharedRegion> shared(std::move(region.value()));
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
  OwnedRing owned{client_id, job_id, rank, proxy, binding, 0};
  proxies_.proxy(proxy).add_ring_async(binding, [this, owned, plane, pid, reservation, done]() mutable {
    bool recorded = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Checked under mu_: a release that removed the rank before this point
      // collects rings again after removing it (DataPlane::detach_rank), so
      // a ring recorded here is never missed.
      if (plane->is_local(owned.rank)) {
        owned.token = regions_.add(owned.ring->region, pid);
        rings_.push_back(owned);
        recorded = true;
      }
    }
    reservation->release();  // counted in rings_ now (or given up), before the answer
    if (!recorded) {
      const std::string why =
          "job " + owned.job_id + " rank " + std::to_string(owned.rank) + " was released meanwhile";
      return drain(std::move(owned), [done, why] { done(failed_precondition(why)); });
    }
    v1::RegionReply reply;
    reply.set_id(static_cast<uint32_t>(owned.ring->id));
    reply.set_token(owned.token);
    reply.set_bytes(owned.ring->region->size());
    done(std::move(reply));
  });
}

void RingPlacement::drain(OwnedRing r, std::function<void()> done) {
  // Finishes once: when the proxy released the ring, or (a stalled proxy)
  // a second after the drain's own deadline.
  auto once = std::make_shared<std::atomic<bool>>(false);
  auto finish = [this, r, done = std::move(done), once](const Status& s) {
    if (once->exchange(true)) return;
    if (!s.ok()) spdlog::warn("job {} rank {}: {}", r.job_id, r.rank, s.to_string());
    if (r.token) regions_.remove(r.token);
    if (done) done();
  };
  const uint64_t timer = proxies_.deadlines().schedule(
      DeadlineTimer::Clock::now() + kDrainTimeout + std::chrono::seconds(1), [finish, rail = r.proxy, id = r.ring->id] {
        finish(deadline_exceeded("the proxy of rail " + std::to_string(rail) + " did not release ring " +
                                 std::to_string(id) + " (stalled)"));
      });
  proxies_.proxy(r.proxy).remove_ring_async(r.ring, kDrainTimeout, [this, finish, timer](Status s) {
    proxies_.deadlines().cancel(timer);
    finish(s);
  });
}

void RingPlacement::close(uint64_t client_id, const std::string& job_id, std::function<void(size_t)> done) {
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
  const size_t count = mine.size();
  if (count == 0) return done(0);
  auto remaining = std::make_shared<std::atomic<size_t>>(count);
  auto shared_done = std::make_shared<std::function<void(size_t)>>(std::move(done));
  for (auto& r : mine) {
    drain(std::move(r), [remaining, shared_done, count] {
      if (remaining->fetch_sub(1) == 1) (*shared_done)(count);
    });
  }
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
