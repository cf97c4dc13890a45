// The CPU reference of the FP8 cast: e4m3 / bf16 codecs and the per-block cast.
// Expected values are worked out by hand in the comments, not by re-running
// the code under test.
#include "kernels/fp8_reference.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace epx::kernels {
namespace {

uint16_t bf16(float f) { return float_to_bf16(f); }

std::string hex(unsigned value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%02X", value);
  return text;
}

TEST_CASE("e4m3: every non-NaN code round-trips through float") {
  for (int c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    const float value = e4m3_to_float(code);
    if ((code & 0x7F) == 0x7F) {
      CHECK(std::isnan(value));
      continue;
    }
    INFO("code " << hex(c) << " decodes to " << value);
    CHECK(float_to_e4m3(value) == code);
  }
}

TEST_CASE("e4m3: decode of hand-checked codes") {
  CHECK(e4m3_to_float(0x00) == 0.0f);
  CHECK(std::signbit(e4m3_to_float(0x80)));
  CHECK(e4m3_to_float(0x01) == 0x1p-9f);         // smallest subnormal
  CHECK(e4m3_to_float(0x07) == 7 * 0x1p-9f);     // largest subnormal
  CHECK(e4m3_to_float(0x08) == 0x1p-6f);         // smallest normal
  CHECK(e4m3_to_float(0x38) == 1.0f);            // E=7, M=0
  CHECK(e4m3_to_float(0x3C) == 1.5f);            // E=7, M=4
  CHECK(e4m3_to_float(0x7E) == 448.0f);          // E=15, M=6: largest finite
  CHECK(e4m3_to_float(0xFE) == -448.0f);
  CHECK(e4m3_to_float(0xC0) == -2.0f);           // S, E=8, M=0
}

TEST_CASE("e4m3: encode of known values, saturation and NaN") {
  CHECK(float_to_e4m3(0.0f) == 0x00);
  CHECK(float_to_e4m3(-0.0f) == 0x80);
  CHECK(float_to_e4m3(1.0f) == 0x38);
  CHECK(float_to_e4m3(-2.0f) == 0xC0);
  CHECK(float_to_e4m3(240.0f) == 0x77);          // 1.875 * 2^7: E=14, M=7
  CHECK(float_to_e4m3(448.0f) == 0x7E);
  CHECK(float_to_e4m3(449.0f) == 0x7E);          // saturates, never NaN
  CHECK(float_to_e4m3(464.0f) == 0x7E);          // the tie 448/"480" saturates too
  CHECK(float_to_e4m3(1e30f) == 0x7E);
  CHECK(float_to_e4m3(-1e30f) == 0xFE);
  CHECK(float_to_e4m3(std::numeric_limits<float>::infinity()) == 0x7E);
  CHECK(float_to_e4m3(-std::numeric_limits<float>::infinity()) == 0xFE);
  CHECK(float_to_e4m3(std::numeric_limits<float>::quiet_NaN()) == 0x7F);
  CHECK(float_to_e4m3(-std::numeric_limits<float>::quiet_NaN()) == 0x7F);  // canonical NaN, sign dropped
  CHECK(float_to_e4m3(0x1p-9f) == 0x01);         // smallest subnormal
  CHECK(float_to_e4m3(-0x1p-9f) == 0x81);
  CHECK(float_to_e4m3(0x1p-6f) == 0x08);         // smallest normal
  CHECK(float_to_e4m3(1e-30f) == 0x00);          // underflows to zero ...
  CHECK(float_to_e4m3(-1e-30f) == 0x80);         // ... keeping its sign
  CHECK(float_to_e4m3(std::numeric_limits<float>::denorm_min()) == 0x00);
}

TEST_CASE("e4m3: round to nearest, ties to even") {
  // Subnormal grid, step 2^-9.
  CHECK(float_to_e4m3(0x1p-10f) == 0x00);        // 0.5 steps: tie between 0 and 1 -> 0 (even)
  CHECK(float_to_e4m3(0x1.000002p-10f) == 0x01); // just above the tie -> up
  CHECK(float_to_e4m3(3 * 0x1p-10f) == 0x02);    // 1.5 steps: tie between 1 and 2 -> 2
  CHECK(float_to_e4m3(5 * 0x1p-10f) == 0x02);    // 2.5 steps: tie between 2 and 3 -> 2
  CHECK(float_to_e4m3(15 * 0x1p-10f) == 0x08);   // 7.5 steps: tie between 7 and the smallest normal (8) -> 8
  // Normal grid around 1, step 1/8.
  CHECK(float_to_e4m3(1.0625f) == 0x38);         // tie between 1.0 (M=0) and 1.125 (M=1) -> M=0
  CHECK(float_to_e4m3(1.1875f) == 0x3A);         // tie between 1.125 (M=1) and 1.25 (M=2) -> M=2
  CHECK(float_to_e4m3(1.0625001f) == 0x39);      // above the tie -> up
  CHECK(float_to_e4m3(1.9375f) == 0x40);         // tie between 1.875 (M=7) and 2.0 -> 2.0, carry into E
  CHECK(float_to_e4m3(-1.1875f) == 0xBA);        // symmetric for negatives
  // Near the top, step 32.
  CHECK(float_to_e4m3(432.0f) == 0x7E);          // tie between 416 (M=5) and 448 (M=6) -> 448
  CHECK(float_to_e4m3(400.0f) == 0x7C);          // tie between 384 (M=4) and 416 (M=5) -> 384
}

TEST_CASE("bf16: conversions") {
  CHECK(bf16(1.0f) == 0x3F80);
  CHECK(bf16(-2.0f) == 0xC000);
  CHECK(bf16_to_float(0x3F80) == 1.0f);
  CHECK(bf16(1.0f + 0x1p-8f) == 0x3F80);         // tie between 0x3F80 and 0x3F81 -> even
  CHECK(bf16(1.0f + 3 * 0x1p-8f) == 0x3F82);     // tie between 0x3F81 and 0x3F82 -> even
  CHECK(bf16(1.0f + 0x1.8p-8f) == 0x3F81);       // above the tie -> up
  CHECK(bf16(std::numeric_limits<float>::max()) == 0x7F80);  // rounds to +inf
  CHECK((bf16(std::numeric_limits<float>::quiet_NaN()) & 0x7FC0) == 0x7FC0);
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const uint16_t bits = static_cast<uint16_t>(b);
    if (std::isnan(bf16_to_float(bits))) continue;
    if (float_to_bf16(bf16_to_float(bits)) != bits) {
      FAIL("bf16 " << hex(b) << " does not round-trip");
    }
  }
}

TEST_CASE("scale: plain, power-of-two and UE8M0") {
  const Fp8CastOptions plain;
  Fp8CastOptions pow2;
  pow2.round_scale_to_pow2 = true;
  CHECK(fp8_block_scale(3.5f, plain) == 3.5f / 448.0f);
  CHECK(fp8_block_scale(0.0f, plain) == 1e-4f / 448.0f);       // floor, no division by zero
  CHECK(fp8_block_scale(3.5f, pow2) == 0x1p-7f);               // 3.5/448 = 2^-7 exactly: kept
  CHECK(fp8_block_scale(4.0f, pow2) == 0x1p-6f);               // 4/448 = 1/112 -> up to 1/64
  CHECK(fp8_block_scale(448.0f, pow2) == 1.0f);
  CHECK(fp8_block_scale(449.0f, pow2) == 2.0f);
  CHECK(ue8m0_to_float(127) == 1.0f);
  CHECK(ue8m0_to_float(121) == 0x1p-6f);
  CHECK(std::isnan(ue8m0_to_float(0xFF)));
}

// One token of 128 channels whose values are hand-chosen.
TEST_CASE("cast: one block, hand-checked") {
  std::vector<uint16_t> in(128, bf16(0.0f));
  in[0] = bf16(3.5f);    // amax
  in[1] = bf16(-3.5f);
  in[2] = bf16(1.75f);   // half of amax -> 224 = 0x76 (1.75 * 2^7: E=14, M=6)
  in[3] = bf16(-0.0f);
  std::vector<uint8_t> q(128, 0xAA);
  float scale = -1.0f;

  REQUIRE(fp8_cast_reference(in.data(), 1, 128, q.data(), &scale, Fp8CastOptions()).ok());
  CHECK(scale == 3.5f / 448.0f);
  CHECK(q[0] == 0x7E);
  CHECK(q[1] == 0xFE);
  CHECK(q[2] == 0x76);
  CHECK(q[3] == 0x80);
  CHECK(q[4] == 0x00);
  CHECK(e4m3_to_float(q[2]) * scale == 1.75f);

  // UE8M0: 3.5/448 = 2^-7 -> byte 120, and the codes are unchanged because
  // the scale already was a power of two.
  Fp8CastOptions ue8m0;
  ue8m0.ue8m0 = true;
  std::vector<uint8_t> q2(128, 0xAA);
  uint8_t byte_and_guard[4] = {0xAA, 0xAA, 0xAA, 0xAA};
  REQUIRE(fp8_cast_reference(in.data(), 1, 128, q2.data(), reinterpret_cast<float*>(byte_and_guard), ue8m0).ok());
  CHECK(byte_and_guard[0] == 120);
  CHECK(byte_and_guard[1] == 0xAA);  // exactly one byte per block written
  CHECK(q2 == q);
}

TEST_CASE("cast: zero block gets the floored scale and zero codes") {
  std::vector<uint16_t> in(256, bf16(0.0f));
  in[128] = bf16(1.0f);  // second block non-zero
  std::vector<uint8_t> q(256, 0xAA);
  float scales[2] = {0, 0};
  REQUIRE(fp8_cast_reference(in.data(), 1, 256, q.data(), scales, Fp8CastOptions()).ok());
  CHECK(scales[0] == 1e-4f / 448.0f);
  CHECK(scales[1] == 1.0f / 448.0f);
  for (int i = 0; i < 128; ++i) CHECK(q[i] == 0x00);
  CHECK(q[128] == 0x7E);
  for (int i = 129; i < 256; ++i) CHECK(q[i] == 0x00);
}

TEST_CASE("cast: NaN, quiet or signalling, is left out of amax and encodes to 0x7F") {
  std::vector<uint16_t> in(128, bf16(0.5f));
  in[0] = bf16(2.0f);  // amax
  in[1] = 0x7F81;      // signalling NaN (quiet bit clear) after the amax ...
  in[2] = 0xFFC0;      // ... and a negative quiet NaN
  std::vector<uint8_t> q(128);
  float scale = 0;
  REQUIRE(fp8_cast_reference(in.data(), 1, 128, q.data(), &scale, Fp8CastOptions()).ok());
  CHECK(scale == 2.0f / 448.0f);
  CHECK(q[0] == 0x7E);
  CHECK(q[1] == 0x7F);
  CHECK(q[2] == 0x7F);
  CHECK(q[3] == 0x6E);  // 0.5 * 224 = 112 = 1.75 * 2^6: E=13, M=6
}

TEST_CASE("cast: argument errors") {
  uint16_t in[256] = {};
  uint8_t q[256];
  float scales[2];
  Status s = fp8_cast_reference(in, 1, 100, q, scales, Fp8CastOptions());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("hidden=100") != std::string::npos);
  CHECK(fp8_cast_reference(in, 1, 0, q, scales, Fp8CastOptions()).code() == StatusCode::kInvalidArgument);
  CHECK(fp8_cast_reference(in, 1, 200, q, scales, Fp8CastOptions()).code() == StatusCode::kInvalidArgument);
  CHECK(fp8_cast_reference(in, -1, 128, q, scales, Fp8CastOptions()).code() == StatusCode::kInvalidArgument);
  CHECK(fp8_cast_reference(nullptr, 1, 128, q, scales, Fp8CastOptions()).code() == StatusCode::kInvalidArgument);
  CHECK(fp8_cast_reference(nullptr, 0, 128, nullptr, nullptr, Fp8CastOptions()).ok());  // nothing to do
}

// Random data with a different magnitude per block: every dequantised value
// is within e4m3's half-ulp (2^-4 relative) of its input, plus half a
// subnormal step (2^-10 * scale) in absolute terms for values that land in
// e4m3's subnormal range.
TEST_CASE("cast: dequantised random data stays within e4m3 error") {
  constexpr int kTokens = 9;
  constexpr int kHidden = 7 * 128;
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-20, 20);

  std::vector<uint16_t> in(kTokens * kHidden);
  for (int t = 0; t < kTokens; ++t) {
    for (int b = 0; b < kHidden / 128; ++b) {
      const float magnitude = std::ldexp(1.0f, exponent(rng));
      for (int i = 0; i < 128; ++i) in[t * kHidden + b * 128 + i] = bf16(normal(rng) * magnitude);
    }
  }

  for (int mode = 0; mode < 3; ++mode) {
    Fp8CastOptions options;
    options.round_scale_to_pow2 = mode == 1;
    options.ue8m0 = mode == 2;
    CAPTURE(mode);
    std::vector<uint8_t> q(in.size());
    std::vector<float> scales(kTokens * kHidden / 128);  // more than enough for UE8M0 bytes
    REQUIRE(fp8_cast_reference(in.data(), kTokens, kHidden, q.data(), scales.data(), options).ok());
    const uint8_t* scale_bytes = reinterpret_cast<const uint8_t*>(scales.data());

    int failures = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      const size_t block = i / 128;
      const float scale = options.ue8m0 ? ue8m0_to_float(scale_bytes[block]) : scales[block];
      const float x = bf16_to_float(in[i]);
      const float dequant = e4m3_to_float(q[i]) * scale;
      const float tolerance = 0x1p-4f * std::fabs(x) * (1.0f + 1e-5f) + 0x1p-10f * scale;
      if (!(std::fabs(dequant - x) <= tolerance) && ++failures <= 5) {
        FAIL_CHECK("element " << i << ": x=" << x << " dequant=" << dequant << " scale=" << scale);
      }
    }
    CHECK(failures == 0);
  }
}

}  // namespace
}  // namespace epx::kernels
