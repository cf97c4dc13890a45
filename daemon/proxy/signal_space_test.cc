#include "daemon/proxy/signal_space.h"

#include <doctest/doctest.h>

#include <thread>
#include <vector>

using namespace epx::daemon;

TEST_CASE("allocated ranges map ids to words; unknown ids are refused") {
  auto created = SignalSpace::create();
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
