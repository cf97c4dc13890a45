// Where a client's events go: its Hello stream. An interface so the tables
// that decide *what* to send stay free of gRPC.
#pragma once

#include "epx/status.h"
#include "epx/v1/local.pb.h"

namespace epx::daemon {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Queues an event; never blocks. Ignored once closed.
  virtual void push(const v1::ClientEvent& event) = 0;
  // Ends the stream after the queued events, with `status`.
  virtual void close(const Status& status) = 0;
};

}  // namespace epx::daemon
