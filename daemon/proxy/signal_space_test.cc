#include "daemon/proxy/signal_space.h"

#include <doctest/doctest.h>

#include <thread>
#include <vector>

using namespace epx::daemon;

TEST_CASE("allocated ranges map ids to words; unknown ids are refused") {
  auto created = SignalSpace::create(std::chrono::milliseconds(0));  // reuse at once, to check merging
  REQUIRE(created.ok());
  SignalSpace& space = **created;
  std::vector<uint64_t> a(10, 0), b(5, 0);
  auto ba = space.allocate(a.data(), 10);
  auto bb = space.allocate(b.data(), 5);
  REQUIRE(ba.ok());
  REQUIRE(bb.ok());
  CHECK(*ba != 0);  // id 0 is never handed out
  CHECK(*bb >= *ba + 10);
  CHECK(space.apply(*ba + 3, 7));
  CHECK(space.apply(*bb + 4, 1));
  CHECK(a[3] == 7);
  CHECK(b[4] == 1);
  CHECK_FALSE(space.apply(0, 1));
  CHECK_FALSE(space.apply(SignalSpace::kIds, 1));
  CHECK_FALSE(space.apply(*bb + 5, 1));  // just past b
  space.release(*ba, 10);
  CHECK_FALSE(space.apply(*ba, 1));
  CHECK(space.used() == 5);
  // Freed ranges are reused and merged.
  std::vector<uint64_t> c(15, 0);
  space.release(*bb, 5);
  auto bc = space.allocate(c.data(), 15);
  REQUIRE(bc.ok());
  CHECK(*bc == *ba);
  CHECK(space.allocate(c.data(), 0).status().code() == epx::StatusCode::kInvalidArgument);
}

TEST_CASE("concurrent applies are counted exactly") {
  auto created = SignalSpace::create();
  REQUIRE(created.ok());
  SignalSpace& space = **created;
  std::vector<uint64_t> words(4, 0);
  auto base = space.allocate(words.data(), 4);
  REQUIRE(base.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100000; ++i) space.apply(*base + (i % 4), 1 + t);
    });
  }
  for (auto& t : threads) t.join();
  for (uint64_t w : words) CHECK(w == 25000ull * (1 + 2 + 3 + 4));
}

TEST_CASE("a freed range is not handed out again during its quarantine: a late immediate cannot reach a new tenant") {
  const auto quarantine = std::chrono::milliseconds(300);
  auto created = SignalSpace::create(quarantine);
  REQUIRE(created.ok());
  SignalSpace& space = **created;
  std::vector<uint64_t> old_tenant(8, 0), new_tenant(8, 0);
  auto first = space.allocate(old_tenant.data(), 8);
  REQUIRE(first.ok());
  space.release(*first, 8);
  // A new array right after: other ids, so the old tenant's late write,
  // naming *first + 2, finds nothing.
  auto second = space.allocate(new_tenant.data(), 8);
  REQUIRE(second.ok());
  CHECK(*second != *first);
  CHECK_FALSE(space.apply(*first + 2, 1));
  CHECK(new_tenant[2] == 0);
  CHECK(space.used() == 16);  // the quarantined range still counts
  // After the quarantine the ids come back.
  std::this_thread::sleep_for(quarantine + std::chrono::milliseconds(50));
  space.release(*second, 8);
  std::vector<uint64_t> third_tenant(8, 0);
  auto third = space.allocate(third_tenant.data(), 8);
  REQUIRE(third.ok());
  CHECK(*third == *first);
}

TEST_CASE("a full space says how many ids wait in quarantine") {
  auto created = SignalSpace::create(std::chrono::milliseconds(60000));
  REQUIRE(created.ok());
  SignalSpace& space = **created;
  std::vector<uint64_t> words(SignalSpace::kIds, 0);
  auto all = space.allocate(words.data(), SignalSpace::kIds - 1);
  REQUIRE(all.ok());
  space.release(*all, 1000);
  auto more = space.allocate(words.data(), 1);
  REQUIRE_FALSE(more.ok());
  CHECK(more.status().code() == epx::StatusCode::kResourceExhausted);
  CHECK(more.status().message().find("1000 freed ids are in quarantine") != std::string::npos);
}
