#include "daemon/control/waiting_reactor.h"

#include "daemon/control/local_calls.h"

namespace epx::daemon {

bool CallAnswer::finish(const grpc::Status& status, const std::function<void()>& fill) {
  grpc::ServerUnaryReactor* reactor = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (reactor_ == nullptr) return false;
    if (fill) fill();
    reactor = reactor_;
    reactor_ = nullptr;
  }
  // Outside the lock: Finish may run OnDone at once, which frees the call.
  reactor->Finish(status);
  return true;
}

WaitingReactor::WaitingReactor(LocalCalls* calls, std::function<void()> on_cancel)
    : answer_(std::make_shared<CallAnswer>(this)), calls_(calls), on_cancel_(std::move(on_cancel)) {
  // After answer_ exists: a daemon already shutting down answers it here.
  if (calls_ != nullptr) ticket_ = calls_->track(answer_);
}

void WaitingReactor::OnCancel() {
  if (on_cancel_) {
    on_cancel_();
    return;
  }
  answer_->finish(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled (the caller went away or the server is stopping)"));
}

void WaitingReactor::OnDone() {
  if (calls_ != nullptr) calls_->forget(ticket_);
  delete this;
}

}  // namespace epx::daemon
