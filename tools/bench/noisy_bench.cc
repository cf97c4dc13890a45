// epx_noisy_bench: does one job's flood hurt another job on the same
// daemons? Starts two epxd daemons (two emulated nodes on one host) and two
// jobs with one rank on each daemon:
//   quiet  rank 0 pings rank 1 with a 64 B write+signal, rank 1 answers the
//          same way; each round trip is one sample;
//   noisy  rank 0 floods rank 1 with write+signals as fast as its ring takes
//          them: first of 64 B, then of 1 MiB.
// Phases: the quiet job alone, beside each flood, and after the noisy job
// left. For each: the quiet round trip's p50 / p99 / max, errors (any failed
// post, wait or ring error; there must be none), and the noisy job's
// throughput as its receiver counted it. Needs no GPU.
//   epx_noisy_bench [--provider tcp] [--domain lo] [--seconds 5] [--epxd PATH]
//                   [--cores PA,PB,Q0,Q1,N] [--busy-poll] [--epxd-args '--flag value ...'] [--json]
// Exit status 1 when any phase saw an error.
#include <unistd.h>

#include <atomic>
#include <boost/program_options.hpp>
#include <cstdio>
#include <future>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "epx/client.h"
#include "tools/bench/affinity.h"
#include "tools/bench/bench_report.pb.h"
#include "tools/bench/spawned_daemon.h"
#include "tools/bench/stats.h"
#include "tools/bench/two_rank_job.h"
#include "tools/cli.h"

namespace po = boost::program_options;
namespace report = epx::bench_report::v1;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint32_t kPingBytes = 64;
constexpr uint64_t kNoisyWindow = 16ull << 20;
// How long one ping may wait for its answer, and a flood's receiver may go
// without progress while it drains, before the phase counts an error.
constexpr auto kPingTimeout = 10s;
constexpr std::chrono::milliseconds kDrainTimeout = 30s;

void progress(const std::string& line) { std::cerr << "[epx_noisy_bench] " << line << std::endl; }

using epx::bench::BenchRank;

// Errors of one phase: how many, and the first.
struct Errors {
  uint64_t count = 0;
  std::string first;
  void add(const std::string& what, const epx::Status& s) {
    if (s.ok()) return;
    if (count++ == 0) first = what + ": " + s.to_string();
  }
};

// The quiet job's answering side: rank 1 answers ping k once signal 0
// reaches k, for the whole run.
class Pong {
 public:
  Pong(BenchRank& r1, uint32_t reply_window, int core)
      : thread_([this, &r1, reply_window, core] { run(r1, reply_window, core); }) {}
  ~Pong() {
    stop_.store(true, std::memory_order_relaxed);
    thread_.join();
  }
  epx::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  void run(BenchRank& r1, uint32_t reply_window, int core) {
    epx::bench::pin_current_thread(core);
    for (uint64_t k = 1;; ++k) {
      epx::Status s;
      do {  // short waits, so a stop request is seen; such a timeout is no error
        if (stop_.load(std::memory_order_relaxed)) return;
        s = r1.signals->wait(0, k, 100ms);
      } while (s.code() == epx::StatusCode::kDeadlineExceeded);
      if (s.ok()) {
        s = r1.ring->post_write_signal(0, *r1.send, 0, reply_window, 0, kPingBytes, epx::SignalRef{0, 1}, kPingTimeout);
      }
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        status_ = s.with_context("answering ping " + std::to_string(k));
        return;
      }
    }
  }

  std::atomic<bool> stop_{false};
  std::mutex mu_;
  epx::Status status_;
  std::thread thread_;  // last: started once the rest is built
};

// The noisy job's rank 0 posting write+signals of `bytes` to rank 1 until
// stopped; never two adjacent, so each is one fabric write.
class Flood {
 public:
  Flood(BenchRank& r0, uint32_t recv_window, uint32_t bytes, int core)
      : thread_([this, &r0, recv_window, bytes, core] { run(r0, recv_window, bytes, core); }) {}
  // Stops posting; returns how many were posted and the poster's status.
  std::pair<uint64_t, epx::Status> stop() {
    stop_.store(true, std::memory_order_relaxed);
    thread_.join();
    return {posted_, status_};
  }

 private:
  void run(BenchRank& r0, uint32_t recv_window, uint32_t bytes, int core) {
    epx::bench::pin_current_thread(core);
    const uint64_t stride = std::max<uint64_t>(bytes, 128);
    const uint64_t slots = kNoisyWindow / stride;
    for (uint64_t n = 0; !stop_.load(std::memory_order_relaxed); ++n) {
      const uint64_t at = (n % slots) * stride;
      status_ = r0.ring->post_write_signal(1, *r0.send, at, recv_window, at, bytes, epx::SignalRef{0, 1}, 30s);
      if (!status_.ok()) return;
      ++posted_;
    }
  }

  std::atomic<bool> stop_{false};
  uint64_t posted_ = 0;  // read after join
  epx::Status status_;
  std::thread thread_;
};

struct Phase {
  std::string name;
  uint32_t noisy_bytes = 0;  // 0: no flood
  std::vector<double> rtt_us;
  Errors errors;
  double noisy_writes_per_s = 0;
};

// Quiet round trips for `duration`; stops at the first error.
void ping(BenchRank& q0, uint32_t ping_window, uint64_t* seq, Clock::duration duration, Phase* phase) {
  const auto end = Clock::now() + duration;
  while (Clock::now() < end) {
    const uint64_t target = ++*seq;
    const auto t0 = Clock::now();
    epx::Status s =
        q0.ring->post_write_signal(1, *q0.send, 0, ping_window, 0, kPingBytes, epx::SignalRef{0, 1}, kPingTimeout);
    if (s.ok()) s = q0.signals->wait(0, target, kPingTimeout);
    if (!s.ok()) {
      phase->errors.add("quiet ping " + std::to_string(target), s);
      return;
    }
    phase->rtt_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("epx_noisy_bench options");
  opts.add_options()("help,h", "help")("provider", po::value<std::string>()->default_value("tcp"),
                                       "tcp | shm | efa | verbs")("domain", po::value<std::string>()->default_value(""),
                                                                  "rail domain (tcp: lo)")(
      "seconds", po::value<double>()->default_value(5), "measured time of each phase")("epxd", po::value<std::string>(),
                                                                                       "path of epxd")(
      "cores", po::value<std::string>()->default_value(""),
      "cores for proxy A, proxy B, quiet rank 0, quiet rank 1, noisy rank 0 (comma-separated); empty: no pinning")(
      "busy-poll", "proxies never sleep (default: the daemon's spin, then back-off)")(
      "epxd-args", po::value<std::string>()->default_value(""),
      "more epxd flags for both daemons, space-separated, e.g. '--job-weights quiet=4' (the jobs are 'quiet' "
      "and 'noisy')")("json", "JSON output");
  po::variables_map vm;
  if (auto exit_code = epx::cli::parse(argc, argv, opts, &vm, "epx_noisy_bench")) return *exit_code;
  const std::string provider = vm["provider"].as<std::string>();
  std::string domain = vm["domain"].as<std::string>();
  if (provider == "tcp" && domain.empty()) domain = "lo";
  const double seconds = vm["seconds"].as<double>();
  if (!(seconds > 0 && seconds <= 3600)) {
    std::cerr << "epx_noisy_bench: --seconds: must be in (0, 3600]\n";
    return 2;
  }
  const auto duration = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  auto parsed_cores = epx::cli::parse_cores(vm["cores"].as<std::string>(), 5);
  if (!parsed_cores.ok()) {
    std::cerr << "epx_noisy_bench: --cores: " << parsed_cores.status().message() << "\n";
    return 2;
  }
  const std::vector<int> cores = std::move(parsed_cores.value());
  const std::string epxd = vm.count("epxd") ? vm["epxd"].as<std::string>() : epx::bench::find_epxd("../../daemon/epxd");
  if (epxd.empty()) {
    std::cerr << "epx_noisy_bench: cannot find epxd beside this binary; pass --epxd\n";
    return 2;
  }
  std::vector<std::string> daemon_args;
  {
    std::istringstream in(vm["epxd-args"].as<std::string>());
    for (std::string arg; in >> arg;) daemon_args.push_back(arg);
  }

  char tmpl[] = "/tmp/epx-noisy-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  auto fail = [&](const std::string& what, const epx::Status& s) {
    std::cerr << "epx_noisy_bench: " << what << ": " << s.to_string() << " (logs in " << dir << ")\n";
    return 1;
  };
  const bool busy_poll = vm.count("busy-poll") > 0;
  auto da = epx::bench::SpawnedDaemon::start(epxd, dir, "a", provider, domain, cores[0], busy_poll, daemon_args);
  if (!da.ok()) return fail("daemon a", da.status());
  auto db = epx::bench::SpawnedDaemon::start(epxd, dir, "b", provider, domain, cores[1], busy_poll, daemon_args);
  if (!db.ok()) return fail("daemon b", db.status());
  auto st = (*da)->status();
  if (!st.ok()) return fail("status of daemon a", st.status());
  const std::string coordinator = st->peer_address();

  epx::bench::TwoRankJob quiet_job, noisy_job;
  if (auto s = epx::bench::join_two_rank_job(quiet_job, {"quiet", 4096, 1, 64}, (*da)->socket(), (*db)->socket(),
                                             coordinator);
      !s.ok()) {
    return fail("quiet job", s);
  }
  if (auto s = epx::bench::join_two_rank_job(noisy_job, {"noisy", kNoisyWindow, 1, 1024}, (*da)->socket(),
                                             (*db)->socket(), coordinator);
      !s.ok()) {
    return fail("noisy job", s);
  }
  BenchRank* quiet = quiet_job.ranks;
  BenchRank* noisy = noisy_job.ranks;

  std::vector<Phase> phases;
  uint64_t seq = 0;  // quiet round trips so far: signal 0 of both quiet ranks
  {
    Pong pong(quiet[1], quiet[0].recv->id(), cores[3]);
    const uint32_t ping_window = quiet[1].recv->id();
    epx::bench::pin_current_thread(cores[2]);
    // Warm-up: connections, caches, the first passes.
    Phase warmup;
    ping(quiet[0], ping_window, &seq, std::chrono::duration_cast<Clock::duration>(duration / 10), &warmup);
    if (warmup.errors.count) return fail("warm-up", epx::internal_error(warmup.errors.first));

    auto quiet_errors = [&](Phase& p) {
      p.errors.add("quiet pong", pong.status());
      p.errors.add("quiet ring 0", quiet[0].ring->error());
      p.errors.add("quiet ring 1", quiet[1].ring->error());
    };
    progress("quiet job alone");
    phases.push_back({"quiet alone", 0, {}, {}, 0});
    ping(quiet[0], ping_window, &seq, duration, &phases.back());
    quiet_errors(phases.back());

    uint64_t delivered = 0;  // noisy writes rank 1 counted so far
    for (uint32_t bytes : {64u, 1u << 20}) {
      progress("beside the noisy job's flood of " + std::to_string(bytes) + " B writes");
      phases.push_back({"beside " + std::string(bytes == 64 ? "64 B" : "1 MiB") + " flood", bytes, {}, {}, 0});
      Phase& p = phases.back();
      Flood flood(noisy[0], noisy[1].recv->id(), bytes, cores[4]);
      std::this_thread::sleep_for(std::chrono::duration_cast<Clock::duration>(duration / 10));  // the flood sets in
      const uint64_t counted0 = noisy[1].signals->value(0);
      const auto t0 = Clock::now();
      ping(quiet[0], ping_window, &seq, duration, &p);
      const uint64_t counted1 = noisy[1].signals->value(0);
      p.noisy_writes_per_s = double(counted1 - counted0) / std::chrono::duration<double>(Clock::now() - t0).count();
      auto [posted, poster] = flood.stop();
      p.errors.add("noisy post", poster);
      delivered += posted;
      p.errors.add("noisy writes arriving",
                   epx::bench::wait_while_rising(*noisy[1].signals, 0, delivered, kDrainTimeout));
      p.errors.add("noisy ring 0", noisy[0].ring->error());
      quiet_errors(p);
    }

    progress("after the noisy job left");
    phases.push_back({"after noisy left", 0, {}, {}, 0});
    Phase& after = phases.back();
    for (BenchRank& r : noisy_job.ranks) {
      r.ring.reset();
      r.signals.reset();
      r.send.reset();
      r.recv.reset();
      after.errors.add("noisy leave", r.job->leave());
      r.job.reset();
      r.client.reset();
    }
    ping(quiet[0], ping_window, &seq, duration, &after);
    quiet_errors(after);
  }
  epx::bench::pin_current_thread(-1);

  bool any_error = false;
  for (const Phase& p : phases) any_error |= p.errors.count > 0;
  const Phase& alone = phases.front();
  auto q = [](const Phase& p, double quantile) {
    return p.rtt_us.empty() ? 0.0 : epx::bench::quantile(p.rtt_us, quantile);
  };

  if (vm.count("json")) {
    report::NoisyBenchReport out;
    out.set_provider(provider);
    out.set_busy_poll(busy_poll);
    out.set_seconds(seconds);
    for (const Phase& p : phases) {
      report::NoisyPhase* r = out.add_phases();
      r->set_phase(p.name);
      r->set_round_trips(p.rtt_us.size());
      r->set_p50_us(q(p, 0.5));
      r->set_p99_us(q(p, 0.99));
      r->set_max_us(q(p, 1.0));
      r->set_errors(p.errors.count);
      r->set_first_error(p.errors.first);
      r->set_noisy_bytes(p.noisy_bytes);
      r->set_noisy_writes_per_s(p.noisy_writes_per_s);
      r->set_noisy_mbytes_per_s(p.noisy_writes_per_s * p.noisy_bytes / 1e6);
    }
    if (auto s = epx::cli::print_json(out); !s.ok()) return fail("output", s);
    return any_error ? 1 : 0;
  }
  std::printf("quiet job: %u B write+signal round trips through two daemons (%s provider%s, proxies %s)\n", kPingBytes,
              provider.c_str(), domain.empty() ? "" : (", domain " + domain).c_str(),
              busy_poll ? "busy-polling" : "with the default back-off");
  std::printf("%-18s %8s %10s %10s %10s %7s %12s %10s\n", "phase", "pings", "p50 us", "p99 us", "max us", "errors",
              "noisy w/s", "noisy MB/s");
  for (const Phase& p : phases) {
    std::printf("%-18s %8zu %10.1f %10.1f %10.1f %7llu %12.0f %10.1f\n", p.name.c_str(), p.rtt_us.size(), q(p, 0.5),
                q(p, 0.99), q(p, 1.0), static_cast<unsigned long long>(p.errors.count), p.noisy_writes_per_s,
                p.noisy_writes_per_s * p.noisy_bytes / 1e6);
  }
  for (const Phase& p : phases) {
    if (p.noisy_bytes && q(alone, 0.99) > 0) {
      std::printf("quiet p99 %s / alone: %.2fx (goal <= 2x)\n", p.name.c_str(), q(p, 0.99) / q(alone, 0.99));
    }
  }
  for (const Phase& p : phases) {
    if (p.errors.count)
      std::printf("errors in '%s': %llu, first: %s\n", p.name.c_str(), static_cast<unsigned long long>(p.errors.count),
                  p.errors.first.c_str());
  }
  return any_error ? 1 : 0;
}
