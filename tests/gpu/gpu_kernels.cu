#include "tests/gpu/gpu_kernels.h"

#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_status.h"

namespace epx::gpu {
namespace {

Status launched(const char* kernel) { return cuda_status(cudaGetLastError(), std::string(kernel) + " launch"); }

__device__ inline uint8_t pattern_dev(uint32_t src_rank, uint32_t round, uint64_t i) {
  uint64_t x = (uint64_t{src_rank} << 40) ^ (uint64_t{round} << 32) ^ i;
  x *= 0x9E3779B97F4A7C15ull;
  return static_cast<uint8_t>(x >> 56);
}

__global__ void send_blocks(DeviceRingGroup rings, uint8_t* src, uint16_t src_window, uint16_t dst_window,
                            uint32_t dst_rank, uint32_t src_rank, uint32_t round, const uint64_t* offsets,
                            const uint32_t* sizes, uint32_t blocks, uint32_t signal, bool warp_post) {
  const uint32_t stride = gridDim.x * blockDim.x;
  const uint32_t lane = threadIdx.x & 31;
  // This warp's channel: nobody else posts to its ring.
  const DeviceRing& ring = rings.ring((blockIdx.x * blockDim.x + threadIdx.x) / 32);
  // Every lane runs the same number of iterations so warp_post sees a full
  // warp; lanes past the end post nothing.
  const uint32_t rounds_needed = (blocks + stride - 1) / stride;
  for (uint32_t r = 0; r < rounds_needed; ++r) {
    const uint32_t b = r * stride + blockIdx.x * blockDim.x + threadIdx.x;
    const bool mine = b < blocks;
    if (mine) {
      for (uint32_t i = 0; i < sizes[b]; ++i) src[offsets[b] + i] = pattern_dev(src_rank, round, offsets[b] + i);
      // The proxy reads these bytes from host memory after it sees the slot:
      // make them visible system-wide before the slot is published.
      __threadfence_system();
    }
    if (warp_post) {
      if (mine) {
        post_warp(ring, ring::make_write_signal(
                            static_cast<uint16_t>(dst_rank), ring::pack_address(src_window, offsets[b]),
                            ring::pack_address(dst_window, offsets[b]), sizes[b], ring::encode_signal(signal, 1)));
      }
    } else {
      // One producer at a time: the lanes take turns (the ring's tail lives
      // in device memory; __syncwarp orders one lane's update before the next).
      for (uint32_t turn = 0; turn < 32; ++turn) {
        if (turn == lane && mine) {
          post_write_signal(ring, dst_rank, src_window, offsets[b], dst_window, offsets[b], sizes[b], signal, 1);
        }
        __syncwarp();
      }
    }
  }
}

__global__ void wait_signal_kernel(DeviceSignals s, uint32_t index, uint64_t value, uint64_t timeout_ns, int* ok) {
  *ok = wait_signal(s, index, value, timeout_ns) ? 1 : 0;
}

__global__ void post_raw(DeviceRing ring, ring::RingSlot slot) { post(ring, slot); }

__global__ void post_bad_argument(DeviceRing ring, BadArgumentCase which, int* posted) {
  bool ok = false;
  switch (which) {
    case BadArgumentCase::kIncrementTooLarge: ok = post_write_signal(ring, 1, 1, 0, 2, 0, 64, 3, 4096); break;
    case BadArgumentCase::kDstRankTooLarge: ok = post_write(ring, 70000, 1, 0, 2, 0, 64); break;
    case BadArgumentCase::kSignalIndexTooLarge: ok = post_signal(ring, 1, 1u << 20, 1); break;
    case BadArgumentCase::kIncrementZero: ok = post_signal(ring, 1, 3, 0); break;
    case BadArgumentCase::kStridedCountZero: ok = post_write_strided(ring, 1, 1, 0, 64, 2, 0, 64, 64, 0); break;
  }
  *posted = ok ? 1 : 0;
}

__global__ void channel_writes(DeviceRingGroup rings, uint32_t dst_rank, uint16_t src_window, uint16_t dst_window,
                               uint32_t per_channel, uint32_t bytes, uint64_t stride, uint32_t signal, int* ok) {
  if (threadIdx.x != 0) return;
  const DeviceRing& ring = rings.ring(blockIdx.x);
  bool good = true;
  for (uint32_t i = 0; i < per_channel && good; ++i) {
    const uint64_t off = (uint64_t{blockIdx.x} * per_channel + i) * stride;
    good = post_write_signal(ring, dst_rank, src_window, off, dst_window, off, bytes, signal, 1);
  }
  good = good && flush(ring, 10000000000ull);
  ok[blockIdx.x] = good ? 1 : 0;
}

__global__ void set_flag(int* flag) { *flag = 1; }

__global__ void peer_store(DevicePeers peers, uint32_t dst_rank, const uint8_t* src, uint64_t bytes, int* ok) {
  uint8_t* dst = peer_ptr(peers, dst_rank);
  if (dst == nullptr) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *ok = 0;
    return;
  }
  const uint64_t warps = uint64_t{gridDim.x} * blockDim.x / 32;
  const uint64_t warp = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
  const uint64_t chunk = (bytes / warps + 15) / 16 * 16;
  const uint64_t begin = warp * chunk;
  if (begin < bytes) warp_copy16(dst + begin, src + begin, begin + chunk <= bytes ? chunk : bytes - begin);
  if (blockIdx.x == 0 && threadIdx.x == 0) *ok = 1;
}

}  // namespace

Status launch_send_blocks(DeviceRingGroup rings, uint8_t* src_window_dev, uint16_t src_window, uint16_t dst_window,
                          uint32_t dst_rank, uint32_t src_rank, uint32_t round, const uint64_t* offsets_dev,
                          const uint32_t* sizes_dev, uint32_t blocks, uint32_t signal, bool warp_post, int grid,
                          int block, void* stream) {
  if (uint64_t{static_cast<uint32_t>(grid)} * block / 32 > rings.channels || block % 32 != 0) {
    return invalid_argument("send_blocks: " + std::to_string(grid * block / 32) + " warps need as many channels (" +
                            std::to_string(rings.channels) + ") and whole warps");
  }
  send_blocks<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(rings, src_window_dev, src_window, dst_window,
                                                                     dst_rank, src_rank, round, offsets_dev, sizes_dev,
                                                                     blocks, signal, warp_post);
  return launched("send_blocks");
}

Status launch_wait_signal(DeviceSignals signals, uint32_t index, uint64_t value, uint64_t timeout_ns, int* ok_dev,
                          void* stream) {
  wait_signal_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(signals, index, value, timeout_ns, ok_dev);
  return launched("wait_signal");
}

Status launch_post_raw(DeviceRing ring, ring::RingSlot slot, void* stream) {
  post_raw<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(ring, slot);
  return launched("post_raw");
}

Status launch_post_bad_argument(DeviceRing ring, BadArgumentCase which, int* posted_dev, void* stream) {
  post_bad_argument<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(ring, which, posted_dev);
  return launched("post_bad_argument");
}

Status launch_channel_writes(DeviceRingGroup rings, uint32_t blocks, uint32_t dst_rank, uint16_t src_window,
                             uint16_t dst_window, uint32_t per_channel, uint32_t bytes, uint64_t stride,
                             uint32_t signal, int* ok_dev, void* stream) {
  if (blocks > rings.channels) {
    return invalid_argument("channel_writes: " + std::to_string(blocks) + " blocks but " +
                            std::to_string(rings.channels) + " channels");
  }
  channel_writes<<<blocks, 32, 0, static_cast<cudaStream_t>(stream)>>>(rings, dst_rank, src_window, dst_window,
                                                                       per_channel, bytes, stride, signal, ok_dev);
  return launched("channel_writes");
}

Status launch_set_flag(int* flag_dev, void* stream) {
  set_flag<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(flag_dev);
  return launched("set_flag");
}

Status launch_peer_store(DevicePeers peers, uint32_t dst_rank, const void* src, uint64_t bytes, int* ok_dev, int grid,
                         int block, void* stream) {
  peer_store<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(peers, dst_rank, static_cast<const uint8_t*>(src),
                                                                    bytes, ok_dev);
  return launched("peer_store");
}

}  // namespace epx::gpu
