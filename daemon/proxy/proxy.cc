#include "daemon/proxy/proxy.h"

#include <pthread.h>
#include <rdma/fi_domain.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <limits>

#include <spdlog/spdlog.h>

#include "daemon/fabric/memory_registration.h"
#include "daemon/proxy/counters.h"
#include "proto/ring/ring_host.h"

namespace epx::daemon {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxContexts = 4096;
// The most elements one fabric write carries (iovecs live on the stack).
constexpr size_t kMaxIov = 64;

uint32_t iov_limit_of(const Rail& rail) {
  const fi_tx_attr* tx = rail.info().tx_attr;
  size_t limit = kMaxIov;
  if (tx != nullptr) {
    if (tx->iov_limit) limit = std::min(limit, tx->iov_limit);
    if (tx->rma_iov_limit) limit = std::min(limit, tx->rma_iov_limit);
  }
  return static_cast<uint32_t>(std::max<size_t>(limit, 1));
}

}  // namespace

Proxy::Proxy(std::unique_ptr<Transport> transport, const SignalSpace& signals, ProxyOptions options)
    : transport_(std::move(transport)),
      rail_(transport_->rail()),
      signals_(signals),
      options_(options),
      virt_addr_((rail_.mr_mode() & FI_MR_VIRT_ADDR) != 0),
      write_limit_(std::min<uint64_t>(options.max_write_bytes, rail_.max_msg_size())),
      op_cost_(static_cast<int64_t>(std::max<uint64_t>(options.op_cost_bytes, 1))),
      iov_limit_(iov_limit_of(rail_)),
      health_(rail_.index(), options.health),
      stripe_min_bytes_(options.stripe_min_bytes),
      stripe_min_piece_(std::max<uint64_t>(options.stripe_min_piece, 1)),
      spread_bytes_(options.spread_bytes),
      tasks_("proxy of rail " + std::to_string(rail_.index())) {}

Proxy::~Proxy() { stop(); }

void Proxy::stop() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

Status Proxy::start() {
  const size_t tx = rail_.info().tx_attr->size ? rail_.info().tx_attr->size : 256;
  contexts_.resize(std::min(tx, kMaxContexts));
  for (auto& c : contexts_) free_contexts_.push_back(&c);
  inflight_ops_cap_ = std::max<size_t>(contexts_.size() / 2, 1);
  auto mr = register_memory(rail_, &scratch_, sizeof(scratch_), 0xE0000000ull + rail_.index());
  if (!mr.ok()) return mr.status().with_context("proxy scratch word");
  scratch_mr_ = std::move(mr.value());
  scratch_desc_ = fi_mr_desc(scratch_mr_.get());
  thread_ = std::thread([this] { run(); });
  return Status();
}

void Proxy::attach(std::shared_ptr<RingBinding> ring) {
  const JobViewCell* cell = ring->views.get();
  auto it = std::find_if(jobs_.begin(), jobs_.end(), [&](const auto& j) { return j->cell == cell; });
  if (it == jobs_.end()) {
    auto job = std::make_unique<JobShare>();
    job->cell = cell;
    if (auto view = cell->load()) job->stats.job_id = view->job_id;
    reweigh(*job);
    jobs_.push_back(std::move(job));
    it = std::prev(jobs_.end());
  }
  JobShare& job = **it;
  job.rings.push_back(ring.get());
  ring->share = &job;
  if (RingGroupBinding* group = ring->group.get()) {
    if (group->rings.size() < group->channels) group->rings.resize(group->channels, nullptr);
    if (ring->channel < group->channels) group->rings[ring->channel] = ring.get();
    if (std::find(job.groups.begin(), job.groups.end(), group) == job.groups.end()) job.groups.push_back(group);
  }
  // A ring without a doorbell is visited every pass; one in a group waits
  // for its doorbell (a producer that filled it before it was attached rang
  // it too), so an idle channel ring is never visited.
  if (!ring->group) activate(*ring);
  rings_.push_back(std::move(ring));
  ring_count_.store(rings_.size(), std::memory_order_relaxed);
}

void Proxy::activate(RingBinding& ring) {
  if (ring.active || ring.share == nullptr || ring.closing) return;
  ring.active = true;
  // Not drained until a visit says so: a ring activated but not reached in
  // this turn (credit or bound ran out first) must stay on the list.
  ring.drained = false;
  ring.share->active.push_back(&ring);
}

uint64_t Proxy::take_doorbells(JobShare& job) {
  uint64_t rung = 0;
  for (RingGroupBinding* group : job.groups) {
    rung += ring::take_doorbells(group->header, group->channels, [&](uint32_t channel) {
      if (RingBinding* ring = group->rings[channel]) {
        // The time of the take itself, not the pass's start: tasks and other
        // jobs' turns earlier in this pass may have taken long.
        if (ring->early_doorbell) ring->rung_at = Clock::now();
        activate(*ring);
      }
    });
  }
  if (rung) bump(stat_doorbells_, rung);
  return rung;
}

bool Proxy::sweep_early_doorbell_rings() {
  bool found = false;
  for (const auto& r : rings_) {
    if (!r->early_doorbell || r->active || r->closing || r->share == nullptr) continue;
    // acquire: pairs with the producer's release of seq (ring.h).
    const uint32_t seq = ring::ring_load_acquire(&r->slots[r->position & (r->capacity - 1)].seq);
    if (seq != ring::ring_seq_for(r->position)) continue;
    activate(*r);
    bump(stat_swept_, 1);
    found = true;
  }
  return found;
}

void Proxy::detach(RingBinding& ring) {
  // Its writes still out on other rails stop counting for its job now (the
  // job's share may go below); their answers find the ring let go.
  for (RelayedWrite* w : outstanding_) {
    if (w->ring.get() == &ring) uncount_relay(*w);
  }
  JobShare* job = ring.share;
  ring.share = nullptr;
  rings_.erase(std::remove_if(rings_.begin(), rings_.end(), [&](const auto& r) { return r.get() == &ring; }),
               rings_.end());
  ring_count_.store(rings_.size(), std::memory_order_relaxed);
  // Completions still to come for a timed-out ring must not touch it.
  for (auto& c : contexts_) {
    if (c.ring == &ring) c.ring = nullptr;
  }
  if (job == nullptr) return;
  job->rings.erase(std::remove(job->rings.begin(), job->rings.end(), &ring), job->rings.end());
  job->active.erase(std::remove(job->active.begin(), job->active.end(), &ring), job->active.end());
  ring.active = false;
  if (job->next_ring >= job->active.size()) job->next_ring = 0;
  if (RingGroupBinding* group = ring.group.get()) {
    if (ring.channel < group->rings.size() && group->rings[ring.channel] == &ring) group->rings[ring.channel] = nullptr;
    if (std::all_of(group->rings.begin(), group->rings.end(), [](RingBinding* r) { return r == nullptr; })) {
      job->groups.erase(std::remove(job->groups.begin(), job->groups.end(), group), job->groups.end());
    }
  }
  if (!job->rings.empty()) return;
  // The job's last ring here: forget its share (a later ring starts afresh).
  for (auto& c : contexts_) {
    if (c.share == job) c.share = nullptr;
  }
  jobs_.erase(std::find_if(jobs_.begin(), jobs_.end(), [&](const auto& j) { return j.get() == job; }));
  if (next_job_ >= jobs_.size()) next_job_ = 0;
}

void Proxy::reweigh(JobShare& job) {
  const uint32_t weight = std::max<uint32_t>(job.cell->weight(), 1);
  job.stats.weight = weight;
  job.quantum = static_cast<int64_t>(std::max<uint64_t>(options_.quantum_bytes, 1) * weight);
  if (jobs_.size() == 1 && !options_.bound_single_job) {
    // Alone on the rail: the bounds keep a job's writes from queueing ahead
    // of other jobs' in the provider, and there are none, so only the
    // transmit queue's half limits it (a single job keeps its full rate).
    job.max_inflight_ops = inflight_ops_cap_;
    job.max_inflight_bytes = std::numeric_limits<uint64_t>::max();
    return;
  }
  job.max_inflight_ops =
      std::min<uint64_t>(std::max<uint64_t>(options_.job_inflight_ops, 1) * weight, inflight_ops_cap_);
  job.max_inflight_bytes = std::max<uint64_t>(options_.job_inflight_bytes, 1) * weight;
}

void Proxy::uncount(OpContext& c) {
  if (c.share == nullptr) return;
  --c.share->inflight_ops;
  c.share->inflight_bytes -= c.bytes;
  c.share = nullptr;
}

void Proxy::set_link(bool up, std::string why) {
  submit([this, up, why = std::move(why)] { health_.on_link(up, why, std::chrono::steady_clock::now()); });
}

void Proxy::add_ring_async(std::shared_ptr<RingBinding> ring, std::function<void()> done) {
  submit([this, ring = std::move(ring), done = std::move(done)]() mutable {
    attach(std::move(ring));
    if (done) done();
  });
}

Status Proxy::add_ring(std::shared_ptr<RingBinding> ring) {
  return execute([this, ring] { attach(ring); });
}

void Proxy::remove_ring_async(std::shared_ptr<RingBinding> ring, std::chrono::milliseconds timeout,
                              std::function<void(Status)> done) {
  const auto deadline = Clock::now() + timeout;
  submit([this, ring = std::move(ring), deadline, timeout, done = std::move(done)]() mutable {
    ring->closing = true;
    ring->pending.reset();
    ring->held.clear();
    draining_.push_back(Draining{std::move(ring), deadline, timeout, std::move(done)});
  });
}

Status Proxy::remove_ring(const std::shared_ptr<RingBinding>& ring, std::chrono::milliseconds timeout) {
  auto result = std::make_shared<std::promise<Status>>();
  auto future = result->get_future();
  remove_ring_async(ring, timeout, [result](Status s) { result->set_value(std::move(s)); });
  // The proxy answers by the deadline; a second more covers a busy pass.
  if (future.wait_for(timeout + std::chrono::seconds(1)) != std::future_status::ready) {
    return deadline_exceeded("proxy of rail " + std::to_string(rail_.index()) + " did not release ring " +
                             std::to_string(ring->id) + " within " + std::to_string(timeout.count() + 1000) +
                             " ms (stalled)");
  }
  return future.get();
}

bool Proxy::finish_drains() {
  if (draining_.empty()) return false;
  const auto now = Clock::now();
  bool worked = false;
  for (auto it = draining_.begin(); it != draining_.end();) {
    RingBinding& ring = *it->ring;
    if (ring.inflight != 0 && now < it->deadline) {
      ++it;
      continue;
    }
    Status drained;
    if (ring.inflight != 0) {
      drained = deadline_exceeded("ring " + std::to_string(ring.id) + " still had writes in flight after " +
                                  std::to_string(it->timeout.count()) + " ms");
    }
    detach(ring);
    auto done = std::move(it->done);
    it = draining_.erase(it);
    if (done) done(std::move(drained));
    worked = true;
  }
  return worked;
}

std::vector<JobShareStats> Proxy::published_job_stats() const {
  std::lock_guard<std::mutex> lock(published_mu_);
  return published_jobs_;
}

void Proxy::publish_job_stats() {
  std::vector<JobShareStats> copy;
  copy.reserve(jobs_.size());
  for (const auto& job : jobs_) copy.push_back(job->stats);
  std::lock_guard<std::mutex> lock(published_mu_);
  published_jobs_.swap(copy);
}

Result<std::vector<JobShareStats>> Proxy::job_stats(std::chrono::milliseconds timeout) {
  std::vector<JobShareStats> out;
  EPX_RETURN_IF_ERROR(execute(
      [&] {
        for (const auto& job : jobs_) out.push_back(job->stats);
      },
      timeout));
  return out;
}

ProxyStats Proxy::stats() const {
  ProxyStats s;
  s.descriptors = stat_descriptors_.load(std::memory_order_relaxed);
  s.fabric_ops = stat_ops_.load(std::memory_order_relaxed);
  s.signals_applied = stat_signals_.load(std::memory_order_relaxed);
  s.bad_immediates = stat_bad_imm_.load(std::memory_order_relaxed);
  s.busy_ns = stat_busy_ns_.load(std::memory_order_relaxed);
  s.progress_ns = stat_progress_ns_.load(std::memory_order_relaxed);
  s.ring_visits = stat_visits_.load(std::memory_order_relaxed);
  s.doorbells = stat_doorbells_.load(std::memory_order_relaxed);
  s.swept = stat_swept_.load(std::memory_order_relaxed);
  s.refused = stat_eagain_.load(std::memory_order_relaxed);
  s.striped_writes = stat_striped_.load(std::memory_order_relaxed);
  s.spread_writes = stat_spread_.load(std::memory_order_relaxed);
  s.failover_writes = stat_failover_.load(std::memory_order_relaxed);
  s.posted_bytes = stat_bytes_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < kRejectReasons; ++i) s.rejected[i] = stat_rejected_[i].load(std::memory_order_relaxed);
  return s;
}

void Proxy::run() {
  const std::string name = "epx-proxy-" + std::to_string(rail_.index());
  pthread_setname_np(pthread_self(), name.c_str());
  if (options_.core >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(options_.core, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
      spdlog::warn("{}: cannot pin to core {}", name, options_.core);
    }
  } else if (!options_.cpus.empty()) {
    cpu_set_t allowed, set;
    CPU_ZERO(&set);
    bool any = false;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
      for (int c : options_.cpus) {
        if (c < CPU_SETSIZE && CPU_ISSET(c, &allowed)) {
          CPU_SET(c, &set);
          any = true;
        }
      }
    }
    // A container may be given none of the node's CPUs: then it runs where
    // it may, rather than nowhere.
    if (any && pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0) {
      spdlog::info("{}: on the CPUs of its NIC's NUMA node", name);
    }
  }
  auto last_work = Clock::now();
  auto last_published = Clock::time_point{};
  while (!stop_.load(std::memory_order_acquire)) {
    const auto pass_start = Clock::now();
    pass_now_ = pass_start;
    if (pass_start >= next_health_check_) check_health(pass_start);
    bool worked = tasks_.run_pending();
    if (options_.early_doorbell_sweep_us > 0 && pass_start >= next_early_sweep_) {
      next_early_sweep_ = pass_start + std::chrono::microseconds(options_.early_doorbell_sweep_us);
      worked |= sweep_early_doorbell_rings();
    }
    worked |= finish_drains();
    worked |= finish_quiesces();
    // A full transmit queue lasts until this pass's poll_cq reaped.
    tx_full_ = false;
    // Writes other proxies handed to this rail first: they were taken from
    // their rings already.
    worked |= post_relayed();
    worked |= serve_jobs();
    const auto before_cq = Clock::now();
    const bool reaped = poll_cq();
    const auto now = Clock::now();
    if (reaped) {
      stat_progress_ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(now - before_cq).count(),
                                  std::memory_order_relaxed);
    }
    worked |= reaped;
    if (now - last_published >= kJobStatsPeriod) {
      publish_job_stats();
      last_published = now;
    }
    if (worked) {
      last_work = now;
      stat_busy_ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(now - pass_start).count(),
                              std::memory_order_relaxed);
    } else if (options_.idle_sleep_us > 0 && now - last_work > std::chrono::microseconds(options_.spin_us)) {
      std::this_thread::sleep_for(std::chrono::microseconds(options_.idle_sleep_us));
    }
  }
}

void Proxy::check_health(Clock::time_point now) {
  // Often enough to notice a stall well within rail_stall_ms, rarely enough
  // that scanning the contexts costs nothing.
  constexpr auto kHealthTick = std::chrono::milliseconds(100);
  next_health_check_ = now + kHealthTick;
  Clock::duration oldest{0};
  uint64_t stalled = 0;
  for (const auto& c : contexts_) {
    if (c.posted_at == Clock::time_point{}) continue;
    const auto age = now - c.posted_at;
    oldest = std::max(oldest, age);
    if (age > health_.options().stall) ++stalled;
  }
  health_.tick(oldest, stalled, now);
  if (!health_.usable()) abandon_stalled(now);
}

}  // namespace epx::daemon
