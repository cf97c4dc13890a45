// GPU-initiated transfers through real daemons (tagged "gpu": CI builds it,
// tools/device/run.sh runs it on the GPU machine). Two emulated nodes: one
// daemon and one GPU each (GPU 1 when there are two, else GPU 0 for both).
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <iostream>
#include <random>
#include <thread>

#include "epx/client.h"
#include "epx/cuda.h"
#include "tests/gpu/gpu_kernels.h"
#include "tests/gpu/gpu_test.h"
#include "tests/harness/daemon_process.h"
#include "tools/device/bench_kernels.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

namespace {

// One rank of the two-rank job: its client, GPU, windows, signals, ring.
struct GpuRank {
  int device = 0;
  std::unique_ptr<Client> client;
  std::optional<Job> job;
  std::optional<Window> send, recv;
  std::unique_ptr<CudaWindow> send_dev, recv_dev;
  std::unique_ptr<CudaSignals> signals;
  std::unique_ptr<CudaRing> ring;           // one channel
  std::unique_ptr<CudaRingGroup> channels;  // a ring per warp of send_blocks (24 x 128 threads)
  cudaStream_t stream = nullptr;
  ~GpuRank() {
    if (stream) cudaStreamDestroy(stream);
  }
};

constexpr uint64_t kWindow = 8 << 20;

void setup(GpuRank& r, const DaemonProcess& d, uint32_t rank, const std::string& coordinator, int device) {
  r.device = device;
  CUDA_OK(cudaSetDevice(device));
  CUDA_OK(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
  r.client = d.connect("gpu-rank" + std::to_string(rank));
  JoinOptions o;
  o.job_id = "gpu";
  o.world_size = 2;
  o.rank = rank;
  o.coordinator = coordinator;
  auto j = r.client->join(o);
  REQUIRE_MESSAGE(j.ok(), j.status().to_string());
  r.job.emplace(std::move(j.value()));
  auto s = r.job->create_window(kWindow);
  REQUIRE(s.ok());
  r.send.emplace(std::move(s.value()));
  auto v = r.job->create_window(kWindow);
  REQUIRE(v.ok());
  r.recv.emplace(std::move(v.value()));
  auto sd = CudaWindow::map(*r.send);
  REQUIRE_MESSAGE(sd.ok(), sd.status().to_string());
  r.send_dev = std::move(sd.value());
  auto rd = CudaWindow::map(*r.recv);
  REQUIRE(rd.ok());
  r.recv_dev = std::move(rd.value());
  auto sig = CudaSignals::open(*r.job, 8);
  REQUIRE_MESSAGE(sig.ok(), sig.status().to_string());
  r.signals = std::move(sig.value());
  auto ring = CudaRing::open(*r.job, 1024, 2000000000ull);
  REQUIRE_MESSAGE(ring.ok(), ring.status().to_string());
  r.ring = std::move(ring.value());
  auto channels = CudaRingGroup::open(*r.job, 96, 256, 2000000000ull);
  REQUIRE_MESSAGE(channels.ok(), channels.status().to_string());
  r.channels = std::move(channels.value());
}

struct Pair {
  TempDir dir;
  std::unique_ptr<DaemonProcess> a, b;
  GpuRank r0, r1;
  explicit Pair(const std::string& provider) {
    a = std::make_unique<DaemonProcess>(dir, DaemonOptions{"a", provider, {"--proxy-busy-poll", "true"}});
    b = std::make_unique<DaemonProcess>(dir, DaemonOptions{"b", provider, {"--proxy-busy-poll", "true"}});
    const int second = cuda_device_count() > 1 ? 1 : 0;
    auto f = std::async(std::launch::async, [&] { setup(r1, *b, 1, a->peer_address(), second); });
    setup(r0, *a, 0, a->peer_address(), 0);
    f.get();
    auto fb = std::async(std::launch::async, [&] { return r1.job->barrier(20s); });
    REQUIRE(r0.job->barrier(20s).ok());
    REQUIRE(fb.get().ok());
  }
};

// Random blocks (1 B .. 64 KiB) tiling part of the window.
void random_blocks(uint64_t seed, std::vector<uint64_t>* offsets, std::vector<uint32_t>* sizes) {
  std::mt19937_64 rng(seed);
  uint64_t off = 0;
  while (offsets->size() < 3000) {
    uint32_t size = rng() % 3 == 0 ? 1 + rng() % 65536 : 1 + rng() % 512;
    off += rng() % 64;  // gaps, so writes are not all adjacent
    if (off + size > kWindow) break;
    offsets->push_back(off);
    sizes->push_back(size);
    off += size;
  }
}

// rank `from` sends random blocks to `to` from many warps; `to` verifies.
void send_and_verify(GpuRank& from, GpuRank& to, uint32_t from_rank, uint32_t to_rank, uint32_t round, bool warp_post) {
  std::vector<uint64_t> offsets;
  std::vector<uint32_t> sizes;
  random_blocks(round * 7 + from_rank, &offsets, &sizes);
  CUDA_OK(cudaSetDevice(from.device));
  uint64_t* d_off = nullptr;
  uint32_t* d_size = nullptr;
  CUDA_OK(cudaMalloc(&d_off, offsets.size() * sizeof(uint64_t)));
  CUDA_OK(cudaMalloc(&d_size, sizes.size() * sizeof(uint32_t)));
  CUDA_OK(cudaMemcpy(d_off, offsets.data(), offsets.size() * sizeof(uint64_t), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_size, sizes.data(), sizes.size() * sizeof(uint32_t), cudaMemcpyHostToDevice));
  const uint64_t before = to.signals->host().value(from_rank);
  auto s = gpu::launch_send_blocks(from.channels->device(), from.send_dev->device_ptr(), from.send->id(), to.recv->id(),
                                   to_rank, from_rank, round, d_off, d_size, static_cast<uint32_t>(offsets.size()),
                                   from_rank, warp_post, 24, 128, from.stream);
  REQUIRE_MESSAGE(s.ok(), s.to_string());
  CUDA_OK(cudaStreamSynchronize(from.stream));
  REQUIRE_MESSAGE(from.channels->device_error().ok(), from.channels->device_error().to_string());
  auto w = to.signals->host().wait(from_rank, before + offsets.size(), 30s);
  REQUIRE_MESSAGE(w.ok(), w.to_string());
  uint64_t bad = 0;
  for (size_t b = 0; b < offsets.size(); ++b) {
    for (uint32_t i = 0; i < sizes[b]; ++i) {
      bad += to.recv->data()[offsets[b] + i] != gpu::test_pattern(from_rank, round, offsets[b] + i);
    }
  }
  CHECK(bad == 0);
  CHECK(to.signals->host().value(from_rank) == before + offsets.size());
  cudaFree(d_off);
  cudaFree(d_size);
}

}  // namespace

TEST_CASE("GPU-initiated writes with signals, both directions, many warps, ring wrap-around (shm and tcp)") {
  for (const char* provider : {"shm", "tcp"}) {
    CAPTURE(provider);
    Pair p(provider);
    for (uint32_t round = 0; round < 3; ++round) {
      send_and_verify(p.r0, p.r1, 0, 1, round, round % 2 == 1);
      send_and_verify(p.r1, p.r0, 1, 0, round, round % 2 == 0);
    }
    // A kernel waiting on the GPU for a signal that the other GPU sends.
    int* ok = nullptr;
    int result = -1;
    CUDA_OK(cudaSetDevice(p.r1.device));
    CUDA_OK(cudaMalloc(&ok, sizeof(int)));
    const uint64_t target = p.r1.signals->host().value(0) + 1;
    REQUIRE(gpu::launch_wait_signal(p.r1.signals->device(), 0, target, 10000000000ull, ok, p.r1.stream).ok());
    send_and_verify(p.r0, p.r1, 0, 1, 9, false);
    CUDA_OK(cudaSetDevice(p.r1.device));
    CUDA_OK(cudaStreamSynchronize(p.r1.stream));
    CUDA_OK(cudaMemcpy(&result, ok, sizeof(int), cudaMemcpyDeviceToHost));
    CHECK(result == 1);
    cudaFree(ok);
  }
}

TEST_CASE("a kernel whose signal never comes gets a timeout error, not a hang") {
  Pair p("shm");
  int* ok = nullptr;
  int result = -1;
  CUDA_OK(cudaSetDevice(p.r0.device));
  CUDA_OK(cudaMalloc(&ok, sizeof(int)));
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(gpu::launch_wait_signal(p.r0.signals->device(), 5, 1, 200000000ull, ok, p.r0.stream).ok());
  CUDA_OK(cudaStreamSynchronize(p.r0.stream));
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CUDA_OK(cudaMemcpy(&result, ok, sizeof(int), cudaMemcpyDeviceToHost));
  CHECK(result == 0);
  Status e = p.r0.signals->device_error();
  CHECK(e.code() == StatusCode::kDeadlineExceeded);
  CHECK(e.message().find("signal 5") != std::string::npos);
  cudaFree(ok);
}

TEST_CASE("bad descriptors posted by a kernel are rejected and reported; the other rank keeps working") {
  Pair p("shm");
  CUDA_OK(cudaSetDevice(p.r0.device));
  auto bad =
      ring::make_write_signal(1, ring::pack_address(1, 0), ring::pack_address(99, 0), 64, ring::encode_signal(0, 1));
  REQUIRE(gpu::launch_post_raw(p.r0.ring->device(), bad, p.r0.stream).ok());
  CUDA_OK(cudaStreamSynchronize(p.r0.stream));
  Status e;
  wait_until([&] { return !(e = p.r0.ring->device_error()).ok(); }, 2s);
  CHECK(e.code() == StatusCode::kFailedPrecondition);
  CHECK(e.message().find("unknown window") != std::string::npos);
  CHECK(p.r1.signals->host().value(0) == 0);
  // Rank 1's GPU still reaches rank 0.
  send_and_verify(p.r1, p.r0, 1, 0, 0, false);
}

TEST_CASE("same node, two GPUs: NVLink peer stores land intact") {
  if (cuda_device_count() < 2) SKIP_TEST_CASE("NVLink peer stores need two GPUs");
  int can = 0;
  CUDA_OK(cudaDeviceCanAccessPeer(&can, 0, 1));
  REQUIRE(can == 1);
  const uint64_t bytes = 64 << 20;
  void *src = nullptr, *dst = nullptr;
  CUDA_OK(cudaSetDevice(1));
  CUDA_OK(cudaMalloc(&dst, bytes));
  CUDA_OK(cudaMemset(dst, 0, bytes));
  CUDA_OK(cudaDeviceSynchronize());  // the kernels run on non-blocking streams
  CUDA_OK(cudaSetDevice(0));
  cudaError_t pe = cudaDeviceEnablePeerAccess(1, 0);
  REQUIRE((pe == cudaSuccess || pe == cudaErrorPeerAccessAlreadyEnabled));
  (void)cudaGetLastError();
  CUDA_OK(cudaMalloc(&src, bytes));
  std::vector<uint8_t> host(bytes);
  for (uint64_t i = 0; i < bytes; ++i) host[i] = gpu::test_pattern(0, 1, i);
  CUDA_OK(cudaMemcpy(src, host.data(), bytes, cudaMemcpyHostToDevice));
  REQUIRE(gpu::launch_peer_copy(src, dst, bytes, 264, 512, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint8_t> back(bytes);
  CUDA_OK(cudaSetDevice(1));
  CUDA_OK(cudaMemcpy(back.data(), dst, bytes, cudaMemcpyDeviceToHost));
  CHECK(back == host);
  cudaFree(dst);
  CUDA_OK(cudaSetDevice(0));
  cudaFree(src);
}

TEST_CASE("same node: ranks exchange GPU buffers through the daemon and a kernel stores over NVLink") {
  if (cuda_device_count() < 2) SKIP_TEST_CASE("same-node GPU buffer exchange over NVLink needs two GPUs");
  TempDir dir;
  DaemonProcess a(dir, {"a", "shm"}), b(dir, {"b", "shm"});
  // Ranks 0 and 1 share node a (GPU 0 and GPU 1); rank 2 is on node b.
  const uint64_t bytes = 64 << 20;
  struct Local {
    std::unique_ptr<Client> client;
    std::optional<Job> job;
    void* buffer = nullptr;
    std::unique_ptr<CudaPeers> peers;
  } r[3];
  const DaemonProcess* daemon_of[3] = {&a, &a, &b};
  std::vector<std::future<void>> joins;
  for (uint32_t i = 0; i < 3; ++i) {
    joins.push_back(std::async(std::launch::async, [&, i] {
      r[i].client = daemon_of[i]->connect();
      JoinOptions o;
      o.job_id = "nvl";
      o.world_size = 3;
      o.rank = i;
      o.local_rank = i == 1 ? 1 : 0;
      o.coordinator = a.peer_address();
      auto j = r[i].client->join(o);
      REQUIRE(j.ok());
      r[i].job.emplace(std::move(j.value()));
    }));
  }
  for (auto& f : joins) f.get();
  std::vector<std::future<Status>> ex;
  for (uint32_t i = 0; i < 2; ++i) {
    ex.push_back(std::async(std::launch::async, [&, i]() -> Status {
      if (cudaSetDevice(static_cast<int>(i)) != cudaSuccess) return internal_error("cudaSetDevice");
      if (cudaMalloc(&r[i].buffer, bytes) != cudaSuccess) return internal_error("cudaMalloc");
      if (cudaMemset(r[i].buffer, 0, bytes) != cudaSuccess) return internal_error("cudaMemset");
      if (cudaDeviceSynchronize() != cudaSuccess) return internal_error("cudaDeviceSynchronize");
      auto p = CudaPeers::open(*r[i].job, r[i].buffer, bytes, 20s);
      if (!p.ok()) return p.status();
      r[i].peers = std::move(p.value());
      return Status();
    }));
  }
  for (auto& f : ex) {
    auto s = f.get();
    REQUIRE_MESSAGE(s.ok(), s.to_string());
  }
  const auto& table = r[0].peers->pointers();
  REQUIRE(table.size() == 3);
  CHECK(table[0] == r[0].buffer);
  CHECK(table[1] == r[1].buffer);
  CHECK(table[2] == nullptr);  // another node: through the ring, not NVLink

  std::vector<uint8_t> host(bytes);
  for (uint64_t i = 0; i < bytes; ++i) host[i] = gpu::test_pattern(0, 3, i);
  CUDA_OK(cudaSetDevice(0));
  CUDA_OK(cudaMemcpy(r[0].buffer, host.data(), bytes, cudaMemcpyHostToDevice));
  int* ok = nullptr;
  CUDA_OK(cudaMalloc(&ok, 2 * sizeof(int)));
  REQUIRE(gpu::launch_peer_store(r[0].peers->device(), 1, r[0].buffer, bytes, ok, 132, 256, nullptr).ok());
  REQUIRE(gpu::launch_peer_store(r[0].peers->device(), 2, r[0].buffer, bytes, ok + 1, 1, 32, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());
  int flags[2] = {-1, -1};
  CUDA_OK(cudaMemcpy(flags, ok, sizeof(flags), cudaMemcpyDeviceToHost));
  CHECK(flags[0] == 1);
  CHECK(flags[1] == 0);
  std::vector<uint8_t> back(bytes);
  CUDA_OK(cudaSetDevice(1));
  CUDA_OK(cudaMemcpy(back.data(), r[1].buffer, bytes, cudaMemcpyDeviceToHost));
  CHECK(back == host);
  cudaFree(ok);
  for (uint32_t i = 0; i < 2; ++i) {
    r[i].peers.reset();
    cudaSetDevice(static_cast<int>(i));
    cudaFree(r[i].buffer);
  }
}

TEST_CASE("device-side builders refuse values their descriptor cannot carry with kBadArgument naming the argument") {
  Pair p("shm");
  CUDA_OK(cudaSetDevice(p.r0.device));
  int* posted = nullptr;
  CUDA_OK(cudaMalloc(&posted, sizeof(int)));
  struct Case {
    gpu::BadArgumentCase which;
    const char* names;  // in the message
    const char* value;
  };
  const Case cases[] = {
      {gpu::BadArgumentCase::kIncrementTooLarge, "signal increment", "4096"},
      {gpu::BadArgumentCase::kDstRankTooLarge, "destination rank", "70000"},
      {gpu::BadArgumentCase::kSignalIndexTooLarge, "signal index", "1048576"},
      {gpu::BadArgumentCase::kIncrementZero, "signal increment", " 0"},
      {gpu::BadArgumentCase::kStridedCountZero, "strided element count", " 0"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.names);
    // A ring of its own: the first error a ring's kernels record wins.
    auto ring = CudaRing::open(*p.r0.job, 64, 2000000000ull);
    REQUIRE_MESSAGE(ring.ok(), ring.status().to_string());
    int result = -1;
    REQUIRE(gpu::launch_post_bad_argument((*ring)->device(), c.which, posted, p.r0.stream).ok());
    CUDA_OK(cudaStreamSynchronize(p.r0.stream));
    CUDA_OK(cudaMemcpy(&result, posted, sizeof(int), cudaMemcpyDeviceToHost));
    CHECK(result == 0);  // the builder returned false
    const Status e = (*ring)->device_error();
    CHECK(e.code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(e.message().find("kBadArgument") != std::string::npos, e.message());
    CHECK_MESSAGE(e.message().find(c.names) != std::string::npos, e.message());
    CHECK_MESSAGE(e.message().find(c.value) != std::string::npos, e.message());
  }
  // Nothing reached the other rank.
  CHECK(p.r1.signals->host().value(3) == 0);
  cudaFree(posted);
}

TEST_CASE("a ring group of 132 channels, one block each posting at once, delivers every write") {
  Pair p("shm");
  constexpr uint32_t kChannels = 132, kPerChannel = 40, kBytes = 1024;
  constexpr uint64_t kStride = 1536;  // gaps: no two writes coalesce
  static_assert(uint64_t{kChannels} * kPerChannel * kStride <= kWindow, "fits the window");
  auto group = CudaRingGroup::open(*p.r0.job, kChannels, 16, 2000000000ull);  // 16 slots: every channel wraps
  REQUIRE_MESSAGE(group.ok(), group.status().to_string());
  for (uint64_t i = 0; i < kWindow; ++i) p.r0.send->data()[i] = gpu::test_pattern(0, 42, i);
  CUDA_OK(cudaSetDevice(p.r0.device));
  int* ok = nullptr;
  CUDA_OK(cudaMalloc(&ok, kChannels * sizeof(int)));
  CUDA_OK(cudaMemset(ok, 0, kChannels * sizeof(int)));
  const uint64_t before = p.r1.signals->host().value(4);
  REQUIRE(gpu::launch_channel_writes((*group)->device(), kChannels, 1, p.r0.send->id(), p.r1.recv->id(), kPerChannel,
                                     kBytes, kStride, 4, ok, p.r0.stream)
              .ok());
  auto w = p.r1.signals->host().wait(4, before + uint64_t{kChannels} * kPerChannel, 30s);
  REQUIRE_MESSAGE(w.ok(), w.to_string());
  CUDA_OK(cudaStreamSynchronize(p.r0.stream));
  REQUIRE_MESSAGE((*group)->device_error().ok(), (*group)->device_error().to_string());
  std::vector<int> oks(kChannels);
  CUDA_OK(cudaMemcpy(oks.data(), ok, kChannels * sizeof(int), cudaMemcpyDeviceToHost));
  for (uint32_t c = 0; c < kChannels; ++c) CHECK(oks[c] == 1);  // every channel's posts and flush succeeded
  uint64_t bad = 0;
  for (uint64_t k = 0; k < uint64_t{kChannels} * kPerChannel; ++k) {
    for (uint32_t i = 0; i < kBytes; ++i)
      bad += p.r1.recv->data()[k * kStride + i] != gpu::test_pattern(0, 42, k * kStride + i);
  }
  CHECK(bad == 0);
  CHECK(p.r1.signals->host().value(4) == before + uint64_t{kChannels} * kPerChannel);
  cudaFree(ok);
}

TEST_CASE("a stream waits for a signal with cuStreamWaitValue64, without a polling kernel") {
  Pair p("shm");
  CUDA_OK(cudaSetDevice(p.r1.device));
  // The flag is ready before the wait is queued: a device-wide
  // synchronisation after it would wait for the blocked stream forever.
  int* flag = nullptr;
  CUDA_OK(cudaMalloc(&flag, sizeof(int)));
  CUDA_OK(cudaMemset(flag, 0, sizeof(int)));
  CUDA_OK(cudaDeviceSynchronize());
  const uint64_t target = p.r1.signals->host().value(6) + 1;
  Status queued = p.r1.signals->enqueue_wait(6, target, p.r1.stream);
  if (queued.code() == StatusCode::kFailedPrecondition) {
    CHECK(queued.message().find("CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS") != std::string::npos);
    SKIP_TEST_CASE("this GPU has no 64-bit stream memory operations: " << queued.message());
  }
  REQUIRE_MESSAGE(queued.ok(), queued.to_string());
  CHECK(p.r1.signals->enqueue_wait(8, 1, p.r1.stream).code() == StatusCode::kInvalidArgument);
  REQUIRE(gpu::launch_set_flag(flag, p.r1.stream).ok());
  // Nothing has sent the signal: the stream cannot have passed the wait.
  CHECK(cudaStreamQuery(p.r1.stream) == cudaErrorNotReady);
  // Rank 0 sends it from a host ring, through both daemons. Not from a
  // kernel: on one GPU, rank 0's stream may share a hardware queue with the
  // blocked one, and its kernel would then wait behind the wait forever
  // (cuda.h, enqueue_wait).
  auto host_ring = p.r0.job->open_ring(64);
  REQUIRE_MESSAGE(host_ring.ok(), host_ring.status().to_string());
  REQUIRE(host_ring.value()->post_signal(1, SignalRef{6, 1}).ok());
  // The host bounds its own wait (the GPU-side one cannot time out).
  CUDA_OK(cudaSetDevice(p.r1.device));
  cudaError_t done = cudaErrorNotReady;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((done = cudaStreamQuery(p.r1.stream)) == cudaErrorNotReady && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  if (done == cudaErrorNotReady) {
    // Try to release the stream so the test can end, with a bounded wait:
    // on the lent H200 under MPS (2026-12-01) the stream never passed, not
    // even after this store, and an unbounded synchronize hung the binary.
    __atomic_store_n(&p.r1.signals->host().words()[6], target, __ATOMIC_RELEASE);
    const auto release_deadline = std::chrono::steady_clock::now() + 5s;
    while (cudaStreamQuery(p.r1.stream) == cudaErrorNotReady && std::chrono::steady_clock::now() < release_deadline) {
      std::this_thread::sleep_for(1ms);
    }
    if (cudaStreamQuery(p.r1.stream) == cudaErrorNotReady) {
      // The context cannot be torn down with a stream blocked on the GPU:
      // report and leave now rather than hang in the destructors.
      std::cout << "FAILED: the stream did not pass its cuStreamWaitValue64 wait, not even after the host set the "
                   "word itself; exiting without tearing down CUDA"
                << std::endl;
      std::_Exit(1);
    }
    FAIL("the stream did not pass its wait within 10 s of the signal");
  }
  CHECK(done == cudaSuccess);
  int result = 0;
  CUDA_OK(cudaMemcpy(&result, flag, sizeof(int), cudaMemcpyDeviceToHost));
  CHECK(result == 1);
  cudaFree(flag);
}
