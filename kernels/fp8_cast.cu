// The per-token, per-128-channel FP8 (e4m3) cast kernel and its launcher.
//
// Layout of the work: one half-warp (16 lanes) per (token, 128-channel block),
// so a warp does two blocks. Each lane loads 8 bf16 with one 16-byte load
// (16 lanes x 8 = 128 channels), the half-warp reduces |x| to amax with
// shuffles, and each lane stores its 8 e4m3 codes with one 8-byte store; lane 0
// of the half-warp stores the scale. A grid-stride loop covers any shape; the
// hidden size is a runtime argument.
//
// The math is fp8_cast_device.cuh's (shared with the LL dispatch), which
// matches fp8_reference.cc byte for byte.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/cuda_status.h"
#include "kernels/fp8_cast.h"
#include "kernels/fp8_cast_device.cuh"

namespace epx::kernels {
namespace {

using fp8_device::kLanesPerBlock;
constexpr int kThreadsPerCta = 256;
constexpr int kBlocksPerCta = kThreadsPerCta / kLanesPerBlock;    // 16 (token, block) pairs
// Enough CTAs to fill an H100/H200 many times over; larger inputs loop.
constexpr int64_t kMaxCtas = 65535;

__global__ void __launch_bounds__(kThreadsPerCta)
fp8_cast_kernel(const uint4* __restrict__ in, int64_t num_blocks, uint2* __restrict__ out,
                void* __restrict__ scales, bool pow2, bool ue8m0) {
  const int lane = threadIdx.x % 32;
  const int sub = lane % kLanesPerBlock;
  const unsigned half_mask = fp8_device::half_warp_mask(lane);

  const int64_t stride = static_cast<int64_t>(gridDim.x) * kBlocksPerCta;
  for (int64_t blk = static_cast<int64_t>(blockIdx.x) * kBlocksPerCta + threadIdx.x / kLanesPerBlock;
       blk < num_blocks; blk += stride) {
    // Block `blk` is the 128 consecutive bf16 starting at blk * 128 (tokens are
    // contiguous rows of hidden = a multiple of 128), i.e. 16 uint4.
    float scale;
    out[blk * kLanesPerBlock + sub] = fp8_device::cast_block(__ldg(in + blk * kLanesPerBlock + sub), half_mask, pow2, &scale);
    if (sub == 0) {
      if (ue8m0) {
        static_cast<uint8_t*>(scales)[blk] = fp8_device::ue8m0_byte(scale);
      } else {
        static_cast<float*>(scales)[blk] = scale;
      }
    }
  }
}

bool aligned(const void* p, uintptr_t alignment) { return reinterpret_cast<uintptr_t>(p) % alignment == 0; }

}  // namespace

Status launch_fp8_cast(const uint16_t* bf16_in, int num_tokens, int hidden, uint8_t* fp8_out, float* scales_out,
                       Fp8CastOptions options, void* cuda_stream) {
  EPX_RETURN_IF_ERROR(check_fp8_cast_args("launch_fp8_cast", bf16_in, num_tokens, hidden, fp8_out, scales_out));
  if (num_tokens == 0) return Status();

  const std::string shape = "num_tokens=" + std::to_string(num_tokens) + ", hidden=" + std::to_string(hidden);
  // The kernel moves 16 bytes of input and 8 of output per lane, and float
  // scales one at a time; misaligned vector accesses would fault.
  if (!aligned(bf16_in, 16) || !aligned(fp8_out, 8) || (!options.ue8m0 && !aligned(scales_out, 4))) {
    return invalid_argument("launch_fp8_cast (" + shape +
                            "): bf16_in must be 16-byte, fp8_out 8-byte and float scales_out 4-byte aligned");
  }

  const int64_t num_blocks = static_cast<int64_t>(num_tokens) * (hidden / kFp8BlockSize);
  const int64_t ctas_needed = (num_blocks + kBlocksPerCta - 1) / kBlocksPerCta;
  const unsigned ctas = static_cast<unsigned>(ctas_needed < kMaxCtas ? ctas_needed : kMaxCtas);

  fp8_cast_kernel<<<ctas, kThreadsPerCta, 0, static_cast<cudaStream_t>(cuda_stream)>>>(
      reinterpret_cast<const uint4*>(bf16_in), num_blocks, reinterpret_cast<uint2*>(fp8_out), scales_out,
      options.pow2(), options.ue8m0);
  return cuda_status(cudaGetLastError(), "launch_fp8_cast (" + shape + "): kernel launch");
}

}  // namespace epx::kernels
