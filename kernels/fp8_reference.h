// CPU reference for the per-token, per-128-channel FP8 (e4m3) cast.
//
// Plain C++17, no CUDA: this is the oracle the GPU kernel is tested against
// byte for byte, and the implementation the data plane uses where no GPU
// exists. Every step is written as exact integer / power-of-two arithmetic
// plus the same IEEE float operations the kernel performs, so both produce
// identical bytes (see fp8_format.h for the formula).
#pragma once

#include <cstdint>

#include "epx/status.h"
#include "kernels/fp8_format.h"

namespace epx::kernels {

// ---- bf16 (1 sign, 8 exponent, 7 mantissa bits: the top half of a float) ----

// Exact: a bf16 is a float with its low 16 bits zero.
float bf16_to_float(uint16_t bits);
// Round to nearest, ties to even. NaN -> quiet NaN with the input's sign
// (0x7FC0 / 0xFFC0); infinities stay infinities; overflow rounds to infinity.
uint16_t float_to_bf16(float value);

// ---- e4m3 ("e4m3fn": bias 7, 3 mantissa bits, no infinities) ----
// Codes: S.EEEE.MMM. E=0 is subnormal (M * 2^-9, smallest 2^-9); E=1..15 is
// (1 + M/8) * 2^(E-7); S.1111.111 (0x7F, 0xFF) is NaN; 0x7E = 448 is the
// largest finite value.

// Round to nearest, ties to even, saturating: any finite |value| > 448 and
// +-infinity become +-448 (0x7E / 0xFE), as CUDA's __NV_SATFINITE does.
// NaN becomes 0x7F whatever its sign (the canonical NaN CUDA produces).
// The sign of zero is kept (-0.0 -> 0x80).
uint8_t float_to_e4m3(float value);
// Exact. 0x7F and 0xFF decode to a quiet NaN.
float e4m3_to_float(uint8_t code);

// ---- scales ----

// The block scale for a block whose max |x| is `amax` (before the floor is
// applied), as both implementations compute it: max(amax, 1e-4) / 448,
// rounded up to a power of two when options.pow2().
float fp8_block_scale(float amax, const Fp8CastOptions& options);
// UE8M0 byte <-> power-of-two float scale: scale = 2^(byte - 127). 0xFF is NaN.
float ue8m0_to_float(uint8_t byte);

// ---- the cast ----

// Same contract as launch_fp8_cast() (fp8_cast.h), run synchronously on the
// CPU: bf16_in is [num_tokens][hidden] bf16 bit patterns, fp8_out receives
// [num_tokens][hidden] e4m3 codes, scales_out receives [num_tokens][hidden/128]
// float scales (or UE8M0 bytes when options.ue8m0). hidden must be a positive
// multiple of 128; otherwise INVALID_ARGUMENT and nothing is written.
Status fp8_cast_reference(const uint16_t* bf16_in, int num_tokens, int hidden, uint8_t* fp8_out,
                          float* scales_out, Fp8CastOptions options);

}  // namespace epx::kernels
