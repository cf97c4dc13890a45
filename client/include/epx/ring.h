// Ring: a descriptor ring this rank posts into from host threads; a proxy
// thread of the daemon consumes it and performs the writes. GPU kernels post
// into device rings with the same ABI (proto/ring/ring.h).
//
// Posting never blocks longer than the call's timeout (a full ring waits for
// the proxy); a descriptor the daemon rejects (bad rank, window, bounds,
// signal) sets the ring's error, which error() and every later post report.
// Waits (flush, a post waiting for space) also end, UNAVAILABLE naming the
// lost rank and its node, about a second after a rank of the job is lost,
// the job is aborted or the daemon session ends, if they have not
// completed by then (writes to a stopped daemon never complete).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "epx/status.h"

namespace epx {
namespace ring {
struct RingSlot;
}

class ClientSession;
class MappedRegion;
class Window;

struct SignalRef {
  uint32_t index = 0;      // word in the destination rank's signal array
  uint32_t increment = 1;  // 1..4095 (12 bits of the 32-bit EFA immediate)
};

class Ring {
 public:
  // Built by Job::open_ring. `world_size`: ranks of the job; every post to a
  // rank outside it is INVALID_ARGUMENT (the descriptor has 16 rank bits).
  Ring(std::shared_ptr<ClientSession> session, std::string job_id, uint32_t id, uint32_t world_size,
       std::shared_ptr<MappedRegion> region);
  ~Ring();
  uint32_t id() const { return id_; }
  uint32_t capacity() const;

  // Writes [src_offset, +length) of `src` into window `dst_window` of
  // `dst_rank` at `dst_offset`.
  Status post_write(uint32_t dst_rank, const Window& src, uint64_t src_offset, uint32_t dst_window,
                    uint64_t dst_offset, uint32_t length, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // The same, and then adds signal.increment to the destination's word
  // signal.index once this write's data is in place.
  Status post_write_signal(uint32_t dst_rank, const Window& src, uint64_t src_offset, uint32_t dst_window,
                           uint64_t dst_offset, uint32_t length, SignalRef signal,
                           std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Adds to the destination's signal after every earlier write of this ring
  // completed (a fence, then a signal): earlier plain writes are placed at
  // their destinations by then; earlier signalled writes have been sent
  // (their own signals report their placement).
  Status post_signal(uint32_t dst_rank, SignalRef signal, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Waits until every write posted before it completed at its destination
  // (source buffers may then be reused).
  Status flush(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // OK, or the first descriptor the daemon rejected (code and position;
  // `epxctl status` shows the daemon's full reason).
  Status error() const;

 private:
  Status post(const ring::RingSlot& slot, std::chrono::milliseconds timeout);
  Status check_rank(uint32_t dst_rank) const;
  // error(); when a lost peer explains it, UNAVAILABLE naming that peer.
  Status rejection() const;
  // OK, or why a wait begun at `since` should end now (a lost peer).
  Status check_peers(std::chrono::steady_clock::time_point since, const std::string& waiting_for) const;

  std::shared_ptr<ClientSession> session_;
  std::string job_id_;
  uint32_t id_;
  uint32_t world_size_;
  std::shared_ptr<MappedRegion> region_;
  struct Producer;
  std::unique_ptr<Producer> producer_;
  uint64_t fences_posted_ = 0;
};

}  // namespace epx
