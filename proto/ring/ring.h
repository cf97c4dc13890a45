// EPX descriptor ring, ABI version 2: the contract between GPU kernels and
// client SDK code (producers) and the epxd proxy thread (the consumer).
//
// A producer posts a 64-byte descriptor ("write these bytes to that rank",
// "write these N strided elements", "add to that signal", ...) into a ring
// in shared memory; the daemon's proxy thread reads descriptors in ring
// order and turns them into libfabric RDMA writes over EFA. This header is
// included unchanged by g++ (host C++17) and by nvcc (device code for
// sm_90), so the shared structs hold only plain integers (no std::atomic, no
// pointers, no padding the compilers could disagree on), and every shared
// access goes through the ring_* atomic helpers below (__host__ __device__).
//
// What changed from v1 (issue 10): device rings are single-producer (one
// ring per channel = block or warp: no shared claim atomic, and a post that
// times out abandons nothing); rings come in groups that share a doorbell,
// so the proxy visits only rings that have work; flush waits on a
// completion watermark (`completed`) instead of a count of fences; kSignal
// no longer stalls the ring, and can be scoped to one destination;
// kWriteStrided names several writes in one descriptor; slots are 64 bytes;
// the header carries a capabilities word that both sides check.
//
// ---------------------------------------------------------------------------
// Memory layout. The daemon creates one region (memfd) per OpenRing call: a
// ring GROUP of `channels` rings (1 for host rings, up to
// kMaxGroupChannels for a kernel's channels):
//
//   offset 0                      RingGroupHeader, one 4096-byte page
//   offset 4096 + i * ring_bytes  ring i (i < channels), each:
//       +0     RingHeader, one 4096-byte page
//       +4096  RingSlot[capacity], 64 bytes each
//
//   ring_bytes(capacity)  = 4096 + 64 * capacity
//   group_bytes(channels, capacity) = 4096 + channels * ring_bytes(capacity)
//   capacity: a power of two in [2, 2^24] (keeps seq unambiguous, below).
//
// RingGroupHeader: magic, version, channels, capacity (written once), and
// the doorbell: one byte per ring at offset 2048 (kGroupDoorbellOffset). A
// producer stores 1 there (release) after it published a slot; the proxy
// reads the doorbell as 64-bit words, and for each non-zero byte
// exchanges it back to 0 (acq_rel) and then drains that ring. So a pass
// over a group of 132 idle rings reads 17 words (3 cache lines) and touches
// no ring. Why no lost wake-up: the exchange reads the LATEST doorbell
// store; if the producer's store comes after it, the byte stays 1 for the
// next pass; if before, the exchange acquires it (pairs with the producer's
// release) and so sees the slot published before it.
//
// RingHeader: each group of fields that changes at run time has its own
// 64-byte cache line so producers and the consumer do not false-share:
//   line 0 (  0) magic, version, slot_size, capacity, producer_kind,
//                capabilities, channel: written once by the daemon
//                (ring_init), read-only afterwards.
//   line 1 ( 64) claim: next ticket; host producers only.
//   line 2 (128) head: slots the consumer has finished reading.
//   line 3 (192) error, error_count: written by the consumer, read by anyone.
//   line 4 (256) completed: the completion watermark, see kFlush.
//   rest         reserved, zero in v2.
//
// RingSlot (64 bytes, one cache line: a GPU writes a whole line):
//   0  u32 seq        (uint32_t)(ticket + 1) once the slot holds ticket's
//                     descriptor; stored LAST, with release.
//   4  u8  op         RingOp
//   5  u8  flags      kFlagScopeDestination (kSignal only); else 0
//   6  u16 dst_rank   destination rank in the job
//   8  u32 length     bytes to write (per element for kWriteStrided)
//   12 u32 signal     index:20 (high) | increment:12 (low) = the 32-bit RDMA
//                     immediate that EFA carries; see encode_signal()
//   16 u64 src        window:16 (high) | offset:48 (low), a local window
//   24 u64 dst        window:16 (high) | offset:48 (low), a window of dst_rank
//   32 u32 count      kWriteStrided: elements, 1..kMaxStridedCount; else 0
//   36 u32 reserved   0
//   40 u64 src_stride kWriteStrided: bytes between elements' sources; else 0
//   48 u64 dst_stride kWriteStrided: bytes between elements' destinations
//   56 u64 reserved   0
// A "window" is a memory region registered with the daemon (its index in the
// job's window table); offsets are bytes from its start. The daemon checks
// both against the registration, never trusting the descriptor.
//
// ---------------------------------------------------------------------------
// Ops (RingOp) and which fields they use. Unused fields must be 0
// (ring_check_slot() enforces this), so later versions can give them meaning.
//
//   kWrite=1        Copy `length` bytes from src (local) to dst on dst_rank.
//                   signal = 0. length 0 is a no-op (kernels may emit empty
//                   writes for experts that got no tokens).
//   kWriteSignal=2  kWrite, then add the signal's increment to signal `index`
//                   on dst_rank. The receiver sees the signal only after this
//                   descriptor's data is in place (RDMA write with immediate:
//                   the completion comes after the data). increment >= 1.
//   kSignal=3       Only the signal (a zero-byte write with immediate),
//                   sent once the writes it is scoped to have completed at
//                   their destinations:
//                     flags 0:                   every earlier descriptor of
//                                                this ring (any destination);
//                     flags kFlagScopeDestination: every earlier write of
//                                                this ring to dst_rank.
//                   The consumer does NOT stop at a kSignal: it holds the
//                   signal back (at most kMaxHeldSignals per ring; more
//                   stall the ring) and goes on with later descriptors, so
//                   a signal to one rank waits for no other rank's writes
//                   (scoped) and later writes are not delayed.
//                   length = src = dst = 0, increment >= 1.
//   kFlush=4        A marker. Every descriptor completes at some point (a
//                   write once its data is placed at the destination, a
//                   signal once delivered, a rejected descriptor at once, a
//                   flush as soon as the consumer read it); the consumer
//                   publishes header.completed = X (release) where every
//                   ticket below X has completed. A producer that posted a
//                   kFlush at ticket t waits for completed > t (acquire):
//                   everything it posted before t completed, its source
//                   buffers may be reused. Each flusher waits for its own
//                   ticket, so two flushers never confuse each other. The
//                   flush itself makes the consumer send any write it was
//                   still assembling. All other fields 0.
//   kBarrier=5      Reserved for a job-wide barrier; a v2 consumer reports
//                   kUnsupportedOp.
//   kWriteStrided=6 `count` writes of `length` bytes: element i goes from
//                   src + i * src_stride to dst + i * dst_stride (both
//                   offsets in their windows; strides may be 0 or smaller
//                   than length). The daemon checks the first and last
//                   element of both sides against the windows, overflow-safe,
//                   and refuses the whole descriptor (nothing written) if
//                   either is out. It posts them as few fabric writes as the
//                   provider allows (one fi_writemsg with an iov per up to
//                   rma_iov_limit elements; one plain write when both
//                   strides equal length). signal 0, or a signal applied
//                   once after EVERY element is in place. count >= 1,
//                   length >= 1.
// Descriptors are started in ring order; their completions are unordered
// (EFA's SRD does not order writes), apart from what kWriteSignal, kSignal
// and kWriteStrided's signal promise above.
//
// ---------------------------------------------------------------------------
// Memory-ordering protocol. Positions ("tickets") are 64-bit counters that
// never wrap; ticket t lives in slot t & (capacity - 1).
//
// Producer:
//   1. Take a ticket t.
//      kDevice rings are SINGLE-PRODUCER (capability kCapSingleProducer):
//      one channel (a thread, or a warp posting together) owns the ring and
//      keeps its next ticket (the tail) in its own device memory, with no
//      atomic. Nobody else can hold a ticket of the ring, so a post that
//      gives up (ring full until its timeout) simply does not advance the
//      tail: nothing is abandoned and the ring stays usable. (The SDK's
//      CudaRing lets several GPU threads share one ring by taking a lock
//      word in device memory around each post: still one producer at a
//      time, as far as the ring can tell.)
//      kHost rings may have several producers (threads of one process):
//      RingProducer claims t by compare-exchange on header.claim only after
//      seeing t's slot free, so it never owns a ticket it cannot publish.
//   2. Flow control: slot t is free once the consumer has read ticket
//      t - capacity, i.e. when t - head < capacity. The producer keeps a
//      cached copy of head and re-reads head (ACQUIRE) only when the ring
//      looks full. The acquire pairs with the consumer's release of head, so
//      the consumer's reads of the slot's previous contents happen before
//      the producer overwrites it (no write-after-read race).
//   3. Write op..reserved with plain stores, then store seq = (uint32_t)(t+1)
//      with RELEASE (ring_publish()), which orders the field stores before
//      it; a device producer issues a system fence and then stores seq
//      relaxed (ring_publish_seq: together a release).
//      A warp that posts n slots together fills them from n lanes,
//      synchronises (__syncwarp), and its leader issues ONE system fence and
//      then stores the n seq words.
//   4. Ring the doorbell: store 1 into the ring's doorbell byte.
//      Host producers store it with RELEASE (after the seq stores, so a
//      consumer that takes the doorbell sees the slots). Device producers
//      pay two system fences per post, not three: fields,
//      ring_fence_acq_rel(), seq and doorbell both relaxed
//      (ring_publish_seq, ring_ring_doorbell_relaxed), then
//      __threadfence_system(), without which a store to host memory can
//      linger in the GPU for microseconds. A release store of the doorbell
//      would cost a third fence; instead the doorbell may be seen before the
//      seq stores, and a consumer offering kCapEarlyDoorbell keeps visiting
//      a rung ring for kEarlyDoorbellGraceUs while it looks empty. (Stores
//      that leave the GPU at once, PTX st.mmio, would spare the last fence
//      but are slower still: gpu_bench (f).)
//
// Consumer (exactly one thread per ring; it owns `head` and `completed`):
//   1. At position h, load seq of slot h & mask with ACQUIRE (pairs with the
//      producer's release of seq). Not (uint32_t)(h + 1) yet: nothing to do.
//   2. Equal: the fields are complete and visible; copy them out (the copy is
//      what gets validated and used, so a producer scribbling on the slot
//      later cannot change a descriptor between check and use), then h += 1.
//   3. Publish head = h with RELEASE (pairs with the producers' acquire of
//      head) after it has finished reading every slot below h. Publishing
//      may be batched; producers then just see a fuller ring for longer.
//   4. Publish completed with RELEASE whenever the watermark moved (pairs
//      with the flushers' acquire).
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
// A rejected descriptor counts as completed (the watermark passes it), so
// a flusher ends and then sees the error word.
//
// Version and capabilities: the SDK asks for a ring of ABI kRingVersion
// with the capabilities it needs (OpenRingRequest); a daemon that does not
// speak that version or lacks a capability refuses the open
// (FAILED_PRECONDITION naming what is missing). The daemon writes version
// and capabilities into every RingHeader; the SDK checks them after mapping
// (ring_check, ring_capabilities_cover) before any producer touches it.
//
// Trust: the region is writable by the client, so the daemon validates it
// once and then keeps its own copies of capacity, head and completed;
// afterwards it reads only slots (through seq), the doorbell and the error
// word, and checks every descriptor it copied out. A client can only stall
// or corrupt its own rings (a forged doorbell only costs it proxy visits).
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

// "EPXRING2" / "EPXGRUP2" as bytes in memory (little-endian loads).
inline constexpr uint64_t kRingMagic = 0x32474E4952585045ull;
inline constexpr uint64_t kGroupMagic = 0x3250555247585045ull;
inline constexpr uint32_t kRingVersion = 2;
inline constexpr uint32_t kRingHeaderBytes = 4096;
inline constexpr uint32_t kGroupHeaderBytes = 4096;
inline constexpr uint32_t kRingSlotBytes = 64;
inline constexpr uint32_t kRingMinCapacity = 2;
inline constexpr uint32_t kRingMaxCapacity = 1u << 24;
// Alignment the region's start must have (cache line; also >= 8 for atomics).
inline constexpr uint32_t kRingAlignment = 64;
// Rings per group: the doorbell bytes fit the group header page.
inline constexpr uint32_t kGroupDoorbellOffset = 2048;
inline constexpr uint32_t kMaxGroupChannels = 2048;
// Elements of one kWriteStrided (the daemon may allow fewer).
inline constexpr uint32_t kMaxStridedCount = 1u << 16;
// Signals the consumer holds back per ring before it stops reading it.
inline constexpr uint32_t kMaxHeldSignals = 64;

// Capabilities (RingHeader::capabilities, OpenRingRequest::capabilities).
inline constexpr uint32_t kCapSingleProducer = 1u << 0;     // one producer owns the ring (kDevice rings)
inline constexpr uint32_t kCapStridedWrites = 1u << 1;      // kWriteStrided
inline constexpr uint32_t kCapScopedSignals = 1u << 2;      // kSignal held back, kFlagScopeDestination
inline constexpr uint32_t kCapCompletionWatermark = 1u << 3;  // header.completed; kFlush is a marker
inline constexpr uint32_t kCapDoorbell = 1u << 4;           // the group doorbell
inline constexpr uint32_t kCapEarlyDoorbell = 1u << 5;      // a doorbell may be seen before its slots (kDevice rings)
// What a v2 consumer offers every ring (kCapSingleProducer and
// kCapEarlyDoorbell are added for kDevice rings).
inline constexpr uint32_t kRingCapabilitiesV2 =
    kCapStridedWrites | kCapScopedSignals | kCapCompletionWatermark | kCapDoorbell;
// How long a consumer keeps visiting a ring after taking its doorbell while
// the ring shows nothing new (kCapEarlyDoorbell). A device producer's seq
// and doorbell stores leave the GPU at its fence right after them, so they
// land within a PCIe write or two of each other; the grace is generous
// beside that.
inline constexpr uint32_t kEarlyDoorbellGraceUs = 50;

// kSignal flags.
inline constexpr uint8_t kFlagScopeDestination = 1u << 0;

// What a kSignal waits for (the SDK's and device.cuh's name for the flag).
enum class SignalScope : uint8_t {
  kAfterEverything = 0,   // every earlier descriptor of the ring
  kAfterDestination = 1,  // every earlier write of the ring to the signal's rank (kFlagScopeDestination)
};

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
  kWriteStrided = 6,
};

// Error codes of the error word (16 bits; 0 = no error).
enum class RingError : uint16_t {
  kNone = 0,
  kBadOp = 1,           // op is not a RingOp
  kUnsupportedOp = 2,   // a RingOp this consumer does not implement (kBarrier in v2)
  kBadFlags = 3,        // a flag the op does not define
  kBadFields = 4,       // a field the op does not use is non-zero, or increment/count/length is 0
  kBadRank = 5,         // dst_rank is not in the job            (daemon's check)
  kBadWindow = 6,       // src or dst window is not registered   (daemon's check)
  kOutOfBounds = 7,     // an element beyond its window          (daemon's check)
  kBadSignal = 8,       // signal index beyond the receiver's signal array (daemon's check)
  kTransport = 9,       // the RDMA operation failed
};

// ---------------------------------------------------------------------------
// The shared structs. Plain integers only; layout pinned by static_asserts.

struct RingSlot {
  uint32_t seq;         // (uint32_t)(ticket + 1) when published; written last (release)
  uint8_t op;           // RingOp
  uint8_t flags;        // kFlagScopeDestination on kSignal; else 0
  uint16_t dst_rank;    // destination rank
  uint32_t length;      // bytes (per element for kWriteStrided)
  uint32_t signal;      // encode_signal(index, increment)
  uint64_t src;         // pack_address(window, offset), local
  uint64_t dst;         // pack_address(window, offset), on dst_rank
  uint32_t count;       // kWriteStrided elements; else 0
  uint32_t reserved0;   // 0
  uint64_t src_stride;  // kWriteStrided; else 0
  uint64_t dst_stride;  // kWriteStrided; else 0
  uint64_t reserved1;   // 0
};

struct RingHeader {
  // Line 0: identity, written once by ring_init (magic last, with release).
  uint64_t magic;           // kRingMagic
  uint32_t version;         // kRingVersion
  uint32_t slot_size;       // kRingSlotBytes
  uint32_t capacity;        // slots; power of two in [kRingMinCapacity, kRingMaxCapacity]
  uint32_t producer_kind;   // RingProducerKind
  uint32_t capabilities;    // kCap* bits the consumer honours on this ring
  uint32_t channel;         // index of this ring in its group
  uint8_t reserved0[32];
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
  // Line 4: completion watermark: every ticket below it has completed.
  uint64_t completed;
  uint8_t reserved4[56];
  // Rest of the page: reserved for later versions, zero in v2.
  uint8_t reserved5[kRingHeaderBytes - 5 * 64];
};

struct RingGroupHeader {
  uint64_t magic;      // kGroupMagic (stored last, with release)
  uint32_t version;    // kRingVersion
  uint32_t channels;   // rings in the group, 1..kMaxGroupChannels
  uint32_t capacity;   // slots of each ring
  uint32_t reserved0;
  uint8_t reserved1[kGroupDoorbellOffset - 24];
  uint8_t doorbell[kMaxGroupChannels];  // one byte per ring: non-zero = has new work
};

static_assert(sizeof(RingSlot) == kRingSlotBytes, "RingSlot is 64 bytes");
static_assert(offsetof(RingSlot, seq) == 0, "RingSlot layout");
static_assert(offsetof(RingSlot, op) == 4, "RingSlot layout");
static_assert(offsetof(RingSlot, flags) == 5, "RingSlot layout");
static_assert(offsetof(RingSlot, dst_rank) == 6, "RingSlot layout");
static_assert(offsetof(RingSlot, length) == 8, "RingSlot layout");
static_assert(offsetof(RingSlot, signal) == 12, "RingSlot layout");
static_assert(offsetof(RingSlot, src) == 16, "RingSlot layout");
static_assert(offsetof(RingSlot, dst) == 24, "RingSlot layout");
static_assert(offsetof(RingSlot, count) == 32, "RingSlot layout");
static_assert(offsetof(RingSlot, src_stride) == 40, "RingSlot layout");
static_assert(offsetof(RingSlot, dst_stride) == 48, "RingSlot layout");
static_assert(offsetof(RingSlot, reserved1) == 56, "RingSlot layout");

static_assert(sizeof(RingHeader) == kRingHeaderBytes, "RingHeader is one 4096-byte page");
static_assert(offsetof(RingHeader, magic) == 0, "RingHeader layout");
static_assert(offsetof(RingHeader, version) == 8, "RingHeader layout");
static_assert(offsetof(RingHeader, slot_size) == 12, "RingHeader layout");
static_assert(offsetof(RingHeader, capacity) == 16, "RingHeader layout");
static_assert(offsetof(RingHeader, producer_kind) == 20, "RingHeader layout");
static_assert(offsetof(RingHeader, capabilities) == 24, "RingHeader layout");
static_assert(offsetof(RingHeader, channel) == 28, "RingHeader layout");
static_assert(offsetof(RingHeader, claim) == 64, "claim has its own cache line");
static_assert(offsetof(RingHeader, head) == 128, "head has its own cache line");
static_assert(offsetof(RingHeader, error) == 192, "error has its own cache line");
static_assert(offsetof(RingHeader, error_count) == 200, "RingHeader layout");
static_assert(offsetof(RingHeader, completed) == 256, "completed has its own cache line");

static_assert(sizeof(RingGroupHeader) == kGroupHeaderBytes, "RingGroupHeader is one 4096-byte page");
static_assert(offsetof(RingGroupHeader, doorbell) == kGroupDoorbellOffset, "RingGroupHeader layout");
static_assert(kGroupDoorbellOffset % 64 == 0, "the doorbell starts a cache line");

// ---------------------------------------------------------------------------
// Field encodings.

// Signal = the 32-bit RDMA immediate: index in the high 20 bits, increment in
// the low 12. encode_signal() truncates; check signal_fits() first (the SDK
// and device.cuh's builders do, and refuse a value that does not fit).
inline constexpr uint32_t kSignalIncrementBits = 12;
inline constexpr uint32_t kMaxSignalIndex = (1u << 20) - 1;
inline constexpr uint32_t kMaxSignalIncrement = (1u << kSignalIncrementBits) - 1;
inline constexpr uint32_t kMaxDstRank = 0xFFFF;

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

// Whether a ring's capabilities include every bit of `needed`.
EPX_RING_HOST_DEVICE constexpr bool ring_capabilities_cover(uint32_t capabilities, uint32_t needed) {
  return (capabilities & needed) == needed;
}

// ---------------------------------------------------------------------------
// Geometry.

EPX_RING_HOST_DEVICE constexpr bool ring_capacity_valid(uint64_t capacity) {
  return capacity >= kRingMinCapacity && capacity <= kRingMaxCapacity && (capacity & (capacity - 1)) == 0;
}
EPX_RING_HOST_DEVICE constexpr bool group_channels_valid(uint64_t channels) {
  return channels >= 1 && channels <= kMaxGroupChannels;
}
// Bytes of one ring with `capacity` slots (capacity must be valid).
EPX_RING_HOST_DEVICE constexpr uint64_t ring_bytes(uint32_t capacity) {
  return uint64_t{kRingHeaderBytes} + uint64_t{kRingSlotBytes} * capacity;
}
// Bytes of a group region (both arguments valid).
EPX_RING_HOST_DEVICE constexpr uint64_t group_bytes(uint32_t channels, uint32_t capacity) {
  return uint64_t{kGroupHeaderBytes} + uint64_t{channels} * ring_bytes(capacity);
}
// Offset of ring `channel` in its group region.
EPX_RING_HOST_DEVICE constexpr uint64_t group_ring_offset(uint32_t channel, uint32_t capacity) {
  return uint64_t{kGroupHeaderBytes} + uint64_t{channel} * ring_bytes(capacity);
}
EPX_RING_HOST_DEVICE inline RingGroupHeader* group_header(void* mem) { return static_cast<RingGroupHeader*>(mem); }
EPX_RING_HOST_DEVICE inline const RingGroupHeader* group_header(const void* mem) {
  return static_cast<const RingGroupHeader*>(mem);
}
// Ring `channel` of the group at `mem` (a RingHeader followed by its slots).
EPX_RING_HOST_DEVICE inline void* group_ring(void* mem, uint32_t channel, uint32_t capacity) {
  return static_cast<uint8_t*>(mem) + group_ring_offset(channel, capacity);
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

// Relaxed store of a seq word, for a producer that issued a release (or
// system) fence before it: fence + relaxed store = release (ring_publish_seq).
EPX_RING_HOST_DEVICE inline void ring_store_relaxed(volatile uint32_t* p, uint32_t v) {
#if defined(__CUDA_ARCH__)
  asm volatile("st.relaxed.sys.u32 [%0], %1;" : : "l"(p), "r"(v) : "memory");
#else
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
#endif
}

// Relaxed store of a doorbell byte (ring_ring_doorbell_relaxed).
EPX_RING_HOST_DEVICE inline void ring_store_relaxed(volatile uint8_t* p, uint8_t v) {
#if defined(__CUDA_ARCH__)
  asm volatile("st.relaxed.sys.u8 [%0], %1;" : : "l"(p), "r"(static_cast<uint32_t>(v)) : "memory");
#else
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
#endif
}

// Release store of a doorbell byte.
EPX_RING_HOST_DEVICE inline void ring_store_release(volatile uint8_t* p, uint8_t v) {
#if defined(__CUDA_ARCH__)
  asm volatile("st.release.sys.u8 [%0], %1;" : : "l"(p), "r"(static_cast<uint32_t>(v)) : "memory");
#else
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
#endif
}

// A release/acquire fence at system scope: with relaxed stores after it, a
// release of everything this thread (and, through __syncwarp, its warp)
// wrote before it.
EPX_RING_HOST_DEVICE inline void ring_fence_acq_rel() {
#if defined(__CUDA_ARCH__)
  asm volatile("fence.acq_rel.sys;" : : : "memory");
#else
  __atomic_thread_fence(__ATOMIC_ACQ_REL);
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

// Writes `desc`'s fields (not seq) into ticket's slot with plain stores:
// nobody reads them until seq says so.
EPX_RING_HOST_DEVICE inline void ring_write_fields(RingSlot* slots, uint32_t capacity, uint64_t ticket,
                                                   const RingSlot& desc) {
  RingSlot* slot = &slots[ticket & (capacity - 1)];
  slot->op = desc.op;
  slot->flags = desc.flags;
  slot->dst_rank = desc.dst_rank;
  slot->length = desc.length;
  slot->signal = desc.signal;
  slot->src = desc.src;
  slot->dst = desc.dst;
  slot->count = desc.count;
  slot->reserved0 = desc.reserved0;
  slot->src_stride = desc.src_stride;
  slot->dst_stride = desc.dst_stride;
  slot->reserved1 = desc.reserved1;
}

// Marks ticket's slot published with a RELAXED store: only for a caller
// that issued ring_fence_acq_rel() after the fields were written (the fence
// makes this store a release; a warp's leader publishes its lanes' slots so).
EPX_RING_HOST_DEVICE inline void ring_publish_seq(RingSlot* slots, uint32_t capacity, uint64_t ticket) {
  ring_store_relaxed(&slots[ticket & (capacity - 1)].seq, ring_seq_for(ticket));
}

// Writes `desc` (its seq is ignored) into ticket's slot and publishes it. The
// caller owns `ticket` and has seen ring_slot_free() return true for it.
EPX_RING_HOST_DEVICE inline void ring_publish(RingSlot* slots, uint32_t capacity, uint64_t ticket,
                                              const RingSlot& desc) {
  ring_write_fields(slots, capacity, ticket, desc);
  // release: pairs with the consumer's acquire load of seq in ring_read_slot();
  // orders the field stores above before the slot becomes visible.
  ring_store_release(&slots[ticket & (capacity - 1)].seq, ring_seq_for(ticket));
}

// Producer: tells the consumer the ring has new slots (after publishing).
EPX_RING_HOST_DEVICE inline void ring_ring_doorbell(volatile uint8_t* doorbell) {
  // release: pairs with the consumer's acq_rel exchange of the doorbell
  // (ring_host.h, DoorbellScan); the slots published before are visible to
  // a consumer that takes this doorbell.
  ring_store_release(doorbell, uint8_t{1});
}

// Device producer: rings the doorbell right after ring_publish_seq(), with
// no fence between them, so the consumer may see the doorbell before the
// seq stores (kCapEarlyDoorbell: it keeps a rung ring in view for
// kEarlyDoorbellGraceUs and finds them). The producer's system fence after
// both sends them out of the GPU.
EPX_RING_HOST_DEVICE inline void ring_ring_doorbell_relaxed(volatile uint8_t* doorbell) {
  ring_store_relaxed(doorbell, uint8_t{1});
}

// Consumer: if the descriptor at `position` is published, copy it to *out and
// return true. The copy is what the consumer checks and uses.
EPX_RING_HOST_DEVICE inline bool ring_read_slot(const RingSlot* slots, uint32_t capacity, uint64_t position,
                                                RingSlot* out) {
  const RingSlot* slot = &slots[position & (capacity - 1)];
  // acquire: pairs with the producer's release store of seq in ring_publish()
  // (or its fence before ring_publish_seq()); makes the producer's field
  // stores visible to the plain loads below.
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
  out->count = slot->count;
  out->reserved0 = slot->reserved0;
  out->src_stride = slot->src_stride;
  out->dst_stride = slot->dst_stride;
  out->reserved1 = slot->reserved1;
  return true;
}

// Consumer: tell producers that every slot below `head` has been read.
EPX_RING_HOST_DEVICE inline void ring_publish_head(RingHeader* header, uint64_t head) {
  // release: pairs with the producers' acquire load of head in
  // ring_slot_free(); the consumer's reads of those slots happen before any
  // producer reuses them.
  ring_store_release(&header->head, head);
}

// Consumer: every ticket below `completed` has completed.
EPX_RING_HOST_DEVICE inline void ring_publish_completed(RingHeader* header, uint64_t completed) {
  // release: pairs with the flushers' acquire load of completed; what the
  // consumer learned about those completions happens before the flusher
  // reuses its buffers.
  ring_store_release(&header->completed, completed);
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
  const RingOp op = static_cast<RingOp>(d.op);
  if (d.op < static_cast<uint8_t>(RingOp::kWrite) || d.op > static_cast<uint8_t>(RingOp::kWriteStrided)) {
    return RingError::kBadOp;
  }
  if (d.flags != 0 && !(op == RingOp::kSignal && d.flags == kFlagScopeDestination)) return RingError::kBadFlags;
  if (d.reserved0 != 0 || d.reserved1 != 0) return RingError::kBadFields;
  const bool no_strided = d.count == 0 && d.src_stride == 0 && d.dst_stride == 0;
  switch (op) {
    case RingOp::kWrite:
      return d.signal == 0 && no_strided ? RingError::kNone : RingError::kBadFields;
    case RingOp::kWriteSignal:
      return signal_increment(d.signal) != 0 && no_strided ? RingError::kNone : RingError::kBadFields;
    case RingOp::kSignal:
      return d.length == 0 && d.src == 0 && d.dst == 0 && no_strided && signal_increment(d.signal) != 0
                 ? RingError::kNone
                 : RingError::kBadFields;
    case RingOp::kFlush:
      return d.dst_rank == 0 && d.length == 0 && d.signal == 0 && d.src == 0 && d.dst == 0 && no_strided
                 ? RingError::kNone
                 : RingError::kBadFields;
    case RingOp::kBarrier:
      return RingError::kUnsupportedOp;
    case RingOp::kWriteStrided:
      return d.count >= 1 && d.count <= kMaxStridedCount && d.length >= 1 &&
                     (d.signal == 0 || signal_increment(d.signal) != 0)
                 ? RingError::kNone
                 : RingError::kBadFields;
  }
  return RingError::kBadOp;
}

EPX_RING_HOST_DEVICE constexpr RingSlot make_slot(RingOp op, uint8_t flags, uint16_t dst_rank, uint32_t length,
                                                  uint32_t signal, uint64_t src, uint64_t dst) {
  return RingSlot{0, static_cast<uint8_t>(op), flags, dst_rank, length, signal, src, dst, 0, 0, 0, 0, 0};
}
EPX_RING_HOST_DEVICE constexpr RingSlot make_write(uint16_t dst_rank, uint64_t src, uint64_t dst, uint32_t length) {
  return make_slot(RingOp::kWrite, 0, dst_rank, length, 0, src, dst);
}
EPX_RING_HOST_DEVICE constexpr RingSlot make_write_signal(uint16_t dst_rank, uint64_t src, uint64_t dst,
                                                          uint32_t length, uint32_t signal) {
  return make_slot(RingOp::kWriteSignal, 0, dst_rank, length, signal, src, dst);
}
// scope_destination: the signal waits only for this ring's earlier writes
// to dst_rank (kFlagScopeDestination); false: for every earlier descriptor.
EPX_RING_HOST_DEVICE constexpr RingSlot make_signal(uint16_t dst_rank, uint32_t signal,
                                                    bool scope_destination = false) {
  return make_slot(RingOp::kSignal, scope_destination ? kFlagScopeDestination : uint8_t{0}, dst_rank, 0, signal, 0,
                   0);
}
EPX_RING_HOST_DEVICE constexpr RingSlot make_flush() { return make_slot(RingOp::kFlush, 0, 0, 0, 0, 0, 0); }
// `signal` 0: no signal; else applied once every element is in place.
EPX_RING_HOST_DEVICE constexpr RingSlot make_write_strided(uint16_t dst_rank, uint64_t src, uint64_t src_stride,
                                                           uint64_t dst, uint64_t dst_stride, uint32_t length,
                                                           uint32_t count, uint32_t signal) {
  return RingSlot{0,   static_cast<uint8_t>(RingOp::kWriteStrided), 0, dst_rank, length, signal, src, dst, count, 0,
                  src_stride, dst_stride, 0};
}

}  // namespace epx::ring
