// Bytes with file descriptors attached, over a connected unix stream socket
// (SCM_RIGHTS): how the SDK and epxd pass shared regions and dma-bufs on the
// fd socket (fd_protocol.h). Both sides use these two calls and nothing else
// to build or parse ancillary data.
#pragma once

#include <cstddef>
#include <vector>

#include "epx/status.h"
#include "proto/fd/unique_fd.h"

namespace epx {

// The most descriptors one message carries here (either direction).
inline constexpr size_t kMaxFdsPerMessage = 8;

// Sends `bytes` of `data` in one sendmsg, with `fds` attached to its first
// byte; the receiver gets duplicates, the caller keeps its own. MSG_NOSIGNAL
// is always set (a peer that hung up is an error, not a SIGPIPE); `flags`
// adds to it (e.g. MSG_DONTWAIT). Blocks as the socket does (SO_SNDTIMEO).
// Errors: INVALID_ARGUMENT for a negative descriptor or more than
// kMaxFdsPerMessage; UNAVAILABLE when sendmsg fails or sends only part
// (naming errno, or the bytes that went).
Status send_with_fds(int socket, const void* data, size_t bytes, const std::vector<int>& fds, int flags = 0);

struct ReceivedFds {
  size_t bytes = 0;  // received into the buffer; 0: the peer closed (or would_block)
  std::vector<UniqueFd> fds;  // attached descriptors, already close-on-exec
  // The peer attached more descriptors than were asked for; the kernel
  // closed those that did not fit.
  bool truncated = false;
  // Only with MSG_DONTWAIT in `flags`: nothing to read yet, or a signal
  // interrupted the call; try again when the socket is readable.
  bool would_block = false;
};

// One recvmsg of up to `bytes` into `data`, taking the descriptors attached
// to what it reads: at least `max_fds` fit (1..kMaxFdsPerMessage), more are
// reported as truncated. Received descriptors are close-on-exec
// (MSG_CMSG_CLOEXEC is always set), so a child the process forks never
// inherits them. `flags` adds MSG_WAITALL or MSG_DONTWAIT. Blocks as the
// socket does (SO_RCVTIMEO). Errors: INVALID_ARGUMENT for max_fds out of
// range; UNAVAILABLE when recvmsg fails (naming errno; a timeout is EAGAIN).
// A signal that interrupts a blocking call is no failure: it waits again.
Result<ReceivedFds> receive_with_fds(int socket, void* data, size_t bytes, size_t max_fds, int flags = 0);

}  // namespace epx
