// Single-threaded tests of the ring ABI (ring.h) and its host helpers
// (ring_host.h): layout, encodings, region validation, wrap-around, a full
// ring, and the error word. Concurrency is in ring_concurrency_test.cc.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "proto/ring/ring.h"
#include "proto/ring/ring_host.h"

namespace epx::ring {
namespace {

// A zero-filled, page-aligned buffer of `size` bytes (rounded up to a page
// for aligned_alloc, which wants a multiple of the alignment).
struct Region {
  explicit Region(size_t size) : size(size) {
    const size_t rounded = (size + 4095) / 4096 * 4096;
    mem = std::aligned_alloc(4096, rounded);
    REQUIRE(mem != nullptr);
    std::memset(mem, 0, rounded);
  }
  ~Region() { std::free(mem); }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  RingHeader* header() { return ring_header(mem); }
  RingSlot* slots() { return ring_slots(header()); }

  void* mem;
  size_t size;
};

// A descriptor whose every field is derived from `i`, so a reader can tell a
// complete, correct copy from a torn or stale one.
RingSlot descriptor_for(uint64_t i) {
  return make_write_signal(static_cast<uint16_t>(i * 7), pack_address(static_cast<uint16_t>(i), i * 3),
                           pack_address(static_cast<uint16_t>(i + 1), i * 5), static_cast<uint32_t>(i * 11),
                           encode_signal(static_cast<uint32_t>(i) & kMaxSignalIndex, static_cast<uint32_t>(1 + i % kMaxSignalIncrement)));
}

bool same_fields(const RingSlot& a, const RingSlot& b) {
  return a.op == b.op && a.flags == b.flags && a.dst_rank == b.dst_rank && a.length == b.length &&
         a.signal == b.signal && a.src == b.src && a.dst == b.dst;
}

TEST_CASE("layout: slot is 64 bytes, header is one page, hot fields on their own cache lines") {
  CHECK(sizeof(RingSlot) == 64);
  CHECK(alignof(RingSlot) == 8);
  CHECK(offsetof(RingSlot, seq) == 0);
  CHECK(offsetof(RingSlot, op) == 4);
  CHECK(offsetof(RingSlot, flags) == 5);
  CHECK(offsetof(RingSlot, dst_rank) == 6);
  CHECK(offsetof(RingSlot, length) == 8);
  CHECK(offsetof(RingSlot, signal) == 12);
  CHECK(offsetof(RingSlot, src) == 16);
  CHECK(offsetof(RingSlot, dst) == 24);
  CHECK(offsetof(RingSlot, count) == 32);
  CHECK(offsetof(RingSlot, reserved0) == 36);
  CHECK(offsetof(RingSlot, src_stride) == 40);
  CHECK(offsetof(RingSlot, dst_stride) == 48);
  CHECK(offsetof(RingSlot, reserved1) == 56);

  CHECK(sizeof(RingHeader) == 4096);
  CHECK(offsetof(RingHeader, claim) % 64 == 0);
  CHECK(offsetof(RingHeader, head) % 64 == 0);
  CHECK(offsetof(RingHeader, error) % 64 == 0);
  CHECK(offsetof(RingHeader, completed) % 64 == 0);
  CHECK(offsetof(RingHeader, error) / 64 != offsetof(RingHeader, completed) / 64);
  CHECK(offsetof(RingHeader, capabilities) == 24);
  CHECK(offsetof(RingHeader, channel) == 28);
  CHECK(sizeof(RingGroupHeader) == 4096);
  CHECK(offsetof(RingGroupHeader, doorbell) == 2048);
  CHECK(kMaxGroupChannels >= 132 + 64);  // one ring per SM of an H100/H200, plus host rings
  CHECK(offsetof(RingHeader, claim) / 64 != offsetof(RingHeader, head) / 64);
  CHECK(offsetof(RingHeader, head) / 64 != offsetof(RingHeader, error) / 64);
  CHECK(offsetof(RingHeader, capacity) / 64 != offsetof(RingHeader, claim) / 64);

  // The magics are the ASCII bytes "EPXRING2" / "EPXGRUP2" in memory order.
  char bytes[8];
  std::memcpy(bytes, &kRingMagic, sizeof(bytes));
  CHECK(std::memcmp(bytes, "EPXRING2", 8) == 0);
  std::memcpy(bytes, &kGroupMagic, sizeof(bytes));
  CHECK(std::memcmp(bytes, "EPXGRUP2", 8) == 0);
  CHECK(kRingVersion == 2);

  Region region(ring_bytes(4));
  CHECK(reinterpret_cast<char*>(ring_slots(region.header())) - static_cast<char*>(region.mem) == 4096);
}

TEST_CASE("address pack/unpack round trips, including the maxima") {
  const struct {
    uint16_t window;
    uint64_t offset;
  } cases[] = {{0, 0}, {1, 1}, {0xFFFF, kMaxOffset}, {0, kMaxOffset}, {0xFFFF, 0}, {1234, 0x123456789ABCull}};
  for (const auto& c : cases) {
    const uint64_t a = pack_address(c.window, c.offset);
    CHECK(address_window(a) == c.window);
    CHECK(address_offset(a) == c.offset);
  }
  CHECK(pack_address(0xFFFF, kMaxOffset) == ~uint64_t{0});
  CHECK(kMaxWindow == 0xFFFF);
  CHECK(kMaxOffset == 0xFFFFFFFFFFFFull);
  CHECK(offset_fits(kMaxOffset));
  CHECK_FALSE(offset_fits(kMaxOffset + 1));
  // Out-of-range offsets are truncated, never spill into the window bits.
  CHECK(address_window(pack_address(7, kMaxOffset + 2)) == 7);
  CHECK(address_offset(pack_address(7, kMaxOffset + 2)) == 1);
}

TEST_CASE("signal encode/decode round trips, including the maxima") {
  CHECK(kMaxSignalIndex == (1u << 20) - 1);
  CHECK(kMaxSignalIncrement == (1u << 12) - 1);
  const uint32_t indices[] = {0, 1, 2, 4095, 4096, 0x12345, kMaxSignalIndex};
  const uint32_t increments[] = {0, 1, 2, 100, kMaxSignalIncrement};
  for (uint32_t index : indices) {
    for (uint32_t increment : increments) {
      CHECK(signal_fits(index, increment));
      const uint32_t s = encode_signal(index, increment);
      CHECK(signal_index(s) == index);
      CHECK(signal_increment(s) == increment);
    }
  }
  CHECK(encode_signal(kMaxSignalIndex, kMaxSignalIncrement) == 0xFFFFFFFFu);
  CHECK(encode_signal(1, 0) == 1u << 12);  // index in the high bits
  CHECK_FALSE(signal_fits(kMaxSignalIndex + 1, 1));
  CHECK_FALSE(signal_fits(0, kMaxSignalIncrement + 1));
  // Truncation keeps the two fields apart.
  CHECK(signal_index(encode_signal(3, kMaxSignalIncrement + 1)) == 3);
  CHECK(signal_increment(encode_signal(3, kMaxSignalIncrement + 1)) == 0);
}

TEST_CASE("error word pack/unpack") {
  const uint64_t e = pack_error(RingError::kOutOfBounds, 123456);
  CHECK(error_code(e) == RingError::kOutOfBounds);
  CHECK(error_position(e) == 123456);
  CHECK(pack_error(RingError::kNone, 0) == 0);
  const uint64_t far = pack_error(RingError::kTransport, (uint64_t{1} << 48) + 5);  // position truncated
  CHECK(error_code(far) == RingError::kTransport);
  CHECK(error_position(far) == 5);
  CHECK(error_code(pack_error(static_cast<RingError>(0xFFFF), kMaxErrorPosition)) == static_cast<RingError>(0xFFFF));
}

TEST_CASE("capacity validity and region size") {
  CHECK_FALSE(ring_capacity_valid(0));
  CHECK_FALSE(ring_capacity_valid(1));
  CHECK(ring_capacity_valid(2));
  CHECK_FALSE(ring_capacity_valid(3));
  CHECK_FALSE(ring_capacity_valid(6));
  CHECK(ring_capacity_valid(64));
  CHECK(ring_capacity_valid(1u << 24));
  CHECK_FALSE(ring_capacity_valid(1u << 25));
  CHECK_FALSE(ring_capacity_valid((1u << 24) + 1));
  CHECK(ring_bytes(2) == 4096 + 128);
  CHECK(ring_bytes(1u << 24) == 4096 + (uint64_t{64} << 24));
  CHECK(group_bytes(1, 2) == 4096 + 4096 + 128);
  CHECK(group_bytes(132, 64) == 4096 + 132 * (4096 + 64 * 64));
  CHECK(group_ring_offset(0, 64) == 4096);
  CHECK(group_ring_offset(3, 64) == 4096 + 3 * ring_bytes(64));
  CHECK_FALSE(group_channels_valid(0));
  CHECK(group_channels_valid(132));
  CHECK(group_channels_valid(kMaxGroupChannels));
  CHECK_FALSE(group_channels_valid(kMaxGroupChannels + 1));
}

TEST_CASE("ring_init writes a header that ring_check accepts") {
  for (uint32_t capacity : {2u, 4u, 64u, 1024u}) {
    for (RingProducerKind kind : {RingProducerKind::kHost, RingProducerKind::kDevice}) {
      Region region(ring_bytes(capacity));
      std::memset(region.mem, 0xAB, region.size);  // init must clear old contents
      REQUIRE(ring_init(region.mem, capacity, kind));
      CHECK(ring_check(region.mem, region.size) == RingCheck::kOk);
      const RingHeader* h = region.header();
      CHECK(h->magic == kRingMagic);
      CHECK(h->version == kRingVersion);
      CHECK(h->slot_size == 64);
      CHECK(h->capacity == capacity);
      CHECK(h->producer_kind == static_cast<uint32_t>(kind));
      CHECK(ring_capabilities_cover(h->capabilities, kRingCapabilitiesV2));
      CHECK(((h->capabilities & kCapSingleProducer) != 0) == (kind == RingProducerKind::kDevice));
      // Only device producers ring the doorbell unordered with their seqs.
      CHECK(((h->capabilities & kCapEarlyDoorbell) != 0) == (kind == RingProducerKind::kDevice));
      CHECK(h->completed == 0);
      CHECK(h->claim == 0);
      CHECK(h->head == 0);
      CHECK(h->error == 0);
      CHECK(h->error_count == 0);
      for (uint32_t i = 0; i < capacity; ++i) CHECK(region.slots()[i].seq == 0);
    }
  }
  Region region(ring_bytes(2));
  CHECK_FALSE(ring_init(region.mem, 3));
  CHECK_FALSE(ring_init(region.mem, 1));
  CHECK_FALSE(ring_init(nullptr, 4));
}

TEST_CASE("ring_check rejects bad regions") {
  const uint32_t capacity = 16;
  Region region(ring_bytes(capacity) + 4096);  // room for the size and alignment cases
  auto fresh = [&] { REQUIRE(ring_init(region.mem, capacity)); };
  RingHeader* h = region.header();
  const size_t size = ring_bytes(capacity);

  fresh();
  CHECK(ring_check(region.mem, size) == RingCheck::kOk);
  CHECK(ring_check(nullptr, size) == RingCheck::kNull);
  CHECK(ring_check(static_cast<char*>(region.mem) + 8, size) == RingCheck::kMisaligned);
  CHECK(ring_check(region.mem, 4095) == RingCheck::kTooSmall);
  CHECK(ring_check(region.mem, 0) == RingCheck::kTooSmall);
  CHECK(ring_check(region.mem, size - 64) == RingCheck::kSizeMismatch);  // short
  CHECK(ring_check(region.mem, size + 64) == RingCheck::kSizeMismatch);  // long
  CHECK(ring_check(region.mem, 4096) == RingCheck::kSizeMismatch);       // header only

  h->magic ^= 1;
  CHECK(ring_check(region.mem, size) == RingCheck::kBadMagic);
  fresh();
  h->magic = 0;  // never initialised
  CHECK(ring_check(region.mem, size) == RingCheck::kBadMagic);

  fresh();
  h->version = 1;  // an ABI v1 ring
  CHECK(ring_check(region.mem, size) == RingCheck::kBadVersion);
  fresh();
  h->version = 3;
  CHECK(ring_check(region.mem, size) == RingCheck::kBadVersion);
  fresh();
  h->version = 0;
  CHECK(ring_check(region.mem, size) == RingCheck::kBadVersion);

  fresh();
  h->slot_size = 32;
  CHECK(ring_check(region.mem, size) == RingCheck::kBadSlotSize);

  fresh();
  h->capabilities &= ~kCapCompletionWatermark;
  CHECK(ring_check(region.mem, size) == RingCheck::kBadCapabilities);

  for (uint32_t bad : {0u, 1u, 3u, 6u, 24u, (1u << 24) + 1, 1u << 25, 0xFFFFFFFFu}) {
    fresh();
    h->capacity = bad;
    CAPTURE(bad);
    CHECK(ring_check(region.mem, size) == RingCheck::kBadCapacity);
  }
  // A valid capacity that does not match the size.
  fresh();
  h->capacity = 32;
  CHECK(ring_check(region.mem, size) == RingCheck::kSizeMismatch);

  fresh();
  h->producer_kind = 0;
  CHECK(ring_check(region.mem, size) == RingCheck::kBadProducerKind);
  fresh();
  h->producer_kind = 3;
  CHECK(ring_check(region.mem, size) == RingCheck::kBadProducerKind);

  // Every result has a message.
  for (int c = static_cast<int>(RingCheck::kOk); c <= static_cast<int>(RingCheck::kBadCapabilities); ++c) {
    CHECK(std::strlen(ring_check_message(static_cast<RingCheck>(c))) > 0);
  }
}

TEST_CASE("ring_check_slot enforces the op table") {
  CHECK(ring_check_slot(make_write(3, pack_address(1, 0), pack_address(2, 64), 4096)) == RingError::kNone);
  CHECK(ring_check_slot(make_write(3, 0, 0, 0)) == RingError::kNone);  // empty write: a no-op
  CHECK(ring_check_slot(make_write_signal(3, 1, 2, 64, encode_signal(5, 1))) == RingError::kNone);
  CHECK(ring_check_slot(make_signal(3, encode_signal(kMaxSignalIndex, kMaxSignalIncrement))) == RingError::kNone);
  CHECK(ring_check_slot(make_flush()) == RingError::kNone);

  RingSlot d = make_write(3, 1, 2, 64);
  d.signal = encode_signal(1, 1);
  CHECK(ring_check_slot(d) == RingError::kBadFields);  // kWrite carries no signal
  CHECK(ring_check_slot(make_write_signal(3, 1, 2, 64, encode_signal(5, 0))) == RingError::kBadFields);
  CHECK(ring_check_slot(make_signal(3, encode_signal(5, 0))) == RingError::kBadFields);
  d = make_signal(3, encode_signal(5, 1));
  d.length = 8;
  CHECK(ring_check_slot(d) == RingError::kBadFields);
  d = make_signal(3, encode_signal(5, 1));
  d.src = 1;
  CHECK(ring_check_slot(d) == RingError::kBadFields);
  d = make_flush();
  d.dst_rank = 1;
  CHECK(ring_check_slot(d) == RingError::kBadFields);
  d = make_flush();
  d.dst = 1;
  CHECK(ring_check_slot(d) == RingError::kBadFields);

  d = make_write(3, 1, 2, 64);
  d.flags = 1;
  CHECK(ring_check_slot(d) == RingError::kBadFlags);
  for (uint8_t op : {uint8_t{0}, uint8_t{7}, uint8_t{255}}) {
    d = make_write(3, 1, 2, 64);
    d.op = op;
    CHECK(ring_check_slot(d) == RingError::kBadOp);
  }
  d = make_flush();
  d.op = static_cast<uint8_t>(RingOp::kBarrier);
  CHECK(ring_check_slot(d) == RingError::kUnsupportedOp);

  CHECK(static_cast<int>(RingOp::kWrite) == 1);
  CHECK(static_cast<int>(RingOp::kWriteSignal) == 2);
  CHECK(static_cast<int>(RingOp::kSignal) == 3);
  CHECK(static_cast<int>(RingOp::kFlush) == 4);
  CHECK(static_cast<int>(RingOp::kBarrier) == 5);
  CHECK(static_cast<int>(RingOp::kWriteStrided) == 6);

  // Reserved words and the strided fields belong to kWriteStrided only.
  d = make_write(3, 1, 2, 64);
  d.reserved0 = 1;
  CHECK(ring_check_slot(d) == RingError::kBadFields);
  d = make_write(3, 1, 2, 64);
  d.reserved1 = 1;
  CHECK(ring_check_slot(d) == RingError::kBadFields);
  d = make_write(3, 1, 2, 64);
  d.count = 2;
  CHECK(ring_check_slot(d) == RingError::kBadFields);
  d = make_write_signal(3, 1, 2, 64, encode_signal(5, 1));
  d.dst_stride = 64;
  CHECK(ring_check_slot(d) == RingError::kBadFields);
  d = make_flush();
  d.src_stride = 8;
  CHECK(ring_check_slot(d) == RingError::kBadFields);
}

TEST_CASE("kSignal scopes and kWriteStrided in the op table") {
  RingSlot d = make_signal(3, encode_signal(5, 1), /*scope_destination=*/true);
  CHECK(d.flags == kFlagScopeDestination);
  CHECK(ring_check_slot(d) == RingError::kNone);
  CHECK(make_signal(3, encode_signal(5, 1)).flags == 0);
  d.flags = 2;  // no such scope
  CHECK(ring_check_slot(d) == RingError::kBadFlags);
  d = make_write_signal(3, 1, 2, 64, encode_signal(5, 1));
  d.flags = kFlagScopeDestination;  // scopes are for kSignal only
  CHECK(ring_check_slot(d) == RingError::kBadFlags);

  d = make_write_strided(3, pack_address(1, 0), 128, pack_address(2, 0), 256, 64, 10, 0);
  CHECK(d.op == static_cast<uint8_t>(RingOp::kWriteStrided));
  CHECK(d.count == 10);
  CHECK(d.src_stride == 128);
  CHECK(d.dst_stride == 256);
  CHECK(ring_check_slot(d) == RingError::kNone);
  CHECK(ring_check_slot(make_write_strided(3, 1, 0, 2, 0, 64, 1, encode_signal(4, 2))) == RingError::kNone);
  CHECK(ring_check_slot(make_write_strided(3, 1, 64, 2, 64, 64, 0, 0)) == RingError::kBadFields);  // no elements
  CHECK(ring_check_slot(make_write_strided(3, 1, 64, 2, 64, 0, 4, 0)) == RingError::kBadFields);   // empty elements
  CHECK(ring_check_slot(make_write_strided(3, 1, 64, 2, 64, 64, kMaxStridedCount + 1, 0)) == RingError::kBadFields);
  CHECK(ring_check_slot(make_write_strided(3, 1, 64, 2, 64, 64, kMaxStridedCount, 0)) == RingError::kNone);
  CHECK(ring_check_slot(make_write_strided(3, 1, 64, 2, 64, 64, 4, encode_signal(4, 0))) == RingError::kBadFields);
  d = make_write_strided(3, 1, 64, 2, 64, 64, 4, 0);
  d.flags = kFlagScopeDestination;
  CHECK(ring_check_slot(d) == RingError::kBadFlags);
}

TEST_CASE("group_init lays out rings that group_check and ring_check accept") {
  const uint32_t channels = 132, capacity = 16;
  Region region(group_bytes(channels, capacity));
  std::memset(region.mem, 0xCD, region.size);
  REQUIRE(group_init(region.mem, channels, capacity, RingProducerKind::kDevice));
  CHECK(group_check(region.mem, region.size) == RingCheck::kOk);
  const RingGroupHeader* g = group_header(region.mem);
  CHECK(g->channels == channels);
  CHECK(g->capacity == capacity);
  for (uint32_t c = 0; c < kMaxGroupChannels; ++c) CHECK(g->doorbell[c] == 0);
  for (uint32_t c = 0; c < channels; ++c) {
    void* r = group_ring(region.mem, c, capacity);
    CHECK(reinterpret_cast<uintptr_t>(r) % kRingAlignment == 0);
    CHECK(ring_check(r, ring_bytes(capacity)) == RingCheck::kOk);
    CHECK(ring_header(r)->channel == c);
    CHECK((ring_header(r)->capabilities & kCapSingleProducer) != 0);
  }
  CHECK(group_check(region.mem, region.size - 64) == RingCheck::kSizeMismatch);
  // A ring inside that claims another channel, or a broken ring.
  ring_header(group_ring(region.mem, 7, capacity))->channel = 8;
  CHECK(group_check(region.mem, region.size) == RingCheck::kBadChannels);
  ring_header(group_ring(region.mem, 7, capacity))->channel = 7;
  ring_header(group_ring(region.mem, 9, capacity))->version = 1;
  CHECK(group_check(region.mem, region.size) == RingCheck::kBadVersion);
  REQUIRE(group_init(region.mem, channels, capacity, RingProducerKind::kDevice));
  group_header(region.mem)->channels = 0;
  CHECK(group_check(region.mem, region.size) == RingCheck::kBadChannels);
  REQUIRE(group_init(region.mem, channels, capacity, RingProducerKind::kDevice));
  group_header(region.mem)->version = 1;
  CHECK(group_check(region.mem, region.size) == RingCheck::kBadVersion);
  group_header(region.mem)->magic = kRingMagic;
  CHECK(group_check(region.mem, region.size) == RingCheck::kBadMagic);
  CHECK_FALSE(group_init(region.mem, 0, capacity, RingProducerKind::kHost));
  CHECK_FALSE(group_init(region.mem, kMaxGroupChannels + 1, capacity, RingProducerKind::kHost));
  CHECK_FALSE(group_init(region.mem, 4, 3, RingProducerKind::kHost));
}

TEST_CASE("doorbells: a producer rings its ring's byte; the scan takes each once and skips idle words") {
  const uint32_t channels = 132, capacity = 8;
  Region region(group_bytes(channels, capacity));
  REQUIRE(group_init(region.mem, channels, capacity, RingProducerKind::kHost));
  RingGroupHeader* g = group_header(region.mem);
  std::vector<uint32_t> taken;
  auto take = [&] {
    taken.clear();
    return take_doorbells(g, channels, [&](uint32_t c) { taken.push_back(c); });
  };
  CHECK(take() == 0);
  RingProducer p77(group_ring(region.mem, 77, capacity), &g->doorbell[77]);
  RingProducer p131(group_ring(region.mem, 131, capacity), &g->doorbell[131]);
  REQUIRE(p77.try_post(make_flush()));
  REQUIRE(p77.try_post(make_flush()));
  REQUIRE(p131.try_post(make_flush()));
  CHECK(take() == 2);
  CHECK(taken == std::vector<uint32_t>{77, 131});
  CHECK(g->doorbell[77] == 0);
  CHECK(take() == 0);  // taken once; nothing new
  // A doorbell byte beyond `channels` (a client scribbling) is never reported.
  g->doorbell[channels] = 1;
  g->doorbell[kMaxGroupChannels - 1] = 1;
  CHECK(take() == 0);
}

TEST_CASE("host producer: tickets for flushers, and the completion watermark") {
  Region region(ring_bytes(8));
  REQUIRE(ring_init(region.mem, 8));
  RingProducer a(region.mem), b(region.mem);
  uint64_t ta = 99, tb = 99;
  REQUIRE(a.try_post(make_flush(), &ta));
  REQUIRE(b.post(make_flush(), std::chrono::milliseconds(10), &tb));
  CHECK(ta == 0);
  CHECK(tb == 1);
  CHECK(a.completed() == 0);
  ring_publish_completed(region.header(), 1);
  // a's flush (ticket 0) is done; b's (ticket 1) is not.
  CHECK(a.completed() > ta);
  CHECK_FALSE(b.completed() > tb);
}

TEST_CASE("single producer: wrap-around many times, everything in order") {
  const uint32_t capacity = 8;
  Region region(ring_bytes(capacity));
  REQUIRE(ring_init(region.mem, capacity));
  RingProducer producer(region.mem);
  RingConsumer consumer(region.mem);

  const uint64_t total = 25 * capacity + 3;  // > 10 laps, and not a whole number of them
  uint64_t posted = 0;
  uint64_t seen = 0;
  bool fields_ok = true;
  bool order_ok = true;
  auto check = [&](const RingSlot& d) {
    order_ok = order_ok && consumer.position() == seen && d.seq == ring_seq_for(seen);
    fields_ok = fields_ok && same_fields(d, descriptor_for(seen));
    ++seen;
  };
  // Bursts of 1..capacity posts, drained with batches of 1..3, so the ring is
  // seen empty, partly full and full at every offset.
  for (uint64_t round = 0; posted < total; ++round) {
    const uint64_t burst = 1 + round % capacity;
    for (uint64_t i = 0; i < burst && posted < total; ++i) {
      REQUIRE(producer.try_post(descriptor_for(posted)));
      ++posted;
    }
    while (seen < posted) {
      const size_t n = consumer.poll(check, 1 + round % 3);
      REQUIRE(n > 0);
      CHECK(region.header()->head == seen);  // published when poll returns
    }
    CHECK(consumer.poll(check, 100) == 0);  // nothing more
  }
  CHECK(seen == total);
  CHECK(fields_ok);
  CHECK(order_ok);
  CHECK(region.header()->claim == total);
  CHECK(region.header()->head == total);
  // Each slot holds the seq of the last ticket that used it.
  for (uint64_t t = total - capacity; t < total; ++t) CHECK(region.slots()[t % capacity].seq == ring_seq_for(t));
}

TEST_CASE("full ring: try_post fails until the consumer polls") {
  const uint32_t capacity = 4;
  Region region(ring_bytes(capacity));
  REQUIRE(ring_init(region.mem, capacity));
  RingProducer producer(region.mem);
  RingConsumer consumer(region.mem);

  for (uint64_t i = 0; i < capacity; ++i) CHECK(producer.try_post(descriptor_for(i)));
  CHECK_FALSE(producer.try_post(descriptor_for(capacity)));
  CHECK_FALSE(producer.post(descriptor_for(capacity), std::chrono::milliseconds(5)));
  CHECK(region.header()->claim == capacity);  // refusals claimed nothing

  uint64_t seen = 0;
  bool ok = true;
  auto check = [&](const RingSlot& d) { ok = ok && same_fields(d, descriptor_for(seen++)); };
  CHECK(consumer.poll(check, 1) == 1);
  CHECK(region.header()->head == 1);
  CHECK(producer.try_post(descriptor_for(capacity)));
  CHECK_FALSE(producer.try_post(descriptor_for(capacity + 1)));

  CHECK(consumer.poll(check, 100) == capacity);
  CHECK(consumer.poll(check, 100) == 0);
  CHECK(seen == capacity + 1);
  CHECK(ok);
  CHECK(producer.post(descriptor_for(capacity + 1), std::chrono::milliseconds(5)));
  CHECK(consumer.poll(check, 100) == 1);
  CHECK(ok);
}

TEST_CASE("a second producer object sees the claims of the first") {
  Region region(ring_bytes(4));
  REQUIRE(ring_init(region.mem, 4));
  RingProducer a(region.mem);
  RingProducer b(region.mem);
  RingConsumer consumer(region.mem);
  CHECK(a.try_post(descriptor_for(0)));
  CHECK(b.try_post(descriptor_for(1)));
  CHECK(a.try_post(descriptor_for(2)));
  CHECK(b.try_post(descriptor_for(3)));
  CHECK_FALSE(a.try_post(descriptor_for(4)));
  CHECK_FALSE(b.try_post(descriptor_for(4)));
  uint64_t seen = 0;
  bool ok = true;
  CHECK(consumer.poll([&](const RingSlot& d) { ok = ok && same_fields(d, descriptor_for(seen++)); }, 10) == 4);
  CHECK(ok);
  // b's cached head is stale (0) but its stale view only costs a re-read.
  CHECK(b.try_post(descriptor_for(4)));
}

TEST_CASE("consumer waits on an unpublished slot and ignores a stale seq") {
  const uint32_t capacity = 4;
  Region region(ring_bytes(capacity));
  REQUIRE(ring_init(region.mem, capacity));
  RingConsumer consumer(region.mem);
  auto ignore = [](const RingSlot&) {};

  // Fields written but seq not yet released: not visible.
  RingSlot* slot = &region.slots()[0];
  *slot = descriptor_for(0);
  slot->seq = 0;
  CHECK(consumer.poll(ignore, 10) == 0);
  // A seq from a lap ago (ticket 0 - capacity) is not ticket 0's.
  slot->seq = ring_seq_for(uint64_t{0} - capacity);
  CHECK(consumer.poll(ignore, 10) == 0);
  slot->seq = ring_seq_for(0);
  CHECK(consumer.poll(ignore, 10) == 1);
  CHECK(consumer.position() == 1);
}

TEST_CASE("positions across the 32-bit seq wrap") {
  // Start producer and consumer just below 2^32, with every slot holding the
  // seq of the lap before, as it would after 2^32 descriptors.
  const uint32_t capacity = 8;
  Region region(ring_bytes(capacity));
  REQUIRE(ring_init(region.mem, capacity));
  const uint64_t start = (uint64_t{1} << 32) - 5;
  region.header()->claim = start;
  region.header()->head = start;
  for (uint64_t t = start - capacity; t < start; ++t) region.slots()[t % capacity].seq = ring_seq_for(t);

  RingProducer producer(region.mem);
  RingConsumer consumer(region.mem);
  uint64_t seen = start;
  bool ok = true;
  auto check = [&](const RingSlot& d) {
    ok = ok && d.seq == ring_seq_for(seen) && same_fields(d, descriptor_for(seen));
    ++seen;
  };
  CHECK(consumer.poll(check, 100) == 0);
  for (uint64_t t = start; t < start + 4 * capacity; ++t) {
    REQUIRE(producer.try_post(descriptor_for(t)));
    CHECK(consumer.poll(check, 100) == 1);
    CHECK(consumer.poll(check, 100) == 0);
  }
  CHECK(ok);
  CHECK(seen == start + 4 * capacity);
  CHECK(region.header()->head == start + 4 * capacity);
}

TEST_CASE("error word: the first error wins, every error counts") {
  Region region(ring_bytes(8));
  REQUIRE(ring_init(region.mem, 8));
  RingProducer producer(region.mem);
  RingConsumer consumer(region.mem);
  CHECK(consumer.error() == 0);
  CHECK(producer.error() == 0);
  CHECK(consumer.error_count() == 0);

  CHECK(consumer.report_error(RingError::kBadWindow, 17));
  CHECK(consumer.error() == pack_error(RingError::kBadWindow, 17));
  CHECK(consumer.error_count() == 1);

  CHECK_FALSE(consumer.report_error(RingError::kTransport, 99));
  CHECK_FALSE(consumer.report_error(RingError::kBadOp, 100));
  CHECK(consumer.error_count() == 3);
  const uint64_t e = producer.error();
  CHECK(error_code(e) == RingError::kBadWindow);
  CHECK(error_position(e) == 17);
  CHECK(region.header()->error_count == 3);

  // Reported from inside poll, with position() naming the bad descriptor.
  Region other(ring_bytes(8));
  REQUIRE(ring_init(other.mem, 8));
  RingProducer p2(other.mem);
  RingConsumer c2(other.mem);
  REQUIRE(p2.try_post(make_flush()));
  RingSlot bad = make_flush();
  bad.op = 42;
  REQUIRE(p2.try_post(bad));
  CHECK(c2.poll(
            [&](const RingSlot& d) {
              const RingError err = ring_check_slot(d);
              if (err != RingError::kNone) c2.report_error(err, c2.position());
            },
            10) == 2);
  CHECK(p2.error() == pack_error(RingError::kBadOp, 1));
  CHECK(c2.error_count() == 1);

  // The free function (what the daemon's proxy calls) behaves the same.
  CHECK_FALSE(ring_report_error(other.header(), RingError::kTransport, 5));
  CHECK(c2.error_count() == 2);
  CHECK(c2.error() == pack_error(RingError::kBadOp, 1));

  // Every code has a message.
  for (int c = 0; c <= static_cast<int>(RingError::kTransport); ++c) {
    CHECK(std::strlen(ring_error_message(static_cast<RingError>(c))) > 0);
  }
}

}  // namespace
}  // namespace epx::ring
