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

// Every warp is a channel: warp w (of the whole grid) posts into ring w of
// the group (single-producer rings: the launch has at most `channels` warps).
__global__ void post_many(DeviceRingGroup rings, uint32_t dst, uint16_t src_window, uint16_t dst_window, uint32_t bytes,
                          uint32_t per_thread, uint32_t signal, bool adjacent) {
  const uint64_t t = blockIdx.x * blockDim.x + threadIdx.x;
  const DeviceRing& ring = rings.ring(static_cast<uint32_t>(t / 32));
  for (uint32_t i = 0; i < per_thread; ++i) {
    // Reconverge so post_warp posts for all 32 lanes at once (independent
    // thread scheduling may have split the warp in the previous post).
    __syncwarp();
    bool ok;
    if (adjacent) {
      // Lanes of a warp take consecutive chunks, and the warp's next post
      // continues them: each channel's ring holds one contiguous run the
      // proxy can coalesce.
      const uint64_t warp = t / 32, lane = t % 32;
      const uint64_t off = ((warp * per_thread + i) * 32 + lane) * bytes;
      ok = post_warp(ring, ring::make_write(static_cast<uint16_t>(dst), ring::pack_address(src_window, off),
                                            ring::pack_address(dst_window, off), bytes));
    } else {
      const uint64_t off = ((t * per_thread + i) % 65536) * 2 * bytes;
      ok = post_warp(
          ring, ring::make_write_signal(static_cast<uint16_t>(dst), ring::pack_address(src_window, off),
                                        ring::pack_address(dst_window, off), bytes, ring::encode_signal(signal, 1)));
    }
    if (!ok) return;  // the whole warp: post_warp gives every lane the same answer
  }
}

// Lane 0 of every warp (a channel) posts `per_thread` strided descriptors of
// 32 elements of `bytes`, every other chunk (so the proxy cannot merge them
// into one plain write): 32 writes per descriptor.
__global__ void post_strided(DeviceRingGroup rings, uint32_t dst, uint16_t src_window, uint16_t dst_window,
                             uint32_t bytes, uint32_t per_thread, uint64_t window_bytes) {
  const uint64_t t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t % 32 != 0) return;
  const uint64_t warp = t / 32;
  const DeviceRing& ring = rings.ring(static_cast<uint32_t>(warp));
  const uint64_t span = 64ull * bytes;  // 32 elements, each followed by a gap of its size
  const uint64_t spans = window_bytes / span;
  for (uint32_t i = 0; i < per_thread; ++i) {
    const uint64_t off = ((warp * per_thread + i) % spans) * span;
    if (!post_write_strided(ring, dst, src_window, off, 2ull * bytes, dst_window, off, 2ull * bytes, bytes, 32)) return;
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

Status launch_post_many(DeviceRingGroup rings, uint32_t dst_rank, uint16_t src_window, uint16_t dst_window,
                        uint32_t bytes, uint32_t per_thread, uint32_t signal, bool adjacent, int grid, int block,
                        void* stream) {
  if (uint64_t{static_cast<uint32_t>(grid)} * block / 32 > rings.channels) {
    return invalid_argument("post_many: " + std::to_string(grid * block / 32) + " warps but " +
                            std::to_string(rings.channels) + " channels");
  }
  post_many<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(rings, dst_rank, src_window, dst_window, bytes,
                                                                   per_thread, signal, adjacent);
  return launched("post_many");
}

Status launch_post_strided(DeviceRingGroup rings, uint32_t dst_rank, uint16_t src_window, uint16_t dst_window,
                           uint32_t bytes, uint32_t per_thread, uint64_t window_bytes, int grid, int block,
                           void* stream) {
  if (uint64_t{static_cast<uint32_t>(grid)} * block / 32 > rings.channels) {
    return invalid_argument("post_strided: " + std::to_string(grid * block / 32) + " warps but " +
                            std::to_string(rings.channels) + " channels");
  }
  post_strided<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(rings, dst_rank, src_window, dst_window, bytes,
                                                                      per_thread, window_bytes);
  return launched("post_strided");
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
