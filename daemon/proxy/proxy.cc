#include "daemon/proxy/proxy.h"

#include <pthread.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_rma.h>
#include <sched.h>

#include <chrono>
#include <future>

#include <spdlog/spdlog.h>

#include "daemon/dataplane/job_plane.h"
#include "daemon/proxy/descriptor_check.h"
#include "proto/ring/ring_host.h"

namespace epx::daemon {
namespace {

using ring::RingError;
using ring::RingOp;
using ring::RingSlot;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxContexts = 4096;

// Counters the proxy thread alone writes (others only read them): a plain
// load and store, not a locked read-modify-write on every descriptor.
inline void bump(std::atomic<uint64_t>& counter, uint64_t n) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
constexpr int kCqBatch = 32;
// How far ahead of the consumer the proxy prefetches ring slots (16 lines).
constexpr uint64_t kPrefetchSlots = 32;

}  // namespace

Result<MrPtr> register_memory(Rail& rail, void* data, size_t length, uint64_t requested_key) {
  fid_mr* mr = nullptr;
  int ret = fi_mr_reg(rail.domain(), data, length, FI_WRITE | FI_REMOTE_WRITE | FI_READ | FI_REMOTE_READ, 0,
                      requested_key, 0, &mr, nullptr);
  if (ret != 0) {
    return fi_status(ret, "fi_mr_reg of " + std::to_string(length) + " bytes on rail " + std::to_string(rail.index()));
  }
  return MrPtr(mr);
}

Proxy::Proxy(Rail& rail, const SignalSpace& signals, ProxyOptions options)
    : rail_(rail),
      signals_(signals),
      options_(options),
      virt_addr_((rail.mr_mode() & FI_MR_VIRT_ADDR) != 0),
      write_limit_(std::min<uint64_t>(options.max_write_bytes, rail.max_msg_size())) {}

Proxy::~Proxy() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

Status Proxy::start() {
  const size_t tx = rail_.info().tx_attr->size ? rail_.info().tx_attr->size : 256;
  contexts_.resize(std::min(tx, kMaxContexts));
  for (auto& c : contexts_) free_contexts_.push_back(&c);
  auto mr = register_memory(rail_, &scratch_, sizeof(scratch_), 0xE0000000ull + rail_.index());
  if (!mr.ok()) return mr.status().with_context("proxy scratch word");
  scratch_mr_ = std::move(mr.value());
  scratch_desc_ = fi_mr_desc(scratch_mr_.get());
  thread_ = std::thread([this] { run(); });
  return Status();
}

Status Proxy::execute(std::function<void()> task, std::chrono::milliseconds timeout) {
  // Tasks capture the caller's stack by reference, so a task must never run
  // after execute() returned: on timeout a task still queued is cancelled;
  // one already running is waited for (it is short and the proxy is alive).
  enum : int { kQueued, kRunning, kCancelled };
  struct State {
    std::atomic<int> phase{kQueued};
    std::promise<void> done;
  };
  auto state = std::make_shared<State>();
  auto future = state->done.get_future();
  {
    std::lock_guard<std::mutex> lock(task_mu_);
    tasks_.push_back([task = std::move(task), state] {
      int queued = kQueued;
      // acq_rel: pairs with the caller's compare-exchange to kCancelled.
      if (!state->phase.compare_exchange_strong(queued, kRunning, std::memory_order_acq_rel)) return;
      task();
      state->done.set_value();
    });
  }
  has_tasks_.store(true, std::memory_order_release);
  if (future.wait_for(timeout) == std::future_status::ready) return Status();
  int queued = kQueued;
  if (state->phase.compare_exchange_strong(queued, kCancelled, std::memory_order_acq_rel)) {
    return deadline_exceeded("proxy of rail " + std::to_string(rail_.index()) + " did not take a task within " +
                             std::to_string(timeout.count()) + " ms (busy or stalled)");
  }
  future.wait();  // running now: it finishes on its own
  return Status();
}

Status Proxy::add_ring(std::shared_ptr<RingBinding> ring) {
  return execute([this, ring] {
    rings_.push_back(ring);
    ring_count_.store(rings_.size(), std::memory_order_relaxed);
  });
}

Status Proxy::remove_ring(const std::shared_ptr<RingBinding>& ring, std::chrono::milliseconds timeout) {
  EPX_RETURN_IF_ERROR(execute([ring] {
    ring->closing = true;
    ring->pending.reset();
  }));
  const auto end = Clock::now() + timeout;
  Status drained;
  for (;;) {
    bool idle = false;
    EPX_RETURN_IF_ERROR(execute([&] { idle = ring->inflight == 0; }));
    if (idle) break;
    if (Clock::now() >= end) {
      drained = deadline_exceeded("ring " + std::to_string(ring->id) + " still had writes in flight after " +
                                  std::to_string(timeout.count()) + " ms");
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EPX_RETURN_IF_ERROR(execute([this, ring] {
    rings_.erase(std::remove(rings_.begin(), rings_.end(), ring), rings_.end());
    ring_count_.store(rings_.size(), std::memory_order_relaxed);
    // Completions still to come for a timed-out ring must not touch it.
    for (auto& c : contexts_) {
      if (c.ring == ring.get()) c.ring = nullptr;
    }
  }));
  return drained;
}

ProxyStats Proxy::stats() const {
  ProxyStats s;
  s.descriptors = stat_descriptors_.load(std::memory_order_relaxed);
  s.fabric_ops = stat_ops_.load(std::memory_order_relaxed);
  s.signals_applied = stat_signals_.load(std::memory_order_relaxed);
  s.bad_immediates = stat_bad_imm_.load(std::memory_order_relaxed);
  s.busy_ns = stat_busy_ns_.load(std::memory_order_relaxed);
  return s;
}

void Proxy::run() {
  const std::string name = "epx-proxy-" + std::to_string(rail_.index());
  pthread_setname_np(pthread_self(), name.c_str());
  if (options_.core >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(options_.core, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
      spdlog::warn("{}: cannot pin to core {}", name, options_.core);
    }
  }
  auto last_work = Clock::now();
  while (!stop_.load(std::memory_order_acquire)) {
    const auto pass_start = Clock::now();
    bool worked = run_tasks();
    const size_t n = rings_.size();
    for (size_t i = 0; i < n; ++i) {
      // Start each pass at a different ring so no tenant always goes first.
      worked |= serve(*rings_[(next_ring_ + i) % n]);
    }
    if (n) next_ring_ = (next_ring_ + 1) % n;
    worked |= poll_cq();
    const auto now = Clock::now();
    if (worked) {
      last_work = now;
      stat_busy_ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(now - pass_start).count(),
                              std::memory_order_relaxed);
    } else if (options_.idle_sleep_us > 0 && now - last_work > std::chrono::microseconds(options_.spin_us)) {
      std::this_thread::sleep_for(std::chrono::microseconds(options_.idle_sleep_us));
    }
  }
}

bool Proxy::run_tasks() {
  // acquire: pairs with execute()'s release store.
  if (!has_tasks_.load(std::memory_order_acquire)) return false;
  std::deque<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(task_mu_);
    tasks.swap(tasks_);
    has_tasks_.store(false, std::memory_order_relaxed);
  }
  for (auto& t : tasks) t();
  return true;
}

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
  // Plain writes complete only once placed (FI_DELIVERY_COMPLETE), so a
  // later fence covers their data. A write with an immediate needs no such
  // wait: its own signal reports its placement to the receiver.
  uint64_t flags = FI_COMPLETION | (w.imm ? FI_REMOTE_CQ_DATA : flags_extra_) | (more ? FI_MORE : 0);
  ssize_t ret = fi_writemsg(rail_.ep(), &msg, flags);
  if ((ret == -FI_EBADFLAGS || ret == -FI_EOPNOTSUPP || ret == -FI_EINVAL) && flags_extra_ != 0) {
    // The provider does not take FI_DELIVERY_COMPLETE: fall back to its
    // default completion (fences then rely on it) and say so once.
    spdlog::warn("rail {}: provider refuses FI_DELIVERY_COMPLETE ({}); using its default completion",
                 rail_.index(), fi_strerror(static_cast<int>(-ret)));
    flags_extra_ = 0;
    flags &= ~static_cast<uint64_t>(FI_DELIVERY_COMPLETE);
    ret = fi_writemsg(rail_.ep(), &msg, flags);
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

bool Proxy::serve(RingBinding& ring) {
  if (ring.closing) return false;
  // A pending write (held to be extended, or refused with EAGAIN) is posted
  // by the loop below when the next descriptor does not continue it, at a
  // fence, or at the end of the pass.
  bool worked = false;
  std::shared_ptr<const JobView> view_ptr = ring.plane->view();
  const JobView& view = *view_ptr;
  bool batch_full = true;
  uint32_t consumed = 0;  // counted once per pass: the counters are shared lines
  for (uint32_t n = 0; n < options_.batch; ++n) {
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
      ++consumed;
      worked = true;
      continue;
    }
    const RingOp op = static_cast<RingOp>(d.op);
    const RingError shape = ring::ring_check_slot(d);
    if (shape != RingError::kNone) {
      reject(ring, d, shape, "descriptor fails the ring ABI checks");
      ++ring.position;
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
      ++consumed;
      worked = true;
      if (ring.pending && !post(ring, false)) break;
      continue;
    }
    PendingWrite w;
    if (!resolve(ring, view, d, &w)) {
      ++ring.position;
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
    ++consumed;
    worked = true;
  }
  if (consumed) {
    bump(ring.consumed, consumed);
    bump(stat_descriptors_, consumed);
  }
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

bool Proxy::poll_cq() {
  fi_cq_data_entry entries[kCqBatch];
  ssize_t n = fi_cq_read(rail_.cq(), entries, kCqBatch);
  if (n == -FI_EAGAIN) return false;
  if (n == -FI_EAVAIL) {
    fi_cq_err_entry err = {};
    if (fi_cq_readerr(rail_.cq(), &err, 0) > 0) {
      char buf[256];
      const char* text = fi_cq_strerror(rail_.cq(), err.prov_errno, err.err_data, buf, sizeof(buf));
      auto* c = static_cast<OpContext*>(err.op_context);
      if (c != nullptr) {
        if (c->ring) {
          RingSlot d = {};
          reject(*c->ring, d, RingError::kTransport, std::string("write failed: ") + fi_strerror(err.err) + ": " +
                                                       (text ? text : ""));
          --c->ring->inflight;
          bump(c->ring->completed, c->descriptors);
        }
        c->ring = nullptr;
        free_contexts_.push_back(c);
      } else {
        spdlog::warn("rail {}: completion error without context: {}", rail_.index(), text ? text : "?");
      }
    }
    return true;
  }
  if (n < 0) {
    spdlog::error("rail {}: fi_cq_read: {}", rail_.index(), fi_strerror(static_cast<int>(-n)));
    return false;
  }
  for (ssize_t i = 0; i < n; ++i) {
    const fi_cq_data_entry& e = entries[i];
    if (e.flags & FI_REMOTE_CQ_DATA) {
      const uint32_t imm = static_cast<uint32_t>(e.data);
      if (signals_.apply(ring::signal_index(imm), ring::signal_increment(imm))) {
        bump(stat_signals_, 1);
      } else {
        bump(stat_bad_imm_, 1);
      }
      continue;
    }
    auto* c = static_cast<OpContext*>(e.op_context);
    if (c == nullptr) continue;
    if (c->ring) {
      --c->ring->inflight;
      bump(c->ring->completed, c->descriptors);
    }
    c->ring = nullptr;
    free_contexts_.push_back(c);
  }
  return n > 0;
}

}  // namespace epx::daemon
