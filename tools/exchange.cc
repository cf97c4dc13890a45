// epx_exchange: one rank of an all-to-all exchange through EPX. Every rank
// writes a distinct pattern of variable-sized blocks to every rank (itself
// included) with counted signals, waits for all blocks addressed to it, and
// checks every byte. Used by tools/demo.sh and the integration tests.
//
//   epx_exchange --socket S --job J --world W --rank R [--coordinator A]
//                [--rounds N] [--bytes-per-peer B] [--seed X] [--block-bytes K]
//                [--gpu-pci-address P] [--bandwidth]
// Prints one line per round and a summary; exit 0 only if every byte matched.
#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstring>
#include <iostream>
#include <random>

#include "epx/client.h"
#include "tools/cli.h"

namespace po = boost::program_options;
using namespace std::chrono_literals;

namespace {

// The byte every (round, source, destination, offset) must hold.
inline uint8_t pattern(uint32_t round, uint32_t src, uint32_t dst, uint64_t offset) {
  uint64_t x = (uint64_t{round} << 48) ^ (uint64_t{src} << 32) ^ (uint64_t{dst} << 24) ^ offset;
  x *= 0x9E3779B97F4A7C15ull;
  return static_cast<uint8_t>(x >> 56);
}

// Block sizes src sends to dst in a round: deterministic, so the receiver
// knows how many signals to expect. Sizes from 1 byte to 64 KiB, summing
// to at most `budget`.
std::vector<uint32_t> blocks(uint64_t seed, uint32_t round, uint32_t src, uint32_t dst, uint64_t budget,
                             uint64_t block_bytes) {
  if (block_bytes != 0) {
    // Fixed blocks (large writes, which the daemon stripes across its rails).
    std::vector<uint32_t> out(std::max<uint64_t>(budget / block_bytes, 1), static_cast<uint32_t>(block_bytes));
    return out;
  }
  std::mt19937_64 rng(seed ^ (uint64_t{round} << 40) ^ (uint64_t{src} << 20) ^ dst);
  std::vector<uint32_t> out;
  uint64_t used = 0;
  for (;;) {
    const int kind = static_cast<int>(rng() % 4);
    uint32_t size = kind == 0 ? 1 + rng() % 64 : kind == 1 ? 1 + rng() % 4096 : 1 + rng() % 65536;
    if (used + size > budget) break;
    out.push_back(size);
    used += size;
    if (out.size() >= 512) break;
  }
  if (out.empty()) out.push_back(1);
  return out;
}

int fail(const std::string& what, const epx::Status& s) {
  std::cerr << "epx_exchange: " << what << ": " << s.to_string() << std::endl;
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("epx_exchange options");
  opts.add_options()("help,h", "help")("socket", po::value<std::string>()->required(), "epxd control socket")(
      "job", po::value<std::string>()->default_value("exchange"), "job id")(
      "world", po::value<uint32_t>()->required(), "world size")("rank", po::value<uint32_t>()->required(), "rank")(
      "local-rank", po::value<uint32_t>()->default_value(0), "local rank")(
      "coordinator", po::value<std::string>()->default_value(""), "coordinator daemon host:port")(
      "rounds", po::value<uint32_t>()->default_value(3), "rounds")(
      "bytes-per-peer", po::value<uint64_t>()->default_value(1 << 20), "bytes each rank sends each rank per round")(
      "seed", po::value<uint64_t>()->default_value(42), "block-size seed (same on all ranks)")(
      "block-bytes", po::value<uint64_t>()->default_value(0),
      "fixed block size (at most bytes-per-peer, < 4 GiB); 0: random sizes from 1 byte to 64 KiB")(
      "timeout-ms", po::value<uint32_t>()->default_value(30000), "per-wait timeout")(
      "gpu-pci-address", po::value<std::string>()->default_value(""),
      "the GPU this rank stands for (the daemon serves it from that GPU's rails); empty: every rail")(
      "print-table", "print the rank table after joining")(
      "bandwidth",
      "measure the transfer, not this program: the send pattern is written once and the received bytes are "
      "checked after the last round only (every round moves the same bytes; signals are still checked exactly "
      "each round)");
  po::variables_map vm;
  if (auto exit_code = epx::cli::parse(argc, argv, opts, &vm, "epx_exchange")) return *exit_code;
  const uint32_t world = vm["world"].as<uint32_t>(), rank = vm["rank"].as<uint32_t>();
  const uint32_t rounds = vm["rounds"].as<uint32_t>();
  const uint64_t per_peer = vm["bytes-per-peer"].as<uint64_t>(), seed = vm["seed"].as<uint64_t>();
  const uint64_t block_bytes = vm["block-bytes"].as<uint64_t>();
  if (block_bytes > per_peer || block_bytes > 0xFFFFFFFFu) {
    std::cerr << "epx_exchange: --block-bytes must be at most --bytes-per-peer and below 4 GiB" << std::endl;
    return 2;
  }
  const auto timeout = std::chrono::milliseconds(vm["timeout-ms"].as<uint32_t>());

  auto client = epx::Client::connect(vm["socket"].as<std::string>());
  if (!client.ok()) return fail("connect", client.status());
  epx::JoinOptions jo;
  jo.job_id = vm["job"].as<std::string>();
  jo.world_size = world;
  jo.rank = rank;
  jo.local_rank = vm["local-rank"].as<uint32_t>();
  jo.coordinator = vm["coordinator"].as<std::string>();
  jo.timeout = timeout;
  jo.gpu_pci_address = vm["gpu-pci-address"].as<std::string>();
  auto job = (*client)->join(jo);
  if (!job.ok()) return fail("join", job.status());
  if (vm.count("print-table")) std::cout << job->table().to_string() << std::flush;

  // Window 1: what this rank sends (one slice per destination); window 2:
  // what it receives (one slice per source). Same ids on every rank.
  auto send = job->create_window(per_peer * world);
  if (!send.ok()) return fail("send window", send.status());
  auto recv = job->create_window(per_peer * world);
  if (!recv.ok()) return fail("receive window", recv.status());
  auto signals = job->open_signals(world);  // signal s counts blocks from rank s
  if (!signals.ok()) return fail("signals", signals.status());
  auto ring = job->open_ring(1024);
  if (!ring.ok()) return fail("ring", ring.status());
  if (auto s = job->barrier(timeout); !s.ok()) return fail("barrier after setup", s);

  const bool bandwidth = vm.count("bandwidth") > 0;
  // The round whose pattern a round writes and checks: its own, or with
  // --bandwidth round 0's throughout.
  auto pattern_round = [&](uint32_t round) { return bandwidth ? 0u : round; };
  if (bandwidth) {
    for (uint32_t dst = 0; dst < world; ++dst) {
      uint8_t* slice = send->data() + dst * per_peer;
      for (uint64_t i = 0; i < per_peer; ++i) slice[i] = pattern(0, rank, dst, i);
    }
  }
  uint64_t total_bytes = 0;
  std::vector<uint64_t> expected(world, 0);
  const auto start = std::chrono::steady_clock::now();
  // The longest round: a job that shares its daemons with others reports
  // how long the others ever stalled it.
  std::chrono::steady_clock::duration longest_round{};
  for (uint32_t round = 0; round < rounds; ++round) {
    const auto round_start = std::chrono::steady_clock::now();
    for (uint32_t dst = 0; dst < world && !bandwidth; ++dst) {
      uint8_t* slice = send->data() + dst * per_peer;
      for (uint64_t i = 0; i < per_peer; ++i) slice[i] = pattern(round, rank, dst, i);
    }
    for (uint32_t dst = 0; dst < world; ++dst) {
      uint64_t offset = 0;
      for (uint32_t size : blocks(seed, pattern_round(round), rank, dst, per_peer, block_bytes)) {
        auto s = (*ring)->post_write_signal(dst, *send, dst * per_peer + offset, recv->id(), rank * per_peer + offset,
                                            size, epx::SignalRef{rank, 1}, timeout);
        if (!s.ok()) return fail("post to rank " + std::to_string(dst), s);
        offset += size;
        total_bytes += size;
      }
    }
    std::vector<uint32_t> all(world);
    for (uint32_t src = 0; src < world; ++src) {
      all[src] = src;
      expected[src] += blocks(seed, pattern_round(round), src, rank, per_peer, block_bytes).size();
    }
    // Each source's count, named on timeout: the late peer is visible.
    for (uint32_t src = 0; src < world; ++src) {
      if (auto s = signals->wait(src, expected[src], timeout); !s.ok()) {
        return fail("round " + std::to_string(round) + " waiting for rank " + std::to_string(src), s);
      }
    }
    uint64_t bad = 0, first_bad = 0;
    const bool check = !bandwidth || round + 1 == rounds;
    for (uint32_t src = 0; src < world && check; ++src) {
      uint64_t len = 0;
      for (uint32_t size : blocks(seed, pattern_round(round), src, rank, per_peer, block_bytes)) len += size;
      const uint8_t* slice = recv->data() + src * per_peer;
      for (uint64_t i = 0; i < len; ++i) {
        if (slice[i] != pattern(pattern_round(round), src, rank, i)) {
          if (bad++ == 0) first_bad = src * per_peer + i;
        }
      }
    }
    if (bad) {
      std::cerr << "epx_exchange: rank " << rank << " round " << round << ": " << bad
                << " bytes differ, first at receive offset " << first_bad << std::endl;
      return 1;
    }
    if (auto s = (*ring)->error(); !s.ok()) return fail("ring", s);
    // Nobody rewrites its send window or our receive slices before everyone
    // verified this round.
    if (auto s = (*ring)->flush(timeout); !s.ok()) return fail("flush", s);
    // Exact, not just reached: no source can post its next round before the
    // barrier below, so a word above its count was bumped twice.
    for (uint32_t src = 0; src < world; ++src) {
      if (signals->value(src) != expected[src]) {
        std::cerr << "epx_exchange: rank " << rank << " round " << round << ": signal of rank " << src << " is "
                  << signals->value(src) << ", expected exactly " << expected[src] << std::endl;
        return 1;
      }
    }
    if (auto s = job->barrier(timeout); !s.ok()) return fail("barrier after round", s);
    std::cout << "rank " << rank << " round " << round << ": all bytes from " << world << " ranks "
              << (check ? "verified" : "in (checked after the last round)") << std::endl;
    longest_round = std::max(longest_round, std::chrono::steady_clock::now() - round_start);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "rank " << rank << ": sent " << total_bytes << " bytes in " << rounds << " rounds, " << secs * 1e3
            << " ms, " << total_bytes / secs / 1e6 << " MB/s, "
            << (bandwidth ? "the last round's received bytes verified" : "every received byte verified") << std::endl;
  std::cout << "summary rank=" << rank << " bytes=" << total_bytes << " seconds=" << secs
            << " longest_round_ms=" << std::chrono::duration<double, std::milli>(longest_round).count() << std::endl;
  return 0;
}
