// What a rank process of a device test or benchmark (ll_rank, normal_rank)
// needs besides the SDK: failing loudly, and device copies of host data.
// A rank that fails prints "RANK_FAIL: <what>" and exits 1, so the test that
// started it shows the reason with the exit status.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "epx/client.h"
#include "epx/cuda.h"
#include "epx/status.h"

namespace epx {

// Wall-clock seconds (Unix time), so failures of different ranks can be
// put in order: the earliest is usually the cause of the rest.
inline std::string wall_seconds() {
  const auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  char text[32];
  std::snprintf(text, sizeof(text), "%.3f", now);
  return text;
}

[[noreturn]] inline void fail(const std::string& what) {
  std::cout << "RANK_FAIL: " << what << " (at " << wall_seconds() << ")" << std::endl;
  // Peers may still be storing into this process's GPU memory (CUDA IPC)
  // for the call that failed here; exiting at once frees it under them, and
  // the fault that follows (reported to every process sharing the GPU under
  // MPS) would bury this, the first failure. A short grace lets their calls
  // finish or time out first.
  std::this_thread::sleep_for(std::chrono::seconds(5));
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

// The flags of a rank program (each program gives its own defaults).
struct RankArgs {
  std::string socket, job, coordinator, mode = "check";
  uint32_t world = 2, rank = 0, local_rank = 0;
  int device = 0;
  int victim = -1;
  int iters = 20;
  int hidden = 7168, experts = 256, topk = 8, tokens = 128;
  int num_sms = 0;
  int timeout_ms = 20000;
  // Endpoint pairs of normal_rank's plain libfabric exchange baseline: the
  // daemons' rails per domain, so both sides stripe over as many.
  int baseline_pairs = 1;
  // //tools/bench:fabric_exchange_peer: runs the baseline's side B in a
  // process of its own, as the two daemons are; empty: one process.
  std::string fabric_peer;
};

// --name value pairs over `defaults`; fails on an unknown flag or without --socket.
inline RankArgs parse_rank_args(int argc, char** argv, RankArgs a) {
  if (argc % 2 != 1) fail("flags come in --name value pairs");
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--socket")
      a.socket = v;
    else if (k == "--job")
      a.job = v;
    else if (k == "--coordinator")
      a.coordinator = v;
    else if (k == "--mode")
      a.mode = v;
    else if (k == "--world")
      a.world = std::stoul(v);
    else if (k == "--rank")
      a.rank = std::stoul(v);
    else if (k == "--local-rank")
      a.local_rank = std::stoul(v);
    else if (k == "--device")
      a.device = std::stoi(v);
    else if (k == "--victim")
      a.victim = std::stoi(v);
    else if (k == "--iters")
      a.iters = std::stoi(v);
    else if (k == "--baseline-pairs")
      a.baseline_pairs = std::stoi(v);
    else if (k == "--fabric-peer")
      a.fabric_peer = v;
    else if (k == "--hidden")
      a.hidden = std::stoi(v);
    else if (k == "--experts")
      a.experts = std::stoi(v);
    else if (k == "--topk")
      a.topk = std::stoi(v);
    else if (k == "--tokens")
      a.tokens = std::stoi(v);
    else if (k == "--num-sms")
      a.num_sms = std::stoi(v);
    else if (k == "--timeout-ms")
      a.timeout_ms = std::stoi(v);
    else
      fail("unknown flag " + k);
  }
  if (a.socket.empty()) fail("--socket is required");
  return a;
}

// Connects to the rank's epxd and joins its job (60 s for the bootstrap),
// failing loudly; sets the CUDA device first.
inline std::unique_ptr<Client> connect_rank(const RankArgs& args, const std::string& name) {
  cuda_or_fail(cudaSetDevice(args.device), "cudaSetDevice");
  ClientOptions co;
  co.name = name + " " + std::to_string(args.rank);
  auto client = Client::connect(args.socket, co);
  if (!client.ok()) fail("connect: " + client.status().to_string());
  return std::move(*client);
}

inline Job join_rank(Client& client, const RankArgs& args) {
  JoinOptions jo;
  jo.job_id = args.job;
  jo.world_size = args.world;
  jo.rank = args.rank;
  jo.local_rank = args.local_rank;
  jo.coordinator = args.coordinator;
  jo.timeout = std::chrono::seconds(60);
  auto gpu = gpu_pci_address(args.device);
  if (!gpu.ok()) fail("GPU " + std::to_string(args.device) + ": " + gpu.status().to_string());
  jo.gpu_pci_address = *gpu;
  auto job = client.join(jo);
  if (!job.ok()) fail("join: " + job.status().to_string());
  return std::move(*job);
}

}  // namespace epx
