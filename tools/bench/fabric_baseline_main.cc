// fabric_baseline: plain libfabric latency, bandwidth and message rate
// between two endpoints of this process, as a table or (--json) for scripts.
//
//   fabric_baseline --provider shm
//   fabric_baseline --provider tcp --domain lo --json
//
// Exit status: 0 measured, 1 a measurement failed, 2 bad usage.
#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdio>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "epx/status.h"
#include "tools/bench/bench_report.pb.h"
#include "tools/bench/fabric_baseline.h"
#include "tools/bench/provider_probe.h"
#include "tools/cli.h"

namespace {

namespace po = boost::program_options;
namespace report = epx::bench_report::v1;
using namespace epx::bench;

struct Args {
  BaselineOptions options;
  bool json = false;
  size_t window = 64;
  size_t rate_bytes = 64;
};

// The arguments, or the exit code for main() (0 after --help, 2 bad usage).
std::variant<Args, int> parse_args(int argc, char** argv) {
  long long min_time_ms = 0, warmup = 0, window = 0, rate_bytes = 0;
  std::vector<std::string> domains;
  po::options_description opts(
      "usage: fabric_baseline --provider tcp|shm|efa|verbs [--domain NAME[,NAME]]... [--json]\n"
      "                       [--min-time-ms N] [--warmup N] [--window N] [--rate-bytes N] [--no-pin]");
  opts.add_options()("help,h", "this help")("provider", po::value<std::string>()->required(),
                                            "libfabric provider of both endpoints")(
      "domain", po::value<std::vector<std::string>>(&domains)->composing(),
      "domain (NIC; tcp: interface such as lo) to use; default: the first")(
      "json", "one JSON object on stdout instead of tables")(
      "min-time-ms", po::value<long long>(&min_time_ms)->default_value(300), "timed part of each size")(
      "warmup", po::value<long long>(&warmup)->default_value(100), "untimed operations per size, at most 16 MiB")(
      "window", po::value<long long>(&window)->default_value(64), "writes in flight for bandwidth and message rate")(
      "rate-bytes", po::value<long long>(&rate_bytes)->default_value(64), "write size of the message-rate run")(
      "no-pin", "leave the two sides' threads unpinned (default: two different CPUs)");
  po::variables_map vm;
  if (auto exit_code = epx::cli::parse(argc, argv, opts, &vm, "fabric_baseline")) return *exit_code;
  const struct {
    const char* flag;
    long long value, min;
  } numbers[] = {{"--min-time-ms", min_time_ms, 0},
                 {"--warmup", warmup, 0},
                 {"--window", window, 1},
                 {"--rate-bytes", rate_bytes, 1}};
  for (const auto& n : numbers) {
    if (n.value < n.min) {
      std::fprintf(stderr, "fabric_baseline: %s must be at least %lld, not %lld\n", n.flag, n.min, n.value);
      return 2;
    }
  }
  Args args;
  args.options.provider = vm["provider"].as<std::string>();
  for (const std::string& d : domains) {
    for (std::string& name : epx::cli::split_list(d)) args.options.domains.push_back(std::move(name));
  }
  args.options.min_time = std::chrono::milliseconds(min_time_ms);
  args.options.warmup = static_cast<int>(std::min<long long>(warmup, std::numeric_limits<int>::max()));
  args.options.pin_threads = vm.count("no-pin") == 0;
  args.json = vm.count("json") > 0;
  args.window = static_cast<size_t>(window);
  args.rate_bytes = static_cast<size_t>(rate_bytes);
  return args;
}

std::string human_size(size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

struct Results {
  ProviderReport report;
  std::vector<LatencyPoint> latency;
  std::vector<BandwidthPoint> bandwidth;
  RatePoint rate{};
};

void print_table(const Args& args, const Results& r) {
  std::printf("provider %s, domain %s, mr_mode %s, tx depth %zu, inject %zu B, cq data %zu B\n",
              r.report.provider.c_str(), r.report.domain.c_str(), r.report.mr_mode.c_str(), r.report.tx_depth,
              r.report.inject_size, r.report.cq_data_size);
  std::printf("8-byte fi_writedata:                         %s\n", r.report.plain_writedata.detail.c_str());
  std::printf("8-byte fi_writemsg(FI_DELIVERY_COMPLETE):     %s\n", r.report.delivery_complete.detail.c_str());
  std::printf("0-byte fi_writedata with CQ data:            %s\n", r.report.zero_byte_writedata.detail.c_str());
  std::printf("\nlatency: fi_writedata ping-pong, one-way = round trip / 2 (min time %lld ms per size)\n",
              static_cast<long long>(args.options.min_time.count()));
  std::printf("%10s %12s %12s\n", "size", "median us", "p99 us");
  for (const auto& p : r.latency) {
    std::printf("%10s %12.2f %12.2f\n", human_size(p.bytes).c_str(), p.one_way_us, p.p99_us);
  }
  std::printf("\nbandwidth: fi_writedata stream, window %zu\n", args.window);
  std::printf("%10s %12s\n", "size", "GB/s");
  for (const auto& p : r.bandwidth) std::printf("%10s %12.3f\n", human_size(p.bytes).c_str(), p.gbytes_per_s);
  std::printf("\nmessage rate: %s fi_writedata, window %zu: %.3f Mops/s\n", human_size(r.rate.bytes).c_str(),
              args.window, r.rate.mops_per_s);
}

void set_check(const ProbeCheck& c, report::ProbeCheck* out) {
  out->set_works(c.works);
  out->set_waits_for_target(c.waits_for_target);
  out->set_detail(c.detail);
}

epx::Status print_json(const Args& args, const Results& r) {
  report::BaselineReport result;
  result.set_provider(r.report.provider);
  result.set_domain(r.report.domain);
  result.set_mr_mode(r.report.mr_mode);
  result.set_min_time_ms(static_cast<uint32_t>(args.options.min_time.count()));
  result.set_window(static_cast<uint32_t>(args.window));
  set_check(r.report.plain_writedata, result.mutable_probe()->mutable_plain_writedata());
  set_check(r.report.delivery_complete, result.mutable_probe()->mutable_delivery_complete());
  set_check(r.report.zero_byte_writedata, result.mutable_probe()->mutable_zero_byte_writedata());
  for (const LatencyPoint& p : r.latency) {
    report::LatencyPoint* out = result.add_latency();
    out->set_bytes(static_cast<uint32_t>(p.bytes));
    out->set_one_way_us(p.one_way_us);
    out->set_p99_us(p.p99_us);
  }
  for (const BandwidthPoint& p : r.bandwidth) {
    report::BandwidthPoint* out = result.add_bandwidth();
    out->set_bytes(static_cast<uint32_t>(p.bytes));
    out->set_gbytes_per_s(p.gbytes_per_s);
  }
  result.mutable_message_rate()->set_bytes(static_cast<uint32_t>(r.rate.bytes));
  result.mutable_message_rate()->set_mops_per_s(r.rate.mops_per_s);
  return epx::cli::print_json(result);
}

int fail(const char* what, const epx::Status& status) {
  std::fprintf(stderr, "fabric_baseline: %s: %s\n", what, status.to_string().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = parse_args(argc, argv);
  if (const int* exit_code = std::get_if<int>(&parsed)) return *exit_code;
  const Args& args = std::get<Args>(parsed);
  Results r;
  auto report = probe_provider(args.options);
  if (!report.ok()) return fail("probe", report.status());
  r.report = std::move(report.value());
  auto latency = baseline_latency(args.options, default_latency_sizes());
  if (!latency.ok()) return fail("latency", latency.status());
  r.latency = std::move(latency.value());
  auto bandwidth = baseline_bandwidth(args.options, default_bandwidth_sizes(), args.window);
  if (!bandwidth.ok()) return fail("bandwidth", bandwidth.status());
  r.bandwidth = std::move(bandwidth.value());
  auto rate = baseline_message_rate(args.options, args.rate_bytes, args.window);
  if (!rate.ok()) return fail("message rate", rate.status());
  r.rate = rate.value();
  if (!args.json) {
    print_table(args, r);
    return 0;
  }
  if (auto s = print_json(args, r); !s.ok()) return fail("output", s);
  return 0;
}
