// What a rank process of a device test or benchmark (ll_rank, normal_rank)
// needs besides the SDK: failing loudly, and device copies of host data.
// A rank that fails prints "RANK_FAIL: <what>" and exits 1, so the test that
// started it shows the reason with the exit status.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "epx/status.h"

namespace epx {

[[noreturn]] inline void fail(const std::string& what) {
  std::cout << "RANK_FAIL: " << what << std::endl;
  std::exit(1);
}

inline void ok_or_fail(const Status& s, const std::string& what) {
  if (!s.ok()) fail(what + ": " + s.to_string());
}

inline void cuda_or_fail(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) fail(what + ": " + cudaGetErrorName(e) + " " + cudaGetErrorString(e));
}

// A device copy of host data that lives as long as the object.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(std::max<size_t>(n, 1)) {
    cuda_or_fail(cudaMalloc(&p_, n_ * sizeof(T)), "cudaMalloc");
  }
  explicit DeviceArray(const std::vector<T>& v) : DeviceArray(v.size()) { upload(v); }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  // Complete when it returns: a copy from pageable memory may otherwise
  // still be in flight when a kernel on a non-blocking stream reads it.
  void upload(const std::vector<T>& v) {
    if (!v.empty()) cuda_or_fail(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
    cuda_or_fail(cudaDeviceSynchronize(), "upload");
  }
  T* get() const { return p_; }

 private:
  size_t n_;
  T* p_ = nullptr;
};

template <typename T>
std::vector<T> download(const void* p, size_t n) {
  std::vector<T> v(n);
  if (n > 0) cuda_or_fail(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
  return v;
}

}  // namespace epx
