#include "daemon/proxy/rail_health.h"

#include <doctest/doctest.h>

using namespace epx::daemon;
using namespace std::chrono_literals;

namespace {

RailHealthOptions options() {
  RailHealthOptions o;
  o.failures = 3;
  o.stall = 1000ms;
  o.cooldown = 500ms;
  return o;
}

}  // namespace

TEST_CASE("consecutive failures make a rail unhealthy; a success in between resets the count") {
  RailHealth h(2, options());
  const auto t0 = RailHealth::Clock::now();
  h.on_failure("fi_writemsg: Input/output error", t0);
  h.on_failure("x", t0);
  h.on_success(t0);
  h.on_failure("x", t0);
  h.on_failure("x", t0);
  CHECK(h.state() == RailState::kHealthy);
  h.on_failure("completion: Input/output error: injected", t0);
  CHECK(h.state() == RailState::kUnhealthy);
  CHECK_FALSE(h.usable());
  const RailHealthReport r = h.report();
  CHECK(r.changes == 1);
  CHECK(r.failed_ops == 5);
  CHECK(r.why.find("3 consecutive failed writes, last: completion: Input/output error: injected") != std::string::npos);
}

TEST_CASE("a stalled write makes a rail unhealthy; after the cool-down it is retried, then healthy on a success") {
  RailHealth h(0, options());
  const auto t0 = RailHealth::Clock::now();
  h.tick(200ms, 0, t0);
  CHECK(h.state() == RailState::kHealthy);
  h.tick(1500ms, 7, t0);
  CHECK(h.state() == RailState::kUnhealthy);
  CHECK(h.report().why.find("7 write(s) in flight longer than 1000 ms (oldest 1500 ms)") != std::string::npos);
  CHECK(h.report().stalled_ops == 7);
  // Still stalled after the cool-down: stays unhealthy, not retried.
  h.tick(2100ms, 7, t0 + 600ms);
  CHECK(h.state() == RailState::kUnhealthy);
  // The stalled writes completed (the link is back); cool-down not over yet.
  h.on_success(t0 + 700ms);
  h.tick(0ms, 0, t0 + 800ms);
  CHECK(h.state() == RailState::kUnhealthy);
  h.tick(0ms, 0, t0 + 1300ms);
  CHECK(h.state() == RailState::kRetrying);
  CHECK(h.usable());
  CHECK_FALSE(h.report().why.empty());  // why it was unhealthy stays while retrying
  h.on_success(t0 + 1400ms);
  CHECK(h.state() == RailState::kHealthy);
  CHECK(h.report().why.empty());
  CHECK(h.report().changes == 1);
}

TEST_CASE("one failure while retrying makes the rail unhealthy again") {
  RailHealth h(1, options());
  const auto t0 = RailHealth::Clock::now();
  for (int i = 0; i < 3; ++i) h.on_failure("x", t0);
  h.tick(0ms, 0, t0 + 600ms);
  REQUIRE(h.state() == RailState::kRetrying);
  h.on_failure("fi_writemsg: Connection refused", t0 + 650ms);
  CHECK(h.state() == RailState::kUnhealthy);
  CHECK(h.report().changes == 2);
}

TEST_CASE("a link down is unhealthy at once and stays so past the cool-down; a link up retries at once") {
  RailHealth h(1, options());
  const auto t0 = RailHealth::Clock::now();
  h.on_link(false, "net/eth1 reports the link down", t0);
  CHECK(h.state() == RailState::kUnhealthy);
  CHECK(h.report().why == "link down: net/eth1 reports the link down");
  h.tick(0ms, 0, t0 + 10s);  // long past the cool-down: still down
  CHECK(h.state() == RailState::kUnhealthy);
  h.on_link(true, "net/eth1 reports the link up", t0 + 10s);
  CHECK(h.state() == RailState::kRetrying);
  h.on_success(t0 + 10s);
  CHECK(h.state() == RailState::kHealthy);
  CHECK(h.report().changes == 1);
  // Up again while healthy changes nothing.
  h.on_link(true, "again", t0 + 11s);
  CHECK(h.state() == RailState::kHealthy);
}
