// epx_bench: EPX's data-plane benchmark. Starts two epxd daemons (two
// emulated nodes on one host) on the chosen libfabric provider, puts one
// rank on each, and measures through the whole EPX path (ring -> proxy ->
// fabric -> remote proxy -> signal -> waiting rank):
//   (a) one-way latency of a write+signal seen by the remote waiter
//   (b) streaming bandwidth
//   (c) small-write (64 B) message rate, and the proxy's CPU ns/descriptor
//   (d) proxy capacity: adjacent small writes coalesced into fabric writes
// Each beside a plain libfabric baseline (//tools/bench:fabric_baseline)
// measured in the same run, same provider and sizes, so every figure is a
// ratio from one run.
//   epx_bench --provider shm|tcp [--domain lo] [--json] [--quick]
//             [--epxd PATH] [--cores A,B,C,D]
#include <unistd.h>

#include <atomic>
#include <boost/program_options.hpp>
#include <cstdio>
#include <future>
#include <iostream>
#include <optional>
#include <thread>

#include "epx/client.h"
#include "tools/bench/affinity.h"
#include "tools/bench/bench_report.pb.h"
#include "tools/bench/fabric_baseline.h"
#include "tools/bench/spawned_daemon.h"
#include "tools/bench/stats.h"
#include "tools/bench/two_rank_job.h"
#include "tools/cli.h"

namespace po = boost::program_options;
namespace report = epx::bench_report::v1;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// Default window: a multiple of the largest streaming write (16 MiB).
constexpr uint32_t kDefaultWindowMib = 16;

void progress(const std::string& line) { std::cerr << "[epx_bench] " << line << std::endl; }

struct Row {
  std::string what;
  size_t bytes;
  double epx, base;  // same unit
  std::string unit;
};

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("epx_bench options");
  opts.add_options()("help,h", "help")("provider", po::value<std::string>()->default_value("shm"),
                                       "shm | tcp | efa | verbs")("domain", po::value<std::string>()->default_value(""),
                                                                  "rail domain (tcp: lo)")("json", "JSON output")(
      "quick", "fewer sizes and shorter runs")("epxd", po::value<std::string>(), "path of epxd")(
      "cores", po::value<std::string>()->default_value(""),
      "cores for proxy A, proxy B, rank 0, rank 1 (comma-separated); empty: no pinning")(
      "window-mib", po::value<uint32_t>()->default_value(kDefaultWindowMib),
      "MiB of each rank's windows that the streams walk (16..4096): more than the caches hold shows memory's rate; "
      "registers about 6x this much host memory (two windows per rank, the baseline's two buffers)");
  po::variables_map vm;
  if (auto exit_code = epx::cli::parse(argc, argv, opts, &vm, "epx_bench")) return *exit_code;
  const std::string provider = vm["provider"].as<std::string>();
  std::string domain = vm["domain"].as<std::string>();
  if (provider == "tcp" && domain.empty()) domain = "lo";
  const bool quick = vm.count("quick") > 0, json = vm.count("json") > 0;
  const uint32_t window_mib = vm["window-mib"].as<uint32_t>();
  if (window_mib < 16 || window_mib > 4096) {
    std::cerr << "epx_bench: --window-mib " << window_mib << " is outside 16..4096\n";
    return 2;
  }
  const uint64_t window_bytes = uint64_t{window_mib} << 20;
  const std::string walked = "walking " + std::to_string(window_mib) + " MiB";
  auto parsed_cores = epx::cli::parse_cores(vm["cores"].as<std::string>(), 4);
  if (!parsed_cores.ok()) {
    std::cerr << "epx_bench: --cores: " << parsed_cores.status().message() << "\n";
    return 2;
  }
  const std::vector<int> cores = std::move(parsed_cores.value());
  const std::string epxd = vm.count("epxd") ? vm["epxd"].as<std::string>() : epx::bench::find_epxd("../daemon/epxd");
  if (epxd.empty()) {
    std::cerr << "epx_bench: cannot find epxd beside this binary; pass --epxd\n";
    return 2;
  }

  char tmpl[] = "/tmp/epx-bench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  auto fail = [&](const std::string& what, const epx::Status& s) {
    std::cerr << "epx_bench: " << what << ": " << s.to_string() << " (logs in " << dir << ")\n";
    return 1;
  };
  auto da = epx::bench::SpawnedDaemon::start(epxd, dir, "a", provider, domain, cores[0]);
  if (!da.ok()) return fail("daemon a", da.status());
  auto db = epx::bench::SpawnedDaemon::start(epxd, dir, "b", provider, domain, cores[1]);
  if (!db.ok()) return fail("daemon b", db.status());
  auto st = (*da)->status();
  if (!st.ok()) return fail("status of daemon a", st.status());
  const std::string coordinator = st->peer_address();

  epx::bench::TwoRankJob job;
  if (auto s = epx::bench::join_two_rank_job(job, {"bench", window_bytes, 8, 8192}, (*da)->socket(), (*db)->socket(),
                                             coordinator);
      !s.ok()) {
    return fail("joining the job", s);
  }
  epx::bench::BenchRank& r0 = job.ranks[0];
  epx::bench::BenchRank& r1 = job.ranks[1];

  epx::bench::BaselineOptions bo;
  bo.provider = provider;
  if (!domain.empty()) bo.domains = {domain};
  bo.min_time = quick ? 100ms : 300ms;
  std::vector<Row> rows;
  const auto min_time = quick ? 100ms : 300ms;

  // (a) latency: ping-pong of write+signal, half the round trip.
  std::vector<size_t> lat_sizes = quick ? std::vector<size_t>{8, 4096, 1 << 20}
                                        : std::vector<size_t>{8, 64, 512, 4096, 32768, 262144, 1 << 20, 8 << 20};
  auto base_lat = epx::bench::baseline_latency(bo, lat_sizes);
  if (!base_lat.ok()) return fail("baseline latency", base_lat.status());
  uint64_t seq = 0;  // signal 0 counts ping-pongs on both ranks
  for (size_t i = 0; i < lat_sizes.size(); ++i) {
    const uint32_t size = static_cast<uint32_t>(lat_sizes[i]);
    progress("latency " + std::to_string(size) + " B");
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> target{0};
    epx::Status pong_status;
    const uint64_t first = seq + 1;  // read before the ping loop advances seq
    std::thread pong([&, first] {
      epx::bench::pin_current_thread(cores[3]);
      for (uint64_t k = first;; ++k) {
        // Wait for ping k, answer it; a stop request ends after the last.
        while (r1.signals->value(0) < k) {
          if (stop.load(std::memory_order_acquire) && target.load() < k) return;
        }
        pong_status = r1.ring->post_write_signal(0, *r1.send, 0, r1.recv->id(), 0, size, epx::SignalRef{0, 1});
        if (!pong_status.ok()) return;
      }
    });
    epx::bench::pin_current_thread(cores[2]);
    std::vector<double> rtts;
    const auto begin = Clock::now();
    for (int n = 0;; ++n) {
      ++seq;
      target.store(seq);
      const auto t0 = Clock::now();
      if (auto s = r0.ring->post_write_signal(1, *r0.send, 0, r0.recv->id(), 0, size, epx::SignalRef{0, 1}); !s.ok()) {
        stop = true;
        pong.join();
        return fail("ping", s);
      }
      if (auto s = r0.signals->wait(0, seq, 10s); !s.ok()) {
        stop = true;
        pong.join();
        return fail("waiting for pong", s);
      }
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      if (n >= 20) rtts.push_back(us);
      if (n >= 220 && Clock::now() - begin > min_time) break;
    }
    stop = true;
    pong.join();
    if (!pong_status.ok()) return fail("pong", pong_status);
    rows.push_back(
        {"latency one-way (us)", size, epx::bench::quantile(rtts, 0.5) / 2, (*base_lat)[i].one_way_us, "us"});
  }

  // (b) streaming bandwidth: writes of S, each counted on signal 1.
  std::vector<size_t> bw_sizes = quick ? std::vector<size_t>{65536, 1 << 20}
                                       : std::vector<size_t>{4096, 65536, 262144, 1 << 20, 4 << 20, 16 << 20};
  auto base_bw = epx::bench::baseline_bandwidth(bo, bw_sizes, 64);
  if (!base_bw.ok()) return fail("baseline bandwidth", base_bw.status());
  // The baseline above rewrites one cache-hot buffer; EPX's writes walk its
  // window, so the fair reference walks as much.
  epx::bench::BaselineOptions walking = bo;
  walking.stream_span = window_bytes;
  auto base_walk = epx::bench::baseline_bandwidth(walking, bw_sizes, 64);
  if (!base_walk.ok()) return fail("baseline bandwidth, walking the window", base_walk.status());
  std::vector<Row> walk_rows;
  uint64_t counted = r1.signals->value(1);
  for (size_t i = 0; i < bw_sizes.size(); ++i) {
    const uint32_t size = static_cast<uint32_t>(bw_sizes[i]);
    progress("bandwidth " + std::to_string(size) + " B");
    const uint64_t slots = window_bytes / size;
    uint64_t n = 0;
    const auto t0 = Clock::now();
    do {
      for (int k = 0; k < 64; ++k, ++n) {
        const uint64_t off = (n % slots) * size;
        if (auto s = r0.ring->post_write_signal(1, *r0.send, off, r1.recv->id(), off, size, epx::SignalRef{1, 1}, 30s);
            !s.ok()) {
          return fail("stream", s);
        }
      }
    } while (Clock::now() - t0 < min_time);
    counted += n;
    if (auto s = epx::bench::wait_while_rising(*r1.signals, 1, counted, 30s); !s.ok()) return fail("stream end", s);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    rows.push_back({"bandwidth (GB/s)", size, n * double(size) / secs / 1e9, (*base_bw)[i].gbytes_per_s, "GB/s"});
    walk_rows.push_back({"bandwidth, " + walked + " (GB/s)", size, n * double(size) / secs / 1e9,
                         (*base_walk)[i].gbytes_per_s, "GB/s"});
  }
  rows.insert(rows.end(), walk_rows.begin(), walk_rows.end());

  // (c) 64 B message rate (write+signal each: no coalescing), and the
  // sending proxy's CPU cost per descriptor.
  progress("message rate 64 B");
  auto base_rate = epx::bench::baseline_message_rate(bo, 64, 64);
  if (!base_rate.ok()) return fail("baseline rate", base_rate.status());
  auto before = (*da)->status();
  {
    uint64_t n = 0;
    const auto t0 = Clock::now();
    do {
      for (int k = 0; k < 256; ++k, ++n) {
        const uint64_t off = (n % 65536) * 128;  // never adjacent
        if (auto s = r0.ring->post_write_signal(1, *r0.send, off, r1.recv->id(), off, 64, epx::SignalRef{2, 1}, 30s);
            !s.ok()) {
          return fail("rate", s);
        }
      }
    } while (Clock::now() - t0 < min_time);
    if (auto s = epx::bench::wait_while_rising(*r1.signals, 2, n, 30s); !s.ok()) return fail("rate end", s);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    rows.push_back({"message rate 64 B (Mops/s)", 64, n / secs / 1e6, base_rate->mops_per_s, "Mops/s"});
  }
  auto after = (*da)->status();
  double ns_per_desc = 0;
  if (before.ok() && after.ok() && before->proxies_size() && after->proxies_size()) {
    const double d = double(after->proxies(0).descriptors() - before->proxies(0).descriptors());
    const double busy = double(after->proxies(0).busy_ns() - before->proxies(0).busy_ns());
    ns_per_desc = d > 0 ? busy / d : 0;
  }

  // (d) proxy capacity: adjacent 64 B writes, which the proxy coalesces.
  progress("proxy capacity (adjacent 64 B writes)");
  double capacity_mdesc = 0, ops_per_desc = 0;
  {
    auto b2 = (*da)->status();
    uint64_t n = 0;
    const uint64_t per_pass = window_bytes / 64;
    const auto t0 = Clock::now();
    do {
      for (int k = 0; k < 1024; ++k, ++n) {
        const uint64_t off = (n % per_pass) * 64;
        if (auto s = r0.ring->post_write(1, *r0.send, off, r1.recv->id(), off, 64, 30s); !s.ok())
          return fail("capacity", s);
      }
    } while (Clock::now() - t0 < min_time);
    if (auto s = r0.ring->flush(60s); !s.ok()) return fail("capacity flush", s);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    auto a2 = (*da)->status();
    capacity_mdesc = n / secs / 1e6;
    if (b2.ok() && a2.ok() && a2->proxies_size()) {
      const double d = double(a2->proxies(0).descriptors() - b2->proxies(0).descriptors());
      const double ops = double(a2->proxies(0).fabric_ops() - b2->proxies(0).fabric_ops());
      ops_per_desc = d > 0 ? ops / d : 0;
    }
  }
  if (auto e = r0.ring->error(); !e.ok()) return fail("ring", e);

  if (json) {
    report::EpxBenchReport result;
    result.set_provider(provider);
    for (const Row& r : rows) {
      report::EpxBenchRow* out = result.add_rows();
      out->set_what(r.what);
      out->set_bytes(static_cast<uint32_t>(r.bytes));
      out->set_epx(r.epx);
      out->set_baseline(r.base);
      out->set_unit(r.unit);
    }
    result.set_proxy_ns_per_descriptor(ns_per_desc);
    result.set_proxy_capacity_mdesc_per_s(capacity_mdesc);
    result.set_fabric_ops_per_descriptor(ops_per_desc);
    if (auto s = epx::cli::print_json(result); !s.ok()) return fail("output", s);
    return 0;
  }
  std::printf("EPX vs plain libfabric (%s provider%s), two daemons on one host\n", provider.c_str(),
              domain.empty() ? "" : (", domain " + domain).c_str());
  std::printf("%-28s %10s %12s %12s %10s\n", "measure", "bytes", "EPX", "baseline", "EPX/base");
  for (const Row& r : rows) {
    std::printf("%-28s %10zu %12.3f %12.3f %10.2f\n", r.what.c_str(), r.bytes, r.epx, r.base, r.epx / r.base);
  }
  std::printf("proxy CPU per descriptor at the 64 B rate: %.0f ns\n", ns_per_desc);
  std::printf("proxy capacity, adjacent 64 B writes: %.2f M descriptors/s (%.4f fabric writes per descriptor)\n",
              capacity_mdesc, ops_per_desc);
  return 0;
}
