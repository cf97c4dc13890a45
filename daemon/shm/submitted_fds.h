// SubmittedFds: descriptors clients handed to the daemon on the fd socket
// (dma-bufs of their GPU memory, for device windows), waiting for the Local
// call that uses them. Each is named by an unguessable token and can be
// claimed only by the process and client that submitted it. Unclaimed ones
// are closed after a time limit or when the client's session ends, so no
// client can pile descriptors up in the daemon. Thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <mutex>
#include <random>

#include "epx/status.h"
#include "proto/fd/unique_fd.h"

namespace epx::daemon {

class SubmittedFds {
 public:
  using Clock = std::chrono::steady_clock;
  // At most this many unclaimed descriptors per client, and in all.
  static constexpr size_t kMaxPerClient = 16;
  static constexpr size_t kMaxTotal = 1024;

  explicit SubmittedFds(std::chrono::milliseconds ttl) : ttl_(ttl) {}

  // Keeps `fd` for `client_id` of process `owner`; returns its token.
  // RESOURCE_EXHAUSTED (fd closed) when the client has too many unclaimed.
  Result<uint64_t> add(UniqueFd fd, pid_t owner, uint64_t client_id, Clock::time_point now = Clock::now());
  // Hands the descriptor over and forgets it. NOT_FOUND when no descriptor
  // has this token (never submitted, already claimed, or expired);
  // PERMISSION_DENIED when another process or client submitted it.
  Result<UniqueFd> take(uint64_t token, pid_t pid, uint64_t client_id);
  // Closes the client's unclaimed descriptors (its session ended).
  void drop_client(uint64_t client_id);
  // Closes those older than the time limit.
  void expire(Clock::time_point now);
  size_t size() const;

 private:
  struct Entry {
    UniqueFd fd;
    pid_t owner;
    uint64_t client_id;
    Clock::time_point deadline;
  };
  const std::chrono::milliseconds ttl_;
  mutable std::mutex mu_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::map<uint64_t, Entry> fds_;
};

// True when `fd` is a dma-buf: its /proc link reads exactly
// "anon_inode:dmabuf" or starts with "/dmabuf:". readlink does not enter the
// fd's filesystem, so this is safe on any descriptor a client sends.
bool is_dmabuf(int fd);

}  // namespace epx::daemon
