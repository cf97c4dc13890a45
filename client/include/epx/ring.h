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
#include <optional>
#include <string>

#include "epx/status.h"
#include "proto/ring/ring.h"

namespace epx {

class ClientSession;
class MappedRegion;
class Window;

struct SignalRef {
  uint32_t index = 0;      // word in the destination rank's signal array
  uint32_t increment = 1;  // 1..4095 (12 bits of the 32-bit EFA immediate)
};

// What a signal waits for before it is sent (proto/ring/ring.h, kSignal):
// kAfterEverything (every earlier write of the ring, to any rank) or
// kAfterDestination (every earlier write of the ring to the signal's rank).
using SignalScope = ring::SignalScope;

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
  // completed at its destination. The daemon holds the signal back and goes
  // on with later descriptors meanwhile (nothing after it waits for it).
  Status post_signal(uint32_t dst_rank, SignalRef signal, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // The same with an explicit scope: kAfterDestination waits only for this
  // ring's earlier writes to dst_rank, so a slow rank does not delay the
  // signals of the others.
  Status post_signal_scoped(uint32_t dst_rank, SignalRef signal, SignalScope scope,
                            std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // `count` writes of `length` bytes in ONE descriptor: element i from
  // src_offset + i * src_stride to dst_offset + i * dst_stride. The daemon
  // posts them as few fabric writes as the provider allows and refuses the
  // whole batch if any element leaves a window. With `signal`, it is added
  // once every element is in place.
  Status post_write_strided(uint32_t dst_rank, const Window& src, uint64_t src_offset, uint64_t src_stride,
                            uint32_t dst_window, uint64_t dst_offset, uint64_t dst_stride, uint32_t length,
                            uint32_t count, std::optional<SignalRef> signal = std::nullopt,
                            std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Waits until every write this ring took before it completed at its
  // destination (source buffers may then be reused). Each flush waits for
  // its own position, so concurrent flushers never return early.
  Status flush(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // OK, or the first descriptor the daemon rejected (code and position;
  // `epxctl status` shows the daemon's full reason).
  Status error() const;

 private:
  Status post(const ring::RingSlot& slot, std::chrono::milliseconds timeout, uint64_t* ticket = nullptr);
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
};

}  // namespace epx
