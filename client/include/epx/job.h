// epx::Job: a rank held in a job (Client::join returns it), and the data
// plane it opens: windows, signals, rings, device windows, the same-node
// handle exchange and barriers. Every call blocks for at most its timeout
// and returns a Status.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "epx/rank_table.h"
#include "epx/ring.h"
#include "epx/signals.h"
#include "epx/status.h"
#include "epx/window.h"

namespace epx {

class ClientSession;  // internal
class MappedRegion;   // internal

// A same-node rank's GPU buffer handle, as relayed by the daemon.
struct PeerBuffer {
  uint32_t rank = 0;
  uint32_t local_rank = 0;
  uint32_t pid = 0;
  std::string handle;  // opaque to the SDK and daemon (CudaPeers posts a CUDA IPC handle and its owner)
  uint64_t bytes = 0;
};

// GPU memory offered as a device window: an allocation of this process
// exported as a dma-buf (epx/cuda.h's GpuWindow builds these).
struct DeviceMemory {
  uint64_t bytes = 0;       // length of the dma-buf, from its byte 0
  uint64_t device_va = 0;   // this process's CUDA address of byte 0
  int cuda_device = 0;      // CUDA device ordinal
  std::string pci_bus_id;   // of that GPU, for the daemon's logs
};

// A rank held in a job. Leaves the job when destroyed (or on leave()).
class Job {
 public:
  Job(Job&&) noexcept;
  Job& operator=(Job&&) noexcept;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;
  ~Job();

  const RankTable& table() const { return table_; }
  uint32_t rank() const { return rank_; }
  uint32_t world_size() const { return table_.world_size; }
  const std::string& job_id() const { return table_.job_id; }
  // Non-empty when the local daemon's rails fell back from efa/verbs to
  // another provider (its config says provider auto and it found no EFA or
  // verbs device): why, as the daemon logs it. Data still moves, through
  // the CPU and sockets, far slower than over EFA.
  const std::string& provider_fallback() const { return provider_fallback_; }

  // Ranks of this job the daemon reported lost (kRankLost), ascending.
  std::vector<uint32_t> lost_ranks() const;

  // Releases the rank; peers get a kRankLost event. Idempotent.
  Status leave();

  // Data plane. Windows and signals are published to every other rank's
  // daemon before these return; call barrier() after creating them so no
  // rank writes to a window its owner has not created yet.
  Result<Window> create_window(uint64_t bytes);
  Result<Signals> open_signals(uint32_t count);
  // capacity: slots, a power of two.
  Result<std::unique_ptr<Ring>> open_ring(uint32_t capacity);
  // Device windows (epx_cuda's GpuWindow is the usual way to make one).
  // send_fd hands a copy of `fd` (a dma-buf of this process's GPU memory)
  // to the daemon over the fd socket and returns the token that names it;
  // the daemon closes it unless create_device_window claims it within 10 s.
  Result<uint64_t> send_fd(int fd);
  // Registers `memory` (sent as `fd_token`) on every rail of the daemon as
  // this rank's next window: same id sequence as create_window, published
  // to the job's other daemons before this returns. The token is used up
  // whatever the outcome. FAILED_PRECONDITION when a rail cannot register
  // GPU memory, naming each such rail and why (a host window still works);
  // INVALID_ARGUMENT for a missing token, bad size or address, or a
  // descriptor that is not a dma-buf; NOT_FOUND for an unknown token;
  // RESOURCE_EXHAUSTED past max_client_mib.
  Result<uint32_t> create_device_window(uint64_t fd_token, const DeviceMemory& memory);
  // For epx_cuda: a ring group (proto/ring/ring.h) of `channels` rings, as
  // its first ring's id and the mapped group region, checked: ABI version 2
  // and the capabilities its producers rely on (FAILED_PRECONDITION from an
  // older daemon naming what it lacks; INTERNAL if the region it sent fails
  // the checks).
  Result<std::pair<uint32_t, std::shared_ptr<MappedRegion>>> open_ring_region(uint32_t capacity,
                                                                              bool device_producers,
                                                                              uint32_t channels = 1);
  // Same-node rendezvous: posts this rank's buffer handle and returns those
  // of every rank of the job on this node (this one included), once all of
  // them posted. DEADLINE_EXCEEDED names the local ranks that did not.
  Result<std::vector<PeerBuffer>> exchange_ipc(const std::string& handle, uint64_t bytes,
                                               std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Waits until every present rank of the job called barrier(). Errors name
  // the ranks that did not arrive (DEADLINE_EXCEEDED) or left (UNAVAILABLE).
  Status barrier(std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  friend class Client;
  Job(std::shared_ptr<ClientSession> session, RankTable table, uint32_t rank, std::string provider_fallback);

  std::shared_ptr<ClientSession> session_;
  RankTable table_;
  uint32_t rank_ = 0;
  bool joined_ = false;
  std::string provider_fallback_;
};

}  // namespace epx
