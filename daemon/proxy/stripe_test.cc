// Several rails of one node, each with its proxy, relaying to each other
// (relayed_write.h): writes striped across the rails and moved off a rail
// that fails, against real tcp rails on loopback (each rail writes to its
// own endpoint, so the receiving proxy of a piece is the one that sent it)
// behind the fault injector. What must hold whatever the faults: every
// byte lands, and every signal moves by exactly its increment.
#include <doctest/doctest.h>
#include <rdma/fi_domain.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/fabric/fault_transport.h"
#include "daemon/fabric/memory_registration.h"
#include "daemon/fabric/rail_discovery.h"
#include "daemon/proxy/proxy.h"
#include "daemon/shm/shared_region.h"
#include "proto/ring/ring_host.h"

using namespace epx;
using namespace epx::daemon;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kSignals = 4;
constexpr uint64_t kWindowBytes = 4 << 20;

uint8_t pattern(uint64_t offset) { return static_cast<uint8_t>((offset * 131 + 7) >> 3); }

// A rail whose link can be taken down: while down, its writes are accepted
// but nothing comes back from its completion queue (local completions and
// incoming signals alike), as when a cable is pulled and tcp retransmits in
// vain; once up, everything held comes out. Proxy thread only, except
// set_down().
class LinkTransport final : public Transport {
 public:
  explicit LinkTransport(std::unique_ptr<Transport> inner) : inner_(std::move(inner)) {}
  void set_down(bool down) { down_.store(down, std::memory_order_relaxed); }

  Rail& rail() override { return inner_->rail(); }
  ssize_t write(const fi_msg_rma& msg, uint64_t flags) override { return inner_->write(msg, flags); }
  ssize_t read_completions(fi_cq_data_entry* entries, size_t count) override {
    if (down_.load(std::memory_order_relaxed)) {
      fi_cq_data_entry batch[16];
      const ssize_t n = inner_->read_completions(batch, 16);
      for (ssize_t i = 0; i < n; ++i) held_.push_back(batch[i]);
      return n == -FI_EAVAIL ? -FI_EAVAIL : -FI_EAGAIN;
    }
    if (!held_.empty()) {
      size_t n = 0;
      while (n < count && !held_.empty()) {
        entries[n++] = held_.front();
        held_.pop_front();
      }
      return static_cast<ssize_t>(n);
    }
    return inner_->read_completions(entries, count);
  }
  ssize_t read_error(fi_cq_err_entry* entry) override { return inner_->read_error(entry); }
  std::string error_text(const fi_cq_err_entry& entry) override { return inner_->error_text(entry); }

 private:
  const std::unique_ptr<Transport> inner_;
  std::atomic<bool> down_{false};
  std::deque<fi_cq_data_entry> held_;
};

// `n` rails on loopback with a proxy each, relaying to each other; one job
// of two ranks: rank 0 writes from its window (registered on every rail)
// into rank 1's window and signals (registered on every rail too).
class Node {
 public:
  // `ring_rails`: the ring's GPU's rails (RingBinding::rails); empty: all.
  Node(uint32_t n, FaultPlan plan, ProxyOptions options, std::vector<uint32_t> ring_rails = {}) {
    auto first = open_rails("tcp", {"lo"});
    REQUIRE_MESSAGE(first.ok(), first.status().to_string());
    rails_.push_back(std::move(first->front()));
    for (uint32_t i = 1; i < n; ++i) {
      auto rail = Rail::open(rails_[0]->info(), i);
      REQUIRE_MESSAGE(rail.ok(), rail.status().to_string());
      rails_.push_back(std::move(rail.value()));
    }
    auto signals = SignalSpace::create();
    REQUIRE(signals.ok());
    signals_ = std::move(signals.value());
    src_.resize(kWindowBytes);
    for (uint64_t i = 0; i < kWindowBytes; ++i) src_[i] = pattern(i);
    dst_.assign(kWindowBytes, 0);
    words_.assign(kSignals + 1, 0);
    std::vector<Proxy*> all;
    for (uint32_t i = 0; i < n; ++i) {
      plan.seed += 17;
      auto faults = std::make_unique<FaultTransport>(std::make_unique<RailTransport>(*rails_[i]), plan);
      faults_.push_back(faults.get());
      auto link = std::make_unique<LinkTransport>(std::move(faults));
      links_.push_back(link.get());
      proxies_.push_back(std::make_unique<Proxy>(std::move(link), *signals_, options));
      all.push_back(proxies_.back().get());
    }
    for (auto& p : proxies_) p->set_node_rails(all);
    for (auto& p : proxies_) REQUIRE(p->start().ok());

    auto view = std::make_shared<JobView>();
    view->generation = 1;
    view->job_id = "stripe-test";
    view->world = 2;
    view->ranks.resize(2);
    for (auto& r : view->ranks) {
      r.present = true;
      r.remote_rails = n;
      r.addrs.resize(n);
      for (uint32_t i = 0; i < n; ++i) r.paired_rail.push_back(i);
    }
    view->ranks[0].local_windows.resize(2);
    view->ranks[0].local_windows[1] = LocalWindow{src_.data(), src_.size(), {}};
    RankView& dst = view->ranks[1];
    dst.windows.resize(2);
    dst.windows[1].size = dst_.size();
    dst.signal_target.size = sizeof(uint64_t);
    mrs_.resize(n);
    const uint64_t scratch = kSignals * sizeof(uint64_t);  // the scratch word after the signals
    for (uint32_t i = 0; i < n; ++i) {
      REQUIRE(proxies_[i]
                  ->execute([&] {
                    fi_addr_t self = FI_ADDR_UNSPEC;
                    REQUIRE(fi_av_insert(rails_[i]->av(), rails_[i]->address().data(), 1, &self, 0, nullptr) == 1);
                    for (auto& r : view->ranks) r.addrs[i] = self;
                    mrs_[i].push_back(must(register_memory(*rails_[i], src_.data(), src_.size(), 1 + 10 * i)));
                    mrs_[i].push_back(must(register_memory(*rails_[i], dst_.data(), dst_.size(), 2 + 10 * i)));
                    mrs_[i].push_back(
                        must(register_memory(*rails_[i], words_.data(), words_.size() * sizeof(uint64_t), 3 + 10 * i)));
                  })
                  .ok());
      const bool virt = (rails_[i]->mr_mode() & FI_MR_VIRT_ADDR) != 0;
      view->ranks[0].local_windows[1].descs.push_back(fi_mr_desc(mrs_[i][0].get()));
      dst.windows[1].rails.push_back({fi_mr_key(mrs_[i][1].get()), virt ? reinterpret_cast<uint64_t>(dst_.data()) : 0});
      dst.signal_target.rails.push_back(
          {fi_mr_key(mrs_[i][2].get()), (virt ? reinterpret_cast<uint64_t>(words_.data()) : 0) + scratch});
    }
    auto base = signals_->allocate(words_.data(), kSignals);
    REQUIRE(base.ok());
    dst.signal_base = *base;
    dst.signal_count = kSignals;
    cell_ = std::make_shared<JobViewCell>(view);

    auto region = SharedRegion::create("epx-stripe-test-ring", ring::ring_bytes(kRingCapacity));
    REQUIRE(region.ok());
    ring_ = std::make_shared<RingBinding>();
    ring_->id = 1;
    ring_->region = std::shared_ptr<SharedRegion>(std::move(region.value()));
    REQUIRE(ring::ring_init(ring_->region->data(), kRingCapacity));
    ring_->views = cell_;
    ring_->header = ring::ring_header(ring_->region->data());
    ring_->slots = ring::ring_slots(ring_->header);
    ring_->capacity = kRingCapacity;
    ring_->rails = std::move(ring_rails);
    REQUIRE(proxies_[0]->add_ring(ring_).ok());
  }

  ~Node() {
    for (auto* l : links_) l->set_down(false);
    CHECK(proxies_[0]->remove_ring(ring_, 5000ms).ok());
    for (auto& p : proxies_) p->stop();
    proxies_.clear();  // before the registrations close
  }

  void post(const ring::RingSlot& d) {
    ring::RingProducer producer(ring_->region->data());
    REQUIRE(producer.post(d, 10s));
  }
  uint64_t signal(uint32_t i) const { return __atomic_load_n(&words_[i], __ATOMIC_ACQUIRE); }
  template <typename Pred>
  void wait_for(const char* what, Pred done, std::chrono::seconds limit = 60s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= end) {
        std::string state;
        for (uint32_t s = 0; s < kSignals; ++s) {
          state += " signal " + std::to_string(s) + " " + std::to_string(signal(s)) + "/" + std::to_string(expected[s]);
        }
        state += "; ring consumed " + std::to_string(ring_->consumed.load()) + " completed " +
                 std::to_string(ring_->completed.load()) + " rejected " + std::to_string(ring_->rejected.load());
        for (auto& p : proxies_) {
          state += "; rail " + std::to_string(p->rail().index()) + " " + rail_state_name(p->health().state()) +
                   " ops " + std::to_string(p->stats().fabric_ops);
        }
        FAIL("timed out waiting for " << what << ":" << state);
      }
      std::this_thread::sleep_for(200us);
    }
  }
  Proxy& proxy(uint32_t i) { return *proxies_[i]; }
  uint64_t expected[kSignals] = {};  // what each signal word must read once the writes posted so far landed
  LinkTransport& link(uint32_t i) { return *links_[i]; }
  const FaultStats& faults(uint32_t i) const { return faults_[i]->stats(); }
  RingBinding& ring() { return *ring_; }
  std::vector<uint8_t>& dst() { return dst_; }
  const std::vector<uint8_t>& src() const { return src_; }

 private:
  static constexpr uint32_t kRingCapacity = 4096;
  static MrPtr must(Result<MrPtr> mr) {
    REQUIRE_MESSAGE(mr.ok(), mr.status().to_string());
    return std::move(mr.value());
  }

  std::vector<std::unique_ptr<Rail>> rails_;
  std::unique_ptr<SignalSpace> signals_;
  std::vector<uint8_t> src_, dst_;
  std::vector<uint64_t> words_;
  std::vector<std::vector<MrPtr>> mrs_;  // per rail: src, dst, words
  std::vector<FaultTransport*> faults_;
  std::vector<LinkTransport*> links_;
  std::shared_ptr<JobViewCell> cell_;
  std::shared_ptr<RingBinding> ring_;
  std::vector<std::unique_ptr<Proxy>> proxies_;  // stopped first (destroyed before the registrations)
};

uint64_t dst_addr(uint64_t offset) { return ring::pack_address(1, offset); }

// Rounds of writes of `length` bytes covering the window once each, every
// write signalling word i % kSignals; after each round (all its signals in)
// the window must equal the source, and is cleared for the next. `between`
// runs after each round's posts.
template <typename Between>
void rounds(Node& node, uint32_t count, uint32_t length, Between between) {
  const uint32_t per_round = static_cast<uint32_t>(kWindowBytes / length);
  uint64_t* expected = node.expected;
  for (uint32_t done = 0, round = 0; done < count; ++round) {
    const uint32_t n = std::min(per_round, count - done);
    for (uint32_t i = 0; i < n; ++i) {
      const uint64_t off = uint64_t{i} * length;
      node.post(ring::make_write_signal(1, dst_addr(off), dst_addr(off), length,
                                        ring::encode_signal((done + i) % kSignals, 1)));
      ++expected[(done + i) % kSignals];
    }
    between(round);
    node.wait_for("the round's signals", [&] {
      for (uint32_t s = 0; s < kSignals; ++s) {
        if (node.signal(s) < expected[s]) return false;
      }
      return true;
    });
    for (uint32_t s = 0; s < kSignals; ++s) REQUIRE(node.signal(s) == expected[s]);
    REQUIRE(std::memcmp(node.dst().data(), node.src().data(), uint64_t{n} * length) == 0);
    std::memset(node.dst().data(), 0, kWindowBytes);
    done += n;
  }
  // No signal counted twice later, either (late duplicates would land now).
  std::this_thread::sleep_for(100ms);
  for (uint32_t s = 0; s < kSignals; ++s) CHECK(node.signal(s) == expected[s]);
}

ProxyOptions striping(uint64_t min_bytes, uint64_t min_piece) {
  ProxyOptions o;
  o.idle_sleep_us = 20;
  o.spin_us = 200;
  o.stripe_min_bytes = min_bytes;
  o.stripe_min_piece = min_piece;
  o.health.stall = 300ms;
  o.health.cooldown = 300ms;
  return o;
}

}  // namespace

TEST_CASE("a large write is striped over all four rails and signalled once, after every piece landed") {
  // No faults here: a rail must not be judged stalled because a loaded
  // machine (CI runs tests side by side on two cores) left its proxy
  // unscheduled for 300 ms, or its pieces move and the shares below skew.
  ProxyOptions options = striping(256 << 10, 64 << 10);
  options.health.stall = std::chrono::seconds(10);
  Node node(4, FaultPlan{}, options);
  rounds(node, 64, 1 << 20, [](uint32_t) {});
  for (uint32_t r = 0; r < 4; ++r) {
    // Every rail carried about a quarter of the 64 MiB.
    const uint64_t bytes = node.proxy(r).stats().posted_bytes;
    CHECK_MESSAGE(bytes >= (12u << 20), "rail " << r << " posted " << bytes << " bytes");
  }
  CHECK(node.proxy(0).stats().striped_writes == 64);  // every write of the ring's rail, counted there
  CHECK(node.ring().completed.load() == node.ring().consumed.load());
  CHECK(node.ring().rejected.load() == 0);
}

TEST_CASE("10^5 striped writes through reordered, delayed and failed completions on every rail: signals exact") {
  FaultPlan plan;
  plan.seed = 11;
  plan.eagain_per_mille = 20;
  plan.fail_write_per_mille = 5;
  plan.fail_completion_per_mille = 5;
  plan.hold_count = 16;
  plan.hold_us = 300;
  plan.reorder = true;
  Node node(4, plan, striping(8 << 10, 2 << 10));
  // 10^5; fewer under ThreadSanitizer (EPX_STRIPE_WRITES), which is ~20x slower.
  const char* env = std::getenv("EPX_STRIPE_WRITES");
  const uint32_t writes = env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : 100000;
  rounds(node, writes, 8 << 10, [](uint32_t) {});
  uint64_t failed_writes = 0, failed_completions = 0, reordered = 0;
  for (uint32_t r = 0; r < 4; ++r) {
    failed_writes += node.faults(r).failed_writes.load();
    failed_completions += node.faults(r).failed_completions.load();
    reordered += node.faults(r).reordered.load();
  }
  CHECK(failed_writes > 0);
  CHECK(failed_completions > 0);
  CHECK(reordered > 0);
  // The only errors a ring may see: a signal write whose completion failed
  // (it is not sent again; here it had landed, and counted once).
  CHECK(node.ring().rejected.load() <= failed_completions);
  CHECK(node.ring().completed.load() == node.ring().consumed.load());
}

TEST_CASE("a rail whose link goes down mid-stream: its writes move to the others, nothing lost, signals exact") {
  Node node(4, FaultPlan{}, striping(256 << 10, 64 << 10));
  for (int cycle = 0; cycle < 3; ++cycle) {
    const uint64_t before = node.proxy(2).health().report().changes;
    rounds(node, 32, 1 << 20, [&](uint32_t round) {
      if (round == 0) node.link(2).set_down(true);
    });
    // The stream completed with rail 2 down (its stalled pieces were sent
    // again on the others), and rail 2 was found unhealthy.
    CHECK(node.proxy(2).health().report().changes == before + 1);
    CHECK(node.proxy(2).health().state() == RailState::kUnhealthy);
    CHECK(node.proxy(2).stats().failover_writes + node.proxy(0).stats().failover_writes > 0);
    node.link(2).set_down(false);
    node.wait_for("rail 2 to be healthy again after its link came back", [&] {
      rounds(node, 8, 1 << 20, [](uint32_t) {});
      return node.proxy(2).health().state() == RailState::kHealthy;
    });
    const uint64_t used = node.proxy(2).stats().posted_bytes;
    rounds(node, 16, 1 << 20, [](uint32_t) {});
    CHECK_MESSAGE(node.proxy(2).stats().posted_bytes > used, "rail 2 is used again once healthy");
  }
  CHECK(node.ring().rejected.load() == 0);
  CHECK(node.ring().completed.load() == node.ring().consumed.load());
}

TEST_CASE("a ring's large writes are striped over its GPU's rails only") {
  Node node(4, FaultPlan{}, striping(256 << 10, 64 << 10), {0, 2});
  rounds(node, 32, 1 << 20, [](uint32_t) {});
  CHECK(node.proxy(0).stats().posted_bytes >= (12u << 20));
  CHECK(node.proxy(2).stats().posted_bytes >= (12u << 20));
  // Rails 1 and 3 carry only what arrives there: nothing of this ring's.
  CHECK(node.proxy(1).stats().posted_bytes == 0);
  CHECK(node.proxy(3).stats().posted_bytes == 0);
  CHECK(node.ring().rejected.load() == 0);
}

TEST_CASE("a link reported down makes its rail unhealthy at once, and up retries it without the cool-down") {
  ProxyOptions o = striping(256 << 10, 64 << 10);
  o.health.cooldown = 3600s;  // only the link can bring it back within the test
  Node node(4, FaultPlan{}, o);
  node.proxy(2).set_link(false, "net/test2 reports the link down");
  node.wait_for("rail 2 to be unhealthy", [&] { return node.proxy(2).health().state() == RailState::kUnhealthy; });
  CHECK(node.proxy(2).health().report().why.find("link down: net/test2") != std::string::npos);
  const uint64_t idle = node.proxy(2).stats().posted_bytes;
  rounds(node, 16, 1 << 20, [](uint32_t) {});
  CHECK_MESSAGE(node.proxy(2).stats().posted_bytes == idle, "nothing is striped onto a rail whose link is down");
  node.proxy(2).set_link(true, "net/test2 reports the link up");
  node.wait_for("rail 2 to take work again", [&] { return node.proxy(2).health().usable(); });
  node.wait_for("rail 2 to be healthy after a write completed on it", [&] {
    rounds(node, 8, 1 << 20, [](uint32_t) {});
    return node.proxy(2).health().state() == RailState::kHealthy;
  });
  CHECK(node.proxy(2).stats().posted_bytes > idle);
  CHECK(node.ring().rejected.load() == 0);
}

TEST_CASE("small writes leave a rail with a queue for a quieter rail of the ring's GPU; without a queue they stay") {
  SUBCASE("spreading on: a burst of 32 KiB writes reaches the GPU's other rail, not the others") {
    ProxyOptions o = striping(0, 64 << 10);
    o.spread_bytes = 64 << 10;
    Node node(4, FaultPlan{}, o, {0, 1});
    rounds(node, 4 * 128, 32 << 10, [](uint32_t) {});
    CHECK(node.proxy(1).stats().posted_bytes > 0);
    CHECK(node.proxy(0).stats().spread_writes > 0);
    CHECK(node.proxy(0).stats().striped_writes == 0);
    CHECK(node.proxy(2).stats().posted_bytes == 0);
    CHECK(node.proxy(3).stats().posted_bytes == 0);
    CHECK(node.ring().rejected.load() == 0);
    CHECK(node.ring().completed.load() == node.ring().consumed.load());
  }
  SUBCASE("spreading off: every write on the ring's rail") {
    Node node(4, FaultPlan{}, striping(0, 64 << 10), {0, 1});
    rounds(node, 4 * 128, 32 << 10, [](uint32_t) {});
    CHECK(node.proxy(0).stats().posted_bytes == uint64_t{4 * 128} * (32 << 10));
    CHECK(node.proxy(1).stats().posted_bytes == 0);
  }
  SUBCASE("one write at a time never queues: it stays on the ring's rail") {
    ProxyOptions o = striping(0, 64 << 10);
    o.spread_bytes = 64 << 10;
    Node node(4, FaultPlan{}, o, {0, 1});
    for (int i = 0; i < 64; ++i) rounds(node, 1, 4 << 10, [](uint32_t) {});
    CHECK(node.proxy(0).stats().posted_bytes == uint64_t{64} * (4 << 10));
    CHECK(node.proxy(1).stats().posted_bytes == 0);
    CHECK(node.proxy(0).load_bytes() == 0);  // every completion took its bytes off again
  }
}
