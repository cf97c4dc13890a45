// The proxy against a real rail (tcp provider on loopback, writing to its
// own endpoint) behind the fault-injecting transport: EAGAIN bursts, failed
// writes, failed completions, completions held back and reordered. Built
// twice: plainly, and with ThreadSanitizer over the proxy serving a ring that
// several producer threads feed at once (//daemon:proxy_tsan_test).
#include "daemon/proxy/proxy.h"

#include <doctest/doctest.h>
#include <rdma/fi_domain.h>

#include <chrono>
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

// One rail, one proxy, and a 2-rank job whose both ranks live behind this
// very endpoint: rank 0 writes from its window 1 into rank 1's window 1 and
// bumps rank 1's signals.
class Loopback {
 public:
  explicit Loopback(FaultPlan plan, uint32_t ring_capacity = 1024) {
    auto rails = open_rails("tcp", {"lo"});
    REQUIRE_MESSAGE(rails.ok(), rails.status().to_string());
    rail_ = std::move(rails->front());
    auto signals = SignalSpace::create();
    REQUIRE(signals.ok());
    signals_ = std::move(signals.value());
    src_.resize(kWindowBytes);
    dst_.assign(kWindowBytes, 0);
    words_.assign(kSignals + 1, 0);
    for (uint64_t i = 0; i < kWindowBytes; ++i) src_[i] = pattern(i);
    auto faults = std::make_unique<FaultTransport>(std::make_unique<RailTransport>(*rail_), plan);
    faults_ = faults.get();
    ProxyOptions options;
    options.idle_sleep_us = 0;
    proxy_ = std::make_unique<Proxy>(std::move(faults), *signals_, options);
    REQUIRE(proxy_->start().ok());

    fi_addr_t self = FI_ADDR_UNSPEC;
    REQUIRE(proxy_->execute([&] {
      REQUIRE(fi_av_insert(rail_->av(), rail_->address().data(), 1, &self, 0, nullptr) == 1);
      src_mr_ = register_or_fail(src_.data(), src_.size(), 1);
      dst_mr_ = register_or_fail(dst_.data(), dst_.size(), 2);
      words_mr_ = register_or_fail(words_.data(), words_.size() * sizeof(uint64_t), 3);
    }).ok());
    auto base = signals_->allocate(words_.data(), kSignals);
    REQUIRE(base.ok());
    signal_base_ = *base;

    const bool virt = (rail_->mr_mode() & FI_MR_VIRT_ADDR) != 0;
    auto remote = [&](void* p, fid_mr* mr) { return RemoteRail{fi_mr_key(mr), virt ? reinterpret_cast<uint64_t>(p) : 0}; };
    auto view = std::make_shared<JobView>();
    view->generation = 1;
    view->job_id = "proxy-test";
    view->world = 2;
    view->ranks.resize(2);
    for (auto& r : view->ranks) {
      r.present = true;
      r.addrs = {self};
      r.remote_rails = 1;
    }
    view->ranks[0].local_windows.resize(2);
    view->ranks[0].local_windows[1] = LocalWindow{src_.data(), src_.size(), {fi_mr_desc(src_mr_.get())}};
    RankView& dst = view->ranks[1];
    dst.windows.resize(2);
    dst.windows[1] = RemoteWindow{dst_.size(), {remote(dst_.data(), dst_mr_.get())}};
    dst.signal_base = signal_base_;
    dst.signal_count = kSignals;
    RemoteRail target = remote(words_.data(), words_mr_.get());
    target.base += kSignals * sizeof(uint64_t);  // the scratch word after the signals
    dst.signal_target = RemoteWindow{sizeof(uint64_t), {target}};

    auto region = SharedRegion::create("epx-proxy-test-ring", ring::ring_bytes(ring_capacity));
    REQUIRE(region.ok());
    ring_ = std::make_shared<RingBinding>();
    ring_->id = 1;
    ring_->region = std::shared_ptr<SharedRegion>(std::move(region.value()));
    REQUIRE(ring::ring_init(ring_->region->data(), ring_capacity));
    ring_->views = std::make_shared<JobViewCell>(view);
    ring_->header = ring::ring_header(ring_->region->data());
    ring_->slots = ring::ring_slots(ring_->header);
    ring_->capacity = ring_capacity;
    REQUIRE(proxy_->add_ring(ring_).ok());
  }

  ~Loopback() {
    CHECK(proxy_->remove_ring(ring_, 5000ms).ok());
    proxy_.reset();  // stops the thread; the registrations close after it
  }

  void* ring_memory() { return ring_->region->data(); }
  RingBinding& ring() { return *ring_; }
  const FaultStats& faults() const { return faults_->stats(); }
  const std::vector<uint8_t>& src() const { return src_; }
  const std::vector<uint8_t>& dst() const { return dst_; }
  uint64_t signal(uint32_t i) const { return __atomic_load_n(&words_[i], __ATOMIC_ACQUIRE); }
  uint64_t fences_done() const { return ring::ring_load_acquire(&ring_->header->fences_done); }

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

  std::unique_ptr<Rail> rail_;
  std::unique_ptr<SignalSpace> signals_;
  std::vector<uint8_t> src_, dst_;
  std::vector<uint64_t> words_;
  MrPtr src_mr_, dst_mr_, words_mr_;
  uint32_t signal_base_ = 0;
  FaultTransport* faults_ = nullptr;
  std::shared_ptr<RingBinding> ring_;
  std::unique_ptr<Proxy> proxy_;  // last: stopped first
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
    const ring::RingSlot d =
        (i % 3 == 0) ? ring::make_write(1, dst_addr(offset), dst_addr(offset), length)
                     : ring::make_write_signal(1, dst_addr(offset), dst_addr(offset), length,
                                               ring::encode_signal(id % kSignals, 1));
    REQUIRE(producer.post(d, 10s));
  });
}

// Posts a flush and waits until the proxy completed it.
void flush(Loopback& lb, const char* what) {
  ring::RingProducer tail(lb.ring_memory());
  REQUIRE(tail.post(ring::make_flush(), 10s));
  lb.wait_for(what, [&] { return lb.fences_done() >= 1; });
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
    CHECK_MESSAGE((e.find("fi_writemsg") != std::string::npos || e.find("injected completion failure") != std::string::npos), e);
  }
  // Nothing is lost from the accounting: every descriptor completed (some
  // as failures), so flushes cannot wait for them forever.
  CHECK(lb.ring().completed.load() == lb.ring().consumed.load());
  CHECK(lb.ring().consumed.load() == kCount + 1);
}

TEST_CASE("a signal fence waits for every earlier write even when their completions come late and out of order") {
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
    REQUIRE(producer.post(ring::make_write(1, dst_addr(2ull * i * kLength), dst_addr(2ull * i * kLength), kLength), 10s));
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
