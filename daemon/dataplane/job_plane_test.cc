// JobPlane's re-pairing: our rails re-paired away from a peer daemon's
// rails that its pings report unusable, and back once they are usable
// again, only to pairs whose addresses were inserted.
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

  // Every address is known here (addresses() fills them all): nothing to insert.
  CHECK(plane.set_peer_rails("b:7470", {true, false, true}).empty());
  auto changes = plane.repair("b:7470");
  REQUIRE(changes.size() == 1);
  CHECK(changes[0].find("local rail 1 -> peer rail") != std::string::npos);
  const auto view = plane.view();
  const RankView& moved = view->ranks[1];
  CHECK(moved.paired_rail[1] != 1);
  CHECK(moved.addrs[1] == 100 + moved.paired_rail[1]);  // the address of the new pair, on local rail 1
  CHECK(plane.view()->generation > g0);                 // proxies see a new view
  // Our own rank is never re-paired by a peer's report.
  CHECK(plane.view()->ranks[0].paired_rail == std::vector<uint32_t>{0, 1, 2});

  CHECK(plane.repair("b:7470").empty());  // nothing new
  CHECK(plane.set_peer_rails("c:7470", {false, false, false}).empty());
  CHECK(plane.repair("c:7470").empty());  // no rank there

  plane.set_peer_rails("b:7470", {true, true, true});
  changes = plane.repair("b:7470");
  CHECK(changes.size() == 1);
  CHECK(plane.view()->ranks[1].paired_rail == std::vector<uint32_t>{0, 1, 2});
}

TEST_CASE("with every peer rail unusable the pairs stay (writes are still tried)") {
  JobPlane plane(table(), addresses(), {{0, 1, 2}, {0, 1, 2}}, local());
  CHECK(plane.set_peer_rails("b:7470", {false, false, false}).empty());
  CHECK(plane.repair("b:7470").empty());
}

TEST_CASE("a new pair whose address is not inserted is asked for, and taken only once it is handed back") {
  auto by_remote = addresses();
  for (auto& local : by_remote[1]) {
    for (uint32_t remote = 0; remote < 3; ++remote) {
      if (&local != &by_remote[1][remote]) local[remote] = FI_ADDR_UNSPEC;  // only the pairs in use
    }
  }
  JobPlane plane(table(), by_remote, {{0, 1, 2}, {0, 1, 2}}, local());
  const auto missing = plane.set_peer_rails("b:7470", {true, false, true});
  REQUIRE(missing.size() == 1);
  CHECK(missing[0].rank == 1);
  CHECK(missing[0].local == 1);
  CHECK(missing[0].remote != 1);
  CHECK(plane.repair("b:7470").empty());  // not before its address is known
  CHECK(plane.view()->ranks[1].paired_rail[1] == 1);

  RailPairAddress inserted = missing[0];
  inserted.addr = 777;
  plane.add_addresses({inserted});
  REQUIRE(plane.repair("b:7470").size() == 1);
  CHECK(plane.view()->ranks[1].paired_rail[1] == inserted.remote);
  CHECK(plane.view()->ranks[1].addrs[1] == 777);
}
