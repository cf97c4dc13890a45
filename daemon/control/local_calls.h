// LocalCalls: the Local service's calls that are waiting on others (joins,
// barriers, same-node exchanges). When the daemon shuts down it answers all
// of them at once, UNAVAILABLE naming this daemon, before its servers stop:
// a client learns why at once, and no server Shutdown waits for a barrier
// whose other ranks may never come.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace epx::daemon {

class CallAnswer;

class LocalCalls {
 public:
  // Tracks a waiting call; returns the ticket to forget() it by. After
  // close_all() the call is answered with the closing status at once.
  uint64_t track(const std::shared_ptr<CallAnswer>& answer);
  // The call ended.
  void forget(uint64_t ticket);
  // Daemon shutdown: answers every tracked call, and every later one, with
  // `status`. Returns how many were waiting.
  size_t close_all(const grpc::Status& status);

 private:
  std::mutex mu_;
  uint64_t next_ticket_ = 1;
  std::map<uint64_t, std::shared_ptr<CallAnswer>> waiting_;
  std::optional<grpc::Status> closed_;
};

}  // namespace epx::daemon
