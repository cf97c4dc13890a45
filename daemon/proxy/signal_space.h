// SignalSpace: the node-wide numbering of signal words. Each (job, local
// rank) signal array gets a contiguous range of ids; a remote write names its
// target word by id in its 32-bit immediate (ring signal index bits), so the
// receiving proxy finds the word with one table load.
//
// A freed range is quarantined before it is handed out again: a write whose
// immediate names an id can still arrive after its rank left (a peer daemon
// that did not confirm the quiesce in time, a provider that delivers late),
// and once the id belonged to another tenant's array that immediate would
// bump a word it never targeted. In quarantine the ids are unallocated, so
// such an immediate is refused (apply() returns false) and counted.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "epx/status.h"

namespace epx::daemon {

class SignalSpace {
 public:
  static constexpr uint32_t kIds = 1u << 20;  // the immediate's index field

  using Clock = std::chrono::steady_clock;
  // Longer than any write stays in flight: the quiesce of a leaving rank is
  // bounded by the RPC timeout (seconds), and providers time writes out in
  // well under this.
  static constexpr std::chrono::milliseconds kQuarantine{30000};

  // Maps the id table (8 MiB of virtual memory, resident only where used).
  static Result<std::unique_ptr<SignalSpace>> create(std::chrono::milliseconds quarantine = kQuarantine);
  ~SignalSpace();
  SignalSpace(const SignalSpace&) = delete;
  SignalSpace& operator=(const SignalSpace&) = delete;

  // Reserves `count` consecutive ids for `words`; returns the first id.
  Result<uint32_t> allocate(uint64_t* words, uint32_t count);
  // Frees a range: its ids stop resolving at once and are allocated again
  // only after the quarantine. The caller guarantees no proxy is applying
  // to it (it runs after the proxies quiesced the job).
  void release(uint32_t base, uint32_t count);

  // Proxy threads: adds `increment` to word `id`. False for an id that is
  // not allocated (a peer's stale or bad immediate).
  bool apply(uint32_t id, uint64_t increment) const {
    if (id >= kIds) return false;
    // acquire: pairs with allocate()'s release store of the pointer.
    uint64_t* word = table_[id].load(std::memory_order_acquire);
    if (word == nullptr) return false;
    // release: the receiving kernel or SDK loads the word with acquire; the
    // data write this signal counts completed before its CQ entry was read.
    __atomic_fetch_add(word, increment, __ATOMIC_RELEASE);
    return true;
  }

  // Ids allocated or in quarantine.
  uint32_t used() const;

 private:
  SignalSpace(std::atomic<uint64_t*>* table, std::chrono::milliseconds quarantine);
  // Returns ranges whose quarantine ended to the free list (under mu_).
  void end_quarantines_locked(Clock::time_point now);
  void add_free_locked(uint32_t base, uint32_t count);

  // 8 MiB of virtual memory; only pages of allocated ranges become resident.
  std::atomic<uint64_t*>* table_;
  mutable std::mutex mu_;
  const std::chrono::milliseconds quarantine_;
  std::vector<std::pair<uint32_t, uint32_t>> free_;  // (base, count), sorted by base
  struct Quarantined {
    uint32_t base, count;
    Clock::time_point until;
  };
  std::deque<Quarantined> quarantined_;  // in release order, so in `until` order
};

}  // namespace epx::daemon
