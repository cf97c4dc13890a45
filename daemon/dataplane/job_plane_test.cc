// JobPlane::repair: our rails re-paired away from a peer daemon's rails
// that its pings report unusable, and back once they are usable again.
#include "daemon/dataplane/job_plane.h"

#include <doctest/doctest.h>

using namespace epx;
using namespace epx::daemon;

namespace {

// Rank 0 here, rank 1 on daemon "b:7470"; both nodes have three efa rails.
v1::RankTable table() {
  v1::RankTable t;
  t.set_job_id("repair");
  t.set_world_size(2);
  for (uint32_t r = 0; r < 2; ++r) {
    auto* e = t.add_ranks();
    e->set_rank(r);
    e->set_daemon_address(r == 0 ? "a:7470" : "b:7470");
    for (int i = 0; i < 3; ++i) {
      auto* rail = e->add_rails();
      rail->set_fabric("efa");
      rail->set_address(std::string(32, static_cast<char>('a' + i)));
    }
  }
  return t;
}

// Stand-in fi_addrs: 100 * local + remote (no fabric needed to build views).
std::vector<std::vector<std::vector<fi_addr_t>>> addresses() {
  std::vector<std::vector<std::vector<fi_addr_t>>> by_remote(2);
  for (auto& rank : by_remote) {
    for (fi_addr_t l = 0; l < 3; ++l) rank.push_back({100 * l + 0, 100 * l + 1, 100 * l + 2});
  }
  return by_remote;
}

std::vector<RailEnd> local() { return {{"efa", true}, {"efa", true}, {"efa", true}}; }

}  // namespace

TEST_CASE("a peer rail reported unusable is paired with no local rail while another is usable; back when usable") {
  JobPlane plane(table(), addresses(), {{0, 1, 2}, {0, 1, 2}}, local());
  plane.add_local_rank(0);
  const uint64_t g0 = plane.view()->generation;
  CHECK(plane.view()->ranks[1].paired_rail == std::vector<uint32_t>{0, 1, 2});
  CHECK(plane.view()->ranks[1].addrs == std::vector<fi_addr_t>{0, 101, 202});

  auto changes = plane.repair("b:7470", {true, false, true});
  REQUIRE(changes.size() == 1);
  CHECK(changes[0].find("local rail 1 -> peer rail") != std::string::npos);
  const RankView& moved = plane.view()->ranks[1];
  CHECK(moved.paired_rail[1] != 1);
  CHECK(moved.addrs[1] == 100 + moved.paired_rail[1]);  // the address of the new pair, on local rail 1
  CHECK(plane.view()->generation > g0);                 // proxies see a new view
  // Our own rank is never re-paired by a peer's report.
  CHECK(plane.view()->ranks[0].paired_rail == std::vector<uint32_t>{0, 1, 2});

  CHECK(plane.repair("b:7470", {true, false, true}).empty());    // nothing new
  CHECK(plane.repair("c:7470", {false, false, false}).empty());  // no rank there

  changes = plane.repair("b:7470", {true, true, true});
  CHECK(changes.size() == 1);
  CHECK(plane.view()->ranks[1].paired_rail == std::vector<uint32_t>{0, 1, 2});
}

TEST_CASE("with every peer rail unusable the pairs stay (writes are still tried), and only to known addresses") {
  auto by_remote = addresses();
  by_remote[1][1][2] = FI_ADDR_UNSPEC;  // local rail 1 holds no address of peer rail 2
  by_remote[1][1][0] = FI_ADDR_UNSPEC;  // nor of peer rail 0
  JobPlane plane(table(), by_remote, {{0, 1, 2}, {0, 1, 2}}, local());
  CHECK(plane.repair("b:7470", {false, false, false}).empty());
  // Peer rail 1 down: local rail 1 has no other address, so it stays.
  for (const auto& change : plane.repair("b:7470", {true, false, true})) {
    CHECK(change.find("local rail 1") == std::string::npos);
  }
  CHECK(plane.view()->ranks[1].paired_rail[1] == 1);
}
