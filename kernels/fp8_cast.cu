// The per-token, per-128-channel FP8 (e4m3) cast kernel and its launcher.
//
// Layout of the work: one half-warp (16 lanes) per (token, 128-channel block),
// so a warp does two blocks. Each lane loads 8 bf16 with one 16-byte load
// (16 lanes x 8 = 128 channels), the half-warp reduces |x| to amax with
// shuffles, and each lane stores its 8 e4m3 codes with one 8-byte store; lane 0
// of the half-warp stores the scale. A grid-stride loop covers any shape; the
// hidden size is a runtime argument.
//
// Every float operation matches fp8_reference.cc (fmaxf, an IEEE division,
// one multiply, round-to-nearest-even conversion with saturation), so the
// kernel and the reference agree byte for byte. Built without fast-math:
// nvcc's default -prec-div=true keeps `/` correctly rounded, and there is no
// add for FMA contraction to fuse.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/cuda_status.h"
#include "kernels/fp8_cast.h"

namespace epx::kernels {
namespace {

constexpr int kLanesPerBlock = 16;                                // lanes per 128-channel block
constexpr int kValuesPerLane = kFp8BlockSize / kLanesPerBlock;    // 8 bf16 = one 16-byte load
constexpr int kThreadsPerCta = 256;
constexpr int kBlocksPerCta = kThreadsPerCta / kLanesPerBlock;    // 16 (token, block) pairs
// Enough CTAs to fill an H100/H200 many times over; larger inputs loop.
constexpr int64_t kMaxCtas = 65535;

static_assert(kValuesPerLane == 8, "one uint4 of bf16 per lane");

// A bf16 is the upper half of a float: widening is a shift.
__device__ __forceinline__ float bf16_lo(uint32_t pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t pair) { return __uint_as_float(pair & 0xFFFF0000u); }

// Two floats -> two e4m3 codes (x in the low byte), round to nearest even,
// finite values saturate to +-448 and NaN becomes 0x7F (cvt.rn.satfinite).
__device__ __forceinline__ uint32_t to_e4m3x2(float x, float y) {
  return static_cast<uint32_t>(__nv_cvt_float2_to_fp8x2(make_float2(x, y), __NV_SATFINITE, __NV_E4M3));
}

__global__ void __launch_bounds__(kThreadsPerCta)
fp8_cast_kernel(const uint4* __restrict__ in, int64_t num_blocks, uint2* __restrict__ out,
                void* __restrict__ scales, bool pow2, bool ue8m0) {
  const int lane = threadIdx.x % 32;
  const int sub = lane % kLanesPerBlock;
  // Shuffles stay inside the half-warp (xor offsets < 16), and only its lanes
  // take part: the other half may already have left the loop.
  const unsigned half_mask = lane < kLanesPerBlock ? 0x0000FFFFu : 0xFFFF0000u;

  const int64_t stride = static_cast<int64_t>(gridDim.x) * kBlocksPerCta;
  for (int64_t blk = static_cast<int64_t>(blockIdx.x) * kBlocksPerCta + threadIdx.x / kLanesPerBlock;
       blk < num_blocks; blk += stride) {
    // Block `blk` is the 128 consecutive bf16 starting at blk * 128 (tokens are
    // contiguous rows of hidden = a multiple of 128), i.e. 16 uint4.
    const uint4 v = __ldg(in + blk * kLanesPerBlock + sub);
    float x[kValuesPerLane] = {bf16_lo(v.x), bf16_hi(v.x), bf16_lo(v.y), bf16_hi(v.y),
                               bf16_lo(v.z), bf16_hi(v.z), bf16_lo(v.w), bf16_hi(v.w)};

    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kValuesPerLane; ++i) amax = fmaxf(amax, fabsf(x[i]));  // fmaxf skips NaN, quiet or signalling
#pragma unroll
    for (int offset = kLanesPerBlock / 2; offset > 0; offset /= 2) {
      amax = fmaxf(amax, __shfl_xor_sync(half_mask, amax, offset));
    }
    amax = fmaxf(amax, kFp8AmaxFloor);

    float scale = amax / kE4m3Max;
    float inv;
    if (pow2) {
      // Round up to a power of two on the bits (scale is a normal float or
      // +inf); then 1 / scale is exact.
      uint32_t u = __float_as_uint(scale);
      if ((u & 0x007FFFFFu) != 0) u = (u & 0x7F800000u) + 0x00800000u;
      scale = __uint_as_float(u);
      inv = 1.0f / scale;
    } else {
      inv = kE4m3Max / amax;
    }

    const uint32_t lo = to_e4m3x2(x[0] * inv, x[1] * inv) | (to_e4m3x2(x[2] * inv, x[3] * inv) << 16);
    const uint32_t hi = to_e4m3x2(x[4] * inv, x[5] * inv) | (to_e4m3x2(x[6] * inv, x[7] * inv) << 16);
    out[blk * kLanesPerBlock + sub] = make_uint2(lo, hi);

    if (sub == 0) {
      if (ue8m0) {
        // UE8M0: the biased exponent byte (the sign is 0).
        static_cast<uint8_t*>(scales)[blk] = static_cast<uint8_t>(__float_as_uint(scale) >> 23);
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
