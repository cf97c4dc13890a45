// Compile check: ring.h, unchanged, builds as device code for sm_90, and the
// device-side producer protocol reads as it should. Not run by any test (CI
// has no GPU); //proto/ring:ring_device_compile only has to build.
//
// How a kernel posts to a kDevice ring (ring.h, "Producer kinds"):
//   header/slots: the ring region in host memory, mapped into the GPU
//   claim:        the ring's ticket counter, in DEVICE memory (cudaMalloc)
#include "proto/ring/ring.h"

namespace epx::ring {

// One descriptor per thread that has something to send: lane 0 of each warp
// here, posting a write + signal per warp to `dst_rank`. Flow control spins
// with nanosleep on the (cached) head, re-reading it from host memory only
// when the ring looks full.
__global__ void ring_post_example_kernel(RingHeader* header, uint64_t* claim, uint32_t capacity,
                                         uint16_t dst_rank, uint16_t src_window, uint16_t dst_window,
                                         uint32_t bytes_per_warp, uint32_t signal_index) {
  if (threadIdx.x % 32 != 0) return;
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const uint64_t offset = uint64_t{warp} * bytes_per_warp;
  const RingSlot desc = make_write_signal(dst_rank, pack_address(src_window, offset),
                                          pack_address(dst_window, offset), bytes_per_warp,
                                          encode_signal(signal_index, 1));

  // 1. Claim. relaxed: the ticket is ownership only (ring.h, Producer step 1).
  const uint64_t ticket = ring_fetch_add(claim, 1);
  // 2. Wait for the slot. ring_slot_free re-reads head with acquire (pairs
  //    with the consumer's release of head) only when the ring looks full.
  uint64_t cached_head = 0;
  while (!ring_slot_free(header, capacity, ticket, &cached_head)) ring_pause();
  // 3. Fields with plain stores, then seq with release (pairs with the
  //    consumer's acquire of seq).
  ring_publish(ring_slots(header), capacity, ticket, desc);
}

// The remaining helpers, so that every one of them is compiled for the device.
__global__ void ring_helpers_compile_kernel(RingHeader* header, uint64_t* out) {
  const RingSlot* slots = ring_slots(static_cast<const RingHeader*>(header));
  RingSlot copy;
  uint64_t r = ring_read_slot(slots, header->capacity, 0, &copy) ? copy.src : 0;
  r += ring_load_relaxed(&header->error_count);
  uint64_t expected = 0;
  r += ring_compare_exchange_release(&header->error, &expected, pack_error(RingError::kTransport, r)) ? 1 : 0;
  r += ring_compare_exchange_relaxed(&header->claim, &expected, expected + 1) ? 1 : 0;
  r += ring_report_error(header, RingError::kBadFields, r) ? 1 : 0;
  r += ring_load_acquire(&header->fences_done);
  r += static_cast<uint64_t>(ring_check_slot(copy));
  r += signal_index(copy.signal) + signal_increment(copy.signal) + address_window(copy.dst) +
       address_offset(copy.dst);
  ring_publish_head(header, r);
  out[0] = r;
}

}  // namespace epx::ring
