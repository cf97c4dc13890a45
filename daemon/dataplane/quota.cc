#include "daemon/dataplane/quota.h"

#include <algorithm>
#include <string>

namespace epx::daemon {

Status Quota::reserve(uint64_t client_id, uint64_t bytes) {
  // Read before taking mu_: `held` takes the planes' and rings' locks. A
  // region being recorded concurrently (another call of the same client) may
  // be counted twice for that instant, never zero times, since a
  // reservation is given back only after its region was recorded (and
  // before the call is answered, so a client's own next call never is).
  const uint64_t held = held_(client_id);
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t pending = reserved_.count(client_id) ? reserved_[client_id] : 0;
  if (held + pending + bytes > max_bytes_) {
    return resource_exhausted("client holds " + std::to_string(held + pending) + " bytes of windows and rings; " +
                              std::to_string(bytes) + " more exceed max_client_mib (" +
                              std::to_string(max_bytes_ >> 20) + " MiB)");
  }
  reserved_[client_id] += bytes;
  return Status();
}

void Quota::unreserve(uint64_t client_id, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = reserved_.find(client_id);
  if (it == reserved_.end()) return;
  it->second -= std::min(it->second, bytes);
  if (it->second == 0) reserved_.erase(it);
}

}  // namespace epx::daemon
