// LowLatencyBuffer's argument checks, against a real daemon and job: a bad
// shape or option is refused by name before any memory is allocated or
// any rank is waited for, so they run (and must pass) without a GPU.
#include <doctest/doctest.h>

#include <string>

#include "epx/client.h"
#include "epx/low_latency.h"
#include "tests/harness/daemon_process.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

namespace {

Status create_with(Job& job, LowLatencyOptions o) {
  auto b = LowLatencyBuffer::create(job, o);
  return b.ok() ? Status() : b.status();
}

}  // namespace

TEST_CASE("LowLatencyBuffer::create refuses bad shapes by name, before touching a GPU") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  auto client = a.connect();
  auto job = client->join(join_options("ll-args", 1, 0, a.peer_address()));
  REQUIRE_MESSAGE(job.ok(), job.status().to_string());
  LowLatencyOptions good;
  good.num_experts = 8;
  good.hidden = 1024;
  good.num_max_dispatch_tokens_per_rank = 16;
  good.num_topk = 4;
  struct Bad {
    const char* what;
    LowLatencyOptions options;
    const char* named;
  };
  auto with = [&](auto edit) {
    LowLatencyOptions o = good;
    edit(o);
    return o;
  };
  const Bad cases[] = {
      {"hidden not a multiple of 128", with([](auto& o) { o.hidden = 1000; }), "hidden=1000"},
      {"no experts", with([](auto& o) { o.num_experts = 0; }), "num_experts=0"},
      {"no tokens", with([](auto& o) { o.num_max_dispatch_tokens_per_rank = 0; }),
       "num_max_dispatch_tokens_per_rank=0"},
      {"no top-k", with([](auto& o) { o.num_topk = 0; }), "num_topk=0"},
      {"zero timeout", with([](auto& o) { o.timeout = 0ms; }), "timeout"},
  };
  for (const Bad& c : cases) {
    CAPTURE(c.what);
    const Status s = create_with(*job, c.options);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(s.message().find(c.named) != std::string::npos, s.to_string());
  }
  // The job and the session are intact: a barrier still works.
  CHECK(job->barrier(5s).ok());
}
