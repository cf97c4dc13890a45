// signal_words.h: how big the job's one signal array is asked to be, what is
// asked for when the daemon refuses, and that lent words never overlap or
// come back.
#include "python/native/signal_words.h"

#include <doctest/doctest.h>

using namespace epx;
using namespace epx::c_abi;

TEST_CASE("the array holds 64 buffers of the largest need, at most epxd's default max_signals") {
  CHECK(signal_array_words(2, 8) == 64 * 66 * 2);
  CHECK(signal_array_words(8, 4) == 64 * 66 * 8);
  CHECK(signal_array_words(16, 4) == kDefaultMaxSignals);
  CHECK(signal_array_words(256, 1024) == kDefaultMaxSignals);
  CHECK(signal_array_words(1024, 4096) == kDefaultMaxSignals);
  // Never less than the first buffer needs.
  CHECK(signal_array_words(1, 100000) == 100000);
  CHECK(signal_array_words(0, 4) == 64 * 66);
}

TEST_CASE("a refused size is halved down to the first buffer's need, then given up") {
  CHECK(smaller_signal_array(65536, 16) == 32768);
  CHECK(smaller_signal_array(40, 16) == 20);
  CHECK(smaller_signal_array(20, 16) == 16);
  CHECK(smaller_signal_array(16, 16) == 0);
  CHECK(smaller_signal_array(8, 16) == 0);
}

TEST_CASE("buffers get consecutive fresh words; one that does not fit takes nothing") {
  SignalWords words(40);
  auto normal = words.take(4, "epx_normal_create");
  REQUIRE(normal.ok());
  CHECK(*normal == 0);
  auto low_latency = words.take(16, "epx_ll_create");  // four ranks: 4 * 4 words
  REQUIRE(low_latency.ok());
  CHECK(*low_latency == 4);
  auto again = words.take(4, "epx_normal_create");  // a re-created buffer: fresh words
  REQUIRE(again.ok());
  CHECK(*again == 20);
  CHECK(words.used() == 24);

  auto refused = words.take(17, "epx_ll_create");
  REQUIRE(!refused.ok());
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(refused.status().message().find("epx_ll_create: needs 17 signal words") != std::string::npos);
  CHECK(refused.status().message().find("has 16 of its 40 left") != std::string::npos);
  CHECK(words.used() == 24);
  auto exact = words.take(16, "epx_ll_create");
  REQUIRE(exact.ok());
  CHECK(*exact == 24);
  CHECK(!words.take(1, "epx_normal_create").ok());
}
