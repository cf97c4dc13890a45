// SessionStream: the server side of Local.Hello. It is the client's session:
// events are written to it in order, and when it ends (the client process
// exited or was killed) the daemon releases everything the client held.
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <mutex>

#include "daemon/control/local_service.h"
#include "daemon/jobs/event_sink.h"

namespace epx::daemon {

class SessionStream final : public grpc::ServerWriteReactor<v1::ClientEvent>, public EventSink {
 public:
  // Attaches the client and writes Welcome, or finishes with the error.
  SessionStream(LocalParts& parts, grpc::CallbackServerContext* context, const v1::HelloRequest& request);

  void push(const v1::ClientEvent& event) override;
  void close(const Status& status) override;

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  void finish_locked(const grpc::Status& status);

  LocalParts& parts_;
  uint64_t client_id_ = 0;
  Credentials creds_;
  std::mutex mu_;
  std::deque<v1::ClientEvent> queue_;  // front() is being written while writing_
  bool writing_ = false;
  bool closing_ = false;
  bool finished_ = false;
  grpc::Status close_status_;
};

}  // namespace epx::daemon
