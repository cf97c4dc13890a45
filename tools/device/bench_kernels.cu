#include "tools/device/bench_kernels.h"

#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_status.h"

namespace epx::gpu {
namespace {

Status launched(const char* kernel) { return cuda_status(cudaGetLastError(), std::string(kernel) + " launch"); }

__global__ void pingpong(DeviceRing ring, DeviceSignals s, int role, uint32_t iters, uint32_t bytes, uint32_t dst,
                         uint16_t src_window, uint16_t dst_window, uint64_t* elapsed, int* ok) {
  auto wait = [&](uint64_t value) { return wait_signal(s, 0, value, 5000000000ull); };
  const uint64_t base = signal_value(s, 0);
  const uint64_t start = device_now_ns();
  for (uint32_t i = 1; i <= iters; ++i) {
    if (role == 0) {
      if (!post_write_signal(ring, dst, src_window, 0, dst_window, 0, bytes, 0, 1) || !wait(base + i)) {
        *ok = 0;
        return;
      }
    } else {
      if (!wait(base + i) || !post_write_signal(ring, dst, src_window, 0, dst_window, 0, bytes, 0, 1)) {
        *ok = 0;
        return;
      }
    }
  }
  elapsed[0] = device_now_ns() - start;
  *ok = 1;
}

__global__ void post_many(DeviceRing ring, uint32_t dst, uint16_t src_window, uint16_t dst_window, uint32_t bytes,
                          uint32_t per_thread, uint32_t signal, bool adjacent) {
  const uint64_t t = blockIdx.x * blockDim.x + threadIdx.x;
  for (uint32_t i = 0; i < per_thread; ++i) {
    // Reconverge so post_warp claims for all 32 lanes at once (independent
    // thread scheduling may have split the warp in the previous post).
    __syncwarp();
    if (adjacent) {
      // Lanes of a warp take consecutive chunks, so the warp's 32 tickets
      // (one atomic) name one contiguous run the proxy can coalesce.
      const uint64_t warp = t / 32, lane = t % 32;
      const uint64_t off = ((warp * per_thread + i) * 32 + lane) * bytes;
      post_warp(ring, ring::make_write(static_cast<uint16_t>(dst), ring::pack_address(src_window, off),
                                       ring::pack_address(dst_window, off), bytes));
    } else {
      const uint64_t off = ((t * per_thread + i) % 65536) * 2 * bytes;
      post_warp(ring,
                ring::make_write_signal(static_cast<uint16_t>(dst), ring::pack_address(src_window, off),
                                        ring::pack_address(dst_window, off), bytes, ring::encode_signal(signal, 1)));
    }
  }
}

// Every warp claims 32 tickets at a time and writes the chunk its tickets
// name (offset = ticket * bytes): the ring then holds one contiguous run no
// matter how warps interleave, which is what the proxy's coalescing is for.
__global__ void post_ticket_adjacent(DeviceRing ring, uint32_t dst, uint16_t src_window, uint16_t dst_window,
                                     uint32_t bytes, uint32_t per_thread, uint64_t window_bytes) {
  const int lane = threadIdx.x & 31;
  const uint64_t chunks = window_bytes / bytes;
  for (uint32_t i = 0; i < per_thread; ++i) {
    __syncwarp();
    const uint64_t head = cached_head(ring);
    unsigned long long base = 0;
    if (lane == 0) base = atomicAdd(ring.claim, 32ull);
    base = __shfl_sync(0xffffffffu, base, 0);
    const uint64_t ticket = base + lane;
    // The whole warp leaves together when one lane's slot never frees, so
    // the next iteration's full-mask __syncwarp/__shfl_sync cannot hang.
    const bool ok = wait_for_slot(ring, ticket, head);
    if (!__all_sync(0xffffffffu, ok)) {
      if (!ok) record_error(ring.error, 1, 0, ticket, 0);
      return;
    }
    const uint64_t off = (ticket % chunks) * bytes;
    ring::ring_publish(ring.slots, ring.capacity, ticket,
                       ring::make_write(static_cast<uint16_t>(dst), ring::pack_address(src_window, off),
                                        ring::pack_address(dst_window, off), bytes));
    push_to_host();
  }
}

__global__ void stream_kernel(DeviceRing ring, uint32_t dst, uint16_t src_window, uint16_t dst_window, uint32_t bytes,
                              uint64_t window_bytes, uint32_t count, uint32_t signal) {
  const uint64_t slots = window_bytes / bytes;
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t off = (i % slots) * bytes;
    if (!post_write_signal(ring, dst, src_window, off, dst_window, off, bytes, signal, 1)) return;
  }
}

__global__ void peer_copy(const uint4* src, uint4* dst, uint64_t n) {
  for (uint64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[i] = src[i];
}

}  // namespace

Status launch_pingpong(DeviceRing ring, DeviceSignals signals, int role, uint32_t iters, uint32_t bytes,
                       uint32_t dst_rank, uint16_t src_window, uint16_t dst_window, uint64_t* elapsed_ns_dev,
                       int* ok_dev, void* stream) {
  pingpong<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(ring, signals, role, iters, bytes, dst_rank, src_window,
                                                           dst_window, elapsed_ns_dev, ok_dev);
  return launched("pingpong");
}

Status launch_post_many(DeviceRing ring, uint32_t dst_rank, uint16_t src_window, uint16_t dst_window, uint32_t bytes,
                        uint32_t per_thread, uint32_t signal, bool adjacent, int grid, int block, void* stream) {
  post_many<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(ring, dst_rank, src_window, dst_window, bytes,
                                                                   per_thread, signal, adjacent);
  return launched("post_many");
}

Status launch_post_ticket_adjacent(DeviceRing ring, uint32_t dst_rank, uint16_t src_window, uint16_t dst_window,
                                   uint32_t bytes, uint32_t per_thread, uint64_t window_bytes, int grid, int block,
                                   void* stream) {
  post_ticket_adjacent<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(ring, dst_rank, src_window, dst_window,
                                                                              bytes, per_thread, window_bytes);
  return launched("post_ticket_adjacent");
}

Status launch_stream(DeviceRing ring, uint32_t dst_rank, uint16_t src_window, uint16_t dst_window, uint32_t bytes,
                     uint64_t window_bytes, uint32_t count, uint32_t signal, void* stream) {
  stream_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(ring, dst_rank, src_window, dst_window, bytes,
                                                                window_bytes, count, signal);
  return launched("stream");
}

Status launch_peer_copy(const void* src, void* dst, uint64_t bytes, int grid, int block, void* stream) {
  peer_copy<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<const uint4*>(src),
                                                                   static_cast<uint4*>(dst), bytes / 16);
  return launched("peer_copy");
}

}  // namespace epx::gpu
