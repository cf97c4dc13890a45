// Compile check: ring.h, unchanged, builds as device code for sm_90, and the
// device-side producer protocol reads as it should. Not run by any test (CI
// has no GPU); //proto/ring:ring_device_compile only has to build.
//
// How a kernel posts to a kDevice ring (ring.h, "Producer"): the ring is
// single-producer, so the channel that owns it keeps its tail itself.
//   group:        the ring group region in host memory, mapped into the GPU
//   tail:         the owning channel's next ticket, in DEVICE memory
#include "proto/ring/ring.h"

namespace epx::ring {

// One channel per block: lane 0 of warp 0 of block b owns ring b and posts a
// write + signal to `dst_rank`. Flow control spins with nanosleep on the
// (cached) head, re-reading it from host memory only when the ring looks full.
__global__ void ring_post_example_kernel(RingGroupHeader* group, uint64_t* tails, uint32_t capacity,
                                         uint16_t dst_rank, uint16_t src_window, uint16_t dst_window,
                                         uint32_t bytes_per_block, uint32_t signal_index) {
  if (threadIdx.x != 0) return;
  RingHeader* header = ring_header(group_ring(group, blockIdx.x, capacity));
  const uint64_t offset = uint64_t{blockIdx.x} * bytes_per_block;
  const RingSlot desc = make_write_signal(dst_rank, pack_address(src_window, offset),
                                          pack_address(dst_window, offset), bytes_per_block,
                                          encode_signal(signal_index, 1));
  // 1. The ticket: this channel's tail (nobody else posts to this ring).
  const uint64_t ticket = tails[blockIdx.x];
  // 2. Wait for the slot. ring_slot_free re-reads head with acquire (pairs
  //    with the consumer's release of head) only when the ring looks full.
  uint64_t cached_head = 0;
  while (!ring_slot_free(header, capacity, ticket, &cached_head)) ring_pause();
  // 3. Fields with plain stores, then seq with release (pairs with the
  //    consumer's acquire of seq); 4. the doorbell, with release.
  ring_publish(ring_slots(header), capacity, ticket, desc);
  ring_ring_doorbell(&group->doorbell[blockIdx.x]);
  tails[blockIdx.x] = ticket + 1;
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
  r += ring_load_acquire(&header->completed);
  r += static_cast<uint64_t>(ring_check_slot(copy));
  r += signal_index(copy.signal) + signal_increment(copy.signal) + address_window(copy.dst) +
       address_offset(copy.dst);
  RingSlot* wslots = ring_slots(header);
  ring_write_fields(wslots, header->capacity, r, make_write_strided(1, 2, 3, 4, 5, 6, 7, 0));
  ring_fence_acq_rel();
  ring_publish_seq(wslots, header->capacity, r);
  ring_publish_head(header, r);
  ring_publish_completed(header, r);
  out[0] = r;
}

}  // namespace epx::ring
