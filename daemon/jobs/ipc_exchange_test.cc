#include "daemon/jobs/ipc_exchange.h"

#include <doctest/doctest.h>

#include <optional>

namespace epx::daemon {
namespace {

using Answer = std::optional<Result<std::vector<v1::PeerHandle>>>;

v1::PeerHandle handle_of(uint32_t rank) {
  v1::PeerHandle h;
  h.set_rank(rank);
  h.set_handle("h" + std::to_string(rank));
  return h;
}

}  // namespace

TEST_CASE("the exchange answers every local rank once the last one posted") {
  IpcExchange x;
  const auto later = IpcExchange::Clock::now() + std::chrono::seconds(10);
  Answer a0, a1;
  x.post("j", {0, 1}, handle_of(0), later, [&](auto r) { a0 = std::move(r); });
  CHECK_FALSE(a0.has_value());
  x.post("j", {0, 1}, handle_of(1), later, [&](auto r) { a1 = std::move(r); });
  REQUIRE(a0.has_value());
  REQUIRE(a1.has_value());
  REQUIRE(a0->ok());
  CHECK(a0->value().size() == 2);
}

TEST_CASE("a local rank that leaves ends the others' waits at once, naming it") {
  IpcExchange x;
  const auto later = IpcExchange::Clock::now() + std::chrono::seconds(10);
  Answer a0, a2;
  x.post("j", {0, 1, 2}, handle_of(0), later, [&](auto r) { a0 = std::move(r); });
  x.post("j", {0, 1, 2}, handle_of(2), later, [&](auto r) { a2 = std::move(r); });
  x.forget("other-job", 1);  // another job's rank: no effect here
  CHECK_FALSE(a0.has_value());
  x.forget("j", 1);  // rank 1 never posted and now never will
  REQUIRE(a0.has_value());
  REQUIRE(a2.has_value());
  CHECK(a0->status().code() == StatusCode::kUnavailable);
  CHECK(a0->status().message().find("local rank 1 left") != std::string::npos);

  // A waiting rank that leaves itself is cancelled; the rest fail as above.
  Answer b0, b1;
  x.post("k", {0, 1, 2}, handle_of(0), later, [&](auto r) { b0 = std::move(r); });
  x.post("k", {0, 1, 2}, handle_of(1), later, [&](auto r) { b1 = std::move(r); });
  x.forget("k", 0);
  REQUIRE(b0.has_value());
  REQUIRE(b1.has_value());
  CHECK(b0->status().code() == StatusCode::kCancelled);
  CHECK(b1->status().code() == StatusCode::kUnavailable);
}

}  // namespace epx::daemon
