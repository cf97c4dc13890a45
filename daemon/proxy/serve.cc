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

// How far ahead of the consumer the proxy prefetches ring slots (16 lines).
constexpr uint64_t kPrefetchSlots = 32;

}  // namespace

void Proxy::reject(RingBinding& ring, const RingSlot& d, RingError code, const std::string& why) {
  bump(ring.rejected, 1);
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

bool Proxy::post(RingBinding& ring, bool more) {
  if (free_contexts_.empty()) return false;
  PendingWrite& w = *ring.pending;
  JobShare& job = *ring.share;
  if (job.holds_back(w.length)) {
    ++job.stats.bound_waits;
    return false;
  }
  OpContext* c = free_contexts_.back();
  c->ring = &ring;
  c->descriptors = w.descriptors;
  iovec iov{const_cast<uint8_t*>(w.src), w.length};
  void* desc = w.desc;
  fi_rma_iov rma{w.remote_addr, w.length, w.key};
  fi_msg_rma msg = {};
  msg.msg_iov = &iov;
  msg.desc = &desc;
  msg.iov_count = 1;
  msg.addr = w.addr;
  msg.rma_iov = &rma;
  msg.rma_iov_count = 1;
  msg.context = &c->ctx;
  msg.data = w.imm;
  // Every write completes only once placed (FI_DELIVERY_COMPLETE): a later
  // fence covers its data, a quiesce (quiesce.cc) knows it can no longer
  // arrive, and a write the fabric lost after sending it fails on its
  // sender's ring instead of vanishing. The receiver sees a signal as early
  // either way; only the sender's slot is held for the acknowledgement.
  uint64_t flags = FI_COMPLETION | (w.imm ? FI_REMOTE_CQ_DATA : 0) | flags_extra_ | (more ? FI_MORE : 0);
  ssize_t ret = transport_->write(msg, flags);
  if ((ret == -FI_EBADFLAGS || ret == -FI_EOPNOTSUPP || ret == -FI_EINVAL) && flags_extra_ != 0) {
    // The provider does not take FI_DELIVERY_COMPLETE: fall back to its
    // default completion (fences then rely on it) and say so once.
    spdlog::warn("rail {}: provider refuses FI_DELIVERY_COMPLETE ({}); using its default completion",
                 rail_.index(), fi_strerror(static_cast<int>(-ret)));
    flags_extra_ = 0;
    flags &= ~static_cast<uint64_t>(FI_DELIVERY_COMPLETE);
    ret = transport_->write(msg, flags);
  }
  if (ret == -FI_EAGAIN) return false;
  if (ret != 0) {
    RingSlot d = {};
    d.dst_rank = w.dst_rank;
    reject(ring, d, RingError::kTransport, std::string("fi_writemsg: ") + fi_strerror(static_cast<int>(-ret)));
    // The descriptors it carried are done (failed): count them so flushes end.
    bump(ring.completed, w.descriptors);
    ring.pending.reset();
    return true;
  }
  free_contexts_.pop_back();
  ++ring.inflight;
  // Only now in flight: a context left free by EAGAIN must not count.
  c->views = ring.views.get();
  c->dst_rank = w.dst_rank;
  c->share = &job;
  c->bytes = w.length;
  ++job.inflight_ops;
  job.inflight_bytes += w.length;
  JobShareStats& st = job.stats;
  ++st.fabric_ops;
  st.fabric_bytes += w.length;
  st.max_inflight_ops = std::max(st.max_inflight_ops, job.inflight_ops);
  st.max_inflight_bytes = std::max(st.max_inflight_bytes, job.inflight_bytes);
  bump(ring.fabric_ops, 1);
  bump(stat_ops_, 1);
  ring.pending.reset();
  return true;
}

void Proxy::complete_fence(RingBinding& ring, const RingSlot& d, const JobView& view) {
  if (static_cast<RingOp>(d.op) == RingOp::kFlush) {
    bump(ring.completed, 1);
    // release: pairs with the producer's acquire load of fences_done: every
    // write before the flush has completed at its destination.
    ring::ring_store_release(&ring.header->fences_done, ++ring.fences_done);
    return;
  }
  // kSignal: an 8-byte write of the proxy's scratch word into the
  // destination's signal scratch word, carrying the immediate. Posted only
  // now, after every earlier write of the ring completed, so the receiver
  // counts it after their data is in place.
  PendingWrite w;
  Verdict v = check_signal(view, d, rail_.index(), &w);
  if (!v.ok()) {
    reject(ring, d, v.error, v.why);
    return;
  }
  w.src = reinterpret_cast<const uint8_t*>(&scratch_);
  w.length = sizeof(scratch_);
  w.desc = scratch_desc_;
  ring.pending = w;
}

bool Proxy::serve_jobs() {
  const size_t n = jobs_.size();
  if (n == 0) return false;
  bool worked = false;
  bool owing = false;  // a job sat out this pass repaying an overdraft
  for (size_t i = 0; i < n; ++i) {
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
  bool worked = false;
  const size_t n = job.rings.size();
  // Sweeps over the job's rings (each up to the batch per visit) until its
  // credit is spent, its bound is reached, or no ring has anything to post.
  for (bool progress = true; progress && job.deficit > 0 && !job.at_bound();) {
    progress = false;
    for (size_t i = 0; i < n && job.deficit > 0; ++i) {
      const size_t r = (job.next_ring + i) % n;
      if (serve(*job.rings[r], job)) {
        progress = worked = true;
        if (job.deficit <= 0 || job.at_bound()) {
          job.next_ring = (r + 1) % n;  // the next ring goes first at the next turn
          return true;
        }
      }
    }
  }
  if (n) job.next_ring = (job.next_ring + 1) % n;
  return worked;
}

bool Proxy::serve(RingBinding& ring, JobShare& job) {
  if (ring.closing) return false;
  // A pending write (held to be extended, or refused with EAGAIN or by the
  // job's in-flight bound) is posted by the loop below when the next
  // descriptor does not continue it, at a fence, or at the end of the pass.
  bool worked = false;
  std::shared_ptr<const JobView> view_ptr = ring.views->load();
  const JobView& view = *view_ptr;
  bool batch_full = true;
  uint32_t consumed = 0;  // counted once per pass: the counters are shared lines
  uint64_t taken = 0;     // descriptors taken, rejected ones included
  int64_t charged = 0;
  // Every descriptor taken from the ring is charged to the job's turn.
  auto charge = [&](uint32_t length) {
    const int64_t cost = std::max<int64_t>(length, op_cost_);
    charged += cost;
    job.deficit -= cost;
    ++taken;
  };
  uint32_t n = 0;
  for (; n < options_.batch && job.deficit > 0; ++n) {
    RingSlot d;
    // Slots arrive from another agent (often a GPU over PCIe), so each line
    // is a cache miss: ask for lines well ahead, once per line (two slots),
    // so the misses overlap the work on the slots before them.
    if ((ring.position & 1) == 0) {
      __builtin_prefetch(&ring.slots[(ring.position + kPrefetchSlots) & (ring.capacity - 1)]);
    }
    if (!ring::ring_read_slot(ring.slots, ring.capacity, ring.position, &d)) {
      batch_full = false;
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
      ++ring.position;
      charge(0);
      worked = true;
      continue;
    }
    if ((op == RingOp::kWrite || op == RingOp::kWriteSignal) && d.length == 0) {
      // Empty writes are valid (an expert that got no tokens): a plain one is
      // a no-op; one with a signal delivers just the signal, with no fence,
      // since it has no data of its own to wait for.
      if (op == RingOp::kWriteSignal) {
        PendingWrite w;
        Verdict v = check_signal(view, d, rail_.index(), &w);
        if (!v.ok()) {
          reject(ring, d, v.error, v.why);
          ++ring.position;
          charge(0);
          worked = true;
          continue;
        }
        if (ring.pending && !post(ring, true)) break;
        w.src = reinterpret_cast<const uint8_t*>(&scratch_);
        w.length = sizeof(scratch_);
        w.desc = scratch_desc_;
        ring.pending = w;
      } else {
        bump(ring.completed, 1);
      }
      ++ring.position;
      charge(0);
      ++consumed;
      worked = true;
      continue;
    }
    if (op == RingOp::kFlush || op == RingOp::kSignal) {
      // A fence: everything earlier must have completed first.
      if (ring.pending) {
        if (!post(ring, false)) break;
      }
      if (ring.inflight > 0) break;  // revisit this slot once completions came
      complete_fence(ring, d, view);
      ++ring.position;
      charge(0);
      ++consumed;
      worked = true;
      if (ring.pending && !post(ring, false)) break;
      continue;
    }
    PendingWrite w;
    if (!resolve(ring, view, d, &w)) {
      ++ring.position;
      charge(0);
      worked = true;
      continue;
    }
    // Coalesce with the previous write when both sides continue it, the
    // previous one carries no signal (a signal must follow all its data) and
    // both were checked against the same view (keys may change with it).
    PendingWrite* p = ring.pending ? &*ring.pending : nullptr;
    if (p && p->imm == 0 && p->view_generation == w.view_generation && p->dst_rank == w.dst_rank &&
        p->src_window == w.src_window &&
        p->dst_window == w.dst_window && p->src_end + w.length == w.src_end && p->dst_end + w.length == w.dst_end &&
        p->length + w.length <= write_limit_) {
      p->length += w.length;
      p->src_end = w.src_end;
      p->dst_end = w.dst_end;
      p->imm = w.imm;
      ++p->descriptors;
    } else {
      // Not adjacent: the previous write goes out first. If the provider is
      // full, leave this slot unread and come back next pass.
      if (p && !post(ring, true)) break;
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
  if (ring.position != ring.published_head) {
    ring::ring_publish_head(ring.header, ring.position);
    ring.published_head = ring.position;
  }
  return worked;
}

}  // namespace epx::daemon
