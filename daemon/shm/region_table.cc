#include "daemon/shm/region_table.h"

namespace epx::daemon {

uint64_t RegionTable::add(std::shared_ptr<SharedRegion> region, pid_t owner) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t token = 0;
  do {
    token = rng_();
  } while (token == 0 || regions_.count(token));
  regions_[token] = Entry{std::move(region), owner};
  return token;
}

void RegionTable::remove(uint64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  regions_.erase(token);
}

Result<std::shared_ptr<SharedRegion>> RegionTable::fetch(uint64_t token, pid_t pid) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = regions_.find(token);
  if (it == regions_.end()) return not_found("no shared region for this token (released, or never created)");
  if (it->second.owner != pid) {
    return permission_denied("shared region belongs to pid " + std::to_string(it->second.owner) + ", not " +
                             std::to_string(pid));
  }
  return it->second.region;
}

}  // namespace epx::daemon
