#include "daemon/shm/submitted_fds.h"

#include <unistd.h>

#include <vector>

namespace epx::daemon {

Result<uint64_t> SubmittedFds::add(UniqueFd fd, pid_t owner, uint64_t client_id, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t mine = 0;
  for (const auto& [token, e] : fds_) mine += e.client_id == client_id ? 1 : 0;
  if (mine >= kMaxPerClient || fds_.size() >= kMaxTotal) {
    return resource_exhausted("client " + std::to_string(client_id) + " has " + std::to_string(mine) +
                              " submitted descriptors not yet claimed by CreateDeviceWindow (at most " +
                              std::to_string(kMaxPerClient) + ")");
  }
  uint64_t token = 0;
  do {
    token = rng_();
  } while (token == 0 || fds_.count(token));
  fds_.emplace(token, Entry{std::move(fd), owner, client_id, now + ttl_});
  return token;
}

Result<UniqueFd> SubmittedFds::take(uint64_t token, pid_t pid, uint64_t client_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = fds_.find(token);
  if (it == fds_.end()) {
    return not_found("no submitted descriptor for fd token " + std::to_string(token) +
                     " (never sent on the fd socket, already used, or older than " +
                     std::to_string(ttl_.count()) + " ms)");
  }
  if (it->second.owner != pid || it->second.client_id != client_id) {
    return permission_denied("fd token " + std::to_string(token) + " belongs to client " +
                             std::to_string(it->second.client_id) + " of pid " + std::to_string(it->second.owner));
  }
  UniqueFd fd = std::move(it->second.fd);
  fds_.erase(it);
  return fd;
}

void SubmittedFds::drop_client(uint64_t client_id) {
  std::vector<UniqueFd> closing;  // declared first: closed after the lock is released
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = fds_.begin(); it != fds_.end();) {
    if (it->second.client_id == client_id) {
      closing.push_back(std::move(it->second.fd));
      it = fds_.erase(it);
    } else {
      ++it;
    }
  }
}

void SubmittedFds::expire(Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = fds_.begin(); it != fds_.end();) {
    it = it->second.deadline <= now ? fds_.erase(it) : std::next(it);
  }
}

size_t SubmittedFds::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fds_.size();
}

bool is_dmabuf(int fd) {
  char link[256] = {};
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(path.c_str(), link, sizeof(link) - 1);
  if (n <= 0) return false;
  const std::string target(link, static_cast<size_t>(n));
  return target == "anon_inode:dmabuf" || target.rfind("/dmabuf:", 0) == 0;
}

}  // namespace epx::daemon
