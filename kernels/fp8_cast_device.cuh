// Device math of the per-128-channel FP8 (e4m3) cast, shared by the FP8 cast
// kernel (fp8_cast.cu) and the low-latency dispatch (low_latency_dispatch.cu)
// so both produce the same bytes as fp8_reference.cc.
//
// One half-warp (16 lanes) casts one 128-channel block: each lane holds 8
// bf16 (one 16-byte load), the half-warp reduces |x| to amax with shuffles,
// and each lane gets its 8 e4m3 codes; every lane gets the scale.
//
// Every float operation matches fp8_reference.cc (fmaxf, an IEEE division,
// one multiply, round-to-nearest-even conversion with saturation). Build
// without fast-math: nvcc's default -prec-div=true keeps `/` correctly
// rounded, and there is no add for FMA contraction to fuse.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/fp8_format.h"

namespace epx::kernels::fp8_device {

inline constexpr int kLanesPerBlock = 16;                              // lanes per 128-channel block
inline constexpr int kValuesPerLane = kFp8BlockSize / kLanesPerBlock;  // 8 bf16 = one 16-byte load
static_assert(kValuesPerLane == 8, "one uint4 of bf16 per lane");

// A bf16 is the upper half of a float: widening is a shift.
__device__ __forceinline__ float bf16_lo(uint32_t pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t pair) { return __uint_as_float(pair & 0xFFFF0000u); }

// Two floats -> two e4m3 codes (x in the low byte), round to nearest even,
// finite values saturate to +-448 and NaN becomes 0x7F (cvt.rn.satfinite).
__device__ __forceinline__ uint32_t to_e4m3x2(float x, float y) {
  return static_cast<uint32_t>(__nv_cvt_float2_to_fp8x2(make_float2(x, y), __NV_SATFINITE, __NV_E4M3));
}

// The shuffle mask of the half-warp that holds `lane` (xor offsets < 16 stay
// inside it, and only its lanes take part: the other half may be elsewhere).
__device__ __forceinline__ unsigned half_warp_mask(int lane) { return lane % 32 < kLanesPerBlock ? 0x0000FFFFu : 0xFFFF0000u; }

// Casts this lane's 8 bf16 (`v`) of a 128-channel block held by the
// half-warp `half_mask`. Returns the lane's 8 codes (channel order, low byte
// first) and sets *scale (same on every lane of the half-warp).
__device__ __forceinline__ uint2 cast_block(uint4 v, unsigned half_mask, bool pow2, float* scale_out) {
  const float x[kValuesPerLane] = {bf16_lo(v.x), bf16_hi(v.x), bf16_lo(v.y), bf16_hi(v.y),
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
  *scale_out = scale;
  const uint32_t lo = to_e4m3x2(x[0] * inv, x[1] * inv) | (to_e4m3x2(x[2] * inv, x[3] * inv) << 16);
  const uint32_t hi = to_e4m3x2(x[4] * inv, x[5] * inv) | (to_e4m3x2(x[6] * inv, x[7] * inv) << 16);
  return make_uint2(lo, hi);
}

// UE8M0: the biased exponent byte of a power-of-two scale (the sign is 0).
__device__ __forceinline__ uint8_t ue8m0_byte(float scale) { return static_cast<uint8_t>(__float_as_uint(scale) >> 23); }

}  // namespace epx::kernels::fp8_device
