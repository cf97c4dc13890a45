#include "tools/bench/stats.h"

#include <algorithm>
#include <cmath>

namespace epx::bench {

double quantile(std::vector<double> samples, double q) {
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(samples.size())));
  const size_t index = std::clamp<size_t>(rank, 1, samples.size()) - 1;
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(index), samples.end());
  return samples[index];
}

}  // namespace epx::bench
