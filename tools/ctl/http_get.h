// A plain HTTP/1.1 GET for epxctl health and the tests: one request on a
// fresh TCP connection to host:port, bounded by a timeout.
#pragma once

#include <chrono>
#include <string>

#include "epx/status.h"

namespace epx::ctl {

struct HttpReply {
  int code = 0;
  std::string body;
};

// GET `path` from `address` (host:port, host an IPv4 address or a name).
// UNAVAILABLE when it cannot connect, DEADLINE_EXCEEDED naming the address
// when no full answer came within `timeout`.
Result<HttpReply> http_get(const std::string& address, const std::string& path, std::chrono::milliseconds timeout);

}  // namespace epx::ctl
