// Many producer threads, one consumer thread, a small ring: no descriptor is
// lost, duplicated, torn, or reordered within its producer. Built twice: as
// ring_concurrency_test and as ring_concurrency_tsan_test (ThreadSanitizer),
// where any unordered access to the shared region is reported as a race.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "proto/ring/ring.h"
#include "proto/ring/ring_host.h"

namespace epx::ring {
namespace {

constexpr uint32_t kCapacity = 64;
constexpr int kProducers = 8;
#if defined(__SANITIZE_THREAD__)
constexpr uint64_t kPerProducer = 20000;  // TSAN is slower; still 2500 laps of the ring
#else
constexpr uint64_t kPerProducer = 50000;
#endif
// Give up (and fail) if the consumer sees no progress for this long; the
// producers then stop too, so a broken protocol fails instead of hanging.
constexpr auto kStallLimit = std::chrono::seconds(20);

struct Region {
  explicit Region(uint32_t capacity) : size(ring_bytes(capacity)) {
    mem = std::aligned_alloc(4096, (size + 4095) / 4096 * 4096);
    REQUIRE(mem != nullptr);
  }
  ~Region() { std::free(mem); }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  void* mem;
  size_t size;
};

// Descriptor `seq` of producer `id`: every field is a function of (id, seq),
// so the consumer can check each copy for tearing as well as for order.
RingSlot descriptor(uint16_t id, uint64_t seq) {
  return make_write_signal(/*dst_rank=*/static_cast<uint16_t>(id * 1000 + seq % 1000),
                           /*src=*/pack_address(id, seq),
                           /*dst=*/pack_address(static_cast<uint16_t>(~id), seq * 3 + 1),
                           /*length=*/static_cast<uint32_t>(seq * 2654435761u),
                           /*signal=*/encode_signal(static_cast<uint32_t>(seq) & kMaxSignalIndex, 1 + id));
}

struct ConsumerResult {
  uint64_t consumed = 0;
  uint64_t out_of_order = 0;  // duplicated, skipped or reordered within a producer
  uint64_t bad_producer = 0;
  uint64_t torn = 0;          // fields that do not match (id, seq)
  uint64_t invalid = 0;       // ring_check_slot failed
  bool stalled = false;
  std::vector<uint64_t> next;  // per producer: next expected seq (= count seen)
};

// Drains `expected` descriptors, checking each; batch sizes vary from 1 to
// 2 * capacity so head is published at many different granularities.
ConsumerResult consume(void* mem, uint64_t expected, std::atomic<bool>* stop) {
  ConsumerResult r;
  r.next.assign(kProducers, 0);
  RingConsumer consumer(mem);
  auto check = [&](const RingSlot& d) {
    ++r.consumed;
    const uint16_t id = address_window(d.src);
    const uint64_t seq = address_offset(d.src);
    if (id >= kProducers) {
      ++r.bad_producer;
      return;
    }
    if (ring_check_slot(d) != RingError::kNone) ++r.invalid;
    const RingSlot want = descriptor(id, seq);
    if (d.op != want.op || d.flags != want.flags || d.dst_rank != want.dst_rank || d.length != want.length ||
        d.signal != want.signal || d.dst != want.dst) {
      ++r.torn;
    }
    if (seq != r.next[id]) ++r.out_of_order;
    r.next[id] = seq + 1;
  };
  auto last_progress = std::chrono::steady_clock::now();
  size_t batch = 1;
  while (r.consumed < expected) {
    if (consumer.poll(check, batch) > 0) {
      last_progress = std::chrono::steady_clock::now();
      batch = batch % (2 * kCapacity) + 1;
    } else if (std::chrono::steady_clock::now() - last_progress > kStallLimit) {
      r.stalled = true;
      stop->store(true);
      break;
    } else {
      std::this_thread::yield();  // 2 cores, 9 threads: let producers run
    }
  }
  return r;
}

void check_result(const ConsumerResult& r, const void* mem, uint64_t expected) {
  CHECK_FALSE(r.stalled);
  CHECK(r.consumed == expected);
  CHECK(r.out_of_order == 0);
  CHECK(r.bad_producer == 0);
  CHECK(r.torn == 0);
  CHECK(r.invalid == 0);
  for (int id = 0; id < kProducers; ++id) {
    CAPTURE(id);
    CHECK(r.next[id] == kPerProducer);  // nothing lost at the end either
  }
  CHECK(ring_header(mem)->head == expected);
  CHECK(ring_header(mem)->error == 0);
}

TEST_CASE("host producers (compare-exchange claims) and one consumer: nothing lost, duplicated or reordered") {
  Region region(kCapacity);
  REQUIRE(ring_init(region.mem, kCapacity, RingProducerKind::kHost));
  REQUIRE(ring_check(region.mem, region.size) == RingCheck::kOk);
  const uint64_t expected = kProducers * kPerProducer;

  std::atomic<uint64_t> post_timeouts{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> producers;
  for (int id = 0; id < kProducers; ++id) {
    producers.emplace_back([&, id] {
      RingProducer producer(region.mem);
      for (uint64_t seq = 0; seq < kPerProducer; ++seq) {
        const RingSlot d = descriptor(static_cast<uint16_t>(id), seq);
        if (id % 2 == 0) {
          // Even producers: the non-blocking call in a retry loop.
          while (!producer.try_post(d)) {
            if (stop.load()) return;
            std::this_thread::yield();
          }
        } else {
          // Odd producers: the blocking call with a timeout.
          while (!producer.post(d, std::chrono::seconds(1))) {
            post_timeouts.fetch_add(1);
            if (stop.load()) return;
          }
        }
      }
    });
  }
  ConsumerResult result;
  std::thread consumer([&] { result = consume(region.mem, expected, &stop); });
  for (auto& t : producers) t.join();
  consumer.join();

  check_result(result, region.mem, expected);
  CHECK(ring_header(region.mem)->claim == expected);
  // A 1 s timeout can expire on an overloaded machine; that is not an error
  // (the producer retries), but it is worth seeing.
  if (post_timeouts.load() != 0) MESSAGE("post() timed out " << post_timeouts.load() << " times");
}

TEST_CASE("single-producer rings of a group (device style), one consumer that follows the doorbell") {
  // What kernels do (device.cuh), run by CPU threads: each channel owns one
  // ring of the group and keeps its tail privately (no atomic), publishes
  // each slot, then rings its doorbell byte. The consumer visits only rings
  // whose doorbell it took, draining each, and must still get everything.
  const uint32_t channels = kProducers;
  const size_t bytes = group_bytes(channels, kCapacity);
  void* mem = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  REQUIRE(mem != nullptr);
  REQUIRE(group_init(mem, channels, kCapacity, RingProducerKind::kDevice));
  REQUIRE(group_check(mem, bytes) == RingCheck::kOk);
  RingGroupHeader* group = group_header(mem);
  std::atomic<bool> stop{false};

  std::vector<std::thread> producers;
  for (uint32_t id = 0; id < channels; ++id) {
    producers.emplace_back([&, id] {
      RingHeader* header = ring_header(group_ring(mem, id, kCapacity));
      RingSlot* slots = ring_slots(header);
      uint64_t tail = 0, cached_head = 0;  // the channel's own state
      for (uint64_t seq = 0; seq < kPerProducer; ++seq) {
        for (int spins = 0; !ring_slot_free(header, kCapacity, tail, &cached_head); ++spins) {
          if (spins < 64) {
            ring_pause();
          } else {
            if (stop.load()) return;
            std::this_thread::yield();
          }
        }
        ring_publish(slots, kCapacity, tail, descriptor(static_cast<uint16_t>(id), seq));
        ++tail;
        ring_ring_doorbell(&group->doorbell[id]);
      }
    });
  }
  std::vector<uint64_t> next(channels, 0);
  uint64_t consumed = 0, out_of_order = 0, torn = 0, wrong_ring = 0;
  bool stalled = false;
  std::thread consumer([&] {
    std::vector<RingConsumer> rings;
    for (uint32_t c = 0; c < channels; ++c) rings.emplace_back(group_ring(mem, c, kCapacity));
    auto last_progress = std::chrono::steady_clock::now();
    const uint64_t expected = uint64_t{channels} * kPerProducer;
    while (consumed < expected) {
      size_t n = 0;
      take_doorbells(group, channels, [&](uint32_t c) {
        n += rings[c].poll(
            [&](const RingSlot& d) {
              ++consumed;
              const uint16_t id = address_window(d.src);
              const uint64_t seq = address_offset(d.src);
              if (id != c) {
                ++wrong_ring;
                return;
              }
              const RingSlot want = descriptor(id, seq);
              if (d.op != want.op || d.dst_rank != want.dst_rank || d.length != want.length ||
                  d.signal != want.signal || d.dst != want.dst) {
                ++torn;
              }
              if (seq != next[c]) ++out_of_order;
              next[c] = seq + 1;
            },
            2 * kCapacity);  // drains what the doorbell announced (and more)
      });
      if (n > 0) {
        last_progress = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - last_progress > kStallLimit) {
        stalled = true;  // a lost doorbell would end here
        stop.store(true);
        break;
      } else {
        std::this_thread::yield();
      }
    }
  });
  for (auto& t : producers) t.join();
  consumer.join();
  CHECK_FALSE(stalled);
  CHECK(consumed == uint64_t{channels} * kPerProducer);
  CHECK(out_of_order == 0);
  CHECK(torn == 0);
  CHECK(wrong_ring == 0);
  for (uint32_t c = 0; c < channels; ++c) {
    CHECK(next[c] == kPerProducer);
    CHECK(ring_header(group_ring(mem, c, kCapacity))->claim == 0);  // device rings leave it alone
  }
  std::free(mem);
}

TEST_CASE("errors reported from several threads: exactly one wins, all are counted") {
  Region region(kCapacity);
  REQUIRE(ring_init(region.mem, kCapacity));
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1000;
  std::atomic<int> winners{0};
  std::vector<std::thread> threads;
  for (int id = 0; id < kThreads; ++id) {
    threads.emplace_back([&, id] {
      RingConsumer reporter(region.mem);  // report_error is safe from any thread
      for (int i = 0; i < kPerThread; ++i) {
        if (reporter.report_error(RingError::kTransport, static_cast<uint64_t>(id) * kPerThread + i)) {
          winners.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(winners.load() == 1);
  const uint64_t e = ring_header(region.mem)->error;
  CHECK(error_code(e) == RingError::kTransport);
  CHECK(error_position(e) % kPerThread == 0);  // the first report of some thread
  CHECK(ring_header(region.mem)->error_count == kThreads * kPerThread);
}

}  // namespace
}  // namespace epx::ring
