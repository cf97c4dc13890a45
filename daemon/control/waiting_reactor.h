// WaitingReactor: the server side of a unary call that waits on others (a
// barrier, a bootstrap, a same-node exchange). Whoever comes first answers
// it, exactly once: the result, the call being cancelled (the client went
// away, or the server's shutdown deadline passed), or the daemon shutting
// down (LocalCalls). Every such call therefore finishes, which a gRPC
// server's Shutdown waits for.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <mutex>

namespace epx::daemon {

class LocalCalls;

// The one answer of a waiting call, shared by everything that may give it.
// Safe to keep after the call ended: answering then does nothing.
class CallAnswer {
 public:
  explicit CallAnswer(grpc::ServerUnaryReactor* reactor) : reactor_(reactor) {}
  // Finishes the call with `status` unless it was answered already; `fill`
  // writes the reply message first (only then: a call answered before may
  // have freed it). Returns whether this answered the call.
  bool finish(const grpc::Status& status, const std::function<void()>& fill = {});

 private:
  std::mutex mu_;
  grpc::ServerUnaryReactor* reactor_;  // null once answered; the call lives until then
};

class WaitingReactor final : public grpc::ServerUnaryReactor {
 public:
  // `calls`: tracked there (answered at daemon shutdown) when not null.
  // `on_cancel`: what a cancellation does; empty: answer CANCELLED at once.
  // A call whose result needs clean-up before its answer (JoinJob gives the
  // rank back first) passes its own and answers when that is done.
  explicit WaitingReactor(LocalCalls* calls, std::function<void()> on_cancel = {});

  const std::shared_ptr<CallAnswer>& answer() const { return answer_; }

  void OnCancel() override;
  void OnDone() override;

 private:
  const std::shared_ptr<CallAnswer> answer_;
  LocalCalls* const calls_;
  const std::function<void()> on_cancel_;
  uint64_t ticket_ = 0;  // in calls_
};

}  // namespace epx::daemon
