// The credentials (SO_PEERCRED) of each accepted local connection, keyed by
// the peer name gRPC gives calls on it ("fd:<n>"). A file descriptor number
// is reused only after its connection closed, so the latest entry is right.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/jobs/client_table.h"

namespace epx::daemon {

class LocalConnections {
 public:
  void record(const std::string& peer, const Credentials& creds) {
    std::lock_guard<std::mutex> lock(mu_);
    creds_[peer] = creds;
  }
  std::optional<Credentials> lookup(const std::string& peer) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = creds_.find(peer);
    if (it == creds_.end()) return std::nullopt;
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, Credentials> creds_;
};

}  // namespace epx::daemon
