#include "daemon/jobs/coordinator.h"

#include <doctest/doctest.h>

#include <optional>

using namespace epx;
using namespace epx::daemon;
using Clock = Coordinator::Clock;

namespace {

v1::RankEntry entry(uint32_t rank, const std::string& node) {
  v1::RankEntry e;
  e.set_rank(rank);
  e.set_local_rank(rank % 2);
  e.set_node(node);
  e.set_daemon_address(node + ":7470");
  e.set_pid(1000 + rank);
  return e;
}

// Captures the one reply a registration gets.
struct Answer {
  std::optional<Result<v1::RankTable>> result;
  Coordinator::Reply reply() {
    return [this](Result<v1::RankTable> r) {
      REQUIRE_FALSE(result.has_value());  // exactly once
      result.emplace(std::move(r));
    };
  }
};

const auto kLater = Clock::now() + std::chrono::hours(1);

// The caller is the daemon of node `node` (entry()'s address), as the Peer
// service's check would establish.
Coordinator::OwnerCheck from(const std::string& node) {
  return [address = node + ":7470"](const std::string& registered) {
    return registered == address ? Status() : permission_denied(address + " is not " + registered);
  };
}

}  // namespace

TEST_CASE("the barrier answers every rank with the same full table once all joined") {
  Coordinator c("coord:7470");
  Answer a[4];
  for (uint32_t r : {2u, 0u, 3u}) {
    c.register_rank("j", 4, entry(r, r < 2 ? "a" : "b"), kLater, a[r].reply());
    CHECK_FALSE(a[r].result.has_value());
  }
  c.register_rank("j", 4, entry(1, "a"), kLater, a[1].reply());
  for (auto& ans : a) {
    REQUIRE(ans.result.has_value());
    REQUIRE(ans.result->ok());
  }
  const auto& t = a[0].result->value();
  CHECK(t.world_size() == 4);
  CHECK(t.coordinator() == "coord:7470");
  REQUIRE(t.ranks_size() == 4);
  for (int r = 0; r < 4; ++r) CHECK(t.ranks(r).rank() == static_cast<uint32_t>(r));
  for (auto& ans : a) CHECK(ans.result->value().SerializeAsString() == t.SerializeAsString());
  auto st = c.status();
  REQUIRE(st.size() == 1);
  CHECK(st[0].state() == "formed");
}

TEST_CASE("bad registrations get typed errors at once") {
  Coordinator c("coord:1");
  Answer ok, out_of_range, dup, mismatch, zero;
  c.register_rank("j", 2, entry(0, "a"), kLater, ok.reply());
  c.register_rank("j", 2, entry(5, "a"), kLater, out_of_range.reply());
  c.register_rank("j", 2, entry(0, "b"), kLater, dup.reply());
  c.register_rank("j", 3, entry(1, "b"), kLater, mismatch.reply());
  c.register_rank("k", 0, entry(0, "b"), kLater, zero.reply());
  CHECK_FALSE(ok.result.has_value());
  CHECK(out_of_range.result->status().code() == StatusCode::kInvalidArgument);
  CHECK(dup.result->status().code() == StatusCode::kAlreadyExists);
  CHECK(dup.result->status().message().find("node a") != std::string::npos);
  CHECK(mismatch.result->status().code() == StatusCode::kFailedPrecondition);
  CHECK(zero.result->status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("the deadline fails waiting ranks naming the missing ones, and frees their slots") {
  Coordinator c("coord:1");
  Answer a0, a2;
  const auto t0 = Clock::now();
  c.register_rank("j", 4, entry(0, "a"), t0 + std::chrono::seconds(1), a0.reply());
  c.register_rank("j", 4, entry(2, "b"), t0 + std::chrono::seconds(5), a2.reply());
  c.expire(t0 + std::chrono::milliseconds(500));
  CHECK_FALSE(a0.result.has_value());
  c.expire(t0 + std::chrono::seconds(2));
  REQUIRE(a0.result.has_value());
  CHECK(a0.result->status().code() == StatusCode::kDeadlineExceeded);
  CHECK(a0.result->status().message().find("missing ranks: 1,3") != std::string::npos);
  CHECK_FALSE(a2.result.has_value());
  // Rank 0 may retry: its slot is free again.
  Answer retry;
  c.register_rank("j", 4, entry(0, "a"), kLater, retry.reply());
  CHECK_FALSE(retry.result.has_value());
  c.expire(t0 + std::chrono::seconds(6));
  CHECK(a2.result->status().message().find("missing ranks: 1,3") != std::string::npos);
}

TEST_CASE("a cancelled registration is answered and its rank freed; stale tickets do nothing") {
  Coordinator c("coord:1");
  Answer a, b, c2;
  uint64_t ticket = c.register_rank("j", 2, entry(0, "a"), kLater, a.reply());
  CHECK(ticket != 0);
  c.cancel_registration("j", 0, ticket + 100);  // not this registration
  CHECK_FALSE(a.result.has_value());
  c.cancel_registration("j", 0, ticket);
  REQUIRE(a.result.has_value());
  CHECK(a.result->status().code() == StatusCode::kCancelled);
  CHECK(c.job_count() == 0);
  c.register_rank("j", 2, entry(0, "a"), kLater, b.reply());
  c.register_rank("j", 2, entry(1, "b"), kLater, c2.reply());
  CHECK(b.result->ok());
}

TEST_CASE("leaving a formed job notifies the other members' daemons; the last leave removes the job") {
  Coordinator c("coord:1");
  Answer a[3];
  c.register_rank("j", 3, entry(0, "a"), kLater, a[0].reply());
  c.register_rank("j", 3, entry(1, "a"), kLater, a[1].reply());
  c.register_rank("j", 3, entry(2, "b"), kLater, a[2].reply());
  auto n = c.leave("j", 2, "client died", from("b"));
  REQUIRE(n.ok());
  REQUIRE(n->size() == 1);  // daemon a (ranks 0 and 1); daemon b has no one left
  CHECK(n->front().daemon_address == "a:7470");
  CHECK(n->front().event.rank_left().rank() == 2);
  CHECK(n->front().event.rank_left().reason() == "client died");
  CHECK(c.leave("j", 2, "again", from("b")).status().code() == StatusCode::kNotFound);
  auto st = c.status();
  REQUIRE(st.size() == 1);
  CHECK_FALSE(st[0].members(2).present());
  // A formed job does not take a replacement rank.
  Answer late;
  c.register_rank("j", 3, entry(2, "c"), kLater, late.reply());
  CHECK(late.result->status().code() == StatusCode::kAlreadyExists);
  REQUIRE(c.leave("j", 0, "done", from("a")).ok());
  REQUIRE(c.leave("j", 1, "done", from("a")).ok());
  CHECK(c.job_count() == 0);
}

TEST_CASE("shutdown fails waiters and tells member daemons of formed jobs") {
  Coordinator c("coord:1");
  Answer w, f0, f1;
  c.register_rank("forming", 2, entry(0, "a"), kLater, w.reply());
  c.register_rank("formed", 2, entry(0, "a"), kLater, f0.reply());
  c.register_rank("formed", 2, entry(1, "b"), kLater, f1.reply());
  auto notices = c.shutdown("SIGTERM");
  CHECK(w.result->status().code() == StatusCode::kUnavailable);
  CHECK(notices.size() == 2);
  for (const auto& n : notices) CHECK(n.event.has_coordinator_gone());
  CHECK(c.job_count() == 0);
}

TEST_CASE("a barrier completes when every present rank arrived, and names the missing at the deadline") {
  Coordinator c("coord:1");
  Answer a[3];
  for (uint32_t r = 0; r < 3; ++r) c.register_rank("j", 3, entry(r, "a"), kLater, a[r].reply());
  std::optional<Status> b[3];
  const auto t0 = Clock::now();
  c.barrier(
      "j", 0, t0 + std::chrono::seconds(1), [&](Status s) { b[0] = s; }, from("a"));
  c.barrier(
      "j", 1, t0 + std::chrono::seconds(5), [&](Status s) { b[1] = s; }, from("a"));
  CHECK_FALSE(b[0].has_value());
  c.expire(t0 + std::chrono::seconds(2));
  REQUIRE(b[0].has_value());
  CHECK(b[0]->code() == StatusCode::kDeadlineExceeded);
  CHECK(b[0]->message().find("not arrived: 0,2") == std::string::npos);  // 0 had arrived
  CHECK(b[0]->message().find("2") != std::string::npos);
  c.barrier(
      "j", 0, kLater, [&](Status s) { b[0] = s; }, from("a"));
  c.barrier(
      "j", 2, kLater, [&](Status s) { b[2] = s; }, from("a"));
  CHECK(b[0]->ok());
  CHECK(b[1]->ok());
  CHECK(b[2]->ok());
  // A second round; a rank leaving fails the waiters naming it.
  std::optional<Status> w;
  c.barrier(
      "j", 0, kLater, [&](Status s) { w = s; }, from("a"));
  REQUIRE(c.leave("j", 2, "crashed", from("a")).ok());
  REQUIRE(w.has_value());
  CHECK(w->code() == StatusCode::kUnavailable);
  CHECK(w->message().find("rank 2") != std::string::npos);
}

TEST_CASE("a rank that leaves while at the barrier gets its own arrival answered, so its call finishes") {
  Coordinator c("coord:1");
  Answer a[3];
  for (uint32_t r = 0; r < 3; ++r) c.register_rank("j", 3, entry(r, r == 2 ? "b" : "a"), kLater, a[r].reply());
  std::optional<Status> own, other;
  c.barrier(
      "j", 2, kLater, [&](Status s) { own = s; }, from("b"));
  c.barrier(
      "j", 0, kLater, [&](Status s) { other = s; }, from("a"));
  // Rank 2's daemon stops: it releases the rank while the rank's barrier
  // call still waits here. Without an answer that call would never finish.
  REQUIRE(c.leave("j", 2, "daemon b stopped", from("b")).ok());
  REQUIRE(own.has_value());
  CHECK(own->code() == StatusCode::kCancelled);
  CHECK(own->message().find("rank 2") != std::string::npos);
  REQUIRE(other.has_value());
  CHECK(other->code() == StatusCode::kUnavailable);
  CHECK(other->message().find("daemon b stopped") != std::string::npos);
}

TEST_CASE("only the daemon that registered a rank may release it or bring it to a barrier") {
  Coordinator c("coord:1");
  Answer a[2];
  c.register_rank("j", 2, entry(0, "a"), kLater, a[0].reply());
  c.register_rank("j", 2, entry(1, "b"), kLater, a[1].reply());
  REQUIRE(a[0].result->ok());

  auto forged = c.leave("j", 0, "forged", from("b"));
  CHECK(forged.status().code() == StatusCode::kPermissionDenied);
  std::optional<Status> refused;
  c.barrier(
      "j", 0, kLater, [&](Status s) { refused = s; }, from("b"));
  REQUIRE(refused.has_value());
  CHECK(refused->code() == StatusCode::kPermissionDenied);

  // The job is as it was: both ranks present, and a real barrier completes.
  auto st = c.status();
  REQUIRE(st.size() == 1);
  CHECK(st[0].members(0).present());
  std::optional<Status> b[2];
  c.barrier(
      "j", 0, kLater, [&](Status s) { b[0] = s; }, from("a"));
  c.barrier(
      "j", 1, kLater, [&](Status s) { b[1] = s; }, from("b"));
  REQUIRE(b[0].has_value());
  CHECK(b[0]->ok());
  CHECK(b[1]->ok());
  // The rank's own daemon may release it.
  CHECK(c.leave("j", 0, "done", from("a")).ok());
}

TEST_CASE("a rank still forming is released only by its own daemon") {
  Coordinator c("coord:1");
  Answer a;
  c.register_rank("j", 2, entry(0, "a"), kLater, a.reply());
  CHECK(c.leave("j", 0, "forged", from("b")).status().code() == StatusCode::kPermissionDenied);
  CHECK_FALSE(a.result.has_value());  // still waiting at the bootstrap barrier
  CHECK(c.leave("j", 0, "gave up", from("a")).ok());
  REQUIRE(a.result.has_value());
  CHECK(a.result->status().code() == StatusCode::kCancelled);
}
