// epx::Client: a process's connection to its node's epxd.
//
//   auto client = epx::Client::connect("/run/epx/epxd.sock");
//   if (!client.ok()) { log(client.status().to_string()); return; }
//   epx::JoinOptions opts;  // job_id, world_size, rank, local_rank, coordinator
//   opts.job_id = "moe-7"; opts.world_size = 16; opts.rank = r; opts.coordinator = "node0:7470";
//   auto job = (*client)->join(opts);
//   if (!job.ok()) ...                     // typed status, never a hang
//   const epx::RankTable& table = job->table();
//
// Every call blocks for at most its timeout and returns a Status; nothing
// throws or aborts. A Client is thread-safe. Events (a rank of one of the
// jobs was lost, the daemon is stopping) arrive on the session and are read
// with next_event().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "epx/event.h"
#include "epx/job.h"
#include "epx/status.h"

namespace epx {

class ClientSession;  // internal

struct ClientOptions {
  std::string name;  // shown by `epxctl status`; default "pid <n>"
  // Deadline of each control call (connect, leave, status).
  std::chrono::milliseconds rpc_timeout{5000};
};

struct JoinOptions {
  std::string job_id;  // same on every rank of the job
  uint32_t world_size = 0;
  uint32_t rank = 0;        // 0 .. world_size-1, unique in the job
  uint32_t local_rank = 0;  // index of this rank on its node (GPU index)
  std::string coordinator;  // Peer address of the coordinating daemon; empty: the local one
  // PCI address of the GPU this rank drives ("0000:19:00.0": what
  // epx::cuda::gpu_pci_address(device) or nvidia-smi print). The daemon
  // serves the rank's rings from the NICs nearest to it (epxctl status,
  // "GPU -> rails"). Empty: every NIC of the node serves it.
  std::string gpu_pci_address;
  // How long to wait at the bootstrap barrier for the other ranks.
  std::chrono::milliseconds timeout{60000};
};

// Summary of the local daemon (epxctl status shows the full picture).
struct DaemonInfo {
  std::string node;
  std::string version;
  std::string peer_address;
  std::string provider;
  uint32_t rails = 0;
  uint32_t clients = 0;
  uint32_t jobs = 0;
};

class Client {
 public:
  // Opens a session with the daemon at `socket_path`. UNAVAILABLE when no
  // daemon answers there, DEADLINE_EXCEEDED when it does not answer in time.
  static Result<std::unique_ptr<Client>> connect(const std::string& socket_path, ClientOptions options = {});
  ~Client();

  // Joins a job and blocks at its bootstrap barrier (at most options.timeout).
  // Errors: INVALID_ARGUMENT (rank or world), ALREADY_EXISTS (rank taken),
  // FAILED_PRECONDITION (world size differs), DEADLINE_EXCEEDED (naming the
  // missing ranks), UNAVAILABLE (coordinator or daemon unreachable).
  Result<Job> join(const JoinOptions& options);

  Result<DaemonInfo> status();

  // The next event, waiting at most `timeout`; nullopt when none came.
  std::optional<Event> next_event(std::chrono::milliseconds timeout);

  // OK while the session is up; afterwards why it ended (daemon shutdown,
  // daemon gone).
  Status session_status() const;

  uint64_t client_id() const;

 private:
  explicit Client(std::shared_ptr<ClientSession> session);
  std::shared_ptr<ClientSession> session_;
};

}  // namespace epx
