// Wire format of the fd socket (<control_socket>.fd), where file descriptors
// cross between a client and its daemon with SCM_RIGHTS. One request per
// connection; the daemon reads 16 bytes and dispatches on the magic:
//
//   fetch (daemon -> client): the client sends FdRequest naming a shared
//     region (ring, window, signal array) the daemon created for it; the
//     daemon answers FdReply with the region's descriptor attached when
//     status == 0. Only the process that asked for the region gets it.
//   submit (client -> daemon): the client sends FdSubmit with exactly one
//     descriptor attached (a dma-buf of its GPU memory, for a device
//     window); the daemon keeps it and answers FdReply with the token that
//     names it in Local.CreateDeviceWindow. Only a call from the same
//     process and client claims it; unclaimed descriptors are closed after
//     kSubmitTtlMs or when the client's session ends.
//
// Both directions check the peer with SO_PEERCRED.
#pragma once

#include <cstdint>

namespace epx::fdproto {

inline constexpr uint64_t kMagic = 0x3144465850457845ull;        // "ExEPXFD1": fetch
inline constexpr uint64_t kSubmitMagic = 0x3153465850457845ull;  // "ExEPXFS1": submit
inline constexpr uint32_t kSubmitTtlMs = 10000;

struct FdRequest {
  uint64_t magic;  // kMagic
  uint64_t token;  // from the CreateWindow/OpenRing/OpenSignals reply
};

struct FdSubmit {
  uint64_t magic;      // kSubmitMagic
  uint64_t client_id;  // the session (Welcome.client_id) the descriptor is for
};

static_assert(sizeof(FdRequest) == 16 && sizeof(FdSubmit) == 16, "the daemon reads 16 bytes, then the magic");

struct FdReply {
  uint64_t magic;  // kMagic
  int32_t status;  // 0: ok; else an epx::StatusCode
  uint32_t reserved;
  uint64_t size;   // fetch: bytes to map; submit: size of the submitted descriptor's object (0 if unknown)
  char message[224];  // NUL-terminated reason when status != 0
  uint64_t token;  // submit: names the descriptor in CreateDeviceWindow; fetch: 0
};

static_assert(sizeof(FdReply) == 256, "fd reply is one fixed-size message");

}  // namespace epx::fdproto
