// Coordinator: the bootstrap barrier and membership of the jobs this daemon
// coordinates. Any daemon can coordinate; a job's coordinator is the daemon
// whose Peer address its clients named in JoinJob.
//
// Pure logic, no gRPC: callers pass a Reply callback per registering rank and
// send out the JobEvents the calls return. Callbacks and events are produced
// under the lock but run/sent by the caller after it is released.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "epx/status.h"
#include "epx/v1/peer.pb.h"
#include "epx/v1/rank_table.pb.h"
#include "epx/v1/status.pb.h"

namespace epx::daemon {

class Coordinator {
 public:
  using Clock = std::chrono::steady_clock;
  using Reply = std::function<void(Result<v1::RankTable>)>;

  // An event for the daemon at `daemon_address` (a member of the job).
  struct Notice {
    std::string daemon_address;
    v1::JobEvent event;
  };

  // Ranks are 16 bits in the ring ABI's descriptors.
  static constexpr uint32_t kMaxWorld = 65536;

  explicit Coordinator(std::string self_address) : self_address_(std::move(self_address)) {}

  // Registers `entry` as a rank of `job_id`. `reply` runs exactly once: with
  // an error at once (bad rank, taken rank, world mismatch, job already
  // formed), with the rank table when the last rank registers, or with
  // DEADLINE_EXCEEDED naming the missing ranks when expire() passes
  // `deadline` first.
  // Returns a ticket naming this registration (0 when it was answered at
  // once with an error).
  uint64_t register_rank(const std::string& job_id, uint32_t world_size, const v1::RankEntry& entry,
                         Clock::time_point deadline, Reply reply);

  // The registering RPC went away (member daemon cancelled): if registration
  // `ticket` still waits at the barrier, it is answered CANCELLED and the
  // rank's slot is free again.
  void cancel_registration(const std::string& job_id, uint32_t rank, uint64_t ticket);

  // Whether the daemon making a call may act for a rank that registered
  // from `daemon_address` (its RankEntry's); a non-OK status refuses the
  // call with that status before anything changes. The Peer service
  // compares the address with the authenticated caller; runs under the
  // coordinator's lock, so it must be quick and must not call back.
  using OwnerCheck = std::function<Status(const std::string& daemon_address)>;

  // A rank left or its client died. Returns the RankLeft events for the
  // other members' daemons. A job whose ranks all left is removed.
  Result<std::vector<Notice>> leave(const std::string& job_id, uint32_t rank, const std::string& reason,
                                    const OwnerCheck& owner);

  // Rank `rank` arrived at the job's barrier; `reply` runs once every
  // present rank arrived (OK), when a rank leaves meanwhile (UNAVAILABLE
  // naming it), or at `deadline` (DEADLINE_EXCEEDED naming the ranks that did
  // not arrive); at once with `owner`'s refusal.
  void barrier(const std::string& job_id, uint32_t rank, Clock::time_point deadline, std::function<void(Status)> reply,
               const OwnerCheck& owner);

  // Fails registrations and barriers whose deadline is at or before `now`.
  void expire(Clock::time_point now);

  // Daemon shutdown: fails waiting registrations and returns CoordinatorGone
  // events for every member daemon of formed jobs.
  std::vector<Notice> shutdown(const std::string& reason);

  std::vector<v1::JobStatus> status() const;
  size_t job_count() const;

 private:
  struct Member {
    v1::RankEntry entry;
    bool present = true;
    Reply reply;  // set while waiting at the barrier
    Clock::time_point deadline;
    uint64_t ticket = 0;
  };
  struct Arrival {
    std::function<void(Status)> reply;
    Clock::time_point deadline;
  };
  struct Job {
    uint32_t world_size = 0;
    bool formed = false;
    uint64_t formation = 0;  // RankTable.formation, set when formed
    std::map<uint32_t, Member> members;
    std::map<uint32_t, Arrival> barrier;  // ranks waiting at the current barrier
  };
  using Answers = std::vector<std::pair<std::function<void(Status)>, Status>>;
  // Completes the barrier if every present rank arrived.
  static void check_barrier(Job& job, Answers& answers);
  using Pending = std::vector<std::pair<Reply, Result<v1::RankTable>>>;

  static std::string missing_ranks(const Job& job);
  // Called under mu_ (the generator is not thread-safe).
  static uint64_t new_formation();
  v1::RankTable table_of(const std::string& job_id, const Job& job) const;
  static void run(Pending& pending);

  const std::string self_address_;
  mutable std::mutex mu_;
  std::map<std::string, Job> jobs_;
  uint64_t next_ticket_ = 1;
};

}  // namespace epx::daemon
