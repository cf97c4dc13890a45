// RingBinding: one client ring as its proxy serves it. The ring memory, the
// consumer's position and the in-flight count belong to the proxy thread;
// the counters are atomics so Status can read them from gRPC threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/proxy/job_share.h"
#include "daemon/proxy/job_view.h"
#include "daemon/shm/shared_region.h"
#include "proto/ring/ring.h"

namespace epx::daemon {

// A fabric write assembled from one or more adjacent descriptors.
struct PendingWrite {
  uint16_t dst_rank = 0;
  const uint8_t* src = nullptr;
  uint64_t length = 0;
  void* desc = nullptr;
  uint64_t remote_addr = 0;
  uint64_t key = 0;
  fi_addr_t addr = FI_ADDR_UNSPEC;
  uint32_t imm = 0;          // 0: no remote CQ data
  uint32_t descriptors = 0;  // how many ring slots it carries
  // For coalescing: where the next adjacent descriptor would start.
  uint16_t src_window = 0, dst_window = 0;
  uint64_t src_end = 0, dst_end = 0;
  // Sizes of both windows, so a continuing write can be bounds-checked
  // without looking the windows up again (extends()).
  uint64_t src_limit = 0, dst_limit = 0;
  // The JobView generation the limits came from: a run may only be extended
  // without a full check while the view it was checked against is current.
  uint64_t view_generation = 0;
};

struct RingBinding {
  uint64_t id = 0;
  uint64_t client_id = 0;
  uint32_t rank = 0;  // the producing rank
  std::shared_ptr<const JobViewCell> views;  // the job's current view
  std::shared_ptr<SharedRegion> region;
  ring::RingHeader* header = nullptr;
  ring::RingSlot* slots = nullptr;
  uint32_t capacity = 0;

  // Proxy thread only.
  uint64_t position = 0;          // next slot to read
  uint64_t published_head = 0;    // last head written to the header
  uint64_t inflight = 0;          // fabric operations posted, not completed
  std::optional<PendingWrite> pending;  // assembled, not yet accepted by the provider
  bool waiting_fence = false;     // a kFlush/kSignal waits for inflight == 0
  bool closing = false;           // owner gone: post nothing more
  uint64_t fences_done = 0;       // our copy: the header's is client-writable
  JobShare* share = nullptr;      // its job's share of the rail, while the proxy serves it

  // Any thread.
  std::atomic<uint64_t> consumed{0};   // descriptors taken from the ring
  std::atomic<uint64_t> completed{0};  // descriptors whose operations completed
  std::atomic<uint64_t> rejected{0};   // bad descriptors
  std::atomic<uint64_t> fabric_ops{0}; // fabric operations posted (after coalescing)
  mutable std::mutex error_mu;
  std::string first_error;             // human-readable, for Status / epxctl
};

}  // namespace epx::daemon
