// Device windows on a GPU machine (tagged "gpu": CI builds it,
// tools/device/run.sh runs it). The lent machines have no EFA and Debian's
// libfabric has no FI_MR_DMABUF, so the daemon must refuse GPU memory; this
// checks the GPU half (cuMemCreate, dma-buf export), the refusal, and that
// the fallback host window carries kernel-posted writes intact between two
// emulated nodes (one daemon each, as in gpu_path_test).
#include <cuda_runtime.h>
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <optional>
#include <random>
#include <vector>

#include "epx/client.h"
#include "epx/cuda.h"
#include "tests/gpu/gpu_kernels.h"
#include "tests/gpu/gpu_test.h"
#include "tests/harness/daemon_process.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kWindow = 4 << 20;

std::string fd_target(int fd) {
  char link[256] = {};
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(path.c_str(), link, sizeof(link) - 1);
  return n > 0 ? std::string(link, static_cast<size_t>(n)) : std::string();
}

// One rank: its client, GPU windows (send, recv), signals and ring.
struct Rank {
  int device = 0;
  std::unique_ptr<Client> client;
  std::optional<Job> job;
  std::unique_ptr<GpuWindow> send, recv;
  std::unique_ptr<CudaSignals> signals;
  std::unique_ptr<CudaRingGroup> ring;  // a ring per warp of send_blocks (16 x 128 threads)
  cudaStream_t stream = nullptr;
  ~Rank() {
    if (stream) cudaStreamDestroy(stream);
  }
};

void setup(Rank& r, const DaemonProcess& d, uint32_t rank, const std::string& coordinator, int device) {
  r.device = device;
  CUDA_OK(cudaSetDevice(device));
  CUDA_OK(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
  r.client = d.connect("gpu-window-rank" + std::to_string(rank));
  JoinOptions o;
  o.job_id = "gpu-window";
  o.world_size = 2;
  o.rank = rank;
  o.coordinator = coordinator;
  auto j = r.client->join(o);
  REQUIRE_MESSAGE(j.ok(), j.status().to_string());
  r.job.emplace(std::move(j.value()));

  // Without the fallback the daemon's refusal is the error, and it uses up
  // no window id.
  GpuWindowOptions strict;
  strict.allow_host_fallback = false;
  auto refused = GpuWindow::create(*r.job, kWindow, device, strict);
  REQUIRE(!refused.ok());
  CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
  CHECK(refused.status().message().find("rail 0 (shm") != std::string::npos);
  CHECK(refused.status().message().find("copies with the CPU") != std::string::npos);

  auto s = GpuWindow::create(*r.job, kWindow, device);
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  r.send = std::move(s.value());
  auto v = GpuWindow::create(*r.job, kWindow, device);
  REQUIRE_MESSAGE(v.ok(), v.status().to_string());
  r.recv = std::move(v.value());
  for (const GpuWindow* w : {r.send.get(), r.recv.get()}) {
    CHECK_FALSE(w->is_device());
    CHECK(w->fallback_reason().find("rail 0 (shm") != std::string::npos);
    CHECK(w->fallback_reason().find("copies with the CPU") != std::string::npos);
    CHECK(w->host_ptr() != nullptr);
    CHECK(w->size() >= kWindow);
  }
  CHECK(r.send->id() == 1);  // the refused attempt took no id
  CHECK(r.recv->id() == 2);
  MESSAGE("rank " << rank << " fell back to host windows: " << r.send->fallback_reason());
  auto sig = CudaSignals::open(*r.job, 4);
  REQUIRE_MESSAGE(sig.ok(), sig.status().to_string());
  r.signals = std::move(sig.value());
  auto ring = CudaRingGroup::open(*r.job, 64, 256, 2000000000ull);
  REQUIRE_MESSAGE(ring.ok(), ring.status().to_string());
  r.ring = std::move(ring.value());
}

// Random blocks (1 B .. 64 KiB) over part of the window.
void random_blocks(uint64_t seed, std::vector<uint64_t>* offsets, std::vector<uint32_t>* sizes) {
  std::mt19937_64 rng(seed);
  uint64_t off = 0;
  while (offsets->size() < 1500) {
    uint32_t size = rng() % 3 == 0 ? 1 + rng() % 65536 : 1 + rng() % 512;
    off += rng() % 64;
    if (off + size > kWindow) break;
    offsets->push_back(off);
    sizes->push_back(size);
    off += size;
  }
}

// A kernel on `from`'s GPU writes test bytes into its send window and posts
// a write+signal of each block to `to`'s recv window; every byte is checked.
void send_and_verify(Rank& from, Rank& to, uint32_t from_rank, uint32_t to_rank, uint32_t round) {
  std::vector<uint64_t> offsets;
  std::vector<uint32_t> sizes;
  random_blocks(round * 11 + from_rank, &offsets, &sizes);
  CUDA_OK(cudaSetDevice(from.device));
  uint64_t* d_off = nullptr;
  uint32_t* d_size = nullptr;
  CUDA_OK(cudaMalloc(&d_off, offsets.size() * sizeof(uint64_t)));
  CUDA_OK(cudaMalloc(&d_size, sizes.size() * sizeof(uint32_t)));
  CUDA_OK(cudaMemcpy(d_off, offsets.data(), offsets.size() * sizeof(uint64_t), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_size, sizes.data(), sizes.size() * sizeof(uint32_t), cudaMemcpyHostToDevice));
  const uint64_t before = to.signals->host().value(from_rank);
  auto s =
      gpu::launch_send_blocks(from.ring->device(), from.send->device_ptr(), static_cast<uint16_t>(from.send->id()),
                              static_cast<uint16_t>(to.recv->id()), to_rank, from_rank, round, d_off, d_size,
                              static_cast<uint32_t>(offsets.size()), from_rank, round % 2 == 1, 16, 128, from.stream);
  REQUIRE_MESSAGE(s.ok(), s.to_string());
  CUDA_OK(cudaStreamSynchronize(from.stream));
  REQUIRE_MESSAGE(from.ring->device_error().ok(), from.ring->device_error().to_string());
  auto w = to.signals->host().wait(from_rank, before + offsets.size(), 30s);
  REQUIRE_MESSAGE(w.ok(), w.to_string());
  // Read back through the GPU pointer (a device window would need this;
  // for the host fallback it goes through the mapping).
  std::vector<uint8_t> got(to.recv->size());
  CUDA_OK(cudaSetDevice(to.device));
  CUDA_OK(cudaMemcpy(got.data(), to.recv->device_ptr(), got.size(), cudaMemcpyDefault));
  uint64_t bad = 0, checked = 0;
  for (size_t b = 0; b < offsets.size(); ++b) {
    for (uint32_t i = 0; i < sizes[b]; ++i) {
      bad += got[offsets[b] + i] != gpu::test_pattern(from_rank, round, offsets[b] + i);
      ++checked;
    }
  }
  CHECK(bad == 0);
  MESSAGE(checked << " bytes in " << offsets.size() << " blocks from rank " << from_rank << " verified");
  cudaFree(d_off);
  cudaFree(d_size);
}

}  // namespace

TEST_CASE("GPU memory from cuMemCreate maps, works and exports as a dma-buf") {
  auto a = GpuAllocation::create(0, 5 << 20);
  REQUIRE_MESSAGE(a.ok(), a.status().to_string());
  CHECK((*a)->size() >= (5u << 20));
  CHECK((*a)->size() % (2u << 20) == 0);  // granularity-rounded
  MESSAGE("GPU 0 (" << (*a)->pci_bus_id() << "): " << (*a)->size() << " bytes at "
                    << static_cast<const void*>((*a)->device_ptr())
                    << ", GPUDirect RDMA flag: " << ((*a)->gpu_direct_rdma() ? "set" : "not supported"));
  // The mapping is usable by the GPU.
  CUDA_OK(cudaSetDevice(0));
  CUDA_OK(cudaMemset((*a)->device_ptr(), 0x5a, (*a)->size()));
  std::vector<uint8_t> back((*a)->size());
  CUDA_OK(cudaMemcpy(back.data(), (*a)->device_ptr(), back.size(), cudaMemcpyDeviceToHost));
  CHECK(std::count(back.begin(), back.end(), 0x5a) == static_cast<long>(back.size()));
  // And exports as a dma-buf of at least its size.
  auto fd = (*a)->dmabuf_fd();
  REQUIRE_MESSAGE(fd.ok(), fd.status().to_string());
  CHECK(*fd >= 0);
  // The daemon accepts exactly these forms (daemon/shm/submitted_fds.cc).
  const std::string target = fd_target(*fd);
  CHECK_MESSAGE((target == "anon_inode:dmabuf" || target.rfind("/dmabuf:", 0) == 0), target);
  const off_t size = ::lseek(*fd, 0, SEEK_END);
  MESSAGE("dma-buf fd " << *fd << " -> " << fd_target(*fd) << ", size " << size);
  if (size >= 0) CHECK(static_cast<uint64_t>(size) >= (*a)->size());
  auto again = (*a)->dmabuf_fd();
  REQUIRE(again.ok());
  CHECK(*again == *fd);  // one export, owned by the allocation
  a->reset();            // unmap, free the range and the memory, close the fd
  CHECK(fd_target(*fd).find("dmabuf") == std::string::npos);
}

TEST_CASE("shm daemons refuse GPU memory; the host fallback carries kernel writes intact both ways") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "shm", {"--proxy-busy-poll", "true"}});
  DaemonProcess b(dir, {"b", "shm", {"--proxy-busy-poll", "true"}});
  Rank r0, r1;
  const int second = cuda_device_count() > 1 ? 1 : 0;
  auto f = std::async(std::launch::async, [&] { setup(r1, b, 1, a.peer_address(), second); });
  setup(r0, a, 0, a.peer_address(), 0);
  f.get();
  auto fb = std::async(std::launch::async, [&] { return r1.job->barrier(20s); });
  REQUIRE(r0.job->barrier(20s).ok());
  REQUIRE(fb.get().ok());
  for (uint32_t round = 0; round < 2; ++round) {
    send_and_verify(r0, r1, 0, 1, round);
    send_and_verify(r1, r0, 1, 0, round);
  }
  // The daemon counts them as host windows and says why GPU memory is out.
  auto [code, json] = a.epxctl({"status", "--json"});
  CHECK(code == 0);
  CHECK(json.find("\"hostWindows\": 2") != std::string::npos);
  CHECK(json.find("\"deviceWindows\": 0") != std::string::npos);
  CHECK(json.find("copies with the CPU") != std::string::npos);
}
