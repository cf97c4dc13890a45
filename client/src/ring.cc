#include "epx/ring.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "client_session.h"
#include "epx/window.h"
#include "mapped_region.h"
#include "proto/ring/ring_host.h"

namespace epx {
namespace {

// How often a post waiting for ring space looks at the job's peers.
constexpr std::chrono::milliseconds kPeerCheckEvery(10);

}  // namespace

// The ring is channel 0 of a group of one (ring.h); several threads may
// post at once (RingProducer claims by compare-exchange), each post rings
// the group's doorbell for it.
struct Ring::Producer {
  explicit Producer(uint8_t* group)
      : producer(ring::group_ring(group, 0, ring::group_header(group)->capacity),
                 &ring::group_header(group)->doorbell[0]) {}
  ring::RingProducer producer;
};

Ring::Ring(std::shared_ptr<ClientSession> session, std::string job_id, uint32_t id, uint32_t world_size,
           std::shared_ptr<MappedRegion> region)
    : session_(std::move(session)),
      job_id_(std::move(job_id)),
      id_(id),
      world_size_(world_size),
      region_(std::move(region)),
      producer_(std::make_unique<Producer>(region_->data())) {}  // Job checked the group
Ring::~Ring() = default;

uint32_t Ring::capacity() const { return producer_->producer.capacity(); }

Status Ring::error() const {
  const uint64_t e = producer_->producer.error();
  if (e == 0) return Status();
  return failed_precondition("ring " + std::to_string(id_) + ": the daemon rejected the descriptor at position " +
                             std::to_string(ring::error_position(e)) + " (" +
                             ring::ring_error_message(ring::error_code(e)) + "); epxctl status shows why");
}

Status Ring::rejection() const {
  Status rejected = error();
  if (rejected.ok()) return rejected;
  const auto code = ring::error_code(producer_->producer.error());
  // A destination that is not present, or a write the fabric failed, is
  // almost always a lost peer (ranks outside the job never leave the SDK),
  // and the daemon marks the rank absent just before its event reaches us:
  // give that event a moment, so the error names the peer.
  const bool peer_like = code == ring::RingError::kBadRank || code == ring::RingError::kTransport;
  const auto until = std::chrono::steady_clock::now() + (peer_like ? ClientSession::kTroubleGrace : std::chrono::milliseconds(0));
  for (;;) {
    Status health = session_->job_health(job_id_);
    if (!health.ok()) return unavailable(health.message() + " (" + rejected.message() + ")");
    if (std::chrono::steady_clock::now() >= until) return rejected;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Status Ring::check_peers(std::chrono::steady_clock::time_point since, const std::string& waiting_for) const {
  return session_->peer_wait_status(job_id_, since).with_context("ring " + std::to_string(id_) + ": " + waiting_for);
}

Status Ring::post(const ring::RingSlot& slot, std::chrono::milliseconds timeout, uint64_t* ticket) {
  EPX_RETURN_IF_ERROR(rejection());
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  // A full ring waits for the proxy in slices, between which a lost peer
  // (whose writes may never complete and so never free slots) ends the wait.
  for (;;) {
    const auto left = std::max(deadline - std::chrono::steady_clock::now(), std::chrono::steady_clock::duration::zero());
    if (producer_->producer.post(slot, std::min<std::chrono::steady_clock::duration>(left, kPeerCheckEvery), ticket)) {
      return Status();
    }
    EPX_RETURN_IF_ERROR(rejection());
    EPX_RETURN_IF_ERROR(check_peers(start, "waiting for ring space"));
    if (std::chrono::steady_clock::now() >= deadline) {
      return deadline_exceeded("ring " + std::to_string(id_) + " stayed full for " + std::to_string(timeout.count()) +
                               " ms (is the daemon's proxy running? epxctl status)");
    }
  }
}

Status Ring::check_rank(uint32_t dst_rank) const {
  if (dst_rank >= world_size_) {
    return invalid_argument("ring " + std::to_string(id_) + ": destination rank " + std::to_string(dst_rank) +
                            " is outside the job's " + std::to_string(world_size_) + " ranks");
  }
  return Status();
}

namespace {

Status check_write(const Window& src, uint64_t src_offset, uint32_t dst_window, uint64_t dst_offset,
                   uint32_t length) {
  if (src_offset > src.size() || length > src.size() - src_offset) {
    return invalid_argument("write of " + std::to_string(length) + " bytes at offset " + std::to_string(src_offset) +
                            " beyond source window " + std::to_string(src.id()) + " (" + std::to_string(src.size()) +
                            " bytes)");
  }
  if (dst_window > ring::kMaxWindow || dst_offset > ring::kMaxOffset) {
    return invalid_argument("destination window/offset out of the descriptor's range");
  }
  return Status();
}

}  // namespace

Status Ring::post_write(uint32_t dst_rank, const Window& src, uint64_t src_offset, uint32_t dst_window,
                        uint64_t dst_offset, uint32_t length, std::chrono::milliseconds timeout) {
  EPX_RETURN_IF_ERROR(check_rank(dst_rank));
  EPX_RETURN_IF_ERROR(check_write(src, src_offset, dst_window, dst_offset, length));
  return post(ring::make_write(static_cast<uint16_t>(dst_rank), ring::pack_address(src.id(), src_offset),
                               ring::pack_address(dst_window, dst_offset), length),
              timeout);
}

Status Ring::post_write_signal(uint32_t dst_rank, const Window& src, uint64_t src_offset, uint32_t dst_window,
                               uint64_t dst_offset, uint32_t length, SignalRef signal,
                               std::chrono::milliseconds timeout) {
  EPX_RETURN_IF_ERROR(check_rank(dst_rank));
  EPX_RETURN_IF_ERROR(check_write(src, src_offset, dst_window, dst_offset, length));
  if (!ring::signal_fits(signal.index, signal.increment) || signal.increment == 0) {
    return invalid_argument("signal index " + std::to_string(signal.index) + " / increment " +
                            std::to_string(signal.increment) + " does not fit the 20/12-bit immediate");
  }
  return post(ring::make_write_signal(static_cast<uint16_t>(dst_rank), ring::pack_address(src.id(), src_offset),
                                      ring::pack_address(dst_window, dst_offset), length,
                                      ring::encode_signal(signal.index, signal.increment)),
              timeout);
}

Status Ring::post_signal(uint32_t dst_rank, SignalRef signal, std::chrono::milliseconds timeout) {
  return post_signal_scoped(dst_rank, signal, SignalScope::kAfterEverything, timeout);
}

Status Ring::post_signal_scoped(uint32_t dst_rank, SignalRef signal, SignalScope scope,
                                std::chrono::milliseconds timeout) {
  EPX_RETURN_IF_ERROR(check_rank(dst_rank));
  if (!ring::signal_fits(signal.index, signal.increment) || signal.increment == 0) {
    return invalid_argument("signal index " + std::to_string(signal.index) + " / increment " +
                            std::to_string(signal.increment) + " does not fit the 20/12-bit immediate");
  }
  return post(ring::make_signal(static_cast<uint16_t>(dst_rank), ring::encode_signal(signal.index, signal.increment),
                                scope == SignalScope::kAfterDestination),
              timeout);
}

Status Ring::post_write_strided(uint32_t dst_rank, const Window& src, uint64_t src_offset, uint64_t src_stride,
                                uint32_t dst_window, uint64_t dst_offset, uint64_t dst_stride, uint32_t length,
                                uint32_t count, std::optional<SignalRef> signal, std::chrono::milliseconds timeout) {
  EPX_RETURN_IF_ERROR(check_rank(dst_rank));
  if (count == 0 || count > ring::kMaxStridedCount || length == 0) {
    return invalid_argument("strided write of " + std::to_string(count) + " elements of " + std::to_string(length) +
                            " bytes: needs 1.." + std::to_string(ring::kMaxStridedCount) +
                            " elements of at least one byte");
  }
  // The last source element within the window (the daemon checks the destination).
  const uint64_t last = uint64_t{count - 1};
  if (src_offset > src.size() || length > src.size() - src_offset ||
      (src_stride != 0 && last > (src.size() - src_offset - length) / src_stride)) {
    return invalid_argument("strided source [" + std::to_string(src_offset) + " + i * " + std::to_string(src_stride) +
                            ", +" + std::to_string(length) + "), i < " + std::to_string(count) +
                            ", leaves source window " + std::to_string(src.id()) + " (" + std::to_string(src.size()) +
                            " bytes)");
  }
  if (dst_window > ring::kMaxWindow || dst_offset > ring::kMaxOffset) {
    return invalid_argument("destination window/offset out of the descriptor's range");
  }
  uint32_t encoded = 0;
  if (signal) {
    if (!ring::signal_fits(signal->index, signal->increment) || signal->increment == 0) {
      return invalid_argument("signal index " + std::to_string(signal->index) + " / increment " +
                              std::to_string(signal->increment) + " does not fit the 20/12-bit immediate");
    }
    encoded = ring::encode_signal(signal->index, signal->increment);
  }
  return post(ring::make_write_strided(static_cast<uint16_t>(dst_rank), ring::pack_address(src.id(), src_offset),
                                       src_stride, ring::pack_address(dst_window, dst_offset), dst_stride, length,
                                       count, encoded),
              timeout);
}

Status Ring::flush(std::chrono::milliseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  // This flush's own ticket: every descriptor before it has completed once
  // the watermark passed it, whatever other threads flush meanwhile.
  uint64_t ticket = 0;
  EPX_RETURN_IF_ERROR(post(ring::make_flush(), timeout, &ticket));
  for (uint64_t spins = 0;; ++spins) {
    if (producer_->producer.completed() > ticket) return rejection();
    if ((spins & 1023) == 0) {
      EPX_RETURN_IF_ERROR(rejection());
      EPX_RETURN_IF_ERROR(check_peers(start, "flush"));
      if (std::chrono::steady_clock::now() >= deadline) {
        return deadline_exceeded("ring " + std::to_string(id_) + ": flush did not complete within " +
                                 std::to_string(timeout.count()) + " ms");
      }
      std::this_thread::yield();
    }
    ring::ring_pause();
  }
}

}  // namespace epx
