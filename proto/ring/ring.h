// EPX descriptor ring, ABI version 1: the contract between GPU kernels and
// client SDK code (producers) and the epxd proxy thread (the consumer).
//
// A producer posts a 32-byte descriptor ("write these bytes to that rank",
// "add to that signal", ...) into a ring in shared memory; the daemon's proxy
// thread reads descriptors in ring order and turns them into libfabric RDMA
// writes over EFA. This header is included unchanged by g++ (host C++17) and
// by nvcc (device code for sm_90), so the shared structs hold only plain
// integers (no std::atomic, no pointers, no padding the compilers could
// disagree on), and every shared access goes through the ring_* atomic
// helpers below, which are __host__ __device__.
//
// ---------------------------------------------------------------------------
// Memory layout of one ring (one shared-memory region, 64-byte aligned; mmap
// gives page alignment):
//
//   offset 0     RingHeader, exactly one 4096-byte page
//   offset 4096  RingSlot[capacity], 32 bytes each
//
//   total = ring_bytes(capacity) = 4096 + 32 * capacity
//   capacity: a power of two in [2, 2^24] (2^24 slots = 512 MiB is far more
//   than any ring needs, and it keeps seq values unambiguous, see below).
//
// RingHeader: each group of fields that changes at run time has its own
// 64-byte cache line so producers and the consumer do not false-share:
//   line 0 (  0) magic, version, slot_size, capacity, producer_kind:
//                written once by ring_init(), read-only afterwards.
//   line 1 ( 64) claim: next ticket; host producers only (see "Producer
//                kinds").
//   line 2 (128) head: slots the consumer has finished reading (= total
//                consumed, so it doubles as the consumed counter).
//   line 3 (192) error, error_count: written by the consumer, read by anyone.
//   line 4 (256) fences_done: kFlush descriptors the consumer has completed.
//   rest         reserved, zero in v1.
//
// RingSlot (32 bytes, two per cache line):
//   0  u32 seq       (uint32_t)(ticket + 1) once the slot holds ticket's
//                    descriptor; stored LAST, with release.
//   4  u8  op        RingOp
//   5  u8  flags     none defined in v1: must be 0
//   6  u16 dst_rank  destination rank in the job
//   8  u32 length    bytes to write
//   12 u32 signal    index:20 (high) | increment:12 (low) = the 32-bit RDMA
//                    immediate that EFA carries; see encode_signal()
//   16 u64 src       window:16 (high) | offset:48 (low), a local window
//   24 u64 dst       window:16 (high) | offset:48 (low), a window of dst_rank
// A "window" is a memory region registered with the daemon (its index in the
// job's window table); offsets are bytes from its start. The daemon checks
// both against the registration, never trusting the descriptor.
//
// ---------------------------------------------------------------------------
// Ops (RingOp) and which fields they use. Unused fields must be 0
// (ring_check_slot() enforces this), so later versions can give them meaning.
//
//   kWrite=1       Copy `length` bytes from src (local) to dst on dst_rank.
//                  signal = 0. length 0 is a no-op (kernels may emit empty
//                  writes for experts that got no tokens).
//   kWriteSignal=2 kWrite, then add the signal's increment to signal `index`
//                  on dst_rank. The receiver sees the signal only after this
//                  descriptor's data is in place (RDMA write with immediate:
//                  the completion comes after the data). increment >= 1.
//   kSignal=3      Only the signal (a zero-byte write with immediate).
//                  length = src = dst = 0, increment >= 1.
//   kFlush=4       Fence: every descriptor of this ring before the flush has
//                  completed at its destination (data placed, signals applied)
//                  before the consumer starts any descriptor after it. All
//                  other fields 0. EFA's SRD transport does not order writes,
//                  so without a flush a kSignal may overtake an earlier
//                  kWrite; kWriteSignal only orders its own data.
//                  When the fence has completed, the consumer increments
//                  header.fences_done (release). Fences complete in ring
//                  order, so a producer that knows its flush is the ring's
//                  n-th waits for fences_done >= n (acquire) and may then
//                  reuse the source buffers of everything posted before it.
//   kBarrier=5     Reserved for a job-wide barrier; fields not defined yet. A
//                  v1 consumer that does not implement it reports
//                  kUnsupportedOp.
// Descriptors are started in ring order; apart from kFlush and the data of a
// kWriteSignal before its own signal, their completions are unordered.
//
// ---------------------------------------------------------------------------
// Memory-ordering protocol. Positions ("tickets") are 64-bit counters that
// never wrap; ticket t lives in slot t & (capacity - 1).
//
// Producer (any number, concurrently):
//   1. Claim a ticket t with an atomic RMW on the claim counter (fetch_add on
//      the GPU; compare-exchange in the host RingProducer, see "Producer
//      kinds"). Relaxed is enough: the ticket only gives exclusive ownership
//      of a position, it publishes no data. RMWs on one counter are totally
//      ordered, so each ticket goes to exactly one producer, and one thread's
//      tickets increase in its program order.
//   2. Flow control: slot t is free once the consumer has read ticket
//      t - capacity, i.e. when t - head < capacity. The producer keeps a
//      cached copy of head and re-reads head (ACQUIRE) only when the ring looks
//      full. The acquire pairs with the consumer's release of head, so the
//      consumer's reads of the slot's previous contents happen before the
//      producer overwrites it (no write-after-read race).
//   3. Write op..dst with plain stores, then store seq = (uint32_t)(t + 1)
//      with RELEASE (ring_publish()), which orders the field stores before it.
//   A producer that claimed a ticket MUST publish it (never abandon it): the
//   consumer reads strictly in order and would wait for it forever. So a
//   producer must not claim a ticket it cannot publish. With that rule the
//   ring cannot deadlock: the tickets the consumer waits for (below
//   head + capacity) have free slots, so their owners, which are running
//   threads (a thread claims only while running), publish without waiting.
//
// Consumer (exactly one thread per ring; it owns `head`):
//   1. At position h, load seq of slot h & mask with ACQUIRE (pairs with the
//      producer's release of seq). Not (uint32_t)(h + 1) yet: nothing to do.
//   2. Equal: the fields are complete and visible; copy them out (the copy is
//      what gets validated and used, so a producer scribbling on the slot
//      later cannot change a descriptor between check and use), then h += 1.
//   3. Publish head = h with RELEASE (pairs with the producers' acquire of
//      head) after it has finished reading every slot below h. Publishing may
//      be batched (RingConsumer does it at the end of each poll and every
//      capacity / 2 slots); producers then just see a fuller ring for longer.
//
// Why seq is unambiguous: when the consumer is at h, slot h & mask holds
// either ticket h - capacity's seq (already read) or ticket h's: ticket
// h + capacity cannot be written before head > h. So the consumer
// must tell (uint32_t)(h - capacity + 1) from (uint32_t)(h + 1), which differ
// because capacity <= 2^24 < 2^32. A fresh ring has seq = 0 everywhere, and
// (uint32_t)(h + 1) is never 0 while h < capacity.
//
// Errors: the consumer validates every descriptor; on the first bad one (or a
// transport failure) it sets `error` = pack_error(code, position) with a
// compare-exchange from 0 (so the FIRST error wins, even with several
// reporting threads) and release, after incrementing error_count. A reader
// that acquires a non-zero error word therefore sees error_count >= 1.
// Producers may poll the error word (acquire) to stop early. What the
// consumer does after an error (skip the descriptor, stop the ring) is the
// daemon's policy, not part of the ABI.
//
// Producer kinds: a ring is created for ONE kind of producer, recorded in
// producer_kind, and must not mix them:
//   kHost:   CPU threads of the client process; they claim tickets from the
//            header's `claim` counter (RingProducer in ring_host.h claims with
//            compare-exchange so that a full ring can be refused without
//            owning a ticket).
//   kDevice: GPU threads; they claim with ring_fetch_add() on a counter in
//            DEVICE memory (atomics across PCIe on host memory are slow or
//            unsupported), so the header's `claim` stays 0. The GPU reads head
//            and writes slots in host memory mapped into the device. Not part
//            of the ordering contract but of its latency: a GPU follows the
//            release of seq with a system fence (epx/device.cuh), since a
//            store to host memory may otherwise wait in the GPU for
//            microseconds before it crosses PCIe.
// The consumer does not care which kind produced a descriptor.
//
// Trust: the region is writable by the client, so the daemon validates it
// once with ring_check() and then keeps its own copies of capacity and head
// (read once when it attaches); afterwards it reads only slots (through seq)
// and the error word, and checks every descriptor it copied out. A client can
// only stall or corrupt its own ring.
#pragma once

#include <stddef.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define EPX_RING_HOST_DEVICE __host__ __device__
#else
#define EPX_RING_HOST_DEVICE
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
#error "proto/ring/ring.h needs sm_70 or later (PTX acquire/release)"
#endif

namespace epx::ring {

// ---------------------------------------------------------------------------
// Constants of the ABI.

// "EPXRING1" as bytes in memory (little-endian load of the 8 ASCII bytes).
inline constexpr uint64_t kRingMagic = 0x31474E4952585045ull;
inline constexpr uint32_t kRingVersion = 1;
inline constexpr uint32_t kRingHeaderBytes = 4096;
inline constexpr uint32_t kRingSlotBytes = 32;
inline constexpr uint32_t kRingMinCapacity = 2;
inline constexpr uint32_t kRingMaxCapacity = 1u << 24;
// Alignment the region's start must have (cache line; also >= 8 for atomics).
inline constexpr uint32_t kRingAlignment = 64;

enum class RingProducerKind : uint32_t {
  kHost = 1,
  kDevice = 2,
};

enum class RingOp : uint8_t {
  kWrite = 1,
  kWriteSignal = 2,
  kSignal = 3,
  kFlush = 4,
  kBarrier = 5,
};

// Error codes of the error word (16 bits; 0 = no error).
enum class RingError : uint16_t {
  kNone = 0,
  kBadOp = 1,           // op is not a RingOp
  kUnsupportedOp = 2,   // a RingOp this consumer does not implement (kBarrier in v1)
  kBadFlags = 3,        // flags != 0 (no flags are defined in v1)
  kBadFields = 4,       // a field the op does not use is non-zero, or increment is 0
  kBadRank = 5,         // dst_rank is not in the job            (daemon's check)
  kBadWindow = 6,       // src or dst window is not registered   (daemon's check)
  kOutOfBounds = 7,     // offset + length beyond the window     (daemon's check)
  kBadSignal = 8,       // signal index beyond the receiver's signal array (daemon's check)
  kTransport = 9,       // the RDMA operation failed
};

// ---------------------------------------------------------------------------
// The shared structs. Plain integers only; layout pinned by static_asserts.

struct RingSlot {
  uint32_t seq;        // (uint32_t)(ticket + 1) when published; written last (release)
  uint8_t op;          // RingOp
  uint8_t flags;       // 0 in v1
  uint16_t dst_rank;   // destination rank
  uint32_t length;     // bytes
  uint32_t signal;     // encode_signal(index, increment)
  uint64_t src;        // pack_address(window, offset), local
  uint64_t dst;        // pack_address(window, offset), on dst_rank
};

struct RingHeader {
  // Line 0: identity, written once by ring_init (magic last, with release).
  uint64_t magic;           // kRingMagic
  uint32_t version;         // kRingVersion
  uint32_t slot_size;       // kRingSlotBytes
  uint32_t capacity;        // slots; power of two in [kRingMinCapacity, kRingMaxCapacity]
  uint32_t producer_kind;   // RingProducerKind
  uint8_t reserved0[40];
  // Line 1: host producers' ticket counter (unused, 0, for kDevice rings).
  uint64_t claim;
  uint8_t reserved1[56];
  // Line 2: consumer progress: every slot below head has been read.
  uint64_t head;
  uint8_t reserved2[56];
  // Line 3: first error (pack_error; 0 = none) and how many were reported.
  uint64_t error;
  uint64_t error_count;
  uint8_t reserved3[48];
  // Line 4: fences (kFlush) the consumer completed: every write posted
  // before the n-th fence had completed at its destination when this
  // reached n. Producers wait on it to reuse source buffers.
  uint64_t fences_done;
  uint8_t reserved4[56];
  // Rest of the page: reserved for later versions, zero in v1.
  uint8_t reserved5[kRingHeaderBytes - 5 * 64];
};

static_assert(sizeof(RingSlot) == kRingSlotBytes, "RingSlot is 32 bytes");
static_assert(offsetof(RingSlot, seq) == 0, "RingSlot layout");
static_assert(offsetof(RingSlot, op) == 4, "RingSlot layout");
static_assert(offsetof(RingSlot, flags) == 5, "RingSlot layout");
static_assert(offsetof(RingSlot, dst_rank) == 6, "RingSlot layout");
static_assert(offsetof(RingSlot, length) == 8, "RingSlot layout");
static_assert(offsetof(RingSlot, signal) == 12, "RingSlot layout");
static_assert(offsetof(RingSlot, src) == 16, "RingSlot layout");
static_assert(offsetof(RingSlot, dst) == 24, "RingSlot layout");

static_assert(sizeof(RingHeader) == kRingHeaderBytes, "RingHeader is one 4096-byte page");
static_assert(offsetof(RingHeader, magic) == 0, "RingHeader layout");
static_assert(offsetof(RingHeader, version) == 8, "RingHeader layout");
static_assert(offsetof(RingHeader, slot_size) == 12, "RingHeader layout");
static_assert(offsetof(RingHeader, capacity) == 16, "RingHeader layout");
static_assert(offsetof(RingHeader, producer_kind) == 20, "RingHeader layout");
static_assert(offsetof(RingHeader, claim) == 64, "claim has its own cache line");
static_assert(offsetof(RingHeader, head) == 128, "head has its own cache line");
static_assert(offsetof(RingHeader, error) == 192, "error has its own cache line");
static_assert(offsetof(RingHeader, error_count) == 200, "RingHeader layout");
static_assert(offsetof(RingHeader, fences_done) == 256, "fences_done has its own cache line");

// ---------------------------------------------------------------------------
// Field encodings.

// Signal = the 32-bit RDMA immediate: index in the high 20 bits, increment in
// the low 12. encode_signal() truncates; check signal_fits() first.
inline constexpr uint32_t kSignalIncrementBits = 12;
inline constexpr uint32_t kMaxSignalIndex = (1u << 20) - 1;
inline constexpr uint32_t kMaxSignalIncrement = (1u << kSignalIncrementBits) - 1;

EPX_RING_HOST_DEVICE constexpr bool signal_fits(uint32_t index, uint32_t increment) {
  return index <= kMaxSignalIndex && increment <= kMaxSignalIncrement;
}
EPX_RING_HOST_DEVICE constexpr uint32_t encode_signal(uint32_t index, uint32_t increment) {
  return ((index & kMaxSignalIndex) << kSignalIncrementBits) | (increment & kMaxSignalIncrement);
}
EPX_RING_HOST_DEVICE constexpr uint32_t signal_index(uint32_t signal) { return signal >> kSignalIncrementBits; }
EPX_RING_HOST_DEVICE constexpr uint32_t signal_increment(uint32_t signal) { return signal & kMaxSignalIncrement; }

// Address = window in the high 16 bits, byte offset in the low 48 (the
// window index is 16 bits by type, so only the offset can be out of range).
inline constexpr uint32_t kAddressOffsetBits = 48;
inline constexpr uint32_t kMaxWindow = 0xFFFF;
inline constexpr uint64_t kMaxOffset = (uint64_t{1} << kAddressOffsetBits) - 1;

EPX_RING_HOST_DEVICE constexpr bool offset_fits(uint64_t offset) { return offset <= kMaxOffset; }
EPX_RING_HOST_DEVICE constexpr uint64_t pack_address(uint16_t window, uint64_t offset) {
  return (uint64_t{window} << kAddressOffsetBits) | (offset & kMaxOffset);
}
EPX_RING_HOST_DEVICE constexpr uint16_t address_window(uint64_t address) {
  return static_cast<uint16_t>(address >> kAddressOffsetBits);
}
EPX_RING_HOST_DEVICE constexpr uint64_t address_offset(uint64_t address) { return address & kMaxOffset; }

// Error word = code in the high 16 bits, the ring position (ticket) of the
// offending descriptor in the low 48 (truncated; 2^48 descriptors is years).
inline constexpr uint32_t kErrorPositionBits = 48;
inline constexpr uint64_t kMaxErrorPosition = (uint64_t{1} << kErrorPositionBits) - 1;

EPX_RING_HOST_DEVICE constexpr uint64_t pack_error(RingError code, uint64_t position) {
  return (uint64_t{static_cast<uint16_t>(code)} << kErrorPositionBits) | (position & kMaxErrorPosition);
}
EPX_RING_HOST_DEVICE constexpr RingError error_code(uint64_t error) {
  return static_cast<RingError>(error >> kErrorPositionBits);
}
EPX_RING_HOST_DEVICE constexpr uint64_t error_position(uint64_t error) { return error & kMaxErrorPosition; }

// ---------------------------------------------------------------------------
// Geometry.

EPX_RING_HOST_DEVICE constexpr bool ring_capacity_valid(uint64_t capacity) {
  return capacity >= kRingMinCapacity && capacity <= kRingMaxCapacity && (capacity & (capacity - 1)) == 0;
}
// Bytes of a ring region with `capacity` slots (capacity must be valid).
EPX_RING_HOST_DEVICE constexpr uint64_t ring_bytes(uint32_t capacity) {
  return uint64_t{kRingHeaderBytes} + uint64_t{kRingSlotBytes} * capacity;
}
EPX_RING_HOST_DEVICE inline RingHeader* ring_header(void* mem) { return static_cast<RingHeader*>(mem); }
EPX_RING_HOST_DEVICE inline const RingHeader* ring_header(const void* mem) {
  return static_cast<const RingHeader*>(mem);
}
// The slots start right after the header page.
EPX_RING_HOST_DEVICE inline RingSlot* ring_slots(RingHeader* header) {
  return reinterpret_cast<RingSlot*>(header + 1);
}
EPX_RING_HOST_DEVICE inline const RingSlot* ring_slots(const RingHeader* header) {
  return reinterpret_cast<const RingSlot*>(header + 1);
}
// The seq value that marks ticket `position` as published.
EPX_RING_HOST_DEVICE constexpr uint32_t ring_seq_for(uint64_t position) {
  return static_cast<uint32_t>(position + 1);
}
// Is the slot of `ticket` free, given that the consumer has read everything
// below `head`? Signed difference: a producer's guess at a ticket may be
// older than a head it read later (head > ticket); that reads as "free" and
// the claim that follows fails and retries, instead of a false "full".
EPX_RING_HOST_DEVICE constexpr bool ring_has_space(uint64_t ticket, uint64_t head, uint32_t capacity) {
  return static_cast<int64_t>(ticket - head) < static_cast<int64_t>(capacity);
}

// ---------------------------------------------------------------------------
// Atomic helpers: the only way shared words are read or written while the
// ring is live. Host: GCC __atomic builtins (lock-free for 4 and 8 bytes, so
// they also work across processes on shared memory). Device: PTX with .sys
// scope, because the other side is a CPU thread (head, seq, error live in host
// memory mapped into the GPU). Generic addressing (no .global) so the same
// helper works on any pointer a kernel gets (cudaHostGetDevicePointer, UVA,
// cudaMalloc). Every asm has a "memory" clobber so the compiler neither
// caches nor moves plain accesses across it.

EPX_RING_HOST_DEVICE inline uint32_t ring_load_acquire(const volatile uint32_t* p) {
#if defined(__CUDA_ARCH__)
  uint32_t v;
  asm volatile("ld.acquire.sys.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
#else
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}

EPX_RING_HOST_DEVICE inline uint64_t ring_load_acquire(const volatile uint64_t* p) {
#if defined(__CUDA_ARCH__)
  uint64_t v;
  asm volatile("ld.acquire.sys.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
#else
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}

EPX_RING_HOST_DEVICE inline uint64_t ring_load_relaxed(const volatile uint64_t* p) {
#if defined(__CUDA_ARCH__)
  uint64_t v;
  asm volatile("ld.relaxed.sys.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
#else
  return __atomic_load_n(p, __ATOMIC_RELAXED);
#endif
}

EPX_RING_HOST_DEVICE inline void ring_store_release(volatile uint32_t* p, uint32_t v) {
#if defined(__CUDA_ARCH__)
  asm volatile("st.release.sys.u32 [%0], %1;" : : "l"(p), "r"(v) : "memory");
#else
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
#endif
}

EPX_RING_HOST_DEVICE inline void ring_store_release(volatile uint64_t* p, uint64_t v) {
#if defined(__CUDA_ARCH__)
  asm volatile("st.release.sys.u64 [%0], %1;" : : "l"(p), "l"(v) : "memory");
#else
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
#endif
}

// Relaxed fetch-and-add; returns the old value. Used for ticket claims and
// counters, which publish no data by themselves.
EPX_RING_HOST_DEVICE inline uint64_t ring_fetch_add(volatile uint64_t* p, uint64_t v) {
#if defined(__CUDA_ARCH__)
  uint64_t old;
  asm volatile("atom.relaxed.sys.add.u64 %0, [%1], %2;" : "=l"(old) : "l"(p), "l"(v) : "memory");
  return old;
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

// Compare-exchange: if *p == *expected, store desired and return true;
// otherwise load the current value into *expected and return false.
// _relaxed: for ticket claims (ownership only). _release: the store is a
// release on success (for the error word); the failure load is relaxed.
EPX_RING_HOST_DEVICE inline bool ring_compare_exchange_relaxed(volatile uint64_t* p, uint64_t* expected,
                                                               uint64_t desired) {
#if defined(__CUDA_ARCH__)
  uint64_t old;
  asm volatile("atom.relaxed.sys.cas.b64 %0, [%1], %2, %3;"
               : "=l"(old)
               : "l"(p), "l"(*expected), "l"(desired)
               : "memory");
  const bool ok = old == *expected;
  *expected = old;
  return ok;
#else
  return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
#endif
}

EPX_RING_HOST_DEVICE inline bool ring_compare_exchange_release(volatile uint64_t* p, uint64_t* expected,
                                                               uint64_t desired) {
#if defined(__CUDA_ARCH__)
  uint64_t old;
  asm volatile("atom.release.sys.cas.b64 %0, [%1], %2, %3;"
               : "=l"(old)
               : "l"(p), "l"(*expected), "l"(desired)
               : "memory");
  const bool ok = old == *expected;
  *expected = old;
  return ok;
#else
  return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
#endif
}

// A short pause for spin loops (no memory effect).
EPX_RING_HOST_DEVICE inline void ring_pause() {
#if defined(__CUDA_ARCH__)
  asm volatile("nanosleep.u32 64;");
#elif defined(__x86_64__) || defined(__i386__)
  asm volatile("pause");
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// ---------------------------------------------------------------------------
// Producer and consumer building blocks, shared by host and device code.

// Flow control for a producer that owns `ticket` (or, for a compare-exchange
// claim, is about to try it): true when its slot is free. Re-reads head only
// when *cached_head says the ring is full, so a producer touches the
// consumer's cache line once per lap rather than once per descriptor.
EPX_RING_HOST_DEVICE inline bool ring_slot_free(const RingHeader* header, uint32_t capacity, uint64_t ticket,
                                                uint64_t* cached_head) {
  if (ring_has_space(ticket, *cached_head, capacity)) return true;
  // acquire: pairs with the consumer's release store of head in
  // ring_publish_head(): its reads of the slot's old contents happen before
  // the caller's writes to it.
  *cached_head = ring_load_acquire(&header->head);
  return ring_has_space(ticket, *cached_head, capacity);
}

// Writes `desc` (its seq is ignored) into ticket's slot and publishes it. The
// caller owns `ticket` and has seen ring_slot_free() return true for it.
EPX_RING_HOST_DEVICE inline void ring_publish(RingSlot* slots, uint32_t capacity, uint64_t ticket,
                                              const RingSlot& desc) {
  RingSlot* slot = &slots[ticket & (capacity - 1)];
  // Plain stores: nobody reads these until seq says so (below).
  slot->op = desc.op;
  slot->flags = desc.flags;
  slot->dst_rank = desc.dst_rank;
  slot->length = desc.length;
  slot->signal = desc.signal;
  slot->src = desc.src;
  slot->dst = desc.dst;
  // release: pairs with the consumer's acquire load of seq in ring_read_slot();
  // orders the field stores above before the slot becomes visible.
  ring_store_release(&slot->seq, ring_seq_for(ticket));
}

// Consumer: if the descriptor at `position` is published, copy it to *out and
// return true. The copy is what the consumer checks and uses.
EPX_RING_HOST_DEVICE inline bool ring_read_slot(const RingSlot* slots, uint32_t capacity, uint64_t position,
                                                RingSlot* out) {
  const RingSlot* slot = &slots[position & (capacity - 1)];
  // acquire: pairs with the producer's release store of seq in ring_publish();
  // makes the producer's field stores visible to the plain loads below.
  const uint32_t seq = ring_load_acquire(&slot->seq);
  if (seq != ring_seq_for(position)) return false;
  out->seq = seq;
  out->op = slot->op;
  out->flags = slot->flags;
  out->dst_rank = slot->dst_rank;
  out->length = slot->length;
  out->signal = slot->signal;
  out->src = slot->src;
  out->dst = slot->dst;
  return true;
}

// Consumer: tell producers that every slot below `head` has been read.
EPX_RING_HOST_DEVICE inline void ring_publish_head(RingHeader* header, uint64_t head) {
  // release: pairs with the producers' acquire load of head in
  // ring_slot_free(); the consumer's reads of those slots happen before any
  // producer reuses them.
  ring_store_release(&header->head, head);
}

// Consumer: records an error for the descriptor at `position`: counts it, and
// makes it THE error word if none was set yet. Returns true if it was first.
EPX_RING_HOST_DEVICE inline bool ring_report_error(RingHeader* header, RingError code, uint64_t position) {
  // relaxed: a statistic; the release below orders it before the error word.
  ring_fetch_add(&header->error_count, 1);
  uint64_t expected = 0;
  // release: pairs with the acquire loads of the error word by producers; a
  // reader that sees the word also sees error_count >= 1.
  return ring_compare_exchange_release(&header->error, &expected, pack_error(code, position));
}

// ---------------------------------------------------------------------------
// Descriptor checks and builders (the op table above, as code).

// The checks that need nothing but the descriptor: op, flags, unused fields.
// The daemon adds rank, window, bounds and signal-array checks.
EPX_RING_HOST_DEVICE constexpr RingError ring_check_slot(const RingSlot& d) {
  if (d.flags != 0) return RingError::kBadFlags;
  switch (static_cast<RingOp>(d.op)) {
    case RingOp::kWrite:
      return d.signal == 0 ? RingError::kNone : RingError::kBadFields;
    case RingOp::kWriteSignal:
      return signal_increment(d.signal) != 0 ? RingError::kNone : RingError::kBadFields;
    case RingOp::kSignal:
      return d.length == 0 && d.src == 0 && d.dst == 0 && signal_increment(d.signal) != 0 ? RingError::kNone
                                                                                          : RingError::kBadFields;
    case RingOp::kFlush:
      return d.dst_rank == 0 && d.length == 0 && d.signal == 0 && d.src == 0 && d.dst == 0
                 ? RingError::kNone
                 : RingError::kBadFields;
    case RingOp::kBarrier:
      return RingError::kUnsupportedOp;
  }
  return RingError::kBadOp;
}

EPX_RING_HOST_DEVICE constexpr RingSlot make_write(uint16_t dst_rank, uint64_t src, uint64_t dst, uint32_t length) {
  return RingSlot{0, static_cast<uint8_t>(RingOp::kWrite), 0, dst_rank, length, 0, src, dst};
}
EPX_RING_HOST_DEVICE constexpr RingSlot make_write_signal(uint16_t dst_rank, uint64_t src, uint64_t dst,
                                                          uint32_t length, uint32_t signal) {
  return RingSlot{0, static_cast<uint8_t>(RingOp::kWriteSignal), 0, dst_rank, length, signal, src, dst};
}
EPX_RING_HOST_DEVICE constexpr RingSlot make_signal(uint16_t dst_rank, uint32_t signal) {
  return RingSlot{0, static_cast<uint8_t>(RingOp::kSignal), 0, dst_rank, 0, signal, 0, 0};
}
EPX_RING_HOST_DEVICE constexpr RingSlot make_flush() {
  return RingSlot{0, static_cast<uint8_t>(RingOp::kFlush), 0, 0, 0, 0, 0, 0};
}

}  // namespace epx::ring
