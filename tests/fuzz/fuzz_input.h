// FuzzInput: takes typed values from the front of a fuzzer's byte string,
// so a target can turn arbitrary bytes into structured calls. Running out
// of bytes is no error: every taker then returns zeros (or what is left),
// so each input maps to exactly one call sequence.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace epx::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return size_ == 0; }
  size_t remaining() const { return size_; }

  // A little-endian integer of sizeof(T) bytes (fewer at the end: zero-filled).
  template <typename T>
  T take() {
    T value{};
    const size_t n = std::min(sizeof(T), size_);
    std::memcpy(&value, data_, n);
    advance(n);
    return value;
  }

  bool take_bool() { return (take<uint8_t>() & 1) != 0; }

  // Up to `max` bytes, the length given by the next byte (0..255, capped).
  std::string take_short_string(size_t max = 255) { return take_bytes(std::min<size_t>(take<uint8_t>(), max)); }

  // Up to `max` bytes, the length given by the next two bytes.
  std::string take_string(size_t max = 65535) { return take_bytes(std::min<size_t>(take<uint16_t>(), max)); }

  // Exactly `n` bytes, or what is left.
  std::string take_bytes(size_t n) {
    n = std::min(n, size_);
    std::string out(reinterpret_cast<const char*>(data_), n);
    advance(n);
    return out;
  }

  std::string take_rest() { return take_bytes(size_); }

 private:
  void advance(size_t n) {
    data_ += n;
    size_ -= n;
  }

  const uint8_t* data_;
  size_t size_;
};

}  // namespace epx::fuzz

// libFuzzer's entry point; each target defines it once.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
