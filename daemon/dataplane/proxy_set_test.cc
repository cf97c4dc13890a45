// ProxySet hands work to the proxies and never blocks its caller: a stalled
// proxy turns into an error naming its rail within kRailCallTimeout, and the
// work it runs late is undone on its own thread.
#include "daemon/dataplane/proxy_set.h"

#include <doctest/doctest.h>

#include <chrono>
#include <future>

#include "daemon/config/config.h"
#include "daemon/fabric/rail_discovery.h"

using namespace epx;
using namespace epx::daemon;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct Node {
  v1::DaemonConfig config;
  std::vector<std::unique_ptr<Rail>> rails;
  std::unique_ptr<ProxySet> proxies;

  Node() {
    config.set_provider("tcp");
    config.add_rail_domains("lo");
    config.set_control_socket("/tmp/unused.sock");
    REQUIRE(finalize_config(&config).ok());
    auto opened = open_rails("tcp", {"lo"});
    REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
    rails = std::move(opened.value());
    proxies = std::make_unique<ProxySet>(config, rails);
    REQUIRE(proxies->start().ok());
  }
};

LocalRegion host_region(size_t bytes) {
  auto region = SharedRegion::create("epx-proxy-set-test", bytes);
  REQUIRE(region.ok());
  LocalRegion r;
  r.region = std::shared_ptr<SharedRegion>(std::move(region.value()));
  return r;
}

}  // namespace

TEST_CASE("a registration answers without blocking and gives registered keys") {
  Node n;
  std::promise<Result<LocalRegion>> answer;
  n.proxies->register_region(host_region(1 << 16), [&](Result<LocalRegion> r) { answer.set_value(std::move(r)); });
  auto future = answer.get_future();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  Result<LocalRegion> r = future.get();
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  REQUIRE(r->mrs.size() == n.rails.size());
  CHECK(r->mrs[0] != nullptr);
  std::promise<void> closed;
  std::vector<LocalRegion> regions;
  regions.push_back(std::move(r.value()));
  n.proxies->close_registrations(std::move(regions), [&] { closed.set_value(); });
  CHECK(closed.get_future().wait_for(5s) == std::future_status::ready);
}

TEST_CASE("a stalled proxy is an error naming its rail, the caller never waits, and late work is undone") {
  Node n;
  // Stall rail 0's proxy until released.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> stalled;
  n.proxies->proxy(0).submit([&stalled, released] {
    stalled.set_value();
    released.wait();
  });
  stalled.get_future().wait();

  std::promise<Result<LocalRegion>> answer;
  const auto start = Clock::now();
  n.proxies->register_region(host_region(1 << 16), [&](Result<LocalRegion> r) { answer.set_value(std::move(r)); });
  CHECK(Clock::now() - start < 500ms);  // handed off, not waited for
  auto future = answer.get_future();
  REQUIRE(future.wait_for(ProxySet::kRailCallTimeout + 3s) == std::future_status::ready);
  const auto took = Clock::now() - start;
  Result<LocalRegion> r = future.get();
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kDeadlineExceeded);
  CHECK_MESSAGE(r.status().message().find("rail(s) 0") != std::string::npos, r.status().message());
  CHECK(took >= ProxySet::kRailCallTimeout - 100ms);

  // The proxy comes back: the late registration is skipped, and the proxy
  // serves new calls normally.
  release.set_value();
  std::promise<Status> next;
  n.proxies->on_every_rail([](size_t) { return Status(); }, nullptr, false, [&](Status s) { next.set_value(s); });
  auto f = next.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  CHECK(f.get().ok());
}

TEST_CASE("a task that finishes after the caller gave up undoes its work on its own rail") {
  Node n;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> ran{0}, undone{0};
  std::promise<Status> answer;
  // The task itself stalls past the timeout, so it finishes late.
  n.proxies->on_every_rail(
      [&, released](size_t) {
        released.wait();
        ran.fetch_add(1);
        return Status();
      },
      [&](size_t) { undone.fetch_add(1); }, false, [&](Status s) { answer.set_value(s); });
  auto f = answer.get_future();
  REQUIRE(f.wait_for(ProxySet::kRailCallTimeout + 3s) == std::future_status::ready);
  CHECK(f.get().code() == StatusCode::kDeadlineExceeded);
  release.set_value();
  const auto end = Clock::now() + 5s;
  while (undone.load() < static_cast<int>(n.rails.size()) && Clock::now() < end) std::this_thread::sleep_for(1ms);
  CHECK(ran.load() == static_cast<int>(n.rails.size()));
  CHECK(undone.load() == static_cast<int>(n.rails.size()));
}

TEST_CASE("a rank table address of another length than the provider's is refused, never read past its end") {
  Node n;
  const std::string own = n.rails[0]->address();
  REQUIRE(own.size() > 3);
  auto insert = [&](const std::string& address) {
    v1::RankTable table;
    table.set_job_id("j");
    table.set_world_size(1);
    auto* entry = table.add_ranks();
    entry->add_rails()->set_address(address);
    std::promise<Result<ProxySet::Addresses>> answer;
    n.proxies->insert_addresses(table, [&](Result<ProxySet::Addresses> r) { answer.set_value(std::move(r)); });
    auto future = answer.get_future();
    REQUIRE(future.wait_for(5s) == std::future_status::ready);
    return future.get();
  };
  auto shorter = insert(own.substr(0, 3));
  REQUIRE_FALSE(shorter.ok());
  CHECK(shorter.status().code() == StatusCode::kInvalidArgument);
  CHECK(shorter.status().message().find("is 3 bytes") != std::string::npos);
  CHECK_FALSE(insert(own + "x").ok());
  auto exact = insert(own);
  REQUIRE_MESSAGE(exact.ok(), exact.status().to_string());
  CHECK(exact->by_remote[0][0][0] != FI_ADDR_UNSPEC);
  CHECK(exact->remote_rails[0][0] == 0);
}

TEST_CASE("insert_pairs inserts a re-pairing's addresses on their rails, once per address, and refuses bad ones") {
  Node n;
  const std::string own = n.rails[0]->address();
  v1::RankTable table;
  table.set_job_id("pairs");
  table.set_world_size(1);
  auto* entry = table.add_ranks();
  entry->add_rails()->set_address(own);
  entry->add_rails()->set_address(own.substr(0, 3));  // a peer rail with a malformed address
  auto insert = [&](std::vector<RailPairAddress> pairs) {
    std::promise<Result<std::vector<RailPairAddress>>> answer;
    n.proxies->insert_pairs(table, std::move(pairs),
                            [&](Result<std::vector<RailPairAddress>> r) { answer.set_value(std::move(r)); });
    auto future = answer.get_future();
    REQUIRE(future.wait_for(5s) == std::future_status::ready);
    return future.get();
  };
  auto first = insert({{0, 0, 0}});
  REQUIRE_MESSAGE(first.ok(), first.status().to_string());
  REQUIRE(first->size() == 1);
  CHECK((*first)[0].addr != FI_ADDR_UNSPEC);
  auto again = insert({{0, 0, 0}});
  REQUIRE(again.ok());
  CHECK((*again)[0].addr == (*first)[0].addr);  // the same address is inserted once
  auto malformed = insert({{0, 0, 1}});
  REQUIRE_FALSE(malformed.ok());
  CHECK(malformed.status().message().find("is 3 bytes") != std::string::npos);
  auto beyond = insert({{0, 0, 7}});
  REQUIRE_FALSE(beyond.ok());
  CHECK(beyond.status().message().find("no rail 7 of rank 0") != std::string::npos);
}

TEST_CASE("single_job_bound: auto bounds a lone job on shm with one rail per domain only, on and off override it") {
  struct Case {
    const char* provider;
    v1::SingleJobBound setting;
    uint32_t rails_per_domain;
    bool bounded;
  };
  for (const Case& c :
       {Case{"shm", v1::SINGLE_JOB_BOUND_AUTO, 1, true}, Case{"shm", v1::SINGLE_JOB_BOUND_OFF, 1, false},
        Case{"shm", v1::SINGLE_JOB_BOUND_AUTO, 2, false}, Case{"shm", v1::SINGLE_JOB_BOUND_ON, 2, true},
        Case{"tcp", v1::SINGLE_JOB_BOUND_AUTO, 1, false}, Case{"tcp", v1::SINGLE_JOB_BOUND_ON, 1, true}}) {
    CAPTURE(c.provider);
    CAPTURE(static_cast<int>(c.setting));
    CAPTURE(c.rails_per_domain);
    v1::DaemonConfig config;
    config.set_provider(c.provider);
    config.set_control_socket("/tmp/unused.sock");
    config.set_single_job_bound(c.setting);
    config.set_rails_per_domain(c.rails_per_domain);
    REQUIRE(finalize_config(&config).ok());
    auto opened = open_rails(
        c.provider, std::string(c.provider) == "tcp" ? std::vector<std::string>{"lo"} : std::vector<std::string>{},
        c.rails_per_domain);
    REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
    std::vector<std::unique_ptr<Rail>> rails = std::move(opened.value());
    rails.resize(1);
    ProxySet proxies(config, rails);
    REQUIRE(proxies.start().ok());
    const std::vector<v1::ProxyStatus> status = proxies.status();
    REQUIRE(status.size() == 1);
    CHECK(status[0].lone_job_bound() == c.bounded);
  }
}

TEST_CASE("shm rails: string addresses of other lengths than ours are taken (they vary with the pid), bounded") {
  v1::DaemonConfig config;
  config.set_provider("shm");
  config.set_control_socket("/tmp/unused.sock");
  REQUIRE(finalize_config(&config).ok());
  auto opened = open_rails("shm", {});
  if (!opened.ok()) {
    std::cout << "EPX_TEST_CASE_SKIPPED: no shm provider here: " << opened.status().to_string() << std::endl;
    return;
  }
  std::vector<std::unique_ptr<Rail>> rails = std::move(opened.value());
  rails.resize(1);
  REQUIRE(rails[0]->info().addr_format == FI_ADDR_STR);
  ProxySet proxies(config, rails);
  REQUIRE(proxies.start().ok());
  const std::string own = rails[0]->address();
  auto insert = [&](const std::string& address) {
    v1::RankTable table;
    table.set_job_id("shm");
    table.set_world_size(1);
    table.add_ranks()->add_rails()->set_address(address);
    std::promise<Result<ProxySet::Addresses>> answer;
    proxies.insert_addresses(table, [&](Result<ProxySet::Addresses> r) { answer.set_value(std::move(r)); });
    auto future = answer.get_future();
    REQUIRE(future.wait_for(5s) == std::future_status::ready);
    return future.get();
  };
  // Another process's name, one digit longer, with and without its NUL.
  std::string longer = own;
  if (!longer.empty() && longer.back() == '\0') longer.pop_back();
  longer += "7";
  auto a = insert(longer);
  CHECK_MESSAGE(a.ok(), a.status().to_string());
  auto b = insert(longer + std::string(1, '\0'));
  CHECK_MESSAGE(b.ok(), b.status().to_string());
  auto huge = insert(std::string(ProxySet::kMaxStringAddress + 1, 'x'));
  REQUIRE_FALSE(huge.ok());
  CHECK(huge.status().message().find("string addresses are 1..") != std::string::npos);
}
