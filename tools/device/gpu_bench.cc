// gpu_bench: GPU-initiated transfers through EPX on the GPU machine. Two
// epxd daemons (shm provider, busy-polling pinned proxies) emulate two
// nodes; rank 0 drives GPU 0, rank 1 GPU 1 (or GPU 0 when alone).
//   (a) one-way latency of a kernel's write+signal seen by the peer kernel
//   (b) streaming bandwidth of kernel-posted writes through host windows
//   (c) end-to-end descriptor rate, many warps posting 64 B write+signal
//   (d) proxy capacity: many warps posting adjacent 64 B writes (coalesced)
//   (e) NVLink peer-store bandwidth (two GPUs)
// Baselines in the same run: the shm provider's own latency, bandwidth and
// small-write rate (//tools/bench:fabric_baseline).
//   gpu_bench [--epxd PATH] [--cores A,B,C] [--json]
// --json prints one line {"rows": [{"what", "bytes", "value", "unit",
// "compare"}, ...]} (tools/bench/bench_report.proto, GpuBenchReport).
// --cores: proxy of daemon a, proxy of daemon b, and this process's host
// thread (which waits on signals); keep them apart so nothing shares a core
// with a busy-polling proxy.
#include <cuda_runtime.h>
#include <rdma/fabric.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <cstring>
#include <future>
#include <iostream>
#include <optional>
#include <thread>

#include "epx/client.h"
#include "epx/cuda.h"
#include "proto/ring/ring_host.h"
#include "tools/bench/affinity.h"
#include "tools/bench/bench_report.pb.h"
#include "tools/bench/fabric_baseline.h"
#include "tools/bench/spawned_daemon.h"
#include "tools/bench/stats.h"
#include "tools/cli.h"
#include "tools/device/bench_kernels.h"
#include "tools/device/latency_floor.h"

namespace po = boost::program_options;
namespace report = epx::bench_report::v1;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kWindow = 64ull << 20;

#define CHECK_CUDA(x)                                                            \
  do {                                                                           \
    cudaError_t e_ = (x);                                                        \
    if (e_ != cudaSuccess) {                                                     \
      std::cerr << "gpu_bench: " #x ": " << cudaGetErrorString(e_) << std::endl; \
      std::exit(1);                                                              \
    }                                                                            \
  } while (0)

void die(const std::string& what, const epx::Status& s) {
  std::cerr << "gpu_bench: " << what << ": " << s.to_string() << std::endl;
  std::exit(1);
}

struct Rank {
  int device = 0;
  std::unique_ptr<epx::Client> client;
  std::optional<epx::Job> job;
  std::optional<epx::Window> send, recv;
  std::unique_ptr<epx::CudaWindow> send_dev;
  std::unique_ptr<epx::CudaSignals> signals;
  std::unique_ptr<epx::CudaRing> ring;           // one channel: latency, streaming
  std::unique_ptr<epx::CudaRingGroup> channels;  // a ring per warp: descriptor rates
  cudaStream_t stream = nullptr;
};

// Warps of the rate kernels, one ring (channel) each.
constexpr uint32_t kBenchChannels = 192;

void setup(Rank& r, const std::string& socket, uint32_t rank, const std::string& coordinator, int device) {
  r.device = device;
  CHECK_CUDA(cudaSetDevice(device));
  CHECK_CUDA(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
  auto c = epx::Client::connect(socket);
  if (!c.ok()) die("connect", c.status());
  r.client = std::move(c.value());
  epx::JoinOptions o;
  o.job_id = "gpubench";
  o.world_size = 2;
  o.rank = rank;
  o.coordinator = coordinator;
  auto j = r.client->join(o);
  if (!j.ok()) die("join", j.status());
  r.job.emplace(std::move(j.value()));
  auto s = r.job->create_window(kWindow);
  if (!s.ok()) die("window", s.status());
  r.send.emplace(std::move(s.value()));
  auto v = r.job->create_window(kWindow);
  if (!v.ok()) die("window", v.status());
  r.recv.emplace(std::move(v.value()));
  auto sd = epx::CudaWindow::map(*r.send);
  if (!sd.ok()) die("map window", sd.status());
  r.send_dev = std::move(sd.value());
  auto sig = epx::CudaSignals::open(*r.job, 8);
  if (!sig.ok()) die("signals", sig.status());
  r.signals = std::move(sig.value());
  auto ring = epx::CudaRing::open(*r.job, 16384, 5000000000ull);
  if (!ring.ok()) die("ring", ring.status());
  r.ring = std::move(ring.value());
  auto channels = epx::CudaRingGroup::open(*r.job, kBenchChannels, 4096, 5000000000ull);
  if (!channels.ok()) die("ring group", channels.status());
  r.channels = std::move(channels.value());
}

struct Row {
  std::string what;
  size_t bytes;
  double value;
  std::string unit;
  std::string compare;  // what it is compared with, and that figure
};

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("gpu_bench options");
  opts.add_options()("help,h", "help")("epxd", po::value<std::string>()->default_value(""),
                                       "path of epxd (default: beside this binary)")(
      "cores", po::value<std::string>()->default_value(""),
      "cores for proxy A, proxy B and this process's signal-waiting thread (comma-separated); empty: no pinning")(
      "json", "JSON output");
  po::variables_map vm;
  if (auto exit_code = epx::cli::parse(argc, argv, opts, &vm, "gpu_bench")) return *exit_code;
  std::string epxd = vm["epxd"].as<std::string>();
  const bool json = vm.count("json") > 0;
  auto parsed_cores = epx::cli::parse_cores(vm["cores"].as<std::string>(), 3);
  if (!parsed_cores.ok()) {
    std::cerr << "gpu_bench: --cores: " << parsed_cores.status().message() << "\n";
    return 2;
  }
  const std::vector<int> cores = std::move(parsed_cores.value());
  if (epx::cuda_device_count() == 0) {
    std::cerr << "gpu_bench: no CUDA device\n";
    return 1;
  }
  // The host thread waits on signals pinned to its own core; the baselines
  // pin their own threads, so they run with the whole machine's affinity.
  const cpu_set_t all = epx::bench::current_thread_cpus();
  auto pin_self = [&] { epx::bench::pin_current_thread(cores[2]); };
  auto unpin_self = [&] { epx::bench::set_current_thread_cpus(all); };
  if (epxd.empty()) epxd = epx::bench::find_epxd("../../daemon/epxd");
  char tmpl[] = "/tmp/epx-gpubench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  auto da = epx::bench::SpawnedDaemon::start(epxd, dir, "a", "shm", "", cores[0]);
  if (!da.ok()) die("daemon a", da.status());
  auto db = epx::bench::SpawnedDaemon::start(epxd, dir, "b", "shm", "", cores[1]);
  if (!db.ok()) die("daemon b", db.status());
  auto status_of = [&](const std::string&) {
    auto st = (*da)->status();
    if (!st.ok()) die("status of daemon a", st.status());
    return st.value();
  };
  const std::string coordinator = status_of("a").peer_address();
  const int second = epx::cuda_device_count() > 1 ? 1 : 0;
  Rank r0, r1;
  auto f = std::async(std::launch::async, [&] { setup(r1, (*db)->socket(), 1, coordinator, second); });
  setup(r0, (*da)->socket(), 0, coordinator, 0);
  f.get();
  auto fb = std::async(std::launch::async, [&] { return r1.job->barrier(30s); });
  if (auto s = r0.job->barrier(30s); !s.ok()) die("barrier", s);
  if (auto s = fb.get(); !s.ok()) die("barrier", s);

  epx::bench::BaselineOptions bo;
  bo.provider = "shm";
  std::vector<Row> rows;

  // (a) latency: two persistent single-thread kernels ping-pong.
  std::vector<size_t> sizes = {8, 64, 512, 4096, 32768, 262144, 1 << 20};
  auto base_lat = epx::bench::baseline_latency(bo, sizes);
  // The same writes posted as EPX's proxies post them (every write
  // delivery-complete): what that costs shm by itself.
  epx::bench::BaselineOptions delivered = bo;
  delivered.write_flags = FI_DELIVERY_COMPLETE;
  auto base_lat_dc = epx::bench::baseline_latency(delivered, sizes);
  pin_self();
  if (!base_lat.ok()) die("baseline latency", base_lat.status());
  if (!base_lat_dc.ok()) die("baseline latency, FI_DELIVERY_COMPLETE", base_lat_dc.status());
  uint64_t* elapsed = nullptr;
  int* ok = nullptr;
  CHECK_CUDA(cudaSetDevice(0));
  CHECK_CUDA(cudaMalloc(&elapsed, 2 * sizeof(uint64_t)));
  CHECK_CUDA(cudaMalloc(&ok, 2 * sizeof(int)));
  uint64_t* elapsed1 = nullptr;
  int* ok1 = nullptr;
  CHECK_CUDA(cudaSetDevice(r1.device));
  CHECK_CUDA(cudaMalloc(&elapsed1, 2 * sizeof(uint64_t)));
  CHECK_CUDA(cudaMalloc(&ok1, 2 * sizeof(int)));
  for (size_t i = 0; i < sizes.size(); ++i) {
    const uint32_t iters = sizes[i] >= 262144 ? 200 : 1000;
    // The first size also warms the GPUs' clocks and the proxies up.
    const uint32_t warm = i == 0 ? 5000 : 20;
    std::cerr << "[gpu_bench] latency " << sizes[i] << " B" << std::endl;
    CHECK_CUDA(cudaSetDevice(r1.device));
    if (auto s = epx::gpu::launch_pingpong(r1.ring->device(), r1.signals->device(), 1, iters + warm, sizes[i], 0,
                                           r1.send->id(), r0.recv->id(), elapsed1, ok1, r1.stream);
        !s.ok())
      die("pong", s);
    CHECK_CUDA(cudaSetDevice(0));
    // Warm-up round trips are inside the pong's count: run them first.
    if (auto s = epx::gpu::launch_pingpong(r0.ring->device(), r0.signals->device(), 0, warm, sizes[i], 1, r0.send->id(),
                                           r1.recv->id(), elapsed, ok, r0.stream);
        !s.ok())
      die("ping warm-up", s);
    if (auto s = epx::gpu::launch_pingpong(r0.ring->device(), r0.signals->device(), 0, iters, sizes[i], 1,
                                           r0.send->id(), r1.recv->id(), elapsed, ok, r0.stream);
        !s.ok())
      die("ping", s);
    CHECK_CUDA(cudaStreamSynchronize(r0.stream));
    CHECK_CUDA(cudaSetDevice(r1.device));
    CHECK_CUDA(cudaStreamSynchronize(r1.stream));
    uint64_t ns = 0;
    int good = 0;
    CHECK_CUDA(cudaSetDevice(0));
    CHECK_CUDA(cudaMemcpy(&ns, elapsed, sizeof(ns), cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(&good, ok, sizeof(good), cudaMemcpyDeviceToHost));
    if (!good) die("latency", epx::deadline_exceeded(r0.signals->device_error().to_string()));
    rows.push_back({"GPU one-way write+signal", sizes[i], ns / 1e3 / (2.0 * iters), "us",
                    "shm fi_writedata one-way " + std::to_string((*base_lat)[i].one_way_us) +
                        " us; fi_writemsg FI_DELIVERY_COMPLETE one-way " +
                        std::to_string((*base_lat_dc)[i].one_way_us) + " us"});
  }

  // (b) streaming bandwidth from a kernel, host windows.
  std::vector<size_t> bw_sizes = {65536, 1 << 20, 4 << 20};
  unpin_self();
  auto base_bw = epx::bench::baseline_bandwidth(bo, bw_sizes, 64);
  // The same writes walking a window as large as EPX's (the ceiling above
  // rewrites one cache-hot buffer).
  epx::bench::BaselineOptions walking = bo;
  walking.stream_span = kWindow;
  auto base_walk = epx::bench::baseline_bandwidth(walking, bw_sizes, 64);
  if (!base_walk.ok()) die("baseline bandwidth, walking the window", base_walk.status());
  pin_self();
  if (!base_bw.ok()) die("baseline bandwidth", base_bw.status());
  for (size_t i = 0; i < bw_sizes.size(); ++i) {
    std::cerr << "[gpu_bench] bandwidth " << bw_sizes[i] << " B" << std::endl;
    const uint32_t count = static_cast<uint32_t>(std::max<uint64_t>(64, (2ull << 30) / bw_sizes[i]));
    const uint64_t before = r1.signals->host().value(1);
    CHECK_CUDA(cudaSetDevice(0));
    const auto t0 = Clock::now();
    if (auto s = epx::gpu::launch_stream(r0.ring->device(), 1, r0.send->id(), r1.recv->id(), bw_sizes[i], kWindow,
                                         count, 1, r0.stream);
        !s.ok())
      die("stream", s);
    if (auto s = r1.signals->host().wait(1, before + count, 120s); !s.ok()) die("stream wait", s);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    CHECK_CUDA(cudaStreamSynchronize(r0.stream));
    rows.push_back({"GPU-posted streaming bandwidth", bw_sizes[i], count * double(bw_sizes[i]) / secs / 1e9, "GB/s",
                    "shm ceiling " + std::to_string((*base_bw)[i].gbytes_per_s) + " GB/s (one buffer), " +
                        std::to_string((*base_walk)[i].gbytes_per_s) + " GB/s walking " +
                        std::to_string(kWindow >> 20) + " MiB; PCIe floor 52 GB/s"});
  }

  // (c) end-to-end descriptor rate: 64 B write+signal from many warps.
  {
    std::cerr << "[gpu_bench] descriptor rate" << std::endl;
    unpin_self();
    auto base_rate = epx::bench::baseline_message_rate(bo, 64, 64);
    pin_self();
    if (!base_rate.ok()) die("baseline rate", base_rate.status());
    const int grid = 24, block = 256;  // 192 warps: one channel each
    const uint32_t per_thread = 64;
    const uint64_t total = uint64_t{grid} * block * per_thread;
    const uint64_t before = r1.signals->host().value(2);
    CHECK_CUDA(cudaSetDevice(0));
    const auto t0 = Clock::now();
    if (auto s = epx::gpu::launch_post_many(r0.channels->device(), 1, r0.send->id(), r1.recv->id(), 64, per_thread, 2,
                                            false, grid, block, r0.stream);
        !s.ok())
      die("post_many", s);
    if (auto s = r1.signals->host().wait(2, before + total, 120s); !s.ok()) die("rate wait", s);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    CHECK_CUDA(cudaStreamSynchronize(r0.stream));
    rows.push_back({"GPU descriptors end to end (64 B write+signal)", 64, total / secs / 1e6, "M/s",
                    "shm provider's own 64 B rate " + std::to_string(base_rate->mops_per_s) + " M/s"});
  }

  // (d) proxy capacity. Per-warp runs: 16 B writes the proxy coalesces
  // (each channel's ring holds one contiguous run). Strided: one descriptor
  // names 32 writes of 16 B with gaps (fi_writemsg iovs, no coalescing).
  auto capacity = [&](const std::string& what, uint64_t per_warp_descriptors, auto launch) {
    std::cerr << "[gpu_bench] proxy capacity, " << what << std::endl;
    const int grid = 64, block = 96;  // 192 warps: one channel each
    // About 4 Mi descriptors of 16 B: the 64 MiB window.
    const uint32_t per_thread = 682;
    const uint32_t bytes = 16;
    const uint64_t total = uint64_t{grid} * block / 32 * per_warp_descriptors * per_thread;
    auto before = status_of("a");
    CHECK_CUDA(cudaSetDevice(0));
    const auto t0 = Clock::now();
    if (auto s = launch(grid, block, per_thread, bytes); !s.ok()) die("capacity " + what, s);
    uint64_t consumed = 0;
    epx::v1::DaemonStatus after;
    while (consumed < total && Clock::now() - t0 < 60s) {
      std::this_thread::sleep_for(1ms);
      after = status_of("a");
      consumed = after.proxies(0).descriptors() - before.proxies(0).descriptors();
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    CHECK_CUDA(cudaStreamSynchronize(r0.stream));
    const double ops = double(after.proxies(0).fabric_ops() - before.proxies(0).fabric_ops());
    const double busy = double(after.proxies(0).busy_ns() - before.proxies(0).busy_ns());
    const double per_desc = busy / std::max(1.0, double(consumed));
    rows.push_back({"proxy capacity, " + what + " (wall)", bytes, consumed / secs / 1e6, "M desc/s",
                    "target 20 M/s per proxy thread; " + std::to_string(ops / std::max(1.0, double(consumed))) +
                        " fabric writes per descriptor"});
    rows.push_back({"proxy busy time per descriptor, " + what, bytes, per_desc, "ns",
                    "= " + std::to_string(1e3 / std::max(1e-9, per_desc)) + " M desc/s of proxy CPU"});
  };
  capacity("per-warp runs of 32", 32, [&](int grid, int block, uint32_t per_thread, uint32_t bytes) {
    return epx::gpu::launch_post_many(r0.channels->device(), 1, r0.send->id(), r1.recv->id(), bytes, per_thread, 0,
                                      true, grid, block, r0.stream);
  });
  capacity("strided, 32 writes per descriptor", 1, [&](int grid, int block, uint32_t per_thread, uint32_t bytes) {
    return epx::gpu::launch_post_strided(r0.channels->device(), 1, r0.send->id(), r1.recv->id(), bytes, per_thread,
                                         kWindow, grid, block, r0.stream);
  });
  if (auto e = r0.ring->device_error(); !e.ok()) die("ring", e);
  if (auto e = r0.channels->device_error(); !e.ok()) die("ring group", e);

  // (e) NVLink peer stores.
  if (epx::cuda_device_count() > 1) {
    std::cerr << "[gpu_bench] NVLink" << std::endl;
    const uint64_t bytes = 1ull << 30;
    void *src = nullptr, *dst = nullptr;
    CHECK_CUDA(cudaSetDevice(1));
    CHECK_CUDA(cudaMalloc(&dst, bytes));
    CHECK_CUDA(cudaSetDevice(0));
    cudaError_t pe = cudaDeviceEnablePeerAccess(1, 0);
    if (pe != cudaSuccess && pe != cudaErrorPeerAccessAlreadyEnabled)
      die("peer access", epx::internal_error(cudaGetErrorString(pe)));
    (void)cudaGetLastError();
    CHECK_CUDA(cudaMalloc(&src, bytes));
    cudaEvent_t a, b;
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&b));
    (void)epx::gpu::launch_peer_copy(src, dst, bytes, 528, 512, nullptr);
    CHECK_CUDA(cudaEventRecord(a));
    for (int i = 0; i < 5; ++i) (void)epx::gpu::launch_peer_copy(src, dst, bytes, 528, 512, nullptr);
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    rows.push_back({"NVLink peer stores GPU0->GPU1", bytes, 5.0 * bytes / (ms / 1e3) / 1e9, "GB/s", "floor 368 GB/s"});
  }

  // (f) GPU <-> CPU round trips without daemon or fabric: the floor, and
  // what the ring API and each wait strategy add to it. A host thread (pinned
  // like the signal waiter) plays the proxy: it answers flags directly, or
  // consumes the kernel's descriptor and bumps the signal word.
  {
    std::cerr << "[gpu_bench] GPU<->CPU floor" << std::endl;
    unpin_self();  // the answering thread takes the pinned core
    CHECK_CUDA(cudaSetDevice(0));
    constexpr uint32_t kCap = 1024;
    const size_t bytes = epx::ring::group_bytes(1, kCap) + 4096;
    uint8_t* host = nullptr;
    CHECK_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&host), bytes, cudaHostAllocMapped));
    std::memset(host, 0, bytes);
    auto* header = epx::ring::ring_header(epx::ring::group_ring(host, 0, kCap));
    auto* to_cpu = reinterpret_cast<uint64_t*>(host + epx::ring::group_bytes(1, kCap));
    auto* word = to_cpu + 8;  // its own cache line
    auto* derr = reinterpret_cast<epx::DeviceError*>(to_cpu + 16);
    unsigned long long* counters = nullptr;
    CHECK_CUDA(cudaMalloc(&counters, 2 * sizeof(unsigned long long)));
    uint64_t* elapsed_f = nullptr;
    int* ok_f = nullptr;
    CHECK_CUDA(cudaMalloc(&elapsed_f, sizeof(uint64_t)));
    CHECK_CUDA(cudaMalloc(&ok_f, sizeof(int)));
    auto dev = [](void* p) {
      void* d = nullptr;
      if (cudaHostGetDevicePointer(&d, p, 0) != cudaSuccess) std::exit(1);
      return d;
    };
    struct FloorCase {
      epx::gpu::FloorMode mode;
      std::string what;
    };
    const std::vector<FloorCase> modes = {
        {epx::gpu::FloorMode::kFlagFenced, "round trip: flag + fence, volatile spin (DEVICE.md's probe)"},
        {epx::gpu::FloorMode::kFlagReleaseFenced, "round trip: flag + fence, epx::wait_signal (floor)"},
        {epx::gpu::FloorMode::kRingPost,
         "round trip: epx::post_signal (fence, relaxed seq+doorbell, fence), wait_signal"},
        {epx::gpu::FloorMode::kRingPostReleased,
         "round trip: post_signal of sessions 2-13 (release seq, release doorbell, fence), wait_signal"},
        {epx::gpu::FloorMode::kRingPostSent, "round trip: post_signal with fence, st.mmio seq+doorbell, wait_signal"},
        {epx::gpu::FloorMode::kFlagSpinWait, "round trip: flag + fence, relaxed spin + acquire fence"},
        {epx::gpu::FloorMode::kFlagSent, "round trip: st.mmio flag (no fence), epx::wait_signal"},
    };
    const uint32_t iters = 2000;
    auto measure = [&](const FloorCase& m) {
      std::memset(host, 0, bytes);
      if (!epx::ring::group_init(host, 1, kCap, epx::ring::RingProducerKind::kDevice))
        die("floor ring", epx::internal_error("group_init"));
      CHECK_CUDA(cudaMemset(counters, 0, 2 * sizeof(unsigned long long)));
      CHECK_CUDA(cudaDeviceSynchronize());  // the kernel runs on a non-blocking stream
      epx::DeviceRing ring{};
      ring.header = static_cast<epx::ring::RingHeader*>(dev(header));
      ring.slots = epx::ring::ring_slots(ring.header);
      ring.capacity = kCap;
      ring.doorbell = static_cast<uint8_t*>(dev(&epx::ring::group_header(host)->doorbell[0]));
      ring.tail = counters;
      ring.cached_head = counters + 1;
      ring.error = static_cast<epx::DeviceError*>(dev(derr));
      ring.timeout_ns = 1000000000ull;
      epx::DeviceSignals sig{static_cast<uint64_t*>(dev(word)), 1, ring.error};
      const bool use_ring = m.mode == epx::gpu::FloorMode::kRingPost ||
                            m.mode == epx::gpu::FloorMode::kRingPostReleased ||
                            m.mode == epx::gpu::FloorMode::kRingPostSent;
      std::atomic<bool> cpu_ok{true};
      std::thread cpu([&] {
        pin_self();
        epx::ring::RingSlot* slots = epx::ring::ring_slots(header);
        const auto deadline = Clock::now() + 10s;
        for (uint64_t i = 1; i <= iters; ++i) {
          if (use_ring) {
            epx::ring::RingSlot d;
            while (!epx::ring::ring_read_slot(slots, kCap, i - 1, &d)) {
              if (Clock::now() > deadline) {
                cpu_ok = false;
                return;
              }
            }
            epx::ring::ring_publish_head(header, i);
          } else {
            while (__atomic_load_n(to_cpu, __ATOMIC_ACQUIRE) < i) {
              if (Clock::now() > deadline) {
                cpu_ok = false;
                return;
              }
            }
          }
          __atomic_fetch_add(word, 1, __ATOMIC_RELEASE);
        }
      });
      if (auto s = epx::gpu::launch_floor_pingpong(m.mode, static_cast<uint64_t*>(dev(to_cpu)), ring, sig, iters,
                                                   elapsed_f, ok_f, r0.stream);
          !s.ok())
        die("floor", s);
      CHECK_CUDA(cudaStreamSynchronize(r0.stream));
      cpu.join();
      uint64_t ns = 0;
      int good = 0;
      CHECK_CUDA(cudaMemcpy(&ns, elapsed_f, sizeof(ns), cudaMemcpyDeviceToHost));
      CHECK_CUDA(cudaMemcpy(&good, ok_f, sizeof(good), cudaMemcpyDeviceToHost));
      if (!good || !cpu_ok) die("floor", epx::deadline_exceeded(m.what + " timed out"));
      return ns / 1e3 / iters;
    };
    // The modes take turns for several rounds and each reports its median:
    // single passes drift with the GPU's clocks and the VM's noise.
    constexpr int kRounds = 7;
    std::vector<std::vector<double>> us(modes.size());
    for (int round = 0; round < kRounds; ++round) {
      for (size_t i = 0; i < modes.size(); ++i) us[i].push_back(measure(modes[i]));
    }
    for (size_t i = 0; i < modes.size(); ++i) {
      rows.push_back({modes[i].what, 8, epx::bench::quantile(us[i], 0.5), "us",
                      "median of " + std::to_string(kRounds) + "; min " +
                          std::to_string(*std::min_element(us[i].begin(), us[i].end())) + "; DEVICE.md floor 2.56 us"});
    }
    CHECK_CUDA(cudaFreeHost(host));
    CHECK_CUDA(cudaFree(counters));
    CHECK_CUDA(cudaFree(elapsed_f));
    CHECK_CUDA(cudaFree(ok_f));
  }

  if (json) {
    report::GpuBenchReport result;
    for (const Row& r : rows) {
      report::GpuBenchRow* out = result.add_rows();
      out->set_what(r.what);
      out->set_bytes(static_cast<uint32_t>(r.bytes));
      out->set_value(r.value);
      out->set_unit(r.unit);
      out->set_compare(r.compare);
    }
    if (auto s = epx::cli::print_json(result); !s.ok()) die("output", s);
  } else {
    std::printf("%-46s %10s %12s %-9s %s\n", "measure", "bytes", "value", "unit", "compared with");
    for (const Row& r : rows) {
      std::printf("%-46s %10zu %12.3f %-9s %s\n", r.what.c_str(), r.bytes, r.value, r.unit.c_str(), r.compare.c_str());
    }
  }
  return 0;
}
