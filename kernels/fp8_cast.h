// GPU launcher for the per-token, per-128-channel FP8 (e4m3) cast that
// DeepEP-style dispatch applies to bf16 activations before sending them.
//
// Host code includes this header without CUDA headers: tensors are raw device
// pointers and the stream is a `void*` (a cudaStream_t, nullptr for the legacy
// default stream). The formula is in fp8_format.h; fp8_reference.h is the CPU
// implementation that produces the same bytes.
#pragma once

#include <cstdint>

#include "epx/status.h"
#include "kernels/fp8_format.h"

namespace epx::kernels {

// Enqueues the cast of bf16_in ([num_tokens][hidden] bf16 bit patterns, device
// memory) into fp8_out ([num_tokens][hidden] e4m3 codes, device memory) and
// scales_out ([num_tokens][hidden / 128] dequant scales, device memory: float,
// or UE8M0 bytes when options.ue8m0), so x ~= e4m3_to_float(fp8) * scale.
//
// Requirements, checked before anything is enqueued (INVALID_ARGUMENT):
//   * hidden is a positive multiple of 128 (the message names hidden);
//   * num_tokens >= 0 (0 enqueues nothing and returns OK);
//   * pointers non-null, bf16_in 16-byte aligned, fp8_out 8-byte aligned and,
//     for float scales, scales_out 4-byte aligned (cudaMalloc gives 256).
//   * bf16_in must not overlap the outputs.
//
// Asynchronous: returns once the kernel is enqueued on cuda_stream. A launch
// failure comes back as a Status naming the CUDA error (cudaGetErrorName and
// cudaGetErrorString) and the shape; a fault while the kernel runs shows up at
// the caller's next synchronisation of the stream.
Status launch_fp8_cast(const uint16_t* bf16_in, int num_tokens, int hidden, uint8_t* fp8_out, float* scales_out,
                       Fp8CastOptions options, void* cuda_stream);

}  // namespace epx::kernels
