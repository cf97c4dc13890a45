// RingBinding: one client ring as its proxy serves it; RingGroupBinding: the
// group region it lives in (ring.h), whose doorbell tells the proxy which
// rings have work. The ring memory, the consumer's position, the completion
// tracking and the in-flight count belong to the proxy thread; the counters
// are atomics so Status can read them from gRPC threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/proxy/job_share.h"
#include "daemon/proxy/job_view.h"
#include "daemon/shm/shared_region.h"
#include "proto/ring/ring.h"

namespace epx::daemon {

// A fabric write assembled from one or more adjacent descriptors, or the
// elements of one kWriteStrided (count > 1: element i is `length` bytes at
// src + i * src_stride, to remote_addr + i * dst_stride).
struct PendingWrite {
  uint16_t dst_rank = 0;
  const uint8_t* src = nullptr;
  uint64_t length = 0;
  void* desc = nullptr;
  uint64_t remote_addr = 0;
  uint64_t key = 0;
  fi_addr_t addr = FI_ADDR_UNSPEC;
  uint32_t imm = 0;  // 0: no remote CQ data
  // A signal-only write (check_signal): 8 bytes from the posting proxy's
  // scratch word into the destination's signal scratch word.
  bool to_signal = false;
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
  // kWriteStrided: elements, strides, and how many are posted already.
  uint32_t count = 1;
  uint32_t next = 0;
  uint64_t src_stride = 0, dst_stride = 0;
  // The completion-tracking entry (RingBinding::tracked) of its first
  // descriptor, as an absolute index.
  uint64_t entry = 0;
};

// One descriptor whose completion the watermark waits for (ring.h, kFlush):
// a write or signal taken from the ring and not yet completed. Entries are
// made in ring order, so the deque stays sorted by ticket.
struct TrackedEntry {
  uint64_t ticket = 0;
  uint16_t dst_rank = 0;
  // Fabric operations not completed yet, plus one while the proxy still
  // assembles or holds the descriptor (not all of it posted). 0: completed.
  uint32_t open = 1;
};

// A kSignal the proxy holds until the writes it is scoped to completed.
struct HeldSignal {
  uint64_t entry = 0;   // its TrackedEntry (absolute index)
  bool scoped = false;  // kFlagScopeDestination: only earlier writes to its rank
  PendingWrite write;   // resolved when taken; re-checked if the view changed
  ring::RingSlot slot;  // for error reports
};

struct RingBinding;

// A ring group region (ring.h): its doorbell, and its rings by channel.
struct RingGroupBinding {
  std::shared_ptr<SharedRegion> region;
  ring::RingGroupHeader* header = nullptr;
  uint32_t channels = 0;
  // Proxy thread only: the rings it serves, by channel (null: not attached).
  std::vector<RingBinding*> rings;
};

// Shared (enable_shared_from_this): a write relayed to another rail keeps
// its ring alive until its answer is back (relayed_write.h).
struct RingBinding : std::enable_shared_from_this<RingBinding> {
  uint64_t id = 0;
  uint64_t client_id = 0;
  uint32_t rank = 0;                         // the producing rank
  std::shared_ptr<const JobViewCell> views;  // the job's current view
  std::shared_ptr<SharedRegion> region;
  ring::RingHeader* header = nullptr;
  ring::RingSlot* slots = nullptr;
  uint32_t capacity = 0;
  // The group it belongs to and its channel there; null: a ring without a
  // doorbell, which the proxy visits every pass (tests).
  std::shared_ptr<RingGroupBinding> group;
  uint32_t channel = 0;
  // Its producers are kernels, whose doorbell may be seen before the slots
  // it announces (ring.h, kCapEarlyDoorbell).
  bool early_doorbell = false;
  // The rails nearest the producing rank's GPU (dataplane/rail_affinity.h),
  // nearest first: its large writes are striped over them and its writes
  // move to them first when its rail fails. Empty: every rail of the node.
  // Set before the proxy serves the ring; read-only afterwards.
  std::vector<uint32_t> rails;

  // Proxy thread only.
  uint64_t position = 0;                // next slot to read
  uint64_t published_head = 0;          // last head written to the header
  uint64_t inflight = 0;                // fabric operations posted, not completed
  std::optional<PendingWrite> pending;  // assembled, not yet accepted by the provider
  std::deque<TrackedEntry> tracked;     // completion tracking, in ring order
  uint64_t tracked_base = 0;            // absolute index of tracked.front()
  std::deque<HeldSignal> held;          // kSignals waiting for their scope, in ring order
  uint64_t completed_published = 0;     // our copy of the watermark: the header's is client-writable
  bool closing = false;                 // owner gone: post nothing more
  bool active = false;                  // in its job's active list (doorbell taken, or work left)
  bool drained = false;                 // its last visit left nothing published, assembled or held
  // When its doorbell was last taken, for a ring whose doorbell may be seen
  // before the slots it announces (a device ring: ring.h, kCapEarlyDoorbell).
  // Such a ring stays in view for a grace after it even while empty.
  std::chrono::steady_clock::time_point rung_at{};
  JobShare* share = nullptr;            // its job's share of the rail, while the proxy serves it

  TrackedEntry& entry(uint64_t index) { return tracked[index - tracked_base]; }
  // A new entry for the descriptor at `ticket`; returns its absolute index.
  uint64_t track(uint64_t ticket, uint16_t dst_rank) {
    tracked.push_back(TrackedEntry{ticket, dst_rank, 1});
    return tracked_base + tracked.size() - 1;
  }
  // The watermark: every ticket below it has completed.
  uint64_t watermark() {
    while (!tracked.empty() && tracked.front().open == 0) {
      tracked.pop_front();
      ++tracked_base;
    }
    return tracked.empty() ? position : tracked.front().ticket;
  }

  // Any thread.
  std::atomic<uint64_t> consumed{0};    // descriptors taken from the ring
  std::atomic<uint64_t> completed{0};   // descriptors whose operations completed
  std::atomic<uint64_t> rejected{0};    // bad descriptors
  std::atomic<uint64_t> fabric_ops{0};  // fabric operations posted (after coalescing)
  std::atomic<uint64_t> visits{0};      // times the proxy served it (idle rings stay at 0)
  mutable std::mutex error_mu;
  std::string first_error;  // human-readable, for Status / epxctl
};

}  // namespace epx::daemon
