#include "daemon/proxy/descriptor_check.h"

namespace epx::daemon {
namespace {

using ring::RingError;

Verdict bad(RingError e, std::string why) { return Verdict{e, std::move(why)}; }

// The destination rank, present, and the remote rail paired with ours.
Verdict check_rank(const JobView& view, uint16_t dst_rank, uint32_t rail, uint32_t* remote_rail) {
  if (dst_rank >= view.world) {
    return bad(RingError::kBadRank, "job " + view.job_id + " has " + std::to_string(view.world) + " ranks");
  }
  const RankView& dst = view.ranks[dst_rank];
  if (!dst.present) return bad(RingError::kBadRank, "rank " + std::to_string(dst_rank) + " is not present (left or lost)");
  if (rail >= dst.addrs.size() || dst.addrs[rail] == FI_ADDR_UNSPEC) {
    return bad(RingError::kBadRank, "rank " + std::to_string(dst_rank) + " has no address on rail " + std::to_string(rail));
  }
  if (rail < dst.paired_rail.size()) {
    *remote_rail = dst.paired_rail[rail];
  } else {
    *remote_rail = dst.remote_rails ? rail % dst.remote_rails : 0;
  }
  return {};
}

Verdict check_immediate(const RankView& dst, uint16_t dst_rank, uint32_t signal, uint32_t* imm) {
  const uint32_t index = ring::signal_index(signal);
  if (index >= dst.signal_count) {
    return bad(RingError::kBadSignal, "signal " + std::to_string(index) + " beyond rank " + std::to_string(dst_rank) +
                                          "'s " + std::to_string(dst.signal_count) + " signals");
  }
  *imm = ring::encode_signal(dst.signal_base + index, ring::signal_increment(signal));
  return {};
}

}  // namespace

Verdict check_write(const JobView& view, uint32_t src_rank, const ring::RingSlot& d, uint32_t rail,
                    uint64_t max_bytes, PendingWrite* out) {
  uint32_t rrail = 0;
  if (Verdict v = check_rank(view, d.dst_rank, rail, &rrail); !v.ok()) return v;
  const RankView& dst = view.ranks[d.dst_rank];
  const uint16_t sw = ring::address_window(d.src), dw = ring::address_window(d.dst);
  const uint64_t so = ring::address_offset(d.src), doff = ring::address_offset(d.dst);
  const auto& mine = view.ranks[src_rank].local_windows;
  if (sw == 0 || sw >= mine.size() || mine[sw].size == 0) {
    return bad(RingError::kBadWindow, "source window " + std::to_string(sw) + " is not one of rank " +
                                          std::to_string(src_rank) + "'s windows");
  }
  if (dw == 0 || dw >= dst.windows.size() || dst.windows[dw].size == 0) {
    return bad(RingError::kBadWindow, "rank " + std::to_string(d.dst_rank) + " has no window " + std::to_string(dw) +
                                          " (created and published?)");
  }
  if (d.length == 0 || d.length > max_bytes) {
    return bad(RingError::kOutOfBounds, "length " + std::to_string(d.length) + " not in 1.." + std::to_string(max_bytes));
  }
  if (so > mine[sw].size || d.length > mine[sw].size - so) {
    return bad(RingError::kOutOfBounds, "source [" + std::to_string(so) + ", +" + std::to_string(d.length) +
                                            ") beyond window " + std::to_string(sw) + " of " +
                                            std::to_string(mine[sw].size) + " bytes");
  }
  const RemoteWindow& rw = dst.windows[dw];
  if (doff > rw.size || d.length > rw.size - doff) {
    return bad(RingError::kOutOfBounds, "destination [" + std::to_string(doff) + ", +" + std::to_string(d.length) +
                                            ") beyond rank " + std::to_string(d.dst_rank) + "'s window " +
                                            std::to_string(dw) + " of " + std::to_string(rw.size) + " bytes");
  }
  if (rrail >= rw.rails.size() || rail >= mine[sw].descs.size()) {
    return bad(RingError::kBadWindow, "window " + std::to_string(dw) + " has no key for rail " + std::to_string(rrail));
  }
  uint32_t imm = 0;
  if (static_cast<ring::RingOp>(d.op) == ring::RingOp::kWriteSignal) {
    if (Verdict v = check_immediate(dst, d.dst_rank, d.signal, &imm); !v.ok()) return v;
  }
  out->dst_rank = d.dst_rank;
  out->src = mine[sw].data + so;
  out->length = d.length;
  out->desc = mine[sw].descs[rail];
  out->remote_addr = rw.rails[rrail].base + doff;
  out->key = rw.rails[rrail].key;
  out->addr = dst.addrs[rail];
  out->imm = imm;
  out->descriptors = 1;
  out->src_window = sw;
  out->dst_window = dw;
  out->src_end = so + d.length;
  out->dst_end = doff + d.length;
  out->src_limit = mine[sw].size;
  out->dst_limit = rw.size;
  out->view_generation = view.generation;
  return {};
}

bool strided_fits(uint64_t offset, uint64_t stride, uint32_t count, uint64_t length, uint64_t size) {
  if (count == 0) return true;
  // The first element.
  if (offset > size || length > size - offset) return false;
  // The last one starts (count - 1) * stride after it; the room left after
  // the first element must hold that distance. Divided, not multiplied.
  const uint64_t room = size - offset - length;
  return stride == 0 || uint64_t{count - 1} <= room / stride;
}

Verdict check_strided(const JobView& view, uint32_t src_rank, const ring::RingSlot& d, uint32_t rail,
                      uint64_t max_bytes, PendingWrite* out) {
  // The first element is a kWrite (or kWriteSignal) of its own: check it so.
  ring::RingSlot first = d;
  first.op = static_cast<uint8_t>(d.signal ? ring::RingOp::kWriteSignal : ring::RingOp::kWrite);
  first.count = 0;
  first.src_stride = first.dst_stride = 0;
  if (Verdict v = check_write(view, src_rank, first, rail, max_bytes, out); !v.ok()) return v;
  const uint64_t so = ring::address_offset(d.src), doff = ring::address_offset(d.dst);
  if (!strided_fits(so, d.src_stride, d.count, d.length, out->src_limit)) {
    return bad(RingError::kOutOfBounds, "source element " + std::to_string(d.count - 1) + " of [" +
                                            std::to_string(so) + " + i * " + std::to_string(d.src_stride) + ", +" +
                                            std::to_string(d.length) + ") beyond window " +
                                            std::to_string(out->src_window) + " of " +
                                            std::to_string(out->src_limit) + " bytes");
  }
  if (!strided_fits(doff, d.dst_stride, d.count, d.length, out->dst_limit)) {
    return bad(RingError::kOutOfBounds, "destination element " + std::to_string(d.count - 1) + " of [" +
                                            std::to_string(doff) + " + i * " + std::to_string(d.dst_stride) + ", +" +
                                            std::to_string(d.length) + ") beyond rank " +
                                            std::to_string(d.dst_rank) + "'s window " +
                                            std::to_string(out->dst_window) + " of " +
                                            std::to_string(out->dst_limit) + " bytes");
  }
  out->count = d.count;
  out->next = 0;
  out->src_stride = d.src_stride;
  out->dst_stride = d.dst_stride;
  // Back to back on both sides: one plain write (both bounds were checked,
  // so the product is at most the window size).
  if (d.count > 1 && d.src_stride == d.length && d.dst_stride == d.length &&
      uint64_t{d.count} * d.length <= max_bytes) {
    out->length = uint64_t{d.count} * d.length;
    out->count = 1;
    out->src_stride = out->dst_stride = 0;
  }
  // Never extended by a later descriptor (extends() wants count == 1 and
  // these ends would be wrong for count > 1).
  out->src_end = so + out->length;
  out->dst_end = doff + out->length;
  return {};
}

bool extends(const PendingWrite& p, const JobView& view, const ring::RingSlot& d, uint64_t max_bytes) {
  if (p.view_generation != view.generation || p.count != 1) return false;
  // A kWrite's shape (flags 0, signal 0) is part of the test, so a slot that
  // passes needs no ring_check_slot either.
  if (static_cast<ring::RingOp>(d.op) != ring::RingOp::kWrite || d.flags != 0 || d.signal != 0) return false;
  if (p.imm != 0 || p.length == 0 || d.length == 0 || d.dst_rank != p.dst_rank) return false;
  if (ring::address_window(d.src) != p.src_window || ring::address_window(d.dst) != p.dst_window) return false;
  if (ring::address_offset(d.src) != p.src_end || ring::address_offset(d.dst) != p.dst_end) return false;
  // The ends never exceed the limits (check_write put them inside), so
  // these subtractions cannot wrap.
  return d.length <= p.src_limit - p.src_end && d.length <= p.dst_limit - p.dst_end &&
         d.length <= max_bytes - p.length;
}

Verdict check_signal(const JobView& view, const ring::RingSlot& d, uint32_t rail, PendingWrite* out) {
  uint32_t rrail = 0;
  if (Verdict v = check_rank(view, d.dst_rank, rail, &rrail); !v.ok()) return v;
  const RankView& dst = view.ranks[d.dst_rank];
  uint32_t imm = 0;
  if (Verdict v = check_immediate(dst, d.dst_rank, d.signal, &imm); !v.ok()) return v;
  if (rrail >= dst.signal_target.rails.size()) {
    return bad(RingError::kBadSignal, "rank " + std::to_string(d.dst_rank) + "'s signals have no key for rail " +
                                          std::to_string(rrail));
  }
  out->dst_rank = d.dst_rank;
  out->to_signal = true;
  out->remote_addr = dst.signal_target.rails[rrail].base;
  out->key = dst.signal_target.rails[rrail].key;
  out->addr = dst.addrs[rail];
  out->imm = imm;
  out->descriptors = 1;
  out->view_generation = view.generation;
  return {};
}

Verdict rebind(const JobView& view, uint32_t src_rank, uint32_t rail, PendingWrite* w) {
  uint32_t rrail = 0;
  if (Verdict v = check_rank(view, w->dst_rank, rail, &rrail); !v.ok()) return v;
  const RankView& dst = view.ranks[w->dst_rank];
  w->addr = dst.addrs[rail];
  if (w->to_signal) {
    if (rrail >= dst.signal_target.rails.size()) {
      return bad(RingError::kBadSignal, "rank " + std::to_string(w->dst_rank) + "'s signals have no key for rail " +
                                            std::to_string(rrail));
    }
    w->remote_addr = dst.signal_target.rails[rrail].base;
    w->key = dst.signal_target.rails[rrail].key;
    w->desc = nullptr;  // the posting proxy's own scratch word
    return {};
  }
  const auto& mine = view.ranks[src_rank].local_windows;
  if (w->src_window >= mine.size() || rail >= mine[w->src_window].descs.size() ||
      w->dst_window >= dst.windows.size() || rrail >= dst.windows[w->dst_window].rails.size()) {
    return bad(RingError::kBadWindow, "window " + std::to_string(w->dst_window) + " of rank " +
                                          std::to_string(w->dst_rank) + " has no key for rail " +
                                          std::to_string(rrail) + " (paired with local rail " + std::to_string(rail) +
                                          ")");
  }
  // The checks made when the write was resolved hold: windows only go with
  // a new view, and a write resolved against an older one is checked again
  // by the caller.
  const RemoteRail& key = dst.windows[w->dst_window].rails[rrail];
  w->desc = mine[w->src_window].descs[rail];
  w->remote_addr = key.base + (w->dst_end - w->length);
  w->key = key.key;
  return {};
}

}  // namespace epx::daemon
