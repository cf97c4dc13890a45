// Proxy: the thread that owns one rail. It serves the rings assigned to it
// (every job's, sharing the rail fairly between jobs: job_share.h), turns
// their descriptors into fabric writes, reaps completions, and applies the
// signals that remote writes carry. Everything
// that touches the rail's libfabric objects runs on this thread: other
// threads hand it work with execute() or submit().
//
// Files: proxy.cc (thread, rings, doorbells), serve.cc (descriptors to
// writes), post.cc (writes and held signals to the fabric), completions.cc
// (the CQ: local completions, the completion watermark, remote signals).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/fabric/transport.h"
#include "daemon/proxy/job_share.h"
#include "daemon/proxy/rail_health.h"
#include "daemon/proxy/relayed_write.h"
#include "daemon/proxy/ring_binding.h"
#include "daemon/proxy/signal_space.h"
#include "daemon/proxy/task_queue.h"
#include "epx/status.h"

namespace epx::daemon {

struct ProxyOptions {
  int core = -1;  // pin to this CPU; -1: no pinning
  // Without `core`: run on these CPUs (the NIC's NUMA node), those of them
  // the process may use; empty: wherever the scheduler puts it.
  std::vector<int> cpus;
  uint32_t batch = 64;          // descriptors per ring per visit (round robin within a job)
  uint32_t spin_us = 1000;      // busy-poll this long after the last work before backing off
  uint32_t idle_sleep_us = 50;  // then sleep this long between polls; 0: always spin
  uint64_t max_write_bytes = 1ull << 30;
  // Sharing the rail between jobs (job_share.h): bytes a job of weight 1 may
  // post per turn, the least a descriptor costs, and the writes (count and
  // bytes) a job of weight 1 may have in flight. A job of weight w gets w
  // times each, but never more than half the rail's transmit contexts.
  uint64_t quantum_bytes = 256 << 10;
  uint64_t op_cost_bytes = 4 << 10;
  uint32_t job_inflight_ops = 64;
  uint64_t job_inflight_bytes = 2 << 20;
  // Apply those bounds to a job alone on the rail too (normally only half
  // the transmit queue bounds it). With a provider whose receiving side
  // copies in its progress (shm), fewer writes in flight keep the peer
  // proxy's completion reads short, so it posts its own writes between
  // copies (the daemon turns it on for shm rails: config single_job_bound).
  bool bound_single_job = false;
  // How long a ring stays in view after its doorbell was taken while it
  // shows nothing new (ring.h, kCapEarlyDoorbell).
  uint32_t early_doorbell_grace_us = ring::kEarlyDoorbellGraceUs;
  // How often the idle device rings are looked at for a slot published
  // after the grace ran out (sweep_early_doorbell_rings); 0: never (tests).
  uint32_t early_doorbell_sweep_us = 1000;
  RailHealthOptions health;
  // Writes of at least this many bytes are split across every usable rail
  // of the node (relayed_write.h); 0: never split.
  uint64_t stripe_min_bytes = 0;
  // The smallest piece: smaller ones cost more in per-operation overhead
  // than a rail of their own gains.
  uint64_t stripe_min_piece = 64 << 10;
  // A write that is not striped leaves through this rail unless this rail
  // has at least this many bytes in flight and another rail of the ring's
  // GPU has less than half as many (then it is relayed there); 0: never.
  uint64_t spread_bytes = 0;
};

// ring::RingError codes 0..kTransport.
constexpr size_t kRejectReasons = static_cast<size_t>(ring::RingError::kTransport) + 1;

struct ProxyStats {
  uint64_t descriptors = 0;      // consumed from rings
  uint64_t fabric_ops = 0;       // writes posted (after coalescing)
  uint64_t signals_applied = 0;  // remote writes' immediates applied here
  uint64_t bad_immediates = 0;   // immediates naming no signal (stale or forged)
  uint64_t busy_ns = 0;          // time in passes that did work
  // Of that, time in completion reads that reaped something: with a
  // provider that copies in the receiving process (shm), its copies of
  // incoming writes happen there.
  uint64_t progress_ns = 0;
  uint64_t ring_visits = 0;   // times a ring was served (idle rings are not)
  uint64_t doorbells = 0;     // doorbells taken
  // Device rings found published by the sweep behind the early-doorbell
  // grace (sweep_early_doorbell_rings): normally 0.
  uint64_t swept = 0;
  uint64_t refused = 0;       // writes the provider refused with -FI_EAGAIN (offered again next pass)
  uint64_t posted_bytes = 0;  // bytes of the writes posted
  // Writes of this rail's rings that went elsewhere: split over rails,
  // moved to a quieter rail of their GPU, moved off this rail (unhealthy,
  // refused, stalled or failed).
  uint64_t striped_writes = 0;
  uint64_t spread_writes = 0;
  uint64_t failover_writes = 0;
  // Descriptors rejected, by ring::RingError code (index 0 unused);
  // kTransport counts writes the fabric failed.
  std::array<uint64_t, kRejectReasons> rejected{};
  uint64_t rejected_total() const {
    uint64_t n = 0;
    for (uint64_t r : rejected) n += r;
    return n;
  }
};

class Proxy {
 public:
  // The proxy owns `transport` (the rail's RailTransport, or a decorator).
  Proxy(std::unique_ptr<Transport> transport, const SignalSpace& signals, ProxyOptions options);
  ~Proxy();  // stops the thread
  // Stops the thread (idempotent). Proxies that relay to each other are all
  // stopped before any is destroyed: a running one may still answer another.
  void stop();

  Status start();
  // Every proxy of the node by rail index, this one included: where striped
  // pieces and writes moved off an unhealthy rail go. Set before start();
  // without it the proxy uses its own rail only.
  void set_node_rails(std::vector<Proxy*> rails) { node_rails_ = std::move(rails); }

  // Runs `task` on the proxy thread between passes and waits for it, at most
  // `timeout`. The task may use the rail's fids.
  Status execute(std::function<void()> task, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    return tasks_.execute(std::move(task), timeout);
  }
  // Queues `task` for the proxy thread and returns at once. The task must
  // own what it uses (it may run after the caller returned).
  void submit(std::function<void()> task) { tasks_.submit(std::move(task)); }

  // Starts serving a ring; `done` runs on the proxy thread once it does.
  void add_ring_async(std::shared_ptr<RingBinding> ring, std::function<void()> done);
  // Stops posting from the ring; once its in-flight writes have completed
  // (or after `timeout`: DEADLINE_EXCEEDED) the proxy forgets it and runs
  // `done` on its thread. `done` must not block.
  void remove_ring_async(std::shared_ptr<RingBinding> ring, std::chrono::milliseconds timeout,
                         std::function<void(Status)> done);
  // Runs `done` on the proxy thread once no write towards `rank` of the job
  // whose rings read `views` is waiting to be posted or in flight here (or
  // after `timeout`: DEADLINE_EXCEEDED naming how many are left). The caller
  // first marks the rank absent in the job's view, so nothing new is posted
  // towards it; writes complete only once delivered, so afterwards none of
  // this rail's writes can still reach the rank's registrations, which may
  // then close. `done` must not block.
  void quiesce_async(std::shared_ptr<const JobViewCell> views, uint32_t rank, std::chrono::milliseconds timeout,
                     std::function<void(Status)> done);
  // Blocking forms of the two (tests, teardown).
  Status add_ring(std::shared_ptr<RingBinding> ring);
  Status remove_ring(const std::shared_ptr<RingBinding>& ring, std::chrono::milliseconds timeout);

  Rail& rail() { return rail_; }
  const Rail& rail() const { return rail_; }
  const RailHealth& health() const { return health_; }
  // The rail's link went down or came up (the daemon watches sysfs):
  // handed to the proxy thread, which owns the rail's health.
  void set_link(bool up, std::string why);
  // Bytes of the writes posted on this rail and not completed, plus those
  // other proxies handed here and not posted yet: how busy the NIC is, for
  // spreading writes over rails (any thread; a moment's value).
  uint64_t load_bytes() const { return load_bytes_.load(std::memory_order_relaxed); }
  ProxyStats stats() const;
  // Each job's share of this rail now (jobs with a ring here), copied on the
  // proxy thread; waits at most `timeout` for it.
  Result<std::vector<JobShareStats>> job_stats(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // The same as the proxy thread last published it (every kJobStatsPeriod):
  // never waits for the proxy, so status and metrics calls may use it.
  std::vector<JobShareStats> published_job_stats() const;
  static constexpr std::chrono::milliseconds kJobStatsPeriod{100};
  size_t ring_count() const { return ring_count_.load(std::memory_order_relaxed); }
  // Whether a lone job is held to the per-job bounds (fixed at start).
  bool bounds_lone_job() const { return options_.bound_single_job; }

 private:
  struct OpContext {
    fi_context2 ctx;  // first member: libfabric hands back &ctx as op_context
    RingBinding* ring = nullptr;
    uint32_t descriptors = 0;
    uint64_t entry = 0;  // the ring's TrackedEntry this operation belongs to
    // Where the write goes, for quiesce: set while in flight. Only compared,
    // never dereferenced (the ring may be gone before its completion).
    const JobViewCell* views = nullptr;
    uint32_t dst_rank = 0;
    JobShare* share = nullptr;  // counts this write in flight
    uint64_t bytes = 0;
    // When it was posted (the pass's clock), for stall detection; zero:
    // the context is free.
    std::chrono::steady_clock::time_point posted_at{};
    // Posted for a ring of another proxy (or a piece of one of ours): its
    // answer goes back to the owner. Reset when the write is given up on
    // here (stalled), so a late completion only frees the context.
    std::shared_ptr<RelayedWrite> relayed;
    // What it posted (this operation's elements, its immediate), so a write
    // of our own ring that failed or stalled can be sent on another rail.
    PendingWrite piece;
    // Sent again on another rail (stalled here): its completion only
    // releases the tracking entry, which it holds open until then.
    bool reissued = false;
  };

  struct Draining {
    std::shared_ptr<RingBinding> ring;
    std::chrono::steady_clock::time_point deadline;
    std::chrono::milliseconds timeout;
    std::function<void(Status)> done;
  };

  struct Quiescing {
    std::shared_ptr<const JobViewCell> views;
    uint32_t rank;
    std::chrono::steady_clock::time_point deadline;
    std::chrono::milliseconds timeout;
    std::function<void(Status)> done;
  };

  void run();
  // Every kHealthTick: finds the oldest write in flight and tells health_.
  void check_health(std::chrono::steady_clock::time_point now);
  void publish_job_stats();
  void attach(std::shared_ptr<RingBinding> ring);
  // Forgets closing rings whose writes completed (or timed out).
  bool finish_drains();
  // Answers quiesces whose rank has no write left here (or timed out).
  bool finish_quiesces();
  // Writes towards (views, rank) assembled or in flight on this rail.
  size_t writes_towards(const JobViewCell* views, uint32_t rank) const;
  // A posted write's context is free again.
  void release_context(OpContext* c);
  void detach(RingBinding& ring);
  // One pass over the jobs (job_share.h); true when a descriptor was taken.
  bool serve_jobs();
  // A job's turn: its rings in turn while it has credit and work.
  bool serve_job(JobShare& job);
  // Takes descriptors from `ring` while `job` has credit, up to the batch.
  bool serve(RingBinding& ring, JobShare& job);
  // Sets the job's quantum and in-flight bound from its weight now.
  void reweigh(JobShare& job);
  // The write of `c` completed (or failed): no longer in flight for its job.
  static void uncount(OpContext& c);
  // Reaps completions: batches of kCqBatch while the CQ keeps returning
  // full ones, at most kCqBatchesPerPass (completions.cc); true if any.
  bool poll_cq();
  // One fi_cq_read batch (or one error entry): how many entries it handled.
  size_t reap();
  // The operation of `c` completed (or failed) for its ring (c.ring set).
  void complete(OpContext& c);
  // Posts all of ring.pending (every element of a strided write); false
  // when the provider said EAGAIN or the job's bound holds it back (the
  // rest stays pending). A transport failure rejects it and counts as done.
  bool post(RingBinding& ring, bool more);
  enum class Posted { kPosted, kRetry, kFailed };
  // Posts the next fabric operation of `w` (up to elements_per_op elements).
  // kRetry without asking the provider once tx_full_ is set in this pass.
  // A write on an unhealthy rail goes to a usable one instead, and one of
  // at least stripe_min_bytes is split across the usable rails (relay.cc).
  Posted post_op(RingBinding& ring, PendingWrite& w, bool more);
  // fi_writemsg of elements [w.next, w.next + k) of `w` with context `c`;
  // the immediate rides along when `last`. Returns the provider's answer
  // (-FI_EAGAIN also sets tx_full_).
  ssize_t post_fabric(const PendingWrite& w, uint32_t k, bool last, bool more, OpContext* c);

  // Relaying (relay.cc). Owner side: hands `w` to the proxy of w->rail.
  void relay(std::shared_ptr<RelayedWrite> w);
  // Splits `w` (one plain write, nothing of it posted) into one piece per
  // usable rail; false when fewer than two rails can take a piece.
  bool stripe(RingBinding& ring, PendingWrite& w);
  // Moves the next operation of `w` (k elements) to usable rail `rail`.
  bool move(RingBinding& ring, PendingWrite& w, uint32_t k, uint32_t rail);
  // The answer of a write this proxy relayed: completes it for its ring, or
  // sends it to another rail, or reports it failed.
  void relay_answered(const std::shared_ptr<RelayedWrite>& w);
  // A relayed write is done for its ring (the ring's own state).
  void finish_relayed(RingBinding& ring, RelayedWrite& w);
  // A usable rail other than `except` (round robin), one of the ring's
  // GPU's rails first (RingBinding::rails); -1: none.
  int usable_rail(const RingBinding& ring, uint32_t except);
  // For a write sent again: a usable rail other than `except`, else any
  // other rail, else `except` itself.
  uint32_t retry_rail(const RingBinding& ring, uint32_t except);
  // A usable rail of the ring's GPU, not this one, with less than half of
  // `own` bytes in flight (the least loaded such); -1: none.
  int quieter_rail(const RingBinding& ring, uint64_t own);
  void count_relay(RelayedWrite& w);
  void uncount_relay(RelayedWrite& w);
  // Target side: posts the writes other proxies handed here; true if any.
  bool post_relayed();
  // Sends the write of context `c` (our own ring's, without a signal) again
  // on another rail; `c` keeps its ring's tracking entry open until its own
  // completion (so no flush passes a write that may still land) but hands
  // its descriptors to the copy. False when no rail can take it.
  bool reissue(OpContext& c, const std::string& why);
  // Hands a relayed write back to its owner with its outcome.
  void answer(std::shared_ptr<RelayedWrite> w);
  // Gives up on relayed writes without a signal that stalled here, so their
  // owners send them on another rail.
  void abandon_stalled(std::chrono::steady_clock::time_point now);
  // Elements of `length` bytes one fabric operation may carry.
  uint32_t elements_per_op(uint64_t length) const;
  // Posts the held signals whose scope has completed; true if any went.
  bool post_held(RingBinding& ring);
  bool held_ready(RingBinding& ring, const HeldSignal& h);
  // Publishes the ring's completion watermark if it moved.
  void publish_watermark(RingBinding& ring);
  // Puts a ring on its job's active list (doorbell taken, completion for a
  // held signal, or newly attached).
  void activate(RingBinding& ring);
  // Takes the job's doorbells; activates the rings that rang. Returns how
  // many rang.
  uint64_t take_doorbells(JobShare& job);
  // The fallback behind the early-doorbell grace (ring.h, kCapEarlyDoorbell):
  // a device ring let go while its producer's seq store was still held in
  // the GPU (a warp preempted between its doorbell and its fence) has a
  // published slot at its position and no doorbell to come. Every
  // early_doorbell_sweep_us the idle device rings are looked at (one cache
  // line each) and such a ring is activated. True if any was.
  bool sweep_early_doorbell_rings();
  void reject(RingBinding& ring, const ring::RingSlot& d, ring::RingError code, const std::string& why);
  // Checks a write descriptor against the job view and turns it into a
  // PendingWrite; false (and rejected) when it is bad.
  bool resolve(RingBinding& ring, const JobView& view, const ring::RingSlot& d, PendingWrite* out);
  // Takes a kSignal (or a strided write's signal) into the ring's held
  // signals; false (and rejected) when it is bad.
  bool hold_signal(RingBinding& ring, const JobView& view, const ring::RingSlot& d, bool scoped);

  const std::unique_ptr<Transport> transport_;
  Rail& rail_;
  const SignalSpace& signals_;
  const ProxyOptions options_;
  const bool virt_addr_;
  const uint64_t write_limit_;     // longest write, single or coalesced
  const int64_t op_cost_;          // the least a descriptor is charged
  const uint32_t iov_limit_;       // elements per fabric write (provider's iov and rma_iov limits)
  uint64_t inflight_ops_cap_ = 1;  // half the transmit contexts (set by start())
  // Writes complete only once their data is placed at the destination, so a
  // fence (flush, signal-only) and a quiesce order after placement, not
  // after the send. Cleared if the provider refuses the flag.
  uint64_t flags_extra_ = FI_DELIVERY_COMPLETE;
  // The provider refused a write in this pass (-FI_EAGAIN, or no operation
  // context was free): the rail's transmit queue is full for every ring
  // alike, so nothing more is offered to it until the pass has reaped
  // completions (poll_cq) and the next pass begins. Without it every active
  // ring retried its write in every pass, and with many channel rings the
  // proxy spent its passes on refused writes (ring ABI v2's regression of
  // the descriptor rate and of strided writes).
  bool tx_full_ = false;
  RailHealth health_;
  // The last write posted on this rail carried FI_MORE: the provider may
  // hold it until a post without the flag. A write then goes out here, not
  // striped or moved to another rail, so that nothing stays held back.
  bool more_open_ = false;
  // The current pass's start: the posting time of its writes (one clock
  // read per pass, not per write).
  std::chrono::steady_clock::time_point pass_now_{};
  std::chrono::steady_clock::time_point next_health_check_{};
  std::chrono::steady_clock::time_point next_early_sweep_{};
  const uint64_t stripe_min_bytes_;
  const uint64_t stripe_min_piece_;
  const uint64_t spread_bytes_;
  std::atomic<uint64_t> load_bytes_{0};  // load_bytes()
  std::vector<Proxy*> node_rails_;       // set before start(), read-only after
  size_t next_rail_ = 0;                 // round robin of usable_rail()
  // Target side: written handed here, in order, not posted yet.
  std::deque<std::shared_ptr<RelayedWrite>> relayed_;
  // Owner side: writes relayed and not answered yet (detach uncounts them).
  std::vector<RelayedWrite*> outstanding_;

  std::thread thread_;
  std::atomic<bool> stop_{false};
  TaskQueue tasks_;

  // Proxy thread only.
  std::vector<std::shared_ptr<RingBinding>> rings_;
  std::vector<Draining> draining_;
  std::vector<Quiescing> quiescing_;
  std::vector<std::unique_ptr<JobShare>> jobs_;
  size_t next_job_ = 0;  // the job that goes first in the next pass
  std::vector<OpContext> contexts_;
  std::vector<OpContext*> free_contexts_;
  // Source of signal-only writes: one registered word.
  alignas(64) uint64_t scratch_ = 0;
  MrPtr scratch_mr_;
  void* scratch_desc_ = nullptr;

  std::atomic<size_t> ring_count_{0};
  std::atomic<uint64_t> stat_descriptors_{0}, stat_ops_{0}, stat_signals_{0}, stat_bad_imm_{0}, stat_busy_ns_{0},
      stat_progress_ns_{0}, stat_visits_{0}, stat_doorbells_{0}, stat_eagain_{0}, stat_bytes_{0}, stat_striped_{0},
      stat_spread_{0}, stat_failover_{0}, stat_swept_{0};
  std::array<std::atomic<uint64_t>, kRejectReasons> stat_rejected_{};
  // Copied from jobs_ by the proxy thread (publish_job_stats).
  mutable std::mutex published_mu_;
  std::vector<JobShareStats> published_jobs_;
};

}  // namespace epx::daemon
