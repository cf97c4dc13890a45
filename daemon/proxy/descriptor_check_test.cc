#include "daemon/proxy/descriptor_check.h"

#include <doctest/doctest.h>

#include <random>

using namespace epx::daemon;
using epx::ring::RingError;
namespace ring = epx::ring;

namespace {

// A 2-rank job: rank 0 local with windows 1 (4096 B) and 2 (100 B); rank 1
// remote with window 1 (8192 B) and 10 signals at node ids 500..509.
struct Fixture {
  std::vector<uint8_t> w1 = std::vector<uint8_t>(4096), w2 = std::vector<uint8_t>(100);
  JobView view;
  Fixture() {
    view.job_id = "j";
    view.world = 2;
    view.ranks.resize(2);
    RankView& me = view.ranks[0];
    me.present = true;
    me.addrs = {7};
    me.remote_rails = 1;
    me.local_windows.resize(3);
    me.local_windows[1] = LocalWindow{w1.data(), w1.size(), {reinterpret_cast<void*>(0x11)}};
    me.local_windows[2] = LocalWindow{w2.data(), w2.size(), {reinterpret_cast<void*>(0x22)}};
    RankView& peer = view.ranks[1];
    peer.present = true;
    peer.addrs = {9};
    peer.remote_rails = 1;
    peer.windows.resize(2);
    peer.windows[1] = RemoteWindow{8192, {RemoteRail{0xAB, 0x10000}}};
    peer.signal_base = 500;
    peer.signal_count = 10;
    peer.signal_target = RemoteWindow{8, {RemoteRail{0xCD, 0x20000}}};
  }
  Verdict write(ring::RingSlot d, PendingWrite* out = nullptr) {
    PendingWrite scratch;
    return check_write(view, 0, d, 0, 1 << 20, out ? out : &scratch);
  }
};

ring::RingSlot w(uint16_t dst, uint16_t sw, uint64_t so, uint16_t dw, uint64_t doff, uint32_t len) {
  return ring::make_write(dst, ring::pack_address(sw, so), ring::pack_address(dw, doff), len);
}

}  // namespace

TEST_CASE("a good write resolves to the right remote address, key and fabric address") {
  Fixture f;
  PendingWrite out;
  auto v = f.write(w(1, 1, 100, 1, 200, 50), &out);
  REQUIRE(v.ok());
  CHECK(out.src == f.w1.data() + 100);
  CHECK(out.remote_addr == 0x10000 + 200);
  CHECK(out.key == 0xAB);
  CHECK(out.addr == 9);
  CHECK(out.desc == reinterpret_cast<void*>(0x11));
  CHECK(out.imm == 0);
  CHECK(out.src_end == 150);
  CHECK(out.dst_end == 250);
}

TEST_CASE("every field out of range is rejected with its own code") {
  Fixture f;
  CHECK(f.write(w(2, 1, 0, 1, 0, 8)).error == RingError::kBadRank);             // rank beyond world
  CHECK(f.write(w(1, 0, 0, 1, 0, 8)).error == RingError::kBadWindow);           // source window 0
  CHECK(f.write(w(1, 3, 0, 1, 0, 8)).error == RingError::kBadWindow);           // source window unknown
  CHECK(f.write(w(1, 1, 0, 2, 0, 8)).error == RingError::kBadWindow);           // destination window unknown
  CHECK(f.write(w(1, 1, 4090, 1, 0, 8)).error == RingError::kOutOfBounds);      // source end past 4096
  CHECK(f.write(w(1, 2, 0, 1, 0, 101)).error == RingError::kOutOfBounds);       // longer than window 2
  CHECK(f.write(w(1, 1, 0, 1, 8190, 8)).error == RingError::kOutOfBounds);      // destination end past 8192
  CHECK(f.write(w(1, 1, 0, 1, ring::kMaxOffset, 8)).error == RingError::kOutOfBounds);  // no wrap-around
  CHECK(f.write(w(1, 1, 0, 1, 0, 0)).error == RingError::kOutOfBounds);         // empty write
  PendingWrite out;
  CHECK(check_write(f.view, 0, w(1, 1, 0, 1, 0, 4096), 0, 1024, &out).error == RingError::kOutOfBounds);  // > max
  // Boundaries that are fine.
  CHECK(f.write(w(1, 1, 4088, 1, 8184, 8)).ok());
  CHECK(f.write(w(1, 2, 0, 1, 0, 100)).ok());
  auto v = f.write(w(1, 1, 4090, 1, 0, 8));
  CHECK(v.why.find("window 1") != std::string::npos);
}

TEST_CASE("a lost rank is not a destination") {
  Fixture f;
  f.view.ranks[1].present = false;
  auto v = f.write(w(1, 1, 0, 1, 0, 8));
  CHECK(v.error == RingError::kBadRank);
  CHECK(v.why.find("not present") != std::string::npos);
}

TEST_CASE("signals: the immediate names the node-wide id; bad indices are rejected") {
  Fixture f;
  PendingWrite out;
  auto d = ring::make_write_signal(1, ring::pack_address(1, 0), ring::pack_address(1, 0), 8, ring::encode_signal(3, 7));
  REQUIRE(f.write(d, &out).ok());
  CHECK(ring::signal_index(out.imm) == 503);
  CHECK(ring::signal_increment(out.imm) == 7);
  auto bad = ring::make_write_signal(1, ring::pack_address(1, 0), ring::pack_address(1, 0), 8, ring::encode_signal(10, 1));
  CHECK(f.write(bad).error == RingError::kBadSignal);

  PendingWrite sig;
  REQUIRE(check_signal(f.view, ring::make_signal(1, ring::encode_signal(9, 1)), 0, &sig).ok());
  CHECK(sig.remote_addr == 0x20000);
  CHECK(sig.key == 0xCD);
  CHECK(ring::signal_index(sig.imm) == 509);
  CHECK(check_signal(f.view, ring::make_signal(1, ring::encode_signal(10, 1)), 0, &sig).error == RingError::kBadSignal);
  CHECK(check_signal(f.view, ring::make_signal(5, ring::encode_signal(0, 1)), 0, &sig).error == RingError::kBadRank);
}

TEST_CASE("immediate encoding round-trips at the limits") {
  for (uint32_t index : {0u, 1u, 12345u, ring::kMaxSignalIndex}) {
    for (uint32_t inc : {1u, 2u, 100u, ring::kMaxSignalIncrement}) {
      const uint32_t imm = ring::encode_signal(index, inc);
      CHECK(ring::signal_index(imm) == index);
      CHECK(ring::signal_increment(imm) == inc);
    }
  }
  CHECK_FALSE(ring::signal_fits(ring::kMaxSignalIndex + 1, 1));
  CHECK_FALSE(ring::signal_fits(0, ring::kMaxSignalIncrement + 1));
}

TEST_CASE("random untrusted descriptors: whatever passes stays inside both windows") {
  Fixture f;
  std::mt19937_64 rng(7);
  auto pick = [&](std::initializer_list<uint64_t> edges) {
    // Mostly values near the interesting edges, sometimes anything.
    if (rng() % 4 == 0) return rng();
    auto it = edges.begin();
    std::advance(it, rng() % edges.size());
    return *it + (rng() % 5) - 2;
  };
  int accepted = 0;
  for (int i = 0; i < 200000; ++i) {
    ring::RingSlot d = {};
    d.op = static_cast<uint8_t>(rng() % 2 ? ring::RingOp::kWrite : ring::RingOp::kWriteSignal);
    d.dst_rank = static_cast<uint16_t>(pick({1, 1, 2, 0xFFFF}));
    d.length = static_cast<uint32_t>(pick({0, 3, 8, 50, 100, 4096, 8192, 0xFFFFFFFFull}));
    d.src = ring::pack_address(static_cast<uint16_t>(pick({1, 1, 2, 3})), pick({2, 50, 96, 4000, 4096, ring::kMaxOffset}));
    d.dst = ring::pack_address(static_cast<uint16_t>(pick({1, 1, 2})), pick({2, 100, 8100, 8192, ring::kMaxOffset}));
    d.signal = d.op == static_cast<uint8_t>(ring::RingOp::kWriteSignal)
                   ? ring::encode_signal(static_cast<uint32_t>(pick({0, 9, 10, ring::kMaxSignalIndex})), 1 + rng() % 4095)
                   : 0;
    PendingWrite out;
    Verdict v = check_write(f.view, 0, d, 0, 1 << 20, &out);
    if (!v.ok()) {
      CHECK_FALSE(v.why.empty());
      continue;
    }
    ++accepted;
    // Source inside the local window it names.
    const LocalWindow& lw = f.view.ranks[0].local_windows[ring::address_window(d.src)];
    REQUIRE(out.src >= lw.data);
    REQUIRE(out.src + out.length <= lw.data + lw.size);
    // Destination inside the remote window it names.
    const RemoteWindow& rw = f.view.ranks[d.dst_rank].windows[ring::address_window(d.dst)];
    REQUIRE(out.remote_addr >= rw.rails[0].base);
    REQUIRE(out.remote_addr - rw.rails[0].base + out.length <= rw.size);
    if (out.imm) REQUIRE(ring::signal_index(out.imm) < 500 + 10);
  }
  CHECK(accepted > 50);  // the generator does reach valid descriptors (85 with this seed)
}

TEST_CASE("extends: only an exact continuation inside both windows skips the full check") {
  Fixture f;
  PendingWrite p;
  REQUIRE(f.write(w(1, 1, 0, 1, 0, 64), &p).ok());
  CHECK(p.src_limit == 4096);
  CHECK(p.dst_limit == 8192);
  CHECK(extends(p, f.view, w(1, 1, 64, 1, 64, 64), 1 << 20));
  CHECK_FALSE(extends(p, f.view, w(1, 1, 65, 1, 64, 64), 1 << 20));   // gap at the source
  CHECK_FALSE(extends(p, f.view, w(1, 1, 64, 1, 128, 64), 1 << 20));  // gap at the destination
  CHECK_FALSE(extends(p, f.view, w(0, 1, 64, 1, 64, 64), 1 << 20));   // another rank
  CHECK_FALSE(extends(p, f.view, w(1, 2, 64, 1, 64, 16), 1 << 20));   // another source window
  CHECK_FALSE(extends(p, f.view, w(1, 1, 64, 1, 64, 0), 1 << 20));    // empty writes take the slow path
  CHECK_FALSE(extends(p, f.view, w(1, 1, 64, 1, 64, 4096), 1 << 20)); // past the source window's end
  CHECK(extends(p, f.view, w(1, 1, 64, 1, 64, 4096 - 64), 1 << 20));  // exactly up to it
  CHECK_FALSE(extends(p, f.view, w(1, 1, 64, 1, 64, 64), 100));       // merged write over the limit
  auto signalled = ring::make_write_signal(1, ring::pack_address(1, 64), ring::pack_address(1, 64), 64,
                                           ring::encode_signal(0, 1));
  CHECK_FALSE(extends(p, f.view, signalled, 1 << 20));  // needs its immediate resolved
  auto flagged = w(1, 1, 64, 1, 64, 64);
  flagged.flags = 1;
  CHECK_FALSE(extends(p, f.view, flagged, 1 << 20));
  p.imm = 5;  // a write that carries a signal ends its run
  CHECK_FALSE(extends(p, f.view, w(1, 1, 64, 1, 64, 64), 1 << 20));
}

TEST_CASE("extends: a new view (rank lost, window removed) ends the unchecked run") {
  Fixture f;
  f.view.generation = 7;
  PendingWrite p;
  REQUIRE(f.write(w(1, 1, 0, 1, 0, 64), &p).ok());
  CHECK(p.view_generation == 7);
  CHECK(extends(p, f.view, w(1, 1, 64, 1, 64, 64), 1 << 20));
  // The destination rank is lost: the plane publishes a new view.
  JobView next = f.view;
  next.generation = 8;
  next.ranks[1].present = false;
  CHECK_FALSE(extends(p, next, w(1, 1, 64, 1, 64, 64), 1 << 20));
  // ... and the full check then rejects the same descriptor.
  PendingWrite out;
  CHECK(check_write(next, 0, w(1, 1, 64, 1, 64, 64), 0, 1 << 20, &out).error == RingError::kBadRank);
}

TEST_CASE("extends: a run grown by extends() never leaves the windows (randomized)") {
  Fixture f;
  std::mt19937_64 rng(7);
  for (int round = 0; round < 2000; ++round) {
    PendingWrite p;
    const uint64_t start = rng() % 4096;
    const uint32_t first = 1 + rng() % 64;
    if (!f.write(w(1, 1, start, 1, start, first), &p).ok()) continue;
    for (int i = 0; i < 100; ++i) {
      const uint32_t len = rng() % 200;
      if (!extends(p, f.view, w(1, 1, p.src_end, 1, p.dst_end, len), 1 << 20)) continue;
      p.length += len;
      p.src_end += len;
      p.dst_end += len;
    }
    CHECK(p.src_end <= f.w1.size());
    CHECK(p.dst_end <= 8192);
    CHECK(p.src_end - start == p.length);
  }
}

TEST_CASE("strided_fits checks the first and the last element, without overflow") {
  CHECK(strided_fits(0, 100, 10, 100, 1000));       // exactly fills
  CHECK_FALSE(strided_fits(0, 100, 10, 101, 1000)); // last element one byte over
  CHECK_FALSE(strided_fits(1, 100, 10, 100, 1000));
  CHECK(strided_fits(900, 0, 1000000, 100, 1000));  // stride 0: every element is the first
  CHECK_FALSE(strided_fits(901, 0, 2, 100, 1000));  // the first is already out
  CHECK(strided_fits(0, 1, 1, 1, 1));
  CHECK_FALSE(strided_fits(0, 1, 2, 1, 1));
  const uint64_t big = ~uint64_t{0};
  CHECK_FALSE(strided_fits(0, uint64_t{1} << 62, 8, 1, big));  // 7 * 2^62 wraps in 64 bits; it does not fit
  CHECK(strided_fits(0, uint64_t{1} << 60, 8, 1, big));         // 7 * 2^60 + 1 fits
  CHECK_FALSE(strided_fits(big, 1, 2, 1, big));
  CHECK_FALSE(strided_fits(0, big, 0xFFFFFFFFu, big, big));
  CHECK(strided_fits(5, 7, 0, 3, 0) == true);  // no elements: nothing to check (ring_check_slot refuses count 0)
}

TEST_CASE("check_strided: rank, windows, element length, first and last element of both sides, and the signal") {
  Fixture f;
  auto strided = [&](uint64_t so, uint64_t ss, uint64_t doff, uint64_t ds, uint32_t len, uint32_t count,
                     uint32_t signal = 0, uint16_t dst = 1) {
    PendingWrite out;
    return check_strided(f.view, 0, ring::make_write_strided(dst, ring::pack_address(1, so), ss, ring::pack_address(1, doff), ds, len, count, signal), 0, 1 << 20, &out);
  };
  CHECK(strided(0, 64, 0, 128, 64, 64).ok());                       // source 4096 exactly, destination 8128
  CHECK(strided(0, 64, 0, 128, 64, 65).error == RingError::kOutOfBounds);  // source element 64 past 4096
  CHECK(strided(0, 0, 0, 64, 64, 65).ok());                          // stride 0: one source element, re-sent
  CHECK(strided(0, 0, 8000, 64, 64, 3).ok());                        // destination element 2 ends at 8192
  CHECK(strided(0, 0, 8001, 64, 64, 3).error == RingError::kOutOfBounds);  // ... or one byte past it
  CHECK(strided(0, 0, 0, uint64_t{1} << 63, 1, 3).error == RingError::kOutOfBounds);
  CHECK(strided(0, 0, 0, 0, 8, 1, ring::encode_signal(10, 1)).error == RingError::kBadSignal);
  CHECK(strided(0, 0, 0, 0, 8, 1, ring::encode_signal(9, 1)).ok());
  CHECK(strided(0, 0, 0, 0, 8, 1, 0, 2).error == RingError::kBadRank);

  PendingWrite out;
  REQUIRE(check_strided(f.view, 0, ring::make_write_strided(1, ring::pack_address(1, 16), 100, ring::pack_address(1, 32), 200, 50, 7, ring::encode_signal(3, 2)), 0, 1 << 20, &out).ok());
  CHECK(out.count == 7);
  CHECK(out.src == f.w1.data() + 16);
  CHECK(out.remote_addr == 0x10000 + 32);
  CHECK(out.src_stride == 100);
  CHECK(out.dst_stride == 200);
  CHECK(out.length == 50);
  CHECK(out.imm == ring::encode_signal(503, 2));
  // Back to back on both sides: one plain write of all the bytes.
  REQUIRE(check_strided(f.view, 0, ring::make_write_strided(1, ring::pack_address(1, 0), 64, ring::pack_address(1, 0), 64, 64, 10, 0), 0, 1 << 20, &out).ok());
  CHECK(out.count == 1);
  CHECK(out.length == 640);
  CHECK(out.src_end == 640);
  CHECK(out.dst_end == 640);
}
