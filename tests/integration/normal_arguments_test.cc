// NormalBuffer's argument checks, against a real daemon and job: a bad shape
// or option is refused by name before any memory is allocated or any rank
// is waited for, so they run (and must pass) without a GPU.
#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

#include "epx/client.h"
#include "epx/normal.h"
#include "tests/harness/daemon_process.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

TEST_CASE("NormalBuffer::create refuses bad shapes by name, before touching a GPU") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  auto client = a.connect();
  auto job = client->join(join_options("normal-args", 1, 0, a.peer_address()));
  REQUIRE_MESSAGE(job.ok(), job.status().to_string());
  NormalOptions good;
  good.num_experts = 8;
  good.hidden = 1024;
  good.num_max_tokens_per_rank = 16;
  good.num_topk = 4;
  struct Bad {
    const char* what;
    NormalOptions options;
    const char* named;
  };
  auto with = [&](auto edit) {
    NormalOptions o = good;
    edit(o);
    return o;
  };
  const Bad cases[] = {
      {"hidden not a multiple of 128", with([](auto& o) { o.hidden = 1000; }), "hidden=1000"},
      {"no experts", with([](auto& o) { o.num_experts = 0; }), "num_experts=0"},
      {"negative experts", with([](auto& o) { o.num_experts = -3; }), "num_experts=-3"},
      {"no tokens", with([](auto& o) { o.num_max_tokens_per_rank = 0; }), "num_max_tokens_per_rank=0"},
      {"no top-k", with([](auto& o) { o.num_topk = 0; }), "num_topk=0"},
      {"top-k beyond the kernels' limit", with([](auto& o) { o.num_topk = 33; }), "num_topk=33"},
      {"zero timeout", with([](auto& o) { o.timeout = 0ms; }), "timeout"},
  };
  for (const Bad& c : cases) {
    CAPTURE(c.what);
    auto b = NormalBuffer::create(*job, c.options);
    REQUIRE_FALSE(b.ok());
    CHECK(b.status().code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(b.status().message().find(c.named) != std::string::npos, b.status().to_string());
  }
  // The job and the session are intact: a barrier still works.
  CHECK(job->barrier(5s).ok());
}

// The kernels address node v's ranks as [v * P, (v + 1) * P): a job whose
// nodes hold different numbers of ranks, or a node's ranks apart, is refused
// by name on every rank (still before any GPU work).
TEST_CASE("NormalBuffer::create refuses a job whose nodes are not P consecutive ranks each") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  DaemonProcess b(dir, {"b", "tcp"});
  struct Layout {
    const char* what;
    std::vector<DaemonProcess*> daemon_of;  // per rank
  };
  const Layout layouts[] = {
      {"node a holds ranks 0 and 2, node b rank 1", {&a, &b, &a}},
      {"node a holds 2 ranks, node b 1", {&a, &a, &b}},
  };
  int job_number = 0;
  for (const Layout& l : layouts) {
    CAPTURE(l.what);
    const uint32_t world = static_cast<uint32_t>(l.daemon_of.size());
    const std::string job_id = "normal-nodes-" + std::to_string(job_number++);
    std::vector<Status> results(world);
    std::vector<std::thread> ranks;
    for (uint32_t r = 0; r < world; ++r) {
      ranks.emplace_back([&, r] {
        auto client = l.daemon_of[r]->connect();
        auto job = client->join(join_options(job_id, world, r, a.peer_address()));
        if (!job.ok()) {
          results[r] = job.status();
          return;
        }
        NormalOptions o;
        o.num_experts = 2 * static_cast<int>(world);
        o.hidden = 1024;
        o.num_max_tokens_per_rank = 16;
        o.num_topk = 2;
        auto buffer = NormalBuffer::create(*job, o);
        results[r] = buffer.ok() ? Status() : buffer.status();
      });
    }
    for (auto& t : ranks) t.join();
    for (uint32_t r = 0; r < world; ++r) {
      CAPTURE(r);
      CHECK(results[r].code() == StatusCode::kFailedPrecondition);
      CHECK_MESSAGE(results[r].message().find("consecutive") != std::string::npos, results[r].to_string());
    }
  }
}
