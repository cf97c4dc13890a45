// RelayedWrite: one fabric operation that a ring's proxy (its owner) hands
// to another rail's proxy, because the write is striped across the rails
// (a piece of it) or because the owner's own rail is unhealthy (all of it).
// The other proxy posts it on its rail and hands it back with the outcome;
// the owner alone touches the ring's state (completion tracking, counters),
// so a ring stays single-threaded whichever rails carry its writes.
//
// A Stripe ties the pieces of one write together: the write's signal goes
// only once every piece has completed (placed at the destination, by
// FI_DELIVERY_COMPLETE), as one 8-byte signal write, so the receiver's
// signal moves once, by the requested increment, whatever order the pieces
// landed in.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "daemon/proxy/ring_binding.h"

namespace epx::daemon {

class Proxy;

struct Stripe {
  uint32_t pieces_left = 0;  // pieces (and the signal, once sent) not completed yet
  uint32_t imm = 0;          // the write's signal: sent once every piece completed; 0: none
  uint32_t descriptors = 0;  // ring slots the write carried: completed with its last operation
  bool failed = false;       // a piece could not be delivered: no signal, an error on the ring
  bool signal_sent = false;
};

struct RelayedWrite {
  std::shared_ptr<RingBinding> ring;  // kept alive until the owner has the answer
  Proxy* owner = nullptr;
  uint32_t rail = 0;               // the rail it is on now
  PendingWrite write;              // one operation's worth, resolved for `rail` (rebind)
  uint64_t entry = 0;              // the ring's TrackedEntry
  uint32_t descriptors = 0;        // ring slots done with it (0 when its Stripe counts them)
  std::shared_ptr<Stripe> stripe;  // null: not a piece of a striped write
  uint32_t attempts = 1;           // rails tried
  JobShare* share = nullptr;       // owner side: counted in flight for its job
  uint64_t bytes = 0;
  // Answer, set by the rail that carried it.
  bool ok = false;
  // False only when it certainly never reached the fabric (refused at
  // posting, or the rail was unhealthy): a write carrying a signal may then
  // be sent again without the signal counting twice.
  bool maybe_landed = false;
  std::string error;
  // Given up on where it was posted (stalled there) and sent again as a
  // copy: this original only holds its ring's tracking entry open until it
  // resolves, so no flush passes it while it may still land (stale bytes
  // must not land after the ring's owner went on to rewrite them).
  bool abandoned = false;
  // The copy made of a stalled original: it holds nothing yet.
  bool stalled_copy = false;
};

}  // namespace epx::daemon
