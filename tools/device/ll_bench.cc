// ll_bench: LL dispatch/combine timed as engines run it — one process per
// rank (tools/device/ll_rank --mode bench), real daemons — in one of three
// layouts:
//   nvlink   one daemon, all ranks on it (same-node ranks: NVLink stores)
//   daemons  one daemon per rank (every byte crosses the proxies), with the
//            proxies' descriptors, fabric operations and busy time per call,
//            and plain libfabric moving the same bytes (one write each way
//            per call, ping-pong on the same provider) from the same run
// Prints one JSON line per layout ("LL_RESULT {...}").
//
//   ll_bench --epxd bin/epxd --rank-binary bin/ll_rank --layout daemons
//            [--ranks 2] [--tokens 128 --hidden 7168 --topk 8 --experts 288] [--cores 2,4]
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "epx/v1/status.pb.h"
#include "kernels/fp8_format.h"
#include "kernels/low_latency_inputs.h"
#include "kernels/low_latency_memory.h"
#include "tools/bench/fabric_baseline.h"
#include "tools/bench/spawned_daemon.h"

extern char** environ;

namespace epx::bench {
namespace {

namespace po = boost::program_options;

struct ProxyTotals {
  uint64_t descriptors = 0, fabric_ops = 0, busy_ns = 0;
};

Result<ProxyTotals> totals(const std::vector<std::unique_ptr<SpawnedDaemon>>& daemons) {
  ProxyTotals t;
  for (const auto& d : daemons) {
    EPX_ASSIGN_OR_RETURN(v1::DaemonStatus s, d->status());
    for (const auto& p : s.proxies()) {
      t.descriptors += p.descriptors();
      t.fabric_ops += p.fabric_ops();
      t.busy_ns += p.busy_ns();
    }
  }
  return t;
}

std::vector<int> parse_cores(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(std::stoi(item));
  }
  return out;
}

// Bytes one rank's daemon-path call moves to each other rank (rank 0 to
// rank 1 with the bench's inputs), dispatch FP8 and combine BF16, as the
// kernels stage them: a token once per destination rank, a row per pair.
std::pair<size_t, size_t> bytes_to_rank1(int ranks, int tokens, int hidden, int topk, int experts) {
  const kernels::LowLatencyShape s{ranks, experts, hidden, tokens, topk};
  const auto in = kernels::LowLatencyJobInputs::random(s, 4242, tokens, 0, 0);
  const int local = s.local_experts();
  size_t sent = 0, pairs = 0;
  for (int t = 0; t < tokens; ++t) {
    bool to1 = false;
    for (int k = 0; k < topk; ++k) {
      const int64_t e = in.topk[0][static_cast<size_t>(t) * topk + k];
      if (e >= 0 && e / local == 1) {
        to1 = true;
        ++pairs;
      }
    }
    sent += to1 ? 1 : 0;
  }
  const size_t message = kernels::ll::message_stride(topk, hidden, /*use_fp8=*/true, /*ue8m0=*/false);
  return {kernels::ll::dispatch_header_bytes(local) + sent * message,
          kernels::ll::kCombineHeaderBytes + pairs * static_cast<size_t>(hidden) * 2};
}

int run(int argc, char** argv) {
  po::options_description opts("ll_bench options");
  opts.add_options()("help,h", "help")("epxd", po::value<std::string>()->required(), "epxd binary")(
      "rank-binary", po::value<std::string>()->required(), "ll_rank binary")(
      "layout", po::value<std::string>()->default_value("nvlink"), "nvlink | daemons")(
      "ranks", po::value<int>()->default_value(2), "ranks")("tokens", po::value<int>()->default_value(128),
                                                            "tokens per rank")(
      "hidden", po::value<int>()->default_value(7168), "hidden")("topk", po::value<int>()->default_value(8), "top-k")(
      "experts", po::value<int>()->default_value(288), "experts")("iters", po::value<int>()->default_value(200),
                                                                  "calls timed")(
      "cores", po::value<std::string>()->default_value(""), "proxy cores, one per daemon")(
      "gpus", po::value<int>()->default_value(1), "GPUs to spread ranks over");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    if (vm.count("help")) {
      std::cout << opts;
      return 0;
    }
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "ll_bench: " << e.what() << "\n" << opts;
    return 2;
  }
  const std::string layout = vm["layout"].as<std::string>();
  const int ranks = vm["ranks"].as<int>();
  if (layout != "nvlink" && layout != "daemons") {
    std::cerr << "ll_bench: --layout is nvlink or daemons\n";
    return 2;
  }
  const std::vector<int> cores = parse_cores(vm["cores"].as<std::string>());
  char dir_template[] = "/tmp/ll_bench.XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  const int daemons_wanted = layout == "nvlink" ? 1 : ranks;
  std::vector<std::unique_ptr<SpawnedDaemon>> daemons;
  for (int d = 0; d < daemons_wanted; ++d) {
    auto s = SpawnedDaemon::start(vm["epxd"].as<std::string>(), dir, "d" + std::to_string(d), "shm", "",
                                  d < static_cast<int>(cores.size()) ? cores[d] : -1, true);
    if (!s.ok()) {
      std::cerr << "ll_bench: " << s.status().to_string() << "\n";
      return 1;
    }
    daemons.push_back(std::move(*s));
  }
  auto first = daemons[0]->status();
  if (!first.ok()) {
    std::cerr << "ll_bench: " << first.status().to_string() << "\n";
    return 1;
  }
  auto before = totals(daemons);
  // Ranks sharing a GPU (one GPU lent) each get their share of its SMs
  // under MPS, as a rank with a GPU of its own would not compete; ignored
  // without MPS (then the GPU time-slices between them and the figures
  // mean nothing: run under MPS, docs/PERFORMANCE.md).
  const int sharing = (ranks + vm["gpus"].as<int>() - 1) / vm["gpus"].as<int>();
  setenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", std::to_string(std::max(1, 100 / sharing)).c_str(), 1);
  std::vector<pid_t> pids;
  const std::string log0 = dir + "/rank0.log";
  for (int r = 0; r < ranks; ++r) {
    const int d = layout == "nvlink" ? 0 : r;
    const int local = layout == "nvlink" ? r : 0;
    std::vector<std::string> a = {vm["rank-binary"].as<std::string>(),
                                  "--socket",
                                  daemons[d]->socket(),
                                  "--job",
                                  "ll-bench",
                                  "--world",
                                  std::to_string(ranks),
                                  "--rank",
                                  std::to_string(r),
                                  "--local-rank",
                                  std::to_string(local),
                                  "--coordinator",
                                  first->peer_address(),
                                  "--device",
                                  std::to_string(r % vm["gpus"].as<int>()),
                                  "--mode",
                                  "bench",
                                  "--iters",
                                  std::to_string(vm["iters"].as<int>()),
                                  "--tokens",
                                  std::to_string(vm["tokens"].as<int>()),
                                  "--hidden",
                                  std::to_string(vm["hidden"].as<int>()),
                                  "--topk",
                                  std::to_string(vm["topk"].as<int>()),
                                  "--experts",
                                  std::to_string(vm["experts"].as<int>())};
    std::vector<char*> cargv;
    for (auto& s : a) cargv.push_back(s.data());
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = dir + "/rank" + std::to_string(r) + ".log";
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = -1;
    if (posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), environ) != 0) {
      std::cerr << "ll_bench: cannot start " << cargv[0] << "\n";
      return 1;
    }
    posix_spawn_file_actions_destroy(&fa);
    pids.push_back(pid);
  }
  int failed = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  for (size_t r = 0; r < pids.size(); ++r) {
    int status = 0;
    for (;;) {
      const pid_t w = waitpid(pids[r], &status, WNOHANG);
      if (w == pids[r]) break;
      if (std::chrono::steady_clock::now() > deadline) {
        std::cerr << "ll_bench: rank " << r << " still running after 240 s; killing the ranks\n";
        for (pid_t p : pids) kill(p, SIGKILL);
        waitpid(pids[r], &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++failed;
      std::ifstream in(dir + "/rank" + std::to_string(r) + ".log");
      std::cerr << "ll_bench: rank " << r << " failed:\n" << in.rdbuf() << "\n";
    }
  }
  if (failed > 0) return 1;
  auto after = totals(daemons);
  std::string line;
  {
    std::ifstream in(log0);
    for (std::string l; std::getline(in, l);) {
      if (l.rfind("LL_BENCH ", 0) == 0) line = l.substr(9);
    }
  }
  if (line.empty()) {
    std::cerr << "ll_bench: rank 0 printed no LL_BENCH line\n";
    return 1;
  }
  std::ostringstream o;
  o << "LL_RESULT {\"layout\":\"" << layout << "\",\"rank0\":" << line;
  if (layout == "daemons" && before.ok() && after.ok()) {
    // Calls per bench run: 20 warm-up + dispatch loop + both loop + hook
    // loop + the two staged loops (ll_rank's bench).
    const int iters = vm["iters"].as<int>();
    const double calls = 20 + 3.0 * iters + 2.0 * std::min(iters, 20);
    o << ",\"per_call_all_daemons\":{\"descriptors\":" << (after->descriptors - before->descriptors) / calls
      << ",\"fabric_ops\":" << (after->fabric_ops - before->fabric_ops) / calls
      << ",\"proxy_busy_us\":" << (after->busy_ns - before->busy_ns) / calls / 1000.0 << "}";
    const auto [dispatch_bytes, combine_bytes] = bytes_to_rank1(ranks, vm["tokens"].as<int>(), vm["hidden"].as<int>(),
                                                                vm["topk"].as<int>(), vm["experts"].as<int>());
    BaselineOptions b;
    b.provider = "shm";
    b.warmup = 20;
    auto lat = baseline_latency(b, {dispatch_bytes, combine_bytes});
    if (lat.ok() && lat->size() == 2) {
      o << ",\"plain_libfabric\":{\"dispatch_bytes\":" << dispatch_bytes << ",\"combine_bytes\":" << combine_bytes
        << ",\"dispatch_one_way_us\":" << (*lat)[0].one_way_us << ",\"combine_one_way_us\":" << (*lat)[1].one_way_us
        << ",\"both_us\":" << (*lat)[0].one_way_us + (*lat)[1].one_way_us << "}";
    } else {
      o << ",\"plain_libfabric\":\"" << (lat.ok() ? std::string("no result") : lat.status().to_string()) << "\"";
    }
  }
  o << "}";
  std::cout << o.str() << std::endl;
  return 0;
}

}  // namespace
}  // namespace epx::bench

int main(int argc, char** argv) { return epx::bench::run(argc, argv); }
