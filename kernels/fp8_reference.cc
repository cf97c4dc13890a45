#include "kernels/fp8_reference.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace epx::kernels {
namespace {

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Rounds a non-negative float holding a value < 2^24 to the nearest integer,
// ties to even. Written out (not std::nearbyint) so the result never depends
// on the process's floating-point rounding mode.
uint32_t round_half_even(float v) {
  const float floor_v = std::floor(v);
  const uint32_t whole = static_cast<uint32_t>(floor_v);
  const float frac = v - floor_v;  // exact: v < 2^24 has no bits below 2^-149 lost
  if (frac > 0.5f) return whole + 1;
  if (frac < 0.5f) return whole;
  return (whole & 1u) ? whole + 1 : whole;
}

// max(a, b) that ignores a NaN `b`, quiet or signalling, like CUDA's fmaxf.
// (glibc's std::fmax returns NaN for a signalling NaN, which the kernel never
// does, so the reference spells the comparison out.)
float max_ignoring_nan(float a, float b) { return b > a ? b : a; }

}  // namespace

float bf16_to_float(uint16_t bits) { return bits_float(static_cast<uint32_t>(bits) << 16); }

uint16_t float_to_bf16(float value) {
  const uint32_t u = float_bits(value);
  if (std::isnan(value)) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // keep sign, force quiet
  // Add half of the dropped range, plus one when the kept lsb is odd, so an
  // exact tie rounds to the even neighbour. A carry into the exponent is the
  // correct result (including overflow to infinity).
  const uint32_t lsb = (u >> 16) & 1u;
  return static_cast<uint16_t>((u + 0x7FFFu + lsb) >> 16);
}

uint8_t float_to_e4m3(float value) {
  if (std::isnan(value)) return 0x7F;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  const float a = std::fabs(value);
  if (a >= kE4m3Max) return sign | 0x7E;  // saturate (also +-inf)

  // Below 2^-6 the e4m3 grid is uniform with step 2^-9 (subnormals). Scaling
  // by 2^9 is exact, and the rounded count of steps IS the code: 8 steps is
  // 2^-6, the smallest normal, whose code is 0x08.
  if (a < 0x1p-6f) return sign | static_cast<uint8_t>(round_half_even(a * 0x1p9f));

  // Normal: a = m * 2^(e-3) with m in [8, 16), e = floor(log2 a) in [-6, 8].
  const int e = static_cast<int>((float_bits(a) >> 23) & 0xFF) - 127;
  const uint32_t m = round_half_even(std::ldexp(a, 3 - e));  // exact scaling, then RNE
  // Code = biased exponent (e + 7) in bits 6..3, mantissa m - 8 in bits 2..0.
  // m == 16 (rounded up) carries into the exponent, which is the right value.
  // The largest result is 448 = 0x7E: anything that rounds above it is >= 448
  // and was saturated above.
  const uint32_t code = static_cast<uint32_t>(e + 7) * 8u + (m - 8u);
  return sign | static_cast<uint8_t>(code);
}

float e4m3_to_float(uint8_t code) {
  const bool negative = (code & 0x80) != 0;
  const int exponent = (code >> 3) & 0x0F;
  const int mantissa = code & 0x07;
  float magnitude;
  if (exponent == 0x0F && mantissa == 0x07) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);
  } else {
    magnitude = std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
  }
  return negative ? -magnitude : magnitude;
}

float fp8_block_scale(float amax, const Fp8CastOptions& options) {
  const float clamped = max_ignoring_nan(kFp8AmaxFloor, amax);
  float scale = clamped / kE4m3Max;
  if (options.pow2()) {
    // Round up to a power of two on the bits: scale >= 1e-4/448 is a normal
    // float, so a non-zero mantissa means "not a power of two" and the next
    // power is one exponent up with the mantissa cleared. +inf stays +inf.
    uint32_t u = float_bits(scale);
    if ((u & 0x007FFFFFu) != 0) u = (u & 0x7F800000u) + 0x00800000u;
    scale = bits_float(u);
  }
  return scale;
}

float ue8m0_to_float(uint8_t byte) {
  if (byte == 0xFF) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(byte) - 127);
}

Status fp8_cast_reference(const uint16_t* bf16_in, int num_tokens, int hidden, uint8_t* fp8_out,
                          float* scales_out, Fp8CastOptions options) {
  EPX_RETURN_IF_ERROR(check_fp8_cast_args("fp8_cast_reference", bf16_in, num_tokens, hidden, fp8_out, scales_out));
  const int blocks_per_token = hidden / kFp8BlockSize;
  // UE8M0 scales are bytes in the caller's buffer (see Fp8CastOptions::ue8m0).
  uint8_t* scale_bytes = reinterpret_cast<uint8_t*>(scales_out);

  for (int t = 0; t < num_tokens; ++t) {
    for (int b = 0; b < blocks_per_token; ++b) {
      const size_t base = static_cast<size_t>(t) * hidden + static_cast<size_t>(b) * kFp8BlockSize;
      const size_t scale_index = static_cast<size_t>(t) * blocks_per_token + b;

      float x[kFp8BlockSize];
      float amax = 0.0f;
      for (int i = 0; i < kFp8BlockSize; ++i) {
        x[i] = bf16_to_float(bf16_in[base + i]);
        amax = max_ignoring_nan(amax, std::fabs(x[i]));
      }

      const float scale = fp8_block_scale(amax, options);
      // The multiplier the kernel uses: 448 / amax, or 1 / scale (exact for a
      // power of two). Division, not a reciprocal of scale, so the plain path
      // saturates exactly at amax.
      const float inv = options.pow2() ? 1.0f / scale : kE4m3Max / max_ignoring_nan(kFp8AmaxFloor, amax);
      for (int i = 0; i < kFp8BlockSize; ++i) fp8_out[base + i] = float_to_e4m3(x[i] * inv);

      if (options.ue8m0) {
        scale_bytes[scale_index] = static_cast<uint8_t>(float_bits(scale) >> 23);  // sign is 0
      } else {
        scales_out[scale_index] = scale;
      }
    }
  }
  return Status();
}

}  // namespace epx::kernels
