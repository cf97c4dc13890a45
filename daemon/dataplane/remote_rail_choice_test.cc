#include "daemon/dataplane/remote_rail_choice.h"

#include "doctest/doctest.h"

namespace epx::daemon {
namespace {

std::vector<uint32_t> remotes(const std::vector<RemoteRailPair>& pairs) {
  std::vector<uint32_t> out;
  for (const auto& p : pairs) out.push_back(p.remote);
  return out;
}

TEST_CASE("equal rail lists pair rail i with rail i") {
  std::vector<RailEnd> rails = {{"efa"}, {"efa"}, {"efa"}, {"efa"}};
  CHECK(remotes(choose_remote_rails(rails, rails)) == std::vector<uint32_t>{0, 1, 2, 3});
}

TEST_CASE("tcp rails pair by subnet, whatever the peer's order") {
  std::vector<RailEnd> local = {{"10.1.0.0/24"}, {"10.2.0.0/24"}, {"10.3.0.0/24"}, {"10.4.0.0/24"}};
  std::vector<RailEnd> remote = {{"10.3.0.0/24"}, {"10.1.0.0/24"}, {"10.4.0.0/24"}, {"10.2.0.0/24"}};
  auto pairs = choose_remote_rails(local, remote);
  CHECK(remotes(pairs) == std::vector<uint32_t>{1, 3, 0, 2});
  CHECK(pairs[0].why.find("same fabric 10.1.0.0/24") != std::string::npos);
}

TEST_CASE("more local rails than the peer has spread evenly over the peer's") {
  std::vector<RailEnd> local(4, RailEnd{"efa"});
  std::vector<RailEnd> remote(2, RailEnd{"efa"});
  auto r = remotes(choose_remote_rails(local, remote));
  CHECK(r == std::vector<uint32_t>{0, 1, 0, 1});
}

TEST_CASE("an unhealthy peer rail is avoided while a healthy one is reachable") {
  std::vector<RailEnd> local(4, RailEnd{"efa"});
  std::vector<RailEnd> remote(4, RailEnd{"efa"});
  remote[2].healthy = false;
  auto r = remotes(choose_remote_rails(local, remote));
  CHECK(r[0] == 0);
  CHECK(r[1] == 1);
  CHECK(r[2] != 2);
  CHECK(r[3] == 3);
  // Every peer rail unhealthy: still paired (the write may yet go), and said so.
  for (auto& e : remote) e.healthy = false;
  auto pairs = choose_remote_rails(local, remote);
  CHECK(remotes(pairs) == std::vector<uint32_t>{0, 1, 2, 3});
  CHECK(pairs[0].why.find("unhealthy") != std::string::npos);
}

TEST_CASE("an unreachable fabric falls back to trying a rail, and says so; no rails: none") {
  std::vector<RailEnd> local = {{"10.9.0.0/24"}};
  std::vector<RailEnd> remote = {{"10.1.0.0/24"}, {"10.2.0.0/24"}};
  auto pairs = choose_remote_rails(local, remote);
  CHECK(pairs[0].remote == 0);
  CHECK(pairs[0].why.find("no rail of the peer is on fabric 10.9.0.0/24") != std::string::npos);
  CHECK(choose_remote_rails(local, {})[0].remote == RemoteRailPair::kNone);
}

TEST_CASE("a peer rail without a fabric name (older daemon) matches any local rail") {
  std::vector<RailEnd> local = {{"10.1.0.0/24"}, {"10.2.0.0/24"}};
  std::vector<RailEnd> remote = {{""}, {""}};
  CHECK(remotes(choose_remote_rails(local, remote)) == std::vector<uint32_t>{0, 1});
}

}  // namespace
}  // namespace epx::daemon
