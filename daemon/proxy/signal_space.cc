#include "daemon/proxy/signal_space.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace epx::daemon {

Result<std::unique_ptr<SignalSpace>> SignalSpace::create(std::chrono::milliseconds quarantine) {
  void* p = mmap(nullptr, sizeof(std::atomic<uint64_t*>) * kIds, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    return resource_exhausted(std::string("mapping the node's signal table: ") + std::strerror(errno));
  }
  // Zero pages are null pointers: every id starts unallocated.
  return std::unique_ptr<SignalSpace>(new SignalSpace(static_cast<std::atomic<uint64_t*>*>(p), quarantine));
}

SignalSpace::SignalSpace(std::atomic<uint64_t*>* table, std::chrono::milliseconds quarantine)
    : table_(table), quarantine_(quarantine) {
  free_.push_back({1, kIds - 1});  // id 0 stays unused: an all-zero immediate is never valid
}

SignalSpace::~SignalSpace() { munmap(table_, sizeof(std::atomic<uint64_t*>) * kIds); }

Result<uint32_t> SignalSpace::allocate(uint64_t* words, uint32_t count) {
  if (count == 0) return invalid_argument("signal array of 0 words");
  std::lock_guard<std::mutex> lock(mu_);
  end_quarantines_locked(Clock::now());
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < count) continue;
    const uint32_t base = it->first;
    it->first += count;
    it->second -= count;
    if (it->second == 0) free_.erase(it);
    for (uint32_t i = 0; i < count; ++i) {
      // release: pairs with apply()'s acquire load.
      table_[base + i].store(words + i, std::memory_order_release);
    }
    return base;
  }
  uint64_t waiting = 0;
  for (const auto& q : quarantined_) waiting += q.count;
  return resource_exhausted("node signal space full: " + std::to_string(count) + " more signals do not fit in " +
                            std::to_string(kIds) + " ids (" + std::to_string(waiting) +
                            " freed ids are in quarantine for up to " + std::to_string(quarantine_.count()) + " ms)");
}

void SignalSpace::end_quarantines_locked(Clock::time_point now) {
  while (!quarantined_.empty() && quarantined_.front().until <= now) {
    add_free_locked(quarantined_.front().base, quarantined_.front().count);
    quarantined_.pop_front();
  }
}

void SignalSpace::release(uint32_t base, uint32_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t i = 0; i < count; ++i) table_[base + i].store(nullptr, std::memory_order_relaxed);
  const Clock::time_point now = Clock::now();
  quarantined_.push_back({base, count, now + quarantine_});
  end_quarantines_locked(now);
}

void SignalSpace::add_free_locked(uint32_t base, uint32_t count) {
  free_.push_back({base, count});
  std::sort(free_.begin(), free_.end());
  // Merge neighbours so large arrays fit again after churn.
  std::vector<std::pair<uint32_t, uint32_t>> merged;
  for (const auto& r : free_) {
    if (!merged.empty() && merged.back().first + merged.back().second == r.first) {
      merged.back().second += r.second;
    } else {
      merged.push_back(r);
    }
  }
  free_.swap(merged);
}

uint32_t SignalSpace::used() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t free_ids = 0;
  for (const auto& r : free_) free_ids += r.second;
  return kIds - 1 - free_ids;
}

}  // namespace epx::daemon
