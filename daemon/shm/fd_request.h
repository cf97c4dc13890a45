// The daemon's answer to one fd-socket request (proto/fd/fd_protocol.h),
// apart from the socket: a pure function of the request bytes, the caller's
// pid (SO_PEERCRED) and the descriptors it attached, so it can be tested
// and fuzzed without a connection. FdServer reads the request and sends
// what this returns.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/shm/region_table.h"
#include "daemon/shm/submitted_fds.h"
#include "epx/status.h"
#include "proto/fd/fd_protocol.h"
#include "proto/fd/unique_fd.h"

namespace epx::daemon {

// The request as read from the socket: always 16 bytes (FdRequest or
// FdSubmit; the magic says which).
inline constexpr size_t kFdRequestBytes = sizeof(fdproto::FdRequest);

// `check_submitter(client_id, pid)`: OK when `client_id` belongs to the
// process `pid` (a submit names its client), so no process can spend
// another client's descriptor quota.
using FdSubmitterCheck = std::function<Status(uint64_t client_id, pid_t pid)>;

struct FdRequestFrom {
  const char* bytes = nullptr;   // kFdRequestBytes of them
  pid_t pid = 0;                 // the connected process
  std::vector<UniqueFd> passed;  // descriptors it attached (taken: kept or closed)
  bool too_many_fds = false;     // it attached more than the server reads
};

struct FdAnswer {
  fdproto::FdReply reply = {};           // what goes back
  std::shared_ptr<SharedRegion> region;  // fetch: attach region->fd() to the reply
  Status status;                         // the refusal, when not OK (for the log)
  const char* what = "fd request";       // "fd request" or "fd submit", for the log
};

// Fetch: the region `token` names, when `pid` owns it, and no descriptors
// attached. Submit: exactly one descriptor, for a client `pid` owns; it is
// kept in `submitted` and the reply carries its token. Anything else is
// refused with INVALID_ARGUMENT (or the table's own error) in the reply.
// Descriptors not kept are closed before this returns.
FdAnswer answer_fd_request(FdRequestFrom request, const RegionTable& regions, SubmittedFds& submitted,
                           const FdSubmitterCheck& check_submitter);

}  // namespace epx::daemon
