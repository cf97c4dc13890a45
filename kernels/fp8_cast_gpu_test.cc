// The FP8 cast kernel against the CPU reference, byte for byte.
//
// Needs a GPU: main() is //kernels:gpu_test_main, which without a device
// prints "EPX_TEST_SKIPPED: <why>" and exits 0 (counted as skipped).
#include <doctest/doctest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_status.h"
#include "kernels/fp8_cast.h"
#include "kernels/fp8_reference.h"

namespace epx::kernels {
namespace {

// Device memory owned for one scope.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    status_ = cuda_status(cudaMalloc(&ptr_, bytes == 0 ? 1 : bytes), "cudaMalloc(" + std::to_string(bytes) + ")");
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) check_cuda_release(cudaFree(ptr_), "cudaFree of a test buffer");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  const Status& status() const { return status_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  Status upload(const void* host) { return cuda_status(cudaMemcpy(ptr_, host, bytes_, cudaMemcpyHostToDevice), "upload"); }
  Status download(void* host) const {
    return cuda_status(cudaMemcpy(host, ptr_, bytes_, cudaMemcpyDeviceToHost), "download");
  }
  // cudaMemset of device memory may return before it ran, on the legacy
  // stream, which the tests' non-blocking stream does not wait for: without
  // the synchronize the poison could land after the kernel's output.
  Status fill(int byte) {
    if (Status s = cuda_status(cudaMemset(ptr_, byte, bytes_), "cudaMemset"); !s.ok()) return s;
    return cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize after cudaMemset");
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
  Status status_;
};

// A non-default stream, so the launcher's stream argument is exercised.
class Stream {
 public:
  Stream() { status_ = cuda_status(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() {
    if (stream_ != nullptr) check_cuda_release(cudaStreamDestroy(stream_), "cudaStreamDestroy of the test stream");
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  const Status& status() const { return status_; }
  void* get() const { return stream_; }
  Status sync() const { return cuda_status(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

 private:
  cudaStream_t stream_ = nullptr;
  Status status_;
};

uint16_t bf16(float f) { return float_to_bf16(f); }

std::string hex(unsigned value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%02X", value);
  return text;
}

// bf16 input in which each 128-channel block has its own character, so that
// every shape meets the cases that matter: ordinary data over a wide range of
// magnitudes, zero blocks (floored amax), blocks below the floor, huge values,
// exact e4m3 rounding ties, subnormal bf16, signed zeros, NaN and infinities.
std::vector<uint16_t> make_input(int num_tokens, int hidden, uint32_t seed, bool with_non_finite) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-30, 30);
  std::uniform_int_distribution<int> kind_of(0, 15);
  std::uniform_int_distribution<int> channel(0, 127);
  std::uniform_int_distribution<int> raw(0, 0xFFFF);

  std::vector<uint16_t> in(static_cast<size_t>(num_tokens) * hidden);
  for (size_t start = 0; start < in.size(); start += 128) {
    uint16_t* block = &in[start];
    const float magnitude = std::ldexp(1.0f, exponent(rng));
    switch (kind_of(rng)) {
      case 0:  // all zeros, some negative
        for (int i = 0; i < 128; ++i) block[i] = (i % 3 == 0) ? 0x8000 : 0x0000;
        break;
      case 1:  // everything below the 1e-4 amax floor
        for (int i = 0; i < 128; ++i) block[i] = bf16(normal(rng) * 1e-6f);
        break;
      case 2:  // huge values, near the top of bf16
        for (int i = 0; i < 128; ++i) block[i] = bf16(normal(rng) * 1e37f);
        break;
      case 3:  // amax = 448 * 2^k makes inv a power of two, so k-scaled e4m3 ties are exact ties
        for (int i = 0; i < 128; ++i) {
          static const float kTies[] = {1.0625f, 1.1875f, 1.9375f, 432.0f, 400.0f, 0x1p-10f, 3 * 0x1p-10f, 15 * 0x1p-10f};
          block[i] = bf16((i % 2 ? -1.0f : 1.0f) * kTies[i % 8] * magnitude);
        }
        block[channel(rng)] = bf16(448.0f * magnitude);
        break;
      case 4:  // arbitrary bit patterns (bf16 subnormals, odd exponents), NaN/inf filtered below
        for (int i = 0; i < 128; ++i) block[i] = static_cast<uint16_t>(raw(rng));
        break;
      default:  // ordinary activations at this block's magnitude, with one outlier
        for (int i = 0; i < 128; ++i) block[i] = bf16(normal(rng) * magnitude);
        block[channel(rng)] = bf16(30.0f * magnitude);
        break;
    }
    for (int i = 0; i < 128; ++i) {
      if (!with_non_finite && (block[i] & 0x7F80) == 0x7F80) block[i] = bf16(1.0f);  // drop NaN / inf
    }
    if (with_non_finite && kind_of(rng) == 0) {
      block[channel(rng)] = 0x7FC0;  // NaN: ignored by amax, encodes to 0x7F
      if (kind_of(rng) < 4) block[channel(rng)] = 0xFF80;  // -inf: scale +inf, block becomes 0 / NaN
    }
  }
  return in;
}

std::string mode_name(const Fp8CastOptions& o) {
  return o.ue8m0 ? "ue8m0" : (o.round_scale_to_pow2 ? "pow2" : "float");
}

// Runs the kernel and the reference on `in` and compares every byte of both
// outputs (codes and scales, float or UE8M0).
void check_matches_reference(const std::vector<uint16_t>& in, int num_tokens, int hidden,
                             const Fp8CastOptions& options, const Stream& stream) {
  const size_t n = in.size();
  const size_t scale_bytes = fp8_cast_scale_bytes(num_tokens, hidden, options);
  CAPTURE(num_tokens);
  CAPTURE(hidden);
  const std::string mode = mode_name(options);
  CAPTURE(mode);

  std::vector<uint8_t> want_q(n);
  std::vector<uint8_t> want_scales(scale_bytes + 4);  // + room so a float* view is never short
  REQUIRE(fp8_cast_reference(in.data(), num_tokens, hidden, want_q.data(),
                             reinterpret_cast<float*>(want_scales.data()), options).ok());
  want_scales.resize(scale_bytes);

  DeviceBuffer d_in(n * sizeof(uint16_t)), d_q(n), d_scales(scale_bytes);
  REQUIRE(d_in.status().ok());
  REQUIRE(d_q.status().ok());
  REQUIRE(d_scales.status().ok());
  REQUIRE(d_in.upload(in.data()).ok());
  REQUIRE(d_q.fill(0xAA).ok());  // poison: a byte the kernel forgot to write shows up
  REQUIRE(d_scales.fill(0xAA).ok());

  const Status launched = launch_fp8_cast(d_in.as<uint16_t>(), num_tokens, hidden, d_q.as<uint8_t>(),
                                          d_scales.as<float>(), options, stream.get());
  REQUIRE_MESSAGE(launched.ok(), launched.to_string());
  const Status synced = stream.sync();
  REQUIRE_MESSAGE(synced.ok(), synced.to_string());

  std::vector<uint8_t> got_q(n), got_scales(scale_bytes);
  REQUIRE(d_q.download(got_q.data()).ok());
  REQUIRE(d_scales.download(got_scales.data()).ok());

  for (size_t i = 0; i < n; ++i) {
    if (got_q[i] != want_q[i]) {
      FAIL("fp8 code differs at token " << i / hidden << " channel " << i % hidden << ": input bf16 "
                                        << hex(in[i]) << ", kernel " << hex(got_q[i]) << ", reference "
                                        << hex(want_q[i]));
    }
  }
  for (size_t i = 0; i < scale_bytes; ++i) {
    if (got_scales[i] != want_scales[i]) {
      FAIL("scale byte " << i << " differs (block " << (options.ue8m0 ? i : i / 4) << "): kernel "
                         << hex(got_scales[i]) << ", reference " << hex(want_scales[i]));
    }
  }
}

std::vector<Fp8CastOptions> all_modes() {
  Fp8CastOptions plain, pow2, ue8m0;
  pow2.round_scale_to_pow2 = true;
  ue8m0.ue8m0 = true;
  return {plain, pow2, ue8m0};
}

TEST_CASE("fp8 cast kernel matches the reference byte for byte") {
  Stream stream;
  REQUIRE(stream.status().ok());
  uint32_t seed = 1;
  for (int num_tokens : {1, 7, 128, 4096}) {
    for (int hidden : {128, 7168}) {
      const std::vector<uint16_t> in = make_input(num_tokens, hidden, seed++, /*with_non_finite=*/false);
      for (const Fp8CastOptions& options : all_modes()) check_matches_reference(in, num_tokens, hidden, options, stream);
    }
  }
}

TEST_CASE("fp8 cast kernel matches the reference on NaN and infinities") {
  Stream stream;
  REQUIRE(stream.status().ok());
  const std::vector<uint16_t> in = make_input(64, 7168, 99, /*with_non_finite=*/true);
  for (const Fp8CastOptions& options : all_modes()) check_matches_reference(in, 64, 7168, options, stream);
}

TEST_CASE("fp8 cast kernel on the default stream, and more blocks than the grid") {
  // 65535 CTAs x 16 blocks < 80000 x 14 blocks: the grid-stride loop must wrap.
  const int num_tokens = 80000, hidden = 14 * 128;
  const std::vector<uint16_t> in = make_input(num_tokens, hidden, 7, false);
  std::vector<uint8_t> want_q(in.size());
  std::vector<float> want_scales(static_cast<size_t>(num_tokens) * 14);
  REQUIRE(fp8_cast_reference(in.data(), num_tokens, hidden, want_q.data(), want_scales.data(), {}).ok());

  DeviceBuffer d_in(in.size() * 2), d_q(in.size()), d_scales(want_scales.size() * 4);
  REQUIRE(d_in.status().ok());
  REQUIRE(d_q.status().ok());
  REQUIRE(d_scales.status().ok());
  REQUIRE(d_in.upload(in.data()).ok());
  REQUIRE(launch_fp8_cast(d_in.as<uint16_t>(), num_tokens, hidden, d_q.as<uint8_t>(), d_scales.as<float>(), {},
                          nullptr)
              .ok());
  REQUIRE(cuda_status(cudaDeviceSynchronize(), "sync").ok());
  std::vector<uint8_t> got_q(in.size());
  std::vector<float> got_scales(want_scales.size());
  REQUIRE(d_q.download(got_q.data()).ok());
  REQUIRE(d_scales.download(got_scales.data()).ok());
  CHECK(got_q == want_q);
  CHECK(std::memcmp(got_scales.data(), want_scales.data(), want_scales.size() * 4) == 0);
}

TEST_CASE("launcher rejects bad arguments before launching") {
  DeviceBuffer d_in(4096), d_q(4096), d_scales(64);
  REQUIRE(d_in.status().ok());
  const Status bad_hidden =
      launch_fp8_cast(d_in.as<uint16_t>(), 1, 100, d_q.as<uint8_t>(), d_scales.as<float>(), {}, nullptr);
  CHECK(bad_hidden.code() == StatusCode::kInvalidArgument);
  CHECK(bad_hidden.message().find("hidden=100") != std::string::npos);
  CHECK(launch_fp8_cast(d_in.as<uint16_t>() + 1, 1, 128, d_q.as<uint8_t>(), d_scales.as<float>(), {}, nullptr)
            .code() == StatusCode::kInvalidArgument);  // misaligned input
  CHECK(launch_fp8_cast(nullptr, 1, 128, d_q.as<uint8_t>(), d_scales.as<float>(), {}, nullptr).code() ==
        StatusCode::kInvalidArgument);
  CHECK(launch_fp8_cast(nullptr, 0, 128, nullptr, nullptr, {}, nullptr).ok());  // nothing to do
}

// Not a test: prints the kernel's time and effective bandwidth on the
// DeepEP-sized input, to notice gross regressions by eye.
TEST_CASE("fp8 cast kernel timing (informational)") {
  const int num_tokens = 4096, hidden = 7168;
  const size_t n = static_cast<size_t>(num_tokens) * hidden;
  DeviceBuffer d_in(n * 2), d_q(n), d_scales(n / 128 * 4);
  REQUIRE(d_in.status().ok());
  REQUIRE(d_q.status().ok());
  REQUIRE(d_scales.status().ok());
  REQUIRE(d_in.fill(0x3F).ok());
  cudaEvent_t start, stop;
  REQUIRE(cuda_status(cudaEventCreate(&start), "cudaEventCreate").ok());
  REQUIRE(cuda_status(cudaEventCreate(&stop), "cudaEventCreate").ok());
  constexpr int kIters = 50;
  for (int i = 0; i < 5; ++i) {
    REQUIRE(launch_fp8_cast(d_in.as<uint16_t>(), num_tokens, hidden, d_q.as<uint8_t>(), d_scales.as<float>(), {},
                            nullptr)
                .ok());
  }
  cudaEventRecord(start);
  for (int i = 0; i < kIters; ++i) {
    REQUIRE(launch_fp8_cast(d_in.as<uint16_t>(), num_tokens, hidden, d_q.as<uint8_t>(), d_scales.as<float>(), {},
                            nullptr)
                .ok());
  }
  cudaEventRecord(stop);
  REQUIRE(cuda_status(cudaEventSynchronize(stop), "cudaEventSynchronize").ok());
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  const double us = 1000.0 * ms / kIters;
  const double bytes = n * 2.0 + n + n / 128 * 4.0;
  std::printf("fp8_cast %dx%d: %.1f us per launch, %.0f GB/s (read + write)\n", num_tokens, hidden, us,
              bytes / (us * 1e3));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

}  // namespace
}  // namespace epx::kernels
