// Rank bootstrap across real daemons: two epxd processes on loopback (tcp
// provider), clients in this process and in epxctl processes.
#include <doctest/doctest.h>
#include <signal.h>

#include <future>

#include "epx/client.h"
#include "tests/harness/daemon_process.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

namespace {

// The harness's options, with local ranks as two ranks per node would have.
JoinOptions paired_join_options(const std::string& job, uint32_t world, uint32_t rank, const std::string& coordinator,
                                std::chrono::milliseconds timeout = 20s) {
  JoinOptions o = join_options(job, world, rank, coordinator, timeout);
  o.local_rank = rank % 2;
  return o;
}

// Waits for an event of `kind`, skipping others.
std::optional<Event> wait_event(Client& c, Event::Kind kind, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (auto e = c.next_event(100ms); e && e->kind == kind) return e;
  }
  return std::nullopt;
}

std::string serialize(const RankTable& t) { return t.to_string(); }

// Waits until `coordinator` holds `rank` of `job` at its bootstrap barrier,
// so that a join made next is ordered after that rank's.
void wait_registered(const DaemonProcess& coordinator, const std::string& job, uint32_t rank) {
  REQUIRE_MESSAGE(wait_until([&] { return coordinator.coordinates_rank(job, rank); }, 10s),
                  "rank " << rank << " of job " << job << " was not registered at coordinator "
                          << coordinator.peer_address() << " within 10 s");
}

}  // namespace

TEST_CASE("4 ranks on 2 daemons get identical full rank tables; leave releases them") {
  TempDir dir;
  DaemonProcess a(dir, {"a"}), b(dir, {"b"});
  std::vector<std::unique_ptr<Client>> clients;
  for (int r = 0; r < 4; ++r) clients.push_back((r < 2 ? a : b).connect("rank" + std::to_string(r)));

  std::vector<std::future<Result<Job>>> joins;
  for (uint32_t r = 0; r < 4; ++r) {
    joins.push_back(std::async(
        std::launch::async, [&, r] { return clients[r]->join(paired_join_options("job4", 4, r, a.peer_address())); }));
  }
  std::vector<Job> jobs;
  for (auto& f : joins) {
    auto j = f.get();
    REQUIRE_MESSAGE(j.ok(), j.status().to_string());
    jobs.push_back(std::move(j.value()));
  }
  const RankTable& t0 = jobs[0].table();
  CHECK(t0.world_size == 4);
  REQUIRE(t0.ranks.size() == 4);
  for (uint32_t r = 0; r < 4; ++r) {
    CHECK(t0.ranks[r].rank == r);
    CHECK(t0.ranks[r].node == (r < 2 ? "a" : "b"));
    CHECK(t0.ranks[r].daemon_address == (r < 2 ? a.peer_address() : b.peer_address()));
    CHECK(t0.ranks[r].local_rank == r % 2);
    REQUIRE(t0.ranks[r].rails.size() >= 1);
    CHECK_FALSE(t0.ranks[r].rails[0].address.empty());
  }
  for (auto& j : jobs) CHECK(serialize(j.table()) == serialize(t0));
  CHECK(t0.same_node_ranks(2) == std::vector<uint32_t>{2, 3});

  auto [code, out] = a.epxctl({"jobs"});
  CHECK(code == 0);
  CHECK(out.find("job4") != std::string::npos);
  CHECK(out.find("formed") != std::string::npos);

  // Rank 3 leaves: the others hear about it.
  REQUIRE(jobs[3].leave().ok());
  auto lost = wait_event(*clients[0], Event::Kind::kRankLost, 5s);
  REQUIRE(lost.has_value());
  CHECK(lost->rank == 3);
  CHECK(lost->job_id == "job4");
  for (int r = 0; r < 3; ++r) REQUIRE(jobs[r].leave().ok());
  // The last leave removed the job from its coordinator.
  auto [code2, out2] = a.epxctl({"jobs", "--json"});
  CHECK(code2 == 0);
  CHECK(out2.find("job4") == std::string::npos);
}

TEST_CASE("join errors are typed and come within the deadline") {
  TempDir dir;
  DaemonProcess a(dir, {"a"}), b(dir, {"b"});
  auto c0 = a.connect(), c1 = b.connect(), c2 = b.connect();

  SUBCASE("rank out of range") {
    auto j = c0->join(paired_join_options("e1", 2, 2, a.peer_address()));
    CHECK(j.status().code() == StatusCode::kInvalidArgument);
    CHECK(j.status().message().find("rank 2") != std::string::npos);
  }
  SUBCASE("duplicate rank") {
    auto first =
        std::async(std::launch::async, [&] { return c0->join(paired_join_options("e2", 2, 0, a.peer_address(), 3s)); });
    wait_registered(a, "e2", 0);
    auto dup = c1->join(paired_join_options("e2", 2, 0, a.peer_address()));
    CHECK(dup.status().code() == StatusCode::kAlreadyExists);
    CHECK(dup.status().message().find("rank 0") != std::string::npos);
    CHECK(first.get().status().code() == StatusCode::kDeadlineExceeded);
  }
  SUBCASE("world size mismatch") {
    auto first =
        std::async(std::launch::async, [&] { return c0->join(paired_join_options("e3", 2, 0, a.peer_address(), 3s)); });
    wait_registered(a, "e3", 0);
    auto bad = c1->join(paired_join_options("e3", 4, 1, a.peer_address()));
    CHECK(bad.status().code() == StatusCode::kFailedPrecondition);
    CHECK(bad.status().message().find("world size 2") != std::string::npos);
    (void)first.get();
  }
  SUBCASE("the same client joining the same job twice") {
    auto first =
        std::async(std::launch::async, [&] { return c1->join(paired_join_options("e4", 2, 0, a.peer_address(), 3s)); });
    wait_registered(a, "e4", 0);
    auto again = c1->join(paired_join_options("e4", 2, 1, a.peer_address()));
    CHECK(again.status().code() == StatusCode::kAlreadyExists);
    (void)first.get();
  }
  SUBCASE("coordinator unreachable") {
    const auto start = std::chrono::steady_clock::now();
    auto j = c0->join(paired_join_options("e5", 2, 0, "127.0.0.1:1", 3s));
    CHECK(j.status().code() == StatusCode::kUnavailable);
    CHECK(j.status().message().find("127.0.0.1:1") != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - start < 10s);
  }
  SUBCASE("missing ranks at the deadline are named") {
    auto r2 =
        std::async(std::launch::async, [&] { return c2->join(paired_join_options("e6", 4, 2, a.peer_address(), 3s)); });
    wait_registered(a, "e6", 2);  // rank 2 is there before rank 0's deadline
    const auto start = std::chrono::steady_clock::now();
    auto j = c0->join(paired_join_options("e6", 4, 0, a.peer_address(), 1s));
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    CHECK(j.status().code() == StatusCode::kDeadlineExceeded);
    CHECK(j.status().message().find("missing ranks: 1,3") != std::string::npos);
    CHECK(r2.get().status().code() == StatusCode::kDeadlineExceeded);
  }
  SUBCASE("a bad job id") {
    auto j = c0->join(paired_join_options("has space", 1, 0, ""));
    CHECK(j.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a client killed with SIGKILL is removed and the job reports it") {
  TempDir dir;
  DaemonProcess a(dir, {"a"}), b(dir, {"b"});
  // Ranks 0 and 1 are epxctl processes on daemon b; rank 2 is here on a.
  std::vector<std::unique_ptr<Process>> holders;
  for (int r = 0; r < 2; ++r) {
    holders.push_back(std::make_unique<Process>(
        std::vector<std::string>{runfile("tools/epxctl"), "--socket", b.socket(), "join", "--job", "k", "--world", "3",
                                 "--rank", std::to_string(r), "--coordinator", a.peer_address(), "--hold"},
        dir.path() + "/holder" + std::to_string(r) + ".log"));
  }
  auto c = a.connect();
  auto job = c->join(paired_join_options("k", 3, 2, a.peer_address()));
  REQUIRE_MESSAGE(job.ok(), job.status().to_string());
  REQUIRE(holders[1]->wait_output("holding rank 1", 10s));

  holders[1]->signal(SIGKILL);
  auto lost = wait_event(*c, Event::Kind::kRankLost, 10s);
  REQUIRE_MESSAGE(lost.has_value(), "no RankLost event after SIGKILL");
  CHECK(lost->rank == 1);
  CHECK(lost->node == "b");
  CHECK(lost->reason.find("disconnected") != std::string::npos);
  // The surviving epxctl rank hears it too.
  CHECK(holders[0]->wait_output("rank 1 of job k lost", 10s));

  auto [code, out] = a.epxctl({"jobs"});
  CHECK(code == 0);
  CHECK(out.find("ranks present 2/3") != std::string::npos);
  // The killed client is gone from its daemon.
  auto [code_b, out_b] = b.epxctl({"status"});
  CHECK(out_b.find("k/1") == std::string::npos);
  CHECK(out_b.find("k/0") != std::string::npos);
}

TEST_CASE("a daemon stopped with SIGTERM tells its clients, and the job's other ranks") {
  TempDir dir;
  DaemonProcess a(dir, {"a"}), b(dir, {"b"});
  auto ca = a.connect(), cb = b.connect();
  auto f = std::async(std::launch::async, [&] { return cb->join(paired_join_options("t", 2, 1, a.peer_address())); });
  auto ja = ca->join(paired_join_options("t", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = f.get();
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());

  b.process().signal(SIGTERM);
  auto bye = wait_event(*cb, Event::Kind::kDaemonShutdown, 10s);
  REQUIRE_MESSAGE(bye.has_value(), "client of the stopped daemon got no DaemonShutdown event");
  CHECK(bye->reason.find("SIGTERM") != std::string::npos);
  auto code = b.process().wait(10s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  // Calls after the shutdown fail with a clear status, not a hang.
  auto st = cb->status();
  CHECK(st.status().code() == StatusCode::kUnavailable);
  CHECK(st.status().message().find("shutting down") != std::string::npos);
  CHECK_FALSE(cb->session_status().ok());
  // The rank on the surviving daemon learns that rank 1 is gone.
  auto lost = wait_event(*ca, Event::Kind::kRankLost, 10s);
  REQUIRE(lost.has_value());
  CHECK(lost->rank == 1);
}

TEST_CASE("a coordinator stopped with SIGTERM aborts the job on the other daemons") {
  TempDir dir;
  DaemonProcess a(dir, {"a"}), b(dir, {"b"});
  auto ca = a.connect(), cb = b.connect();
  auto f = std::async(std::launch::async, [&] { return cb->join(paired_join_options("c", 2, 1, a.peer_address())); });
  auto ja = ca->join(paired_join_options("c", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = f.get();  // held: a Job leaves when destroyed
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());
  a.process().signal(SIGTERM);
  auto aborted = wait_event(*cb, Event::Kind::kJobAborted, 10s);
  REQUIRE(aborted.has_value());
  CHECK(aborted->job_id == "c");
}

TEST_CASE("no daemon: the SDK fails fast with a clear error") {
  TempDir dir;
  ClientOptions o;
  o.rpc_timeout = 1s;
  auto start = std::chrono::steady_clock::now();
  auto missing = Client::connect(dir.path() + "/none.sock", o);
  CHECK(missing.status().code() == StatusCode::kUnavailable);
  CHECK(missing.status().message().find("none.sock") != std::string::npos);

  // A stale socket file (daemon crashed) is not a hang either.
  {
    TempDir d2;
    DaemonProcess a(d2, {"a"});
    a.process().signal(SIGKILL);
    REQUIRE(a.process().wait(5s).has_value());
    auto stale = Client::connect(a.socket(), o);
    CHECK(stale.status().code() == StatusCode::kUnavailable);
    CHECK(stale.status().message().find(a.socket()) != std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - start < 15s);
}

TEST_CASE("a daemon killed mid-session: its clients see the session end") {
  TempDir dir;
  DaemonProcess a(dir, {"a"});
  auto c = a.connect();
  a.process().signal(SIGKILL);
  auto lost = wait_event(*c, Event::Kind::kSessionLost, 10s);
  REQUIRE(lost.has_value());
  auto st = c->status();
  CHECK(st.status().code() == StatusCode::kUnavailable);
}
