// JobShare: one job's share of one proxy's rail. A proxy serves jobs, not
// rings, so a job with many rings gets no more than a job with one:
//
// - Deficit round robin by bytes. At its turn in a pass a job earns
//   `quantum x weight` bytes when it owes nothing, and posts while its
//   deficit is positive. Every descriptor costs its length, but at least the
//   per-op cost, so floods of tiny writes pay for the proxy time they take. A
//   write larger than the deficit still goes out whole (it is one fabric
//   operation); the job then owes the excess and sits out the following
//   turns until the quantum has repaid it. A job that finds its rings empty
//   keeps no credit (it cannot bank turns while idle).
// - Within a job, rings take turns (round robin), `batch` descriptors each.
//   Only ACTIVE rings take turns: a ring joins its job's active list when
//   the proxy takes its doorbell (ring.h, RingGroupHeader) and leaves it
//   once drained (nothing published, nothing assembled or held back), so
//   a job with 132 idle channel rings costs a pass a few doorbell loads.
// - A bound on the job's writes in flight on this rail, in operations and in
//   bytes (both x weight), so no job fills the rail's transmit queue: at the
//   bound, the job's next write waits (its descriptors stay in its ring, in
//   order) and the job skips its turns until completions come back.
//
// Proxy thread only, except JobShareStats, which is copied out on it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace epx::daemon {

class JobViewCell;
struct RingBinding;
struct RingGroupBinding;

struct JobShareStats {
  std::string job_id;
  uint32_t weight = 1;
  uint64_t descriptors = 0;       // taken from the job's rings (rejected ones too)
  uint64_t charged_bytes = 0;     // what the turns charged: max(length, op cost) per descriptor
  uint64_t fabric_ops = 0;        // writes posted
  uint64_t fabric_bytes = 0;      // bytes of those writes
  uint64_t max_inflight_ops = 0;  // high-water marks of the writes in flight
  uint64_t max_inflight_bytes = 0;
  uint64_t bound_waits = 0;  // writes held back by the in-flight bound (each time)
};

struct JobShare {
  const JobViewCell* cell = nullptr;      // the job's identity on this proxy
  std::vector<RingBinding*> rings;        // the job's rings here (the proxy owns them)
  std::vector<RingGroupBinding*> groups;  // their groups: the doorbells to read
  std::vector<RingBinding*> active;       // rings with work (or work in progress)
  size_t next_ring = 0;                   // the active ring that goes first at the next turn
  int64_t deficit = 0;                    // bytes it may still post; negative: owed
  // Set from the cell's weight at each turn.
  int64_t quantum = 0;
  uint64_t max_inflight_ops = 0, max_inflight_bytes = 0;
  uint64_t inflight_ops = 0, inflight_bytes = 0;
  JobShareStats stats;

  bool at_bound() const { return inflight_ops >= max_inflight_ops || inflight_bytes >= max_inflight_bytes; }
  // Whether a write of `bytes` must wait for completions first. A write
  // larger than the whole byte bound goes out alone.
  bool holds_back(uint64_t bytes) const {
    return inflight_ops != 0 && (inflight_ops >= max_inflight_ops || inflight_bytes + bytes > max_inflight_bytes);
  }
};

}  // namespace epx::daemon
