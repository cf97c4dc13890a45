// Summaries of timed samples, one definition for every EPX benchmark.
#pragma once

#include <vector>

namespace epx::bench {

// The q-quantile of `samples` (0 < q <= 1), nearest rank: the smallest
// sample with at least a fraction q of all samples at or below it. q = 0.5
// is the median (the lower one for an even count), q = 1 the maximum.
// `samples` must not be empty; they need not be sorted.
double quantile(std::vector<double> samples, double q);

}  // namespace epx::bench
