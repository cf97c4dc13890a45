// The data plane through real daemons: rings, windows, proxies, signals on
// the tcp and shm providers.
#include <doctest/doctest.h>
#include <signal.h>

#include <cstring>
#include <future>

#include "epx/client.h"
#include "tests/harness/daemon_process.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

namespace {

void expect_exchange_ok(std::vector<std::unique_ptr<Process>>& ranks) {
  for (size_t r = 0; r < ranks.size(); ++r) {
    auto code = ranks[r]->wait(90s);
    REQUIRE_MESSAGE(code.has_value(), "rank " << r << " did not finish:\n" << ranks[r]->output());
    CHECK_MESSAGE(*code == 0, "rank " << r << " failed:\n" << ranks[r]->output());
    CHECK(ranks[r]->output().find("every received byte verified") != std::string::npos);
  }
}

}  // namespace

TEST_CASE("a 4-rank exchange over 2 daemons moves every byte intact") {
  for (const char* provider : {"tcp", "shm"}) {
    CAPTURE(provider);
    TempDir dir;
    DaemonProcess a(dir, {"a", provider}), b(dir, {"b", provider});
    auto ranks = start_exchange(dir, {&a, &b}, std::string("x-") + provider, 4, 3, 256 << 10);
    expect_exchange_ok(ranks);
    auto [code, out] = a.epxctl({"status"});
    CHECK(code == 0);
  }
}

TEST_CASE("rails_per_domain 2 on shm: large writes are striped over both rails' proxies and every byte arrives") {
  TempDir dir;
  const std::vector<std::string> two = {"--rails-per-domain", "2", "--stripe-min-kib", "128"};
  DaemonProcess a(dir, {"a", "shm", two}), b(dir, {"b", "shm", two});
  auto ranks = start_exchange(dir, {&a, &b}, "striped", 2, 3, 1 << 20, 1 << 20);  // whole 1 MiB writes
  expect_exchange_ok(ranks);
  v1::DaemonStatus st = a.status();
  REQUIRE(st.rails_size() == 2);
  for (const auto& rail : st.rails()) {
    CAPTURE(rail.index());
    CHECK(rail.domain() == st.rails(0).domain());
    CHECK(rail.posted_bytes() > 0);  // each rail's proxy copied a share
  }
}

TEST_CASE("counted signals: many writes from several rings to one signal, all counted, data intact") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"}), b(dir, {"b", "tcp"});
  auto ca = a.connect(), cb = b.connect();
  auto fb = std::async(std::launch::async, [&] { return cb->join(join_options("sig", 2, 1, a.peer_address())); });
  auto ja = ca->join(join_options("sig", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = fb.get();
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());
  constexpr uint32_t kBlock = 1000, kBlocks = 300;
  auto src = ja->create_window(kBlock * kBlocks);
  auto dst_b = jb->create_window(kBlock * kBlocks);  // window 1 on rank 1
  REQUIRE(src.ok());
  REQUIRE(dst_b.ok());
  auto sig_a = ja->open_signals(4);
  auto sig_b = jb->open_signals(4);
  REQUIRE(sig_a.ok());
  REQUIRE(sig_b.ok());
  auto r1 = ja->open_ring(64), r2 = ja->open_ring(64);  // small rings: wrap-around many times
  REQUIRE(r1.ok());
  REQUIRE(r2.ok());
  auto fbar = std::async(std::launch::async, [&] { return jb->barrier(10s); });
  REQUIRE(ja->barrier(10s).ok());
  REQUIRE(fbar.get().ok());

  for (uint32_t i = 0; i < kBlock * kBlocks; ++i) src->data()[i] = static_cast<uint8_t>(i * 7 + 3);
  // Interleave two rings; every write counts 1 on signal 2 of rank 1.
  for (uint32_t k = 0; k < kBlocks; ++k) {
    Ring& ring = k % 2 ? **r2 : **r1;
    REQUIRE(ring.post_write_signal(1, *src, k * kBlock, 1, k * kBlock, kBlock, SignalRef{2, 1}).ok());
  }
  // And a fence + signal-only on signal 3 after all of ring 1's writes.
  REQUIRE((*r1)->post_signal(1, SignalRef{3, 5}).ok());
  REQUIRE(sig_b->wait(2, kBlocks, 20s).ok());
  REQUIRE(sig_b->wait(3, 5, 20s).ok());
  CHECK(sig_b->value(2) == kBlocks);  // exactly: nothing counted twice
  CHECK(std::memcmp(src->data(), dst_b->data(), kBlock * kBlocks) == 0);
  REQUIRE((*r1)->flush(10s).ok());
  REQUIRE((*r2)->flush(10s).ok());
  CHECK((*r1)->error().ok());
  CHECK((*r2)->error().ok());
  // A wait that cannot be satisfied times out with a message naming the word.
  auto late = sig_b->wait(0, 1, 300ms);
  CHECK(late.code() == StatusCode::kDeadlineExceeded);
  CHECK(late.message().find("signal 0 is 0") != std::string::npos);
}

TEST_CASE("bad descriptors from one client are rejected and reported while another job's traffic runs") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"}), b(dir, {"b", "tcp"});
  auto good = start_exchange(dir, {&a, &b}, "good", 2, 6, 512 << 10);

  auto ca = a.connect("bad-actor"), cb = b.connect();
  auto fb = std::async(std::launch::async, [&] { return cb->join(join_options("bad", 2, 1, a.peer_address())); });
  auto ja = ca->join(join_options("bad", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = fb.get();
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());
  auto w = ja->create_window(4096);
  auto wb = jb->create_window(4096);
  REQUIRE(w.ok());
  REQUIRE(wb.ok());
  auto sb = jb->open_signals(2);
  REQUIRE(sb.ok());
  auto fbar = std::async(std::launch::async, [&] { return jb->barrier(10s); });
  REQUIRE(ja->barrier(10s).ok());
  REQUIRE(fbar.get().ok());

  struct Case {
    const char* what;
    std::function<Status(Ring&)> post;
    const char* reason;  // in the daemon's status
  };
  std::vector<Case> cases = {
      {"unknown window", [&](Ring& r) { return r.post_write(1, *w, 0, 9, 0, 8); }, "unknown window"},
      {"beyond the window", [&](Ring& r) { return r.post_write(1, *w, 0, 1, 4090, 64); }, "out of window bounds"},
      {"bad signal",
       [&](Ring& r) {
         return r.post_write_signal(1, *w, 0, 1, 0, 8, SignalRef{99, 1});
       },
       "bad signal"},
  };
  {
    // A rank beyond the job never reaches the daemon: the SDK refuses it
    // (the daemon's own check of it is in //daemon:descriptor_check_test).
    auto ring = ja->open_ring(16);
    REQUIRE(ring.ok());
    CHECK((*ring)->post_write(7, *w, 0, 1, 0, 8).code() == StatusCode::kInvalidArgument);
    CHECK((*ring)->error().ok());
  }
  for (auto& c : cases) {
    CAPTURE(c.what);
    auto ring = ja->open_ring(16);
    REQUIRE(ring.ok());
    REQUIRE(c.post(**ring).ok());  // accepted into the ring; the daemon judges it
    Status err;
    wait_until([&] { return !(err = (*ring)->error()).ok(); }, 2s);
    CHECK(err.code() == StatusCode::kFailedPrecondition);
    CHECK(err.message().find(c.reason) != std::string::npos);
    // Later posts report the error instead of silently queueing.
    CHECK_FALSE((*ring)->post_write(1, *w, 0, 1, 0, 8).ok());
  }
  // The destination's memory and signals were not touched.
  for (int i = 0; i < 4096; ++i) REQUIRE(wb->data()[i] == 0);
  CHECK(sb->value(0) == 0);

  auto [code, out] = a.epxctl({"status"});
  CHECK(code == 0);
  auto [jcode, json] = a.epxctl({"status", "--json"});
  CHECK(json.find("\"rejected\": \"1\"") != std::string::npos);
  CHECK(json.find("out of window bounds") != std::string::npos);
  // The other job never noticed.
  expect_exchange_ok(good);
}

TEST_CASE("a client killed with writes in flight: its job's ranks hear it, the daemon serves the next job") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"}), b(dir, {"b", "tcp"});
  auto victim = start_exchange(dir, {&a, &b}, "victim", 2, 200, 1 << 20);
  // Let it get going, then kill rank 1 mid-traffic.
  REQUIRE(victim[0]->wait_output("round 1", 60s));
  victim[1]->signal(SIGKILL);
  auto code0 = victim[0]->wait(30s);
  REQUIRE(code0.has_value());
  CHECK(*code0 != 0);  // rank 0 was told, not left hanging
  // Told either by the lost-rank event (naming rank 1) or by the daemon
  // rejecting writes to the lost rank.
  const std::string told = victim[0]->output();
  CHECK((told.find("rank 1") != std::string::npos || told.find("bad destination rank") != std::string::npos));
  // Both daemons live on and serve a new job.
  CHECK(a.process().running());
  CHECK(b.process().running());
  auto next = start_exchange(dir, {&a, &b}, "next", 2, 2, 128 << 10);
  expect_exchange_ok(next);
  auto [code, out] = b.epxctl({"status"});
  CHECK(out.find("victim") == std::string::npos);
}

TEST_CASE("a peer daemon killed mid-job: the waiting rank gets an error naming the lost rank in time") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp", {"--peer-timeout-ms", "1000"}}), b(dir, {"b", "tcp"});
  auto ca = a.connect(), cb = b.connect();
  auto fb = std::async(std::launch::async, [&] { return cb->join(join_options("pk", 2, 1, a.peer_address())); });
  auto ja = ca->join(join_options("pk", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = fb.get();
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());
  auto sa = ja->open_signals(2);
  REQUIRE(sa.ok());
  b.process().signal(SIGKILL);
  const auto start = std::chrono::steady_clock::now();
  auto s = sa->wait(1, 1, 20s);
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(s.code() == StatusCode::kUnavailable);
  CHECK(s.message().find("rank 1") != std::string::npos);
  CHECK(took < 10s);
}

TEST_CASE("same-node handle exchange: each local rank gets every local handle; missing ranks are named") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"}), b(dir, {"b", "tcp"});
  std::unique_ptr<Client> c[3] = {a.connect(), a.connect(), b.connect()};
  std::vector<std::future<Result<Job>>> f;
  for (uint32_t r = 0; r < 3; ++r) {
    f.push_back(
        std::async(std::launch::async, [&, r] { return c[r]->join(join_options("ipc", 3, r, a.peer_address())); }));
  }
  std::vector<Job> jobs;
  for (auto& x : f) {
    auto j = x.get();
    REQUIRE_MESSAGE(j.ok(), j.status().to_string());
    jobs.push_back(std::move(j.value()));
  }
  // Rank 2 is alone on its node: its exchange completes with itself only.
  auto alone = jobs[2].exchange_ipc("handle-2", 22, 5s);
  REQUIRE(alone.ok());
  REQUIRE(alone->size() == 1);
  CHECK(alone->at(0).rank == 2);
  // Ranks 0 and 1 share node a. Rank 0 alone first: times out naming rank 1.
  auto lonely = jobs[0].exchange_ipc("handle-0", 10, 500ms);
  CHECK(lonely.status().code() == StatusCode::kDeadlineExceeded);
  CHECK(lonely.status().message().find("missing: 1") != std::string::npos);
  auto other = std::async(std::launch::async, [&] { return jobs[1].exchange_ipc("handle-1", 11, 10s); });
  auto mine = jobs[0].exchange_ipc("handle-0", 10, 10s);
  auto theirs = other.get();
  REQUIRE(mine.ok());
  REQUIRE(theirs.ok());
  REQUIRE(mine->size() == 2);
  CHECK(mine->at(0).handle == "handle-0");
  CHECK(mine->at(1).handle == "handle-1");
  CHECK(mine->at(1).bytes == 11);
  CHECK(theirs->at(0).handle == "handle-0");
  CHECK(jobs[0].exchange_ipc(std::string(300, 'x'), 1, 1s).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("two jobs with the same id on one node never share a data plane") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"}), b(dir, {"b", "tcp"});
  // Tenant A: job "same" coordinated by daemon a, one rank on each daemon.
  auto a0 = a.connect("tenant-a"), a1 = b.connect("tenant-a");
  auto f = std::async(std::launch::async, [&] { return a1->join(join_options("same", 2, 1, a.peer_address())); });
  auto ja = a0->join(join_options("same", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = f.get();
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());
  // Tenant B: a different job that happens to use the same id, coordinated
  // by daemon b, with its rank on daemon a.
  auto intruder = a.connect("tenant-b");
  auto jx = intruder->join(join_options("same", 1, 0, b.peer_address()));
  CHECK(jx.status().code() == StatusCode::kFailedPrecondition);
  CHECK(jx.status().message().find("already in use") != std::string::npos);
  // Tenant A is untouched.
  auto w = ja->create_window(4096);
  CHECK(w.ok());
}

TEST_CASE("zero-length writes: a plain one is a no-op, one with a signal delivers the signal") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "shm"}), b(dir, {"b", "shm"});
  auto ca = a.connect(), cb = b.connect();
  auto fb = std::async(std::launch::async, [&] { return cb->join(join_options("z", 2, 1, a.peer_address())); });
  auto ja = ca->join(join_options("z", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = fb.get();
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());
  auto w = ja->create_window(4096);
  auto wb = jb->create_window(4096);
  auto sb = jb->open_signals(2);
  auto ring = ja->open_ring(16);
  REQUIRE(w.ok());
  REQUIRE(wb.ok());
  REQUIRE(sb.ok());
  REQUIRE(ring.ok());
  auto fbar = std::async(std::launch::async, [&] { return jb->barrier(10s); });
  REQUIRE(ja->barrier(10s).ok());
  REQUIRE(fbar.get().ok());
  REQUIRE((*ring)->post_write(1, *w, 0, 1, 0, 0).ok());
  REQUIRE((*ring)->post_write_signal(1, *w, 0, 1, 0, 0, SignalRef{1, 3}).ok());
  REQUIRE(sb->wait(1, 3, 10s).ok());
  REQUIRE((*ring)->flush(10s).ok());
  CHECK((*ring)->error().ok());
  CHECK(sb->value(0) == 0);
}

TEST_CASE("a client's windows and rings count against max_client_mib") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "shm", {"--max-client-mib", "1"}});
  auto c = a.connect();
  auto j = c->join(join_options("quota", 1, 0, ""));
  REQUIRE_MESSAGE(j.ok(), j.status().to_string());
  auto w1 = j->create_window(600 << 10);
  REQUIRE(w1.ok());
  auto w2 = j->create_window(600 << 10);
  CHECK(w2.status().code() == StatusCode::kResourceExhausted);
  CHECK(w2.status().message().find("max_client_mib") != std::string::npos);
  auto big_ring = j->open_ring(1 << 14);  // 516 KiB of slots
  CHECK(big_ring.status().code() == StatusCode::kResourceExhausted);
  auto small_ring = j->open_ring(16);
  CHECK(small_ring.ok());
  // Another client has its own quota.
  auto other = a.connect();
  auto jo = other->join(join_options("quota2", 1, 0, ""));
  REQUIRE_MESSAGE(jo.ok(), jo.status().to_string());
  CHECK(jo->create_window(600 << 10).ok());
}

TEST_CASE("strided writes and scoped signals through the daemons (ring ABI v2 from the host SDK)") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"}), b(dir, {"b", "tcp"});
  auto ca = a.connect(), cb = b.connect();
  auto fb = std::async(std::launch::async, [&] { return cb->join(join_options("strided", 2, 1, a.peer_address())); });
  auto ja = ca->join(join_options("strided", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = fb.get();
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());
  constexpr uint64_t kBytes = 1 << 20;
  auto w = ja->create_window(kBytes);
  auto wb = jb->create_window(kBytes);
  auto sb = jb->open_signals(4);
  auto ring = ja->open_ring(64);
  REQUIRE(w.ok());
  REQUIRE(wb.ok());
  REQUIRE(sb.ok());
  REQUIRE(ring.ok());
  for (uint64_t i = 0; i < kBytes; ++i) w->data()[i] = static_cast<uint8_t>(i * 7 + 3);
  auto fbar = std::async(std::launch::async, [&] { return jb->barrier(10s); });
  REQUIRE(ja->barrier(10s).ok());
  REQUIRE(fbar.get().ok());
  // 100 rows of 1000 bytes, source rows 1024 apart, destination rows 4096
  // apart: one descriptor; its signal comes once every row is in place.
  REQUIRE((*ring)->post_write_strided(1, *w, 0, 1024, 1, 0, 4096, 1000, 100, SignalRef{1, 1}).ok());
  REQUIRE(sb->wait(1, 1, 10s).ok());
  for (uint32_t row = 0; row < 100; ++row) {
    if (std::memcmp(wb->data() + row * 4096, w->data() + row * 1024, 1000) != 0) FAIL("row " << row << " not in place");
  }
  // A scoped signal after a plain write to the same rank.
  REQUIRE((*ring)->post_write(1, *w, 500000, 1, 500000, 4096).ok());
  REQUIRE((*ring)->post_signal_scoped(1, SignalRef{2, 5}, SignalScope::kAfterDestination).ok());
  REQUIRE(sb->wait(2, 5, 10s).ok());
  CHECK(std::memcmp(wb->data() + 500000, w->data() + 500000, 4096) == 0);
  // A batch whose last row leaves the destination window is refused whole.
  CHECK((*ring)->post_write_strided(1, *w, 0, 0, 1, kBytes - 1000 - 10 * 4096 + 1, 4096, 1000, 11).ok());
  Status flushed = (*ring)->flush(10s);
  CHECK(flushed.code() == StatusCode::kFailedPrecondition);
  CHECK_MESSAGE(flushed.message().find("out of window bounds") != std::string::npos, flushed.to_string());
  // The SDK checks the source side itself.
  CHECK((*ring)->post_write_strided(1, *w, 0, 4096, 1, 0, 0, 1000, 300).code() == StatusCode::kInvalidArgument);
  CHECK(sb->value(0) == 0);
}
