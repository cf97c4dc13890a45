// How libepx_c lends a job's signal words to its buffers (no CUDA here, so
// it is tested on its own: signal_words_test.cc).
//
// Across nodes a buffer counts remote arrivals in signal words (a
// low-latency buffer 4 * ranks of them, a normal-mode buffer 66 * nodes), and
// the daemon gives a job's rank ONE signal array. So each epx_job opens one
// array, when its first buffer spanning nodes is created, and lends every
// such buffer words nobody used before (they read 0, as the buffers check).
// Bases only advance: a destroyed buffer's words may still count late
// arrivals, so they are never lent again. Every rank creates the same
// buffers in the same order, so a buffer gets the same base on every rank.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "epx/status.h"

namespace epx::c_abi {

// Buffers of the largest need the array is sized for, and that need per
// rank: a normal-mode buffer's NormalBuffer::signal_words(nodes) is 66 per
// node (epx_c.cc checks it), a low-latency buffer's 4 per rank.
inline constexpr uint32_t kSignalBuffers = 64;
inline constexpr uint32_t kLargestWordsPerRank = 66;
// epxd's default max_signals (daemon/config): the most words the array asks
// for. A daemon configured lower is asked for half as many until it accepts,
// down to the first buffer's need.
inline constexpr uint32_t kDefaultMaxSignals = 1u << 16;

// Words to ask the daemon for: kSignalBuffers buffers of the largest need
// in a job of `world_size` ranks, at most kDefaultMaxSignals, at least
// `need` (the first buffer's).
inline uint32_t signal_array_words(uint32_t world_size, uint32_t need) {
  const uint64_t generous = uint64_t{kSignalBuffers} * kLargestWordsPerRank * std::max<uint32_t>(world_size, 1);
  return static_cast<uint32_t>(std::max<uint64_t>(need, std::min<uint64_t>(generous, kDefaultMaxSignals)));
}

// The next size to ask for after the daemon refused `asked` words, or 0 when
// `asked` was already the least that serves `need`.
inline uint32_t smaller_signal_array(uint32_t asked, uint32_t need) {
  if (asked <= need) return 0;
  return std::max(need, asked / 2);
}

// The lending cursor over an array of `count` words.
class SignalWords {
 public:
  explicit SignalWords(uint32_t count) : count_(count) {}
  uint32_t count() const { return count_; }
  uint32_t used() const { return next_; }

  // The base of `need` fresh words, or RESOURCE_EXHAUSTED naming `who` and
  // why (nothing is taken then).
  Result<uint32_t> take(uint32_t need, const std::string& who) {
    if (need > count_ - next_) {
      return resource_exhausted(
          who + ": needs " + std::to_string(need) + " signal words and the job's signal array has " +
          std::to_string(count_ - next_) + " of its " + std::to_string(count_) +
          " left: every buffer spanning nodes takes fresh words and a rank has one signal array per job (a "
          "deep_ep.Buffer makes a new normal-mode buffer whenever hidden, num_experts or top-k change); create "
          "fewer buffers in this job, or raise epxd's max_signals");
    }
    const uint32_t base = next_;
    next_ += need;
    return base;
  }

 private:
  uint32_t count_;
  uint32_t next_ = 0;
};

}  // namespace epx::c_abi
