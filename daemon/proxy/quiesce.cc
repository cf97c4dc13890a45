// Quiesce: waiting until none of this rail's writes can still reach a rank
// that is leaving, so its registrations may close. On the tcp provider a
// write that arrives for a closed key makes the receiver drop the whole
// connection, which every job between the two daemons shares; on other
// providers a late write could meet a newer registration that reused the
// key. Either way one job's exit would touch another's traffic.
#include <algorithm>

#include "daemon/proxy/proxy.h"

namespace epx::daemon {

void Proxy::quiesce_async(std::shared_ptr<const JobViewCell> views, uint32_t rank, std::chrono::milliseconds timeout,
                          std::function<void(Status)> done) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  submit([this, views = std::move(views), rank, deadline, timeout, done = std::move(done)]() mutable {
    quiescing_.push_back(Quiescing{std::move(views), rank, deadline, timeout, std::move(done)});
  });
}

size_t Proxy::writes_towards(const JobViewCell* views, uint32_t rank) const {
  size_t n = 0;
  for (const auto& c : contexts_) {
    if (c.views == views && c.dst_rank == rank) ++n;
  }
  // Handed here by another rail's proxy and not posted yet (one relayed
  // before the rank was marked absent, still in a task queue, is refused
  // when this proxy gets to it: post_relayed checks the view).
  for (const auto& w : relayed_) {
    if (w->ring->views.get() == views && w->write.dst_rank == rank) ++n;
  }
  // Assembled but not yet accepted by the provider (a closing ring dropped
  // its own).
  for (const auto& r : rings_) {
    if (r->views.get() != views || r->closing) continue;
    if (r->pending && r->pending->dst_rank == rank) ++n;
    // Held signals: re-checked against the view when they go, so one
    // towards an absent rank is rejected at the ring's next visit.
    for (const auto& h : r->held) n += h.write.dst_rank == rank ? 1 : 0;
  }
  return n;
}

bool Proxy::finish_quiesces() {
  if (quiescing_.empty()) return false;
  const auto now = std::chrono::steady_clock::now();
  bool worked = false;
  for (auto it = quiescing_.begin(); it != quiescing_.end();) {
    const size_t left = writes_towards(it->views.get(), it->rank);
    if (left != 0 && now < it->deadline) {
      ++it;
      continue;
    }
    Status s;
    if (left != 0) {
      s = deadline_exceeded("rail " + std::to_string(rail_.index()) + ": " + std::to_string(left) +
                            " write(s) towards rank " + std::to_string(it->rank) + " still in flight after " +
                            std::to_string(it->timeout.count()) + " ms");
    }
    auto done = std::move(it->done);
    it = quiescing_.erase(it);
    if (done) done(std::move(s));
    worked = true;
  }
  return worked;
}

void Proxy::release_context(OpContext* c) {
  load_bytes_.fetch_sub(c->bytes, std::memory_order_relaxed);
  c->bytes = 0;
  c->ring = nullptr;
  c->views = nullptr;
  c->posted_at = {};
  c->relayed.reset();
  c->reissued = false;
  free_contexts_.push_back(c);
}

}  // namespace epx::daemon
