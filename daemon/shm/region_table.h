// RegionTable: the shared regions waiting to be (or already) handed to their
// clients, by unguessable token. Only the creating process may fetch one.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <random>

#include "daemon/shm/shared_region.h"
#include "epx/status.h"

namespace epx::daemon {

class RegionTable {
 public:
  uint64_t add(std::shared_ptr<SharedRegion> region, pid_t owner);
  void remove(uint64_t token);
  // The region for `token` if `pid` owns it.
  Result<std::shared_ptr<SharedRegion>> fetch(uint64_t token, pid_t pid) const;

 private:
  struct Entry {
    std::shared_ptr<SharedRegion> region;
    pid_t owner;
  };
  mutable std::mutex mu_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::map<uint64_t, Entry> regions_;
};

}  // namespace epx::daemon
