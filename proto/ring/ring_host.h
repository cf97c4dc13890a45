// Host-side helpers for the EPX descriptor ring (ring.h): create and validate
// ring and group regions, the CPU producer and consumer, and the consumer's
// doorbell scan. C++17, host only; these types are NOT shared across the
// process boundary (only the memory they point at is), so they may use std
// types.
//
//   group_init(mem, channels, capacity, kind)  a fresh group: header + rings
//   group_check(mem, size)                     validates a mapped group (daemon, SDK)
//   ring_init / ring_check                     the same for one ring of it
//   RingProducer                               host producer; one object per thread
//   RingConsumer                               the single consumer of a ring
//   take_doorbells                             the consumer's doorbell scan
#pragma once

#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>

#include "proto/ring/ring.h"

namespace epx::ring {

static_assert(__atomic_always_lock_free(sizeof(uint32_t), 0) && __atomic_always_lock_free(sizeof(uint64_t), 0),
              "ring atomics must be lock-free to work across processes");

// ---------------------------------------------------------------------------
// Creating and validating a region.

enum class RingCheck {
  kOk = 0,
  kNull,              // mem is null
  kMisaligned,        // mem is not kRingAlignment-aligned
  kTooSmall,          // size < one header page
  kBadMagic,          // not a ring (or not initialised yet)
  kBadVersion,        // another ABI version
  kBadSlotSize,       // slot_size != 64
  kBadCapacity,       // capacity not a power of two in [2, 2^24]
  kBadProducerKind,   // producer_kind is neither kHost nor kDevice
  kSizeMismatch,      // size != ring_bytes(capacity) (group: group_bytes)
  kBadChannels,       // group: channels not in [1, kMaxGroupChannels], or a ring's channel index wrong
  kBadCapabilities,   // a ring lacks a capability v2 consumers always offer
};

// Human-readable name of an error code (daemon logs, SDK errors).
inline const char* ring_error_message(RingError e) {
  switch (e) {
    case RingError::kNone: return "no error";
    case RingError::kBadOp: return "unknown op";
    case RingError::kUnsupportedOp: return "unsupported op";
    case RingError::kBadFlags: return "bad flags";
    case RingError::kBadFields: return "fields the op does not use are set, or increment is 0";
    case RingError::kBadRank: return "bad destination rank";
    case RingError::kBadWindow: return "unknown window";
    case RingError::kOutOfBounds: return "out of window bounds";
    case RingError::kBadSignal: return "bad signal";
    case RingError::kTransport: return "fabric error";
  }
  return "unknown error code";
}

inline const char* ring_check_message(RingCheck check) {
  switch (check) {
    case RingCheck::kOk: return "ok";
    case RingCheck::kNull: return "ring region is null";
    case RingCheck::kMisaligned: return "ring region is not 64-byte aligned";
    case RingCheck::kTooSmall: return "ring region is smaller than its 4096-byte header";
    case RingCheck::kBadMagic: return "ring header has a bad magic (not an EPX ring)";
    case RingCheck::kBadVersion: return "ring header has an unsupported ABI version";
    case RingCheck::kBadSlotSize: return "ring header has a slot size other than 64";
    case RingCheck::kBadCapacity: return "ring capacity is not a power of two in [2, 2^24]";
    case RingCheck::kBadProducerKind: return "ring header has an unknown producer kind";
    case RingCheck::kSizeMismatch: return "ring region size does not match 4096 + 64 * capacity (per ring of a group)";
    case RingCheck::kBadChannels: return "ring group has a bad channel count or a ring with the wrong channel index";
    case RingCheck::kBadCapabilities: return "ring header lacks capabilities every ABI v2 ring has";
  }
  return "unknown ring check result";
}

// The capabilities a v2 consumer gives a ring of `kind`.
inline uint32_t ring_capabilities_for(RingProducerKind kind) {
  return kRingCapabilitiesV2 | (kind == RingProducerKind::kDevice ? kCapSingleProducer | kCapEarlyDoorbell : 0u);
}

// Initialises a ring of `capacity` slots at `mem`, which must hold
// ring_bytes(capacity) bytes and be kRingAlignment-aligned. Returns false
// (writing nothing) for an invalid capacity. Call it before the region is
// shared; the magic is stored last, with release, so a reader that sees it
// (ring_check, acquire) also sees the rest of the header and the zeroed slots.
inline bool ring_init(void* mem, uint32_t capacity, RingProducerKind kind = RingProducerKind::kHost,
                      uint32_t channel = 0) {
  if (mem == nullptr || !ring_capacity_valid(capacity)) return false;
  std::memset(mem, 0, ring_bytes(capacity));  // header, and every slot's seq = 0 ("never published")
  RingHeader* header = ring_header(mem);
  header->version = kRingVersion;
  header->slot_size = kRingSlotBytes;
  header->capacity = capacity;
  header->producer_kind = static_cast<uint32_t>(kind);
  header->capabilities = ring_capabilities_for(kind);
  header->channel = channel;
  // release: pairs with the acquire load of magic in ring_check().
  ring_store_release(&header->magic, kRingMagic);
  return true;
}

// Validates a mapped region of `size` bytes (the region's exact size, e.g.
// the memfd's st_size). Both the daemon and the SDK call this before using a
// region; on kOk, header->capacity may be trusted as read NOW (the consumer
// keeps its own copy, see RingConsumer).
inline RingCheck ring_check(const void* mem, size_t size) {
  if (mem == nullptr) return RingCheck::kNull;
  if (reinterpret_cast<uintptr_t>(mem) % kRingAlignment != 0) return RingCheck::kMisaligned;
  if (size < kRingHeaderBytes) return RingCheck::kTooSmall;
  const RingHeader* header = ring_header(mem);
  // acquire: pairs with the release store of magic in ring_init(), so the
  // fields read below are the initialised ones.
  if (ring_load_acquire(&header->magic) != kRingMagic) return RingCheck::kBadMagic;
  if (header->version != kRingVersion) return RingCheck::kBadVersion;
  if (header->slot_size != kRingSlotBytes) return RingCheck::kBadSlotSize;
  if (!ring_capacity_valid(header->capacity)) return RingCheck::kBadCapacity;
  if (header->producer_kind != static_cast<uint32_t>(RingProducerKind::kHost) &&
      header->producer_kind != static_cast<uint32_t>(RingProducerKind::kDevice)) {
    return RingCheck::kBadProducerKind;
  }
  if (!ring_capabilities_cover(header->capabilities, kRingCapabilitiesV2)) return RingCheck::kBadCapabilities;
  if (size != ring_bytes(header->capacity)) return RingCheck::kSizeMismatch;
  return RingCheck::kOk;
}

// Initialises a group of `channels` rings of `capacity` slots at `mem`
// (group_bytes(channels, capacity) bytes, kRingAlignment-aligned): zeroed
// doorbells, then every ring, then the group's magic last, with release.
// False (nothing written) for invalid arguments.
inline bool group_init(void* mem, uint32_t channels, uint32_t capacity, RingProducerKind kind) {
  if (mem == nullptr || !group_channels_valid(channels) || !ring_capacity_valid(capacity)) return false;
  std::memset(mem, 0, kGroupHeaderBytes);
  RingGroupHeader* group = group_header(mem);
  group->version = kRingVersion;
  group->channels = channels;
  group->capacity = capacity;
  for (uint32_t c = 0; c < channels; ++c) ring_init(group_ring(mem, c, capacity), capacity, kind, c);
  // release: pairs with the acquire load of the group magic in group_check().
  ring_store_release(&group->magic, kGroupMagic);
  return true;
}

// Validates a mapped group region of exactly `size` bytes: the group
// header, then every ring in it (ring_check). On kOk, channels and capacity
// may be trusted as read NOW; callers keep their own copies.
inline RingCheck group_check(const void* mem, size_t size) {
  if (mem == nullptr) return RingCheck::kNull;
  if (reinterpret_cast<uintptr_t>(mem) % kRingAlignment != 0) return RingCheck::kMisaligned;
  if (size < kGroupHeaderBytes) return RingCheck::kTooSmall;
  const RingGroupHeader* group = group_header(mem);
  // acquire: pairs with the release store of the magic in group_init().
  if (ring_load_acquire(&group->magic) != kGroupMagic) return RingCheck::kBadMagic;
  if (group->version != kRingVersion) return RingCheck::kBadVersion;
  const uint32_t channels = group->channels, capacity = group->capacity;
  if (!group_channels_valid(channels)) return RingCheck::kBadChannels;
  if (!ring_capacity_valid(capacity)) return RingCheck::kBadCapacity;
  if (size != group_bytes(channels, capacity)) return RingCheck::kSizeMismatch;
  for (uint32_t c = 0; c < channels; ++c) {
    const void* ring = static_cast<const uint8_t*>(mem) + group_ring_offset(c, capacity);
    const RingCheck check = ring_check(ring, ring_bytes(capacity));
    if (check != RingCheck::kOk) return check;
    if (ring_header(ring)->capacity != capacity || ring_header(ring)->channel != c) return RingCheck::kBadChannels;
  }
  return RingCheck::kOk;
}

// ---------------------------------------------------------------------------
// The consumer's doorbell scan (ring.h, "RingGroupHeader").
//
// Calls fn(channel) for every ring of the group whose doorbell is set,
// clearing the doorbell first; returns how many. Reads the doorbell as
// 64-bit words (8 rings a load), so idle rings cost one load per eight and
// their own memory is never touched.
template <typename F>
size_t take_doorbells(RingGroupHeader* group, uint32_t channels, F&& fn) {
  size_t rung = 0;
  for (uint32_t base = 0; base < channels; base += 8) {
    uint64_t word;
    // relaxed: only a hint that some byte is set; the exchange below is
    // what synchronises with the producer. (A byte array read as words:
    // the GCC atomic builtins allow it; the array is 8-aligned.)
    // Through an integer: clang takes the alignment of an atomic's operand
    // from the byte array it was cast from (1) and calls __atomic_load_8,
    // which libatomic-less links (the fuzz build) do not have.
    const auto* words = reinterpret_cast<const uint64_t*>(reinterpret_cast<uintptr_t>(&group->doorbell[base]));
    word = __atomic_load_n(words, __ATOMIC_RELAXED);
    if (word == 0) continue;
    for (uint32_t i = 0; i < 8 && base + i < channels; ++i) {
      if (((word >> (8 * i)) & 0xFF) == 0) continue;
      // acq_rel: the acquire pairs with a host producer's release store of
      // the doorbell (ring_ring_doorbell), so the slots it published are
      // visible to the reads that follow (a device producer's relaxed
      // doorbell promises no such thing: kCapEarlyDoorbell); an exchange
      // reads the latest store, so a doorbell rung after it stays set for
      // the next scan.
      __atomic_exchange_n(&group->doorbell[base + i], uint8_t{0}, __ATOMIC_ACQ_REL);
      fn(base + i);
      ++rung;
    }
  }
  return rung;
}

// ---------------------------------------------------------------------------
// Host producer.
//
// Claims tickets from header->claim with compare-exchange rather than
// fetch_add: it claims a ticket only after seeing that its slot is free, so
// try_post() can refuse a full ring without owning a ticket it would then
// have to publish (a fetch_add ticket can never be given back). Once claimed,
// the slot is free and publishing never waits.
//
// Not thread-safe: give each thread its own RingProducer (it is four words
// of state); any number of them, in any processes, may share one ring.
class RingProducer {
 public:
  // `mem` passed ring_check() and was initialised for kHost producers;
  // `doorbell`: the ring's byte in its group's doorbell (nullptr: rings no
  // doorbell, for consumers that poll the ring itself, as tests do).
  explicit RingProducer(void* mem, uint8_t* doorbell = nullptr)
      : header_(ring_header(mem)),
        doorbell_(doorbell),
        slots_(ring_slots(header_)),
        capacity_(header_->capacity),
        // acquire: pairs with the consumer's release of head (a late-joining
        // producer starts with an up-to-date view; ring_slot_free re-reads anyway).
        cached_head_(ring_load_acquire(&header_->head)) {
    assert(header_->producer_kind == static_cast<uint32_t>(RingProducerKind::kHost));
  }

  // Posts `desc` (its seq is ignored) if the ring has a free slot; returns
  // false, having changed nothing, when it is full. Never blocks. On
  // success *ticket (when given) is the descriptor's position (what a
  // flusher waits for: completed() > ticket).
  bool try_post(const RingSlot& desc, uint64_t* ticket_out = nullptr) {
    // relaxed: only a first guess at the next ticket; the compare-exchange
    // below checks it and hands back the current value when it is stale.
    uint64_t ticket = ring_load_relaxed(&header_->claim);
    for (;;) {
      if (!ring_slot_free(header_, capacity_, ticket, &cached_head_)) return false;
      // relaxed: the claim only hands out ownership of `ticket`; ordering
      // with the consumer comes from head (acquired in ring_slot_free) and seq
      // (released in ring_publish).
      if (ring_compare_exchange_relaxed(&header_->claim, &ticket, ticket + 1)) break;
    }
    ring_publish(slots_, capacity_, ticket, desc);
    if (doorbell_ != nullptr) ring_ring_doorbell(doorbell_);
    if (ticket_out != nullptr) *ticket_out = ticket;
    return true;
  }

  // Posts `desc`, waiting up to `timeout` for a free slot (spinning briefly,
  // then yielding the CPU). Returns false on timeout, with nothing posted.
  bool post(const RingSlot& desc, std::chrono::nanoseconds timeout, uint64_t* ticket_out = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int spins = 0;; ++spins) {
      if (try_post(desc, ticket_out)) return true;
      if (spins < kSpinsBeforeYield) {
        ring_pause();
        continue;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::yield();
    }
  }

  // The ring's error word (0 = none; decode with error_code/error_position).
  uint64_t error() const {
    // acquire: pairs with the consumer's release compare-exchange in
    // ring_report_error (so error_count >= 1 is visible too).
    return ring_load_acquire(&header_->error);
  }

  // The completion watermark: every ticket below it has completed.
  uint64_t completed() const {
    // acquire: pairs with the consumer's release in ring_publish_completed().
    return ring_load_acquire(&header_->completed);
  }

  uint32_t capacity() const { return capacity_; }

 private:
  static constexpr int kSpinsBeforeYield = 64;

  RingHeader* header_;
  uint8_t* doorbell_;
  RingSlot* slots_;
  uint32_t capacity_;     // read once; see ring.h "Trust"
  uint64_t cached_head_;  // last head this producer saw; only grows
};

// ---------------------------------------------------------------------------
// The consumer. Exactly one per ring (it alone writes head); report_error()
// may also be called from other threads.
class RingConsumer {
 public:
  // `mem` passed ring_check(). capacity is read here once and never again, so
  // a client that rewrites its header later cannot make the daemon index
  // outside the region it validated.
  explicit RingConsumer(void* mem)
      : header_(ring_header(mem)),
        slots_(ring_slots(header_)),
        capacity_(header_->capacity),
        publish_every_(header_->capacity / 2),
        // relaxed: only the consumer writes head; this reads back the value a
        // previous consumer of this ring left (0 for a fresh ring), and the
        // handover of the region itself ordered that write before us.
        head_(ring_load_relaxed(&header_->head)),
        published_(head_) {}

  // Calls fn(const RingSlot&) for up to `max_batch` published descriptors,
  // in ring order, on a private copy of each slot; returns how many. Never
  // waits for a producer. Head is published every capacity / 2 slots and
  // before returning, so producers waiting on a full ring get room during a
  // long batch. Inside fn, position() is the ticket of the descriptor passed.
  template <typename F>
  size_t poll(F&& fn, size_t max_batch) {
    size_t n = 0;
    RingSlot desc;
    while (n < max_batch && ring_read_slot(slots_, capacity_, head_, &desc)) {
      fn(static_cast<const RingSlot&>(desc));
      ++head_;
      ++n;
      if (head_ - published_ >= publish_every_) publish();
    }
    if (head_ != published_) publish();
    return n;
  }

  // Records an error for the descriptor at `position`: counts it, and makes
  // it THE error word if none was set yet. Returns true if it was the first.
  bool report_error(RingError code, uint64_t position) { return ring_report_error(header_, code, position); }

  // The error word as it is now (0 = none).
  uint64_t error() const {
    // acquire: pairs with the release compare-exchange in ring_report_error().
    return ring_load_acquire(&header_->error);
  }
  uint64_t error_count() const {
    // relaxed: a statistic.
    return ring_load_relaxed(&header_->error_count);
  }

  // Ticket of the next descriptor to consume (= descriptors consumed so far).
  uint64_t position() const { return head_; }
  uint32_t capacity() const { return capacity_; }

 private:
  void publish() {
    ring_publish_head(header_, head_);
    published_ = head_;
  }

  RingHeader* header_;
  const RingSlot* slots_;
  uint32_t capacity_;
  uint32_t publish_every_;
  uint64_t head_;       // next position to read (private; the truth)
  uint64_t published_;  // last value stored to header->head
};

}  // namespace epx::ring
