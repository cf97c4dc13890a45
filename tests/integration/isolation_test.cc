// One daemon, many tenants: bad arguments fail only their own call, and a
// daemon cannot be started twice on one peer port.
#include <doctest/doctest.h>

#include <string>

#include "epx/client.h"
#include "tests/harness/daemon_process.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

TEST_CASE("a second epxd on a taken peer port exits with an error naming the port") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  Process second({runfile("daemon/epxd"), "--node-name", "b", "--control-socket", dir.path() + "/b.sock",
                  "--peer-listen", a.peer_address(), "--provider", "tcp", "--rail-domains", "lo"},
                 dir.path() + "/b.log");
  second.close_stdin();
  auto code = second.wait(20s);
  REQUIRE_MESSAGE(code.has_value(), "the second epxd kept running on a taken port:\n" << second.output());
  CHECK(*code != 0);
  CHECK_MESSAGE(second.output().find("cannot listen for peers on " + a.peer_address()) != std::string::npos,
                second.output());
  // The first daemon still answers, alone.
  auto [c, out] = a.epxctl({"ping", "--peer", a.peer_address()});
  CHECK_MESSAGE(c == 0, out);
}

TEST_CASE("a bad coordinator address fails only its own call, before anything is dialled") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  auto client = a.connect();
  for (const std::string& bad : {std::string(4096, 'x') + ":1", std::string("127.0.0.1:99999"),
                                 std::string("127.0.0.1:0"), std::string("no-port"), std::string(":7470")}) {
    CAPTURE(bad.substr(0, 40));
    auto job = client->join(join_options("bad-coordinator", 1, 0, bad, 2s));
    REQUIRE_FALSE(job.ok());
    CHECK(job.status().code() == StatusCode::kInvalidArgument);
    CHECK(job.status().message().find("coordinator") != std::string::npos);
  }
  // The session survived every refusal: the same client joins normally.
  auto job = client->join(join_options("good", 1, 0, a.peer_address()));
  REQUIRE_MESSAGE(job.ok(), job.status().to_string());
  CHECK(client->status().ok());
}

TEST_CASE("a ring refuses ranks outside the job's world instead of truncating them to 16 bits") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  auto client = a.connect();
  auto job = client->join(join_options("ranks", 1, 0, a.peer_address()));
  REQUIRE_MESSAGE(job.ok(), job.status().to_string());
  auto window = job->create_window(4096);
  REQUIRE(window.ok());
  auto ring = job->open_ring(64);
  REQUIRE(ring.ok());
  // 65536 and 70000 would have become ranks 0 and 4464 with 16 bits kept.
  for (uint32_t rank : {1u, 65536u, 70000u, 0xFFFFFFFFu}) {
    CAPTURE(rank);
    Status s = (*ring)->post_write(rank, *window, 0, 1, 0, 64);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("outside the job's 1 ranks") != std::string::npos);
    CHECK((*ring)->post_write_signal(rank, *window, 0, 1, 0, 64, SignalRef{0, 1}).code() ==
          StatusCode::kInvalidArgument);
    CHECK((*ring)->post_signal(rank, SignalRef{0, 1}).code() == StatusCode::kInvalidArgument);
  }
  // Rank 0 (itself) is in the world: the write goes through.
  CHECK((*ring)->post_write(0, *window, 0, 1, 2048, 64).ok());
  CHECK((*ring)->flush().ok());
  CHECK((*ring)->error().ok());
}
