// The daemon's checks of a descriptor against the job it came from: the
// descriptor is untrusted input (a kernel or host thread of any client wrote
// it), so nothing is touched until these pass. Pure functions of the
// JobView, unit-tested without a fabric.
#pragma once

#include <string>

#include "daemon/proxy/job_view.h"
#include "daemon/proxy/ring_binding.h"
#include "proto/ring/ring.h"

namespace epx::daemon {

struct Verdict {
  ring::RingError error = ring::RingError::kNone;
  std::string why;  // for the client's status and the daemon log
  bool ok() const { return error == ring::RingError::kNone; }
};

// kWrite / kWriteSignal from `src_rank`, posted on local rail `rail`.
// Zero-length writes are not for this check: the proxy handles them (a no-op,
// or a bare signal).
// `max_bytes`: the longest write the daemon allows (and the rail can carry).
// On success fills `out` (addresses, key, immediate).
Verdict check_write(const JobView& view, uint32_t src_rank, const ring::RingSlot& d, uint32_t rail,
                    uint64_t max_bytes, PendingWrite* out);

// True when `d` is a plain kWrite that continues `p` exactly (same
// destination rank and windows, both offsets at p's ends), stays inside both
// windows, keeps the merged write within `max_bytes`, and `view` is the view
// p was checked against (a rank lost or a window removed since makes a new
// view): the proxy then appends it to p without a full check_write (the
// common case when a warp writes one contiguous run). Anything else goes
// through check_write.
bool extends(const PendingWrite& p, const JobView& view, const ring::RingSlot& d, uint64_t max_bytes);

// kWriteStrided from `src_rank`: the rank, both windows, the element length
// (1..max_bytes), and the FIRST and LAST element of both sides inside their
// windows (overflow-safe: no product of count and stride is formed unless
// it is known to fit), and the signal if any. Every element lies between
// those two, so the whole descriptor is checked. On success fills `out`
// (element 0's addresses, count, strides); a strided write whose elements
// are back to back on both sides and fit max_bytes becomes one plain write.
Verdict check_strided(const JobView& view, uint32_t src_rank, const ring::RingSlot& d, uint32_t rail,
                      uint64_t max_bytes, PendingWrite* out);

// Whether `count` elements of `length` bytes, `stride` apart, starting at
// `offset`, all lie in [0, size). Overflow-safe for any inputs.
bool strided_fits(uint64_t offset, uint64_t stride, uint32_t count, uint64_t length, uint64_t size);

// kSignal: fills `out` with the destination (scratch word, key, immediate);
// the caller supplies the source.
Verdict check_signal(const JobView& view, const ring::RingSlot& d, uint32_t rail, PendingWrite* out);

// Re-targets a write resolved for one local rail to local `rail` (a stripe
// piece, or a write moved off an unhealthy rail): the source registration,
// the destination's key and address, the peer's fi_addr, all as that rail
// sees them (its remote rail by dst.paired_rail). `w` must be a resolved
// write whose src/dst offsets (src, dst_end - length) are its first byte's;
// the view must be the one it was checked against or a newer one of the
// same windows. Fails when the rank is gone or `rail` cannot reach it.
Verdict rebind(const JobView& view, uint32_t src_rank, uint32_t rail, PendingWrite* w);

}  // namespace epx::daemon
