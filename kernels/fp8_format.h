// Constants, options and argument checks shared by the FP8 cast's GPU kernel
// (fp8_cast.h) and its CPU reference (fp8_reference.h).
//
// Plain C++17 with no CUDA types: host code of the data plane includes this
// whether or not it runs on a machine with a GPU.
//
// The cast, per token and per block of 128 consecutive channels (DeepEP's
// "per-token, per-128-channel" FP8 layout):
//   amax  = max(|x_i| over the block, kFp8AmaxFloor)   (NaN inputs, quiet or signalling, ignored)
//   scale = amax / 448                                   (float, correctly rounded)
//   q_i   = e4m3(x_i * (448 / amax))                     (round to nearest even, saturate to +-448)
// so that x_i ~= decode(q_i) * scale.  With round_scale_to_pow2 the scale is
// rounded up to the next power of two and q_i = e4m3(x_i * (1 / scale)).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "epx/status.h"

namespace epx::kernels {

// Channels that share one scale.
inline constexpr int kFp8BlockSize = 128;
// Largest finite e4m3 ("e4m3fn": no infinities, one NaN code per sign).
inline constexpr float kE4m3Max = 448.0f;
// amax is clamped to at least this, so an all-zero block gets a finite,
// non-zero scale (1e-4 / 448) instead of a division by zero.
inline constexpr float kFp8AmaxFloor = 1e-4f;

struct Fp8CastOptions {
  // Round every scale UP to a power of two: scale = 2^ceil(log2(amax / 448)).
  // Rounding up keeps |x / scale| <= 448, so nothing saturates; the price is up
  // to one bit of e4m3 precision. A power-of-two scale makes dequantisation
  // exact in any float format and lets a receiver fold the scale into an
  // exponent add.
  bool round_scale_to_pow2 = false;

  // Store each scale as one UE8M0 byte (an unsigned, biased float exponent:
  // scale = 2^(byte - 127)) instead of a float. Implies round_scale_to_pow2.
  // The scales buffer is then read as bytes: byte [t * (hidden / 128) + b] is
  // the scale of token t, block b, densely packed, so it needs
  // fp8_cast_scale_bytes() bytes, a quarter of the float layout. (Four
  // consecutive blocks' bytes form one little-endian 32-bit word, the packing
  // that UE8M0-scaled GEMMs read.) 0xFF appears only for an infinite amax.
  bool ue8m0 = false;

  bool pow2() const { return round_scale_to_pow2 || ue8m0; }
};

// Bytes of the scales buffer for [num_tokens][hidden / 128] scales.
inline size_t fp8_cast_scale_bytes(int num_tokens, int hidden, const Fp8CastOptions& options) {
  const size_t count = static_cast<size_t>(num_tokens) * static_cast<size_t>(hidden / kFp8BlockSize);
  return options.ue8m0 ? count : count * sizeof(float);
}

// The checks both implementations make before touching memory; `who` names the
// caller in the message ("launch_fp8_cast: hidden=100 is not a multiple of 128").
inline Status check_fp8_cast_args(const char* who, const void* in, int num_tokens, int hidden,
                                  const void* fp8_out, const void* scales_out) {
  const std::string prefix = std::string(who) + ": ";
  if (num_tokens < 0) {
    return invalid_argument(prefix + "num_tokens=" + std::to_string(num_tokens) + " is negative");
  }
  if (hidden <= 0 || hidden % kFp8BlockSize != 0) {
    return invalid_argument(prefix + "hidden=" + std::to_string(hidden) + " is not a positive multiple of " +
                            std::to_string(kFp8BlockSize) + " (one scale per 128 channels)");
  }
  if (num_tokens > 0 && (in == nullptr || fp8_out == nullptr || scales_out == nullptr)) {
    return invalid_argument(prefix + "null input, fp8 output or scales pointer with num_tokens=" +
                            std::to_string(num_tokens));
  }
  return Status();
}

}  // namespace epx::kernels
