// Relaying: a ring's writes on other rails than its proxy's own, for
// striping large writes across the node's rails and for moving writes off
// a rail that is failing (relayed_write.h). The ring's proxy (the owner)
// decides and keeps the ring's state; the rail's proxy (the target) posts
// and answers. Both directions go through the proxies' task queues, so each
// side's state stays on its own thread.
#include <rdma/fi_errno.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "daemon/proxy/counters.h"
#include "daemon/proxy/descriptor_check.h"
#include "daemon/proxy/proxy.h"
#include "proto/ring/ring_host.h"

namespace epx::daemon {
namespace {

// Pieces are whole pages.
constexpr uint64_t kPieceAlign = 4096;

}  // namespace

int Proxy::usable_rail(const RingBinding& ring, uint32_t except) {
  auto usable = [&](size_t r) {
    return r != except && r < node_rails_.size() && node_rails_[r] != nullptr && node_rails_[r]->health().usable();
  };
  // The GPU's own rails first: another of them is as near as this one.
  const size_t own = ring.rails.size();
  for (size_t i = 0; i < own; ++i) {
    const size_t r = ring.rails[(next_rail_ + i) % own];
    if (!usable(r)) continue;
    ++next_rail_;
    return static_cast<int>(r);
  }
  const size_t n = node_rails_.size();
  for (size_t i = 0; i < n; ++i) {
    const size_t r = (next_rail_ + i) % n;
    if (!usable(r)) continue;
    next_rail_ = r + 1;
    return static_cast<int>(r);
  }
  return -1;
}

int Proxy::quieter_rail(const RingBinding& ring, uint64_t own) {
  int best = -1;
  uint64_t best_load = own / 2;
  auto consider = [&](size_t r) {
    if (r == rail_.index() || r >= node_rails_.size() || node_rails_[r] == nullptr ||
        !node_rails_[r]->health().usable()) {
      return;
    }
    const uint64_t load = node_rails_[r]->load_bytes();
    if (load < best_load) {
      best = static_cast<int>(r);
      best_load = load;
    }
  };
  if (ring.rails.empty()) {
    for (size_t r = 0; r < node_rails_.size(); ++r) consider(r);
  } else {
    for (uint32_t r : ring.rails) consider(r);
  }
  return best;
}

uint32_t Proxy::retry_rail(const RingBinding& ring, uint32_t except) {
  const int usable = usable_rail(ring, except);
  if (usable >= 0) return static_cast<uint32_t>(usable);
  const size_t n = node_rails_.size();
  for (size_t i = 0; i < n; ++i) {
    const size_t r = (next_rail_ + i) % n;
    if (r == except || node_rails_[r] == nullptr) continue;
    next_rail_ = r + 1;
    return static_cast<uint32_t>(r);
  }
  return except;
}

void Proxy::count_relay(RelayedWrite& w) {
  JobShare* job = w.ring->share;
  w.share = job;
  if (job == nullptr) return;
  ++job->inflight_ops;
  job->inflight_bytes += w.bytes;
  JobShareStats& st = job->stats;
  ++st.fabric_ops;
  st.fabric_bytes += w.bytes;
  st.max_inflight_ops = std::max(st.max_inflight_ops, job->inflight_ops);
  st.max_inflight_bytes = std::max(st.max_inflight_bytes, job->inflight_bytes);
}

void Proxy::uncount_relay(RelayedWrite& w) {
  if (w.share == nullptr) return;
  --w.share->inflight_ops;
  w.share->inflight_bytes -= w.bytes;
  w.share = nullptr;
}

void Proxy::relay(std::shared_ptr<RelayedWrite> w) {
  outstanding_.push_back(w.get());
  Proxy* target = w->rail < node_rails_.size() ? node_rails_[w->rail] : this;
  // Counted on the target from now: spreading sees where writes queue.
  target->load_bytes_.fetch_add(w->bytes, std::memory_order_relaxed);
  target->submit([target, w = std::move(w)]() mutable { target->relayed_.push_back(std::move(w)); });
}

bool Proxy::move(RingBinding& ring, PendingWrite& w, uint32_t k, uint32_t rail) {
  std::shared_ptr<const JobView> view = ring.views->load();
  auto r = std::make_shared<RelayedWrite>();
  r->write = w;
  r->write.count = w.next + k;                      // this operation's elements only
  if (r->write.count != w.count) r->write.imm = 0;  // the immediate rides on the last operation only
  if (!rebind(*view, ring.rank, rail, &r->write).ok()) return false;
  r->ring = ring.shared_from_this();
  r->owner = this;
  r->rail = rail;
  r->entry = w.entry;
  r->descriptors = r->write.count == w.count ? w.descriptors : 0;
  r->bytes = uint64_t{k} * w.length;
  count_relay(*r);
  ++ring.inflight;
  ++ring.entry(w.entry).open;
  bump(ring.fabric_ops, 1);
  w.next += k;
  relay(std::move(r));
  return true;
}

bool Proxy::stripe(RingBinding& ring, PendingWrite& w) {
  // Over the ring's GPU's rails (every rail of the node when it has none).
  std::vector<uint32_t> rails;
  auto take = [&](size_t r) {
    if (r < node_rails_.size() && node_rails_[r] != nullptr && node_rails_[r]->health().usable()) {
      rails.push_back(static_cast<uint32_t>(r));
    }
  };
  if (ring.rails.empty()) {
    for (size_t r = 0; r < node_rails_.size(); ++r) take(r);
  } else {
    for (uint32_t r : ring.rails) take(r);
  }
  const uint64_t most = std::max<uint64_t>(w.length / stripe_min_piece_, 1);
  if (rails.size() > most) rails.resize(most);
  if (rails.size() < 2) return false;
  // Start at a rotating rail: several striped writes then do not all put
  // their first (and with a remainder, largest) piece on the same rail.
  std::rotate(rails.begin(), rails.begin() + static_cast<long>(next_rail_++ % rails.size()), rails.end());
  const uint64_t align = std::min(kPieceAlign, stripe_min_piece_);
  const uint64_t per = (w.length / rails.size() + align - 1) / align * align;
  std::shared_ptr<const JobView> view = ring.views->load();
  std::vector<std::shared_ptr<RelayedWrite>> pieces;
  const uint64_t dst_offset = w.dst_end - w.length;
  for (uint64_t off = 0, i = 0; off < w.length; off += per, ++i) {
    auto r = std::make_shared<RelayedWrite>();
    r->write = w;
    r->write.src = w.src + off;
    r->write.length = std::min(per, w.length - off);
    r->write.dst_end = dst_offset + off + r->write.length;
    r->write.imm = 0;
    r->rail = rails[i % rails.size()];
    // A rail that cannot reach the rank (no address, no key): post whole here.
    if (!rebind(*view, ring.rank, r->rail, &r->write).ok()) return false;
    r->bytes = r->write.length;
    pieces.push_back(std::move(r));
  }
  auto stripe = std::make_shared<Stripe>();
  stripe->pieces_left = static_cast<uint32_t>(pieces.size());
  stripe->imm = w.imm;
  stripe->descriptors = w.descriptors;
  std::shared_ptr<RingBinding> self = ring.shared_from_this();
  for (auto& r : pieces) {
    r->ring = self;
    r->owner = this;
    r->entry = w.entry;
    r->stripe = stripe;
    count_relay(*r);
    ++ring.inflight;
    ++ring.entry(w.entry).open;
    bump(ring.fabric_ops, 1);
    relay(std::move(r));
  }
  w.next = w.count;
  return true;
}

void Proxy::relay_answered(const std::shared_ptr<RelayedWrite>& w) {
  outstanding_.erase(std::remove(outstanding_.begin(), outstanding_.end(), w.get()), outstanding_.end());
  uncount_relay(*w);
  RingBinding& ring = *w->ring;
  if (ring.share == nullptr) return;  // the ring was let go (its drain timed out): nothing to complete
  if (w->abandoned) {
    // A stalled original resolved (its copy went elsewhere): it can no
    // longer land, so its hold on the tracking entry ends.
    --ring.inflight;
    --ring.entry(w->entry).open;
    publish_watermark(ring);
    if (!ring.held.empty()) activate(ring);
    return;
  }
  if (w->stalled_copy) {
    // The copy of a stalled write: in flight for the ring from now on,
    // beside its original's hold.
    w->stalled_copy = false;
    ++ring.inflight;
    ++ring.entry(w->entry).open;
  }
  if (!w->ok) {
    // Data alone may be written twice (the same bytes); a signal must count
    // once, so a write carrying one goes again only if it surely never left.
    // Bounded: a write no rail could deliver in this many tries is an
    // error on its ring (every rail failing is a node or peer problem).
    const bool again = !ring.closing && (!w->maybe_landed || w->write.imm == 0) &&
                       w->attempts < 4 * std::max<size_t>(node_rails_.size(), 1);
    if (again) {
      const uint32_t rail = retry_rail(ring, w->rail);
      std::shared_ptr<const JobView> view = ring.views->load();
      PendingWrite moved = w->write;
      if (rebind(*view, ring.rank, rail, &moved).ok()) {
        spdlog::info("rail {}: write of {} bytes to rank {} sent again on rail {} ({})", w->rail,
                     moved.length * (moved.count - moved.next), moved.dst_rank, rail, w->error);
        w->write = moved;
        w->rail = rail;
        ++w->attempts;
        bump(stat_failover_, 1);
        w->ok = w->maybe_landed = false;
        w->error.clear();
        count_relay(*w);
        relay(w);
        return;
      }
    }
    ring::RingSlot d = {};
    d.dst_rank = w->write.dst_rank;
    std::string why = "write failed on rail " + std::to_string(w->rail) + ": " + w->error;
    if (w->maybe_landed && w->write.imm != 0) why += " (not sent again: it carries a signal that may have counted)";
    reject(ring, d, ring::RingError::kTransport, why);
    if (w->stripe) w->stripe->failed = true;
  }
  finish_relayed(ring, *w);
}

void Proxy::finish_relayed(RingBinding& ring, RelayedWrite& w) {
  --ring.inflight;
  if (Stripe* s = w.stripe.get()) {
    if (--s->pieces_left == 0) {
      if (s->imm != 0 && !s->failed && !s->signal_sent) {
        // Every piece is placed: now the signal, once, as an 8-byte write.
        s->signal_sent = true;
        auto sig = std::make_shared<RelayedWrite>();
        sig->write = w.write;
        sig->write.to_signal = true;
        sig->write.length = sizeof(scratch_);
        sig->write.count = 1;
        sig->write.next = 0;
        sig->write.imm = s->imm;
        std::shared_ptr<const JobView> view = ring.views->load();
        int rail = health_.usable() ? static_cast<int>(rail_.index()) : usable_rail(ring, rail_.index());
        if (rail < 0) rail = static_cast<int>(rail_.index());
        sig->rail = static_cast<uint32_t>(rail);
        Verdict v = rebind(*view, ring.rank, sig->rail, &sig->write);
        if (v.ok()) {
          sig->ring = w.ring;
          sig->owner = this;
          sig->entry = w.entry;
          sig->stripe = w.stripe;
          sig->bytes = sig->write.length;
          ++s->pieces_left;
          count_relay(*sig);
          ++ring.inflight;
          ++ring.entry(w.entry).open;
          relay(std::move(sig));
        } else {
          ring::RingSlot d = {};
          d.dst_rank = w.write.dst_rank;
          reject(ring, d, v.error, "signal of a striped write: " + v.why);
          s->failed = true;
        }
      }
      if (s->pieces_left == 0) bump(ring.completed, s->descriptors);
    }
  } else {
    bump(ring.completed, w.descriptors);
  }
  --ring.entry(w.entry).open;
  publish_watermark(ring);
  if (!ring.held.empty()) activate(ring);
}

void Proxy::answer(std::shared_ptr<RelayedWrite> w) {
  Proxy* owner = w->owner;
  owner->submit([owner, w = std::move(w)] { owner->relay_answered(w); });
}

bool Proxy::post_relayed() {
  bool worked = false;
  while (!relayed_.empty() && !tx_full_) {
    std::shared_ptr<RelayedWrite>& w = relayed_.front();
    PendingWrite& p = w->write;
    // The rank may have left since the owner resolved it: after a quiesce
    // nothing may be posted towards it (quiesce.cc counts this queue).
    std::shared_ptr<const JobView> view = w->ring->views->load();
    if (p.dst_rank >= view->ranks.size() || !view->ranks[p.dst_rank].present) {
      w->error = "rank " + std::to_string(p.dst_rank) + " is gone";
      load_bytes_.fetch_sub(w->bytes, std::memory_order_relaxed);
      answer(std::move(w));
      relayed_.pop_front();
      worked = true;
      continue;
    }
    if (free_contexts_.empty()) {
      tx_full_ = true;
      break;
    }
    if (p.to_signal) {
      p.src = reinterpret_cast<const uint8_t*>(&scratch_);
      p.desc = scratch_desc_;
    }
    OpContext* c = free_contexts_.back();
    c->ring = nullptr;
    const ssize_t ret = post_fabric(p, p.count - p.next, /*last=*/true, /*more=*/false, c);
    if (ret == -FI_EAGAIN) break;
    worked = true;
    if (ret != 0) {
      w->error = std::string("fi_writemsg: ") + fi_strerror(static_cast<int>(-ret));
      load_bytes_.fetch_sub(w->bytes, std::memory_order_relaxed);
      answer(std::move(w));
      relayed_.pop_front();
      continue;
    }
    free_contexts_.pop_back();
    c->views = w->ring->views.get();
    c->dst_rank = p.dst_rank;
    c->posted_at = pass_now_;
    c->bytes = w->bytes;
    c->relayed = std::move(w);
    relayed_.pop_front();
    bump(stat_ops_, 1);
    bump(stat_bytes_, c->bytes);
  }
  return worked;
}

bool Proxy::reissue(OpContext& c, const std::string& why) {
  RingBinding& ring = *c.ring;
  // A lone proxy (tests of one rail) reports every failure on the ring.
  if (ring.closing || node_rails_.empty()) return false;
  const uint32_t rail = retry_rail(ring, rail_.index());
  auto r = std::make_shared<RelayedWrite>();
  r->write = c.piece;
  std::shared_ptr<const JobView> view = ring.views->load();
  if (!rebind(*view, ring.rank, rail, &r->write).ok()) return false;
  r->ring = ring.shared_from_this();
  r->owner = this;
  r->rail = rail;
  r->entry = c.entry;
  r->descriptors = c.descriptors;
  r->bytes = c.bytes;
  spdlog::info("rail {}: write of {} bytes to rank {} sent again on rail {} ({})", rail_.index(), c.bytes,
               c.piece.dst_rank, rail, why);
  // The copy completes the descriptors and counts for the job; the
  // original keeps holding the tracking entry until it resolves.
  c.descriptors = 0;
  c.reissued = true;
  uncount(c);
  count_relay(*r);
  ++ring.inflight;
  ++ring.entry(c.entry).open;
  relay(std::move(r));
  bump(stat_failover_, 1);
  return true;
}

void Proxy::abandon_stalled(std::chrono::steady_clock::time_point now) {
  for (auto& c : contexts_) {
    if (c.posted_at == std::chrono::steady_clock::time_point{} || now - c.posted_at <= health_.options().stall)
      continue;
    // Our own ring's write without a signal: sent again elsewhere (the data
    // may land twice, the same bytes). With a signal it waits for its
    // completion here: the signal may have counted already.
    if (c.ring != nullptr && c.piece.imm == 0 && !c.reissued) {
      reissue(c, "stalled on rail " + std::to_string(rail_.index()));
      continue;
    }
    if (!c.relayed || c.relayed->write.imm != 0 || c.relayed->abandoned) continue;
    // Given up here: its owner sends a copy elsewhere. The original stays in
    // flight (it may still land; a quiesce keeps counting it) and is
    // answered when it resolves, releasing the owner's tracking entry.
    auto copy = std::make_shared<RelayedWrite>(*c.relayed);
    copy->maybe_landed = true;
    copy->stalled_copy = true;
    copy->error = "stalled on rail " + std::to_string(rail_.index());
    c.relayed->abandoned = true;
    c.relayed->share = nullptr;  // the copy counts for the job now
    c.relayed->stripe = nullptr;
    c.relayed->descriptors = 0;
    answer(std::move(copy));
  }
}

}  // namespace epx::daemon
