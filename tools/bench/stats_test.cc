#include "tools/bench/stats.h"

#include <doctest/doctest.h>

namespace epx::bench {
namespace {

TEST_CASE("quantile is the nearest-rank sample, whatever the order of the samples") {
  const std::vector<double> ten = {10, 1, 9, 2, 8, 3, 7, 4, 6, 5};
  CHECK(quantile(ten, 0.5) == 5);    // lower median of an even count
  CHECK(quantile(ten, 0.99) == 10);  // ceil(9.9) = 10th of 10
  CHECK(quantile(ten, 0.9) == 9);
  CHECK(quantile(ten, 0.1) == 1);
  CHECK(quantile(ten, 1.0) == 10);
  CHECK(quantile({3, 1, 2}, 0.5) == 2);  // median of an odd count
  CHECK(quantile({7}, 0.5) == 7);
  CHECK(quantile({7}, 0.01) == 7);
}

TEST_CASE("quantile of a hundred samples picks the rank the definition names") {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(i);
  CHECK(quantile(samples, 0.5) == 50);
  CHECK(quantile(samples, 0.99) == 99);
  CHECK(quantile(samples, 0.995) == 100);
}

}  // namespace
}  // namespace epx::bench
