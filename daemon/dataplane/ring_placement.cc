#include "daemon/dataplane/ring_placement.h"

#include <atomic>
#include <cstdio>

#include <spdlog/spdlog.h>

#include "proto/ring/ring_host.h"

namespace epx::daemon {
namespace {

// How long a released ring's in-flight writes may take to complete.
constexpr std::chrono::milliseconds kDrainTimeout(2000);

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%x", v);
  return buf;
}

}  // namespace

size_t RingPlacement::rings_of(uint64_t client_id) const {
  size_t count = 0;
  for (const auto& g : groups_) count += g.client_id == client_id ? g.rings.size() : 0;
  return count;
}

void RingPlacement::open(uint64_t client_id, pid_t pid, const std::shared_ptr<JobPlane>& plane, uint32_t rank,
                         std::vector<uint32_t> rails, const v1::OpenRingRequest& request,
                         std::function<void(Result<v1::RegionReply>)> done) {
  const std::string& job_id = plane->job_id();
  const uint32_t capacity = request.capacity();
  const uint32_t channels = request.channels() == 0 ? 1 : request.channels();
  const auto kind = request.device_producers() ? ring::RingProducerKind::kDevice : ring::RingProducerKind::kHost;
  if (request.abi_version() != ring::kRingVersion) {
    return done(failed_precondition("ring ABI version " + std::to_string(request.abi_version()) +
                                    " requested; this daemon speaks version " + std::to_string(ring::kRingVersion) +
                                    " only (SDK and daemon must come from matching releases)"));
  }
  const uint32_t offered = ring::ring_capabilities_for(kind);
  if (const uint32_t missing = request.capabilities() & ~offered; missing != 0) {
    return done(failed_precondition("ring capabilities " + hex(missing) + " are not offered for " +
                                    (request.device_producers() ? "device" : "host") + " rings (this daemon offers " +
                                    hex(offered) + ", ring.h kCap*)"));
  }
  if (!ring::ring_capacity_valid(capacity) || capacity > config_.max_ring_capacity()) {
    return done(invalid_argument("ring capacity " + std::to_string(capacity) + ": must be a power of two in 2.." +
                                 std::to_string(config_.max_ring_capacity()) + " (max_ring_capacity)"));
  }
  if (!ring::group_channels_valid(channels)) {
    return done(invalid_argument("ring group of " + std::to_string(channels) + " channels: must be 1.." +
                                 std::to_string(ring::kMaxGroupChannels)));
  }
  uint64_t first_id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t count = rings_of(client_id);
    if (count + channels > config_.max_rings_per_client()) {
      return done(resource_exhausted("client already has " + std::to_string(count) + " rings; " +
                                     std::to_string(channels) + " more exceed max_rings_per_client (" +
                                     std::to_string(config_.max_rings_per_client()) + ")"));
    }
    first_id = next_ring_id_;
    next_ring_id_ += channels;
  }
  const size_t proxy = proxies_.least_loaded(rails);
  const uint64_t bytes = ring::group_bytes(channels, capacity);
  if (auto s = quota_.reserve(client_id, bytes); !s.ok()) return done(s);
  // Given back once the group is recorded in groups_ (or failed).
  auto reservation = std::make_shared<QuotaReservation>(quota_, client_id, bytes);
  auto region = SharedRegion::create("epx-ring-" + job_id + "-" + std::to_string(rank), bytes);
  if (!region.ok()) {
    reservation->release();
    return done(region.status());
  }
  std::shared_ptr<SharedRegion> shared(std::move(region.value()));
  ring::group_init(shared->data(), channels, capacity, kind);
  auto group = std::make_shared<RingGroupBinding>();
  group->region = shared;
  group->header = ring::group_header(shared->data());
  group->channels = channels;
  OwnedGroup owned{client_id, job_id, rank, proxy, {}, 0};
  for (uint32_t c = 0; c < channels; ++c) {
    auto binding = std::make_shared<RingBinding>();
    binding->id = first_id + c;
    binding->client_id = client_id;
    binding->rank = rank;
    binding->views = plane->views();
    binding->region = shared;
    binding->group = group;
    binding->channel = c;
    binding->early_doorbell = kind == ring::RingProducerKind::kDevice;
    binding->header = ring::ring_header(ring::group_ring(shared->data(), c, capacity));
    binding->slots = ring::ring_slots(binding->header);
    binding->capacity = capacity;
    binding->rails = rails;
    owned.rings.push_back(std::move(binding));
  }
  // The proxy runs its tasks in order: once the last ring is attached, all are.
  for (uint32_t c = 0; c + 1 < channels; ++c) proxies_.proxy(proxy).add_ring_async(owned.rings[c], nullptr);
  auto last = owned.rings.back();
  proxies_.proxy(proxy).add_ring_async(last, [this, owned, plane, pid, reservation, done]() mutable {
    bool recorded = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Checked under mu_: a release that removed the rank before this point
      // collects rings again after removing it (DataPlane::detach_rank), so
      // a group recorded here is never missed.
      if (plane->is_local(owned.rank)) {
        owned.token = regions_.add(owned.rings.front()->region, pid);
        groups_.push_back(owned);
        recorded = true;
      }
    }
    reservation->release();  // counted in groups_ now (or given up), before the answer
    if (!recorded) {
      const std::string why = "job " + owned.job_id + " rank " + std::to_string(owned.rank) + " was released meanwhile";
      return drain(std::move(owned), [done, why] { done(failed_precondition(why)); });
    }
    v1::RegionReply reply;
    reply.set_id(static_cast<uint32_t>(owned.rings.front()->id));
    reply.set_token(owned.token);
    reply.set_bytes(owned.rings.front()->region->size());
    done(std::move(reply));
  });
}

void RingPlacement::drain(OwnedGroup g, std::function<void()> done) {
  // Finishes once: when the proxy released every ring of the group, or (a
  // stalled proxy) a second after the drain's own deadline.
  auto once = std::make_shared<std::atomic<bool>>(false);
  auto finish = [this, job_id = g.job_id, rank = g.rank, token = g.token, done = std::move(done),
                 once](const Status& s) {
    if (once->exchange(true)) return;
    if (!s.ok()) spdlog::warn("job {} rank {}: {}", job_id, rank, s.to_string());
    if (token) regions_.remove(token);
    if (done) done();
  };
  const uint64_t timer = proxies_.deadlines().schedule(
      DeadlineTimer::Clock::now() + kDrainTimeout + std::chrono::seconds(1),
      [finish, rail = g.proxy, id = g.rings.front()->id] {
        finish(deadline_exceeded("the proxy of rail " + std::to_string(rail) + " did not release ring group " +
                                 std::to_string(id) + " (stalled)"));
      });
  auto left = std::make_shared<std::atomic<size_t>>(g.rings.size());
  auto first_error = std::make_shared<std::mutex>();
  auto error = std::make_shared<Status>();
  for (const auto& ring : g.rings) {
    proxies_.proxy(g.proxy).remove_ring_async(ring, kDrainTimeout,
                                              [this, finish, timer, left, first_error, error](Status s) {
                                                {
                                                  std::lock_guard<std::mutex> lock(*first_error);
                                                  if (!s.ok() && error->ok()) *error = s;
                                                }
                                                if (left->fetch_sub(1) != 1) return;
                                                proxies_.deadlines().cancel(timer);
                                                finish(*error);
                                              });
  }
}

void RingPlacement::close(uint64_t client_id, const std::string& job_id, std::function<void(size_t)> done) {
  std::vector<OwnedGroup> mine;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = groups_.begin(); it != groups_.end();) {
      if (it->client_id == client_id && it->job_id == job_id) {
        mine.push_back(std::move(*it));
        it = groups_.erase(it);
      } else {
        ++it;
      }
    }
  }
  size_t count = 0;
  for (const auto& g : mine) count += g.rings.size();
  if (mine.empty()) return done(0);
  auto remaining = std::make_shared<std::atomic<size_t>>(mine.size());
  auto shared_done = std::make_shared<std::function<void(size_t)>>(std::move(done));
  for (auto& g : mine) {
    drain(std::move(g), [remaining, shared_done, count] {
      if (remaining->fetch_sub(1) == 1) (*shared_done)(count);
    });
  }
}

void RingPlacement::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  groups_.clear();
}

uint64_t RingPlacement::bytes(uint64_t client_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t total = 0;
  for (const auto& g : groups_) total += g.client_id == client_id ? g.rings.front()->region->size() : 0;
  return total;
}

std::vector<v1::RingStatus> RingPlacement::status(uint64_t client_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::RingStatus> out;
  for (const auto& g : groups_) {
    if (g.client_id != client_id) continue;
    for (const auto& ring : g.rings) {
      v1::RingStatus s;
      s.set_id(static_cast<uint32_t>(ring->id));
      s.set_job_id(g.job_id);
      s.set_rank(g.rank);
      s.set_rail(static_cast<uint32_t>(g.proxy));
      s.set_consumed(ring->consumed.load(std::memory_order_relaxed));
      s.set_completed(ring->completed.load(std::memory_order_relaxed));
      s.set_rejected(ring->rejected.load(std::memory_order_relaxed));
      s.set_fabric_ops(ring->fabric_ops.load(std::memory_order_relaxed));
      {
        std::lock_guard<std::mutex> elock(ring->error_mu);
        s.set_first_error(ring->first_error);
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

}  // namespace epx::daemon
