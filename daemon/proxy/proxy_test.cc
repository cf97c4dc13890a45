// The proxy against a real rail (tcp provider on loopback, writing to its
// own endpoint) behind the fault-injecting transport: EAGAIN bursts, failed
// writes, failed completions, completions held back and reordered. Then
// several jobs sharing the rail: the order the proxy posted their writes in
// (recorded by a decorator over the transport) and its per-job counters show
// the fair share, the weights and the in-flight bound, never wall time.
// Built twice: plainly, and with ThreadSanitizer over the proxy serving rings
// that several producer threads feed at once (//daemon:proxy_tsan_test).
#include "daemon/proxy/proxy.h"

#include <doctest/doctest.h>
#include <rdma/fi_domain.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/fabric/fault_transport.h"
#include "daemon/fabric/memory_registration.h"
#include "daemon/fabric/rail_discovery.h"
#include "daemon/shm/shared_region.h"
#include "proto/ring/ring_host.h"

using namespace epx;
using namespace epx::daemon;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kSignals = 4;
constexpr uint64_t kWindowBytes = 4 << 20;

uint8_t pattern(uint64_t offset) { return static_cast<uint8_t>((offset * 131 + 7) >> 3); }

// A decorator that remembers every write the transport below accepted, in
// posting order, so tests can check the proxy's schedule itself rather than
// timings. Proxy thread only, like every Transport: read it through
// Proxy::execute.
class RecordingTransport final : public Transport {
 public:
  struct Write {
    uint64_t key;   // the destination window's key: tells jobs apart
    uint64_t addr;  // remote address as posted
    uint64_t length;
  };
  explicit RecordingTransport(std::unique_ptr<Transport> inner) : inner_(std::move(inner)) {}

  Rail& rail() override { return inner_->rail(); }
  ssize_t write(const fi_msg_rma& msg, uint64_t flags) override {
    const ssize_t ret = inner_->write(msg, flags);
    if (ret == 0) writes_.push_back({msg.rma_iov[0].key, msg.rma_iov[0].addr, msg.rma_iov[0].len});
    return ret;
  }
  ssize_t read_completions(fi_cq_data_entry* entries, size_t count) override {
    return inner_->read_completions(entries, count);
  }
  ssize_t read_error(fi_cq_err_entry* entry) override { return inner_->read_error(entry); }
  std::string error_text(const fi_cq_err_entry& entry) override { return inner_->error_text(entry); }

  const std::vector<Write>& writes() const { return writes_; }

 private:
  const std::unique_ptr<Transport> inner_;
  std::vector<Write> writes_;
};

// A decorator that holds back the local completions of writes to one
// destination key while closed, so a test can keep one destination's writes
// in flight for as long as it likes (scoped signals, flush watermarks)
// without any timing; and that can refuse every write with -FI_EAGAIN (a
// full transmit queue), counting the refusals and the CQ polls (one batch
// or more per proxy pass). Proxy thread only; use it through Proxy::execute.
class GateTransport final : public Transport {
 public:
  explicit GateTransport(std::unique_ptr<Transport> inner) : inner_(std::move(inner)) {}

  void close(uint64_t key) {
    closed_ = true;
    key_ = key;
  }
  void open() { closed_ = false; }
  size_t held() const { return held_.size(); }
  void refuse(bool full) { full_ = full; }
  uint64_t refused() const { return refused_; }
  uint64_t polls() const { return polls_; }

  Rail& rail() override { return inner_->rail(); }
  ssize_t write(const fi_msg_rma& msg, uint64_t flags) override {
    if (full_) {
      ++refused_;
      return -FI_EAGAIN;
    }
    const ssize_t ret = inner_->write(msg, flags);
    if (ret == 0 && closed_ && msg.rma_iov[0].key == key_) gated_.push_back(msg.context);
    return ret;
  }
  ssize_t read_completions(fi_cq_data_entry* entries, size_t count) override {
    ++polls_;
    size_t n = 0;
    while (!closed_ && !held_.empty() && n < count) {
      entries[n++] = held_.back();
      held_.pop_back();
    }
    if (n) return static_cast<ssize_t>(n);
    const ssize_t got = inner_->read_completions(entries, count);
    if (got <= 0) return got;
    for (ssize_t i = 0; i < got; ++i) {
      const auto it = std::find(gated_.begin(), gated_.end(), entries[i].op_context);
      if (it != gated_.end() && !(entries[i].flags & FI_REMOTE_CQ_DATA)) {
        gated_.erase(it);
        held_.push_back(entries[i]);
      } else {
        entries[n++] = entries[i];
      }
    }
    return n ? static_cast<ssize_t>(n) : -FI_EAGAIN;
  }
  ssize_t read_error(fi_cq_err_entry* entry) override { return inner_->read_error(entry); }
  std::string error_text(const fi_cq_err_entry& entry) override { return inner_->error_text(entry); }

 private:
  const std::unique_ptr<Transport> inner_;
  bool closed_ = false;
  uint64_t key_ = 0;
  bool full_ = false;
  uint64_t refused_ = 0, polls_ = 0;
  std::vector<void*> gated_;               // contexts of writes posted while closed
  std::vector<fi_cq_data_entry> held_;     // their completions, held back
};

ProxyOptions spinning(ProxyOptions options = {}) {
  options.idle_sleep_us = 0;
  return options;
}

// One rail and its proxy, and jobs of two ranks that both live behind this
// very endpoint: rank 0 writes from the shared source window (window 1) into
// rank 1's window 1, which each job has of its own (its own key, so the
// recorded writes tell the jobs apart), and bumps rank 1's signals.
class Rig {
 public:
  struct Job {
    std::shared_ptr<JobViewCell> cell;
    std::vector<uint8_t> dst;
    MrPtr dst_mr;
    RemoteRail remote;  // where its destination window is, as the proxy posts to it
    // A third rank (add_job with ranks = 3): its own window 1, own key.
    std::vector<uint8_t> dst2;
    MrPtr dst2_mr;
    RemoteRail remote2;
  };

  explicit Rig(FaultPlan plan, ProxyOptions options = spinning()) {
    auto rails = open_rails("tcp", {"lo"});
    REQUIRE_MESSAGE(rails.ok(), rails.status().to_string());
    rail_ = std::move(rails->front());
    auto signals = SignalSpace::create();
    REQUIRE(signals.ok());
    signals_ = std::move(signals.value());
    src_.resize(kWindowBytes);
    words_.assign(kSignals + 1, 0);
    for (uint64_t i = 0; i < kWindowBytes; ++i) src_[i] = pattern(i);
    auto faults = std::make_unique<FaultTransport>(std::make_unique<RailTransport>(*rail_), plan);
    faults_ = faults.get();
    auto gate = std::make_unique<GateTransport>(std::move(faults));
    gate_ = gate.get();
    auto recording = std::make_unique<RecordingTransport>(std::move(gate));
    recording_ = recording.get();
    proxy_ = std::make_unique<Proxy>(std::move(recording), *signals_, options);
    REQUIRE(proxy_->start().ok());
    REQUIRE(proxy_
                ->execute([&] {
                  REQUIRE(fi_av_insert(rail_->av(), rail_->address().data(), 1, &self_, 0, nullptr) == 1);
                  src_mr_ = register_or_fail(src_.data(), src_.size(), 1);
                  words_mr_ = register_or_fail(words_.data(), words_.size() * sizeof(uint64_t), 2);
                })
                .ok());
    auto base = signals_->allocate(words_.data(), kSignals);
    REQUIRE(base.ok());
    signal_base_ = *base;
  }

  ~Rig() {
    for (auto& ring : rings_) CHECK(proxy_->remove_ring(ring, 5000ms).ok());
    proxy_.reset();  // stops the thread; the registrations close after it
  }

  Job& add_job(const std::string& id, uint32_t weight = 1, uint32_t ranks = 2) {
    jobs_.push_back(std::make_unique<Job>());
    Job& job = *jobs_.back();
    job.dst.assign(kWindowBytes, 0);
    REQUIRE(proxy_->execute([&] { job.dst_mr = register_or_fail(job.dst.data(), job.dst.size(), 100 + jobs_.size()); })
                .ok());
    job.remote = remote(job.dst.data(), job.dst_mr.get());
    if (ranks > 2) {
      job.dst2.assign(kWindowBytes, 0);
      REQUIRE(proxy_
                  ->execute([&] { job.dst2_mr = register_or_fail(job.dst2.data(), job.dst2.size(), 200 + jobs_.size()); })
                  .ok());
      job.remote2 = remote(job.dst2.data(), job.dst2_mr.get());
    }

    auto view = std::make_shared<JobView>();
    view->generation = jobs_.size();
    view->job_id = id;
    view->world = ranks;
    view->ranks.resize(ranks);
    for (auto& r : view->ranks) {
      r.present = true;
      r.addrs = {self_};
      r.remote_rails = 1;
    }
    view->ranks[0].local_windows.resize(2);
    view->ranks[0].local_windows[1] = LocalWindow{src_.data(), src_.size(), {fi_mr_desc(src_mr_.get())}};
    RankView& dst = view->ranks[1];
    dst.windows.resize(2);
    dst.windows[1] = RemoteWindow{job.dst.size(), {job.remote}};
    dst.signal_base = signal_base_;
    dst.signal_count = kSignals;
    RemoteRail target = remote(words_.data(), words_mr_.get());
    target.base += kSignals * sizeof(uint64_t);  // the scratch word after the signals
    dst.signal_target = RemoteWindow{sizeof(uint64_t), {target}};
    if (ranks > 2) {
      view->ranks[2] = view->ranks[1];
      view->ranks[2].windows[1] = RemoteWindow{job.dst2.size(), {job.remote2}};
    }
    job.cell = std::make_shared<JobViewCell>(view);
    job.cell->set_weight(weight);
    return job;
  }

  // A ring of `job`, not yet served: tests may fill it first.
  std::shared_ptr<RingBinding> make_ring(const Job& job, uint32_t capacity) {
    auto region = SharedRegion::create("epx-proxy-test-ring", ring::ring_bytes(capacity));
    REQUIRE(region.ok());
    auto ring = std::make_shared<RingBinding>();
    ring->id = ++ring_ids_;
    ring->region = std::shared_ptr<SharedRegion>(std::move(region.value()));
    REQUIRE(ring::ring_init(ring->region->data(), capacity));
    ring->views = job.cell;
    ring->header = ring::ring_header(ring->region->data());
    ring->slots = ring::ring_slots(ring->header);
    ring->capacity = capacity;
    return ring;
  }

  // A group of `channels` rings of `job` (ring.h), not yet served; the
  // proxy visits them only when their doorbells ring.
  std::vector<std::shared_ptr<RingBinding>> make_group(const Job& job, uint32_t channels, uint32_t capacity,
                                                       ring::RingProducerKind kind = ring::RingProducerKind::kHost) {
    auto region = SharedRegion::create("epx-proxy-test-group", ring::group_bytes(channels, capacity));
    REQUIRE(region.ok());
    auto group = std::make_shared<RingGroupBinding>();
    group->region = std::shared_ptr<SharedRegion>(std::move(region.value()));
    REQUIRE(ring::group_init(group->region->data(), channels, capacity, kind));
    group->header = ring::group_header(group->region->data());
    group->channels = channels;
    std::vector<std::shared_ptr<RingBinding>> rings;
    for (uint32_t c = 0; c < channels; ++c) {
      auto ring = std::make_shared<RingBinding>();
      ring->id = ++ring_ids_;
      ring->region = group->region;
      ring->group = group;
      ring->channel = c;
      ring->early_doorbell = kind == ring::RingProducerKind::kDevice;
      ring->views = job.cell;
      ring->header = ring::ring_header(ring::group_ring(group->region->data(), c, capacity));
      ring->slots = ring::ring_slots(ring->header);
      ring->capacity = capacity;
      rings.push_back(std::move(ring));
    }
    return rings;
  }

  // Runs `fn` on the proxy thread between two passes (the gate, stats).
  template <typename Fn>
  void on_proxy(Fn fn) {
    REQUIRE(proxy_->execute([&] { fn(); }).ok());
  }
  GateTransport& gate() { return *gate_; }

  // Starts serving `rings` between two passes, all at once: the first pass
  // finds every one of them as the test filled it. A gate task holds the
  // proxy thread while the rings are queued behind it.
  void serve(const std::vector<std::shared_ptr<RingBinding>>& rings) {
    std::promise<void> open;
    std::shared_future<void> gate = open.get_future().share();
    auto held = std::make_shared<std::promise<void>>();
    auto holding = held->get_future();
    proxy_->submit([gate, held] {
      held->set_value();
      gate.wait_for(10s);
    });
    REQUIRE(holding.wait_for(10s) == std::future_status::ready);
    for (const auto& r : rings) {
      proxy_->add_ring_async(r, nullptr);
      rings_.push_back(r);
    }
    open.set_value();
  }

  std::vector<RecordingTransport::Write> writes() {
    std::vector<RecordingTransport::Write> out;
    REQUIRE(proxy_->execute([&] { out = recording_->writes(); }).ok());
    return out;
  }
  std::vector<JobShareStats> job_stats() {
    auto stats = proxy_->job_stats();
    REQUIRE_MESSAGE(stats.ok(), stats.status().to_string());
    return stats.value();
  }

  Proxy& proxy() { return *proxy_; }
  const FaultStats& faults() const { return faults_->stats(); }
  const std::vector<uint8_t>& src() const { return src_; }
  uint64_t signal(uint32_t i) const { return __atomic_load_n(&words_[i], __ATOMIC_ACQUIRE); }

  // Waits until `done()` holds; fails naming `what` after 30 s.
  template <typename Pred>
  void wait_for(const char* what, Pred done) {
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (!done()) {
      REQUIRE_MESSAGE(std::chrono::steady_clock::now() < end, "timed out after 30 s waiting for " << what);
      std::this_thread::sleep_for(100us);
    }
  }

 private:
  MrPtr register_or_fail(void* p, size_t n, uint64_t key) {
    auto mr = register_memory(*rail_, p, n, key);
    REQUIRE_MESSAGE(mr.ok(), mr.status().to_string());
    return std::move(mr.value());
  }
  RemoteRail remote(void* p, fid_mr* mr) const {
    const bool virt = (rail_->mr_mode() & FI_MR_VIRT_ADDR) != 0;
    return RemoteRail{fi_mr_key(mr), virt ? reinterpret_cast<uint64_t>(p) : 0};
  }

  std::unique_ptr<Rail> rail_;
  std::unique_ptr<SignalSpace> signals_;
  std::vector<uint8_t> src_;
  std::vector<uint64_t> words_;
  MrPtr src_mr_, words_mr_;
  fi_addr_t self_ = FI_ADDR_UNSPEC;
  uint32_t signal_base_ = 0;
  std::vector<std::unique_ptr<Job>> jobs_;
  std::vector<std::shared_ptr<RingBinding>> rings_;  // served: removed before the proxy stops
  uint64_t ring_ids_ = 0;
  FaultTransport* faults_ = nullptr;
  RecordingTransport* recording_ = nullptr;
  GateTransport* gate_ = nullptr;
  std::unique_ptr<Proxy> proxy_;  // stopped first (destroyed before the registrations)
};

// The single-job setup of the first tests: one job, one ring, served.
class Loopback {
 public:
  explicit Loopback(FaultPlan plan, uint32_t ring_capacity = 1024) : rig_(plan), job_(rig_.add_job("proxy-test")) {
    ring_ = rig_.make_ring(job_, ring_capacity);
    rig_.serve({ring_});
  }

  void* ring_memory() { return ring_->region->data(); }
  RingBinding& ring() { return *ring_; }
  const FaultStats& faults() const { return rig_.faults(); }
  const std::vector<uint8_t>& src() const { return rig_.src(); }
  const std::vector<uint8_t>& dst() const { return job_.dst; }
  uint64_t signal(uint32_t i) const { return rig_.signal(i); }
  uint64_t completed() const { return ring::ring_load_acquire(&ring_->header->completed); }
  template <typename Pred>
  void wait_for(const char* what, Pred done) {
    rig_.wait_for(what, done);
  }

 private:
  Rig rig_;
  Rig::Job& job_;
  std::shared_ptr<RingBinding> ring_;
};

uint64_t dst_addr(uint64_t offset) { return ring::pack_address(1, offset); }

// The pieces producer `id` of `producers` writes into its own slice of the
// window: fn(i, offset, length) for i in 0..count. Most are not adjacent in
// ring order, and gaps keep writes from all coalescing.
template <typename Fn>
void for_each_piece(uint32_t id, uint32_t producers, uint32_t count, Fn fn) {
  const uint64_t slice = kWindowBytes / producers;
  uint64_t offset = slice * id;
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t length = 1 + (i * 37 + id * 11) % 700;  // 1..700 bytes
    REQUIRE(offset + length <= slice * (id + 1));
    fn(i, offset, length);
    offset += length + (i % 5 == 0 ? 64 : 0);
  }
}

// Producer `id` posts its pieces, two of every three followed by a signal on
// word `id % kSignals`.
void produce(void* ring_mem, uint32_t id, uint32_t producers, uint32_t count) {
  ring::RingProducer producer(ring_mem);
  for_each_piece(id, producers, count, [&](uint32_t i, uint64_t offset, uint32_t length) {
    const ring::RingSlot d = (i % 3 == 0) ? ring::make_write(1, dst_addr(offset), dst_addr(offset), length)
                                          : ring::make_write_signal(1, dst_addr(offset), dst_addr(offset), length,
                                                                    ring::encode_signal(id % kSignals, 1));
    REQUIRE(producer.post(d, 10s));
  });
}

// Posts a flush and waits until the proxy completed it: the watermark
// passed the flush's own ticket.
void flush(Loopback& lb, const char* what) {
  ring::RingProducer tail(lb.ring_memory());
  uint64_t ticket = 0;
  REQUIRE(tail.post(ring::make_flush(), 10s, &ticket));
  lb.wait_for(what, [&] { return lb.completed() > ticket; });
}

uint32_t signalled(uint32_t count) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < count; ++i) n += i % 3 != 0;
  return n;
}

}  // namespace

TEST_CASE("writes arrive intact and every signal counts through EAGAIN bursts and late, reordered completions") {
  FaultPlan plan;
  plan.seed = 11;
  plan.eagain_per_mille = 80;
  plan.eagain_burst = 5;
  plan.hold_count = 16;
  plan.hold_us = 300;
  plan.reorder = true;
  Loopback lb(plan, 256);  // a small ring: producers wrap it many times
  constexpr uint32_t kProducers = 4, kCount = 1500;
  std::vector<std::thread> producers;
  for (uint32_t p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] { produce(lb.ring_memory(), p, kProducers, kCount); });
  }
  for (auto& t : producers) t.join();
  flush(lb, "the flush");

  // Each producer signalled word p % kSignals for 2 of every 3 writes.
  uint64_t total = 0;
  for (uint32_t s = 0; s < kSignals; ++s) total += lb.signal(s);
  CHECK(total == uint64_t{kProducers} * signalled(kCount));
  // Every byte a producer wrote equals its source.
  for (uint32_t p = 0; p < kProducers; ++p) {
    for_each_piece(p, kProducers, kCount, [&](uint32_t i, uint64_t offset, uint32_t length) {
      for (uint64_t b = offset; b < offset + length; ++b) {
        if (lb.dst()[b] != lb.src()[b]) FAIL("producer " << p << " write " << i << ": byte " << b << " differs");
      }
    });
  }
  CHECK(lb.ring().rejected.load() == 0);
  CHECK(lb.ring().completed.load() == lb.ring().consumed.load());
  CHECK(lb.ring().consumed.load() == uint64_t{kProducers} * kCount + 1);
  // The faults really happened.
  CHECK(lb.faults().eagain.load() > 0);
  CHECK(lb.faults().reordered.load() > 0);
  CHECK(ring::error_code(lb.ring().header->error) == ring::RingError::kNone);
}

TEST_CASE("failed writes and failed completions surface on the sender's ring; flushes still end") {
  FaultPlan plan;
  plan.seed = 5;
  plan.fail_write_per_mille = 30;
  plan.fail_completion_per_mille = 30;
  plan.hold_count = 8;
  plan.reorder = true;
  Loopback lb(plan);
  constexpr uint32_t kCount = 2000;
  produce(lb.ring_memory(), 0, 1, kCount);
  flush(lb, "the flush after failed writes");

  CHECK(lb.faults().failed_writes.load() > 0);
  CHECK(lb.faults().failed_completions.load() > 0);
  // Every failure is counted on the ring and the first one named.
  CHECK(lb.ring().rejected.load() == lb.faults().failed_writes.load() + lb.faults().failed_completions.load());
  CHECK(ring::error_code(ring::ring_load_acquire(&lb.ring().header->error)) == ring::RingError::kTransport);
  {
    std::lock_guard<std::mutex> lock(lb.ring().error_mu);
    const std::string& e = lb.ring().first_error;
    CHECK_MESSAGE(
        (e.find("fi_writemsg") != std::string::npos || e.find("injected completion failure") != std::string::npos), e);
  }
  // Nothing is lost from the accounting: every descriptor completed (some
  // as failures), so flushes cannot wait for them forever.
  CHECK(lb.ring().completed.load() == lb.ring().consumed.load());
  CHECK(lb.ring().consumed.load() == kCount + 1);
}

TEST_CASE("an unscoped signal waits for every earlier write even when their completions come late and out of order") {
  FaultPlan plan;
  plan.seed = 3;
  plan.hold_count = 32;
  plan.hold_us = 2000;
  plan.reorder = true;
  Loopback lb(plan);
  ring::RingProducer producer(lb.ring_memory());
  constexpr uint32_t kWrites = 200, kLength = 4096;
  for (uint32_t i = 0; i < kWrites; ++i) {
    // Every other block: no two writes coalesce.
    REQUIRE(
        producer.post(ring::make_write(1, dst_addr(2ull * i * kLength), dst_addr(2ull * i * kLength), kLength), 10s));
  }
  REQUIRE(producer.post(ring::make_signal(1, ring::encode_signal(2, 1)), 10s));
  lb.wait_for("the fenced signal", [&] { return lb.signal(2) == 1; });
  // The signal was sent only after every write completed at its destination.
  for (uint32_t i = 0; i < kWrites; ++i) {
    const uint64_t at = 2ull * i * kLength;
    if (lb.dst()[at + kLength - 1] != lb.src()[at + kLength - 1]) FAIL("write " << i << " not in place at the signal");
  }
  CHECK(lb.ring().rejected.load() == 0);
}

namespace {

// Fills `ring` (not yet served) with `count` copies of what slot(i) gives.
template <typename SlotFn>
void fill(const std::shared_ptr<RingBinding>& ring, uint32_t count, SlotFn slot) {
  ring::RingProducer producer(ring->region->data());
  for (uint32_t i = 0; i < count; ++i) REQUIRE(producer.post(slot(i), 10s));
}

uint64_t completed(const std::vector<std::shared_ptr<RingBinding>>& rings) {
  uint64_t n = 0;
  for (const auto& r : rings) n += r->completed.load();
  return n;
}

const JobShareStats& stats_of(const std::vector<JobShareStats>& all, const std::string& job) {
  for (const auto& s : all) {
    if (s.job_id == job) return s;
  }
  FAIL("no share for job " << job);
  return all.front();
}

}  // namespace

TEST_CASE("a job flooding 1 MiB writes from four rings holds a small-write job back by one write per turn at most") {
  ProxyOptions options = spinning();
  options.job_inflight_ops = 1024;  // the small job is never held by its own bound here
  Rig rig(FaultPlan{}, options);
  Rig::Job& noisy = rig.add_job("noisy");
  Rig::Job& quiet = rig.add_job("quiet");
  constexpr uint32_t kNoisyRings = 4, kNoisyWrites = 32, kQuietWrites = 512;
  std::vector<std::shared_ptr<RingBinding>> rings;
  for (uint32_t r = 0; r < kNoisyRings; ++r) {
    rings.push_back(rig.make_ring(noisy, 64));
    // The same 1 MiB again and again: never adjacent, so one fabric write each.
    fill(rings.back(), kNoisyWrites, [](uint32_t) { return ring::make_write(1, dst_addr(0), dst_addr(0), 1 << 20); });
  }
  rings.push_back(rig.make_ring(quiet, 1024));
  fill(rings.back(), kQuietWrites, [](uint32_t i) {
    return ring::make_write(1, dst_addr(i * 128ull), dst_addr(i * 128ull), 64);  // gaps: no coalescing
  });
  rig.serve(rings);  // the noisy job's rings first: it goes first in the first pass
  rig.wait_for("every write", [&] { return completed(rings) == kNoisyRings * kNoisyWrites + kQuietWrites; });

  // In each turn the small job may post quantum / op cost = 64 writes; the
  // big one posts one 1 MiB write and then owes three turns. So before the
  // small job's write i, at most i / 64 + 1 big writes went out (one more
  // is allowed for a provider EAGAIN that costs the small job a pass).
  uint64_t noisy_posted = 0, quiet_posted = 0, worst = 0, worst_at = 0;
  for (const auto& w : rig.writes()) {
    if (w.key == noisy.remote.key) {
      ++noisy_posted;
    } else if (w.key == quiet.remote.key) {
      const uint64_t excess = noisy_posted - std::min(noisy_posted, quiet_posted / 64);
      if (excess > worst) worst = excess, worst_at = quiet_posted;
      ++quiet_posted;
    }
  }
  CHECK(noisy_posted == kNoisyRings * kNoisyWrites);
  CHECK(quiet_posted == kQuietWrites);
  CHECK_MESSAGE(worst <= 2, "before small write " << worst_at << ", " << worst << " big writes more than one per turn");
  for (uint32_t i = 0; i < kQuietWrites; ++i) {
    const uint64_t at = i * 128ull;
    if (!std::equal(quiet.dst.begin() + at, quiet.dst.begin() + at + 64, rig.src().begin() + at)) {
      FAIL("small write " << i << " did not arrive intact");
    }
  }
  for (const auto& r : rings) CHECK(r->rejected.load() == 0);
}

TEST_CASE("weights 3:1 give a 3:1 byte share while both jobs are backlogged") {
  // Two ways a share is enforced, each weighted: turns, when the proxy is
  // what limits (bounds out of reach), and in-flight bounds, when the
  // fabric is (the default bounds are reached at once).
  ProxyOptions options = spinning();
  bool bounds_decide = true;
  SUBCASE("turns decide") {
    options.job_inflight_ops = 1024;
    options.job_inflight_bytes = 1ull << 32;
    bounds_decide = false;
  }
  SUBCASE("in-flight bounds decide") {}
  Rig rig(FaultPlan{}, options);
  Rig::Job& light = rig.add_job("light", 1);
  Rig::Job& heavy = rig.add_job("heavy", 3);
  constexpr uint32_t kWrites = 1024, kLength = 16 << 10;
  auto slot = [](uint32_t i) {
    const uint64_t at = (i % 128) * 32768ull;  // 16 KiB gaps: no coalescing
    return ring::make_write(1, dst_addr(at), dst_addr(at), kLength);
  };
  std::vector<std::shared_ptr<RingBinding>> rings = {rig.make_ring(light, kWrites), rig.make_ring(heavy, kWrites)};
  fill(rings[0], kWrites, slot);
  fill(rings[1], kWrites, slot);
  rig.serve(rings);  // the light job first: it goes first in the first pass
  rig.wait_for("every write", [&] { return completed(rings) == 2 * kWrites; });

  // Until the heavy job posted its last write both were backlogged: the
  // bytes posted up to then are the shares.
  const auto writes = rig.writes();
  size_t last_heavy = 0;
  for (size_t i = 0; i < writes.size(); ++i) {
    if (writes[i].key == heavy.remote.key) last_heavy = i;
  }
  uint64_t heavy_bytes = 0, light_bytes = 0;
  for (size_t i = 0; i <= last_heavy; ++i) {
    (writes[i].key == heavy.remote.key ? heavy_bytes : light_bytes) += writes[i].length;
  }
  REQUIRE(light_bytes > 0);
  const double ratio = double(heavy_bytes) / double(light_bytes);
  MESSAGE("heavy:light bytes " << heavy_bytes << ":" << light_bytes << " = " << ratio);
  CHECK((ratio > 2.5 && ratio < 3.6));
  const auto stats = rig.job_stats();
  CHECK(stats_of(stats, "heavy").weight == 3);
  CHECK(stats_of(stats, "light").weight == 1);
  CHECK(stats_of(stats, "heavy").fabric_bytes == uint64_t{kWrites} * kLength);
  // Which of the two it was.
  CHECK((stats_of(stats, "heavy").bound_waits > 0) == bounds_decide);
  CHECK((stats_of(stats, "light").bound_waits > 0) == bounds_decide);
  for (const auto& r : rings) CHECK(r->rejected.load() == 0);
}

TEST_CASE("a job never has more writes in flight than its bound; held writes wait in ring order and all complete") {
  FaultPlan plan;  // completions come late and in bursts, so writes pile up in flight
  plan.seed = 7;
  plan.hold_count = 16;
  plan.hold_us = 2000;
  plan.reorder = true;
  ProxyOptions options = spinning();
  options.job_inflight_ops = 8;
  options.job_inflight_bytes = 256 << 10;
  Rig rig(plan, options);
  // flood: 48 KiB writes, held by the byte bound (5 fit in 256 KiB);
  // many (weight 2: 16 ops, 512 KiB): 4 KiB writes, held by the count;
  // whale: 1 MiB writes, each larger than its whole byte bound: one at a time.
  struct Flow {
    Rig::Job* job;
    uint32_t count, length;
    uint64_t stride;
  };
  const std::vector<Flow> flows = {{&rig.add_job("flood"), 600, 48 << 10, 64 << 10},
                                   {&rig.add_job("many", 2), 1500, 4 << 10, 8 << 10},
                                   {&rig.add_job("whale"), 24, 1 << 20, 0}};
  auto offset = [](const Flow& f, uint32_t i) { return f.stride ? (i % (kWindowBytes / f.stride)) * f.stride : 0; };
  std::vector<std::shared_ptr<RingBinding>> rings;
  for (const Flow& f : flows) rings.push_back(rig.make_ring(*f.job, 128));
  rig.serve(rings);
  // Producers wrap their small rings many times while the proxy serves them.
  std::vector<std::thread> producers;
  for (size_t k = 0; k < flows.size(); ++k) {
    producers.emplace_back([&, k] {
      ring::RingProducer producer(rings[k]->region->data());
      const Flow& f = flows[k];
      for (uint32_t i = 0; i < f.count; ++i) {
        const uint64_t at = offset(f, i);
        REQUIRE(producer.post(ring::make_write(1, dst_addr(at), dst_addr(at), f.length), 10s));
      }
    });
  }
  for (auto& t : producers) t.join();
  uint64_t total = 0;
  for (const Flow& f : flows) total += f.count;
  rig.wait_for("every write", [&] { return completed(rings) == total; });

  const auto stats = rig.job_stats();
  const JobShareStats& flood = stats_of(stats, "flood");
  CHECK(flood.max_inflight_bytes <= 256u << 10);
  CHECK(flood.max_inflight_ops <= 5);
  CHECK(flood.bound_waits > 0);  // the bound did hold writes back
  const JobShareStats& many = stats_of(stats, "many");
  CHECK(many.max_inflight_ops <= 16);
  CHECK(many.max_inflight_bytes <= 512u << 10);
  CHECK(many.bound_waits > 0);
  const JobShareStats& whale = stats_of(stats, "whale");
  CHECK(whale.max_inflight_ops == 1);
  CHECK(whale.max_inflight_bytes == 1u << 20);
  CHECK(rig.faults().reordered.load() > 0);

  // Each job's writes went out in its ring's order, every one of them, and
  // its data is in place.
  const auto writes = rig.writes();
  for (const Flow& f : flows) {
    uint32_t next = 0;
    for (const auto& w : writes) {
      if (w.key != f.job->remote.key) continue;
      REQUIRE_MESSAGE(next < f.count, f.job->cell->load()->job_id << ": more writes than descriptors");
      REQUIRE_MESSAGE(w.addr == f.job->remote.base + offset(f, next),
                      f.job->cell->load()->job_id << ": write " << next << " out of ring order");
      CHECK(w.length == f.length);
      ++next;
    }
    CHECK(next == f.count);
    for (uint32_t i = 0; i < std::min<uint64_t>(f.count, f.stride ? kWindowBytes / f.stride : 1); ++i) {
      const uint64_t at = offset(f, i);
      if (!std::equal(f.job->dst.begin() + at, f.job->dst.begin() + at + f.length, rig.src().begin() + at)) {
        FAIL(f.job->cell->load()->job_id << " write " << i << " did not arrive intact");
      }
    }
  }
  for (const auto& r : rings) {
    CHECK(r->rejected.load() == 0);
    CHECK(r->completed.load() == r->consumed.load());
  }
}

namespace {

// Completions that come late (so writes pile up in flight) and per-job
// bounds of 2 writes / 8 KiB, for the tests of who those bounds hold.
struct BoundsSetup {
  FaultPlan plan;
  ProxyOptions options;
};

BoundsSetup late_completions_tight_bounds(uint64_t seed) {
  BoundsSetup b;
  b.plan.seed = seed;
  b.plan.hold_count = 32;
  b.plan.hold_us = 2000;
  b.options = spinning();
  b.options.job_inflight_ops = 2;
  b.options.job_inflight_bytes = 8 << 10;
  return b;
}

// Posts `count` 16 KiB writes (each larger than the 8 KiB bound) on `producer`.
void post_16k_writes(ring::RingProducer& producer, uint32_t count) {
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t at = (i % 64) * (16 << 10);
    REQUIRE(producer.post(ring::make_write(1, dst_addr(at), dst_addr(at), 16 << 10), 10s));
  }
}

// Job "alone", the only one on `rig`'s rail, once its 200 16 KiB writes on
// a ring of its own completed: the ring and producer stay usable.
struct LoneJob {
  std::shared_ptr<RingBinding> ring;
  ring::RingProducer producer;
  JobShareStats stats;
};

LoneJob run_lone_job(Rig& rig) {
  Rig::Job& alone = rig.add_job("alone");
  auto ring = rig.make_ring(alone, 256);
  rig.serve({ring});
  ring::RingProducer producer(ring->region->data());
  post_16k_writes(producer, 200);
  rig.wait_for("the lone job's writes", [&] { return ring->completed.load() == 200; });
  return LoneJob{ring, producer, stats_of(rig.job_stats(), "alone")};
}

}  // namespace

TEST_CASE("a job alone on the rail is not held by the per-job bounds; a second job brings them back") {
  BoundsSetup setup = late_completions_tight_bounds(11);
  Rig rig(setup.plan, setup.options);
  LoneJob alone = run_lone_job(rig);
  auto& ring = alone.ring;
  ring::RingProducer& producer = alone.producer;
  const JobShareStats& lone = alone.stats;
  CHECK(lone.bound_waits == 0);
  CHECK(lone.max_inflight_ops > 2);  // more than the shared bound allows

  // A second job on the rail: both are bound again.
  Rig::Job& other = rig.add_job("other");
  auto other_ring = rig.make_ring(other, 256);
  rig.serve({other_ring});
  ring::RingProducer other_producer(other_ring->region->data());
  for (uint32_t i = 0; i < 200; ++i) {
    const uint64_t at = (i % 64) * (16 << 10);
    REQUIRE(producer.post(ring::make_write(1, dst_addr(at), dst_addr(at), 16 << 10), 10s));
    REQUIRE(other_producer.post(ring::make_write(1, dst_addr(at), dst_addr(at), 16 << 10), 10s));
  }
  rig.wait_for("both jobs' writes", [&] { return ring->completed.load() == 400 && other_ring->completed.load() == 200; });
  const auto stats = rig.job_stats();
  CHECK(stats_of(stats, "other").max_inflight_ops == 1);  // 16 KiB writes under an 8 KiB bound: one at a time
}

TEST_CASE("bound_single_job holds a job alone on the rail to the per-job bounds") {
  BoundsSetup setup = late_completions_tight_bounds(12);
  setup.options.bound_single_job = true;
  Rig rig(setup.plan, setup.options);
  const JobShareStats lone = run_lone_job(rig).stats;
  CHECK(lone.max_inflight_ops == 1);  // 16 KiB writes under an 8 KiB bound: one at a time (> 2 without it)
}

namespace {

// Whether element i of a strided write is in place in `dst`, byte for byte.
bool element_in_place(const std::vector<uint8_t>& src, const std::vector<uint8_t>& dst, uint64_t src_offset,
                      uint64_t src_stride, uint64_t dst_offset, uint64_t dst_stride, uint32_t length, uint32_t i) {
  return std::equal(src.begin() + src_offset + i * src_stride, src.begin() + src_offset + i * src_stride + length,
                    dst.begin() + dst_offset + i * dst_stride);
}

}  // namespace

TEST_CASE("strided batches: every element lands, in few fabric writes, and a batch's signal follows all of it") {
  Loopback lb(FaultPlan{});
  ring::RingProducer producer(lb.ring_memory());
  const auto& src = lb.src();
  const auto& dst = lb.dst();
  // 3 elements and a signal: one fabric write (tcp takes 4 iovecs) carries all and the immediate.
  REQUIRE(producer.post(
      ring::make_write_strided(1, dst_addr(100000), 128, dst_addr(100000), 256, 64, 3, ring::encode_signal(1, 1)), 10s));
  lb.wait_for("the 3-element batch's signal", [&] { return lb.signal(1) == 1; });
  for (uint32_t i = 0; i < 3; ++i) CHECK(element_in_place(src, dst, 100000, 128, 100000, 256, 64, i));
  // 9 elements and a signal: three writes; the signal is held until all completed.
  REQUIRE(producer.post(
      ring::make_write_strided(1, dst_addr(200000), 1000, dst_addr(300000), 2000, 512, 9, ring::encode_signal(2, 1)),
      10s));
  lb.wait_for("the 9-element batch's signal", [&] { return lb.signal(2) == 1; });
  for (uint32_t i = 0; i < 9; ++i) CHECK(element_in_place(src, dst, 200000, 1000, 300000, 2000, 512, i));
  // 10 elements, no signal, gaps on both sides; and a back-to-back batch (one plain write).
  REQUIRE(producer.post(ring::make_write_strided(1, dst_addr(1000), 300, dst_addr(2000), 500, 100, 10, 0), 10s));
  REQUIRE(producer.post(ring::make_write_strided(1, dst_addr(500000), 256, dst_addr(500000), 256, 256, 16, 0), 10s));
  flush(lb, "the batches");
  for (uint32_t i = 0; i < 10; ++i) {
    CHECK(element_in_place(src, dst, 1000, 300, 2000, 500, 100, i));
    // The gaps between destination elements are untouched.
    if (i < 9) CHECK(std::all_of(dst.begin() + 2000 + i * 500 + 100, dst.begin() + 2000 + (i + 1) * 500, [](uint8_t b) { return b == 0; }));
  }
  CHECK(std::equal(src.begin() + 500000, src.begin() + 500000 + 16 * 256, dst.begin() + 500000));
  // Fabric writes: 1 (3 elements + immediate) + 3 (9 elements) + 1 (held signal)
  // + 3 (10 elements) + 1 (16 back to back) = 9, for 40 elements.
  CHECK(lb.ring().fabric_ops.load() == 9);
  CHECK(lb.ring().rejected.load() == 0);
  CHECK(lb.ring().completed.load() == lb.ring().consumed.load());
}

TEST_CASE("a strided batch with an element outside a window is refused whole with kOutOfBounds; nothing is written") {
  Loopback lb(FaultPlan{});
  ring::RingProducer producer(lb.ring_memory());
  // The first element fits; the last (element 99) ends one byte past the window.
  constexpr uint64_t kStride = 40000, kLength = 1000;
  const uint64_t first = kWindowBytes + 1 - kLength - 99 * kStride;
  REQUIRE(producer.post(ring::make_write_strided(1, dst_addr(0), 0, dst_addr(first), kStride, kLength, 100, 0), 10s));
  // A stride whose product with the count overflows 64 bits, on the source side.
  REQUIRE(producer.post(ring::make_write_strided(1, dst_addr(0), uint64_t{1} << 62, dst_addr(0), 0, 64, 8, 0), 10s));
  // The exact fit (last element ends at the window's end) is accepted.
  const uint64_t fit = kWindowBytes - kLength - 99 * kStride;
  REQUIRE(producer.post(ring::make_write_strided(1, dst_addr(0), 0, dst_addr(fit), kStride, kLength, 100, 0), 10s));
  flush(lb, "the batches");
  const uint64_t error = ring::ring_load_acquire(&lb.ring().header->error);
  CHECK(ring::error_code(error) == ring::RingError::kOutOfBounds);
  CHECK(ring::error_position(error) == 0);
  CHECK(lb.ring().rejected.load() == 2);
  {
    std::lock_guard<std::mutex> lock(lb.ring().error_mu);
    CHECK_MESSAGE(lb.ring().first_error.find("destination element 99") != std::string::npos, lb.ring().first_error);
  }
  // Nothing of the refused batch was written: its elements' places are zero
  // wherever the accepted batch did not write.
  const auto& dst = lb.dst();
  for (uint32_t i = 0; i < 99; ++i) {
    const uint64_t at = first + i * kStride;
    const uint64_t accepted_from = fit + i * kStride, accepted_to = accepted_from + kLength;
    for (uint64_t b = at; b < at + kLength; ++b) {
      if (b >= accepted_from && b < accepted_to) continue;
      if (dst[b] != 0) FAIL("refused element " << i << " wrote byte " << b);
    }
  }
  for (uint32_t i = 0; i < 100; ++i) CHECK(element_in_place(lb.src(), dst, 0, 0, fit, kStride, kLength, i));
}

TEST_CASE("a scoped signal waits only for its destination's writes; an unscoped one for every earlier write") {
  Rig rig(FaultPlan{});
  Rig::Job& job = rig.add_job("scopes", 1, /*ranks=*/3);
  auto ring = rig.make_ring(job, 256);
  rig.serve({ring});
  rig.on_proxy([&] { rig.gate().close(job.remote2.key); });  // rank 2's writes stay in flight
  ring::RingProducer producer(ring->region->data());
  for (uint32_t i = 0; i < 4; ++i) {
    REQUIRE(producer.post(ring::make_write(2, dst_addr(i * 8192ull), dst_addr(i * 8192ull), 4096), 10s));
  }
  REQUIRE(producer.post(ring::make_write(1, dst_addr(0), dst_addr(0), 4096), 10s));
  REQUIRE(producer.post(ring::make_signal(1, ring::encode_signal(1, 1), /*scope_destination=*/true), 10s));
  rig.wait_for("the signal scoped to rank 1", [&] { return rig.signal(1) == 1; });
  CHECK(std::equal(rig.src().begin(), rig.src().begin() + 4096, job.dst.begin()));  // its scope was in place
  // Unscoped: it must wait for rank 2's writes, which the gate holds.
  REQUIRE(producer.post(ring::make_signal(1, ring::encode_signal(2, 1)), 10s));
  rig.wait_for("the proxy to take the unscoped signal", [&] { return ring->consumed.load() == 7; });
  size_t held = 0, gated = 0;
  rig.on_proxy([&] {
    held = ring->held.size();
    gated = rig.gate().held();
  });
  CHECK(held == 1);
  CHECK(gated == 4);
  CHECK(rig.signal(2) == 0);
  CHECK(ring::ring_load_acquire(&ring->header->completed) == 0);  // the watermark stops at rank 2's first write
  rig.on_proxy([&] { rig.gate().open(); });
  rig.wait_for("the unscoped signal", [&] { return rig.signal(2) == 1; });
  for (uint32_t i = 0; i < 4; ++i) {
    CHECK(std::equal(rig.src().begin() + i * 8192, rig.src().begin() + i * 8192 + 4096, job.dst2.begin() + i * 8192));
  }
  CHECK(ring->rejected.load() == 0);
}

TEST_CASE("two flushers each wait for their own ticket on the completion watermark") {
  Rig rig(FaultPlan{});
  Rig::Job& job = rig.add_job("flushers", 1, /*ranks=*/3);
  auto ring = rig.make_ring(job, 256);
  rig.serve({ring});
  ring::RingProducer a(ring->region->data()), b(ring->region->data());
  uint64_t b_first = 0;
  REQUIRE(b.post(ring::make_flush(), 10s, &b_first));
  rig.wait_for("B's first flush", [&] { return b.completed() > b_first; });
  rig.on_proxy([&] { rig.gate().close(job.remote2.key); });
  // A's writes to rank 2 stay in flight; then A's flush, B's write and flush.
  uint64_t a_write = 0, a_flush = 0, b_flush = 0;
  REQUIRE(a.post(ring::make_write(2, dst_addr(0), dst_addr(0), 4096), 10s, &a_write));
  REQUIRE(a.post(ring::make_write(2, dst_addr(8192), dst_addr(8192), 4096), 10s));
  REQUIRE(a.post(ring::make_flush(), 10s, &a_flush));
  REQUIRE(b.post(ring::make_write(1, dst_addr(0), dst_addr(0), 4096), 10s));
  REQUIRE(b.post(ring::make_flush(), 10s, &b_flush));
  rig.wait_for("the proxy to take them", [&] { return ring->consumed.load() == 6; });
  rig.on_proxy([] {});  // a whole pass after that
  CHECK(a.completed() == a_write);  // the watermark stops at A's first write in flight
  CHECK_FALSE(a.completed() > a_flush);
  CHECK_FALSE(b.completed() > b_flush);  // B's flush comes after A's writes in ring order
  rig.on_proxy([&] { rig.gate().open(); });
  rig.wait_for("A's flush", [&] { return a.completed() > a_flush; });
  // A's flush ended: its writes are in place.
  CHECK(std::equal(rig.src().begin(), rig.src().begin() + 4096, job.dst2.begin()));
  CHECK(std::equal(rig.src().begin() + 8192, rig.src().begin() + 8192 + 4096, job.dst2.begin() + 8192));
  rig.wait_for("B's flush", [&] { return b.completed() > b_flush; });
  CHECK(std::equal(rig.src().begin(), rig.src().begin() + 4096, job.dst.begin()));
}

TEST_CASE("a group of 132 channel rings: the ring that rang is served, the 131 idle ones are never visited") {
  Rig rig(FaultPlan{});
  Rig::Job& job = rig.add_job("channels");
  auto rings = rig.make_group(job, 132, 64);
  rig.serve(rings);
  ring::RingGroupHeader* group = rings[0]->group->header;
  ring::RingProducer producer(rings[77]->header, &group->doorbell[77]);
  constexpr uint32_t kWrites = 500;  // laps the 64-slot ring
  for (uint32_t i = 0; i < kWrites; ++i) {
    REQUIRE(producer.post(ring::make_write(1, dst_addr(i * 1024ull), dst_addr(i * 1024ull), 512), 10s));
  }
  uint64_t ticket = 0;
  REQUIRE(producer.post(ring::make_flush(), 10s, &ticket));
  rig.wait_for("channel 77's writes", [&] { return producer.completed() > ticket; });
  for (uint32_t i = 0; i < kWrites; ++i) {
    if (!std::equal(rig.src().begin() + i * 1024, rig.src().begin() + i * 1024 + 512, job.dst.begin() + i * 1024)) {
      FAIL("write " << i << " not in place");
    }
  }
  for (uint32_t c = 0; c < 132; ++c) {
    CAPTURE(c);
    if (c == 77) {
      CHECK(rings[c]->visits.load() >= 1);
    } else {
      CHECK(rings[c]->visits.load() == 0);
    }
  }
  const ProxyStats stats = rig.proxy().stats();
  CHECK(stats.doorbells >= 1);
  CHECK(stats.ring_visits == rings[77]->visits.load());
  // The writes' completions were reaped in timed passes: their time counts
  // as busy, and the completion reads' part of it as progress.
  CHECK(stats.progress_ns > 0);
  CHECK(stats.progress_ns <= stats.busy_ns);
}

TEST_CASE("a single-producer post that gives up on a full ring abandons nothing: the ring stays usable") {
  Rig rig(FaultPlan{});
  Rig::Job& job = rig.add_job("timeouts");
  constexpr uint32_t kCapacity = 8;
  auto rings = rig.make_group(job, 2, kCapacity, ring::RingProducerKind::kDevice);
  ring::RingGroupHeader* group = rings[0]->group->header;
  // What device.cuh's post does, on the CPU: the channel's own tail, no atomic.
  ring::RingHeader* header = rings[1]->header;
  uint64_t tail = 0, cached_head = 0;
  auto try_post = [&](const ring::RingSlot& d) {
    if (!ring::ring_slot_free(header, kCapacity, tail, &cached_head)) return false;  // "timed out"
    // (A release store of seq stands for the GPU's fence and relaxed store:
    // the same order, in a form ThreadSanitizer follows.)
    ring::ring_publish(ring::ring_slots(header), kCapacity, tail, d);
    ring::ring_ring_doorbell_relaxed(&group->doorbell[1]);
    ++tail;
    return true;
  };
  auto write = [](uint32_t i) { return ring::make_write(1, dst_addr(i * 4096ull), dst_addr(i * 4096ull), 1000); };
  // Not served yet: the ring fills, and the next post gives up.
  for (uint32_t i = 0; i < kCapacity; ++i) REQUIRE(try_post(write(i)));
  CHECK_FALSE(try_post(write(kCapacity)));
  CHECK(tail == kCapacity);  // nothing claimed, nothing to abandon
  rig.serve(rings);
  rig.wait_for("room in the ring", [&] { return try_post(write(kCapacity)); });
  const uint64_t flush_ticket = tail;
  rig.wait_for("the flush to be posted", [&] { return try_post(ring::make_flush()); });
  rig.wait_for("the flush", [&] { return ring::ring_load_acquire(&header->completed) > flush_ticket; });
  for (uint32_t i = 0; i <= kCapacity; ++i) {
    CHECK(std::equal(rig.src().begin() + i * 4096, rig.src().begin() + i * 4096 + 1000, job.dst.begin() + i * 4096));
  }
  CHECK(rings[1]->rejected.load() == 0);
  CHECK(rings[0]->visits.load() == 0);
}

TEST_CASE("a doorbell seen before the slot it announces: the grace keeps the ring in view, the sweep finds it later") {
  // What device.cuh's post may look like from the CPU (ring.h,
  // kCapEarlyDoorbell): the doorbell lands, the proxy finds the ring empty,
  // and the slot lands after, with no second doorbell.
  enum class Catch { kGrace, kSweep, kNothing };
  for (const Catch catcher : {Catch::kGrace, Catch::kSweep, Catch::kNothing}) {
    CAPTURE(static_cast<int>(catcher));
    const bool grace = catcher == Catch::kGrace;
    ProxyOptions options = spinning();
    // A grace longer than any stall of a loaded test machine, or none; the
    // sweep (every 1 ms) is the fallback behind it; with neither, the slot
    // waits for the next doorbell.
    options.early_doorbell_grace_us = grace ? 60'000'000 : 0;
    options.early_doorbell_sweep_us = catcher == Catch::kSweep ? 1000 : 0;
    Rig rig(FaultPlan{}, options);
    Rig::Job& job = rig.add_job("early-doorbell");
    constexpr uint32_t kCapacity = 16;
    auto rings = rig.make_group(job, 2, kCapacity, ring::RingProducerKind::kDevice);
    rig.serve(rings);
    ring::RingGroupHeader* group = rings[0]->group->header;
    ring::RingSlot* slots = ring::ring_slots(rings[1]->header);
    ring::ring_ring_doorbell_relaxed(&group->doorbell[1]);
    rig.wait_for("the doorbell to be taken", [&] { return rig.proxy().stats().doorbells >= 1; });
    // Two whole passes after the one that took it: the ring was visited
    // empty, and without a grace it has been let go.
    rig.on_proxy([] {});
    rig.on_proxy([] {});
    bool active = false;
    rig.on_proxy([&] { active = rings[1]->active; });
    CHECK(rings[1]->visits.load() >= 1);
    CHECK(active == grace);
    ring::ring_publish(slots, kCapacity, 0, ring::make_write(1, dst_addr(0), dst_addr(0), 1000));
    if (catcher == Catch::kNothing) {
      for (int i = 0; i < 50; ++i) rig.on_proxy([] {});
      CHECK(rings[1]->consumed.load() == 0);
      ring::ring_ring_doorbell_relaxed(&group->doorbell[1]);
    }
    rig.wait_for("the write", [&] {
      return std::equal(rig.src().begin(), rig.src().begin() + 1000, job.dst.begin());
    });
    CHECK(rings[1]->consumed.load() == 1);
    CHECK(rings[1]->rejected.load() == 0);
    CHECK((rig.proxy().stats().swept >= 1) == (catcher == Catch::kSweep));
    CHECK(rig.proxy().stats().doorbells == (catcher == Catch::kNothing ? 2u : 1u));
  }
}

TEST_CASE("a ring whose doorbell was taken stays active until visited, even when its job's turn ends first") {
  // Every descriptor costs a whole quantum: the job posts one per turn, so a
  // turn that activated two rings reaches only one of them.
  ProxyOptions options = spinning();
  options.quantum_bytes = 4096;
  options.op_cost_bytes = 4096;
  Rig rig(FaultPlan{}, options);
  Rig::Job& job = rig.add_job("one-per-turn");
  auto rings = rig.make_group(job, 2, 16);
  rig.serve(rings);
  ring::RingGroupHeader* group = rings[0]->group->header;
  ring::RingProducer a(rings[0]->header, &group->doorbell[0]), b(rings[1]->header, &group->doorbell[1]);
  for (uint64_t round = 1; round <= 20; ++round) {
    CAPTURE(round);
    // Both rang before the proxy's next turn (both were drained before).
    const uint64_t at = round * 8192;
    rig.on_proxy([&] {
      REQUIRE(a.try_post(ring::make_write(1, dst_addr(at), dst_addr(at), 64)));
      REQUIRE(b.try_post(ring::make_write(1, dst_addr(at + 4096), dst_addr(at + 4096), 64)));
    });
    rig.wait_for("both rings' writes", [&] {
      return rings[0]->completed.load() == round && rings[1]->completed.load() == round;
    });
  }
}

TEST_CASE("a full transmit queue is offered one write per pass, not one per active ring; all go out once it drains") {
  // Ring ABI v2 regression: every active channel ring retried its write
  // against the full queue in every pass, so with many channels the proxy
  // spent its passes on refused writes and the descriptor rate fell by the
  // number of channels (0.47 -> 0.008 M/s from the GPU).
  Rig rig(FaultPlan{});
  Rig::Job& job = rig.add_job("full-queue");
  constexpr uint32_t kChannels = 64;
  constexpr uint64_t kPasses = 50;
  auto rings = rig.make_group(job, kChannels, 16);
  rig.serve(rings);
  ring::RingGroupHeader* group = rings[0]->group->header;
  uint64_t polls_before = 0;
  rig.on_proxy([&] {
    rig.gate().refuse(true);
    polls_before = rig.gate().polls();
  });
  for (uint32_t c = 0; c < kChannels; ++c) {
    ring::RingProducer producer(rings[c]->header, &group->doorbell[c]);
    REQUIRE(producer.post(ring::make_write(1, dst_addr(c * 8192ull), dst_addr(c * 8192ull), 4096), 10s));
  }
  // Let the proxy make kPasses passes against the full queue.
  rig.wait_for("the proxy's passes", [&] {
    uint64_t polls = 0;
    rig.on_proxy([&] { polls = rig.gate().polls(); });
    return polls >= polls_before + kPasses;
  });
  uint64_t refused = 0, polls = 0;
  rig.on_proxy([&] {
    refused = rig.gate().refused();
    polls = rig.gate().polls() - polls_before;
    rig.gate().refuse(false);
  });
  CAPTURE(polls);
  CHECK(refused >= 1);
  // Each pass polls the CQ at least once after its turns: at most one
  // refused write per pass (it was 64 a pass, one per active ring).
  CHECK(refused <= polls);
  rig.wait_for("every channel's write", [&] {
    return std::all_of(rings.begin(), rings.end(), [](const auto& r) { return r->completed.load() == 1; });
  });
  for (uint32_t c = 0; c < kChannels; ++c) {
    CAPTURE(c);
    CHECK(std::equal(rig.src().begin() + c * 8192, rig.src().begin() + c * 8192 + 4096, job.dst.begin() + c * 8192));
    CHECK(rings[c]->rejected.load() == 0);
  }
  CHECK(rig.proxy().stats().refused >= refused);  // and the provider's own, if any
}

TEST_CASE("a write+signal posted to a drained group ring is taken on its one doorbell, in one visit, and signalled") {
  Rig rig(FaultPlan{});
  Rig::Job& job = rig.add_job("one-doorbell");
  auto rings = rig.make_group(job, 4, 16);
  rig.serve(rings);
  ring::RingGroupHeader* group = rings[0]->group->header;
  ring::RingProducer producer(rings[2]->header, &group->doorbell[2]);
  for (uint64_t round = 1; round <= 20; ++round) {
    CAPTURE(round);
    bool active = true;
    ProxyStats before;
    rig.on_proxy([&] {
      active = rings[2]->active;
      before = rig.proxy().stats();
    });
    CHECK_FALSE(active);  // drained and off the active list: only its doorbell brings it back
    REQUIRE(producer.try_post(
        ring::make_write_signal(1, dst_addr(round * 64), dst_addr(round * 64), 64, ring::encode_signal(3, 1))));
    // No further producer activity: the one doorbell must be enough.
    rig.wait_for("the signal", [&] { return rig.signal(3) == round; });
    ProxyStats after;
    rig.on_proxy([&] { after = rig.proxy().stats(); });
    CHECK(after.doorbells - before.doorbells == 1);
    // One visit takes and posts it; a write the provider refused (the tcp
    // provider's first write to a peer, while it connects) costs one more.
    CHECK(after.ring_visits - before.ring_visits == 1 + (after.refused - before.refused));
  }
  CHECK(std::equal(rig.src().begin() + 64, rig.src().begin() + 21 * 64, job.dst.begin() + 64));
}
