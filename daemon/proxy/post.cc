// Posting: assembled writes (one fabric operation, or several for the
// elements of a kWriteStrided) and held signals go to the fabric here, and
// each operation is tied to the ring's completion-tracking entry, from which
// the completion watermark (ring.h, kFlush) follows.
#include <rdma/fi_rma.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "daemon/proxy/counters.h"
#include "daemon/proxy/descriptor_check.h"
#include "daemon/proxy/proxy.h"
#include "proto/ring/ring_host.h"

namespace epx::daemon {

uint32_t Proxy::elements_per_op(uint64_t length) const {
  const uint64_t by_bytes = length == 0 ? iov_limit_ : std::max<uint64_t>(write_limit_ / length, 1);
  return static_cast<uint32_t>(std::min<uint64_t>(iov_limit_, by_bytes));
}

ssize_t Proxy::post_fabric(const PendingWrite& w, uint32_t k, bool last, bool more, OpContext* c) {
  // Element i of a strided write: src + i * src_stride -> remote + i * dst_stride.
  iovec iov[64];
  void* descs[64];
  fi_rma_iov rma[64];
  for (uint32_t j = 0; j < k; ++j) {
    const uint64_t i = w.next + j;
    iov[j] = iovec{const_cast<uint8_t*>(w.src + i * w.src_stride), w.length};
    descs[j] = w.desc;
    rma[j] = fi_rma_iov{w.remote_addr + i * w.dst_stride, w.length, w.key};
  }
  fi_msg_rma msg = {};
  msg.msg_iov = iov;
  msg.desc = descs;
  msg.iov_count = k;
  msg.addr = w.addr;
  msg.rma_iov = rma;
  msg.rma_iov_count = k;
  msg.context = &c->ctx;
  // The immediate rides on the operation with the last element; serve.cc
  // gives an immediate only to writes that fit one operation (a longer
  // strided write's signal is held instead), so it follows all the data.
  msg.data = last ? w.imm : 0;
  // Every write completes only once placed (FI_DELIVERY_COMPLETE): the
  // watermark covers its data, a quiesce (quiesce.cc) knows it can no
  // longer arrive, and a write the fabric lost after sending it fails on
  // its sender's ring instead of vanishing. The receiver sees a signal as
  // early either way; only the sender's slot is held for the acknowledgement.
  uint64_t flags = FI_COMPLETION | (msg.data ? FI_REMOTE_CQ_DATA : 0) | flags_extra_ | (more || !last ? FI_MORE : 0);
  ssize_t ret = transport_->write(msg, flags);
  if ((ret == -FI_EBADFLAGS || ret == -FI_EOPNOTSUPP || ret == -FI_EINVAL) && flags_extra_ != 0) {
    // The provider does not take FI_DELIVERY_COMPLETE: fall back to its
    // default completion (the watermark then relies on it) and say so once.
    spdlog::warn("rail {}: provider refuses FI_DELIVERY_COMPLETE ({}); using its default completion", rail_.index(),
                 fi_strerror(static_cast<int>(-ret)));
    flags_extra_ = 0;
    flags &= ~static_cast<uint64_t>(FI_DELIVERY_COMPLETE);
    ret = transport_->write(msg, flags);
  }
  if (ret == -FI_EAGAIN) {
    // Full for every ring of this rail: the rest of the pass reaps instead.
    tx_full_ = true;
    bump(stat_eagain_, 1);
  } else if (ret == 0) {
    more_open_ = (flags & FI_MORE) != 0;
  } else {
    health_.on_failure(std::string("fi_writemsg: ") + fi_strerror(static_cast<int>(-ret)), pass_now_);
  }
  return ret;
}

Proxy::Posted Proxy::post_op(RingBinding& ring, PendingWrite& w, bool more) {
  if (tx_full_) return Posted::kRetry;
  if (free_contexts_.empty()) {
    tx_full_ = true;
    return Posted::kRetry;
  }
  const uint32_t k = std::min(w.count - w.next, elements_per_op(w.length));
  const uint64_t bytes = uint64_t{k} * w.length;
  JobShare& job = *ring.share;
  if (job.holds_back(bytes)) {
    ++job.stats.bound_waits;
    return Posted::kRetry;
  }
  // A large write goes out in pieces over every usable rail (relay.cc).
  if (!more_open_ && stripe_min_bytes_ != 0 && w.count == 1 && w.next == 0 && w.length >= stripe_min_bytes_ &&
      stripe(ring, w)) {
    bump(stat_striped_, 1);
    return Posted::kPosted;
  }
  if (!more_open_ && !health_.usable()) {
    // This rail is failing: the write goes out on a usable one (when there
    // is none, it is tried here: it may yet get through).
    const int other = usable_rail(ring, rail_.index());
    if (other >= 0 && move(ring, w, k, static_cast<uint32_t>(other))) {
      bump(stat_failover_, 1);
      return Posted::kPosted;
    }
  }
  if (!more_open_ && spread_bytes_ != 0 && !node_rails_.empty()) {
    // This NIC has a queue: another of the GPU's NICs that has little takes
    // the write (a relay costs a hand-off between threads, so only then).
    const uint64_t own = load_bytes();
    if (own >= spread_bytes_) {
      const int other = quieter_rail(ring, own);
      if (other >= 0 && move(ring, w, k, static_cast<uint32_t>(other))) {
        bump(stat_spread_, 1);
        return Posted::kPosted;
      }
    }
  }
  const bool last = w.next + k == w.count;
  OpContext* c = free_contexts_.back();
  c->ring = &ring;
  c->descriptors = last ? w.descriptors : 0;
  c->entry = w.entry;
  const ssize_t ret = post_fabric(w, k, last, more, c);
  if (ret == -FI_EAGAIN) return Posted::kRetry;
  if (ret != 0) {
    // Refused: it never left, so it is sent again, signal and all: on
    // another rail, or on this one in a later pass (where it flushes a
    // write the provider holds for FI_MORE) when none is usable.
    if (!node_rails_.empty()) {
      const int other = more_open_ ? -1 : usable_rail(ring, rail_.index());
      const uint32_t rail = other >= 0 ? static_cast<uint32_t>(other) : rail_.index();
      if (move(ring, w, k, rail)) {
        bump(stat_failover_, 1);
        return Posted::kPosted;
      }
    }
    ring::RingSlot d = {};
    d.dst_rank = w.dst_rank;
    reject(ring, d, ring::RingError::kTransport, std::string("fi_writemsg: ") + fi_strerror(static_cast<int>(-ret)));
    // The descriptors it carried are done (failed): count them so flushes end.
    bump(ring.completed, w.descriptors);
    return Posted::kFailed;
  }
  free_contexts_.pop_back();
  ++ring.inflight;
  ++ring.entry(w.entry).open;
  // Only now in flight: a context left free by EAGAIN must not count.
  c->views = ring.views.get();
  c->dst_rank = w.dst_rank;
  c->share = &job;
  c->bytes = bytes;
  load_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  c->posted_at = pass_now_;
  c->piece = w;
  c->piece.count = w.next + k;
  c->piece.imm = last ? w.imm : 0;
  ++job.inflight_ops;
  job.inflight_bytes += bytes;
  JobShareStats& st = job.stats;
  ++st.fabric_ops;
  st.fabric_bytes += bytes;
  st.max_inflight_ops = std::max(st.max_inflight_ops, job.inflight_ops);
  st.max_inflight_bytes = std::max(st.max_inflight_bytes, job.inflight_bytes);
  bump(ring.fabric_ops, 1);
  bump(stat_ops_, 1);
  bump(stat_bytes_, bytes);
  w.next += k;
  return Posted::kPosted;
}

bool Proxy::post(RingBinding& ring, bool more) {
  PendingWrite& w = *ring.pending;
  for (;;) {
    const Posted p = post_op(ring, w, more);
    if (p == Posted::kRetry) return false;
    if (p == Posted::kFailed || w.next == w.count) {
      // All of it posted (or failed): the entry no longer waits for the
      // proxy, only for the operations in flight.
      --ring.entry(w.entry).open;
      ring.pending.reset();
      return true;
    }
  }
}

bool Proxy::held_ready(RingBinding& ring, const HeldSignal& h) {
  if (!h.scoped) {
    // After every earlier descriptor: it is the oldest one not completed.
    ring.watermark();
    return h.entry == ring.tracked_base;
  }
  // After every earlier write to its rank: none of those is still open.
  for (uint64_t i = ring.tracked_base; i < h.entry; ++i) {
    const TrackedEntry& e = ring.entry(i);
    if (e.open != 0 && e.dst_rank == h.write.dst_rank) return false;
  }
  return true;
}

bool Proxy::post_held(RingBinding& ring) {
  if (ring.held.empty() || ring.closing) return false;
  bool worked = false;
  std::shared_ptr<const JobView> view = ring.views->load();
  for (auto it = ring.held.begin(); it != ring.held.end();) {
    if (!held_ready(ring, *it)) {
      ++it;  // a later signal with another scope may be ready
      continue;
    }
    HeldSignal& h = *it;
    if (h.write.view_generation != view->generation) {
      // Resolved against an older view (a rank lost, keys changed): check again.
      PendingWrite w;
      Verdict v = check_signal(*view, h.slot, rail_.index(), &w);
      if (!v.ok()) {
        reject(ring, h.slot, v.error, v.why);
        bump(ring.completed, h.write.descriptors);
        --ring.entry(h.entry).open;
        it = ring.held.erase(it);
        worked = true;
        continue;
      }
      w.src = h.write.src;
      w.length = h.write.length;
      w.desc = h.write.desc;
      w.entry = h.entry;
      w.descriptors = h.write.descriptors;
      h.write = w;
    }
    const Posted p = post_op(ring, h.write, false);
    if (p == Posted::kRetry) break;
    --ring.entry(h.entry).open;  // no longer held: only its operation (if posted) is open
    it = ring.held.erase(it);
    worked = true;
  }
  return worked;
}

void Proxy::publish_watermark(RingBinding& ring) {
  const uint64_t w = ring.watermark();
  if (w == ring.completed_published) return;
  ring::ring_publish_completed(ring.header, w);
  ring.completed_published = w;
}

}  // namespace epx::daemon
