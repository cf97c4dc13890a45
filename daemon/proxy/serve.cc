#include <rdma/fi_rma.h>

#include <algorithm>
#include <limits>

#include <spdlog/spdlog.h>

#include "daemon/proxy/counters.h"
#include "daemon/proxy/descriptor_check.h"
#include "daemon/proxy/proxy.h"
#include "proto/ring/ring_host.h"

namespace epx::daemon {
namespace {

using ring::RingError;
using ring::RingOp;
using ring::RingSlot;

// How far ahead of the consumer the proxy prefetches ring slots (one line each).
constexpr uint64_t kPrefetchSlots = 16;

}  // namespace

void Proxy::reject(RingBinding& ring, const RingSlot& d, RingError code, const std::string& why) {
  bump(ring.rejected, 1);
  if (static_cast<size_t>(code) < kRejectReasons) bump(stat_rejected_[static_cast<size_t>(code)], 1);
  ring::ring_report_error(ring.header, code, ring.position);
  std::lock_guard<std::mutex> lock(ring.error_mu);
  if (ring.first_error.empty()) {
    ring.first_error = std::string(ring::ring_error_message(code)) + " at ring position " + std::to_string(ring.position) +
                       " (op " + std::to_string(d.op) + ", dst rank " + std::to_string(d.dst_rank) + "): " + why;
    spdlog::warn("client {} ring {} rank {}: {}", ring.client_id, ring.id, ring.rank, ring.first_error);
  }
}

bool Proxy::resolve(RingBinding& ring, const JobView& view, const RingSlot& d, PendingWrite* out) {
  Verdict v = check_write(view, ring.rank, d, rail_.index(), write_limit_, out);
  if (!v.ok()) reject(ring, d, v.error, v.why);
  return v.ok();
}

bool Proxy::hold_signal(RingBinding& ring, const JobView& view, const RingSlot& d, bool scoped) {
  PendingWrite w;
  Verdict v = check_signal(view, d, rail_.index(), &w);
  if (!v.ok()) {
    reject(ring, d, v.error, v.why);
    return false;
  }
  // An 8-byte write of the proxy's scratch word into the destination's
  // signal scratch word, carrying the immediate; posted once its scope has
  // completed (post.cc), so the receiver counts it after that data.
  w.src = reinterpret_cast<const uint8_t*>(&scratch_);
  w.length = sizeof(scratch_);
  w.desc = scratch_desc_;
  w.entry = ring.track(ring.position, d.dst_rank);
  ring.held.push_back(HeldSignal{w.entry, scoped, w, d});
  return true;
}

bool Proxy::serve_jobs() {
  const size_t n = jobs_.size();
  if (n == 0) return false;
  bool worked = false;
  bool owing = false;  // a job sat out this pass repaying an overdraft
  for (size_t i = 0; i < n; ++i) {
    // The rail's transmit queue is full: no job can post before completions
    // are reaped; the others keep their credit and doorbells for the next pass.
    if (tx_full_) break;
    // Start each pass at a different job so no tenant always goes first.
    JobShare& job = *jobs_[(next_job_ + i) % n];
    reweigh(job);
    // At its bound the job waits for completions, earning nothing meanwhile.
    if (job.at_bound()) continue;
    if (job.deficit <= 0) {
      // Alone on the rail, a job has nobody to repay: it never waits.
      job.deficit = n == 1 ? job.quantum : job.deficit + job.quantum;
    }
    if (job.deficit <= 0) {
      owing = true;
      continue;
    }
    if (serve_job(job)) {
      worked = true;
    } else {
      job.deficit = 0;  // idle: no credit banked for later
    }
  }
  next_job_ = (next_job_ + 1) % n;
  if (!worked && owing) {
    // Nobody could post, only because of overdrafts: run the turns that
    // would repay the smallest one (in quanta) at once instead of idling
    // through them pass by pass.
    int64_t turns = std::numeric_limits<int64_t>::max();
    for (const auto& job : jobs_) {
      if (job->deficit < 0 && !job->at_bound()) turns = std::min(turns, (-job->deficit) / job->quantum + 1);
    }
    for (auto& job : jobs_) {
      if (job->deficit < 0 && !job->at_bound()) job->deficit += turns * job->quantum;
    }
  }
  return worked;
}

bool Proxy::serve_job(JobShare& job) {
  // A doorbell counts as work even when its ring turns out empty: the proxy
  // keeps spinning (spin_us) rather than sleep through the early-doorbell
  // grace while the slot is on its way.
  bool worked = take_doorbells(job) > 0;
  // Sweeps over the job's active rings (each up to the batch per visit)
  // until its credit is spent, its bound is reached, the rail's transmit
  // queue is full, or no ring has anything to post; then drops the rings
  // that were drained. Rings not reached stay active (not drained).
  for (bool progress = true; progress && job.deficit > 0 && !job.at_bound() && !tx_full_;) {
    progress = false;
    const size_t n = job.active.size();
    for (size_t i = 0; i < n && job.deficit > 0 && !job.at_bound() && !tx_full_; ++i) {
      if (serve(*job.active[(job.next_ring + i) % n], job)) progress = worked = true;
    }
    const auto idle = [](RingBinding* r) {
      // A ring without a group has no doorbell: it stays on the list.
      const bool drop = r->closing || (r->group != nullptr && r->drained);
      if (drop) r->active = false;
      return drop;
    };
    job.active.erase(std::remove_if(job.active.begin(), job.active.end(), idle), job.active.end());
  }
  job.next_ring = job.active.empty() ? 0 : (job.next_ring + 1) % job.active.size();
  return worked;
}

bool Proxy::serve(RingBinding& ring, JobShare& job) {
  ring.drained = false;
  if (ring.closing) return false;
  bump(ring.visits, 1);
  bump(stat_visits_, 1);
  // A pending write (held to be extended, or refused with EAGAIN or by the
  // job's in-flight bound) is posted by the loop below when the next
  // descriptor does not continue it, at a flush, or at the end of the pass.
  bool worked = post_held(ring);
  std::shared_ptr<const JobView> view_ptr = ring.views->load();
  const JobView& view = *view_ptr;
  bool batch_full = true;
  bool empty = false;     // the ring had nothing more published
  uint32_t consumed = 0;  // counted once per pass: the counters are shared lines
  uint64_t taken = 0;     // descriptors taken, rejected ones included
  int64_t charged = 0;
  // Every descriptor taken from the ring is charged to the job's turn.
  auto charge = [&](uint64_t length) {
    const int64_t cost = std::max<int64_t>(static_cast<int64_t>(std::min<uint64_t>(length, INT64_MAX / 4)), op_cost_);
    charged += cost;
    job.deficit -= cost;
    ++taken;
  };
  // A descriptor the proxy is done with at once (rejected, a no-op, a flush).
  auto finish = [&](uint64_t length, bool counts) {
    ++ring.position;
    charge(length);
    if (counts) ++consumed;
    worked = true;
  };
  uint32_t n = 0;
  for (; n < options_.batch && job.deficit > 0; ++n) {
    RingSlot d;
    // Slots arrive from another agent (often a GPU over PCIe), so each line
    // is a cache miss: ask for a line well ahead, so the misses overlap the
    // work on the slots before them.
    __builtin_prefetch(&ring.slots[(ring.position + kPrefetchSlots) & (ring.capacity - 1)]);
    if (!ring::ring_read_slot(ring.slots, ring.capacity, ring.position, &d)) {
      batch_full = false;
      empty = true;
      break;
    }
    if (ring.pending && extends(*ring.pending, view, d, write_limit_)) {
      // The common case of a contiguous run: append without a full check.
      PendingWrite& p = *ring.pending;
      p.length += d.length;
      p.src_end += d.length;
      p.dst_end += d.length;
      ++p.descriptors;
      ++ring.position;
      charge(d.length);
      ++consumed;
      worked = true;
      continue;
    }
    const RingOp op = static_cast<RingOp>(d.op);
    const RingError shape = ring::ring_check_slot(d);
    if (shape != RingError::kNone) {
      reject(ring, d, shape, "descriptor fails the ring ABI checks");
      finish(0, false);
      continue;
    }
    if ((op == RingOp::kWrite || op == RingOp::kWriteSignal) && d.length == 0) {
      // Empty writes are valid (an expert that got no tokens): a plain one is
      // a no-op; one with a signal delivers just the signal, at once, since
      // it has no data of its own to wait for.
      if (op == RingOp::kWrite) {
        bump(ring.completed, 1);
        finish(0, true);
        continue;
      }
      PendingWrite w;
      Verdict v = check_signal(view, d, rail_.index(), &w);
      if (!v.ok()) {
        reject(ring, d, v.error, v.why);
        finish(0, false);
        continue;
      }
      if (ring.pending && !post(ring, true)) break;
      w.src = reinterpret_cast<const uint8_t*>(&scratch_);
      w.length = sizeof(scratch_);
      w.desc = scratch_desc_;
      w.entry = ring.track(ring.position, d.dst_rank);
      ring.pending = w;
      finish(0, true);
      continue;
    }
    if (op == RingOp::kFlush) {
      // A marker (ring.h): it completes once everything before it has, which
      // the watermark shows. What is still being assembled goes out now.
      if (ring.pending && !post(ring, false)) break;
      bump(ring.completed, 1);
      finish(0, true);
      continue;
    }
    if (op == RingOp::kSignal) {
      // Held until its scope completed; the ring goes on meanwhile.
      if (ring.held.size() >= ring::kMaxHeldSignals) break;
      if (hold_signal(ring, view, d, (d.flags & ring::kFlagScopeDestination) != 0)) {
        finish(0, true);
      } else {
        finish(0, false);
      }
      continue;
    }
    if (op == RingOp::kWriteStrided) {
      PendingWrite w;
      Verdict v = check_strided(view, ring.rank, d, rail_.index(), write_limit_, &w);
      if (!v.ok()) {
        reject(ring, d, v.error, v.why);
        finish(0, false);
        continue;
      }
      const bool split_signal = w.imm != 0 && w.count > elements_per_op(w.length);
      if (split_signal && ring.held.size() >= ring::kMaxHeldSignals) break;
      if (ring.pending && !post(ring, true)) break;
      w.entry = ring.track(ring.position, d.dst_rank);
      if (split_signal) {
        // More elements than one operation carries: the signal cannot ride
        // on the last one (EFA does not order operations), so it is held,
        // scoped to this destination, until every element completed.
        w.imm = 0;
        RingSlot signal = ring::make_signal(d.dst_rank, d.signal, /*scope_destination=*/true);
        if (hold_signal(ring, view, signal, /*scoped=*/true)) {  // checked with the write: does not fail
          ring.held.back().write.descriptors = 0;  // the write's last operation counts the descriptor
        }
      }
      ring.pending = w;
      ++ring.position;
      charge(uint64_t{d.length} * d.count);
      ++consumed;
      worked = true;
      // Its elements go out now (they are never extended), FI_MORE on all
      // but the last operation: nothing may follow in this pass (a flush, a
      // drained ring), and a provider may hold FI_MORE operations back
      // until a post without it.
      if (!post(ring, false)) break;
      continue;
    }
    PendingWrite w;
    if (!resolve(ring, view, d, &w)) {
      finish(0, false);
      continue;
    }
    // Coalesce with the previous write when both sides continue it, the
    // previous one carries no signal (a signal must follow all its data) and
    // both were checked against the same view (keys may change with it).
    PendingWrite* p = ring.pending ? &*ring.pending : nullptr;
    if (p && p->imm == 0 && p->count == 1 && p->view_generation == w.view_generation && p->dst_rank == w.dst_rank &&
        p->src_window == w.src_window && p->dst_window == w.dst_window && p->src_end + w.length == w.src_end &&
        p->dst_end + w.length == w.dst_end && p->length + w.length <= write_limit_) {
      p->length += w.length;
      p->src_end = w.src_end;
      p->dst_end = w.dst_end;
      p->imm = w.imm;
      ++p->descriptors;
    } else {
      // Not adjacent: the previous write goes out first. If the provider is
      // full, leave this slot unread and come back next pass.
      if (p && !post(ring, true)) break;
      w.entry = ring.track(ring.position, d.dst_rank);
      ring.pending = w;
    }
    ++ring.position;
    charge(d.length);
    ++consumed;
    worked = true;
  }
  if (consumed) {
    bump(ring.consumed, consumed);
    bump(stat_descriptors_, consumed);
  }
  job.stats.descriptors += taken;
  job.stats.charged_bytes += static_cast<uint64_t>(charged);
  // The job's turn ended before the batch did: what it assembled is paid
  // for and goes out now, not after the turns it may owe.
  if (n < options_.batch && job.deficit <= 0) batch_full = false;
  // A write still being assembled goes out now unless the batch limit cut
  // this pass short (more descriptors are waiting, and the next pass may
  // extend it); a drained ring never holds a write back.
  if (ring.pending && !(batch_full && ring.pending->imm == 0)) post(ring, false);
  worked |= post_held(ring);
  if (ring.position != ring.published_head) {
    ring::ring_publish_head(ring.header, ring.position);
    ring.published_head = ring.position;
  }
  publish_watermark(ring);
  // Nothing left to do here until its doorbell rings again or a completion
  // frees a held signal (completions.cc re-activates it then). A ring rung
  // within the grace stays: its slots may land after the doorbell (ring.h,
  // kCapEarlyDoorbell).
  ring.drained = empty && !ring.pending && ring.held.empty() &&
                 (!ring.early_doorbell ||
                  pass_now_ - ring.rung_at > std::chrono::microseconds(options_.early_doorbell_grace_us));
  return worked;
}

}  // namespace epx::daemon
