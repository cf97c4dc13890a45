// JobView: an immutable snapshot of what a proxy needs to check and route a
// job's descriptors: every rank's fabric addresses, windows and signal range.
// Rebuilt by JobPlane on every change (rare: a window, a rank lost) and read
// by proxies without locks.
#pragma once

#include <rdma/fabric.h>

#include <cstdint>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace epx::daemon {

struct RemoteRail {
  uint64_t key = 0;
  uint64_t base = 0;  // remote address of offset 0 (0 unless FI_MR_VIRT_ADDR)
};

struct RemoteWindow {
  uint64_t size = 0;               // 0: no such window
  std::vector<RemoteRail> rails;   // by the owner's rail index
};

struct LocalWindow {
  uint8_t* data = nullptr;
  uint64_t size = 0;
  std::vector<void*> descs;        // fi_mr_desc per local rail
};

struct RankView {
  bool present = false;            // joined and not lost
  std::string node;
  std::vector<fi_addr_t> addrs;    // per local rail: the rank's daemon endpoint
  uint32_t remote_rails = 0;       // rails of the rank's daemon
  // Per local rail: which of the rank's daemon's rails it writes to (keys
  // are per remote rail; dataplane/remote_rail_choice.h). Empty: local rail
  // i % remote_rails (views built by hand in tests).
  std::vector<uint32_t> paired_rail;
  std::vector<RemoteWindow> windows;  // index = window id; [0] unused
  uint32_t signal_base = 0;        // node signal id of the rank's word 0
  uint32_t signal_count = 0;
  RemoteWindow signal_target;      // the array's scratch word, target of signal-only writes
  std::vector<LocalWindow> local_windows;  // only for ranks on this daemon
};

struct JobView {
  // Unique per view built in this process (never reused), so a proxy can
  // tell whether something it derived from a view is still current.
  uint64_t generation = 0;
  std::string job_id;
  uint32_t world = 0;
  std::vector<RankView> ranks;
};

// The current view of one job, and its scheduling weight. Its plane swaps the
// whole view on every change; proxies load it lock-free once per pass. One
// cell per job on this daemon: proxies also use it as the job's identity when
// they share a rail between jobs (JobShare).
class JobViewCell {
 public:
  explicit JobViewCell(std::shared_ptr<const JobView> initial) : view_(std::move(initial)) {}
  std::shared_ptr<const JobView> load() const { return std::atomic_load(&view_); }
  void store(std::shared_ptr<const JobView> view) { std::atomic_store(&view_, std::move(view)); }

  // The operator's weight of the job (config job_weights, 1..1000): its share
  // of each rail relative to the other jobs. May change while proxies serve
  // the job (SIGHUP); they read it at each turn.
  uint32_t weight() const {
    // relaxed: a lone value, read again at the next turn; nothing is
    // published with it.
    return weight_.load(std::memory_order_relaxed);
  }
  void set_weight(uint32_t weight) { weight_.store(weight, std::memory_order_relaxed); }

 private:
  std::shared_ptr<const JobView> view_;
  std::atomic<uint32_t> weight_{1};
};

}  // namespace epx::daemon
