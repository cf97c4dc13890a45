// Wire format of the fd socket, where a client fetches the file descriptor of
// a shared region (ring, window, signal array) the daemon created for it.
// One request per connection: the client sends FdRequest; the daemon answers
// FdReply, with the descriptor attached (SCM_RIGHTS) when status == 0. The
// daemon hands a region only to the process that asked for it (SO_PEERCRED).
#pragma once

#include <cstdint>

namespace epx::fdproto {

inline constexpr uint64_t kMagic = 0x3144465850457845ull;  // "ExEPXFD1"

struct FdRequest {
  uint64_t magic;
  uint64_t token;  // from the CreateWindow/OpenRing/OpenSignals reply
};

struct FdReply {
  uint64_t magic;
  int32_t status;  // 0: ok, fd attached; else an epx::StatusCode
  uint32_t reserved;
  uint64_t size;   // bytes to map
  char message[232];  // NUL-terminated reason when status != 0
};

static_assert(sizeof(FdReply) == 256, "fd reply is one fixed-size message");

}  // namespace epx::fdproto
