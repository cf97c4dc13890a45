// ClientTable: the clients attached to this daemon (one per Hello stream) and
// the job ranks each one holds. Thread-safe; gRPC handlers call it from any
// thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/jobs/event_sink.h"
#include "epx/status.h"
#include "epx/v1/local.pb.h"
#include "epx/v1/rank_table.pb.h"
#include "epx/v1/status.pb.h"

namespace epx::daemon {

// Who is on the other end of a local connection (SO_PEERCRED).
struct Credentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

struct Membership {
  uint64_t client_id = 0;
  std::string job_id;
  uint32_t rank = 0;
  uint32_t local_rank = 0;
  std::string gpu;  // the GPU's PCI address, normalised (empty: not sent)
  uint32_t world_size = 0;
  std::string coordinator;
  bool formed = false;  // false while waiting at the bootstrap barrier
  v1::RankTable table;
  std::vector<uint32_t> lost_ranks;
};

class ClientTable {
 public:
  ClientTable(uint32_t max_clients, uint32_t max_jobs_per_client)
      : max_clients_(max_clients), max_jobs_per_client_(max_jobs_per_client) {}

  // Attaches a client whose events go to `sink` (not owned; valid until
  // detach()). `connection` names the local connection it came on.
  Result<uint64_t> attach(const std::string& name, const std::string& connection, const Credentials& creds,
                          EventSink* sink);

  // Removes the client and returns the ranks it still held, so the caller
  // can release them at their coordinators.
  std::vector<Membership> detach(uint64_t client_id);

  // Checks that `client_id` is attached and was attached on `connection`:
  // a process cannot act for another process's client. Every check of a
  // client id here answers PERMISSION_DENIED, with the same text whether
  // the id is unknown or another caller's.
  Result<Credentials> check_caller(uint64_t client_id, const std::string& connection) const;
  // Checks that `client_id` is attached and belongs to process `pid` (for
  // the fd socket, which knows the sender's pid, not its gRPC connection).
  Status check_process(uint64_t client_id, pid_t pid) const;

  // Records a rank the client is joining (not yet formed).
  Status begin_join(uint64_t client_id, const std::string& connection, const Membership& membership);
  // The barrier answered. Returns false when the client or the pending rank
  // is gone meanwhile: the caller must then release the rank.
  bool complete_join(uint64_t client_id, const std::string& job_id, const v1::RankTable& table);
  // The client's formed rank in `job_id`.
  Result<Membership> membership(uint64_t client_id, const std::string& connection, const std::string& job_id) const;
  void abort_join(uint64_t client_id, const std::string& job_id);

  Result<Membership> leave(uint64_t client_id, const std::string& connection, const std::string& job_id);

  // Sends `event` to every client holding a rank of `job_id` other than
  // `skip_rank`; records lost ranks for status.
  void deliver(const std::string& job_id, int64_t skip_rank, const v1::ClientEvent& event);

  // Daemon shutdown: tells every client, closes their streams, and returns
  // all memberships.
  std::vector<Membership> close_all(const std::string& reason);

  // One rank table per job with a formed local rank.
  std::vector<v1::RankTable> formed_tables() const;

  std::vector<v1::ClientStatus> client_status() const;
  std::vector<v1::JobStatus> job_status() const;
  size_t size() const;

 private:
  struct Client {
    std::string name;
    std::string connection;
    Credentials creds;
    EventSink* sink = nullptr;
    std::map<std::string, Membership> jobs;
  };

  const uint32_t max_clients_;
  const uint32_t max_jobs_per_client_;
  mutable std::mutex mu_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Client> clients_;
};

}  // namespace epx::daemon
