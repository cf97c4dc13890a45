// The SDK's side of the daemon's fd socket (proto/fd/fd_protocol.h): one
// connection per request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "epx/status.h"
#include "proto/fd/fd_protocol.h"
#include "proto/fd/unique_fd.h"

namespace epx {

// The daemon's answer to one request, with the descriptor it attached (a
// fetched region's; none for a submit).
struct FdAnswer {
  fdproto::FdReply reply = {};
  UniqueFd fd;
};

// Connects to `fd_socket`, sends `bytes` of `request` (with a copy of
// `attach` attached unless it is -1) and reads the reply. Blocks at most
// about 5 s per direction (the daemon answers at once). UNAVAILABLE when the
// daemon cannot be reached or answers garbage; the daemon's refusal comes
// back with its code and message, prefixed with `what`.
Result<FdAnswer> fd_request(const std::string& fd_socket, const void* request, size_t bytes, int attach,
                            const std::string& what);

// Sends `fd` (a copy; the caller keeps its own) to the daemon for
// `client_id` and returns the token that names it in CreateDeviceWindow.
// Blocks at most about 5 s.
Result<uint64_t> submit_fd(const std::string& fd_socket, uint64_t client_id, int fd);

}  // namespace epx
